//! The processes a driver signals: read from a pidfile, proven to be the expected program,
//! and held by a pidfd so that a recycled pid never receives a signal meant for them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::DriverError;
use crate::pidfile::{self, PidfileError};
use crate::proc;
use crate::signal::Signal;

/// A live process the driver may signal.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) pid: i32,
    start_ticks: u64,
    pidfd: OwnedFd,
}

impl Target {
    /// Takes hold of `pid`: opens a pidfd, then checks that the process is alive and is
    /// the same one (start time) whose command line was checked.
    pub(super) fn open(pid: i32) -> Option<Target> {
        let start_ticks = proc::start_time_ticks(pid).ok()?;
        let pidfd = proc::pidfd(pid)?;
        // The pidfd was opened after the start time was read: if the pid had been reused
        // in between, the start time would now differ.
        (proc::is_alive(pid) && proc::start_time_ticks(pid).ok() == Some(start_ticks)).then_some(
            Target {
                pid,
                start_ticks,
                pidfd,
            },
        )
    }

    /// Whether the process we hold is still running (a zombie is not).
    pub(super) fn is_alive(&self) -> bool {
        proc::is_alive(self.pid) && proc::start_time_ticks(self.pid).ok() == Some(self.start_ticks)
    }

    /// Sends `signal` through the pidfd.
    pub(super) fn signal(&self, signal: Signal) -> Result<(), DriverError> {
        // SAFETY: pidfd_send_signal takes our pidfd, a signal number, no siginfo and no
        // flags; the pidfd names exactly the process we checked, never a recycled pid.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal.as_raw(),
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(DriverError::io(
                format!("send {signal} to pid {}", self.pid),
                std::io::Error::last_os_error(),
            ));
        }
        tracing::debug!(pid = self.pid, %signal, "signalled");
        Ok(())
    }
}

/// The process's command line, arguments joined by spaces (empty when unreadable).
pub(super) fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .split('\0')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Whether `pid`'s command line, its executable or a shared library it loaded names
/// `expect`. The library counts for wrappers that preload themselves into an unmodified
/// program, as huptime does (`LD_PRELOAD=.../huptime.so`): the process's command line is
/// the program's own.
pub(super) fn is_program(pid: i32, expect: &str) -> bool {
    if cmdline(pid).contains(expect) {
        return true;
    }
    if std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.to_string_lossy().contains(expect))
    {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|maps| maps_name_library(&maps, expect))
}

/// Whether a `/proc/PID/maps` text maps a shared library whose file name contains
/// `expect`.
pub(super) fn maps_name_library(maps: &str, expect: &str) -> bool {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter_map(|path| path.rsplit('/').next())
        .any(|file| (file.ends_with(".so") || file.contains(".so.")) && file.contains(expect))
}

/// Reads the pidfile without judging the process.
pub(super) fn read_pid(path: &Path) -> Result<i32, DriverError> {
    match pidfile::read(path) {
        Ok(pid) => Ok(pid),
        Err(PidfileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(DriverError::NotRunning {
                path: path.to_owned(),
                reason: format!(
                    "pidfile '{}' does not exist: the service is not running, or `pidfile:` \
                     names the wrong file",
                    path.display()
                ),
            })
        }
        Err(PidfileError::Stale { pid, .. }) => Err(DriverError::NotRunning {
            path: path.to_owned(),
            reason: format!(
                "pidfile '{}' is stale: pid {pid} is not running; start the service",
                path.display()
            ),
        }),
        Err(PidfileError::Invalid { found, .. }) => Err(DriverError::BadPidfile {
            path: path.to_owned(),
            found,
        }),
        Err(other) => Err(DriverError::io(
            format!("read pidfile '{}'", path.display()),
            std::io::Error::other(other.to_string()),
        )),
    }
}

