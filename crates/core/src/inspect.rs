//! The inspector: a snapshot of a service's generations, their processes,
//! listeners and in-flight connections, for `zdctl top` and
//! `zdctl status --json`.
//!
//! # How it works
//!
//! 1. **Generations.** For our own supervisor they come from its `status`
//!    answer; for anything else (a foreign supervisor, `--pid PID`) they are
//!    the root process's child subtrees, numbered in order of start time and
//!    kept stable between snapshots (`inspect/tree.rs`).
//! 2. **Processes.** Every pid of every generation's tree is read once from
//!    `/proc/PID/stat` (CPU ticks, RSS, start time). CPU % needs two
//!    snapshots: the ticks spent between them over the wall time between
//!    them, so the first snapshot of a generation has none.
//! 3. **Who owns which socket.** A socket is named by its inode; only the
//!    `/proc/PID/fd` links say which process holds it, and reading them
//!    costs one `readlink` per fd, far too much for a server with 100k
//!    connections every second. So each process's socket inodes are cached,
//!    keyed by pid and start time, and re-read only when the process's fd
//!    count changes or a socket turns up whose inode no cached table knows
//!    (`inspect/owners.rs` says why those two signals are enough).
//! 4. **Sockets.** Read from the service's own network namespace. The fast
//!    path asks the kernel over netlink `sock_diag` (what `ss` uses), with
//!    the filtering done in the kernel: first the listening sockets, then
//!    only connections whose local port is one of the service's listener
//!    ports (`inspect/diag.rs`). The fallback reads `/proc/PID/net/tcp{,6}` and
//!    `/proc/PID/net/unix` whole and filters here. Connections cost the
//!    kernel about a microsecond each to report, so on the netlink path a
//!    snapshot carries over the connections an earlier one read while the
//!    namespace's TCP counters and the processes' fd tables show no change,
//!    for at most [`DEFAULT_CONNECTION_REUSE`] (`inspect/sockets.rs`).
//! 5. **Kernel counters.** `ListenOverflows` and `ListenDrops` from the
//!    `TcpExt` lines of `/proc/PID/net/netstat`, and their change since the
//!    previous snapshot of the same service.
//!
//! Nothing here prints; `tracing` records why the netlink path was given up
//! when it is.

mod accept_queue;
mod collect;
pub(crate) mod diag;
mod fasthash;
pub(crate) mod netns;
mod netstat;
mod owners;
mod procfs_source;
mod sockets;
mod stat;
mod tree;
mod view;

use std::collections::HashMap;
use std::io;
use std::time::Duration;

pub use accept_queue::AcceptQueue;
pub use view::{ConnectionView, GenerationView, KernelCounters, ListenerView, Snapshot};

use crate::proc::ProcError;
use crate::proto;

/// At most this many connections are listed per generation; the count stays
/// exact. A snapshot of a server with 100k connections must stay small
/// enough to send over the control socket and draw.
pub const MAX_CONNECTIONS_LISTED: usize = 200;

/// How long a snapshot may carry over the connections an earlier snapshot
/// of the same service read, while nothing signals a change; see
/// [`Inspector::set_connection_reuse`].
pub const DEFAULT_CONNECTION_REUSE: Duration = Duration::from_secs(10);

/// Where socket tables are read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SocketSource {
    /// netlink `sock_diag`, filtered in the kernel; falls back to `Procfs`
    /// when netlink is not available (no `inet_diag` in the kernel, or the
    /// service's network namespace cannot be entered).
    #[default]
    Netlink,
    /// `/proc/PID/net/tcp`, `tcp6` and `unix`, read whole.
    Procfs,
}

