//! The einhorn driver against the real einhorn (1.x, from source): `upgrade` and `state` on
//! its command socket, a pool of two workers replaced under load; new workers that die
//! before they ack leave the old ones serving. A command socket that refuses, answers
//! garbage or never answers is a clear error within the timeout: no einhorn behaves that
//! way, so a fake socket stands in for it.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use zd_load::load::ConnectionMode;

use super::{
    Peer, assert_fast_rollback, assert_listener_held_by_active, assert_real_pids, built_peer,
    children, free_port, restart_json, restart_times, worker_until,
};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, fixture_bin, http_get, is_alive, start_load, stderr,
    wait_for,
};

struct Einhorn {
    peer: Peer,
    addr: String,
}

/// einhorn with two workers, acked once they lived `ack_after` seconds (its timer ack
/// mode). `None` when einhorn is not built.
fn start(env: &TestEnv, test: &str, worker: &[String], ack_after: &str) -> Option<Einhorn> {
    start_with(env, test, worker, ack_after, &[])
}

/// [`start`] with more flags for einhorn.
fn start_with(
    env: &TestEnv,
    test: &str,
    worker: &[String],
    ack_after: &str,
    flags: &[&str],
) -> Option<Einhorn> {
    let einhorn = built_peer(test, "einhorn", &[])?;
    let socket = env.path("einhorn.sock");
    let pidfile = env.path("einhorn.pid");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(einhorn);
    cmd.args(flags)
        .args(["-b", &addr, "-n", "2", "-m", ack_after, "-d"])
        .arg(&socket)
        .arg("-e")
        .arg(&pidfile)
        .arg("--")
        // einhorn stops a worker with USR2 and zd-fixture drains on TERM: zd-lookalike's
        // einhorn-worker shim runs the worker and translates.
        .args([env!("CARGO_BIN_EXE_zd-lookalike"), "einhorn-worker", "--"])
        .args(worker);
    let peer = Peer::spawn(cmd, &env.path("einhorn.log"));
    wait_for("einhorn to answer", || http_get(&addr, "/").ok());
    wait_for("two workers", || {
        (children(peer.pid()).len() == 2).then_some(())
    });
    service(env, &socket, &pidfile, super::script::TIMEOUT);
    Some(Einhorn { peer, addr })
}

fn service(env: &TestEnv, socket: &std::path::Path, pidfile: &std::path::Path, timeout: &str) {
    env.write_service(
        "eh",
        &format!(
            "driver: einhorn\nsocket: {}\npidfile: {}\ntimeout: {timeout}\n",
            socket.display(),
            pidfile.display()
        ),
    );
}

