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

/// A client that calls connect() every millisecond until stopped; returns the attempts
/// and the errors by kind.
fn sample_connects(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<std::io::ErrorKind>)> {
    std::thread::spawn(move || {
        let (mut attempts, mut errors) = (0u64, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            attempts += 1;
            if let Err(e) =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
            {
                errors.push(e.kind());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        (attempts, errors)
    })
}

/// The port never stops accepting: connect() every millisecond across 100 restarts is
/// never refused, whichever sockets the generations hold.
fn no_connect_is_refused_across_restarts(handoff: &str) {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], &format!("handoff: {handoff}\n"));
    let status = env.start("api", &["run", "api"]);
    let addr: std::net::SocketAddr = address_of(&status).parse().expect("an address");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_connects(addr, stop.clone());
    for _ in 0..100 {
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (attempts, errors) = sampler.join().expect("the sampler");
    eprintln!("handoff: {handoff}: {attempts} connects across 100 restarts, errors {errors:?}");
    assert!(attempts > 100, "the sampler ran: {attempts}");
    assert_eq!(errors, [], "of {attempts} connects");
}

#[test]
fn connect_every_millisecond_across_100_steered_restarts_is_never_refused() {
    no_connect_is_refused_across_restarts("steered");
}

#[test]
fn connect_every_millisecond_across_100_shared_restarts_is_never_refused() {
    no_connect_is_refused_across_restarts("shared");
}
