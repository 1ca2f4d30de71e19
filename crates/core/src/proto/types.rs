//! Messages of the control protocol. The JSON shapes are documented in the README's
//! "Control protocol" section; change both together.

use serde::{Deserialize, Serialize};

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// The service, its generations, listeners and counters.
    Status,
    /// Start a new generation, wait until it is ready, promote it and drain the old one.
    Restart {
        /// Overrides the readiness timeout of the service for this restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ready_timeout_ms: Option<u64>,
        /// When a restart is already running, follow it instead of answering `busy`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        attach: bool,
        /// Skip the service's `bake` window: drain the old generation as soon as the new
        /// one is ready.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_bake: bool,
    },
    /// During a restart's `bake` window: drain the new generation and keep the old one.
    /// Answered once the old generation is the only one left.
    Revert,
    /// Stop every generation gracefully and exit the supervisor.
    Stop,
    /// Send a signal (a name such as `USR1` or a number) to the active generation.
    Signal { signal: String },
    /// Stream every event of the service until the client disconnects.
    Watch,
    /// Replace the supervisor's program in place (same pid, same listeners, same
    /// generations) with the zdctl binary at `binary`, or with the one installed where the
    /// supervisor was started from. Answered once the new binary has proved it can take
    /// over, just before it does; the client then waits for it to answer `status`.
    Reexec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
    },
    /// The lines the generations printed (of `generation` only, when given), oldest first,
    /// numbered at most `until` when given. Without `after`: the last `lines` (100 by
    /// default). With `after`: the first `lines` numbered above it (as many as fit without
    /// it). An answer that would be too long holds the oldest part and says `more`: ask
    /// again after its `last_seq`, until its `newest`, to read exactly the rest.
    Logs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u32>,
    },
}

/// A request line: `{"v":1,"id":7,"op":"restart"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// One line from the supervisor to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Event {
        v: u32,
        id: u64,
        event: Box<Event>,
    },
    Result {
        v: u32,
        id: u64,
        result: Box<ReplyResult>,
    },
    Error {
        v: u32,
        #[serde(default)]
        id: u64,
        error: ErrorReply,
    },
}

impl Reply {
    pub fn event(id: u64, event: Event) -> Self {
        Reply::Event {
            v: super::VERSION,
            id,
            event: Box::new(event),
        }
    }
    pub fn result(id: u64, result: ReplyResult) -> Self {
        Reply::Result {
            v: super::VERSION,
            id,
            result: Box::new(result),
        }
    }
    pub fn error(id: u64, kind: ErrorKind, message: impl Into<String>) -> Self {
        Reply::Error {
            v: super::VERSION,
            id,
            error: ErrorReply {
                kind,
                message: message.into(),
                restart: None,
            },
        }
    }
    /// Whether this line ends the request's answer.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Event { .. })
    }
}

/// The final answer to a request that worked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplyResult {
    Status(Box<Status>),
    Restart(RestartReport),
    /// `stop` and `signal`: done.
    Done {
        message: String,
    },
    Logs(LogsReport),
    /// `revert`: the bake window ended in a revert. `generation` (the new one) is gone and
    /// `old_generation` is the only one left, serving alone again.
    Reverted {
        generation: u64,
        old_generation: u64,
    },
}

/// The answer to `logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsReport {
    /// The lines asked for, in the order they were printed.
    pub lines: Vec<LogLine>,
    /// The sequence number to ask `after` next: that of the last line returned, else the
    /// newest one kept, so that a follower sees only what comes later.
    pub last_seq: u64,
    /// The answer was cut at its size limit: more lines follow `last_seq` already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// The highest number a line of this answer could have had: the newest line kept
    /// when it was asked (or `until`). Lines after it are for a later request.
    pub newest: u64,
    /// The generations whose output is kept, oldest first.
    pub generations: Vec<u64>,
    /// How many lines are kept per generation (`log.lines`); 0: output is not kept.
    pub keep_lines: u32,
}

