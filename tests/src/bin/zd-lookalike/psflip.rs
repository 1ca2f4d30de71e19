//! psflip (mwek/psflip, built on cloudflare/tableflip), as its README describes it:
//!
//! - psflip runs one child with psflip's environment and passes it every signal except the
//!   upgrade signal (HUP); when the child exits, psflip exits with its code.
//! - On HUP the old psflip starts a new psflip (tableflip re-executes the binary and hands
//!   over its file descriptors). The new psflip starts a new child and waits until it is
//!   healthy (`--healthy-after`: alive that long, psflip's `alive` check). If the child dies
//!   first, the new psflip exits and the old one keeps running untouched.
//! - A healthy new psflip writes the pidfile, then tells the old one (tableflip's readiness
//!   pipe). The old psflip sends its child TERM, waits for it (SIGKILL after 10 s), exits.
//!
//! Real psflip keeps its listeners to itself and proxies to the child; this one hands the
//! listener to the child on fd 3 (`EINHORN_FD_COUNT=1`), so zd-fixture serves directly. The
//! driver only sees what matters to it either way: signals, the pidfile, and processes.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::common::{
    self, Args, Signals, TICK, pipe, reap, say, spawn_self, spawn_worker, wait_exit, write_pidfile,
};

/// The fd a new psflip reports readiness on (tableflip's notification pipe).
const READY_ENV: &str = "ZD_LOOKALIKE_READY_FD";

/// How long the old child may take to stop after TERM (psflip's `shutdown.timeout`).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: &Args) -> Result<i32> {
    let signals = Signals::new()?;
    let listener = common::listener(args)?;
    let pidfile = args.pidfile.as_deref().context("--pidfile is required")?;
    let child = spawn_worker(args, &listener, &[])?;
    say(&format!("started child {child}"));

    // The health check: the child must stay alive for `--healthy-after`.
    let healthy_at = Instant::now() + args.healthy_after;
    while Instant::now() < healthy_at {
        if let Some((_, code)) = reap().into_iter().find(|(pid, _)| *pid == child) {
            say("the child died before it was healthy; giving up");
            return Ok(code.max(1));
        }
        // The upgrade signal waits for a healthy child; the others go to it, as ever.
        for signal in signals.pending() {
            if signal != Signal::SIGHUP {
                common::signal(child, signal);
            }
        }
        std::thread::sleep(TICK);
    }
    write_pidfile(pidfile)?;
    if let Some(fd) = std::env::var(READY_ENV).ok().and_then(|v| v.parse().ok()) {
        // SAFETY: the old psflip placed the pipe's write end on this fd for us alone.
        let mut ready = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let _ = ready.write_all(b"r");
        say("told the old psflip that the upgrade is done");
    }

    let mut upgrade: Option<(nix::unistd::Pid, std::fs::File)> = None;
    loop {
        for signal in signals.pending() {
            match signal {
                Signal::SIGHUP if upgrade.is_some() => say("an upgrade is already running"),
                Signal::SIGHUP => {
                    let (read, write) = pipe()?;
                    let env = [(READY_ENV, "4".to_owned())];
                    let next = spawn_self("psflip", args, &listener, Some(&write), &env)?;
                    say(&format!("upgrading: started psflip {next}"));
                    nix::fcntl::fcntl(
                        &read,
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    )?;
                    upgrade = Some((next, std::fs::File::from(read)));
                }
                other => common::signal(child, other),
            }
        }
        for (pid, code) in reap() {
            if pid == child {
                return Ok(code);
            }
            if upgrade.as_ref().is_some_and(|(next, _)| *next == pid) {
                say("the new psflip exited before it was ready; keeping the old child");
                upgrade = None;
            }
        }
        if let Some((_, ready)) = &mut upgrade {
            let mut byte = [0u8; 1];
            if matches!(ready.read(&mut byte), Ok(1)) {
                common::signal(child, Signal::SIGTERM);
                wait_exit(child, SHUTDOWN_TIMEOUT);
                say("upgrade done; exiting");
                return Ok(0);
            }
        }
        std::thread::sleep(TICK);
    }
}
