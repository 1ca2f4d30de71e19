//! The huptime driver against the real huptime (fork mode, its default) running
//! zd-plain-http: on HUP the program's process stops accepting, forks a fresh copy of the
//! program that inherits the listener and writes the pidfile, and exits once its
//! connections are done. huptime has no health check, so a copy that dies takes the
//! service down, and the driver must say so.
//!
//! The program is zd-plain-http, not zd-fixture: huptime exports its `accept4` wrapper as
//! `accept4@GLIBC_2.2.5` while programs link `accept4@GLIBC_2.10`, so a program that
//! accepts with `accept4` (zd-fixture, like anything on Rust's std, Perl or Python)
//! bypasses the wrapper and gets EAGAIN at once from the listener huptime made
//! non-blocking: it gives up on the listener, or spins retrying. zd-plain-http accepts
//! with plain `accept`, which huptime does wrap.
//!
//! The shared driver script (`script.rs`) runs for huptime whole but for its last step,
//! which for every other driver wants a new generation that dies at once to be rolled back
//! with the old one still serving; huptime cannot give that, so here the restart must fail
//! at once and say the service is going down (`OnFailure::GoesDown`). At the HUP the old process swaps its listeners for dummy
//! sockets, marks itself exiting for good (a later HUP does nothing) and forks the new
//! copy; when that copy dies, nothing accepts from the listener any more (new connections
//! wait in its queue), and the old process exits once its own connections are done,
//! closing the listener and resetting them. The second test below shows exactly that.

use std::path::PathBuf;
use std::process::Command;

use zd_load::load::ConnectionMode;

use super::{Peer, built_peer, free_port, restart_times};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, http_get, is_alive, start_load, stderr, wait_for,
};

/// The real huptime running zd-plain-http with `flags`, and its service file; the peer,
/// the address and the pidfile, or `None` when huptime is not built.
fn start(env: &TestEnv, test: &str, flags: &[&str]) -> Option<(Peer, String, PathBuf)> {
    let huptime = built_peer(test, "huptime", &["huptime.so"])?;
    let addr = format!("127.0.0.1:{}", free_port());
    let pidfile = env.path("app.pid");
    let mut cmd = Command::new(huptime);
    // `--unlink` as docs/drivers.md advises: huptime removes the pidfile at the HUP, and
    // the new copy writes it.
    cmd.arg(format!("--unlink={}", pidfile.display()))
        .arg(env!("CARGO_BIN_EXE_zd-plain-http"))
        .args(["--listen", &addr, "--pidfile"])
        .arg(&pidfile)
        .args(flags);
    let peer = Peer::spawn(cmd, &env.path("huptime.log"));
    wait_for("the program's pidfile", || {
        zd_core::pidfile::read(&pidfile).ok()
    });
    wait_for("huptime's program to answer", || http_get(&addr, "/").ok());
    env.write_service(
        "hup",
        &format!(
            "driver: huptime\npidfile: {}\nsettle: 300ms\ntimeout: {}\n",
            pidfile.display(),
            super::script::TIMEOUT
        ),
    );
    Some((peer, addr, pidfile))
}

#[test]
#[cfg_attr(
    not(has_huptime),
    ignore = "huptime not built; run ../shared/peers/build.sh target/peers"
)]
#[cfg_attr(
    all(has_huptime, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn huptime_passes_the_driver_script_up_to_a_failure_which_takes_the_service_down() {
    let env = TestEnv::new();
    let marker = env.path("broken");
    let marker_arg = marker.display().to_string();
    // Each answer held a second, so that the old copy lives on with its requests while
    // `top` looks at both copies.
    let Some((peer, addr, _pidfile)) = start(
        &env,
        "huptime_passes_the_driver_script_up_to_a_failure_which_takes_the_service_down",
        &["--hold", "1s", "--crash-if-exists", &marker_arg],
    ) else {
        return;
    };
    super::script::run(
        &env,
        super::script::Case {
            name: "hup",
            driver: "huptime",
            addr,
            mode: ConnectionMode::Close,
            break_next: super::script::touch(marker),
            on_failure: super::script::OnFailure::GoesDown,
            guard: Box::new(peer),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_huptime),
    ignore = "huptime not built; run ../shared/peers/build.sh target/peers"
)]
fn huptime_restarts_ten_times_under_load_without_a_failed_request() {
    let env = TestEnv::new();
    let test = "huptime_restarts_ten_times_under_load_without_a_failed_request";
    // Each answer is held a little, so every flip has requests in flight in the old copy.
    let Some((_peer, addr, pidfile)) = start(&env, test, &["--hold", "50ms"]) else {
        return;
    };
    let first = zd_core::pidfile::read(&pidfile).expect("pid");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    restart_times(&env, "hup", 10);
    assert_no_failures(&load.finish());
    assert!(!is_alive(first), "the first copy still runs");
}

#[test]
#[cfg_attr(
    not(has_huptime),
    ignore = "huptime not built; run ../shared/peers/build.sh target/peers"
)]
fn huptime_whose_new_copy_dies_fails_and_the_service_goes_down() {
    let env = TestEnv::new();
    let test = "huptime_whose_new_copy_dies_fails_and_the_service_goes_down";
    let marker = env.path("broken");
    let marker_arg = marker.display().to_string();
    let flags = ["--crash-if-exists", &marker_arg, "--hold", "2s"];
    let Some((_peer, addr, pidfile)) = start(&env, test, &flags) else {
        return;
    };
    let old = zd_core::pidfile::read(&pidfile).expect("pid");
    // A request in flight keeps the old copy alive past the HUP for its answer.
    let idle = sockets_of(old);
    let in_flight = {
        let addr = addr.clone();
        std::thread::spawn(move || http_get(&addr, "/"))
    };
    wait_for("the old copy to accept the request", || {
        (sockets_of(old) > idle).then_some(())
    });
    std::fs::write(&marker, "").expect("marker");
    let out = env.run_zdctl(&["restart", "hup"]);
    assert_code(&out, 1);
    // The driver says the new copy exited when it saw it alive; a copy that died between
    // two looks is a zombie child of the old process by then, and the restart fails once
    // the old process has exited too, with no new pid in the pidfile.
    let err = stderr(&out);
    assert!(err.contains("failed"), "{err}");
    assert!(err.contains("exited"), "{err}");
    // Said as what it is, whether the copy died before or after the first look at it.
    assert!(err.contains("the service is going down"), "{err}");
    let (code, _) = in_flight
        .join()
        .expect("the request's thread")
        .expect("the old copy answers the request it had");
    assert_eq!(code, 200);
    wait_for("the old copy to exit", || (!is_alive(old)).then_some(()));
    assert!(
        http_get(&addr, "/").is_err(),
        "nothing should serve once the old copy is gone"
    );
}

/// How many sockets `pid` holds open.
fn sockets_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|link| link.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}