/// One line a generation printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub generation: u64,
    /// The instance that printed it (`instances`); 0 from an older zdctl.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instance: u32,
    /// Increases with every line the supervisor keeps, over all generations.
    pub seq: u64,
    /// When the supervisor read it.
    pub unix_ms: u64,
    pub stream: LogStream,
    /// The line without its newline; invalid UTF-8 replaced, cut at a bound and marked
    /// with `…`.
    pub text: String,
}

/// Which of a generation's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// `out` or `err`.
    pub fn short(self) -> &'static str {
        match self {
            LogStream::Stdout => "out",
            LogStream::Stderr => "err",
        }
    }
}

/// Why a request failed before it could do anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
    /// With `busy`: the restart that is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Another restart is running; `restart` names it.
    Busy,
    /// The line was not valid JSON or lacked a required field.
    Malformed,
    /// The line was longer than the protocol allows.
    TooLong,
    /// The protocol version is not one this supervisor speaks.
    Version,
    /// The op is not known to this supervisor.
    UnknownOp,
    /// An argument was invalid (for example an unknown signal name).
    Invalid,
    /// The supervisor is stopping.
    Stopping,
    /// The connecting user is neither root nor the supervisor's user.
    Forbidden,
    /// The supervisor already serves as many control connections as it allows; this one
    /// was closed. Sent with id 0 on a connection the supervisor did not take.
    TooManyConnections,
    /// The connection sent no request for too long and was closed. Sent with id 0.
    Idle,
    /// Anything else.
    Internal,
    /// A kind this version does not know, from a newer supervisor. Never sent.
    #[serde(other)]
    Unknown,
}

/// How a restart ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RestartOutcome {
    /// The new generation was ready, was promoted and the old one is gone.
    Completed,
    /// The new generation failed; it was stopped and the old one kept serving.
    RolledBack { reason: String },
    /// The restart could not be attempted (invalid config, spawn failure, supervisor stopping).
    Failed { reason: String },
}

impl RestartOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, RestartOutcome::Completed)
    }
    pub fn reason(&self) -> Option<&str> {
        match self {
            RestartOutcome::Completed => None,
            RestartOutcome::RolledBack { reason } | RestartOutcome::Failed { reason } => {
                Some(reason)
            }
        }
    }
}

