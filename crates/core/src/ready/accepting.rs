//! The `accepting` readiness check: evidence from `/proc` that a new
//! generation is really waiting for connections on an inherited listener.
//!
//! Every generation inherits the listeners at exec, so merely holding one
//! proves nothing. What does prove something is one of the ways a server
//! waits (DESIGN §5), looked for in every process of the generation's tree
//! and every thread of each process:
//!
//! - a thread blocked in `accept`/`accept4` on a listener fd, or, on a UDP
//!   listener, in `recvfrom`/`recvmsg`/`recvmmsg`/`read`;
//! - a listener registered in an epoll set (nginx, Go, tokio, Node), seen
//!   in the epoll fd's `fdinfo`;
//! - a thread blocked in `poll`/`ppoll`/`select`/`pselect6` whose fd list
//!   (read from the thread's memory) contains a listener (Python's
//!   socketserver, gunicorn sync workers);
//! - an established connection owned by the tree whose local address is a
//!   listener's: the server already accepted one.
//!
//! Listeners are identified by socket inode, so a listener that was dup'ed
//! to another fd number, or that reached a worker through fork, counts the
//! same.
//!
//! The check is meant to be called every few milliseconds during a restart,
//! so it reads each process's fd table once, asks the tree's other sockets
//! for their addresses through `pidfd_getfd`, reads the tcp tables only when
//! that is refused, and returns at the first evidence.

mod accepted;
mod describe;
mod waits;

pub use describe::describe;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use crate::proc::{self, FdTarget, ProcError};

/// `EPOLLIN` as the kernel writes it in an fdinfo `events:` mask.
const EPOLLIN: u32 = libc::EPOLLIN as u32;

/// Why we believe a generation is accepting connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptingEvidence {
    /// Thread `tid` of `pid` is blocked in `accept`/`accept4` on listener
    /// fd `fd`.
    BlockedInAccept { pid: i32, tid: i32, fd: i32 },
    /// Listener fd `fd` is registered in the epoll instance `epoll_fd` of
    /// `pid`.
    EpollRegistered { pid: i32, epoll_fd: i32, fd: i32 },
    /// Thread `tid` of `pid` is blocked in `how` (`"poll"`, `"ppoll"`,
    /// `"select"` or `"pselect6"`) watching listener fd `fd` for input.
    Polling {
        pid: i32,
        tid: i32,
        fd: i32,
        how: &'static str,
    },
    /// Thread `tid` of `pid` is blocked in `how` (`"recvfrom"`, `"recvmsg"`,
    /// `"recvmmsg"` or `"read"`) on UDP listener fd `fd`.
    Receiving {
        pid: i32,
        tid: i32,
        fd: i32,
        how: &'static str,
    },
    /// `pid` owns a connection accepted on the listener at `local`.
    Accepted { pid: i32, local: SocketAddr },
}

impl fmt::Display for AcceptingEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let thread = |f: &mut fmt::Formatter<'_>, pid: i32, tid: i32| {
            if pid == tid {
                write!(f, "pid {pid}")
            } else {
                write!(f, "pid {pid} (thread {tid})")
            }
        };
        match *self {
            AcceptingEvidence::BlockedInAccept { pid, tid, fd } => {
                thread(f, pid, tid)?;
                write!(f, " is blocked in accept on fd {fd}")
            }
            AcceptingEvidence::EpollRegistered { pid, epoll_fd, fd } => {
                write!(f, "pid {pid} has fd {fd} registered in epoll fd {epoll_fd}")
            }
            AcceptingEvidence::Polling { pid, tid, fd, how } => {
                thread(f, pid, tid)?;
                write!(f, " is waiting in {how} on fd {fd}")
            }
            AcceptingEvidence::Receiving { pid, tid, fd, how } => {
                thread(f, pid, tid)?;
                write!(f, " is blocked in {how} on fd {fd}")
            }
            AcceptingEvidence::Accepted { pid, local } => {
                write!(f, "pid {pid} has accepted a connection on {local}")
            }
        }
    }
}

