//! A thin, typed view of `/proc` for the processes we supervise.
//!
//! Everything here is read fresh on each call: the processes we look at are
//! being started and stopped while we look, so every function expects a pid
//! or a thread to vanish between two reads and says so with
//! [`ProcError::Gone`] (or by leaving it out of a list) instead of failing.
//!
//! The `procfs` crate does the parsing where its types fit (process status);
//! the files the readiness check reads every few milliseconds (`fd/`,
//! `fdinfo/`, `task/*/syscall`, `net/tcp`) are read directly, one syscall per
//! file, with small parsers that are tested on captured text. No `procfs`
//! type appears in this module's API, so the crate can be swapped without
//! touching callers.

mod epoll;
mod fd;
mod memory;
mod net;
mod syscall;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use epoll::{EpollTarget, epoll_targets, parse_epoll_fdinfo};
pub use fd::{FdTarget, fds, parse_fd_link, pipe_read_end, socket_fds};
pub use memory::read_memory;
pub use net::{TcpSocket, TcpState, net_counter, parse_tcp_table, tcp_sockets, udp_sockets};
pub use syscall::{Arch, TaskSyscall, WaitCall, parse_syscall, task_syscall};

/// Why something could not be read from `/proc`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// The process (or the thread of it we were reading) no longer exists.
    #[error("process {pid} is gone")]
    Gone { pid: i32 },

    /// Reading failed for another reason, most often a permission the
    /// caller lacks (another user's process, or one that made itself
    /// non-dumpable).
    #[error("cannot read {about} of process {pid}")]
    Io {
        pid: i32,
        about: &'static str,
        #[source]
        source: io::Error,
    },

    /// A file did not have the shape the kernel documents.
    #[error("unexpected content in {}, line {line}: {what}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

impl ProcError {
    /// Classifies an I/O error: a missing file or `ESRCH` means the process
    /// (or thread) went away, anything else is a real failure.
    pub fn from_io(pid: i32, about: &'static str, source: io::Error) -> Self {
        if is_gone(&source) {
            ProcError::Gone { pid }
        } else {
            ProcError::Io { pid, about, source }
        }
    }

    pub(crate) fn parse(path: &Path, line: usize, what: impl Into<String>) -> Self {
        ProcError::Parse {
            path: path.to_path_buf(),
            line,
            what: what.into(),
        }
    }

    /// Converts an error of the `procfs` crate at this module's boundary.
    fn from_procfs(pid: i32, about: &'static str, err: procfs::ProcError) -> Self {
        match err {
            procfs::ProcError::NotFound(_) => ProcError::Gone { pid },
            procfs::ProcError::PermissionDenied(_) => ProcError::Io {
                pid,
                about,
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            },
            procfs::ProcError::Io(source, _) => ProcError::from_io(pid, about, source),
            procfs::ProcError::Incomplete(path) => ProcError::Parse {
                path: path.unwrap_or_else(|| pid_path(pid, "")),
                line: 1,
                what: "incomplete content".to_owned(),
            },
            other => ProcError::Parse {
                path: pid_path(pid, ""),
                line: 1,
                what: other.to_string(),
            },
        }
    }
}

/// Whether an I/O error means "that process or thread does not exist
/// (anymore)". Reads of a task that exits mid-read fail with `ESRCH`.
pub(crate) fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// `/proc/<pid>/<rest>`.
pub(crate) fn pid_path(pid: i32, rest: &str) -> PathBuf {
    if rest.is_empty() {
        PathBuf::from(format!("/proc/{pid}"))
    } else {
        PathBuf::from(format!("/proc/{pid}/{rest}"))
    }
}

fn stat(pid: i32, about: &'static str) -> Result<procfs::process::Stat, ProcError> {
    procfs::process::Process::new(pid)
        .and_then(|process| process.stat())
        .map_err(|err| ProcError::from_procfs(pid, about, err))
}

/// The one-letter scheduler state of a process (`R`, `S`, `D`, `Z`, …).
/// `Z` is a zombie: it has exited and waits for its parent to reap it.
pub fn state(pid: i32) -> Result<char, ProcError> {
    Ok(stat(pid, "state")?.state)
}

/// When the process started, in clock ticks since boot. A pid and this
/// value together name one process even if the pid is reused later.
pub fn start_time_ticks(pid: i32) -> Result<u64, ProcError> {
    Ok(stat(pid, "start time")?.starttime)
}

/// The parent's pid.
pub fn parent(pid: i32) -> Result<i32, ProcError> {
    Ok(stat(pid, "parent")?.ppid)
}

