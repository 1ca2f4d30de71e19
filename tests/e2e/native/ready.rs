//! Every readiness check, on a real restart.

use crate::support::*;

/// Restarts `name` and returns the evidence of readiness the supervisor reported.
pub(super) fn restart_evidence_of(env: &TestEnv, name: &str) -> String {
    let out = env.run_zdctl(&["restart", name, "--json"]);
    assert_code(&out, 0);
    stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "ready")
        .and_then(|e| e["evidence"].as_str().map(str::to_owned))
        .expect("a ready event")
}

#[test]
fn accepting_is_the_default_and_names_the_waiting_thread() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let evidence = restart_evidence_of(&env, "api");
    assert!(evidence.contains("blocked in accept on fd 3"), "{evidence}");
}

#[test]
fn notify_waits_for_ready_from_the_app() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &["--notify"], "ready: notify\n");
    env.start("api", &["run", "api"]);
    assert_eq!(restart_evidence_of(&env, "api"), "READY=1");
}

#[test]
fn notify_without_ready_from_the_app_rolls_back_at_the_timeout() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "ready:\n  checks: [notify]\n  timeout: 500ms\n");
    env.start("api", &["run", "api"]);
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("was not ready within 500ms (notify)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn http_tcp_exec_and_alive_checks_all_pass_together() {
    let mut env = TestEnv::new();
    // The probes need a fixed address, so take one from the kernel first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let extra = format!(
        "ready:\n  checks:\n    - 'http:http://127.0.0.1:{port}/'\n    - 'tcp:127.0.0.1:{port}'\n    - 'exec:test \"$ZD_GENERATION\" -ge 2 && kill -0 \"$ZD_PID\"'\n    - 'alive:200ms'\n"
    );
    let yaml = format!(
        "command: [{:?}]\nlisten:\n  - 127.0.0.1:{port}\n{extra}",
        fixture_bin().display().to_string()
    );
    env.write_service("api", &yaml);
    env.start("api", &["run", "api"]);
    let evidence = restart_evidence_of(&env, "api");
    for part in [
        "answered 2xx",
        "connected to",
        "exited 0",
        "alive for 200ms",
    ] {
        assert!(evidence.contains(part), "'{part}' missing from: {evidence}");
    }
}

#[test]
fn log_prefix_marks_each_line_with_service_and_generation() {
    let mut env = TestEnv::new();
    let yaml = format!(
        "command: ['/bin/sh', '-c', 'echo hello from $ZD_GENERATION; exec {}']\nlisten:\n  - 127.0.0.1:0\nlog:\n  prefix: true\n",
        fixture_bin().display()
    );
    env.write_service("api", &yaml);
    env.start("api", &["run", "api"]);
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    wait_for("prefixed lines", || {
        let log = env.log("api");
        (log.contains("[api gen 1] hello from 1") && log.contains("[api gen 2] hello from 2"))
            .then_some(())
    });
}