#[test]
#[cfg_attr(
    not(has_einhorn),
    ignore = "einhorn not built; run ../shared/peers/build.sh target/peers"
)]
#[cfg_attr(
    all(has_einhorn, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn einhorn_passes_the_driver_script() {
    let env = TestEnv::new();
    let (worker, marker) = super::script::worker(&env);
    let Some(einhorn) = start(&env, "einhorn_passes_the_driver_script", &worker, "0.3") else {
        return;
    };
    super::script::run(
        &env,
        super::script::Case {
            name: "eh",
            driver: "einhorn",
            addr: einhorn.addr.clone(),
            mode: ConnectionMode::KeepAlive,
            break_next: super::script::touch(marker),
            on_failure: super::script::OnFailure::RollsBack,
            guard: Box::new(einhorn),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_einhorn),
    ignore = "einhorn not built; run ../shared/peers/build.sh target/peers"
)]
fn einhorn_upgrades_ten_times_under_load_without_a_failed_request() {
    let env = TestEnv::new();
    let test = "einhorn_upgrades_ten_times_under_load_without_a_failed_request";
    let worker = [fixture_bin().display().to_string()];
    let Some(einhorn) = start(&env, test, &worker, "0.3") else {
        return;
    };
    let first = children(einhorn.peer.pid());
    let load = start_load(&einhorn.addr, 16, ConnectionMode::Close);
    restart_times(&env, "eh", 10);
    assert_listener_held_by_active(&env, "eh", &einhorn.addr);
    assert_no_failures(&load.finish());
    assert!(
        children(einhorn.peer.pid())
            .iter()
            .all(|w| !first.contains(w)),
        "a first worker still runs"
    );
}

#[test]
#[cfg_attr(
    not(has_einhorn),
    ignore = "einhorn not built; run ../shared/peers/build.sh target/peers"
)]
fn einhorn_whose_new_workers_die_before_they_ack_rolls_back_and_keeps_the_old_ones() {
    let env = TestEnv::new();
    let test = "einhorn_whose_new_workers_die_before_they_ack_rolls_back_and_keeps_the_old_ones";
    let marker = env.path("broken");
    // New workers live 300ms, far short of the 3s ack timer even on a busy machine.
    let worker = worker_until(&marker, "--exit-after 300ms");
    let Some(einhorn) = start(&env, test, &worker, "3") else {
        return;
    };
    let old = children(einhorn.peer.pid());
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&einhorn.addr, 16, ConnectionMode::Close);
    let out = env.run_zdctl(&["restart", "eh"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("exited before it acked"), "{err}");
    assert!(
        old.iter().all(|w| is_alive(*w)),
        "an old worker was stopped"
    );
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_einhorn),
    ignore = "einhorn not built; run ../shared/peers/build.sh target/peers"
)]
fn einhorn_rolls_back_at_once_when_its_new_workers_die_at_start() {
    let env = TestEnv::new();
    let test = "einhorn_rolls_back_at_once_when_its_new_workers_die_at_start";
    let marker = env.path("broken");
    // New workers exit at once, often between two looks at einhorn's state.
    let worker = worker_until(&marker, "--crash-at-start");
    let Some(einhorn) = start(&env, test, &worker, "3") else {
        return;
    };
    let old = children(einhorn.peer.pid());
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&einhorn.addr, 16, ConnectionMode::Close);
    let (out, events, elapsed) = restart_json(&env, "eh", &[]);
    assert_fast_rollback(test, &out, &events, elapsed, Duration::from_secs(20), &old);
    assert!(
        stderr(&out).contains("exited before it acked"),
        "{}",
        stderr(&out)
    );
    let signalled = events.iter().find(|e| e["event"] == "signalled");
    assert_eq!(
        signalled.and_then(|e| e["pid"].as_i64()),
        Some(i64::from(einhorn.peer.pid())),
        "the upgrade is sent to einhorn's master"
    );
    assert!(
        old.iter().all(|w| is_alive(*w)),
        "an old worker was stopped: {}",
        std::fs::read_to_string(env.path("einhorn.log")).unwrap_or_default()
    );
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_einhorn),
    ignore = "einhorn not built; run ../shared/peers/build.sh target/peers"
)]
fn einhorn_that_refuses_to_upgrade_fails_the_restart_at_once_with_its_reason() {
    let env = TestEnv::new();
    let test = "einhorn_that_refuses_to_upgrade_fails_the_restart_at_once_with_its_reason";
    let worker = [fixture_bin().display().to_string()];
    // einhorn re-executes itself to upgrade, after checking that it can: with a
    // re-exec command that fails, it logs that it cannot reload safely and does nothing.
    let Some(einhorn) = start_with(&env, test, &worker, "0.3", &["--reexec-as=/bin/false"]) else {
        return;
    };
    let old = children(einhorn.peer.pid());
    let started = std::time::Instant::now();
    let (out, events, elapsed) = restart_json(&env, "eh", &[]);
    eprintln!("REFUSAL TIME: {test}: {elapsed:?}");
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("refused to upgrade"), "{err}");
    assert!(
        err.contains("Can not initiate einhorn master reload safely"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it waited for the timeout"
    );
    assert_real_pids(&events);
    let log = std::fs::read_to_string(env.path("einhorn.log")).expect("einhorn's log");
    assert!(
        log.contains("Can not initiate einhorn master reload safely, aborting"),
        "einhorn did not refuse: {log}"
    );
    // einhorn runs its upgrade check as a child of its own: once that is gone, its
    // children are the old workers, untouched.
    wait_for("the old workers alone, still serving", || {
        (children(einhorn.peer.pid()) == old).then_some(())
    });
}

#[test]
fn an_einhorn_socket_that_refuses_answers_garbage_or_stays_silent_is_a_clear_error() {
    let env = TestEnv::new();
    let socket: PathBuf = env.path("einhorn.sock");
    service(&env, &socket, &env.path("einhorn.pid"), "2s");
    let out = env.run_zdctl(&["restart", "eh"]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));

    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let server = std::thread::spawn(move || {
        // First a peer that answers something that is not einhorn's, then one that reads
        // the request and never answers.
        let mut silent = Vec::new();
        for answer in [Some(&b"SSH-2.0-OpenSSH_9.2\n"[..]), None] {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut line = [0u8; 256];
                let _ = std::io::Read::read(&mut conn, &mut line);
                match answer {
                    Some(text) => {
                        let _ = conn.write_all(text);
                    }
                    None => silent.push(conn),
                }
            }
        }
        silent
    });
    let out = env.run_zdctl(&["restart", "eh"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not einhorn's state"),
        "{}",
        stderr(&out)
    );
    let out = env.run_zdctl(&["restart", "eh"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("no complete answer to"),
        "{}",
        stderr(&out)
    );
    drop(server.join().expect("fake einhorn"));
}
