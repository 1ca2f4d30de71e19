//! Listen-queue counters from `/proc/PID/net/netstat` (the network
//! namespace of PID).
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

#[cfg(test)]
mod tests {
    use super::*;

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
