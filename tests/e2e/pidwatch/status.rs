//! pidwatch exits with the status of the process it watched.

use std::process::Command;

use nix::sys::signal::Signal;

use super::Flipping;
use super::harness::{TestEnv, flipper_bin, flipper_events, pidwatch_bin, wait_until};

/// Starts pidwatch over a flipper that exits with `code` on TERM, once it runs.
fn exit_code_after_term(env: &mut TestEnv, code: u8) -> i32 {
    let log = format!("app{code}.log");
    let mut cmd = Command::new(pidwatch_bin());
    cmd.arg("--quiet")
        .arg("--pidfile")
        .arg(env.path(&format!("app{code}.pid")))
        .arg("--")
        .arg(flipper_bin())
        .arg("--pidfile")
        .arg(env.path(&format!("app{code}.pid")))
        .arg("--log")
        .arg(env.path(&log))
        .args(["--term-exit", &code.to_string()]);
    let index = env.spawn(&format!("pidwatch-{code}"), &mut cmd);
    // The flipper logs its start once its signals are blocked, so TERM cannot kill it
    // before it can choose its exit code. Before pidwatch follows the pid file, TERM goes to
    // its direct child, which is the same process.
    wait_until("the flipper to start", || !env.read(&log).is_empty());
    env.proc(index).signal(Signal::SIGTERM);
    env.proc(index).exit_code()
}

#[test]
fn every_exit_code_from_0_to_255_is_relayed() {
    let mut env = TestEnv::new();
    for code in 0..=255u8 {
        assert_eq!(exit_code_after_term(&mut env, code), i32::from(code));
    }
}

#[test]
fn death_by_a_signal_is_relayed_as_128_plus_its_number() {
    for signal in [
        Signal::SIGKILL,
        Signal::SIGSEGV,
        Signal::SIGABRT,
        Signal::SIGUSR1,
    ] {
        let mut service = Flipping::start(&[], &["--term-signal", signal.as_str()]);
        // After one flip the watched process is an adopted grandchild, not the direct child.
        service.flip_with(Signal::SIGUSR2);
        assert_eq!(service.stop(), 128 + signal as i32, "{signal}");
    }
}

#[test]
fn the_exit_code_of_a_flipped_process_is_relayed() {
    let mut service = Flipping::start(&[], &["--term-exit", "201"]);
    service.flip_with(Signal::SIGUSR2);
    service.flip_with(Signal::SIGUSR2);
    assert_eq!(service.stop(), 201);
}

#[test]
fn zero_flag_exits_0_whatever_the_service_status() {
    let mut service = Flipping::start(&["--zero"], &["--term-exit", "9"]);
    service.flip_with(Signal::SIGUSR2);
    assert_eq!(service.stop(), 0);
    assert!(
        flipper_events(&service.log())
            .iter()
            .any(|(_, e)| e == "exit 9")
    );
}

#[test]
fn a_command_that_does_not_exist_exits_127() {
    let mut env = TestEnv::new();
    let mut cmd = Command::new(pidwatch_bin());
    cmd.arg("--pidfile")
        .arg(env.path("x.pid"))
        .arg("--")
        .arg(env.path("no-such-program"));
    let index = env.spawn("pidwatch", &mut cmd);
    assert_eq!(env.proc(index).exit_code(), 127);
}

#[test]
fn a_service_that_never_writes_its_pid_file_times_out_with_124_and_is_stopped() {
    let mut env = TestEnv::new();
    let log = env.path("app.log");
    let mut cmd = Command::new(pidwatch_bin());
    cmd.args(["--startup-timeout", "200ms", "--pidfile"])
        .arg(env.path("other.pid"))
        .arg("--")
        .arg(flipper_bin())
        .arg("--pidfile")
        .arg(env.path("app.pid"))
        .arg("--log")
        .arg(&log)
        .args(["--term-exit", "5"]);
    let index = env.spawn("pidwatch", &mut cmd);
    assert_eq!(env.proc(index).exit_code(), 124);
    wait_until("the service to be stopped with TERM", || {
        env.read("app.log").contains("exit 5")
    });
}

#[test]
fn a_trusted_process_that_is_not_a_descendant_ends_with_the_unknown_status_code() {
    // --trust-owner accepts a process of the pid file's owner that pidwatch did not start;
    // pidwatch sees it end through its pidfd but cannot reap it, so exits 121.
    let mut env = TestEnv::new();
    let mut stranger = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn the stranger");
    let stranger_pid = stranger.id();
    let pidfile = env.path("app.pid");
    std::fs::write(&pidfile, format!("{stranger_pid}\n")).expect("pid file");
    let mut cmd = Command::new(pidwatch_bin());
    cmd.args(["--trust-owner", "--grace", "100ms", "--pidfile"])
        .arg(&pidfile)
        .arg("--")
        .args(["sh", "-c", "exit 0"]);
    let index = env.spawn("pidwatch", &mut cmd);
    wait_until("pidwatch to follow the stranger", || {
        env.proc(index)
            .stderr()
            .contains(&format!("following pid {stranger_pid}\n"))
    });
    stranger.kill().expect("kill the stranger");
    stranger.wait().expect("reap the stranger");
    assert_eq!(env.proc(index).exit_code(), 121);
}
