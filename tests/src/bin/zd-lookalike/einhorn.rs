//! The einhorn worker shim: the real einhorn stops a worker with USR2, zd-fixture drains on
//! TERM, so the drivers' tests run each einhorn worker as `zd-lookalike einhorn-worker --
//! WORKER…`, which translates.

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::common::{self, Signals, TICK, reap};

/// The worker shim: runs the worker, turns einhorn's USR2 into the TERM zd-fixture drains
/// on, passes INT, TERM and QUIT on, and exits with the worker's code.
pub fn worker(args: &[std::ffi::OsString]) -> Result<i32> {
    let signals = Signals::new()?;
    let (program, rest) = args
        .split_first()
        .context("einhorn-worker needs a command")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    common::clean_signal_mask(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    let child = Pid::from_raw(i32::try_from(child.id())?);
    loop {
        for signal in signals.pending() {
            match signal {
                Signal::SIGUSR2 => common::signal(child, Signal::SIGTERM),
                Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT => {
                    common::signal(child, signal);
                }
                _ => {}
            }
        }
        if let Some((_, code)) = reap().into_iter().find(|(pid, _)| *pid == child) {
            return Ok(code);
        }
        std::thread::sleep(TICK);
    }
}
