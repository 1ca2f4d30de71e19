//! `zdctl restart` against a fake supervisor: exit codes, live phases, `--json` and
//! `--wait ready`.

use std::time::{Duration, Instant};

use zd_core::proto::{
    ErrorKind, ErrorReply, EventKind, ExitInfo, Op, ReplyResult, RestartOutcome, RestartReport,
};

use crate::fake::{Step, TestEnv, assert_code, stderr, stdout};

fn report(outcome: RestartOutcome) -> RestartReport {
    RestartReport {
        restart: 3,
        outcome,
        old_generation: Some(7),
        new_generation: Some(8),
        new_pid: Some(1234),
        elapsed_ms: 412,
        output: Vec::new(),
        new_pids: Vec::new(),
        steps: None,
        bake_ms: None,
    }
}

/// The events of a restart up to the promotion of generation 8.
fn until_promoted() -> Vec<Step> {
    vec![
        Step::Event(EventKind::RestartRequested),
        Step::Event(EventKind::Spawned {
            generation: 8,
            pid: 1234,
        }),
        Step::Event(EventKind::WaitingReady {
            generation: 8,
            checks: vec!["accepting".into()],
            timeout_ms: Some(30_000),
        }),
        Step::Event(EventKind::Ready {
            generation: 8,
            evidence: "pid 1234 waits in accept4 on fd 3".into(),
        }),
        Step::Event(EventKind::Promoted {
            generation: 8,
            pid: 1234,
        }),
    ]
}

/// A whole successful restart.
fn completed() -> Vec<Step> {
    let report = report(RestartOutcome::Completed);
    let mut steps = until_promoted();
    steps.extend([
        Step::Event(EventKind::Draining {
            generation: 7,
            pid: 1100,
            signal: "SIGTERM".into(),
            deadline_ms: 30_000,
        }),
        Step::Event(EventKind::Exited {
            generation: 7,
            pid: 1100,
            status: ExitInfo::Code { code: 0 },
        }),
        Step::Event(EventKind::Finished {
            report: report.clone(),
        }),
        Step::Result(ReplyResult::Restart(report)),
    ]);
    steps
}

#[test]
fn a_completed_restart_prints_the_generations_and_exits_0() {
    let env = TestEnv::new();
    let _fake = env.fake("api", |_| completed());
    let out = env.zdctl(&["restart", "api"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "restarted 'api': generation 7 → 8 (pid 1234) in 412ms\n"
    );
    let err = stderr(&out);
    for phase in [
        "spawned generation 8 (pid 1234)",
        "waiting for generation 8 to be ready (accepting)",
        "generation 8 ready: pid 1234 waits in accept4 on fd 3",
        "promoted generation 8 (pid 1234)",
        "draining generation 7 (pid 1100): sent SIGTERM, deadline 30s",
        "generation 7 (pid 1100) exited: exit code 0",
    ] {
        assert!(err.contains(phase), "missing phase '{phase}' in:\n{err}");
    }
}

#[test]
fn a_rolled_back_restart_exits_1_with_the_supervisors_reason() {
    let env = TestEnv::new();
    let reason = "generation 8 (pid 1234) exited with exit code 3 before it was ready";
    let _fake = env.fake("api", move |_| {
        let report = report(RestartOutcome::RolledBack {
            reason: reason.into(),
        });
        vec![
            Step::Event(EventKind::Spawned {
                generation: 8,
                pid: 1234,
            }),
            Step::Event(EventKind::Exited {
                generation: 8,
                pid: 1234,
                status: ExitInfo::Code { code: 3 },
            }),
            Step::Result(ReplyResult::Restart(report)),
        ]
    });
    let out = env.zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains(&format!("error: restart of 'api' rolled back: {reason}\n")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failed_restart_exits_1() {
    let env = TestEnv::new();
    let _fake = env.fake("api", |_| {
        vec![Step::Result(ReplyResult::Restart(report(
            RestartOutcome::Failed {
                reason: "api.yaml:2:1: unknown key 'comand'".into(),
            },
        )))]
    });
    let out = env.zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("error: restart of 'api' failed: api.yaml:2:1"));
}

#[test]
fn a_busy_supervisor_exits_1_naming_the_running_restart() {
    let env = TestEnv::new();
    let _fake = env.fake("api", |_| {
        vec![Step::Error(ErrorReply {
            kind: ErrorKind::Busy,
            message: "restart 4 is running".into(),
            restart: Some(4),
        })]
    });
    let out = env.zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("a restart of 'api' is already running (restart #4)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn json_prints_every_event_and_the_report_as_json_lines_and_nothing_else() {
    let env = TestEnv::new();
    let _fake = env.fake("api", |_| completed());
    let out = env.zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 0);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    assert_eq!(lines.len(), completed().len());
    assert_eq!(lines[0]["event"], "restart_requested");
    assert_eq!(lines[1]["event"], "spawned");
    assert_eq!(lines[1]["pid"], 1234);
    let last = lines.last().expect("a final line");
    let report: RestartReport = serde_json::from_value(last.clone()).expect("a report");
    assert_eq!(report, self::report(RestartOutcome::Completed));
    assert_eq!(stderr(&out), "", "no spinner or phase lines with --json");
}

#[test]
fn wait_ready_returns_at_promotion_while_the_old_generation_still_drains() {
    let env = TestEnv::new();
    let _fake = env.fake("api", |_| {
        let mut steps = until_promoted();
        // The drain takes long; the client must not wait for it.
        steps.push(Step::Sleep(Duration::from_secs(30)));
        steps.extend(completed().into_iter().skip(5));
        steps
    });
    let started = Instant::now();
    let out = env.zdctl(&["restart", "api", "--wait", "ready"]);
    assert_code(&out, 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        stdout(&out),
        "restarted 'api': generation 8 (pid 1234) promoted in 12ms; the old generation \
         drains on its own\n"
    );
}

#[test]
fn timeout_and_attach_are_sent_with_the_request() {
    let env = TestEnv::new();
    let fake = env.fake("api", |_| completed());
    let out = env.zdctl(&["restart", "api", "--timeout", "1.5s", "--attach"]);
    assert_code(&out, 0);
    assert_eq!(
        fake.requests(),
        [Op::Restart {
            ready_timeout_ms: Some(1500),
            attach: true,
            no_bake: false,
        }]
    );
}

#[test]
fn a_supervisor_that_hangs_up_mid_restart_is_a_failure() {
    let env = TestEnv::new();
    // No final line: the fake's task ends and the connection closes when the fake stops.
    let fake = env.fake("api", |_| {
        vec![Step::Event(EventKind::Spawned {
            generation: 8,
            pid: 1234,
        })]
    });
    let child = env
        .command(&["restart", "api"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zdctl");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.requests().is_empty() {
        assert!(Instant::now() < deadline, "zdctl never sent its request");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(fake);
    let out = child.wait_with_output().expect("zdctl output");
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("closed the connection before answering"),
        "{}",
        stderr(&out)
    );
}
