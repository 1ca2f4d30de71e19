//! Starting the command in the state of a freshly started process.
//!
//! pidwatch blocks every signal to read them from its signalfd. A child inherits the signal
//! mask across fork and exec, and every signal set to "ignore" too; a service that inherited
//! pidwatch's mask never acts on the TERM that pidwatch forwards, so `svc -d`, `sv down` and
//! `kill` cannot stop it. Go and nginx reset their mask at startup, but coreutils, Python and
//! most programs do not. std's `Command` does not reset the mask (measured with Rust 1.95,
//! both through posix_spawn and through fork), and when it uses posix_spawn, glibc leaves its
//! two internal signals (32 and 33) ignored in the child. So the child resets its signal
//! state itself between fork and exec, which makes std use fork and exec.
//!
//! Descriptors need no such step: every descriptor pidwatch opens for itself is close-on-exec
//! (the signalfd, pidfds, the pid file's directory and the pid file), so the command inherits
//! only what pidwatch inherited, as a supervisor that passes sockets expects.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::Pid;

use crate::error::Error;
use crate::pidfd::PidFd;
use crate::watch::Config;

/// The kernel's own signal set, whose size rt_sigaction(2) insists on: 64 signals, but 128
/// on MIPS.
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const KERNEL_SIGNALS: libc::c_int = 64;
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const KERNEL_SIGNALS: libc::c_int = 128;
const KERNEL_SIGSET_BYTES: usize = KERNEL_SIGNALS as usize / 8;

/// Starts the command with stdin, stdout, stderr, the environment and the working directory
/// of pidwatch, an empty signal mask and every signal at its default action; returns a pidfd
/// for it.
pub fn spawn(config: &Config) -> Result<PidFd, Error> {
    let (program, args) = config.command.split_first().ok_or_else(|| Error::Spawn {
        command: String::new(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let spawn_error = |source| Error::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    };
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. `reset_signals` makes the rt_sigaction system call
    // and calls sigemptyset and sigprocmask, both async-signal-safe, on data on its stack; it
    // allocates nothing, and its errors are `io::Error`s made from an errno, which do not
    // allocate either.
    unsafe { command.pre_exec(reset_signals) };
    let child = command.spawn().map_err(spawn_error)?;
    let pid = Pid::from_raw(
        i32::try_from(child.id())
            .map_err(|_| spawn_error(io::Error::from(io::ErrorKind::InvalidData)))?,
    );
    // The child cannot be reaped before we call waitpid, so this pid is still the child's.
    PidFd::open(pid).map_err(spawn_error)
}

/// Gives the calling process the signal state of a process that nobody configured: every
/// signal at its default action, then nothing blocked. Dispositions come first, so that a
/// signal already pending (a TERM forwarded to the child before it could exec) is delivered
/// with its default action the moment the mask opens, and ends the child as it would end
/// the command.
///
/// The dispositions are set with the raw system call: glibc's `sigaction` refuses its two
/// internal signals, which posix_spawn leaves ignored in every process it starts, pidwatch
/// included. A handler would be reset by exec anyway; an ignored signal stays ignored.
fn reset_signals() -> io::Result<()> {
    // The kernel's `struct sigaction` for SIG_DFL, no flags, no restorer and an empty mask is
    // all zeros on every architecture, whatever the order of its fields; this buffer is larger
    // than any of them.
    let default_action = [0_u64; 8];
    for signo in 1..=KERNEL_SIGNALS {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction(2) reads a `struct sigaction` from the second argument, which
        // points to zeroed memory larger than that struct and alive for the call; the third
        // argument is null, so the kernel writes nothing back.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                default_action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                KERNEL_SIGSET_BYTES,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}
