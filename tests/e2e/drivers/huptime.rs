//! The huptime driver against a program run the way huptime runs it (zd-lookalike's
//! huptime): on HUP the process forks a fresh copy of itself that writes the pidfile, and
//! exits once its connections are done. huptime has no health check, so a copy that dies
//! takes the service down, and the driver must say so.
//!
//! Not the real huptime: the one `build.sh` builds cannot serve a program that accepts
//! with `accept4`. Its `stubs.map` exports its `accept4` wrapper as `accept4@GLIBC_2.2.5`,
//! but programs link `accept4@GLIBC_2.10`, so the wrapper is never called; its `listen`
//! wrapper still makes the listener non-blocking, and the program's blocking `accept4`
//! fails at once with EAGAIN (zd-fixture gives up on the listener; a program that retries
//! spins, and huptime tracks none of its connections, so a HUP cuts them). Until huptime is
//! built with that version fixed, these tests use zd-lookalike's huptime.

use std::path::PathBuf;

use zd_load::load::ConnectionMode;

use super::{Peer, lookalike, restart_times, worker_until};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, fixture_bin, is_alive, start_load, stderr, wait_for,
};

fn start(env: &TestEnv, worker: &[&str]) -> (Peer, String, PathBuf) {
    let pidfile = env.path("app.pid");
    let pid_arg = pidfile.display().to_string();
    let (peer, addr) = lookalike(env, "huptime", &["--pidfile", &pid_arg], worker);
    wait_for("the program's pidfile", || {
        zd_core::pidfile::read(&pidfile).ok()
    });
    env.write_service(
        "hup",
        &format!(
            "driver: huptime\npidfile: {}\nsettle: 200ms\ntimeout: 20s\n",
            pidfile.display()
        ),
    );
    (peer, addr, pidfile)
}

#[test]
fn huptime_restarts_ten_times_under_load_without_a_failed_request() {
    let env = TestEnv::new();
    let fixture = fixture_bin().display().to_string();
    let (_peer, addr, pidfile) = start(&env, &[&fixture]);
    let first = zd_core::pidfile::read(&pidfile).expect("pid");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    restart_times(&env, "hup", 10);
    assert_no_failures(&load.finish());
    assert!(!is_alive(first), "the first copy still runs");
}

#[test]
fn huptime_whose_new_copy_dies_fails_and_says_the_service_is_going_down() {
    let env = TestEnv::new();
    let marker = env.path("broken");
    let worker = worker_until(&marker, "--crash-at-start");
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let (_peer, _addr, pidfile) = start(&env, &worker);
    let old = zd_core::pidfile::read(&pidfile).expect("pid");
    std::fs::write(&marker, "").expect("marker");
    let out = env.run_zdctl(&["restart", "hup"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("failed"), "{err}");
    assert!(err.contains("exited"), "{err}");
    wait_for("the old copy to exit", || (!is_alive(old)).then_some(()));
}
