//! Which system call a thread is blocked in, from `/proc/PID/task/TID/syscall`.
//!
//! The kernel writes one of three shapes (fs/proc/base.c, `proc_pid_syscall`):
//!
//! ```text
//! running                                   the thread is on a CPU
//! -1 0x7ffd4c8d7a10 0x7f3c1e2b4a5d          blocked, but not in a syscall
//! 288 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffd… 0x7f…   number (decimal), six
//!                                           arguments, stack and program
//!                                           counter (hex)
//! ```
//!
//! Syscall numbers differ per architecture, so [`WaitCall::from_number`]
//! takes the [`Arch`] explicitly and the tables of both architectures we
//! know are tested on any host.

use std::path::Path;

use super::{ProcError, pid_path};

/// What a thread was doing when its syscall file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskSyscall {
    /// Running on a CPU: not blocked in anything.
    Running,
    /// Stopped or sleeping outside any syscall (the kernel's `-1` line).
    NotInSyscall,
    /// Blocked in syscall `number` with these six raw arguments.
    In { number: u64, args: [u64; 6] },
}

impl TaskSyscall {
    /// The waiting call and its arguments, if the thread is blocked in one
    /// of the calls a server waits for connections in, on this machine's
    /// architecture.
    pub fn wait_call(&self) -> Option<(WaitCall, [u64; 6])> {
        match *self {
            TaskSyscall::In { number, args } => {
                Some((WaitCall::from_number(Arch::NATIVE?, number)?, args))
            }
            _ => None,
        }
    }
}

/// A CPU architecture whose syscall numbers we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this program was built for, if its table is known.
    #[cfg(target_arch = "x86_64")]
    pub const NATIVE: Option<Arch> = Some(Arch::X86_64);
    #[cfg(target_arch = "aarch64")]
    pub const NATIVE: Option<Arch> = Some(Arch::Aarch64);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub const NATIVE: Option<Arch> = None;
}

/// The syscalls a server blocks in while it waits for a connection (or, on a UDP
/// socket, for a datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitCall {
    /// `accept(fd, …)`
    Accept,
    /// `accept4(fd, …)`
    Accept4,
    /// `poll(fds, nfds, timeout)` (x86_64 only; aarch64 has only ppoll)
    Poll,
    /// `ppoll(fds, nfds, timeout, sigmask, size)`
    Ppoll,
    /// `select(n, readfds, writefds, exceptfds, timeout)` (x86_64 only)
    Select,
    /// `pselect6(n, readfds, writefds, exceptfds, timeout, sigmask)`
    Pselect6,
    /// `epoll_wait` (x86_64 only)
    EpollWait,
    /// `epoll_pwait`
    EpollPwait,
    /// `epoll_pwait2`
    EpollPwait2,
    /// `read(fd, …)`: a datagram read as a plain read
    Read,
    /// `recvfrom(fd, …)`
    Recvfrom,
    /// `recvmsg(fd, …)`
    Recvmsg,
    /// `recvmmsg(fd, …)`
    Recvmmsg,
}

impl WaitCall {
    /// Looks a syscall number up in the table of `arch`.
    pub fn from_number(arch: Arch, number: u64) -> Option<WaitCall> {
        // From arch/x86/entry/syscalls/syscall_64.tbl and
        // include/uapi/asm-generic/unistd.h (which aarch64 uses).
        let call = match (arch, number) {
            (Arch::X86_64, 0) => WaitCall::Read,
            (Arch::X86_64, 7) => WaitCall::Poll,
            (Arch::X86_64, 23) => WaitCall::Select,
            (Arch::X86_64, 43) => WaitCall::Accept,
            (Arch::X86_64, 45) => WaitCall::Recvfrom,
            (Arch::X86_64, 47) => WaitCall::Recvmsg,
            (Arch::X86_64, 232) => WaitCall::EpollWait,
            (Arch::X86_64, 270) => WaitCall::Pselect6,
            (Arch::X86_64, 271) => WaitCall::Ppoll,
            (Arch::X86_64, 281) => WaitCall::EpollPwait,
            (Arch::X86_64, 288) => WaitCall::Accept4,
            (Arch::X86_64, 299) => WaitCall::Recvmmsg,
            (Arch::Aarch64, 22) => WaitCall::EpollPwait,
            (Arch::Aarch64, 63) => WaitCall::Read,
            (Arch::Aarch64, 72) => WaitCall::Pselect6,
            (Arch::Aarch64, 73) => WaitCall::Ppoll,
            (Arch::Aarch64, 202) => WaitCall::Accept,
            (Arch::Aarch64, 207) => WaitCall::Recvfrom,
            (Arch::Aarch64, 212) => WaitCall::Recvmsg,
            (Arch::Aarch64, 242) => WaitCall::Accept4,
            (Arch::Aarch64, 243) => WaitCall::Recvmmsg,
            (_, 441) => WaitCall::EpollPwait2,
            _ => return None,
        };
        Some(call)
    }

    /// The syscall's name, as in its man page.
    pub fn name(self) -> &'static str {
        match self {
            WaitCall::Accept => "accept",
            WaitCall::Accept4 => "accept4",
            WaitCall::Poll => "poll",
            WaitCall::Ppoll => "ppoll",
            WaitCall::Select => "select",
            WaitCall::Pselect6 => "pselect6",
            WaitCall::EpollWait => "epoll_wait",
            WaitCall::EpollPwait => "epoll_pwait",
            WaitCall::EpollPwait2 => "epoll_pwait2",
            WaitCall::Read => "read",
            WaitCall::Recvfrom => "recvfrom",
            WaitCall::Recvmsg => "recvmsg",
            WaitCall::Recvmmsg => "recvmmsg",
        }
    }
}

/// Parses the text of a `syscall` file. `path` only names the file in
/// errors.
pub fn parse_syscall(text: &str, path: &Path) -> Result<TaskSyscall, ProcError> {
    let bad = |what: &str| ProcError::parse(path, 1, what);
    let mut words = text.split_whitespace();
    let first = words.next().ok_or_else(|| bad("empty"))?;
    if first == "running" {
        return Ok(TaskSyscall::Running);
    }
    let number: i64 = first
        .parse()
        .map_err(|_| bad("syscall number is not a number"))?;
    let Ok(number) = u64::try_from(number) else {
        return Ok(TaskSyscall::NotInSyscall);
    };
    let mut args = [0u64; 6];
    for arg in &mut args {
        let word = words
            .next()
            .ok_or_else(|| bad("fewer than six arguments"))?;
        let hex = word
            .strip_prefix("0x")
            .ok_or_else(|| bad("argument without 0x"))?;
        *arg = u64::from_str_radix(hex, 16).map_err(|_| bad("argument is not hexadecimal"))?;
    }
    Ok(TaskSyscall::In { number, args })
}

/// Reads what thread `tid` of process `pid` is blocked in. Needs the same
/// permission as ptrace-attaching to `pid`.
pub fn task_syscall(pid: i32, tid: i32) -> Result<TaskSyscall, ProcError> {
    let path = pid_path(pid, &format!("task/{tid}/syscall"));
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ProcError::from_io(pid, "blocked syscall", err))?;
    parse_syscall(&text, &path)
}
