//! Assembling a snapshot: processes, then who holds which socket, then the
//! sockets themselves, then the views.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::diag::{self, TcpRecord, UnixListenerRecord};
use super::fasthash::{IntMap, IntSet};
use super::netns;
use super::netstat::{self, ListenCounters};
use super::sockets::ConnectionTable;
use super::stat::{self, ProcStat, read_stat};
use super::tree;
use super::view::{ConnectionView, GenerationView, KernelCounters, ListenerView, Snapshot};
use super::{InspectError, Inspector, MAX_CONNECTIONS_LISTED};
use crate::proto::{self, GenerationState};

/// A generation to look at: its main process and what we know of it. A generation of
/// several instances (`instances`) is one root per instance, each its own tree.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub generation: u64,
    /// The instance, for a generation of several.
    pub instance: Option<u32>,
    pub pid: i32,
    pub state: String,
    /// From our supervisor; for a foreign tree the age comes from the
    /// process's start time instead.
    pub started_unix_ms: Option<u64>,
}

/// A listener the supervisor told us about.
#[derive(Debug, Clone)]
pub(crate) struct KnownListener {
    pub inode: u64,
    pub address: String,
}

/// What one snapshot is about.
#[derive(Debug)]
pub(crate) struct Plan {
    pub service: String,
    /// The supervisor (native) or the tree's root: it may hold listeners
    /// itself, and its network namespace is the service's.
    pub root_pid: i32,
    pub roots: Vec<Root>,
    pub known_listeners: Vec<KnownListener>,
}

/// What the next snapshot of the same service compares with.
#[derive(Debug, Default)]
pub(crate) struct Previous {
    at: Option<Instant>,
    /// CPU ticks per process, by pid and start time.
    ticks: HashMap<(i32, u64), u64>,
    /// Generations seen, by number and main pid.
    generations: HashSet<(u64, i32)>,
    /// The namespace the counters were read in, and the counters.
    counters: Option<(u64, ListenCounters)>,
    /// Socket inodes no process of the service held after a full re-read.
    orphans: IntSet<u64>,
    /// The connections on the service's ports, as last read.
    connections: ConnectionTable,
    /// Which connections each generation held, by index into
    /// `connections`, and the generations' pids they were sorted by.
    attribution: Attribution,
}

#[derive(Debug, Default)]
struct Attribution {
    trees: Vec<Vec<i32>>,
    per_generation: Vec<Vec<usize>>,
}

/// Buffers reused between snapshots.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(super) listening: Vec<TcpRecord>,
    pub(super) unix: Vec<UnixListenerRecord>,
    /// The service's UDP sockets (unconnected, on the ports of its UDP listeners).
    pub(super) udp: Vec<TcpRecord>,
}

/// Generations of a native status: every one that has not exited, oldest
/// first; a generation of several instances as one root per live instance.
pub(crate) fn native_roots(status: &proto::Status) -> Vec<Root> {
    let live = |state: GenerationState, exit: Option<proto::ExitInfo>| {
        state != GenerationState::Exited && exit.is_none()
    };
    let mut roots: Vec<Root> = Vec::new();
    for info in &status.generations {
        if !live(info.state, info.exit) {
            continue;
        }
        if info.instances.len() > 1 {
            roots.extend(
                info.instances
                    .iter()
                    .filter(|i| live(i.state, i.exit))
                    .map(|i| Root {
                        generation: info.generation,
                        instance: Some(i.instance),
                        pid: i.pid,
                        state: i.state.name().to_owned(),
                        started_unix_ms: Some(i.started_unix_ms),
                    }),
            );
        } else {
            roots.push(Root {
                generation: info.generation,
                instance: None,
                pid: info.pid,
                state: info.state.name().to_owned(),
                started_unix_ms: Some(info.started_unix_ms),
            });
        }
    }
    roots.sort_by_key(|root| (root.generation, root.instance));
    roots
}

/// One generation's processes as read in this snapshot.
struct Tree {
    root: Root,
    stats: Vec<ProcStat>,
}