/// Whether process `pid` is in this process's pid namespace; `None` when that cannot be
/// read (the process is gone, or its namespace is hidden from us).
pub fn shares_pid_namespace(pid: i32) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let inode = |path: std::path::PathBuf| std::fs::metadata(path).ok().map(|m| m.ino());
    match (
        inode(pid_path(pid, "ns/pid")),
        inode(std::path::PathBuf::from("/proc/self/ns/pid")),
    ) {
        (Some(theirs), Some(ours)) => Some(theirs == ours),
        _ => None,
    }
}

/// Whether the process exists and has not exited: a zombie is not alive.
pub fn is_alive(pid: i32) -> bool {
    matches!(state(pid), Ok(state) if state != 'Z' && state != 'X')
}

/// A duplicate of fd `fd` of process `pid` (`pidfd_getfd`, Linux 5.6+; the caller needs
/// ptrace access to `pid`, as for its syscall file). `None` when the process or fd is gone,
/// or the kernel refuses. The duplicate shares the open file: closing it changes nothing
/// for `pid`.
pub fn duplicate_fd(pid: i32, fd: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let pidfd = pidfd(pid)?;
    // SAFETY: pidfd_getfd takes our pidfd, the target's fd number and flags; it returns a
    // new close-on-exec fd or -1.
    let dup = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        )
    };
    if dup < 0 {
        return None;
    }
    // SAFETY: as above, a fresh fd that only we own.
    Some(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// A pidfd for `pid` (`pidfd_open`, Linux 5.3+), close-on-exec; `None` when the process
/// is gone or the kernel refuses.
pub fn pidfd(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits up to `limit` for the process behind `pidfd` to exit (the pidfd becomes readable);
/// true when it did.
pub fn wait_gone(pidfd: &std::os::fd::OwnedFd, limit: std::time::Duration) -> bool {
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// How many file descriptors the process has open.
pub fn fd_count(pid: i32) -> Result<usize, ProcError> {
    procfs::process::Process::new(pid)
        .and_then(|process| process.fd_count())
        .map_err(|err| ProcError::from_procfs(pid, "open files", err))
}

/// The thread ids of a process; the main thread's id is the pid.
pub fn tasks(pid: i32) -> Result<Vec<i32>, ProcError> {
    let entries = std::fs::read_dir(pid_path(pid, "task"))
        .map_err(|err| ProcError::from_io(pid, "threads", err))?;
    let mut tids: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Whether this kernel has `/proc/PID/task/TID/children`
/// (`CONFIG_PROC_CHILDREN`). Without it we find children by scanning the
/// parent pid of every process, which costs a read per process on the box.
fn children_files_exist() -> bool {
    static EXIST: OnceLock<bool> = OnceLock::new();
    *EXIST.get_or_init(|| Path::new("/proc/thread-self/children").exists())
}

/// The direct children of a process (of all its threads). Empty when the
/// process is gone.
pub fn children(pid: i32) -> Vec<i32> {
    if !children_files_exist() {
        return parent_map().remove(&pid).unwrap_or_default();
    }
    let mut kids = Vec::new();
    for tid in tasks(pid).unwrap_or_default() {
        // A thread that exits between listing and reading simply has no
        // children to report.
        let Ok(text) = std::fs::read_to_string(pid_path(pid, &format!("task/{tid}/children")))
        else {
            continue;
        };
        kids.extend(
            text.split_whitespace()
                .filter_map(|kid| kid.parse::<i32>().ok()),
        );
    }
    kids.sort_unstable();
    kids.dedup();
    kids
}

/// Every process's children, from one scan of `/proc/*/stat`.
fn parent_map() -> HashMap<i32, Vec<i32>> {
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(processes) = procfs::process::all_processes() else {
        return map;
    };
    for process in processes.flatten() {
        // Processes that exit during the scan are skipped.
        if let Ok(stat) = process.stat() {
            map.entry(stat.ppid).or_default().push(stat.pid);
        }
    }
    map
}

/// `root` followed by every process descended from it, parents before
/// children. Empty when `root` does not exist. Processes that exit while
/// the tree is walked are left out.
pub fn descendants(root: i32) -> Vec<i32> {
    if !pid_path(root, "").exists() {
        return Vec::new();
    }
    let mut scanned = if children_files_exist() {
        None
    } else {
        Some(parent_map())
    };
    let mut seen = HashSet::from([root]);
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        next += 1;
        let kids = match scanned.as_mut() {
            Some(map) => map.remove(&pid).unwrap_or_default(),
            None => children(pid),
        };
        // `seen` guards against a reused pid making the walk loop.
        tree.extend(kids.into_iter().filter(|kid| seen.insert(*kid)));
    }
    tree
}
