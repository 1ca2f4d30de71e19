//! Kernel counters that betray lost connections.
//!
//! `/proc/net/netstat` and `/proc/net/snmp` are pairs of lines: a header
//! naming a group's counters and a line of values with the same prefix
//! (net/ipv4/proc.c). Counters are found by group and name, never by
//! position, because kernels add counters in the middle of the list. Both
//! files count for the whole network namespace, not one socket: other
//! traffic in the namespace shows up too.

use std::path::Path;

use zd_core::proc::ProcError;
pub use zd_core::proc::net_counter as counter;

/// Counters of the caller's network namespace at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    /// `TcpExt: ListenOverflows`: a connection arrived at a full accept queue.
    pub listen_overflows: u64,
    /// `TcpExt: ListenDrops`: a connection to a listener was dropped (overflows included).
    pub listen_drops: u64,
    /// `Tcp: OutRsts`: resets sent, e.g. by a listener closed with connections queued.
    pub out_rsts: u64,
}

impl KernelCounters {
    /// Reads both files of the caller's network namespace.
    pub fn read() -> Result<KernelCounters, ProcError> {
        let netstat = read_proc("/proc/self/net/netstat")?;
        let snmp = read_proc("/proc/self/net/snmp")?;
        let path = Path::new("/proc/self/net/netstat");
        let snmp_path = Path::new("/proc/self/net/snmp");
        Ok(KernelCounters {
            listen_overflows: counter(&netstat, "TcpExt", "ListenOverflows", path)?,
            listen_drops: counter(&netstat, "TcpExt", "ListenDrops", path)?,
            out_rsts: counter(&snmp, "Tcp", "OutRsts", snmp_path)?,
        })
    }

    /// How much each counter grew since `earlier`.
    pub fn since(&self, earlier: &KernelCounters) -> KernelCounters {
        KernelCounters {
            listen_overflows: self
                .listen_overflows
                .saturating_sub(earlier.listen_overflows),
            listen_drops: self.listen_drops.saturating_sub(earlier.listen_drops),
            out_rsts: self.out_rsts.saturating_sub(earlier.out_rsts),
        }
    }
}

fn read_proc(path: &str) -> Result<String, ProcError> {
    let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    std::fs::read_to_string(path).map_err(|err| ProcError::from_io(pid, "network counters", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                           TcpExt: 1 7 9\n\
                           IpExt: InNoRoutes ListenDrops\n\
                           IpExt: 0 55\n";
    const SNMP: &str = "Tcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 42\n";

    #[test]
    fn counters_are_found_by_group_and_name() {
        let p = Path::new("netstat");
        assert_eq!(counter(NETSTAT, "TcpExt", "ListenOverflows", p).unwrap(), 7);
        assert_eq!(counter(NETSTAT, "TcpExt", "ListenDrops", p).unwrap(), 9);
        assert_eq!(counter(SNMP, "Tcp", "OutRsts", p).unwrap(), 42);
    }

    #[test]
    fn a_missing_counter_reads_as_zero_and_a_negative_one_too() {
        let p = Path::new("snmp");
        assert_eq!(counter(SNMP, "Tcp", "InCsumErrors", p).unwrap(), 0);
        assert_eq!(counter(SNMP, "Tcp", "MaxConn", p).unwrap(), 0);
    }

    #[test]
    fn a_header_without_values_is_an_error() {
        assert!(
            counter(
                "TcpExt: ListenDrops\n",
                "TcpExt",
                "ListenDrops",
                Path::new("x")
            )
            .is_err()
        );
    }

    #[test]
    fn the_counters_of_this_namespace_are_readable() {
        let before = KernelCounters::read().expect("readable");
        let after = KernelCounters::read().expect("readable");
        assert!(after.since(&before).listen_drops < u64::MAX);
    }
}
