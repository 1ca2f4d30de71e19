//! The snapshot's shape: plain data, serializable, so `zdctl status --json`
//! can embed it and `zdctl top` can draw it (and tests can build one by
//! hand).

use serde::{Deserialize, Serialize};

/// One look at a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub service: String,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Which path the socket tables came from: `"netlink"` or `"procfs"`.
    pub source: String,
    /// When the connections (each generation's `connections` and
    /// `connection_count`) were read from the kernel, in milliseconds since
    /// the Unix epoch. Equal to or a little after `taken_unix_ms` when this
    /// snapshot read them; earlier when it carried over an earlier
    /// snapshot's because nothing signalled a change (at most 10 s earlier
    /// by default, see `Inspector::set_connection_reuse`): the count is
    /// then still current as far as the namespace's TCP counters and the
    /// fd tables tell, the states and queues are as of that read.
    #[serde(default)]
    pub connections_read_unix_ms: u64,
    /// Live generations, oldest first.
    pub generations: Vec<GenerationView>,
    /// Every listening socket of the service, ordered by address.
    pub listeners: Vec<ListenerView>,
    pub kernel: KernelCounters,
    /// Whether our supervisor runs the service with `intercept_binds` (the status's
    /// `intercept_binds`). False for a foreign tree.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intercept_binds: bool,
    /// Whether our supervisor gave up respawning the service (the status's `failing`):
    /// `top` shows why. `None` for a foreign tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<crate::proto::FailingInfo>,
    /// Our supervisor's version and re-executions (the status's `supervisor`). `None` for
    /// a foreign tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<crate::proto::SupervisorInfo>,
    /// The bake window of a restart, while it runs, as the status tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<crate::proto::BakeInfo>,
}

/// One generation: a process tree started together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationView {
    pub generation: u64,
    /// The instance, for a generation of several (`instances`): each instance is a view
    /// of its own, its process and what it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// `starting`, `active`, `draining` for our supervisor's generations;
    /// `active` (the newest) or `old` for a foreign tree.
    pub state: String,
    /// The generation's main process first, then its descendants.
    pub pids: Vec<i32>,
    pub main_pid: i32,
    /// Milliseconds since the generation started.
    pub age_ms: u64,
    /// CPU time of the whole tree between the previous snapshot and this
    /// one, in percent of one CPU (above 100 when it uses several). `None`
    /// on the first snapshot that sees the generation.
    pub cpu_percent: Option<f64>,
    /// Resident memory summed over the tree (shared pages count once per
    /// process, as `ps` would show them).
    pub rss_bytes: u64,
    /// Open file descriptors summed over the tree.
    pub fds: usize,
    /// Inodes of the service's listeners that this generation holds, sorted.
    pub listener_inodes: Vec<u64>,
    /// At most [`MAX_CONNECTIONS_LISTED`](super::MAX_CONNECTIONS_LISTED) of
    /// its connections on the service's ports, ordered by peer.
    pub connections: Vec<ConnectionView>,
    /// How many connections it has: all of them, even when the list is cut
    /// (as of `Snapshot::connections_read_unix_ms`).
    pub connection_count: usize,
    /// What the interception of its binds answered, as the status tells it: only for
    /// a generation our supervisor started with `intercept_binds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<crate::proto::InterceptInfo>,
    /// How many of its output lines our supervisor keeps now (the status's
    /// `output_lines`). `None` when its output is not kept, and for a foreign tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lines: Option<u64>,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerView {
    pub inode: u64,
    /// `127.0.0.1:8080`, `[::1]:8080`, `udp://127.0.0.1:5353` or a unix
    /// socket's path (`@name` for an abstract one).
    pub address: String,
    /// Connections that completed the handshake and wait to be accepted.
    /// 0 for a unix listener read from `/proc` (it does not show it). For a
    /// UDP socket, the bytes of receive memory its queued datagrams hold
    /// (0: none waits).
    pub accept_queue: u32,
    /// The most that may wait (the `listen()` backlog, capped by
    /// `net.core.somaxconn`). Only netlink tells it: 0 when read from
    /// `/proc`, and for a UDP socket, which has no backlog.
    pub backlog: u32,
    /// Generations holding it, oldest first. The same inode in two
    /// generations is the shared handoff at work; under the steered handoff
    /// each generation holds a socket of its own on the same address.
    pub held_by: Vec<u64>,
    /// Whether new connections to its address come to it: a listener the
    /// supervisor names (a shared one, or the steered-to socket of a steered
    /// group). `false` for another socket of a steered group, whose queue
    /// only empties.
    #[serde(default)]
    pub new_connections: bool,
}

/// One connection accepted on a listener of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub local: String,
    pub peer: String,
    /// `established`, `close_wait`, `fin_wait1`, … (the kernel's TCP state).
    pub state: String,
    /// Bytes sent and not yet acknowledged by the peer.
    pub send_queue: u32,
    /// Bytes received and not yet read by the application.
    pub recv_queue: u32,
    pub inode: u64,
}

/// The network namespace's listen-queue counters (`TcpExt` of
/// `/proc/PID/net/netstat`). They count for every socket of the namespace,
/// not only the service's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounters {
    /// Connections that completed the handshake while the accept queue was
    /// full.
    pub listen_overflows: u64,
    /// Connections dropped at the listener for any reason (overflows
    /// included).
    pub listen_drops: u64,
    /// Change since the previous snapshot of the service; `None` on the
    /// first.
    pub overflows_delta: Option<u64>,
    pub drops_delta: Option<u64>,
}
