//! Reading the service's sockets: its listeners, then the connections on
//! their ports, by netlink `sock_diag` when possible and from `/proc`
//! otherwise.

use super::collect::Plan;
use super::diag::{self, TcpRecord};
use super::fasthash::IntSet;
use super::netns::{self, DiagSocket};
use super::owners::OwnerCache;
use super::{InspectError, Inspector, SocketSource, procfs_source};

impl Inspector {
    /// Fills the scratch tables with the service's listeners and the
    /// connections on their ports, by netlink when possible.
    pub(super) fn read_sockets(
        &mut self,
        plan: &Plan,
        processes: &[(i32, u64)],
    ) -> Result<SocketSource, InspectError> {
        if self.source == SocketSource::Netlink && !self.netlink_failed {
            match self.read_netlink(plan, processes) {
                Ok(()) => return Ok(SocketSource::Netlink),
                Err(err) => {
                    tracing::warn!(pid = plan.root_pid, error = %err, "sock_diag failed; reading /proc/PID/net instead");
                    self.netlink_failed = true;
                    self.netlink = None;
                }
            }
        }
        self.read_procfs(plan, processes)?;
        Ok(SocketSource::Procfs)
    }

    fn read_netlink(&mut self, plan: &Plan, processes: &[(i32, u64)]) -> std::io::Result<()> {
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
        scratch.connections.clear();
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
        let ports = listener_ports(&scratch.listening);
        let families = listener_families(&scratch.listening);
        socket.tcp(
            &families,
            diag::CONNECTION_STATES,
            &ports,
            &mut scratch.connections,
        )?;
        socket.unix_listeners(&mut scratch.unix)?;
        scratch.unix.retain(|u| service.contains(u.inode));
        Ok(())
    }

    fn read_procfs(&mut self, plan: &Plan, processes: &[(i32, u64)]) -> Result<(), InspectError> {
        let pid = plan.root_pid;
        let scratch = &mut self.scratch;
        scratch.listening.clear();
        scratch.connections.clear();
        scratch.unix.clear();
        procfs_source::tcp(pid, &mut scratch.connections)
            .map_err(|e| InspectError::from_proc(pid, e))?;
        let service = ServiceSockets::new(plan, processes, &self.owners);
        scratch.listening.extend(
            scratch
                .connections
                .iter()
                .filter(|s| s.state == diag::TCP_LISTEN && service.contains(s.inode)),
        );
        let ports: IntSet<u16> = listener_ports(&scratch.listening).into_iter().collect();
        // /proc/net/tcp resumes each read() at a position in the hash
        // table, so sockets that close while we read shift the rest and a
        // line can repeat (or be skipped: this path can miss a few under
        // churn). An inode is one socket, so repeats are dropped here.
        let mut seen = IntSet::default();
        scratch.connections.retain(|s| {
            s.state != diag::TCP_LISTEN
                && diag::CONNECTION_STATES & (1 << s.state) != 0
                && ports.contains(&s.local.port())
                && (s.inode == 0 || seen.insert(s.inode))
        });
        procfs_source::unix_listeners(pid, &mut scratch.unix)
            .map_err(|e| InspectError::from_proc(pid, e))?;
        scratch.unix.retain(|u| service.contains(u.inode));
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

fn listener_ports(listening: &[TcpRecord]) -> Vec<u16> {
    let mut ports: Vec<u16> = listening.iter().map(|l| l.local.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
