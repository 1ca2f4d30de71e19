//! socketmaster (zimbatm/socketmaster), as its man page describes it:
//!
//! - socketmaster opens the listener once and starts the command with it on fd 3 and
//!   `EINHORN_FDS=3`; when every child is gone, socketmaster exits.
//! - On HUP it starts a new child, waits `-start` (here `--start`), and then, if more than
//!   one child is left, sends TERM to every child but the new one. A new child that died
//!   within `-start` leaves the old one alone (only one child is left); one that dies later
//!   has already cost the old one its TERM.
//! - INT, TERM and QUIT go to every child.
//!
//! socketmaster writes no pidfile; the service's init system knows its pid.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Result;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::common::{self, Args, Signals, TICK, reap, say, spawn_worker};

pub fn run(args: &Args) -> Result<i32> {
    let signals = Signals::new()?;
    let listener = common::listener(args)?;
    // `EINHORN_FDS=3` is socketmaster's; zd-fixture reads the count form of the same.
    let env = [("EINHORN_FDS", "3".to_owned())];
    let start = || spawn_worker(args, &listener, &env);
    let mut children: BTreeSet<Pid> = BTreeSet::from([start()?]);
    let forget = |children: &mut BTreeSet<Pid>| {
        for (pid, _) in reap() {
            children.remove(&pid);
        }
    };
    loop {
        for signal in signals.pending() {
            match signal {
                Signal::SIGHUP => {
                    let new = match start() {
                        Ok(pid) => pid,
                        Err(e) => {
                            say(&format!("could not start a new process: {e:#}"));
                            continue;
                        }
                    };
                    children.insert(new);
                    // socketmaster sleeps here; children that end meanwhile leave the set.
                    let until = Instant::now() + args.start;
                    while Instant::now() < until {
                        forget(&mut children);
                        std::thread::sleep(TICK);
                    }
                    if children.len() > 1 {
                        for old in children.iter().filter(|p| **p != new) {
                            common::signal(*old, Signal::SIGTERM);
                        }
                    } else {
                        say("not stopping the old process: no other process is left");
                    }
                }
                Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT => {
                    for pid in &children {
                        common::signal(*pid, signal);
                    }
                }
                other => say(&format!("ignoring {}", other.as_str())),
            }
        }
        forget(&mut children);
        if children.is_empty() {
            say("every child is gone; exiting");
            return Ok(0);
        }
        std::thread::sleep(TICK);
    }
}