/// Reads the pidfile and takes hold of its process after proving it is `expect`.
pub(super) fn target_from_pidfile(
    path: &Path,
    expect: Option<&str>,
) -> Result<Target, DriverError> {
    let pid = read_pid(path)?;
    let stale = || DriverError::NotRunning {
        path: path.to_owned(),
        reason: format!(
            "pidfile '{}' is stale: pid {pid} is not running; start the service",
            path.display()
        ),
    };
    let target = Target::open(pid).ok_or_else(stale)?;
    if let Some(expect) = expect {
        if !is_program(pid, expect) {
            return Err(DriverError::Unexpected {
                path: path.to_owned(),
                pid,
                expected: format!("'{expect}'"),
                found: format!("'{}'", cmdline(pid)),
            });
        }
    }
    Ok(target)
}

/// Live children of `pid`, oldest first by pid order as /proc lists them.
pub(super) fn live_children(pid: i32) -> Vec<i32> {
    proc::children(pid)
        .into_iter()
        .filter(|kid| proc::is_alive(*kid))
        .collect()
}

/// Whether a process has reaped a child since the driver began to watch it, so that a
/// child that was born and died between two looks at /proc is not missed.
///
/// The evidence is the kernel's accounting: a process's `cminflt` (`/proc/PID/stat`, the
/// minor page faults of its waited-for children, see proc(5)) grows by the faults of each
/// child it reaps, and any process that ran has faulted in some pages (its stack, the
/// pages copy-on-write shares with its parent, the program it executed). It grows at the
/// reaping only, not while a child lives or lies a zombie, and does not depend on how
/// often the driver looks.
#[derive(Debug)]
pub(super) struct Reaped {
    pid: i32,
    before: Option<u64>,
}

impl Reaped {
    pub(super) fn watch(pid: i32) -> Reaped {
        Reaped {
            pid,
            before: children_faults(pid),
        }
    }

    /// Whether the process reaped a child since [`Reaped::watch`]: false when that cannot
    /// be read.
    pub(super) fn any(&self) -> bool {
        matches!(
            (self.before, children_faults(self.pid)),
            (Some(before), Some(now)) if now > before
        )
    }
}

fn children_faults(pid: i32) -> Option<u64> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .ok()
        .map(|stat| stat.cminflt)
}

/// Children of `pid` that have exited and wait to be reaped (zombies): evidence of a
/// child that died, seen even when it died before the driver first looked.
pub(super) fn dead_children(pid: i32) -> Vec<i32> {
    proc::children(pid)
        .into_iter()
        .filter(|kid| !proc::is_alive(*kid))
        .collect()
}

/// A listening socket a process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeldListener {
    pub(super) fd: i32,
    pub(super) inode: u64,
    /// `127.0.0.1:8080`, `[::1]:8080`, a unix socket's path or `@name` for an abstract one,
    /// as the inspector writes them.
    pub(super) address: String,
}

/// The listening sockets (TCP or unix) `pid` holds: each socket fd is duplicated
/// (pidfd_getfd) and asked whether it accepts connections and where it is bound, which is
/// cheaper than reading the namespace's whole socket tables. Empty when they cannot be
/// read (another user's process).
pub(super) fn listening_sockets(pid: i32) -> Vec<HeldListener> {
    use nix::sys::socket::{SockaddrStorage, getsockname, getsockopt, sockopt::AcceptConn};
    use std::os::fd::AsRawFd;
    let Ok(held) = proc::socket_fds(pid) else {
        return Vec::new();
    };
    let mut out: Vec<HeldListener> = held
        .into_iter()
        .filter_map(|(fd, inode)| {
            let dup = proc::duplicate_fd(pid, fd)?;
            if getsockopt(&dup, AcceptConn) != Ok(true) {
                return None;
            }
            let addr: SockaddrStorage = getsockname(dup.as_raw_fd()).ok()?;
            Some(HeldListener {
                fd,
                inode,
                address: address_of(&addr)?,
            })
        })
        .collect();
    out.sort_by_key(|l| l.inode);
    out.dedup_by_key(|l| l.inode);
    out
}

fn address_of(addr: &nix::sys::socket::SockaddrStorage) -> Option<String> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddrV4::from(*v4).to_string());
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return Some(std::net::SocketAddrV6::from(*v6).to_string());
    }
    let unix = addr.as_unix_addr()?;
    if let Some(path) = unix.path() {
        return Some(path.display().to_string());
    }
    unix.as_abstract()
        .map(|name| format!("@{}", String::from_utf8_lossy(name)))
}