/// The inodes of `listeners` that `accepting` watches: the stream ones (TCP or unix),
/// or, when the service has only UDP listeners, those. With both, a wait on a stream
/// listener is the evidence: a process may read its UDP socket long before its server
/// is up.
pub fn watched_inodes(listeners: &[crate::listen::Listener]) -> Vec<u64> {
    let stream: Vec<u64> = listeners
        .iter()
        .filter(|l| !l.is_udp())
        .map(|l| l.inode())
        .collect();
    if stream.is_empty() {
        listeners.iter().map(|l| l.inode()).collect()
    } else {
        stream
    }
}

/// Looks for evidence that some process of the tree rooted at `root` (the
/// new generation's main pid) waits for connections on one of the sockets
/// named by `listener_inodes` (the inodes of the supervisor's listeners: its
/// stream ones, TCP or unix, or, in a service with UDP listeners only, those).
///
/// Returns `Ok(None)` when the tree was read and shows no evidence yet.
/// Processes and threads that exit during the scan are skipped; if `root`
/// itself is gone the answer is `Err(ProcError::Gone)`. When nothing was
/// found but part of the tree could not be read (typically a permission:
/// a worker that switched to another user, or made itself non-dumpable),
/// the first such error is returned so the caller can say why the check
/// cannot pass; it may keep polling.
pub fn find_accepting(
    root: i32,
    listener_inodes: &[u64],
) -> Result<Option<AcceptingEvidence>, ProcError> {
    if listener_inodes.is_empty() {
        return Ok(None);
    }
    let mut scan = Scan {
        listener_inodes,
        other_sockets: HashMap::new(),
        candidate_fds: Vec::new(),
        listener_fd: None,
        listener_holder: None,
        first_error: None,
    };
    // The root first, before the tree is listed: most servers accept in their main
    // process, and listing the tree reads a file per thread of every process in it.
    match scan.examine(root) {
        Ok(Some(evidence)) => return Ok(Some(evidence)),
        Ok(None) => {}
        Err(err) => scan.note(err),
    }
    let tree = proc::descendants(root);
    if tree.is_empty() {
        return Err(ProcError::Gone { pid: root });
    }
    for &pid in tree.iter().filter(|&&pid| pid != root) {
        match scan.examine(pid) {
            Ok(Some(evidence)) => return Ok(Some(evidence)),
            Ok(None) => {}
            Err(err) => scan.note(err),
        }
    }
    // Only a tree that owns sockets besides the listeners can have
    // accepted a connection. Asking the sockets themselves is cheap; the tcp
    // tables are big (every TIME_WAIT of the namespace: megabytes to read and
    // parse under connection-per-request load), so they are read only when
    // the sockets could not all be asked.
    let by_dup = match scan.listener_fd {
        Some(listener) if !scan.candidate_fds.is_empty() => {
            accepted::find_by_dup(listener, &scan.candidate_fds)
        }
        _ => accepted::ByDup::NoneAccepted,
    };
    if let accepted::ByDup::Found(evidence) = by_dup {
        return Ok(Some(evidence));
    }
    if let Some(holder) = scan
        .listener_holder
        .filter(|_| matches!(by_dup, accepted::ByDup::Unknown))
    {
        // The tables can be megabytes: on an async worker, hand its other tasks over
        // meanwhile.
        let found =
            crate::rt::blocking(|| accepted::find(holder, listener_inodes, &scan.other_sockets));
        match found {
            Ok(Some(evidence)) => return Ok(Some(evidence)),
            Ok(None) => {}
            Err(err) => scan.note(err),
        }
    }
    match scan.first_error {
        Some(err) => Err(err),
        None => Ok(None),
    }
}

/// What one call of [`find_accepting`] has learnt so far.
struct Scan<'a> {
    listener_inodes: &'a [u64],
    /// Socket inodes of the tree that are not listeners, with their owner:
    /// candidates for an accepted connection.
    other_sockets: HashMap<u64, i32>,
    /// The same as (pid, fd), in the order found.
    candidate_fds: Vec<(i32, i32)>,
    /// One (pid, fd) of the tree that is a listener.
    listener_fd: Option<(i32, i32)>,
    /// A process of the tree holding a listener, whose network namespace is
    /// therefore the listener's.
    listener_holder: Option<i32>,
    first_error: Option<ProcError>,
}

