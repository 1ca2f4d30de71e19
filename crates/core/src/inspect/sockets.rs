//! Reading the service's sockets: its listeners, then the connections on
//! their ports, by netlink `sock_diag` when possible and from `/proc`
//! otherwise.
//!
//! # Not reading the connections when nothing changed
//!
//! The listeners are few and cheap to dump; the connections are not. The
//! kernel walks every TCP socket of the namespace and fills a message for
//! each of the service's connections: about 1.5 µs of CPU per connection,
//! so a dump at every refresh of a server with 100k connections would cost
//! 150 ms a second. On the netlink path a snapshot therefore carries over
//! the connections an earlier snapshot of the same service read while
//! nothing says they changed:
//!
//! - the namespace's TCP counters (`/proc/PID/net/snmp`, see
//!   [`TcpCounters`]) are unchanged: no connection was opened, accepted or
//!   reset, and none left `ESTABLISHED`;
//! - no fd table of the generations' processes was read again (a table is
//!   re-read when its fd count changes, `inspect/owners.rs`), and the
//!   processes are the same (the supervisor's table is left out: it opens a
//!   control connection for every status request, and holds no connection
//!   that counts);
//! - the listener ports and families are the same;
//! - and the table is younger than the inspector's reuse limit (10 s by
//!   default), which bounds what the counters cannot show: a process that
//!   closes a connection its peer had already closed (`CLOSE_WAIT`) and
//!   opens another file in the same interval keeps its fd count and moves
//!   no counter, and a connection's queues can change without either.
//!
//! The counters are read before the dump, so a change while it runs shows
//! at the next snapshot. The `/proc` path has no cheap way to read the
//! listeners alone, so it reads everything at every snapshot.

use std::time::{Duration, Instant, SystemTime};

use super::collect::Plan;
use super::diag::{self, TcpRecord};
use super::fasthash::IntSet;
use super::netns::{self, DiagSocket};
use super::netstat::{self, TcpCounters};
use super::owners::OwnerCache;
use super::{InspectError, Inspector, SocketSource, procfs_source};
use crate::proto;

/// One service's connections on its listener ports, as last read, and what
/// they were read under.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTable {
    pub(super) records: Vec<TcpRecord>,
    /// Whether this snapshot read them (rather than carrying them over).
    pub(super) fresh: bool,
    pub(super) read_at: Option<Instant>,
    pub(super) read_unix_ms: u64,
    /// `None` when they cannot be carried over (read from `/proc`).
    key: Option<TableKey>,
}

/// What must not have changed for a connection table to be carried over.
#[derive(Debug, PartialEq, Eq)]
struct TableKey {
    namespace: u64,
    ports: Vec<u16>,
    families: Vec<u8>,
    counters: TcpCounters,
    /// The processes and which read of their fd tables is current.
    tables: Vec<(i32, u64, u64)>,
}

impl ConnectionTable {
    fn mark_read(&mut self, key: Option<TableKey>) {
        self.fresh = true;
        self.read_at = Some(Instant::now());
        self.read_unix_ms = proto::unix_ms(SystemTime::now());
        self.key = key;
    }

    fn can_carry_over(&self, key: &TableKey, limit: Duration) -> bool {
        self.key.as_ref() == Some(key) && self.read_at.is_some_and(|at| at.elapsed() < limit)
    }

    /// Records which fd tables the connections were attributed with, once
    /// the snapshot has re-read any it needed to.
    pub(super) fn settle(&mut self, tables: Vec<(i32, u64, u64)>) {
        if let Some(key) = self.key.as_mut() {
            key.tables = tables;
        }
    }
}

impl Inspector {
    /// Fills the scratch tables with the service's listeners, and `table`
    /// with the connections on their ports (or leaves it as it was, when it
    /// may be carried over), by netlink when possible.
    pub(super) fn read_sockets(
        &mut self,
        plan: &Plan,
        processes: &[(i32, u64)],
        table: &mut ConnectionTable,
    ) -> Result<SocketSource, InspectError> {
        table.fresh = false;
        if self.source == SocketSource::Netlink && !self.netlink_failed {
            match self.read_netlink(plan, processes, table) {
                Ok(()) => return Ok(SocketSource::Netlink),
                Err(err) => {
                    tracing::warn!(pid = plan.root_pid, error = %err, "sock_diag failed; reading /proc/PID/net instead");
                    self.netlink_failed = true;
                    self.netlink = None;
                }
            }
        }
        self.read_procfs(plan, processes, table)?;
        Ok(SocketSource::Procfs)
    }

