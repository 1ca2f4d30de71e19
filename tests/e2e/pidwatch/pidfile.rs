//! Pid file torture: whatever happens to the file, pidwatch never exits spuriously, never
//! signals a process that is not the service's, never hangs on what it finds at the path and
//! never prints a file's content that is not a pid.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{Pid, mkfifo};

use super::Flipping;
use super::harness::{TestEnv, is_alive, pidwatch_bin, read_pid, received, wait_until};

/// One way of touching the pid file.
type Step<'a> = Box<dyn Fn() + 'a>;

/// Rewrites the pid file in the ways real writers and attackers do, checking after each
/// step (with a two-signal round trip) that pidwatch still runs and still forwards to the
/// service.
#[test]
fn pid_file_torture_never_causes_an_exit_or_a_misdirected_signal() {
    let mut service = Flipping::start(&[], &[]);
    let pidfile = service.env.path("app.pid");
    let main = service.followed();
    // A stranger: started by the test, not by pidwatch. USR1 (our marker) would kill it.
    let mut stranger = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn the stranger");
    let stranger_pid = Pid::from_raw(stranger.id() as i32);

    let pidwatch = service.pidwatch_pid();
    let write = |text: &str| fs::write(&pidfile, text).expect("write pid file");
    let steps: Vec<(&str, Step<'_>)> = vec![
        ("trailing newline", Box::new(|| write(&format!("{main}\n")))),
        (
            "surrounding spaces",
            Box::new(|| write(&format!("  {main}  \n"))),
        ),
        (
            "non-atomic writer: truncate, then two writes",
            Box::new(|| {
                let text = format!("{main}\n");
                let (head, tail) = text.split_at(text.len() / 2);
                let mut file = fs::File::create(&pidfile).expect("truncate");
                file.write_all(head.as_bytes()).expect("first half");
                file.flush().expect("flush");
                file.write_all(tail.as_bytes()).expect("second half");
            }),
        ),
        (
            "rename into place",
            Box::new(|| {
                let tmp = pidfile.with_extension("new");
                fs::write(&tmp, format!("{main}\n")).expect("temp");
                fs::rename(&tmp, &pidfile).expect("rename");
            }),
        ),
        (
            "delete",
            Box::new(|| fs::remove_file(&pidfile).expect("delete")),
        ),
        ("recreate", Box::new(|| write(&format!("{main}\n")))),
        ("garbage", Box::new(|| write("not a pid\n"))),
        ("empty file", Box::new(|| write(""))),
        ("zero", Box::new(|| write("0\n"))),
        ("negative", Box::new(|| write("-1\n"))),
        ("init", Box::new(|| write("1\n"))),
        (
            "a process that is not a descendant",
            Box::new(|| write(&format!("{stranger_pid}\n"))),
        ),
        (
            "pidwatch itself",
            Box::new(|| write(&format!("{pidwatch}\n"))),
        ),
        ("no such process", Box::new(|| write("4194303\n"))),
        (
            "a FIFO in place of the pid file",
            Box::new(|| {
                fs::remove_file(&pidfile).expect("delete");
                mkfifo(&pidfile, Mode::from_bits_truncate(0o600)).expect("mkfifo");
            }),
        ),
        (
            "a symbolic link to a file that holds the service's pid",
            Box::new(|| {
                let target = pidfile.with_extension("target");
                fs::write(&target, format!("{main}\n")).expect("link target");
                fs::remove_file(&pidfile).expect("delete");
                symlink(&target, &pidfile).expect("symlink");
            }),
        ),
        (
            "back to the service",
            Box::new(|| {
                fs::remove_file(&pidfile).expect("delete");
                write(&format!("{main}\n"));
            }),
        ),
    ];
    for (what, step) in &steps {
        step();
        service_sync(&mut service, main, what);
        assert!(
            is_alive(stranger_pid),
            "the stranger was signalled after: {what}"
        );
    }
    let stderr = service.env.proc(service.pidwatch).stderr();
    assert!(
        stderr.contains(&format!("ignoring pid {stranger_pid}")),
        "{stderr}"
    );
    let path = pidfile.display();
    for refusal in [
        format!("ignoring pid file '{path}': it does not hold a pid"),
        format!("ignoring pid file '{path}': it is a FIFO, not a regular file"),
        format!("ignoring pid file '{path}': it is a symbolic link"),
    ] {
        assert!(stderr.contains(&refusal), "no '{refusal}' in:\n{stderr}");
    }
    // Whatever is not a pid is never echoed: it could be any file's content.
    assert!(!stderr.contains("not a pid"), "{stderr}");
    assert!(!received(&service.log(), main, "SIGTERM", 1));

    // Still following for real: a flip works, and TERM stops the service.
    let next = service.flip_with(Signal::SIGUSR2);
    assert_ne!(read_pid(&pidfile), Some(main));
    assert_eq!(service.stop(), 0);
    assert!(received(&service.log(), next, "SIGTERM", 1));
    assert!(is_alive(stranger_pid));
    stranger.kill().expect("kill the stranger");
    stranger.wait().expect("reap the stranger");
}

