//! `zdctl` as a user meets it: the client commands' output, `--json` shapes and exit codes
//! against the real supervisor and the fixture service.

mod ansible;

use std::time::{Duration, Instant};

use zd_core::proto::{Event, GenerationState, RestartOutcome, RestartReport, Status};

use crate::support::*;

#[test]
fn restart_shows_each_phase_on_stderr_and_the_generation_change_on_stdout() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 0);
    let line = stdout(&out);
    let pid = active_pid(&env.status("api").expect("status"));
    assert!(
        line.starts_with(&format!(
            "restarted 'api': generation 1 → 2 (pid {pid}) in "
        )),
        "{line}"
    );
    let err = stderr(&out);
    for phase in [
        format!("spawned generation 2 (pid {pid})"),
        "waiting for generation 2 to be ready (accepting)".to_owned(),
        "generation 2 ready: ".to_owned(),
        format!("promoted generation 2 (pid {pid})"),
        "draining generation 1".to_owned(),
        "generation 1 (pid ".to_owned(),
    ] {
        assert!(err.contains(&phase), "missing '{phase}' in:\n{err}");
    }
}

#[test]
fn restart_json_prints_protocol_events_then_the_restart_report() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let (last, events) = lines.split_last().expect("at least the report");
    let report: RestartReport = serde_json::from_str(last).expect("the last line is a report");
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert_eq!(
        (report.old_generation, report.new_generation),
        (Some(1), Some(2))
    );
    let kinds: Vec<String> = events
        .iter()
        .map(|l| {
            let _: Event = serde_json::from_str(l).expect("every other line is an event");
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            v["event"].as_str().expect("an event name").to_owned()
        })
        .collect();
    for kind in [
        "spawned", "ready", "promoted", "draining", "exited", "finished",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no '{kind}' event in {kinds:?}"
        );
    }
    assert_eq!(stderr(&out), "", "--json keeps stderr quiet");
}

#[test]
fn wait_ready_returns_while_the_old_generation_still_drains() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &["--ignore-term"], "drain_timeout: 20s\n");
    env.start("api", &["run", "api"]);
    let started = Instant::now();
    let out = env.run_zdctl(&["restart", "api", "--wait", "ready"]);
    assert_code(&out, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "--wait ready waited for the drain: {:?}",
        started.elapsed()
    );
    assert!(stdout(&out).contains("generation 2"), "{}", stdout(&out));
    let status = env.status("api").expect("status");
    assert_eq!(status.active_generation, Some(2));
    let old = status
        .generations
        .iter()
        .find(|g| g.generation == 1)
        .expect("generation 1 listed");
    assert_eq!(old.state, GenerationState::Draining, "{status:?}");
}

#[test]
fn status_and_list_describe_the_running_service() {
    let mut env = TestEnv::new();
    let file = env.fixture_service("api", &[], "");
    let running = env.start("api", &["run", "api"]);

    let out = env.run_zdctl(&["status", "api", "--json"]);
    assert_code(&out, 0);
    let status: Status = serde_json::from_str(&stdout(&out)).expect("a Status");
    assert_eq!(status.service, "api");
    assert_eq!(status.supervisor_pid, running.supervisor_pid);
    assert_eq!(status.active_generation, Some(1));
    assert_eq!(status.listeners.len(), 1);

    let out = env.run_zdctl(&["status"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("service 'api': supervisor pid "), "{text}");
    assert!(text.contains(&address_of(&status)), "{text}");

    let out = env.run_zdctl(&["list", "--json"]);
    assert_code(&out, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let api = &rows[0];
    assert_eq!(api["name"], "api");
    assert_eq!(api["state"], "running");
    assert_eq!(api["supervisor_pid"], running.supervisor_pid);
    assert_eq!(api["source"], file.display().to_string());
}

#[test]
fn stop_exits_0_and_afterwards_the_service_is_not_running() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let out = env.run_zdctl(&["stop", "api"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "stopped 'api'\n");
    assert_eq!(env.wait_exit("api"), Some(0));

    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("error: service 'api' is not running"),
        "{}",
        stderr(&out)
    );
    let out = env.run_zdctl(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(rows[0]["state"], "stopped", "{rows}");
}

#[test]
fn signal_reaches_the_active_generation() {
    let mut env = TestEnv::new();
    let log = env.path("fixture.log");
    let log_s = log.display().to_string();
    env.fixture_service("api", &["--log", &log_s], "");
    let status = env.start("api", &["run", "api"]);
    // Once it answers, its handlers are installed: a USR1 before that would kill it.
    http_get(&address_of(&status), "/").expect("the fixture answers");
    let out = env.run_zdctl(&["signal", "api", "usr1"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with("sent SIGUSR1 to "),
        "{}",
        stdout(&out)
    );
    wait_for("the fixture to log SIGUSR1", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| text.contains("signal USR1"))
    });
}

#[test]
fn the_flags_form_runs_and_restarts_a_service_without_a_file() {
    let mut env = TestEnv::new();
    let fixture = fixture_bin().display().to_string();
    let status = env.start(
        "api",
        &[
            "run",
            "--name",
            "api",
            "--listen",
            "http=127.0.0.1:0",
            "--",
            &fixture,
        ],
    );
    assert_eq!(status.config_path, None);
    let addr = address_of(&status);
    let (code, _) = http_get(&addr, "/").expect("GET /");
    assert_eq!(code, 200);
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    let (code, _) = http_get(&addr, "/").expect("GET / after the restart");
    assert_eq!(code, 200);
}

#[test]
fn a_second_supervisor_for_a_running_service_exits_2() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let out = env.run_zdctl(&["run", "api"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
}

#[test]
fn run_reports_every_problem_of_a_service_file_at_once_and_exits_2() {
    let env = TestEnv::new();
    let file = env.write_service(
        "api",
        "\
comand: [/bin/true]
listen: ['tpc://127.0.0.1:0']
ready: [acepting]
handoff: steerd
drain_timeout: 0s
",
    );
    let out = env.run_zdctl(&["run", "-c", file.to_str().expect("utf-8")]);
    assert_code(&out, 2);
    let err = stderr(&out);
    let at = |pos: &str| format!("{}:{pos}: ", file.display());
    let wanted = [
        (at("1:1"), "unknown key `comand`; did you mean `command`?"),
        (at("2:10"), "(did you mean 'tcp://'?)"),
        (at("3:9"), "(did you mean 'accepting'?)"),
        (at("4:10"), "did you mean `steered`?"),
        (at("5:16"), "a duration of zero"),
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), wanted.len(), "one line per problem:\n{err}");
    for (line, (prefix, needle)) in lines.iter().zip(&wanted) {
        let line = line.strip_prefix("error: ").unwrap_or(line);
        assert!(
            line.starts_with(prefix.as_str()) && line.contains(needle),
            "expected '{prefix}…{needle}' in order in:\n{err}"
        );
    }
    assert_eq!(stdout(&out), "", "{err}");
}
