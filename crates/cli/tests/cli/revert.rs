//! `zdctl revert` and `zdctl restart --no-bake` against a fake supervisor.

use zd_core::proto::{ErrorKind, ErrorReply, EventKind, ExitInfo, Op, ReplyResult};

use crate::fake::{Step, TestEnv, assert_code, stderr, stdout};

/// A revert as the supervisor answers it: the new generation drains, then the result.
fn reverted() -> Vec<Step> {
    vec![
        Step::Event(EventKind::Reverted {
            generation: 8,
            old_generation: 7,
            reason: "asked by zdctl revert".into(),
        }),
        Step::Event(EventKind::Draining {
            generation: 8,
            pid: 1234,
            signal: "SIGTERM".into(),
            deadline_ms: 30_000,
        }),
        Step::Event(EventKind::Exited {
            generation: 8,
            pid: 1234,
            status: ExitInfo::Code { code: 0 },
        }),
        Step::Result(ReplyResult::Reverted {
            generation: 8,
            old_generation: 7,
        }),
    ]
}

#[test]
fn a_revert_drains_the_new_generation_and_exits_0() {
    let env = TestEnv::new();
    let fake = env.fake("api", |_| reverted());
    let out = env.zdctl(&["revert", "api"]);
    assert_code(&out, 0);
    assert_eq!(fake.requests(), [Op::Revert]);
    assert_eq!(
        stdout(&out),
        "reverted 'api': generation 8 drained, generation 7 serves alone\n"
    );
    let err = stderr(&out);
    for phase in [
        "reverted to generation 7, draining generation 8: asked by zdctl revert",
        "draining generation 8 (pid 1234): sent SIGTERM, deadline 30s",
        "generation 8 (pid 1234) exited: exit code 0",
    ] {
        assert!(err.contains(phase), "missing phase '{phase}' in:\n{err}");
    }
}

#[test]
fn a_revert_with_json_prints_the_supervisors_result_only() {
    let env = TestEnv::new();
    let _fake = env.fake("api", |_| reverted());
    let out = env.zdctl(&["revert", "api", "--json"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "{\"type\":\"reverted\",\"generation\":8,\"old_generation\":7}\n"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_revert_with_nothing_baking_exits_1_and_points_at_status() {
    let env = TestEnv::new();
    let _fake = env.fake("api", |_| {
        vec![Step::Error(ErrorReply {
            kind: ErrorKind::Invalid,
            message: "no restart of 'api' is baking".into(),
            restart: None,
        })]
    });
    let out = env.zdctl(&["revert", "api"]);
    assert_code(&out, 1);
    assert_eq!(
        stderr(&out),
        "error: cannot revert 'api': no restart of 'api' is baking; 'zdctl status api' shows \
         whether a restart is baking\n"
    );
    let json = env.zdctl(&["revert", "api", "--json"]);
    assert_code(&json, 1);
    assert!(
        stdout(&json).starts_with("{\"error\":{\"exit_code\":1,\"kind\":\"refused\""),
        "{}",
        stdout(&json)
    );
}

#[test]
fn a_revert_of_a_driven_service_is_a_usage_error() {
    let env = TestEnv::new();
    env.service_file("web", "driver: signal\npidfile: /nonexistent/web.pid\n");
    let out = env.zdctl(&["revert", "web"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("revert needs a service run by 'zdctl run' with 'bake'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_revert_of_a_service_that_is_not_running_exits_3() {
    let env = TestEnv::new();
    let out = env.zdctl(&["revert", "api"]);
    assert_code(&out, 3);
}

#[test]
fn restart_no_bake_asks_the_supervisor_to_skip_the_bake() {
    let env = TestEnv::new();
    let fake = env.fake("api", |_| {
        vec![Step::Error(ErrorReply {
            kind: ErrorKind::Stopping,
            message: "stopping".into(),
            restart: None,
        })]
    });
    let out = env.zdctl(&["restart", "api", "--no-bake"]);
    assert_code(&out, 1);
    assert_eq!(
        fake.requests(),
        [Op::Restart {
            ready_timeout_ms: None,
            attach: false,
            no_bake: true,
        }]
    );
}