impl Inspector {
    pub(super) fn take(&mut self, plan: Plan) -> Result<Snapshot, InspectError> {
        let taken_unix_ms = proto::unix_ms(SystemTime::now());
        let now = Instant::now();
        let root =
            read_stat(plan.root_pid).map_err(|e| InspectError::from_proc(plan.root_pid, e))?;
        if root.zombie {
            return Err(InspectError::Gone { pid: plan.root_pid });
        }

        let trees: Vec<Tree> = plan
            .roots
            .iter()
            .map(|gen_root| Tree {
                root: gen_root.clone(),
                stats: tree::tree_stats(gen_root.pid),
            })
            .filter(|tree| !tree.stats.is_empty())
            .collect();
        let mut processes: Vec<(i32, u64)> = vec![(root.pid, root.start_ticks)];
        let mut generation_of: IntMap<i32, usize> = IntMap::default();
        for (index, tree) in trees.iter().enumerate() {
            for stat in &tree.stats {
                processes.push((stat.pid, stat.start_ticks));
                generation_of.entry(stat.pid).or_insert(index);
            }
        }

        self.owners.begin();
        self.owners.refresh(&processes);
        let mut previous = self.previous.remove(&plan.service).unwrap_or_default();
        let source = match self.read_sockets(&plan, &processes, &mut previous.connections) {
            Ok(source) => source,
            Err(err) => {
                // Keep what the next snapshot compares with (but not a
                // half-read table).
                previous.connections = ConnectionTable::default();
                self.previous.insert(plan.service, previous);
                return Err(err);
            }
        };

        let trees_pids: Vec<Vec<i32>> = trees
            .iter()
            .map(|t| t.stats.iter().map(|s| s.pid).collect())
            .collect();
        let records = &previous.connections.records;
        let (per_generation, unclaimed) =
            if !previous.connections.fresh && previous.attribution.trees == trees_pids {
                // The same connections and the same fd tables: the same
                // attribution, without a hash lookup per connection.
                (
                    std::mem::take(&mut previous.attribution.per_generation),
                    std::mem::take(&mut previous.orphans),
                )
            } else {
                let mut per_generation: Vec<Vec<usize>> = vec![Vec::new(); trees.len()];
                let mut unclaimed = IntSet::default();
                attribute(
                    records,
                    &self.owners,
                    &generation_of,
                    &mut per_generation,
                    &mut unclaimed,
                );
                if !unclaimed.is_subset(&previous.orphans) && self.owners.reread_stale(&processes) {
                    // Something was accepted (or passed in) since a table was
                    // read: attribute again with every table fresh. What is
                    // still unclaimed belongs to nobody we watch, and is
                    // remembered so it does not cause a re-read at every
                    // refresh.
                    per_generation.iter_mut().for_each(Vec::clear);
                    unclaimed.clear();
                    attribute(
                        records,
                        &self.owners,
                        &generation_of,
                        &mut per_generation,
                        &mut unclaimed,
                    );
                }
                (per_generation, unclaimed)
            };
        let tables_read = self.owners.fingerprint(generation_processes(&processes));

        let listeners = self.listener_views(&plan, &trees);
        let listener_inodes: HashSet<u64> = listeners.iter().map(|l| l.inode).collect();
        let wall = previous.at.map(|at| now.duration_since(at).as_secs_f64());
        let hz = stat::ticks_per_second();
        let page = stat::page_size();
        let uptime_ticks = if trees.iter().any(|t| t.root.started_unix_ms.is_none()) {
            uptime_ticks(hz)
        } else {
            None
        };

        let generations = trees
            .iter()
            .zip(&per_generation)
            .map(|(tree, connections)| {
                let seen = previous
                    .generations
                    .contains(&(tree.root.generation, tree.root.pid));
                let ticks: u64 = tree
                    .stats
                    .iter()
                    .map(|s| {
                        let before = previous.ticks.get(&(s.pid, s.start_ticks)).copied();
                        s.cpu_ticks.saturating_sub(before.unwrap_or(0))
                    })
                    .sum();
                let cpu_percent = match wall {
                    Some(wall) if seen && wall > 0.0 => {
                        Some(ticks as f64 / hz as f64 / wall * 100.0)
                    }
                    _ => None,
                };
                let age_ms = match (tree.root.started_unix_ms, uptime_ticks) {
                    (Some(started), _) => taken_unix_ms.saturating_sub(started),
                    (None, Some(uptime)) => {
                        let main_start = tree.stats.first().map_or(0, |s| s.start_ticks);
                        uptime.saturating_sub(main_start) * 1000 / hz
                    }
                    (None, None) => 0,
                };
                // Per listener rather than per socket held: a worker may
                // hold 100k sockets, a service a handful of listeners.
                let mut held: Vec<u64> = listener_inodes
                    .iter()
                    .copied()
                    .filter(|&inode| tree.stats.iter().any(|s| self.owners.holds(s.pid, inode)))
                    .collect();
                held.sort_unstable();
                held.dedup();
                let mut listed: Vec<ConnectionView> = connections
                    .iter()
                    .take(MAX_CONNECTIONS_LISTED)
                    .map(|&index| connection_view(&records[index]))
                    .collect();
                listed.sort_by(|a, b| a.peer.cmp(&b.peer));
                GenerationView {
                    generation: tree.root.generation,
                    instance: tree.root.instance,
                    state: tree.root.state.clone(),
                    pids: tree.stats.iter().map(|s| s.pid).collect(),
                    main_pid: tree.root.pid,
                    age_ms,
                    cpu_percent,
                    rss_bytes: tree.stats.iter().map(|s| s.rss_pages * page).sum(),
                    fds: tree.stats.iter().map(|s| self.owners.fd_count(s.pid)).sum(),
                    listener_inodes: held,
                    connections: listed,
                    connection_count: connections.len(),
                    intercept: None,
                    output_lines: None,
                }
            })
            .collect();

        let kernel = self.kernel_counters(plan.root_pid, previous.counters);
        let connections_read_unix_ms = previous.connections.read_unix_ms;
        previous.connections.settle(tables_read);
        self.previous.insert(
            plan.service.clone(),
            Previous {
                at: Some(now),
                ticks: trees
                    .iter()
                    .flat_map(|t| &t.stats)
                    .map(|s| ((s.pid, s.start_ticks), s.cpu_ticks))
                    .collect(),
                generations: trees
                    .iter()
                    .map(|t| (t.root.generation, t.root.pid))
                    .collect(),
                counters: kernel.1,
                orphans: unclaimed,
                connections: previous.connections,
                attribution: Attribution {
                    trees: trees_pids,
                    per_generation,
                },
            },
        );
        Ok(Snapshot {
            service: plan.service,
            taken_unix_ms,
            source: source.as_str().to_owned(),
            connections_read_unix_ms,
            generations,
            listeners,
            kernel: kernel.0,
            intercept_binds: false,
            failing: None,
            supervisor: None,
            bake: None,
        })
    }

