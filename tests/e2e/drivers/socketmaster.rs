//! The socketmaster driver against the real socketmaster: a new child per HUP, the old
//! one stopped after `-start`; a new child that dies within `-start` leaves the old one
//! serving. socketmaster passes its listener on fd 3 and says so in `EINHORN_FDS=3`;
//! zd-fixture reads einhorn's newer `EINHORN_FD_COUNT`/`EINHORN_FD_0`, which the test
//! sets in socketmaster's environment for the children to inherit.

use std::process::Command;
use std::time::Duration;

use zd_load::load::ConnectionMode;

use super::{
    Peer, assert_fast_rollback, assert_listener_held_by_active, built_peer, children, free_port,
    restart_json, restart_times, worker_until,
};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, fixture_bin, http_get, start_load, stderr, wait_for,
};

/// socketmaster with its `-start` time; the driver with its `settle` time. socketmaster
/// writes no pidfile: its init system knows its pid, and so does the test. `None` when
/// socketmaster is not built.
fn start(
    env: &TestEnv,
    test: &str,
    worker: &[String],
    start: &str,
    settle: &str,
) -> Option<(Peer, String)> {
    let socketmaster = built_peer(test, "socketmaster", &[])?;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(socketmaster);
    cmd.args(["-listen", &format!("tcp://{addr}"), "-start", start])
        .args(["-command", &worker[0], "--"])
        .args(&worker[1..])
        .env("EINHORN_FD_COUNT", "1")
        .env("EINHORN_FD_0", "3");
    let peer = Peer::spawn(cmd, &env.path("socketmaster.log"));
    wait_for("socketmaster to answer", || http_get(&addr, "/").ok());
    let pidfile = env.path("socketmaster.pid");
    std::fs::write(&pidfile, format!("{}\n", peer.pid())).expect("pidfile");
    env.write_service(
        "sm",
        &format!(
            "driver: socketmaster\npidfile: {}\nsettle: {settle}\ntimeout: {}\n",
            pidfile.display(),
            super::script::TIMEOUT
        ),
    );
    Some((peer, addr))
}

#[test]
#[cfg_attr(
    not(has_socketmaster),
    ignore = "socketmaster not built; run ../shared/peers/build.sh target/peers"
)]
#[cfg_attr(
    all(has_socketmaster, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn socketmaster_passes_the_driver_script() {
    let env = TestEnv::new();
    let (worker, marker) = super::script::worker(&env);
    let Some((peer, addr)) = start(
        &env,
        "socketmaster_passes_the_driver_script",
        &worker,
        "600",
        "300ms",
    ) else {
        return;
    };
    super::script::run(
        &env,
        super::script::Case {
            name: "sm",
            driver: "socketmaster",
            addr,
            mode: ConnectionMode::KeepAlive,
            break_next: super::script::touch(marker),
            on_failure: super::script::OnFailure::RollsBack,
            guard: Box::new(peer),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_socketmaster),
    ignore = "socketmaster not built; run ../shared/peers/build.sh target/peers"
)]
fn socketmaster_restarts_ten_times_under_load_without_a_failed_request() {
    let env = TestEnv::new();
    let test = "socketmaster_restarts_ten_times_under_load_without_a_failed_request";
    let worker = [fixture_bin().display().to_string()];
    let Some((peer, addr)) = start(&env, test, &worker, "600", "300ms") else {
        return;
    };
    let first = children(peer.pid());
    let load = start_load(&addr, 16, ConnectionMode::Close);
    restart_times(&env, "sm", 10);
    assert_listener_held_by_active(&env, "sm", &addr);
    assert_no_failures(&load.finish());
    let now = children(peer.pid());
    assert_eq!(now.len(), 1, "one child after the restarts: {now:?}");
    assert!(!first.contains(&now[0]), "the child was not replaced");
}

#[test]
#[cfg_attr(
    not(has_socketmaster),
    ignore = "socketmaster not built; run ../shared/peers/build.sh target/peers"
)]
fn socketmaster_keeps_the_old_child_when_the_new_one_dies_within_its_start_time() {
    let env = TestEnv::new();
    let test = "socketmaster_keeps_the_old_child_when_the_new_one_dies_within_its_start_time";
    let marker = env.path("broken");
    // New children live 300ms, far short of `settle` and `-start` even on a busy machine.
    let worker = worker_until(&marker, "--exit-after 300ms");
    let Some((peer, addr)) = start(&env, test, &worker, "5000", "3s") else {
        return;
    };
    let old = children(peer.pid());
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    let out = env.run_zdctl(&["restart", "sm"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("the old one keeps running"), "{err}");
    // socketmaster decides after its start time: with only the old child left in its
    // group, it stops nobody and says so.
    wait_for("socketmaster to leave the old child alone", || {
        let log = std::fs::read_to_string(env.path("socketmaster.log")).ok()?;
        log.contains("there's no one left in the group")
            .then_some(())
    });
    assert_eq!(children(peer.pid()), old, "the old child must keep serving");
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_socketmaster),
    ignore = "socketmaster not built; run ../shared/peers/build.sh target/peers"
)]
fn socketmaster_rolls_back_at_once_when_the_new_child_dies_at_start() {
    let env = TestEnv::new();
    let test = "socketmaster_rolls_back_at_once_when_the_new_child_dies_at_start";
    let marker = env.path("broken");
    // Once the marker exists, a new child exits within a millisecond or two: socketmaster
    // reaps it before the driver's first look at its children.
    let script = format!(
        "if [ -e '{}' ]; then exit 7; fi; exec '{}'",
        marker.display(),
        fixture_bin().display()
    );
    let worker = ["/bin/sh".to_owned(), "-c".to_owned(), script];
    let Some((peer, addr)) = start(&env, test, &worker, "5000", "3s") else {
        return;
    };
    let old = children(peer.pid());
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    let (out, events, elapsed) = restart_json(&env, "sm", &[]);
    assert_fast_rollback(test, &out, &events, elapsed, Duration::from_secs(20), &old);
    assert!(
        stderr(&out).contains("the old one keeps running"),
        "{}",
        stderr(&out)
    );
    assert_eq!(children(peer.pid()), old, "the old child must keep serving");
    assert_no_failures(&load.finish());
}
