//! Answering one generation's bind (and unlink) notifications.
//!
//! Every notification gets an answer, whatever happens: the listener's socket and 0, an
//! errno, or "continue" (the kernel runs the bind as the program asked). A process that
//! ends while we look at its call withdraws the notification; the ioctls then fail with
//! ENOENT and there is nothing left to answer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use tracing::{debug, info, warn};

use super::counts::InterceptCounts;
use super::matching::{BindAddr, SocketKind, find_listener, parse_sockaddr};
use crate::listen::Listener;

/// `struct sockaddr_storage`'s size: no address a bind takes is longer.
const SOCKADDR_MAX: usize = 128;

/// In `/proc/PID/fdinfo/FD`'s `flags:` (octal), set when the fd is close-on-exec.
const FDINFO_CLOEXEC: u32 = libc::O_CLOEXEC as u32;

/// Waits until `fd` is readable (or hung up); false when `stop` hung up first.
pub(super) fn wait_readable(fd: &OwnedFd, stop: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two pollfds that live on our stack.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

/// Answers the notifications on `notify` until every process of the generation is gone
/// (the listener reports a hang-up) or `stop` hangs up, and counts the answers in
/// `counts`.
pub(super) fn serve(
    generation: u64,
    pid: i32,
    notify: &OwnedFd,
    stop: &OwnedFd,
    targets: &[Listener],
    counts: &InterceptCounts,
) {
    while wait_readable(notify, stop) {
        let mut request = zeroed_request();
        // SAFETY: the RECV ioctl fills a `seccomp_notif`, which must be zeroed before.
        let rc = unsafe {
            libc::ioctl(
                notify.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut request as *mut libc::seccomp_notif,
            )
        };
        if rc < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // Withdrawn: the caller was killed between the wake-up and our read.
                Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                _ => break,
            }
        }
        let answer = decide(generation, notify, &request, targets);
        debug!(generation, pid = request.pid, ?answer, "bind");
        // Counted before the answer, so a status asked for once the call returned shows it.
        count(counts, libc::c_long::from(request.data.nr), answer);
        respond(notify, request.id, answer);
    }
    let info = counts.info();
    info!(
        generation,
        pid,
        handed = info.handed(),
        continued = info.binds_continued,
        failed = info.binds_failed,
        unlinks_skipped = info.unlinks_skipped(),
        "bind interception ended"
    );
}

/// Counts `answer` to a call `nr`. Unlinks that continued are not counted: a program
/// removes many files, and only those of a listener concern us; nor are listens, which
/// follow the binds that were counted.
fn count(counts: &InterceptCounts, nr: libc::c_long, answer: Answer) {
    match answer {
        Answer::Installed { listener, pid, fd } => counts.handed(listener, pid, fd),
        Answer::Skipped { listener } => counts.unlink_skipped(listener),
        Answer::Continue if nr == libc::SYS_bind => counts.continued(),
        Answer::Error(errno) if nr == libc::SYS_bind => counts.failed(errno),
        Answer::Continue | Answer::Error(_) | Answer::Listened | Answer::Gone => {}
    }
}

fn zeroed_request() -> libc::seccomp_notif {
    // SAFETY: a plain C struct of integers, valid when zeroed.
    unsafe { std::mem::zeroed() }
}

/// What a bind is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Listener `listener` (its index) is on fd `fd` of process `pid`: return 0.
    Installed { listener: usize, pid: i32, fd: i32 },
    /// An unlink of listener `listener`'s socket file: return 0, and the file stays.
    Skipped { listener: usize },
    /// A listen on a listener, done by us with a backlog at least the service's: return 0.
    Listened,
    /// Run the call as asked.
    Continue,
    /// Fail the bind with this errno.
    Error(i32),
    /// The caller is gone: nothing to answer.
    Gone,
}

