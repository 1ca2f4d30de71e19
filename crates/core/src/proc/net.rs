//! TCP sockets of a network namespace, from `/proc/PID/net/tcp` and `tcp6` (and UDP
//! sockets from `udp` and `udp6`, whose lines have the same columns).
//!
//! A line looks like this (net/ipv4/tcp_ipv4.c, `get_tcp4_sock`):
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//!    0: 0100007F:1F90 00000000:0000 0A 00000000:00000001 00:00000000 00000000  1000        0 15719 1 …
//! ```
//!
//! Addresses are the raw network-order words printed as host-order hex
//! (`%08X` of a `__be32`), so they are decoded with the host's byte order;
//! IPv6 addresses are four such words. Ports are plain hex. For a listening
//! socket `rx_queue` is the accept backlog and `tx_queue` its limit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::{ProcError, pid_path};

/// The state of a TCP socket, as the kernel numbers it
/// (include/net/tcp_states.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    /// A state number this code does not know (newer kernels add some).
    Other(u8),
}

impl TcpState {
    fn from_number(number: u8) -> TcpState {
        match number {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            12 => TcpState::NewSynRecv,
            other => TcpState::Other(other),
        }
    }
}

/// One line of a `net/tcp` or `net/tcp6` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// The socket's inode; 0 for sockets no file refers to (time-wait,
    /// half-open connections still in a listener's queue).
    pub inode: u64,
    /// Bytes waiting to be read; for a listener, connections waiting to be
    /// accepted.
    pub rx_queue: u32,
    /// Bytes not yet acknowledged; for a listener, the backlog limit.
    pub tx_queue: u32,
}

/// Parses a whole `net/tcp` or `net/tcp6` table (header line included).
/// `path` only names the file in errors.
pub fn parse_tcp_table(text: &str, path: &Path) -> Result<Vec<TcpSocket>, ProcError> {
    let mut sockets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |what: &str| ProcError::parse(path, index + 1, what);
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The header is the only line whose first field is not `N:`.
        if fields.first().is_none_or(|sl| !sl.ends_with(':')) {
            continue;
        }
        let [_, local, remote, state, queues, _, _, _, _, inode, ..] = fields[..] else {
            return Err(bad("fewer than ten fields"));
        };
        let (tx, rx) = queues
            .split_once(':')
            .ok_or_else(|| bad("queues are not tx:rx"))?;
        sockets.push(TcpSocket {
            local: parse_address(local).ok_or_else(|| bad("bad local address"))?,
            remote: parse_address(remote).ok_or_else(|| bad("bad remote address"))?,
            state: TcpState::from_number(
                u8::from_str_radix(state, 16).map_err(|_| bad("bad state"))?,
            ),
            inode: inode.parse().map_err(|_| bad("bad inode"))?,
            rx_queue: u32::from_str_radix(rx, 16).map_err(|_| bad("bad rx_queue"))?,
            tx_queue: u32::from_str_radix(tx, 16).map_err(|_| bad("bad tx_queue"))?,
        });
    }
    Ok(sockets)
}

/// `0100007F:1F90` or 32 hex digits, a colon and a port.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |index: usize| -> Option<[u8; 4]> {
        let hex = address.get(index * 8..index * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (index, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(index)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP socket (IPv4 and IPv6) in the network namespace of `pid`.
/// A namespace without IPv6 has no `tcp6` file; that is not an error.
pub fn tcp_sockets(pid: i32) -> Result<Vec<TcpSocket>, ProcError> {
    inet_sockets(pid, "tcp")
}

/// Every UDP socket (IPv4 and IPv6) in the network namespace of `pid`, read like
/// [`tcp_sockets`]: `state` is `Close` for an unconnected socket, `rx_queue` the memory
/// its queued datagrams hold.
pub fn udp_sockets(pid: i32) -> Result<Vec<TcpSocket>, ProcError> {
    inet_sockets(pid, "udp")
}

fn inet_sockets(pid: i32, protocol: &str) -> Result<Vec<TcpSocket>, ProcError> {
    let mut sockets = Vec::new();
    let (v4, v6) = (format!("net/{protocol}"), format!("net/{protocol}6"));
    for (name, required) in [(v4.as_str(), true), (v6.as_str(), false)] {
        let path = pid_path(pid, name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                // Still tell a vanished process from a missing table.
                if pid_path(pid, "").exists() {
                    continue;
                }
                return Err(ProcError::Gone { pid });
            }
            Err(err) => return Err(ProcError::from_io(pid, "inet sockets", err)),
        };
        sockets.extend(parse_tcp_table(&text, &path)?);
    }
    Ok(sockets)
}

/// The value of `name` in `group` of a netstat- or snmp-shaped text; a
/// counter the kernel does not have reads as 0.
pub fn net_counter(text: &str, group: &str, name: &str, path: &Path) -> Result<u64, ProcError> {
    let mut lines = text.lines().enumerate();
    while let Some((index, header)) = lines.next() {
        let Some((this_group, names)) = header.split_once(':') else {
            continue;
        };
        let Some((_, values)) = lines.next() else {
            return Err(ProcError::parse(path, index + 1, "a header without values"));
        };
        if this_group != group {
            continue;
        }
        let Some(values) = values
            .strip_prefix(this_group)
            .and_then(|v| v.strip_prefix(':'))
        else {
            return Err(ProcError::parse(
                path,
                index + 2,
                format!("values do not follow the {group} header"),
            ));
        };
        if let Some((_, value)) = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
        {
            // OutRsts and friends are unsigned; a few snmp fields are signed (MaxConn: -1).
            return value
                .parse::<i64>()
                .map(|v| u64::try_from(v).unwrap_or(0))
                .map_err(|_| ProcError::parse(path, index + 2, format!("bad value of {name}")));
        }
    }
    Ok(0)
}
