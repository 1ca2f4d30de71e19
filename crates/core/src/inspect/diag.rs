//! netlink `sock_diag` messages: the requests we send and the replies we
//! read, as bytes (linux/netlink.h, linux/inet_diag.h, linux/unix_diag.h).
//!
//! Messages are built and read field by field at their documented offsets
//! rather than by casting buffers to `repr(C)` structs: no `unsafe`, no
//! alignment assumptions about the receive buffer, and the tests feed the
//! parser captured bytes directly. All netlink integers are in host order
//! except ports and addresses, which are in network order.
//!
//! The filtering happens in the kernel, which is what makes a snapshot of a
//! server with 100k connections cheap:
//!
//! - `idiag_states` selects TCP states: a listener-only dump walks only the
//!   listening hash, not the established one;
//! - an `INET_DIAG_REQ_BYTECODE` program keeps only sockets whose local port
//!   is one of the service's listener ports, so the other end of loopback
//!   connections, and everything else on the machine, never leaves the
//!   kernel.

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One TCP socket, from either path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpRecord {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The kernel's state number (include/net/tcp_states.h).
    pub state: u8,
    /// For a listener, connections waiting to be accepted; otherwise bytes
    /// received and not read.
    pub rqueue: u32,
    /// For a listener, the backlog; otherwise bytes sent and not
    /// acknowledged.
    pub wqueue: u32,
    /// 0 for sockets no file refers to (time-wait, request sockets).
    pub inode: u64,
    /// Bytes the connection has received in all (`tcpi_bytes_received`), when the dump
    /// asked for `tcp_info` ([`inet_info_request`]) and the kernel gave it.
    pub bytes_received: Option<u64>,
}

/// A listening unix stream socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnixListenerRecord {
    pub inode: u64,
    /// The bound path, `@name` for an abstract socket, empty when unbound.
    pub path: String,
    pub accept_queue: u32,
    pub backlog: u32,
}

pub(crate) const TCP_LISTEN: u8 = 10;

/// States of a connection that a process still holds: everything but
/// listening, time-wait (no file refers to it), closed and request sockets.
pub(crate) const CONNECTION_STATES: u32 = (1 << 1) // ESTABLISHED
    | (1 << 2) // SYN_SENT
    | (1 << 3) // SYN_RECV
    | (1 << 4) // FIN_WAIT1
    | (1 << 5) // FIN_WAIT2
    | (1 << 8) // CLOSE_WAIT
    | (1 << 9) // LAST_ACK
    | (1 << 11); // CLOSING
pub(crate) const LISTEN_STATES: u32 = 1 << TCP_LISTEN;

/// The name we show for a TCP state number.
pub(crate) fn state_name(state: u8) -> &'static str {
    match state {
        1 => "established",
        2 => "syn_sent",
        3 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        12 => "new_syn_recv",
        _ => "unknown",
    }
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x100 | 0x200; // NLM_F_ROOT | NLM_F_MATCH
const SOCK_DIAG_BY_FAMILY: u16 = 20;

const AF_UNIX: u8 = 1;
pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// The state of an unconnected UDP socket: a bound one that receives from anyone, as a
/// UDP listener is.
pub(crate) const TCP_CLOSE: u8 = 7;
/// [`TCP_CLOSE`] as a state mask.
pub(crate) const UDP_UNCONNECTED: u32 = 1 << TCP_CLOSE;

const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
/// `sizeof(struct inet_diag_msg)`.
const INET_DIAG_MSG_LEN: usize = 72;
/// The attribute that carries a socket's `struct tcp_info`, and its bit among the
/// extensions a request asks for (`1 << (INET_DIAG_INFO - 1)`).
const INET_DIAG_INFO: u16 = 2;
const INFO_EXTENSION: u8 = 1 << (INET_DIAG_INFO - 1);
/// Where `tcpi_bytes_received` (a u64, Linux 4.1) sits in `struct tcp_info`.
const TCPI_BYTES_RECEIVED: usize = 128;

const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;
/// `sizeof(struct unix_diag_msg)`.
const UNIX_DIAG_MSG_LEN: usize = 16;

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn put_header(message: &mut Vec<u8>, seq: u32) {
    // The length is patched in by `finish` once the payload is known.
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
}

fn finish(mut message: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    message[..4].copy_from_slice(&len.to_ne_bytes());
    message
}

/// A dump request for TCP sockets of `family` in the `states` bitmask,
/// whose local port is one of `ports` (any port when empty).
pub(crate) fn inet_request(seq: u32, family: u8, states: u32, ports: &[u16]) -> Vec<u8> {
    protocol_request(seq, family, IPPROTO_TCP, 0, states, ports)
}

