//! Counters of the network namespace of PID: the listen-queue counters
//! from `/proc/PID/net/netstat`, and the TCP connection counters from
//! `/proc/PID/net/snmp` that tell whether any connection opened or left
//! `ESTABLISHED` since an earlier look.
//!
//! The file is pairs of lines, a header naming the counters and a line of
//! values with the same prefix (net/ipv4/proc.c, `netstat_seq_show`):
//!
//! ```text
//! TcpExt: SyncookiesSent SyncookiesRecv ... ListenOverflows ListenDrops ...
//! TcpExt: 0 0 ... 12 12 ...
//! IpExt: InNoRoutes ...
//! IpExt: 0 ...
//! ```
//!
//! Counters are found by name, never by position: kernels add counters in
//! the middle of the list.

use std::path::Path;

use crate::proc::{ProcError, net_counter, pid_path};

/// The two counters of the `TcpExt` group we show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ListenCounters {
    pub overflows: u64,
    pub drops: u64,
}

/// Finds `ListenOverflows` and `ListenDrops` in a whole `netstat` (or
/// `snmp`, which has the same layout) file. A counter the kernel does not
/// have reads as 0.
pub(crate) fn parse_listen_counters(text: &str, path: &Path) -> Result<ListenCounters, ProcError> {
    Ok(ListenCounters {
        overflows: net_counter(text, "TcpExt", "ListenOverflows", path)?,
        drops: net_counter(text, "TcpExt", "ListenDrops", path)?,
    })
}

/// Reads the counters of the network namespace `pid` lives in.
pub(crate) fn listen_counters(pid: i32) -> Result<ListenCounters, ProcError> {
    let path = pid_path(pid, "net/netstat");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ProcError::from_io(pid, "network counters", err))?;
    parse_listen_counters(&text, &path)
}

/// The namespace's TCP connection counters (the `Tcp` group of `snmp`,
/// RFC 4022 `tcpActiveOpens` …). Two equal readings mean that between them
/// no connection was opened (`ActiveOpens`, `PassiveOpens` count every
/// connect and every handshake completed on a listener), none failed to
/// open (`AttemptFails`), and so, with no new ones, none left
/// `ESTABLISHED` (the `CurrEstab` gauge could only have gone down;
/// `EstabResets` counts resets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpCounters {
    pub active_opens: u64,
    pub passive_opens: u64,
    pub attempt_fails: u64,
    pub estab_resets: u64,
    pub curr_estab: u64,
}

/// Finds the `Tcp` group's connection counters in a whole `snmp` file.
pub(crate) fn parse_tcp_counters(text: &str, path: &Path) -> Result<TcpCounters, ProcError> {
    let counter = |name| net_counter(text, "Tcp", name, path);
    Ok(TcpCounters {
        active_opens: counter("ActiveOpens")?,
        passive_opens: counter("PassiveOpens")?,
        attempt_fails: counter("AttemptFails")?,
        estab_resets: counter("EstabResets")?,
        curr_estab: counter("CurrEstab")?,
    })
}

/// Reads the TCP counters of the network namespace `pid` lives in.
pub(crate) fn tcp_counters(pid: i32) -> Result<TcpCounters, ProcError> {
    let path = pid_path(pid, "net/snmp");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ProcError::from_io(pid, "network counters", err))?;
    parse_tcp_counters(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = include_str!("../../tests/fixtures/inspect/snmp.txt");

    #[test]
    fn tcp_counters_are_found_by_name_in_the_tcp_group() {
        let counters = parse_tcp_counters(SNMP, Path::new("snmp")).expect("parses");
        assert_eq!(
            counters,
            TcpCounters {
                active_opens: 5588113,
                passive_opens: 5350619,
                attempt_fails: 237435,
                estab_resets: 1088,
                curr_estab: 192410,
            }
        );
    }

    #[test]
    fn own_namespace_tcp_counters_are_readable() {
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        tcp_counters(pid).expect("own netns counters");
    }

    const NETSTAT: &str = include_str!("../../tests/fixtures/inspect/netstat.txt");

    #[test]
    fn listen_counters_are_found_by_name_in_the_tcpext_group() {
        let counters = parse_listen_counters(NETSTAT, Path::new("netstat")).expect("parses");
        assert_eq!(
            counters,
            ListenCounters {
                overflows: 37,
                drops: 41
            }
        );
    }

    #[test]
    fn counters_of_other_groups_with_the_same_name_are_ignored() {
        let text = "IpExt: ListenDrops\nIpExt: 9\nTcpExt: ListenDrops\nTcpExt: 2\n";
        let counters = parse_listen_counters(text, Path::new("netstat")).expect("parses");
        assert_eq!(counters.drops, 2);
        assert_eq!(counters.overflows, 0);
    }

    #[test]
    fn a_header_without_its_values_line_is_an_error() {
        let err =
            parse_listen_counters("TcpExt: ListenDrops\n", Path::new("netstat")).expect_err("bad");
        assert!(matches!(err, ProcError::Parse { line: 1, .. }), "{err:?}");
    }

    #[test]
    fn mismatched_value_line_is_an_error() {
        let text = "TcpExt: ListenDrops\nIpExt: 3\n";
        let err = parse_listen_counters(text, Path::new("netstat")).expect_err("bad");
        assert!(matches!(err, ProcError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn own_namespace_counters_are_readable() {
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        listen_counters(pid).expect("own netns counters");
    }
}