    fn listener_views(&self, plan: &Plan, trees: &[Tree]) -> Vec<ListenerView> {
        let held_by = |inode: u64| -> Vec<u64> {
            let mut generations: Vec<u64> = trees
                .iter()
                .filter(|t| t.stats.iter().any(|s| self.owners.holds(s.pid, inode)))
                .map(|t| t.root.generation)
                .collect();
            // The instances of one generation hold the same listeners: one entry each.
            generations.dedup();
            generations
        };
        let named = |inode: u64| plan.known_listeners.iter().any(|k| k.inode == inode);
        let mut views: Vec<ListenerView> = self
            .scratch
            .listening
            .iter()
            .map(|l| ListenerView {
                inode: l.inode,
                address: l.local.to_string(),
                accept_queue: l.rqueue,
                backlog: l.wqueue,
                held_by: held_by(l.inode),
                new_connections: named(l.inode),
            })
            .chain(self.scratch.unix.iter().map(|u| ListenerView {
                inode: u.inode,
                address: u.path.clone(),
                accept_queue: u.accept_queue,
                backlog: u.backlog,
                held_by: held_by(u.inode),
                new_connections: named(u.inode),
            }))
            .chain(self.scratch.udp.iter().map(|u| ListenerView {
                inode: u.inode,
                address: crate::listen::ListenAddr::Udp(u.local).to_string(),
                accept_queue: u.rqueue,
                backlog: 0,
                held_by: held_by(u.inode),
                new_connections: named(u.inode),
            }))
            .collect();
        // Listeners the supervisor named that no table showed (one closed
        // since): listed with what it told us.
        for known in &plan.known_listeners {
            if !views.iter().any(|v| v.inode == known.inode) {
                views.push(ListenerView {
                    inode: known.inode,
                    address: known.address.clone(),
                    accept_queue: 0,
                    backlog: 0,
                    held_by: held_by(known.inode),
                    new_connections: true,
                });
            }
        }
        views.sort_by(|a, b| a.address.cmp(&b.address).then(a.inode.cmp(&b.inode)));
        views
    }

    fn kernel_counters(
        &self,
        pid: i32,
        previous: Option<(u64, ListenCounters)>,
    ) -> (KernelCounters, Option<(u64, ListenCounters)>) {
        // Counters are a convenience: a namespace whose netstat cannot be
        // read shows zeros rather than failing the snapshot.
        let (Ok(namespace), Ok(now)) = (netns::namespace_of(pid), netstat::listen_counters(pid))
        else {
            return (KernelCounters::default(), None);
        };
        let before = previous.filter(|(ns, _)| *ns == namespace).map(|(_, c)| c);
        (
            KernelCounters {
                listen_overflows: now.overflows,
                listen_drops: now.drops,
                overflows_delta: before.map(|b| now.overflows.saturating_sub(b.overflows)),
                drops_delta: before.map(|b| now.drops.saturating_sub(b.drops)),
            },
            Some((namespace, now)),
        )
    }
}