/// After a step: pidwatch handled it, is still running, and forwards to `main`.
fn service_sync(service: &mut Flipping, main: Pid, what: &str) {
    let pidwatch = service.pidwatch;
    assert!(
        service.env.proc(pidwatch).is_running(),
        "pidwatch exited after: {what}"
    );
    for _ in 0..2 {
        let count = service.count_received(main, "SIGUSR1") + 1;
        service.signal_pidwatch(Signal::SIGUSR1);
        wait_until(
            &format!("the marker to reach the service after: {what}"),
            || {
                assert!(
                    service.env.proc(pidwatch).is_running(),
                    "pidwatch exited after: {what}"
                );
                received(&service.log(), main, "SIGUSR1", count)
            },
        );
    }
}

/// A flipping process that exits before its successor has written the pid file.
fn late_flip(service_args: &[&str]) -> (Flipping, std::path::PathBuf, Pid) {
    let env = TestEnv::new();
    let fifo = env.path("go.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo_arg = fifo.to_str().expect("utf-8 temp path").to_owned();
    let mut service = Flipping::spawn(env, service_args, &["--late-successor", &fifo_arg]);
    let old = service.followed();
    service.signal_pidwatch(Signal::SIGUSR2);
    let pidwatch = service.pidwatch;
    wait_until("pidwatch to see the old process exit", || {
        let stderr = service.env.proc(pidwatch).stderr();
        stderr.contains(&format!("pid {old} exited with code 0"))
    });
    (service, fifo, old)
}

#[test]
fn a_successor_that_writes_the_pid_file_after_the_old_process_exited_is_followed() {
    let (mut service, fifo, old) = late_flip(&["--grace", "30s"]);
    assert!(service.env.proc(service.pidwatch).is_running());
    fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .and_then(|mut f| f.write_all(b"g"))
        .expect("release the successor");
    let pidfile = service.env.path("app.pid");
    wait_until("the successor to write the pid file", || {
        read_pid(&pidfile).is_some_and(|p| p != old)
    });
    let new = service.followed();
    assert_ne!(new, old);
    assert_eq!(service.stop(), 0);
    assert!(received(&service.log(), new, "SIGTERM", 1));
}

#[test]
fn pidwatch_exits_with_the_old_status_when_no_successor_appears_within_the_grace() {
    let (mut service, _fifo, _old) = late_flip(&["--grace", "200ms"]);
    // The successor is alive but never writes the pid file.
    let pidwatch = service.pidwatch;
    assert_eq!(service.env.proc(pidwatch).exit_code(), 0);
}

/// What pidwatch must never print: the content of a file it was pointed at.
const SECRET: &str = "SECRET-pidwatch-must-not-print";

/// Starts `pidwatch ARGS --pidfile app.pid -- sleep 600` in `env`; the sleep never writes the
/// pid file, so only the file the test puts there matters.
fn spawn_over_sleep(env: &mut TestEnv, args: &[&str]) -> usize {
    let mut cmd = Command::new(pidwatch_bin());
    cmd.args(args)
        .arg("--pidfile")
        .arg(env.path("app.pid"))
        .arg("--")
        .args(["sleep", "600"]);
    env.spawn("pidwatch", &mut cmd)
}

#[test]
fn a_fifo_at_the_pid_file_path_does_not_hang_pidwatch_past_its_startup_timeout() {
    let mut env = TestEnv::new();
    let pidfile = env.path("app.pid");
    mkfifo(&pidfile, Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let started = Instant::now();
    let index = spawn_over_sleep(&mut env, &["--quiet", "--startup-timeout", "300ms"]);
    assert_eq!(env.proc(index).exit_code(), 124);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Even with --quiet, the final error says what was wrong with the pid file.
    let stderr = env.proc(index).stderr();
    let error = format!(
        "no valid pid appeared in '{}' in time (see --startup-timeout; the pid file: it is a \
         FIFO, not a regular file)",
        pidfile.display()
    );
    assert!(stderr.contains(&error), "no '{error}' in:\n{stderr}");
}

#[test]
fn term_reaches_the_command_while_a_fifo_sits_at_the_pid_file_path() {
    let mut env = TestEnv::new();
    let pidfile = env.path("app.pid");
    mkfifo(&pidfile, Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let index = spawn_over_sleep(&mut env, &[]);
    let refusal = format!(
        "ignoring pid file '{}': it is a FIFO, not a regular file",
        pidfile.display()
    );
    wait_until("pidwatch to refuse the FIFO", || {
        let proc = env.proc(index);
        assert!(proc.is_running(), "pidwatch exited");
        proc.stderr().contains(&refusal)
    });
    env.proc(index).signal(Signal::SIGTERM);
    // Forwarded to the command, which dies of it and leaves nothing behind: 128+15.
    assert_eq!(env.proc(index).exit_code(), 128 + Signal::SIGTERM as i32);
}

#[test]
fn a_symbolic_link_at_the_pid_file_path_is_refused_without_printing_its_target() {
    let mut env = TestEnv::new();
    let pidfile = env.path("app.pid");
    let shadow = env.path("shadow");
    fs::write(
        &shadow,
        format!("root:$y$j9T${SECRET}:20000:0:99999:7:::\n"),
    )
    .expect("secret");
    symlink(&shadow, &pidfile).expect("symlink");
    let index = spawn_over_sleep(&mut env, &["--startup-timeout", "300ms"]);
    assert_eq!(env.proc(index).exit_code(), 124);
    let stderr = env.proc(index).stderr();
    let refusal = format!(
        "ignoring pid file '{}': it is a symbolic link",
        pidfile.display()
    );
    assert!(stderr.contains(&refusal), "no '{refusal}' in:\n{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert!(!stderr.contains("root:"), "{stderr}");
}

#[test]
fn a_pid_file_that_holds_no_pid_is_refused_without_echoing_its_content() {
    let huge = SECRET.repeat(40_000);
    let contents = [
        format!("password={SECRET}\n"),
        format!("4242{SECRET}\n"),
        // A terminal escape that would retitle the operator's window.
        format!("\x1b]0;{SECRET}\x07\n"),
        huge,
    ];
    for content in &contents {
        let mut env = TestEnv::new();
        let pidfile = env.path("app.pid");
        fs::write(&pidfile, content).expect("pid file");
        let index = spawn_over_sleep(&mut env, &["--startup-timeout", "200ms"]);
        assert_eq!(env.proc(index).exit_code(), 124);
        let stderr = env.proc(index).stderr();
        let refusal = format!("ignoring pid file '{}': it ", pidfile.display());
        assert!(stderr.contains(&refusal), "no '{refusal}' in:\n{stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
        assert!(!stderr.contains('\x1b'), "{stderr}");
    }
}
