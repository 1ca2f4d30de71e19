//! The accept queue of the listener under test, sampled over netlink
//! `sock_diag` while a flip runs.
//!
//! Why not `/proc/net/tcp`: that file formats every TCP socket of the network
//! namespace as text, time-wait ones included. On a busy machine it holds
//! hundreds of thousands of lines, and reading it every few milliseconds took
//! most of a core, enough to cut the load that verify drives by a factor of
//! nine. A `sock_diag` dump restricted to listening sockets on the port walks
//! only the kernel's listening hash and answers with one small record per
//! listener. The request and the reply's records are the inspector's
//! (`inspect::diag`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

use crate::inspect::diag::{self, AF_INET, AF_INET6, Progress, ReplyError, TcpRecord};

/// The kernel's number for the listening state (include/net/tcp_states.h).
const TCP_LISTEN: u32 = 10;
/// A bound on the datagrams of one dump: listeners fit in a few.
const MAX_DATAGRAMS: usize = 1024;

/// A netlink socket that reads the accept queue of the listener(s) on one
/// address of the caller's network namespace.
#[derive(Debug)]
pub struct AcceptQueue {
    fd: OwnedFd,
    addr: SocketAddr,
    seq: u32,
    buffer: Vec<u8>,
}

impl AcceptQueue {
    /// Opens the netlink socket; fails when the kernel has no `inet_diag`.
    pub fn open(addr: SocketAddr) -> io::Result<AcceptQueue> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        Ok(AcceptQueue {
            fd,
            addr,
            seq: 0,
            buffer: vec![0; 32 * 1024],
        })
    }

    /// Connections waiting in the accept queue of the listening socket bound
    /// to the address (or to the wildcard address on its port); summed over
    /// the sockets of an `SO_REUSEPORT` group, each of which has its own
    /// queue. `None` when no such listener exists.
    pub fn sample(&mut self) -> io::Result<Option<u32>> {
        // An IPv4 address may be served by a dual-stack IPv6 wildcard socket.
        let families: &[u8] = match self.addr {
            SocketAddr::V4(_) => &[AF_INET, AF_INET6],
            SocketAddr::V6(_) => &[AF_INET6],
        };
        let mut total = None;
        for &family in families {
            for record in self.listeners(family)? {
                if serves(&record, self.addr) {
                    // For a listener, rqueue is the accept queue (wqueue the backlog).
                    total = Some(total.unwrap_or(0) + record.rqueue);
                }
            }
        }
        Ok(total)
    }

    /// Every listening TCP socket of `family` on the address's port.
    fn listeners(&mut self, family: u8) -> io::Result<Vec<TcpRecord>> {
        self.seq = self.seq.wrapping_add(1);
        let request = diag::inet_request(self.seq, family, 1 << TCP_LISTEN, &[self.addr.port()]);
        let fd = self.fd.as_raw_fd();
        sendto(fd, &request, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        let mut out = Vec::new();
        for _ in 0..MAX_DATAGRAMS {
            let len = recv(fd, &mut self.buffer, MsgFlags::empty())?;
            if len == 0 {
                break;
            }
            match diag::parse_inet(&self.buffer[..len], self.seq, &mut out) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => return Ok(out),
                Err(ReplyError::Kernel(errno)) => return Err(io::Error::from_raw_os_error(errno)),
                Err(ReplyError::Malformed(what)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("malformed sock_diag reply: {what}"),
                    ));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag dump did not end",
        ))
    }
}

/// Whether the listening socket `record` takes connections to `addr`.
fn serves(record: &TcpRecord, addr: SocketAddr) -> bool {
    record.local.port() == addr.port()
        && (record.local.ip() == addr.ip() || record.local.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_the_address_or_the_wildcard_serves_it() {
        let record = |local: &str| TcpRecord {
            local: local.parse().unwrap(),
            peer: "0.0.0.0:0".parse().unwrap(),
            state: 10,
            rqueue: 0,
            wqueue: 128,
            inode: 1,
        };
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(serves(&record("127.0.0.1:8080"), addr));
        assert!(serves(&record("0.0.0.0:8080"), addr));
        assert!(serves(&record("[::]:8080"), addr));
        assert!(!serves(&record("127.0.0.2:8080"), addr));
        assert!(!serves(&record("127.0.0.1:8081"), addr));
    }

    #[test]
    fn the_accept_queue_of_an_unaccepted_listener_counts_waiting_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut queue = AcceptQueue::open(addr).expect("sock_diag");
        assert_eq!(queue.sample().expect("dump"), Some(0));
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        // The handshake completes in the kernel; the connection waits for accept.
        let mut queued = None;
        for _ in 0..100 {
            queued = queue.sample().expect("dump");
            if queued == Some(1) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(queued, Some(1));
    }

    #[test]
    fn no_listener_on_the_address_reads_as_none() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        // The listener is closed again: nothing listens on the port now.
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut queue = AcceptQueue::open(addr).expect("sock_diag");
        assert_eq!(queue.sample().expect("dump"), None);
    }
}
