//! The `signal` driver against zd-flipper (a new pid in the pidfile) and a shell
//! supervisor (a new child); timeouts, bad pidfiles and bad control sockets.

use std::io::Write;
use std::process::Command;

use super::{Peer, generation, restart_times};
use crate::support::{TestEnv, assert_code, is_alive, sibling_bin, stderr, wait_for};

fn flipper(env: &TestEnv, flip_on: &str) -> (Peer, std::path::PathBuf) {
    let pidfile = env.path("flipper.pid");
    let mut cmd = Command::new(sibling_bin("zd-flipper"));
    cmd.arg("--pidfile")
        .arg(&pidfile)
        .arg("--log")
        .arg(env.path("flipper.log"))
        .args(["--flip-on", flip_on]);
    let peer = Peer::spawn(cmd, &env.path("flipper.out"));
    wait_for("the flipper's pidfile", || {
        zd_core::pidfile::read(&pidfile).ok()
    });
    (peer, pidfile)
}

fn service(env: &TestEnv, pidfile: &std::path::Path, extra: &str) {
    env.write_service(
        "flip",
        &format!(
            "driver: signal\npidfile: {}\nexpect: zd-flipper\nsettle: 200ms\n{extra}",
            pidfile.display()
        ),
    );
}

#[test]
fn the_signal_driver_completes_when_the_pidfile_names_a_new_process_and_the_old_one_exits() {
    let env = TestEnv::new();
    let (_peer, pidfile) = flipper(&env, "HUP");
    service(&env, &pidfile, "timeout: 20s\n");
    let first = zd_core::pidfile::read(&pidfile).expect("pid");
    restart_times(&env, "flip", 3);
    let last = zd_core::pidfile::read(&pidfile).expect("pid");
    assert_ne!(first, last);
    assert!(!is_alive(first), "the old flipper still runs");
    let out = env.run_zdctl(&["list"]);
    assert_code(&out, 0);
    assert!(crate::support::stdout(&out).contains("(driver signal)"));
    // The flipper's successors are in the peer's process group: the guard kills them.
    let _ = generation(&env, "flip");
}

#[test]
fn the_signal_driver_completes_when_a_new_child_replaces_the_old_one() {
    let env = TestEnv::new();
    let pidfile = env.path("sup.pid");
    // A tiny supervisor: on HUP it starts a new child, then stops the old one.
    let script = format!(
        "echo $$ > {}; sleep 1000 & old=$!; \
         trap 'sleep 1000 & new=$!; sleep 0.3; kill $old; old=$new' HUP; \
         while :; do wait; done # zd-shell-supervisor",
        pidfile.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let _peer = Peer::spawn(cmd, &env.path("sup.out"));
    wait_for("the supervisor's pidfile", || {
        zd_core::pidfile::read(&pidfile).ok()
    });
    env.write_service(
        "sup",
        &format!(
            "driver: signal\nwatch: child\npidfile: {}\nexpect: zd-shell-supervisor\n\
             settle: 100ms\ntimeout: 20s\n",
            pidfile.display()
        ),
    );
    restart_times(&env, "sup", 2);
}

#[test]
fn the_signal_driver_fails_after_its_timeout_when_nothing_flips() {
    let env = TestEnv::new();
    // The flipper flips on USR2 and only logs the HUP the driver sends.
    let (_peer, pidfile) = flipper(&env, "USR2");
    service(&env, &pidfile, "timeout: 1s\n");
    let before = zd_core::pidfile::read(&pidfile).expect("pid");
    let out = env.run_zdctl(&["restart", "flip"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("no new process within 1s"),
        "{}",
        stderr(&out)
    );
    assert!(is_alive(before), "the flipper must keep running");
}

#[test]
fn a_missing_stale_or_foreign_pidfile_is_refused_without_a_signal() {
    let env = TestEnv::new();
    let pidfile = env.path("app.pid");
    service(&env, &pidfile, "timeout: 5s\n");
    let out = env.run_zdctl(&["restart", "flip"]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    // A pid that no longer runs.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let gone_pid = gone.id();
    gone.wait().expect("reap");
    std::fs::write(&pidfile, format!("{gone_pid}\n")).expect("pidfile");
    let out = env.run_zdctl(&["restart", "flip"]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("stale"), "{}", stderr(&out));

    // A live process that is not the flipper: a sleep, which HUP would kill.
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    let sleeper = Peer::spawn(cmd, &env.path("sleep.out"));
    std::fs::write(&pidfile, format!("{}\n", sleeper.pid())).expect("pidfile");
    let out = env.run_zdctl(&["restart", "flip"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("no signal was sent"),
        "{}",
        stderr(&out)
    );
    assert!(
        is_alive(sleeper.pid()),
        "the unrelated process was signalled"
    );

    std::fs::write(&pidfile, "garbage\n").expect("pidfile");
    let out = env.run_zdctl(&["restart", "flip"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("does not hold a pid"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_control_socket_that_refuses_or_answers_garbage_is_a_clear_error() {
    let env = TestEnv::new();
    let socket = env.path("master.sock");
    env.write_service(
        "lb",
        &format!(
            "driver: haproxy\nsocket: {}\ntimeout: 3s\n",
            socket.display()
        ),
    );
    let out = env.run_zdctl(&["restart", "lb"]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));

    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let server = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut line = [0u8; 64];
            let _ = std::io::Read::read(&mut conn, &mut line);
            let _ = conn.write_all(b"HTTP/1.0 418 garbage\n");
        }
    });
    let out = env.run_zdctl(&["restart", "lb"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not HAProxy's process list"),
        "{}",
        stderr(&out)
    );
    server.join().expect("garbage server");
}