/// The processes of the generations: all but the root, which comes first.
/// Only they hold connections that count, and the root (our supervisor)
/// opens and closes a control connection for every status request, which
/// must not make every refresh read the connections again.
pub(super) fn generation_processes(processes: &[(i32, u64)]) -> &[(i32, u64)] {
    processes.get(1..).unwrap_or_default()
}

/// Sorts connections into the generations holding them (by index into
/// `connections`), and collects the inodes nobody is known to hold.
fn attribute(
    connections: &[TcpRecord],
    owners: &super::owners::OwnerCache,
    generation_of: &IntMap<i32, usize>,
    per_generation: &mut [Vec<usize>],
    unclaimed: &mut IntSet<u64>,
) {
    for (index, connection) in connections.iter().enumerate() {
        if connection.inode == 0 {
            continue; // no file refers to it: nobody holds it
        }
        let Some(holders) = owners.holders(connection.inode) else {
            unclaimed.insert(connection.inode);
            continue;
        };
        let mut last = None;
        for pid in holders.pids() {
            if let Some(&generation) = generation_of.get(pid) {
                // A connection shared by two processes of one generation
                // counts once.
                if last != Some(generation) {
                    per_generation[generation].push(index);
                    last = Some(generation);
                }
            }
        }
    }
}

fn connection_view(record: &TcpRecord) -> ConnectionView {
    ConnectionView {
        local: show(record.local),
        peer: show(record.peer),
        state: diag::state_name(record.state).to_owned(),
        send_queue: record.wqueue,
        recv_queue: record.rqueue,
        inode: record.inode,
    }
}

fn show(address: SocketAddr) -> String {
    address.to_string()
}

/// Seconds since boot as clock ticks, from `/proc/uptime`.
fn uptime_ticks(hz: u64) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((seconds * hz as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GenerationInfo, InstanceInfo, RestartCounters, Status};

    fn instance(instance: u32, pid: i32, exit: Option<proto::ExitInfo>) -> InstanceInfo {
        InstanceInfo {
            instance,
            pid,
            state: if exit.is_some() {
                GenerationState::Exited
            } else {
                GenerationState::Active
            },
            started_unix_ms: 1_000 + u64::from(instance),
            ready: exit.is_none(),
            respawns: 0,
            exit,
            output_lines: None,
        }
    }

    fn generation(
        generation: u64,
        state: GenerationState,
        instances: Vec<InstanceInfo>,
    ) -> GenerationInfo {
        GenerationInfo {
            generation,
            pid: instances.first().map_or(0, |i| i.pid),
            state,
            started_unix_ms: 1_000,
            exit: None,
            intercept: None,
            output_lines: None,
            instances,
        }
    }

    #[test]
    fn a_generation_of_several_instances_is_a_root_per_live_instance() {
        let status = Status {
            service: "api".into(),
            supervisor_pid: 10,
            started_unix_ms: 0,
            config_path: None,
            active_generation: Some(5),
            restart_in_progress: None,
            generations: vec![
                generation(
                    5,
                    GenerationState::Active,
                    vec![
                        instance(0, 500, None),
                        instance(1, 501, Some(proto::ExitInfo::Code { code: 1 })),
                        instance(2, 502, None),
                    ],
                ),
                generation(4, GenerationState::Standby, vec![instance(0, 400, None)]),
            ],
            listeners: Vec::new(),
            sockets: Vec::new(),
            restarts: RestartCounters::default(),
            last_restart: None,
            containment: None,
            intercept_binds: false,
            failing: None,
            supervisor: None,
            log_lines: None,
            instances: Some(3),
            capacity: Some(3),
            bake: None,
        };
        let roots: Vec<(u64, Option<u32>, i32, String)> = native_roots(&status)
            .into_iter()
            .map(|r| (r.generation, r.instance, r.pid, r.state))
            .collect();
        assert_eq!(
            roots,
            [
                (4, None, 400, "standby".to_owned()),
                (5, Some(0), 500, "active".to_owned()),
                (5, Some(2), 502, "active".to_owned()),
            ]
        );
    }
}
