//! Receiving signals synchronously and deciding which ones to forward.
//!
//! Every catchable signal is blocked before the command is spawned and read from a signalfd
//! in the poll loop, so a signal that arrives before the service has written its pid file is
//! queued by the kernel instead of lost. The command must not inherit that mask: `spawn`
//! resets it, and every signal's disposition, between fork and exec.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

/// One signal read from the signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signo: i32,
    /// The sending process, 0 for the kernel.
    pub sender: i32,
    pub code: i32,
    /// The descriptor of an I/O signal (dnotify), else 0.
    pub fd: i32,
}

/// The signalfd that receives every catchable signal.
#[derive(Debug)]
pub struct Receiver {
    fd: SignalFd,
}

impl Receiver {
    /// Blocks every signal in this (only) thread and opens a non-blocking, close-on-exec
    /// signalfd for them. SIGKILL and SIGSTOP cannot be blocked; the kernel ignores them.
    pub fn block_all() -> nix::Result<Self> {
        let all = SigSet::all();
        all.thread_block()?;
        let fd = SignalFd::with_flags(&all, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Self { fd })
    }

    /// The next pending signal, or `None` when the queue is empty.
    pub fn next(&self) -> nix::Result<Option<Received>> {
        Ok(self.fd.read_signal()?.map(|info| Received {
            signo: i32::try_from(info.ssi_signo).unwrap_or(0),
            sender: i32::try_from(info.ssi_pid).unwrap_or(0),
            code: info.ssi_code,
            fd: info.ssi_fd,
        }))
    }
}

impl AsFd for Receiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether `signal` tells pidwatch that a child changed state, rather than being meant for
/// the service.
pub fn is_child_event(signo: i32) -> bool {
    signo == libc::SIGCHLD
}

/// Whether the target already has this signal, so forwarding it would deliver it twice:
/// pidwatch never signals itself, so a signal from its own pid is one the kernel raised on
/// its behalf (SIGPIPE on a closed stderr); and a kernel signal such as the terminal's ^C
/// went to the whole foreground process group, which includes a target that shares it.
pub fn needs_no_forwarding(signal: &Received, me: Pid, target_in_our_group: bool) -> bool {
    signal.sender == me.as_raw() || (signal.code == libc::SI_KERNEL && target_in_our_group)
}

/// A signal's conventional name, for messages: `SIGHUP`, `SIGRTMIN+3`.
pub fn name(signo: i32) -> String {
    match Signal::try_from(signo) {
        Ok(signal) => signal.as_str().to_owned(),
        Err(_) if signo >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", signo - libc::SIGRTMIN()),
        Err(_) => format!("signal {signo}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(sender: i32, code: i32) -> Received {
        Received {
            signo: libc::SIGINT,
            sender,
            code,
            fd: 0,
        }
    }

    #[test]
    fn signals_from_other_processes_are_forwarded_even_to_our_group() {
        let me = Pid::from_raw(100);
        assert!(!needs_no_forwarding(&received(42, 0), me, true));
    }

    #[test]
    fn terminal_signals_are_not_repeated_to_a_process_in_our_group() {
        let me = Pid::from_raw(100);
        assert!(needs_no_forwarding(&received(0, libc::SI_KERNEL), me, true));
        assert!(!needs_no_forwarding(
            &received(0, libc::SI_KERNEL),
            me,
            false
        ));
    }

    #[test]
    fn signals_raised_on_our_own_behalf_stay_with_us() {
        let me = Pid::from_raw(100);
        assert!(needs_no_forwarding(&received(100, 0), me, false));
    }

    #[test]
    fn names_cover_standard_and_real_time_signals() {
        assert_eq!(name(libc::SIGHUP), "SIGHUP");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
    }
}