impl Scan<'_> {
    /// Keeps the first real error; a process or thread that vanished is
    /// simply no longer part of the tree.
    fn note(&mut self, err: ProcError) {
        if !matches!(err, ProcError::Gone { .. }) && self.first_error.is_none() {
            self.first_error = Some(err);
        }
    }

    fn is_listener(&self, inode: u64) -> bool {
        self.listener_inodes.contains(&inode)
    }

    fn examine(&mut self, pid: i32) -> Result<Option<AcceptingEvidence>, ProcError> {
        let mut listener_fds = Vec::new();
        let mut epoll_fds = Vec::new();
        for (fd, target) in proc::fds(pid)? {
            match target {
                FdTarget::Socket { inode } if self.is_listener(inode) => listener_fds.push(fd),
                FdTarget::Socket { inode } => {
                    self.other_sockets.insert(inode, pid);
                    self.candidate_fds.push((pid, fd));
                }
                FdTarget::EventPoll => epoll_fds.push(fd),
                _ => {}
            }
        }
        if let Some(&fd) = listener_fds.first() {
            self.listener_holder.get_or_insert(pid);
            self.listener_fd.get_or_insert((pid, fd));
        }
        // An epoll fd may have been inherited from a parent that holds the
        // listener, so registrations are matched by inode even in a process
        // that holds no listener itself.
        for epoll_fd in epoll_fds {
            let targets = match proc::epoll_targets(pid, epoll_fd) {
                Ok(targets) => targets,
                Err(err) => {
                    // The epoll fd closed since we listed it; the rest of
                    // the process may still be worth reading.
                    self.note(err);
                    continue;
                }
            };
            let registered = targets.iter().find(|target| {
                // Only a registration armed for input waits for
                // connections: a one-shot registration that fired, or one
                // for output only, shows no EPOLLIN.
                let armed = target.events & EPOLLIN != 0;
                armed
                    && match target.inode {
                        Some(inode) => self.is_listener(inode),
                        // Kernels before 3.8 give only the fd number.
                        None => listener_fds.contains(&target.fd),
                    }
            });
            if let Some(target) = registered {
                return Ok(Some(AcceptingEvidence::EpollRegistered {
                    pid,
                    epoll_fd,
                    fd: target.fd,
                }));
            }
        }
        if listener_fds.is_empty() {
            return Ok(None);
        }
        for tid in proc::tasks(pid)? {
            match waits::blocked_on_listener(pid, tid, &listener_fds) {
                Ok(Some(evidence)) => return Ok(Some(evidence)),
                Ok(None) => {}
                // A thread that exits mid-read is skipped like any other
                // unreadable thread; the other threads may still tell.
                Err(err) => self.note(err),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_reads_as_one_line_naming_process_and_fd() {
        let cases = [
            (
                AcceptingEvidence::BlockedInAccept {
                    pid: 1234,
                    tid: 1234,
                    fd: 3,
                },
                "pid 1234 is blocked in accept on fd 3",
            ),
            (
                AcceptingEvidence::Polling {
                    pid: 1234,
                    tid: 1240,
                    fd: 4,
                    how: "ppoll",
                },
                "pid 1234 (thread 1240) is waiting in ppoll on fd 4",
            ),
            (
                AcceptingEvidence::Receiving {
                    pid: 1234,
                    tid: 1234,
                    fd: 3,
                    how: "recvfrom",
                },
                "pid 1234 is blocked in recvfrom on fd 3",
            ),
            (
                AcceptingEvidence::EpollRegistered {
                    pid: 77,
                    epoll_fd: 9,
                    fd: 3,
                },
                "pid 77 has fd 3 registered in epoll fd 9",
            ),
            (
                AcceptingEvidence::Accepted {
                    pid: 77,
                    local: SocketAddr::from(([127, 0, 0, 1], 8080)),
                },
                "pid 77 has accepted a connection on 127.0.0.1:8080",
            ),
        ];
        for (evidence, line) in cases {
            assert_eq!(evidence.to_string(), line);
        }
    }

    #[test]
    fn no_listeners_means_no_evidence_without_reading_proc() {
        assert_eq!(find_accepting(i32::MAX, &[]).expect("nothing read"), None);
    }
}
