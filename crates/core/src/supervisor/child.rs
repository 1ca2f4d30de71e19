//! The seam between the supervisor and the processes it runs.
//!
//! [`Children`] starts a generation; [`ChildProcess`] is one started generation: its pid,
//! its exit, its signals, its readiness. The owner and the restarts see nothing else of a
//! process, so the real one ([`super::process`]: clone, pidfds, cgroups, /proc readiness)
//! and the tests' fake (`tests/fake.rs`, no fork, no sockets) are interchangeable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::output::OutputLog;
use crate::config::ServiceConfig;
use crate::handoff::intercept::InterceptCounts;
use crate::listen::Listener;
use crate::proto::ExitInfo;
use crate::ready::ReadyCheck;
use crate::signal::Signal;

pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a generation is started with.
pub(super) struct SpawnRequest<'a> {
    pub generation: u64,
    /// Which of the generation's `instances` it is, and how many times that instance was
    /// started before.
    pub instance: u32,
    pub respawns: u32,
    pub config: &'a ServiceConfig,
    pub listeners: &'a [Listener],
    /// Whether to return only once the program is exec'd, so that a program that cannot
    /// start is an error at once. A restart does not wait: a failure before exec shows up
    /// as the generation's early exit, and [`ChildProcess::exec_failure`] then says why.
    pub wait_exec: bool,
    /// Becomes `Some` once the owner has recorded the main process's exit.
    pub exited: watch::Receiver<Option<ExitInfo>>,
    /// Whether to keep the last lines it prints ([`ChildProcess::output`]): its output
    /// then goes through the supervisor, which copies it to its own.
    pub keep_output: bool,
}

/// Starts generations.
pub(super) trait Children: Send + Sync + 'static {
    /// Starts one generation; the error says why it could not.
    fn spawn(&self, request: SpawnRequest<'_>) -> Result<Arc<dyn ChildProcess>, String>;

    /// How the generations' processes are kept together, for `status`.
    fn containment(&self) -> String;
}

/// One started generation.
pub(super) trait ChildProcess: Send + Sync + std::fmt::Debug + 'static {
    fn pid(&self) -> i32;

    /// When the process was created (before its program was exec'd, when not waited for).
    fn spawned_at(&self) -> Instant;

    /// Sends `signal` to the main process.
    fn signal(&self, signal: Signal) -> std::io::Result<()>;

    /// Kills the whole generation: the drain deadline passed.
    fn kill(&self);

    /// Returns the main process's exit status once it has exited.
    fn wait_exit(&self) -> BoxFuture<'_, ExitInfo>;

    /// After the exit: ends whatever the generation left behind. `live` are the main pids
    /// of the generations still running, whose process groups must be spared. Once it
    /// returns, no process of the generation holds a file: its sockets may close.
    fn end_leftovers(&self, live: Vec<i32>) -> BoxFuture<'_, ()>;

    /// After [`Self::end_leftovers`]: reaps the main process (which may take a while; see
    /// `process::wait_exit`).
    fn reap(&self) -> BoxFuture<'_, ()>;

    /// Returns once every check has passed (with the evidence), or one can never pass.
    /// Unbounded: the caller races it against the timeout and the exit.
    fn wait_ready<'a>(&'a self, checks: &'a [ReadyCheck]) -> BoxFuture<'a, Result<String, String>>;

    /// For a readiness timeout: what the checks saw last, to append to the reason.
    fn not_ready_detail(&self, checks: &[ReadyCheck]) -> String;

    /// Why the process could not reach its program, asked once it has exited.
    fn exec_failure(&self) -> Option<String>;

    /// Gives a generation that started at the idle priority its normal priority back.
    fn end_idle_start(&self);

    /// Frees what the generation needed only while it ran (its notify socket, the
    /// interception of its binds).
    fn release(&self);

    /// With `intercept_binds`: what the interception of its binds answered, counted. The
    /// counts stay after [`Self::release`]; `None` when its binds are not intercepted.
    fn intercept_counts(&self) -> Option<Arc<InterceptCounts>>;

    /// The last lines it printed, when they are kept (see [`SpawnRequest::keep_output`]).
    fn output(&self) -> Option<Arc<OutputLog>>;

    /// Whether a TCP connection on one of `ports` that the generation's processes hold
    /// has bytes they have not read: a request that is not seen yet.
    fn unread_input(&self, ports: Vec<u16>) -> BoxFuture<'_, bool>;

    /// What a `reexec` hands to the next binary so that it can go on watching the
    /// generation (see [`Carried`]). Nothing, by default.
    fn carried(&self) -> Carried {
        Carried::default()
    }
}

/// What the supervisor holds for a running generation besides its pid: its cgroup, and
/// the fds a `reexec` keeps open across `execve` (the seccomp listener that answers its
/// binds, the read ends of its output pipes).
#[derive(Debug, Clone, Default)]
pub(super) struct Carried {
    /// The cgroup, as `/proc/PID/cgroup` names it.
    pub cgroup: Option<String>,
    pub intercept: Option<i32>,
    /// stdout's and stderr's pipes, when its output goes through the supervisor.
    pub output: [Option<i32>; 2],
    /// Those pipes' inodes.
    pub output_inodes: [Option<u64>; 2],
    pub prefix: String,
    /// Whether its last lines are kept.
    pub keep_output: bool,
    /// How many.
    pub log_lines: u32,
}