/// [`inet_request`] that also asks for each socket's `tcp_info` (`INET_DIAG_INFO`), for
/// [`TcpRecord::bytes_received`].
pub(crate) fn inet_info_request(seq: u32, family: u8, states: u32, ports: &[u16]) -> Vec<u8> {
    protocol_request(seq, family, IPPROTO_TCP, INFO_EXTENSION, states, ports)
}

/// [`inet_request`] for UDP sockets. A UDP reply has the same `inet_diag_msg`, with the
/// memory of the queued datagrams in `idiag_rqueue`.
pub(crate) fn udp_request(seq: u32, family: u8, states: u32, ports: &[u16]) -> Vec<u8> {
    protocol_request(seq, family, IPPROTO_UDP, 0, states, ports)
}

fn protocol_request(
    seq: u32,
    family: u8,
    protocol: u8,
    extensions: u8,
    states: u32,
    ports: &[u16],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(128);
    put_header(&mut message, seq);
    // struct inet_diag_req_v2: family, protocol, the extensions wanted, padding
    message.extend_from_slice(&[family, protocol, extensions, 0]);
    message.extend_from_slice(&states.to_ne_bytes());
    message.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: unused in dumps
    if !ports.is_empty() {
        let program = port_filter(ports);
        let attr_len = u16::try_from(4 + program.len()).unwrap_or(u16::MAX);
        message.extend_from_slice(&attr_len.to_ne_bytes());
        message.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        message.extend_from_slice(&program);
    }
    finish(message)
}

/// An `inet_diag` bytecode program accepting a socket whose local port is
/// one of `ports`.
///
/// The kernel runs it as a list of `{code, yes, no}` ops (net/ipv4/
/// inet_diag.c, `inet_diag_bc_run`): each op jumps `yes` or `no` bytes
/// ahead; landing exactly on the end accepts, jumping past it rejects. Per
/// port we emit `S_GE port; S_LE port; JMP end` (20 bytes): a failed
/// comparison skips to the next port's block, the last block's failures
/// jump past the end. `S_GE`/`S_LE` work on every kernel with bytecode
/// (`S_EQ` needs 4.17), and each comparison carries its port in a second
/// op's `no` field, as `ss` writes it.
pub(crate) fn port_filter(ports: &[u16]) -> Vec<u8> {
    const BLOCK: usize = 20;
    let total = BLOCK * ports.len();
    let mut program = Vec::with_capacity(total);
    let mut op = |code: u8, yes: usize, no: usize| {
        program.push(code);
        program.push(u8::try_from(yes).unwrap_or(u8::MAX));
        program.extend_from_slice(&u16::try_from(no).unwrap_or(u16::MAX).to_ne_bytes());
    };
    for (index, &port) in ports.iter().enumerate() {
        let left = total - index * BLOCK; // bytes from this block to the end
        // A failed comparison goes to the next block, or 4 past the end.
        let fail_ge = if left == BLOCK { left + 4 } else { BLOCK };
        op(INET_DIAG_BC_S_GE, 8, fail_ge);
        op(0, 0, usize::from(port));
        let fail_le = if left == BLOCK {
            left - 8 + 4
        } else {
            BLOCK - 8
        };
        op(INET_DIAG_BC_S_LE, 8, fail_le);
        op(0, 0, usize::from(port));
        // Matched: jump to the end. A jump always takes `no`.
        op(INET_DIAG_BC_JMP, 4, left - 16);
    }
    program
}

/// A dump request for unix sockets in the `states` bitmask, with their
/// names and queue lengths.
pub(crate) fn unix_request(seq: u32, states: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(40);
    put_header(&mut message, seq);
    // struct unix_diag_req
    message.extend_from_slice(&[AF_UNIX, 0, 0, 0]);
    message.extend_from_slice(&states.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino
    message.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN).to_ne_bytes());
    message.extend_from_slice(&[0xff; 8]); // udiag_cookie: INET_DIAG_NOCOOKIE
    finish(message)
}

/// What a received datagram said about the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE`: the dump is complete.
    Done,
}

/// Why a reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// The kernel answered with this errno (`NLMSG_ERROR`).
    Kernel(i32),
    /// The bytes do not have the documented shape.
    Malformed(&'static str),
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Walks the netlink messages of one datagram, handing each
/// `SOCK_DIAG_BY_FAMILY` payload to `each`, and stops at `NLMSG_DONE` or an
/// error. Messages of other sequence numbers (a late reply to an earlier,
/// abandoned dump) are skipped.
fn walk(
    datagram: &[u8],
    seq: u32,
    mut each: impl FnMut(&[u8]) -> Result<(), ReplyError>,
) -> Result<Progress, ReplyError> {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32_at(rest, 0).ok_or(ReplyError::Malformed("header"))? as usize;
        let kind = u16_at(rest, 4).ok_or(ReplyError::Malformed("header"))?;
        let message_seq = u32_at(rest, 8).ok_or(ReplyError::Malformed("header"))?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(ReplyError::Malformed("message length"));
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        if message_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(Progress::Done),
                NLMSG_ERROR => {
                    let errno = u32_at(payload, 0).ok_or(ReplyError::Malformed("error"))? as i32;
                    // errno 0 is an acknowledgement, not an error.
                    if errno != 0 {
                        return Err(ReplyError::Kernel(-errno));
                    }
                }
                SOCK_DIAG_BY_FAMILY => each(payload)?,
                _ => {}
            }
        }
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(Progress::More)
}

