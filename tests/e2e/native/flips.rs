use zd_load::load::ConnectionMode;

use crate::support::*;

/// 50 restarts under 32 concurrent clients: every restart completes, each new generation
/// answers, and not one request fails.
fn restarts_under_load(mode: ConnectionMode) {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "drain_timeout: 10s\n");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let load = start_load(&addr, 32, mode);
    for i in 0..50u64 {
        let out = env.run_zdctl(&["restart", "api", "--json"]);
        assert_code(&out, 0);
        let status = env.status("api").expect("status");
        let generation = status.active_generation.expect("active");
        assert_eq!(generation, i + 2, "generation after restart {i}");
        // The new generation answers (the old one is gone, so only it can).
        let (code, body) = http_get(&addr, "/").expect("GET /");
        assert_eq!(code, 200);
        assert!(body.contains(&format!("generation={generation}")), "{body}");
    }
    let report = load.finish();
    assert_no_failures(&report);
    let status = env.status("api").expect("status");
    assert_eq!(status.restarts.completed, 50);
    assert_eq!(status.restarts.rolled_back + status.restarts.failed, 0);
}

#[test]
fn fifty_restarts_under_load_with_a_new_connection_per_request_fail_no_request() {
    restarts_under_load(ConnectionMode::Close);
}

#[test]
fn fifty_restarts_under_load_with_keepalive_fail_no_request() {
    restarts_under_load(ConnectionMode::KeepAlive);
}

#[test]
fn json_restart_prints_every_phase_and_the_result() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 0);
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for wanted in [
        "spawned",
        "waiting_ready",
        "ready",
        "promoted",
        "draining",
        "exited",
        "finished",
    ] {
        assert!(kinds.contains(&wanted), "no '{wanted}' event in {kinds:?}");
    }
    let last = events.last().expect("a result line");
    assert_eq!(last["outcome"], "completed", "{last}");
}
