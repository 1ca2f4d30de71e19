//! A connection the tree already accepted from a listener.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::proc::{self, ProcError, TcpState};

use super::AcceptingEvidence;

/// Finds a connected TCP socket owned by the tree (`sockets`: inode →
/// owning pid) whose local address is one a listener serves. `holder` is a
/// process holding a listener: the tcp tables of its network namespace list
/// both the listeners and the connections accepted from them.
pub(super) fn find(
    holder: i32,
    listener_inodes: &[u64],
    sockets: &HashMap<u64, i32>,
) -> Result<Option<AcceptingEvidence>, ProcError> {
    let table = proc::tcp_sockets(holder)?;
    let listening: Vec<SocketAddr> = table
        .iter()
        .filter(|socket| {
            socket.state == TcpState::Listen && listener_inodes.contains(&socket.inode)
        })
        .map(|socket| socket.local)
        .collect();
    if listening.is_empty() {
        return Ok(None);
    }
    Ok(table.iter().find_map(|socket| {
        // Connections still in the accept queue have no inode yet, and a
        // socket not owned by the tree was accepted by someone else (the
        // old generation).
        let pid = *sockets.get(&socket.inode)?;
        let accepted = socket.state != TcpState::Listen
            && listening
                .iter()
                .any(|listener| serves(*listener, socket.local));
        accepted.then_some(AcceptingEvidence::Accepted {
            pid,
            local: socket.local,
        })
    }))
}

/// How many of the tree's sockets [`find_by_dup`] asks before giving up: a
/// server that accepted anything has it among its first sockets; a process
/// with thousands of outgoing connections is left to the table scan.
const DUP_CANDIDATES: usize = 64;

/// What asking the sockets themselves found.
pub(super) enum ByDup {
    Found(AcceptingEvidence),
    /// Every candidate was asked and none was accepted from the listener.
    NoneAccepted,
    /// The answer is incomplete: the kernel refused the duplicate (before Linux
    /// 5.6, or no permission), or there were more candidates than are asked.
    Unknown,
}

/// Finds an accepted connection by asking the sockets themselves: each is
/// duplicated into this process with `pidfd_getfd` (the same permission as
/// reading /proc/PID/task/*/syscall) and its local address compared with the
/// listener's. Cheap, unlike reading the namespace's tcp tables.
pub(super) fn find_by_dup(listener: (i32, i32), candidates: &[(i32, i32)]) -> ByDup {
    let Some(listening) = local_of(listener.0, listener.1) else {
        return ByDup::Unknown;
    };
    for &(pid, fd) in candidates.iter().take(DUP_CANDIDATES) {
        let Some(local) = local_of(pid, fd) else {
            continue;
        };
        if serves(listening, local) && is_connected(pid, fd) {
            return ByDup::Found(AcceptingEvidence::Accepted { pid, local });
        }
    }
    if candidates.len() > DUP_CANDIDATES {
        ByDup::Unknown
    } else {
        ByDup::NoneAccepted
    }
}

/// The local TCP address of fd `fd` of process `pid`, via a duplicate.
fn local_of(pid: i32, fd: i32) -> Option<SocketAddr> {
    let dup = proc::duplicate_fd(pid, fd)?;
    let addr = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(
        std::os::fd::AsRawFd::as_raw_fd(&dup),
    )
    .ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// Whether fd `fd` of `pid` is a connected socket (it has a peer), not a listener.
fn is_connected(pid: i32, fd: i32) -> bool {
    proc::duplicate_fd(pid, fd).is_some_and(|dup| {
        nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(
            std::os::fd::AsRawFd::as_raw_fd(&dup),
        )
        .is_ok()
    })
}

/// Whether a connection with local address `local` can have come from a
/// listener bound to `listener`: same port, and the same address unless the
/// listener is bound to the wildcard. A dual-stack `[::]` listener reports
/// IPv4 connections as IPv4-mapped IPv6 addresses, hence `to_canonical`.
pub(crate) fn serves(listener: SocketAddr, local: SocketAddr) -> bool {
    listener.port() == local.port()
        && (listener.ip().is_unspecified()
            || listener.ip().to_canonical() == local.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn a_listener_serves_connections_on_its_own_address_and_port() {
        assert!(serves(addr("127.0.0.1:8080"), addr("127.0.0.1:8080")));
        assert!(!serves(addr("127.0.0.1:8080"), addr("127.0.0.1:8081")));
        assert!(!serves(addr("127.0.0.1:8080"), addr("127.0.0.2:8080")));
    }

    #[test]
    fn a_wildcard_listener_serves_every_local_address() {
        assert!(serves(addr("0.0.0.0:8080"), addr("10.1.2.3:8080")));
        assert!(serves(addr("[::]:8080"), addr("[::ffff:127.0.0.1]:8080")));
    }

    #[test]
    fn ipv4_mapped_connections_match_an_ipv4_address() {
        assert!(serves(
            addr("[::ffff:127.0.0.1]:8080"),
            addr("127.0.0.1:8080")
        ));
    }
}