/// The summary of one restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartReport {
    /// Restart number within this supervisor's life, from 1.
    pub restart: u64,
    #[serde(flatten)]
    pub outcome: RestartOutcome,
    /// The generation that was active before.
    #[serde(default)]
    pub old_generation: Option<u64>,
    /// The generation started by this restart (absent when none could be started).
    #[serde(default)]
    pub new_generation: Option<u64>,
    #[serde(default)]
    pub new_pid: Option<i32>,
    /// Milliseconds from the request to the outcome.
    pub elapsed_ms: u64,
    /// When the new generation failed: the last lines it printed (when its output is kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<LogLine>,
    /// With `instances` above 1: the new generation's pids, by instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_pids: Vec<i32>,
    /// A rolling restart: how many instances it replaced, one step each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// With `bake`: how long the window lasted, to its end or to the revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_ms: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A step of a restart or of a generation's life, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The restart this event belongs to, when it belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<u64>,
    /// Milliseconds since that restart was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// The same in microseconds, for measuring the supervisor's own overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_us: Option<u64>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A restart was accepted.
    RestartRequested,
    /// The service file was read again for this restart.
    ConfigReloaded { path: String },
    /// A generation's process was started.
    Spawned { generation: u64, pid: i32 },
    /// The supervisor waits for the listed readiness checks, for at most `timeout_ms`
    /// (absent from supervisors older than the field): clients wait that long for the next
    /// event.
    WaitingReady {
        generation: u64,
        checks: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Every readiness check passed; `evidence` says why.
    Ready { generation: u64, evidence: String },
    /// The generation is now the active one (and the pidfile names it).
    Promoted { generation: u64, pid: i32 },
    /// The generation was sent its stop signal and has until the deadline to exit.
    Draining {
        generation: u64,
        pid: i32,
        signal: String,
        deadline_ms: u64,
    },
    /// The drain deadline passed: the generation's process group was killed.
    Killed { generation: u64, pid: i32 },
    /// A generation's main process exited.
    Exited {
        generation: u64,
        pid: i32,
        status: ExitInfo,
    },
    /// A restart ended.
    Finished { report: RestartReport },
    /// The active generation died outside a restart; a new one starts after `delay_ms`.
    Respawning { generation: u64, delay_ms: u64 },
    /// A forwarded signal was delivered to the active generation.
    Signalled {
        generation: u64,
        pid: i32,
        signal: String,
    },
    /// The active generation was lost once too often (`restart.limit`): the supervisor
    /// respawns nothing until a restart request, and the listeners keep their clients
    /// waiting.
    Failing {
        /// The generation whose end reached the limit; none when a respawn could not start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
        failed_starts: u32,
        window_ms: u64,
    },
    /// The supervisor is stopping every generation.
    Stopping,
    /// One instance of a generation of several passed its readiness checks (`Ready`
    /// follows once all have).
    InstanceReady {
        generation: u64,
        instance: u32,
        pid: i32,
        evidence: String,
    },
    /// A rolling restart replaced one more instance: `step` of `of` new instances are
    /// ready, and as many old ones were drained or are draining.
    Step { generation: u64, step: u32, of: u32 },
    /// The new generation is promoted and watched for `bake_ms`; the old one serves
    /// beside it until then.
    Baking {
        generation: u64,
        old_generation: u64,
        bake_ms: u64,
        checks: Vec<String>,
    },
    /// The bake window ended in a revert: the new generation is drained, the old one is
    /// the service again.
    Reverted {
        generation: u64,
        old_generation: u64,
        reason: String,
    },
    /// One instance of the active generation died; it alone starts again after
    /// `delay_ms`.
    InstanceRespawning {
        generation: u64,
        instance: u32,
        delay_ms: u64,
    },
    /// An event this version does not know, from a newer supervisor: skipped rather than
    /// failing the whole answer. Never sent.
    #[serde(other)]
    Unknown,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum ExitInfo {
    Code {
        code: i32,
    },
    Signal {
        signal: i32,
    },
    /// The process exited, and its status went to another parent: a generation this
    /// supervisor adopted from one that died is not its child.
    Unknown,
}

impl ExitInfo {
    /// The status a shell would show: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitInfo::Code { code } => code,
            ExitInfo::Signal { signal } => 128 + signal,
            ExitInfo::Unknown => -1,
        }
    }
    pub fn success(self) -> bool {
        self == ExitInfo::Code { code: 0 }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitInfo::Code { code } => write!(f, "exit code {code}"),
            ExitInfo::Signal { signal } => match nix::sys::signal::Signal::try_from(signal) {
                Ok(s) => write!(f, "killed by {}", s.as_str()),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            ExitInfo::Unknown => write!(f, "exit status unknown (adopted, not a child)"),
        }
    }
}

/// The state of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    /// Started by a restart, not yet proven ready.
    Starting,
    /// Serving; the one signals are forwarded to.
    Active,
    /// Asked to stop; waiting for it to exit.
    Draining,
    /// The old generation during a restart's `bake` window: untouched, holding its
    /// sockets, ready to take over again at a revert (with a steered handoff it gets no
    /// new connection meanwhile; with a shared one it accepts beside the new one).
    Standby,
    /// Gone.
    Exited,
}

impl GenerationState {
    /// The word `status` and `top` show: `starting`, `active`, `draining`, `standby`,
    /// `exited`.
    pub fn name(self) -> &'static str {
        match self {
            GenerationState::Starting => "starting",
            GenerationState::Active => "active",
            GenerationState::Draining => "draining",
            GenerationState::Standby => "standby",
            GenerationState::Exited => "exited",
        }
    }
}

