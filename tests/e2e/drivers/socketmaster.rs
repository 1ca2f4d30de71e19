//! The socketmaster driver against zd-lookalike's socketmaster: a new child per HUP, the
//! old one stopped after `-start`; a new child that dies within `-start` leaves the old
//! one serving.

use zd_load::load::ConnectionMode;

use super::{Peer, children, lookalike, restart_times, worker_until};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, fixture_bin, start_load, stderr, wait_for,
};

/// socketmaster with its `-start` time; the driver with its `settle` time. socketmaster
/// writes no pidfile: its init system knows its pid, and so does the test.
fn start(env: &TestEnv, worker: &[&str], start: &str, settle: &str) -> (Peer, String) {
    let (peer, addr) = lookalike(env, "socketmaster", &["--start", start], worker);
    let pidfile = env.path("socketmaster.pid");
    std::fs::write(&pidfile, format!("{}\n", peer.pid())).expect("pidfile");
    env.write_service(
        "sm",
        &format!(
            "driver: socketmaster\npidfile: {}\nsettle: {settle}\ntimeout: 20s\n",
            pidfile.display()
        ),
    );
    (peer, addr)
}

#[test]
fn socketmaster_restarts_ten_times_under_load_without_a_failed_request() {
    let env = TestEnv::new();
    let fixture = fixture_bin().display().to_string();
    let (peer, addr) = start(&env, &[&fixture], "600ms", "300ms");
    let first = children(peer.pid());
    let load = start_load(&addr, 16, ConnectionMode::Close);
    restart_times(&env, "sm", 10);
    assert_no_failures(&load.finish());
    let now = children(peer.pid());
    assert_eq!(now.len(), 1, "one child after the restarts: {now:?}");
    assert!(!first.contains(&now[0]), "the child was not replaced");
}

#[test]
fn socketmaster_keeps_the_old_child_when_the_new_one_dies_within_its_start_time() {
    let env = TestEnv::new();
    let marker = env.path("broken");
    // New children live 300ms, far short of `settle` and `-start` even on a busy machine.
    let worker = worker_until(&marker, "--exit-after 300ms");
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let (peer, addr) = start(&env, &worker, "5s", "3s");
    let old = children(peer.pid());
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    let out = env.run_zdctl(&["restart", "sm"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("the old one keeps running"), "{err}");
    // socketmaster decides after its start time; by then only the old child is left.
    wait_for("socketmaster to leave the old child alone", || {
        let log = std::fs::read_to_string(env.path("socketmaster.log")).ok()?;
        log.contains("no other process is left").then_some(())
    });
    assert_eq!(children(peer.pid()), old, "the old child must keep serving");
    assert_no_failures(&load.finish());
}