    fn read_netlink(
        &mut self,
        plan: &Plan,
        processes: &[(i32, u64)],
        table: &mut ConnectionTable,
    ) -> std::io::Result<()> {
        let namespace = netns::namespace_of(plan.root_pid)?;
        if self
            .netlink
            .as_ref()
            .is_none_or(|s| s.namespace() != namespace)
        {
            self.netlink = Some(DiagSocket::open_for(plan.root_pid)?);
        }
        let Some(socket) = self.netlink.as_mut() else {
            return Err(std::io::Error::other("no sock_diag socket"));
        };
        let scratch = &mut self.scratch;
        scratch.listening.clear();
        scratch.unix.clear();
        let all_families = [diag::AF_INET, diag::AF_INET6];
        socket.tcp(
            &all_families,
            diag::LISTEN_STATES,
            &[],
            &mut scratch.listening,
        )?;
        let service = ServiceSockets::new(plan, processes, &self.owners);
        scratch.listening.retain(|l| service.contains(l.inode));
        socket.unix_listeners(&mut scratch.unix)?;
        scratch.unix.retain(|u| service.contains(u.inode));
        scratch.udp.clear();
        let udp_ports = udp_ports(plan);
        if !udp_ports.is_empty() {
            socket.udp(&all_families, &udp_ports, &mut scratch.udp)?;
            scratch.udp.retain(|u| service.contains(u.inode));
        }
        let ports = listener_ports(&scratch.listening);
        let families = listener_families(&scratch.listening);
        // Without the counters nothing tells a change: read every time.
        let key = netstat::tcp_counters(plan.root_pid)
            .ok()
            .map(|counters| TableKey {
                namespace,
                ports: ports.clone(),
                families: families.clone(),
                counters,
                tables: self
                    .owners
                    .fingerprint(super::collect::generation_processes(processes)),
            });
        if key
            .as_ref()
            .is_some_and(|key| table.can_carry_over(key, self.connection_reuse))
        {
            return Ok(());
        }
        table.key = None; // until the dump succeeds
        table.records.clear();
        socket.tcp(
            &families,
            diag::CONNECTION_STATES,
            &ports,
            &mut table.records,
        )?;
        table.mark_read(key);
        Ok(())
    }

    fn read_procfs(
        &mut self,
        plan: &Plan,
        processes: &[(i32, u64)],
        table: &mut ConnectionTable,
    ) -> Result<(), InspectError> {
        let pid = plan.root_pid;
        let scratch = &mut self.scratch;
        scratch.listening.clear();
        scratch.unix.clear();
        table.key = None;
        table.records.clear();
        procfs_source::tcp(pid, &mut table.records).map_err(|e| InspectError::from_proc(pid, e))?;
        let service = ServiceSockets::new(plan, processes, &self.owners);
        scratch.listening.extend(
            table
                .records
                .iter()
                .filter(|s| s.state == diag::TCP_LISTEN && service.contains(s.inode)),
        );
        let ports: IntSet<u16> = listener_ports(&scratch.listening).into_iter().collect();
        // /proc/net/tcp resumes each read() at a position in the hash
        // table, so sockets that close while we read shift the rest and a
        // line can repeat (or be skipped: this path can miss a few under
        // churn). An inode is one socket, so repeats are dropped here.
        let mut seen = IntSet::default();
        table.records.retain(|s| {
            s.state != diag::TCP_LISTEN
                && diag::CONNECTION_STATES & (1 << s.state) != 0
                && ports.contains(&s.local.port())
                && (s.inode == 0 || seen.insert(s.inode))
        });
        procfs_source::unix_listeners(pid, &mut scratch.unix)
            .map_err(|e| InspectError::from_proc(pid, e))?;
        scratch.unix.retain(|u| service.contains(u.inode));
        scratch.udp.clear();
        let udp_ports = udp_ports(plan);
        if !udp_ports.is_empty() {
            procfs_source::udp(pid, &mut scratch.udp)
                .map_err(|e| InspectError::from_proc(pid, e))?;
            let mut seen = IntSet::default();
            scratch.udp.retain(|u| {
                udp_ports.contains(&u.local.port())
                    && u.state == diag::TCP_CLOSE
                    && service.contains(u.inode)
                    && seen.insert(u.inode)
            });
        }
        table.mark_read(None);
        Ok(())
    }
}

/// Tells whether a listening socket is the service's: the supervisor named
/// it, or a watched process holds it.
struct ServiceSockets<'a> {
    known: IntSet<u64>,
    watched: IntSet<i32>,
    owners: &'a OwnerCache,
}

impl<'a> ServiceSockets<'a> {
    fn new(plan: &Plan, processes: &[(i32, u64)], owners: &'a OwnerCache) -> Self {
        ServiceSockets {
            known: plan.known_listeners.iter().map(|l| l.inode).collect(),
            watched: processes.iter().map(|(pid, _)| *pid).collect(),
            owners,
        }
    }

    fn contains(&self, inode: u64) -> bool {
        self.known.contains(&inode)
            || self
                .owners
                .holders(inode)
                .is_some_and(|holders| holders.pids().iter().any(|p| self.watched.contains(p)))
    }
}

/// The address families of the listeners: connections accepted on a
/// listener have its family (a dual-stack `[::]` listener's IPv4 clients
/// are IPv4-mapped IPv6 sockets), so a dump of any other family would walk
/// every socket of the namespace for nothing.
fn listener_families(listening: &[TcpRecord]) -> Vec<u8> {
    let mut families = Vec::new();
    if listening.iter().any(|l| l.local.is_ipv4()) {
        families.push(diag::AF_INET);
    }
    if listening.iter().any(|l| l.local.is_ipv6()) {
        families.push(diag::AF_INET6);
    }
    families
}

/// The ports of the UDP listeners the supervisor named (`udp://…`): every socket of a
/// steered UDP group is on the same port. None for a service without UDP listeners,
/// whose snapshots then never read a UDP table.
fn udp_ports(plan: &Plan) -> Vec<u16> {
    let mut ports: Vec<u16> = plan
        .known_listeners
        .iter()
        .filter_map(|l| l.address.strip_prefix("udp://"))
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn listener_ports(listening: &[TcpRecord]) -> Vec<u16> {
    let mut ports: Vec<u16> = listening.iter().map(|l| l.local.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