/// One generation as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub generation: u64,
    pub pid: i32,
    pub state: GenerationState,
    pub started_unix_ms: u64,
    #[serde(default)]
    pub exit: Option<ExitInfo>,
    /// What the interception of its binds answered, when it was started with
    /// `intercept_binds`. Absent otherwise, from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<InterceptInfo>,
    /// How many of its output lines the supervisor keeps now (see `logs`). Absent when
    /// its output is not kept, from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lines: Option<u64>,
    /// Its processes (`instances`), by instance number; `pid` is the first live one's.
    /// Empty from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceInfo>,
}

/// One process of a generation (`instances: N` runs N of them, numbered 0..N-1 and told
/// so by `ZD_INSTANCE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub instance: u32,
    pub pid: i32,
    pub state: GenerationState,
    pub started_unix_ms: u64,
    /// Whether its readiness checks passed.
    #[serde(default)]
    pub ready: bool,
    /// How many times it was started again alone after it died.
    #[serde(default)]
    pub respawns: u32,
    #[serde(default)]
    pub exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lines: Option<u64>,
}

/// A restart's `bake` window that is running (see [`Status::bake`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BakeInfo {
    /// The new generation, promoted and watched.
    pub generation: u64,
    /// The old one, kept serving until the window ends.
    pub old_generation: u64,
    pub started_unix_ms: u64,
    pub ends_unix_ms: u64,
    /// The bake checks, as written.
    #[serde(default)]
    pub checks: Vec<String>,
}

/// What the interception of one generation's binds (`intercept_binds`) answered since the
/// generation started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptInfo {
    /// Each listener the generation received, in fd order, with the binds that got it.
    pub listeners: Vec<InterceptedListener>,
    /// Binds of other addresses, which ran as the program asked.
    pub binds_continued: u64,
    /// Binds of a listener's address that failed: the listener could not be put on the
    /// program's fd, and the bind returned an error.
    pub binds_failed: u64,
    /// The errno the last failed bind returned (`EMFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl InterceptInfo {
    /// Binds that got a listener, over every listener.
    pub fn handed(&self) -> u64 {
        self.listeners
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.binds))
    }

    /// Unlinks of a listener's socket file that were skipped, over every listener.
    pub fn unlinks_skipped(&self) -> u64 {
        self.listeners
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.unlinks_skipped))
    }
}

/// One listener of a generation under `intercept_binds`: how the program's calls about it
/// were answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptedListener {
    /// The listener's name.
    pub listener: String,
    pub address: String,
    /// Binds that got this listener's socket on the program's fd.
    pub binds: u64,
    /// Unlinks of its socket file (a unix listener's) that were skipped.
    #[serde(default)]
    pub unlinks_skipped: u64,
    /// The process whose bind got it last, and the fd it got it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fd: Option<i32>,
}

/// One listener as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    pub name: String,
    pub address: String,
    /// The socket's inode: the same number appears in every generation's /proc/PID/fd.
    pub inode: u64,
    /// The fd number the generations receive it on.
    pub fd: i32,
}

/// One socket of a listener. Under the steered handoff each generation has its own in the
/// listener's `SO_REUSEPORT` group and only one gets new connections; a shared listener
/// has one socket that every generation holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// The listener's name.
    pub listener: String,
    pub address: String,
    pub inode: u64,
    /// The fd number the generations receive it on.
    pub fd: i32,
    /// The live generations that received it; none while it waits for a respawn, or for
    /// its close to be safe.
    pub generations: Vec<u64>,
    /// Whether new connections go to it.
    pub steered_to: bool,
    /// Whether it refuses new connections (`restart.refuse_after`): it is open but does
    /// not listen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refusing: bool,
    /// Connections waiting in its accept queue (TCP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// The receive memory its waiting datagrams hold, in bytes (UDP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_bytes: Option<u32>,
}

