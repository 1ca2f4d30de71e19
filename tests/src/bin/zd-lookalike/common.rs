//! What the einhorn worker shim needs: a clean signal mask for its child, signals read from
//! a non-blocking signalfd, reaping, and its log lines.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid};

/// How often the lookalikes look at their signals, children and sockets.
pub const TICK: Duration = Duration::from_millis(10);

/// Gives the child an empty signal mask. The lookalikes block every signal to read them
/// from a signalfd, and a mask survives fork and exec: a worker that inherited it could
/// not be woken by the signals it relies on (zd-fixture interrupts its blocked accept
/// with a real-time signal when it drains).
pub fn clean_signal_mask(cmd: &mut Command) {
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe and touch only the
    // child's own mask and a set on its stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            if libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// All signals, blocked and read from a non-blocking signalfd.
pub struct Signals(SignalFd);

impl Signals {
    pub fn new() -> Result<Signals> {
        let all = SigSet::all();
        all.thread_block()?;
        Ok(Signals(SignalFd::with_flags(&all, SfdFlags::SFD_NONBLOCK)?))
    }

    /// The signals that arrived since the last call, SIGCHLD left out (see [`reap`]).
    pub fn pending(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.0.read_signal() {
            let signal = i32::try_from(info.ssi_signo)
                .ok()
                .and_then(|n| Signal::try_from(n).ok());
            if let Some(signal) = signal.filter(|s| *s != Signal::SIGCHLD) {
                say(&format!("got {}", signal.as_str()));
                out.push(signal);
            }
        }
        out
    }
}

/// Children that ended since the last call, with their exit code (128+n when killed).
pub fn reap() -> Vec<(Pid, i32)> {
    let mut out = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => out.push((pid, 128 + signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    for (pid, code) in &out {
        say(&format!("child {pid} exited with {code}"));
    }
    out
}

/// Sends `signal` to `pid`, which is our own child.
pub fn signal(pid: Pid, signal: Signal) {
    say(&format!("sending {} to {pid}", signal.as_str()));
    let _ = nix::sys::signal::kill(pid, signal);
}

/// One line on stderr, prefixed with our pid: the test keeps it in the peer's log.
pub fn say(line: &str) {
    eprintln!("zd-lookalike[{}]: {line}", getpid());
}