impl SocketSource {
    /// The name used in [`Snapshot::source`].
    pub fn as_str(self) -> &'static str {
        match self {
            SocketSource::Netlink => "netlink",
            SocketSource::Procfs => "procfs",
        }
    }
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The root of the tree (the supervisor, or the `--pid` process) does
    /// not exist.
    #[error("process {pid} is gone")]
    Gone { pid: i32 },

    /// `/proc` of a process could not be read (most often a permission the
    /// caller lacks).
    #[error("cannot inspect process {pid}")]
    Proc {
        pid: i32,
        #[source]
        source: ProcError,
    },

    /// The socket tables of the network namespace of `pid` could not be
    /// read by either path.
    #[error("cannot read the sockets of process {pid}'s network namespace")]
    Sockets {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

impl InspectError {
    fn from_proc(pid: i32, source: ProcError) -> Self {
        match source {
            ProcError::Gone { pid } => InspectError::Gone { pid },
            source => InspectError::Proc { pid, source },
        }
    }
}

/// Takes snapshots, keeping what makes the next one cheaper and what a
/// rate needs (CPU ticks, kernel counters) between them.
///
/// One inspector may watch several services; keep it alive between
/// refreshes, since a fresh one re-reads every fd table and shows no CPU %.
#[derive(Debug)]
pub struct Inspector {
    source: SocketSource,
    /// How long connections read by one snapshot may be carried over.
    connection_reuse: Duration,
    /// Set once netlink failed, so that every later snapshot does not pay
    /// for (and log) the same failure.
    netlink_failed: bool,
    owners: owners::OwnerCache,
    netlink: Option<netns::DiagSocket>,
    generations: tree::GenerationNumbers,
    /// Per service: the previous snapshot's instant, CPU ticks per process
    /// (by pid and start time) and kernel counters.
    previous: HashMap<String, collect::Previous>,
    /// Kept across snapshots so the steady state allocates little.
    scratch: collect::Scratch,
}

impl Default for Inspector {
    fn default() -> Self {
        Inspector::new(SocketSource::default())
    }
}

impl Inspector {
    pub fn new(source: SocketSource) -> Self {
        Inspector {
            source,
            connection_reuse: DEFAULT_CONNECTION_REUSE,
            netlink_failed: false,
            owners: owners::OwnerCache::default(),
            netlink: None,
            generations: tree::GenerationNumbers::default(),
            previous: HashMap::new(),
            scratch: collect::Scratch::default(),
        }
    }

    /// How long a snapshot may carry over the connections (their count per
    /// generation, their states and queues) that an earlier snapshot of the
    /// same service read from the kernel, as long as the namespace's TCP
    /// counters and the processes' fd tables show no change
    /// ([`DEFAULT_CONNECTION_REUSE`] unless set). [`Snapshot::connections_read_unix_ms`]
    /// says when they were read. `Duration::ZERO` reads them at every
    /// snapshot. Only the netlink path carries them over.
    pub fn set_connection_reuse(&mut self, limit: Duration) {
        self.connection_reuse = limit;
    }

    /// A snapshot of a service run by our own supervisor: generations and
    /// listeners come from its `status` answer.
    pub fn snapshot_native(&mut self, status: &proto::Status) -> Result<Snapshot, InspectError> {
        let roots = collect::native_roots(status);
        let listeners = status
            .listeners
            .iter()
            .map(|listener| collect::KnownListener {
                inode: listener.inode,
                address: listener.address.clone(),
            })
            .collect();
        let mut snapshot = self.take(collect::Plan {
            service: status.service.clone(),
            root_pid: status.supervisor_pid,
            roots,
            known_listeners: listeners,
        })?;
        // The supervisor's own listening sockets that are not the service's (its control
        // socket) are not part of the service; a listener a generation opened itself is.
        snapshot.listeners.retain(|view| {
            !view.held_by.is_empty() || status.listeners.iter().any(|l| l.inode == view.inode)
        });
        // What the supervisor counted of each generation's binds and keeps of its output:
        // /proc does not show it.
        snapshot.intercept_binds = status.intercept_binds;
        snapshot.failing = status.failing.clone();
        snapshot.supervisor = status.supervisor.clone();
        snapshot.bake = status.bake.clone();
        for view in &mut snapshot.generations {
            let info = status
                .generations
                .iter()
                .find(|g| g.generation == view.generation);
            view.intercept = info.and_then(|g| g.intercept.clone());
            view.output_lines = match view.instance {
                Some(n) => info
                    .and_then(|g| g.instances.iter().find(|i| i.instance == n))
                    .and_then(|i| i.output_lines),
                None => info.and_then(|g| g.output_lines),
            };
        }
        Ok(snapshot)
    }

    /// A snapshot of any process tree: generations are the child subtrees
    /// of `root_pid` (a foreign supervisor, or the process given with
    /// `--pid`), oldest first. A root without children is itself the only
    /// generation.
    pub fn snapshot_tree(&mut self, name: &str, root_pid: i32) -> Result<Snapshot, InspectError> {
        let roots = self.generations.roots_of(root_pid)?;
        self.take(collect::Plan {
            service: name.to_owned(),
            root_pid,
            roots,
            known_listeners: Vec::new(),
        })
    }
}

/// A sock_diag socket in the caller's own network namespace, for the supervisor's own
/// looks at its connections.
pub(crate) fn diag_socket() -> std::io::Result<netns::DiagSocket> {
    netns::DiagSocket::open_here()
}
