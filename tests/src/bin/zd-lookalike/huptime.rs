//! A program run by huptime (amscanne/huptime) in its default fork mode, as its README
//! describes it:
//!
//! - huptime preloads itself into an unmodified program, so the process is the program
//!   itself; the program writes its own pidfile at start.
//! - On HUP the process unlinks the pidfile (`huptime --unlink=PIDFILE`), stops accepting
//!   (its listener is swapped for a dummy), and forks a child that execs a fresh copy of
//!   the program, which inherits the still-open listener. The old process exits once its
//!   open connections are done. There is no health check: a copy that dies leaves no
//!   process accepting (only `--revive`, not modelled, would start it again).
//!
//! The "program" here is this process plus a zd-fixture child that serves on the listener
//! (fd 3, `EINHORN_FD_COUNT=1`): stopping to accept and finishing the open connections is
//! the child's drain on TERM, and the program exits when its child does.

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::common::{
    self, Args, Signals, TICK, reap, say, spawn_self, spawn_worker, wait_exit, write_pidfile,
};

/// How long the old copy's connections may take to finish.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

pub fn run(args: &Args) -> Result<i32> {
    let signals = Signals::new()?;
    let listener = common::listener(args)?;
    let pidfile = args.pidfile.as_deref().context("--pidfile is required")?;
    let server = spawn_worker(args, &listener, &[])?;
    write_pidfile(pidfile)?;
    loop {
        for signal in signals.pending() {
            match signal {
                Signal::SIGHUP => {
                    let _ = std::fs::remove_file(pidfile);
                    let next = spawn_self("huptime", args, &listener, None, &[])?;
                    say(&format!("restarting: forked the new copy {next}"));
                    drop(listener);
                    common::signal(server, Signal::SIGTERM);
                    wait_exit(server, DRAIN);
                    say("the old copy's connections are done; exiting");
                    return Ok(0);
                }
                other => common::signal(server, other),
            }
        }
        if let Some((_, code)) = reap().into_iter().find(|(pid, _)| *pid == server) {
            return Ok(code);
        }
        std::thread::sleep(TICK);
    }
}