/// Reads the `inet_diag_msg` records of one datagram into `out`.
pub(crate) fn parse_inet(
    datagram: &[u8],
    seq: u32,
    out: &mut Vec<TcpRecord>,
) -> Result<Progress, ReplyError> {
    walk(datagram, seq, |payload| {
        out.push(parse_inet_msg(payload).ok_or(ReplyError::Malformed("inet_diag_msg"))?);
        Ok(())
    })
}

/// One `struct inet_diag_msg`: family, state, timer, retrans, then the
/// socket id (ports, addresses, interface, cookie), expires, rqueue,
/// wqueue, uid and inode. Of the attributes after it, only `INET_DIAG_INFO` is read.
fn parse_inet_msg(msg: &[u8]) -> Option<TcpRecord> {
    if msg.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = msg[0];
    let address = |at: usize| -> Option<IpAddr> {
        match family {
            AF_INET => {
                let octets: [u8; 4] = msg.get(at..at + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(octets)))
            }
            AF_INET6 => {
                let octets: [u8; 16] = msg.get(at..at + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            _ => None,
        }
    };
    Some(TcpRecord {
        local: SocketAddr::new(address(8)?, be16_at(msg, 4)?),
        peer: SocketAddr::new(address(24)?, be16_at(msg, 6)?),
        state: msg[1],
        rqueue: u32_at(msg, 56)?,
        wqueue: u32_at(msg, 60)?,
        inode: u64::from(u32_at(msg, 68)?),
        bytes_received: attribute(&msg[INET_DIAG_MSG_LEN..], INET_DIAG_INFO).and_then(|info| {
            let bytes = info.get(TCPI_BYTES_RECEIVED..TCPI_BYTES_RECEIVED + 8)?;
            Some(u64::from_ne_bytes(bytes.try_into().ok()?))
        }),
    })
}

/// The payload of the first route attribute of `kind` in `attrs` (each a 4-byte header,
/// length then type, padded to 4 bytes).
fn attribute(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if u16_at(attrs, 2)? == kind {
            return Some(&attrs[4..len]);
        }
        attrs = attrs.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// Reads the listening unix sockets of one datagram into `out`.
pub(crate) fn parse_unix(
    datagram: &[u8],
    seq: u32,
    out: &mut Vec<UnixListenerRecord>,
) -> Result<Progress, ReplyError> {
    walk(datagram, seq, |payload| {
        if let Some(record) = parse_unix_msg(payload)? {
            out.push(record);
        }
        Ok(())
    })
}

/// One `struct unix_diag_msg` (family, type, state, pad, inode, cookie)
/// and its `UNIX_DIAG_NAME` and `UNIX_DIAG_RQLEN` attributes. Sockets that
/// are not listening are skipped.
fn parse_unix_msg(msg: &[u8]) -> Result<Option<UnixListenerRecord>, ReplyError> {
    let bad = ReplyError::Malformed("unix_diag_msg");
    if msg.len() < UNIX_DIAG_MSG_LEN {
        return Err(bad);
    }
    if msg[2] != TCP_LISTEN {
        return Ok(None);
    }
    let mut record = UnixListenerRecord {
        inode: u64::from(u32_at(msg, 4).ok_or(bad.clone())?),
        path: String::new(),
        accept_queue: 0,
        backlog: 0,
    };
    let mut attrs = &msg[UNIX_DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0).ok_or(bad.clone())?);
        let kind = u16_at(attrs, 2).ok_or(bad.clone())?;
        let value = attrs.get(4..len).ok_or(bad.clone())?;
        match kind {
            UNIX_DIAG_NAME => record.path = unix_path(value),
            UNIX_DIAG_RQLEN => {
                record.accept_queue = u32_at(value, 0).ok_or(bad.clone())?;
                record.backlog = u32_at(value, 4).ok_or(bad.clone())?;
            }
            _ => {}
        }
        attrs = attrs.get(align4(len.max(4))..).unwrap_or(&[]);
    }
    Ok(Some(record))
}

/// A unix socket name as `ss` and `/proc/net/unix` show it: the path, or
/// `@name` for the abstract namespace (a leading NUL byte).
pub(crate) fn unix_path(name: &[u8]) -> String {
    match name.split_first() {
        Some((0, abstract_name)) => format!("@{}", String::from_utf8_lossy(abstract_name)),
        _ => {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        }
    }
}