/// Counters since the supervisor started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartCounters {
    pub requested: u64,
    pub completed: u64,
    pub rolled_back: u64,
    pub failed: u64,
    /// Deaths of the active generation outside a restart.
    pub crashes: u64,
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub service: String,
    pub supervisor_pid: i32,
    pub started_unix_ms: u64,
    #[serde(default)]
    pub config_path: Option<String>,
    #[serde(default)]
    pub active_generation: Option<u64>,
    /// The restart that is running, if any.
    #[serde(default)]
    pub restart_in_progress: Option<u64>,
    /// Live generations, then the most recent exited ones, newest first.
    pub generations: Vec<GenerationInfo>,
    /// The listeners as the active generation (or its respawn) receives them.
    pub listeners: Vec<ListenerInfo>,
    /// Every open socket of every listener, by generation: more than one per listener
    /// while a steered restart runs. Empty from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketInfo>,
    pub restarts: RestartCounters,
    #[serde(default)]
    pub last_restart: Option<RestartReport>,
    /// How the supervisor keeps a generation's processes together: `cgroup:PATH` (the
    /// supervisor's cgroup directory) or `process-group` (process groups and subreaping).
    /// `None` from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<String>,
    /// Whether the service runs its generations with `intercept_binds` (as of the
    /// config the active generation was started with). False from a foreign supervisor
    /// or an older zdctl.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intercept_binds: bool,
    /// Set while the service is failing: its starts failed `restart.limit` times, and the
    /// supervisor respawns nothing until a restart request. Absent otherwise, from a
    /// foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<FailingInfo>,
    /// The supervisor itself: its version, its binary, its re-executions and adoptions.
    /// `None` from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<SupervisorInfo>,
    /// How many output lines the supervisor keeps of each generation (`log.lines`; 0:
    /// none), for `logs`. `None` from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_lines: Option<u32>,
    /// How many processes each generation runs (`instances`). `None` from a foreign
    /// supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// The instances that serve now: live, ready, not draining, of any generation.
    /// `None` from a foreign supervisor or an older zdctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// The `bake` window of the running restart, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<BakeInfo>,
}

/// The supervisor process of a service (see [`Status::supervisor`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    /// The version of the zdctl binary that runs now (`0.4.0`, or `0.4.0+TAG`).
    pub version: String,
    /// The binary `zdctl reexec` executes unless told another.
    pub binary: String,
    /// How many times the supervisor replaced its program in place since it started.
    #[serde(default)]
    pub reexecs: u64,
    /// The last `reexec`: done, or why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reexec: Option<ReexecInfo>,
    /// Set when this supervisor adopted the generations of one that had died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<AdoptedInfo>,
}

/// One `reexec` of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReexecInfo {
    pub unix_ms: u64,
    /// The version that ran before, and the binary that was executed.
    pub from_version: String,
    pub binary: String,
    /// Why it did not happen; absent when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a supervisor adopted from one that had died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedInfo {
    pub unix_ms: u64,
    /// The pid of the supervisor that died.
    pub from_pid: i32,
    /// The generations it adopted (by number).
    pub generations: Vec<u64>,
}

/// Why a service is failing (see [`Status::failing`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingInfo {
    /// Since when.
    pub since_unix_ms: u64,
    /// The failed starts counted within the window when the limit was reached.
    pub failed_starts: u32,
    /// `restart.limit`'s window.
    pub window_ms: u64,
    /// Since when the TCP listeners refuse new connections (`restart.refuse_after`
    /// passed); absent while they accept and clients wait in their queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusing_since_unix_ms: Option<u64>,
    /// The last generation that failed, and its main pid; absent when its start failed
    /// before there was a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// Why it could not start or did not become ready, when that is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last lines it printed (stdout and stderr), oldest first: at most a few, each
    /// cut to a bounded length. Empty when nothing was printed or kept.
    #[serde(default)]
    pub output: Vec<String>,
}

/// Milliseconds since the Unix epoch, for timestamps in messages.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
