//! The psflip driver against zd-lookalike's psflip: a new psflip per upgrade, the pidfile
//! moved once its child is healthy; a new child that dies leaves the old psflip serving.

use std::path::PathBuf;

use zd_load::load::ConnectionMode;

use super::{Peer, lookalike, restart_times, worker_until};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, fixture_bin, is_alive, start_load, stderr, wait_for,
};

/// psflip whose health check is `healthy_after` of life.
fn start(env: &TestEnv, worker: &[&str], healthy_after: &str) -> (Peer, String, PathBuf) {
    let pidfile = env.path("psflip.pid");
    let pid_arg = pidfile.display().to_string();
    let flags = ["--pidfile", &pid_arg, "--healthy-after", healthy_after];
    let (peer, addr) = lookalike(env, "psflip", &flags, worker);
    wait_for("psflip's pidfile", || zd_core::pidfile::read(&pidfile).ok());
    env.write_service(
        "flip",
        &format!(
            "driver: psflip\npidfile: {}\nsettle: 200ms\ntimeout: 20s\n",
            pidfile.display()
        ),
    );
    (peer, addr, pidfile)
}

#[test]
fn psflip_upgrades_ten_times_under_load_without_a_failed_request() {
    let env = TestEnv::new();
    let fixture = fixture_bin().display().to_string();
    let (_peer, addr, pidfile) = start(&env, &[&fixture], "300ms");
    let first = zd_core::pidfile::read(&pidfile).expect("pid");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    restart_times(&env, "flip", 10);
    assert_no_failures(&load.finish());
    let last = zd_core::pidfile::read(&pidfile).expect("pid");
    assert_ne!(first, last);
    assert!(!is_alive(first), "the first psflip still runs");
}

#[test]
fn psflip_keeps_the_old_process_when_the_new_child_dies_before_it_is_healthy() {
    let env = TestEnv::new();
    let marker = env.path("broken");
    // New children live 300ms, far short of the 3s health check even on a busy machine.
    let worker = worker_until(&marker, "--exit-after 300ms");
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let (_peer, addr, pidfile) = start(&env, &worker, "3s");
    let old = zd_core::pidfile::read(&pidfile).expect("pid");
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    let out = env.run_zdctl(&["restart", "flip"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("exited before it took over"), "{err}");
    assert!(is_alive(old), "the old psflip must keep running");
    assert_eq!(zd_core::pidfile::read(&pidfile).expect("pid"), old);
    assert_no_failures(&load.finish());
}
