//! The accept queue of the listener under test, sampled over netlink
//! `sock_diag` while a flip runs.
//!
//! Why not `/proc/net/tcp`: that file formats every TCP socket of the network
//! namespace as text, time-wait ones included. On a busy machine it holds
//! hundreds of thousands of lines, and reading it every few milliseconds took
//! most of a core, enough to cut the load that verify drives by a factor of
//! nine. A `sock_diag` dump restricted to listening sockets walks only the
//! kernel's listening hash and answers with one small record per listener.
//!
//! The request and reply are written and read field by field at their
//! documented offsets (linux/netlink.h, linux/inet_diag.h), without `unsafe`.
//! The inspector has its own, fuller version of this (`inspect/diag.rs`); it
//! is private to the inspector, and verify needs only the listener records.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd as _, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x100 | 0x200; // NLM_F_ROOT | NLM_F_MATCH
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
/// `sizeof(struct inet_diag_msg)`.
const INET_DIAG_MSG_LEN: usize = 72;
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
                if record.local.port() == self.addr.port()
                    && (record.local.ip() == self.addr.ip() || record.local.ip().is_unspecified())
                {
                    total = Some(total.unwrap_or(0) + record.accept_queue);
                }
            }
        }
        Ok(total)
    }

    /// Every listening TCP socket of `family`.
    fn listeners(&mut self, family: u8) -> io::Result<Vec<ListenerRecord>> {
        self.seq = self.seq.wrapping_add(1);
        let request = listen_request(self.seq, family);
        let fd = self.fd.as_raw_fd();
        sendto(fd, &request, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        let mut out = Vec::new();
        for _ in 0..MAX_DATAGRAMS {
            let len = recv(fd, &mut self.buffer, MsgFlags::empty())?;
            if len == 0 {
                break;
            }
            match parse_reply(&self.buffer[..len], self.seq, &mut out)? {
                Progress::More => {}
                Progress::Done => return Ok(out),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag dump did not end",
        ))
    }
}

/// One listening socket as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListenerRecord {
    local: SocketAddr,
    /// `idiag_rqueue`: for a listener, connections waiting to be accepted
    /// (`idiag_wqueue` would be its backlog).
    accept_queue: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for every TCP socket of `family`
/// in the listening state: the kernel then walks only its listening hash.
fn listen_request(seq: u32, family: u8) -> Vec<u8> {
    let mut message = Vec::with_capacity(72);
    message.extend_from_slice(&72u32.to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    message.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]); // no extensions
    message.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    message.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: unused in dumps
    message
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed sock_diag reply: {what}"),
    )
}

/// Reads the listener records of one datagram into `out`. Messages of
/// another sequence number (a late answer to an earlier dump) are skipped.
fn parse_reply(datagram: &[u8], seq: u32, out: &mut Vec<ListenerRecord>) -> io::Result<Progress> {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let header = |at| u32_at(rest, at).ok_or_else(|| malformed("header"));
        let len = header(0)? as usize;
        let kind = u16_at(rest, 4).ok_or_else(|| malformed("header"))?;
        let message_seq = header(8)?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(malformed("message length"));
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        if message_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(Progress::Done),
                NLMSG_ERROR => {
                    let errno = u32_at(payload, 0).ok_or_else(|| malformed("error"))? as i32;
                    // errno 0 is an acknowledgement, not an error.
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                SOCK_DIAG_BY_FAMILY => {
                    out.push(parse_listener(payload).ok_or_else(|| malformed("inet_diag_msg"))?);
                }
                _ => {}
            }
        }
        // Messages are padded to 4 bytes.
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(Progress::More)
}

/// One `struct inet_diag_msg`: family, state, timer, retrans, the socket id
/// (source port at 4, source address at 8), then rqueue at 56.
fn parse_listener(msg: &[u8]) -> Option<ListenerRecord> {
    if msg.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let ip = match msg[0] {
        AF_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&msg[8..12]).ok()?)),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).ok()?)),
        _ => return None,
    };
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    Some(ListenerRecord {
        local: SocketAddr::new(ip, port),
        accept_queue: u32_at(msg, 56)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply datagram as the kernel writes it: one listener record, then DONE.
    fn reply(seq: u32, port: u16, queue: u32) -> Vec<u8> {
        let mut msg = [0u8; INET_DIAG_MSG_LEN];
        msg[0] = AF_INET;
        msg[1] = 10;
        msg[4..6].copy_from_slice(&port.to_be_bytes());
        msg[8..12].copy_from_slice(&[127, 0, 0, 1]);
        msg[56..60].copy_from_slice(&queue.to_ne_bytes());
        let mut datagram = Vec::new();
        for (kind, payload) in [(SOCK_DIAG_BY_FAMILY, &msg[..]), (NLMSG_DONE, &[0u8; 4][..])] {
            let len = u32::try_from(NLMSG_HDRLEN + payload.len()).unwrap();
            datagram.extend_from_slice(&len.to_ne_bytes());
            datagram.extend_from_slice(&kind.to_ne_bytes());
            datagram.extend_from_slice(&[0, 0]);
            datagram.extend_from_slice(&seq.to_ne_bytes());
            datagram.extend_from_slice(&[0; 4]);
            datagram.extend_from_slice(payload);
        }
        datagram
    }

    #[test]
    fn a_reply_gives_each_listener_its_accept_queue() {
        let mut out = Vec::new();
        let progress = parse_reply(&reply(7, 8080, 3), 7, &mut out).unwrap();
        assert_eq!(progress, Progress::Done);
        assert_eq!(
            out,
            vec![ListenerRecord {
                local: "127.0.0.1:8080".parse().unwrap(),
                accept_queue: 3,
            }]
        );
    }

    #[test]
    fn messages_of_another_dump_are_skipped() {
        let mut out = Vec::new();
        let progress = parse_reply(&reply(6, 8080, 3), 7, &mut out).unwrap();
        assert_eq!(progress, Progress::More);
        assert!(out.is_empty());
    }

    #[test]
    fn a_truncated_message_is_an_error() {
        let datagram = reply(7, 8080, 3);
        let mut out = Vec::new();
        assert!(parse_reply(&datagram[..40], 7, &mut out).is_err());
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
