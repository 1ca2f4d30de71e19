//! The fallback path: socket tables of the service's namespace read from
//! `/proc/PID/net/tcp`, `tcp6` and `unix` (and `udp`, `udp6` for a service with UDP
//! listeners), whole, and filtered here.
//!
//! It works everywhere `/proc` does, but the kernel formats every socket of
//! the namespace as text (both ends of every loopback connection included),
//! so it costs far more than netlink on a busy machine; `inspectbench`
//! measures by how much. `/proc/net/unix` has no queue lengths, so unix
//! listeners show an accept queue and backlog of 0 here.

use std::path::Path;

use super::diag::{TcpRecord, UnixListenerRecord};
use crate::proc::{self, ProcError, TcpSocket, TcpState, pid_path};

/// `__SO_ACCEPTCON` in the `Flags` column: the socket is listening.
const SO_ACCEPTCON: u32 = 1 << 16;
/// `SOCK_STREAM` in the `Type` column.
const SOCK_STREAM: u32 = 1;

/// Every TCP socket of the namespace of `pid`.
pub(crate) fn tcp(pid: i32, out: &mut Vec<TcpRecord>) -> Result<(), ProcError> {
    out.extend(proc::tcp_sockets(pid)?.iter().map(record));
    Ok(())
}

/// Every UDP socket of the namespace of `pid`.
pub(crate) fn udp(pid: i32, out: &mut Vec<TcpRecord>) -> Result<(), ProcError> {
    out.extend(proc::udp_sockets(pid)?.iter().map(record));
    Ok(())
}

fn record(socket: &TcpSocket) -> TcpRecord {
    TcpRecord {
        local: socket.local,
        peer: socket.remote,
        state: state_number(socket.state),
        rqueue: socket.rx_queue,
        wqueue: socket.tx_queue,
        inode: socket.inode,
        bytes_received: None,
    }
}

/// The kernel's number for a state (include/net/tcp_states.h).
fn state_number(state: TcpState) -> u8 {
    match state {
        TcpState::Established => 1,
        TcpState::SynSent => 2,
        TcpState::SynRecv => 3,
        TcpState::FinWait1 => 4,
        TcpState::FinWait2 => 5,
        TcpState::TimeWait => 6,
        TcpState::Close => 7,
        TcpState::CloseWait => 8,
        TcpState::LastAck => 9,
        TcpState::Listen => 10,
        TcpState::Closing => 11,
        TcpState::NewSynRecv => 12,
        TcpState::Other(number) => number,
    }
}

/// Listening unix stream sockets of the namespace of `pid`.
pub(crate) fn unix_listeners(pid: i32, out: &mut Vec<UnixListenerRecord>) -> Result<(), ProcError> {
    let path = pid_path(pid, "net/unix");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ProcError::from_io(pid, "unix sockets", err))?;
    parse_unix_table(&text, &path, out)
}

/// Parses `/proc/net/unix` (net/unix/af_unix.c, `unix_seq_show`):
///
/// ```text
/// Num       RefCount Protocol Flags    Type St Inode Path
/// 0000000000000000: 00000002 00000000 00010000 0001 01 15719 /run/app.sock
/// ```
///
/// keeping the listening stream sockets. The path is the rest of the line
/// and may contain spaces; an abstract name starts with `@`.
pub(crate) fn parse_unix_table(
    text: &str,
    path: &Path,
    out: &mut Vec<UnixListenerRecord>,
) -> Result<(), ProcError> {
    for (index, line) in text.lines().enumerate().skip(1) {
        let bad = |what: &str| ProcError::parse(path, index + 1, what);
        let mut rest = line.trim_start();
        let mut field = || -> Option<&str> {
            let (value, after) = rest.split_once(' ').unwrap_or((rest, ""));
            rest = after.trim_start();
            Some(value).filter(|v| !v.is_empty())
        };
        let (
            Some(_num),
            Some(_refs),
            Some(_proto),
            Some(flags),
            Some(kind),
            Some(_st),
            Some(inode),
        ) = (
            field(),
            field(),
            field(),
            field(),
            field(),
            field(),
            field(),
        )
        else {
            return Err(bad("fewer than seven fields"));
        };
        let flags = u32::from_str_radix(flags, 16).map_err(|_| bad("bad flags"))?;
        let kind = u32::from_str_radix(kind, 16).map_err(|_| bad("bad type"))?;
        if flags & SO_ACCEPTCON == 0 || kind != SOCK_STREAM {
            continue;
        }
        out.push(UnixListenerRecord {
            inode: inode.parse().map_err(|_| bad("bad inode"))?,
            path: rest.to_owned(),
            accept_queue: 0,
            backlog: 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIX: &str = include_str!("../../tests/fixtures/inspect/net-unix.txt");

    #[test]
    fn only_listening_stream_sockets_are_kept_from_the_unix_table() {
        let mut out = Vec::new();
        parse_unix_table(UNIX, Path::new("unix"), &mut out).expect("parses");
        let found: Vec<(u64, &str)> = out.iter().map(|u| (u.inode, u.path.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (31001, "/run/zdctl/app.sock"),
                (31003, "@abstract-name"),
                (31005, "/tmp/with space.sock"),
            ]
        );
    }

    #[test]
    fn a_short_unix_line_is_an_error() {
        let text = "Num RefCount Protocol Flags Type St Inode Path\n0: 00000002 0\n";
        let err = parse_unix_table(text, Path::new("unix"), &mut Vec::new()).expect_err("bad");
        assert!(matches!(err, ProcError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn tcp_states_keep_their_kernel_numbers() {
        for number in 1..=12u8 {
            let line = format!(
                "sl local rem st q tr re uid to inode\n 0: 0100007F:1F90 00000000:0000 {number:02X} 00000000:00000000 00:00000000 00000000 0 0 7 1\n"
            );
            let sockets = proc::parse_tcp_table(&line, Path::new("tcp")).expect("parses");
            assert_eq!(state_number(sockets[0].state), number);
        }
    }
}
