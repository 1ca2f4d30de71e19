//! pidwatch follows a service through many flips and forwards signals to the current process.

use nix::sys::signal::Signal;

use std::io::Write;

use super::Flipping;
use super::harness::TestEnv;
use super::harness::{flipper_events, is_alive, received, wait_until};

#[test]
fn pidwatch_follows_fifty_flips_and_forwards_signals_to_the_current_process() {
    let mut service = Flipping::start(&[], &["--term-exit", "7"]);
    let first = service.followed();
    let mut followed = vec![first];
    for round in 0..50 {
        // USR2 to pidwatch is forwarded to the current process, which flips on it.
        let new = service.flip_with(Signal::SIGUSR2);
        assert!(!followed.contains(&new), "pid {new} was followed before");
        followed.push(new);
        if round % 10 == 9 {
            for (signal, name) in [(Signal::SIGHUP, "SIGHUP"), (Signal::SIGUSR1, "SIGUSR1")] {
                service.signal_pidwatch(signal);
                wait_until(&format!("{name} to reach pid {new}"), || {
                    received(&service.log(), new, name, 1)
                });
            }
        }
    }
    let last = *followed.last().expect("at least one pid");
    assert!(service.env.proc(service.pidwatch).is_running());

    assert_eq!(
        service.stop(),
        7,
        "pidwatch relays the last process's exit code"
    );
    assert!(!is_alive(last));
    let events = flipper_events(&service.log());
    assert!(events.contains(&(last, "signal SIGTERM".to_owned())));
    // Every signal went to the process that was current: generation N got exactly one USR2
    // (its flip), and only the last one got TERM.
    for (pid, event) in &events {
        if event == "signal SIGTERM" {
            assert_eq!(*pid, last, "SIGTERM reached an old generation");
        }
        if event == "signal SIGUSR2" {
            assert!(followed[..50].contains(pid), "USR2 reached pid {pid}");
        }
    }
    for pid in &followed[..50] {
        assert!(received(&service.log(), *pid, "SIGUSR2", 1));
        assert!(
            !received(&service.log(), *pid, "SIGUSR2", 2),
            "pid {pid} got USR2 twice"
        );
    }
}

#[test]
fn pidwatch_stays_in_the_foreground_after_a_daemonizing_launcher_exits() {
    let mut service = Flipping::start(&[], &["--daemonize", "--term-exit", "3"]);
    let daemon = service.followed();
    let events = flipper_events(&service.log());
    let launcher = events.first().expect("the launcher logged its start").0;
    assert_ne!(launcher, daemon);
    wait_until("the launcher to exit", || !is_alive(launcher));
    let pidwatch = service.pidwatch_pid();
    wait_until("the daemon to be re-parented to pidwatch", || {
        super::harness::parent_of(daemon) == Some(pidwatch)
    });
    let next = service.flip_with(Signal::SIGUSR2);
    assert_eq!(service.stop(), 3);
    assert!(received(&service.log(), next, "SIGTERM", 1));
}

#[test]
fn signals_sent_before_the_pid_file_exists_are_held_for_the_service() {
    let env = TestEnv::new();
    let fifo = env.path("go.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo_arg = fifo.to_str().expect("utf-8 temp path").to_owned();
    let mut service = Flipping::spawn(env, &[], &["--daemonize", "--late-successor", &fifo_arg]);
    // The launcher exits at once; the daemon waits on the fifo before it writes the pid file.
    wait_until("the launcher to exit", || {
        flipper_events(&service.log())
            .iter()
            .any(|(pid, e)| e.starts_with("launched") && !is_alive(*pid))
    });
    for signal in [Signal::SIGHUP, Signal::SIGUSR1] {
        service.signal_pidwatch(signal);
        let held = format!("holding {} until", signal.as_str());
        let pidwatch = service.pidwatch;
        wait_until("pidwatch to hold the signal", || {
            service.env.proc(pidwatch).stderr().contains(&held)
        });
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .and_then(|mut f| f.write_all(b"g"))
        .expect("release the daemon");
    let daemon = service.followed();
    wait_until("both held signals to reach the daemon", || {
        let log = service.log();
        received(&log, daemon, "SIGHUP", 1) && received(&log, daemon, "SIGUSR1", 1)
    });
    assert_eq!(service.stop(), 0);
}

#[test]
fn sigio_and_real_time_signals_sent_to_pidwatch_are_forwarded_like_any_other() {
    // pidwatch's own pid file notices travel as SIGRTMIN (or SIGIO when that queue is full),
    // told apart by a code only the kernel sets: the same signals from a sender still go on.
    let mut service = Flipping::start(&[], &[]);
    let pid = service.followed();
    let rtmin = libc::SIGRTMIN();
    for signo in [libc::SIGIO, rtmin, rtmin + 1] {
        // SAFETY: kill(2) with a valid pid and a signal number; nix's `Signal` has no
        // real-time signals.
        let ret = unsafe { libc::kill(service.pidwatch_pid().as_raw(), signo) };
        assert_eq!(ret, 0, "kill pidwatch with signal {signo}");
        let logged = if signo == libc::SIGIO {
            "signal SIGIO".to_owned()
        } else {
            format!("signal {signo}")
        };
        wait_until(&format!("{logged} to reach the service"), || {
            flipper_events(&service.log()).contains(&(pid, logged.clone()))
        });
    }
    assert_eq!(service.stop(), 0);
}