fn decide(
    generation: u64,
    notify: &OwnedFd,
    request: &libc::seccomp_notif,
    targets: &[Listener],
) -> Answer {
    let nr = libc::c_long::from(request.data.nr);
    let args = &request.data.args;
    if nr == libc::SYS_bind {
        decide_bind(generation, notify, request, targets)
    } else if nr == libc::SYS_listen {
        decide_listen(notify, request, targets)
    } else if nr == libc::SYS_unlinkat && args[2] as i32 & libc::AT_REMOVEDIR == 0 {
        decide_unlink(
            generation,
            notify,
            request,
            targets,
            args[0] as i32,
            args[1],
        )
    } else if nr == super::SYS_UNLINK && nr != libc::SYS_unlinkat {
        decide_unlink(
            generation,
            notify,
            request,
            targets,
            libc::AT_FDCWD,
            args[0],
        )
    } else {
        Answer::Continue
    }
}

/// An `unlink` of a unix listener's path is skipped: it returns 0 and the listener's
/// socket file stays. A program removes a stale socket file before it binds the path, and
/// the bind then gets the listener.
fn decide_unlink(
    generation: u64,
    notify: &OwnedFd,
    request: &libc::seccomp_notif,
    targets: &[Listener],
    dirfd: i32,
    address: u64,
) -> Answer {
    let tid = request.pid as i32;
    let Some(path) = read_path(tid, address) else {
        return still_valid(notify, request.id, Answer::Continue);
    };
    let path = if path.is_absolute() {
        path
    } else {
        let base = if dirfd == libc::AT_FDCWD {
            format!("/proc/{tid}/cwd")
        } else {
            format!("/proc/{tid}/fd/{dirfd}")
        };
        match std::fs::read_link(base) {
            Ok(base) => base.join(path),
            Err(_) => return still_valid(notify, request.id, Answer::Continue),
        }
    };
    if !id_valid(notify, request.id) {
        return Answer::Gone;
    }
    match targets
        .iter()
        .position(|t| t.unix_path() == Some(path.as_path()))
    {
        Some(listener) => {
            info!(generation, pid = tid, path = %path.display(), "the program's unlink of the listener's socket file was skipped");
            Answer::Skipped { listener }
        }
        None => Answer::Continue,
    }
}

/// Reads a NUL-terminated path of at most PATH_MAX bytes at `address` in `tid`'s memory,
/// a page at most at a time (a read across into an unmapped page would fail whole).
fn read_path(tid: i32, address: u64) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    const PAGE: u64 = 4096;
    let mut bytes = Vec::new();
    let mut at = address;
    while bytes.len() < libc::PATH_MAX as usize {
        let len = (PAGE - at % PAGE) as usize;
        let chunk = crate::proc::read_memory(tid, at, len).ok()??;
        if let Some(end) = chunk.iter().position(|b| *b == 0) {
            bytes.extend_from_slice(&chunk[..end]);
            return Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
        }
        bytes.extend_from_slice(&chunk);
        at += len as u64;
    }
    None
}

