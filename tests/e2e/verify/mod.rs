//! `zdctl verify` and `zdctl demo` as processes: they must see zero failures where there
//! are none, and count the failures of a restart that loses connections.

mod counts;
mod demo;
mod pools;
mod report;

use std::process::Output;

use crate::support::*;

/// Runs `zdctl verify ARGS --json` and returns its exit code and report.
fn verify_json(env: &TestEnv, args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = env.run_zdctl(&all);
    let report = serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON report ({e}):\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out, report)
}

fn twenty_restarts_fail_no_request(mode: &str) {
    let mut env = TestEnv::new();
    // These tests are about what verify counts, so the service proves readiness with
    // READY=1: the `accepting` check has a long tail under connection-per-request load on
    // a busy machine (seconds, once past the 30 s timeout in a full CI run), which the
    // native flip tests cover on their own.
    env.fixture_service("api", &["--notify"], "drain_timeout: 10s\nready: notify\n");
    let status = env.start("api", &["run", "api"]);
    let url = format!("http://{}/", address_of(&status));
    let (out, report) = verify_json(
        &env,
        &[
            "api",
            "--url",
            &url,
            "--restarts",
            "20",
            "--interval",
            "50ms",
            "--concurrency",
            "8",
            mode,
        ],
    );
    assert_code(&out, 0);
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["flips"]["completed"], 20, "{report:#}");
    assert_eq!(report["kernel"]["listen_drops"], 0, "{report:#}");
    assert_eq!(report["passed"], true);
    assert!(report["requests"].as_u64().unwrap_or(0) > 0, "{report:#}");
    assert!(report["latency"]["flips"]["requests"].as_u64().unwrap_or(0) > 0);
    let status = env.status("api").expect("status");
    assert_eq!(status.active_generation, Some(21));
}

#[test]
fn verify_sees_no_failure_over_twenty_restarts_with_keepalive() {
    twenty_restarts_fail_no_request("--keepalive");
}

#[test]
fn verify_sees_no_failure_over_twenty_restarts_with_a_connection_per_request() {
    twenty_restarts_fail_no_request("--close");
}

#[test]
fn verify_of_a_service_that_is_not_running_exits_3() {
    let env = TestEnv::new();
    let out = env.run_zdctl(&["verify", "nosuch", "--url", "http://127.0.0.1:9/"]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("'nosuch'"), "{}", stderr(&out));
}

#[test]
fn verify_without_a_service_or_a_restart_command_is_a_usage_error() {
    let env = TestEnv::new();
    let out = env.run_zdctl(&["verify", "--url", "http://127.0.0.1:9/"]);
    assert_code(&out, 2);
}

#[test]
fn verify_writes_a_plot_with_every_flip_marked() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let url = format!("http://{}/", address_of(&status));
    let plot = env.path("run.svg");
    let plot_arg = plot.display().to_string();
    let (out, _) = verify_json(
        &env,
        &["api", "--url", &url, "--restarts", "3", "--plot", &plot_arg],
    );
    assert_code(&out, 0);
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("latency") && svg.contains("throughput"));
}
