//! The accept queue of a listener, read over netlink `sock_diag`: `zdctl verify` samples
//! the one under test every few milliseconds while a flip runs.
//!
//! Why not `/proc/net/tcp`: that file formats every TCP socket of the network
//! namespace as text, time-wait ones included. On a busy machine it holds
//! hundreds of thousands of lines, and reading it every few milliseconds took
//! most of a core, enough to cut the load that verify drives by a factor of
//! nine. A `sock_diag` dump restricted to listening sockets on the port walks
//! only the kernel's listening hash and answers with one small record per
//! listener. The socket, the request and the reply's records are the
//! inspector's (`inspect::netns`, `inspect::diag`).

use std::io;
use std::net::SocketAddr;

use super::diag::{AF_INET, AF_INET6, TcpRecord};
use super::netns::DiagSocket;

/// The kernel's number for the listening state (include/net/tcp_states.h).
const TCP_LISTEN: u32 = 10;

/// A netlink socket that reads the accept queue of the listener(s) on one
/// address of the caller's network namespace.
#[derive(Debug)]
pub struct AcceptQueue {
    socket: DiagSocket,
    addr: SocketAddr,
    records: Vec<TcpRecord>,
}

impl AcceptQueue {
    /// Opens the netlink socket; fails when the kernel has no `inet_diag`.
    pub fn open(addr: SocketAddr) -> io::Result<AcceptQueue> {
        Ok(AcceptQueue {
            socket: DiagSocket::open_here()?,
            addr,
            records: Vec::new(),
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
        self.records.clear();
        self.socket.tcp(
            families,
            1 << TCP_LISTEN,
            &[self.addr.port()],
            &mut self.records,
        )?;
        // For a listener, rqueue is the accept queue (wqueue the backlog).
        Ok(self
            .records
            .iter()
            .filter(|record| serves(record, self.addr))
            .map(|record| record.rqueue)
            .reduce(|a, b| a + b))
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
            bytes_received: None,
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