fn decide_bind(
    generation: u64,
    notify: &OwnedFd,
    request: &libc::seccomp_notif,
    targets: &[Listener],
) -> Answer {
    let tid = request.pid as i32;
    let fd = request.data.args[0] as i32;
    let len = (request.data.args[2] as usize).min(SOCKADDR_MAX);
    let bytes = match crate::proc::read_memory(tid, request.data.args[1], len) {
        Ok(Some(bytes)) => bytes,
        // An address we cannot read: the kernel reports EFAULT itself.
        Ok(None) => return Answer::Continue,
        Err(_) => return still_valid(notify, request.id, Answer::Continue),
    };
    // The memory we read belongs to the caller only while it still waits in this bind:
    // check before we act on it.
    if !id_valid(notify, request.id) {
        return Answer::Gone;
    }
    let asked = parse_sockaddr(&bytes);
    if matches!(asked, BindAddr::Other) {
        return Answer::Continue;
    }
    let cwd = match asked {
        BindAddr::Unix(ref path) if path.is_relative() => {
            std::fs::read_link(format!("/proc/{tid}/cwd")).ok()
        }
        _ => None,
    };
    let addresses: Vec<_> = targets.iter().map(Listener::local_addr).collect();
    // A bind that no listener could match, whatever its socket's type, continues before
    // the socket is looked at (three /proc reads and a pidfd_getfd).
    let could_match = [SocketKind::Stream, SocketKind::Datagram]
        .into_iter()
        .any(|kind| find_listener(&addresses, &asked, kind, cwd.as_deref()).is_some());
    if !could_match {
        return Answer::Continue;
    }
    let Some(socket) = ProgramSocket::inspect(tid, fd) else {
        return Answer::Continue;
    };
    let Some(index) = find_listener(&addresses, &asked, socket.kind, cwd.as_deref()) else {
        return Answer::Continue;
    };
    let target = &targets[index];
    if let Err(e) = set_nonblocking(target.fd(), socket.nonblocking) {
        warn!(generation, error = %e, listener = %target.local_display(), "cannot match the program's O_NONBLOCK");
    }
    match add_fd(notify, request.id, target.fd(), fd, socket.cloexec) {
        Ok(()) => {
            info!(generation, pid = tid, fd, asked = %asked, listener = %target.local_display(), "the program's bind got the listener");
            Answer::Installed {
                listener: index,
                pid: socket.process,
                fd,
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Answer::Gone,
        Err(e) => {
            warn!(generation, pid = tid, fd, asked = %asked, error = %e, "cannot put the listener on the program's fd");
            Answer::Error(e.raw_os_error().unwrap_or(libc::EADDRINUSE))
        }
    }
}

/// A `listen(fd, backlog)` on a socket that is one of the listeners (its bind got it) is
/// done by us on our copy with the larger of the program's backlog and the service's:
/// the backlog is the socket's, and a program's small one (Python's socketserver asks
/// for 5) would drop the connections that a restart's burst brings. Any other listen
/// runs as asked.
fn decide_listen(notify: &OwnedFd, request: &libc::seccomp_notif, targets: &[Listener]) -> Answer {
    let tid = request.pid as i32;
    let fd = request.data.args[0] as i32;
    // An int: the register's upper half is not the program's.
    let backlog = request.data.args[1] as i32;
    let link = std::fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok();
    let inode = link
        .as_deref()
        .and_then(|l| l.to_str())
        .and_then(|l| l.strip_prefix("socket:["))
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok());
    let Some(target) = inode.and_then(|i| targets.iter().find(|t| t.inode() == i && !t.is_udp()))
    else {
        return still_valid(notify, request.id, Answer::Continue);
    };
    if !id_valid(notify, request.id) {
        return Answer::Gone;
    }
    let ours = crate::listen::backlog_for(target.spec());
    // SAFETY: listen(2) on a socket we hold.
    if unsafe { libc::listen(target.fd().as_raw_fd(), backlog.max(ours)) } != 0 {
        let e = io::Error::last_os_error();
        return Answer::Error(e.raw_os_error().unwrap_or(libc::EINVAL));
    }
    debug!(pid = tid, fd, backlog, kept = backlog.max(ours), listener = %target.local_display(), "the program's listen on the listener");
    Answer::Listened
}

/// `answer` while the notification is still pending, else [`Answer::Gone`].
fn still_valid(notify: &OwnedFd, id: u64, answer: Answer) -> Answer {
    if id_valid(notify, id) {
        answer
    } else {
        Answer::Gone
    }
}

fn id_valid(notify: &OwnedFd, id: u64) -> bool {
    // SAFETY: the ID_VALID ioctl reads one u64.
    unsafe {
        libc::ioctl(
            notify.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// What we need to know of the socket the program binds.
struct ProgramSocket {
    /// The process (thread group) whose fd it is.
    process: i32,
    kind: SocketKind,
    nonblocking: bool,
    cloexec: bool,
}

impl ProgramSocket {
    /// `None` when fd `fd` of thread `tid` is gone, not a socket, or out of our reach
    /// (then the bind just continues).
    fn inspect(tid: i32, fd: i32) -> Option<ProgramSocket> {
        // The fd table is the process's: pidfd_getfd wants the thread group's leader.
        let tgid = thread_group(tid)?;
        let dup = crate::proc::duplicate_fd(tgid, fd)?;
        let kind = match socket_type(dup.as_fd())? {
            libc::SOCK_STREAM => SocketKind::Stream,
            libc::SOCK_DGRAM => SocketKind::Datagram,
            _ => return None,
        };
        // The status flags are the open file's, which the duplicate shares; close-on-exec
        // is the fd's own, which only fdinfo shows.
        let flags = fdinfo_flags(tid, fd)?;
        Some(ProgramSocket {
            process: tgid,
            kind,
            nonblocking: flags & libc::O_NONBLOCK as u32 != 0,
            cloexec: flags & FDINFO_CLOEXEC != 0,
        })
    }
}

fn thread_group(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn socket_type(fd: BorrowedFd<'_>) -> Option<i32> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_TYPE) writes one int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(kind)
}

/// The `flags:` of `/proc/TID/fdinfo/FD`, in octal there.
fn fdinfo_flags(tid: i32, fd: i32) -> Option<u32> {
    let text = std::fs::read_to_string(PathBuf::from(format!("/proc/{tid}/fdinfo/{fd}"))).ok()?;
    parse_fdinfo_flags(&text)
}

fn parse_fdinfo_flags(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// Sets or clears O_NONBLOCK on the listener's open file. Under the steered handoff that
/// file is the generation's own; a shared listener's is every generation's.
fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let wanted = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    if wanted != flags {
        fcntl(fd, FcntlArg::F_SETFL(wanted))?;
    }
    Ok(())
}

/// Puts `source` on fd `target` of the caller, replacing what is there, as dup2 would.
/// Not with `SECCOMP_ADDFD_FLAG_SEND`: that would make the bind return the fd number, and
/// a program (libuv) takes any non-zero return of bind as a failure.
fn add_fd(
    notify: &OwnedFd,
    id: u64,
    source: BorrowedFd<'_>,
    target: i32,
    cloexec: bool,
) -> io::Result<()> {
    let add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: source.as_raw_fd() as u32,
        newfd: target as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the ADDFD ioctl reads one `seccomp_notif_addfd`.
    let rc = unsafe {
        libc::ioctl(
            notify.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &add as *const libc::seccomp_notif_addfd,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn respond(notify: &OwnedFd, id: u64, answer: Answer) {
    let (error, flags) = match answer {
        Answer::Gone => return,
        Answer::Installed { .. } | Answer::Skipped { .. } | Answer::Listened => (0, 0),
        Answer::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Answer::Error(errno) => (-errno, 0),
    };
    let response = libc::seccomp_notif_resp {
        id,
        val: 0,
        error,
        flags,
    };
    // SAFETY: the SEND ioctl reads one `seccomp_notif_resp`. ENOENT (the caller is gone
    // since) leaves nothing to do.
    unsafe {
        libc::ioctl(
            notify.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &response as *const libc::seccomp_notif_resp,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_flags_are_octal_and_show_close_on_exec_and_nonblock() {
        let text = "pos:\t0\nflags:\t02004002\nmnt_id:\t9\nino:\t1234\n";
        let flags = parse_fdinfo_flags(text).unwrap();
        assert_ne!(flags & FDINFO_CLOEXEC, 0);
        assert_ne!(flags & libc::O_NONBLOCK as u32, 0);
        let blocking = parse_fdinfo_flags("pos:\t0\nflags:\t02\n").unwrap();
        assert_eq!(blocking & (FDINFO_CLOEXEC | libc::O_NONBLOCK as u32), 0);
        assert_eq!(parse_fdinfo_flags("pos:\t0\n"), None);
    }
}
