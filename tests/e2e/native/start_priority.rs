//! `start_priority`: a generation starts at `SCHED_IDLE` and runs at the normal priority
//! once it is ready, or once 10 ms have passed.

use zd_core::proto::{GenerationState, Status};
use zd_core::supervisor::start_priority;

use crate::support::*;

/// The policies of every thread of `pid`.
fn policies_of(pid: i32) -> Vec<i32> {
    zd_core::proc::tasks(pid)
        .expect("tasks")
        .into_iter()
        .filter_map(start_priority::policy_of)
        .collect()
}

/// The fixture's `/env` figures: the policy it started with, and its main thread's now.
fn policies_reported(status: &Status) -> (i64, i64) {
    let (code, body) = http_get(&address_of(status), "/env").expect("GET /env");
    assert_eq!(code, 200, "{body}");
    let env: serde_json::Value = serde_json::from_str(&body).expect("json");
    (
        env["start_policy"].as_i64().expect("start_policy"),
        env["policy"].as_i64().expect("policy"),
    )
}

/// Asserts that the active generation serves at the normal priority, every thread of it;
/// returns whether it reported starting at the idle one.
fn started_idle_serves_normal(env: &TestEnv) -> bool {
    let status = env.status("api").expect("status");
    // The first generation is active from its spawn, and its readiness is checked in the
    // background: its priority comes back within 10 ms, not before `start` returns.
    wait_for("every thread at the normal priority", || {
        let all = policies_of(active_pid(&status));
        (all.len() > 1 && all.iter().all(|&p| p == libc::SCHED_OTHER)).then_some(())
    });
    let (start, now) = policies_reported(&status);
    assert_eq!(
        now,
        libc::SCHED_OTHER as i64,
        "serving at the normal priority"
    );
    start == libc::SCHED_IDLE as i64
}

#[test]
fn a_generation_starts_idle_and_serves_at_the_normal_priority() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    // The fixture notes its policy first thing in main. On a machine busy with other tests
    // it may get there only after the 10 ms limit has ended its idle start, so a few
    // generations get the chance to show it; every one must serve at the normal priority.
    let mut seen_idle = started_idle_serves_normal(&env);
    for _ in 0..10 {
        if seen_idle {
            break;
        }
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
        seen_idle = started_idle_serves_normal(&env);
    }
    assert!(seen_idle, "no generation reported starting at SCHED_IDLE");
}

#[test]
fn start_priority_normal_starts_at_the_normal_priority() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "start_priority: normal\n");
    let status = env.start("api", &["run", "api"]);
    assert_eq!(
        policies_reported(&status),
        (libc::SCHED_OTHER as i64, libc::SCHED_OTHER as i64)
    );
}

#[test]
fn a_slow_start_gets_the_normal_priority_back_before_it_is_ready() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &["--start-delay", "2s"], "");
    env.start("api", &["run", "api"]);
    let mut restart = env.spawn_restart("api");
    let starting = wait_for("a starting generation", || {
        let status = env.status("api")?;
        let g = status
            .generations
            .iter()
            .find(|g| g.state == GenerationState::Starting)?;
        Some(g.pid)
    });
    // Long before its 2 s start ends, the 10 ms limit has given it the normal priority.
    let policies = wait_for("the normal priority while still starting", || {
        let p = policies_of(starting);
        (!p.is_empty() && p.iter().all(|&x| x == libc::SCHED_OTHER)).then_some(p)
    });
    let status = env.status("api").expect("status");
    assert!(
        status
            .generations
            .iter()
            .any(|g| g.pid == starting && g.state == GenerationState::Starting),
        "still starting with {policies:?}: {status:?}"
    );
    assert!(restart.wait().expect("wait").success());
}
