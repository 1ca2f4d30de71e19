//! The supervisor engine: holds the listeners, runs generations, restarts, drains and rolls
//! back (DESIGN §2 and §6).
//!
//! One task, the owner ([`owner`]), owns the state: the generations, the active one, the
//! running restart, the counters. It takes control requests and signals, and answers
//! messages ([`owner::Msg`]) from the tasks around it: each generation's exit watcher, the
//! respawn timers, the running restart (its own task, which spawns, promotes and drains
//! by asking the owner) and the final stop. Nothing else reads or writes the state.
//!
//! The owner sees processes only through a seam ([`child`]): the real ones
//! ([`process`]) or, in the tests, a fake, so that every transition is tested in-process.

mod adopt;
mod child;
mod control;
mod drain;
pub mod logs;
mod output;
mod owner;
pub mod priority;
mod process;
mod reexec;
mod restart;
mod resumed;
mod snapshot;
pub mod start_priority;
mod state;
mod systemd;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::listen::Listener;
use crate::proto::{Event, EventKind, unix_ms};
use owner::Msg;

use crate::config::{ConfigError, Handoff, ServiceConfig};
use crate::listen::ListenError;
use crate::listen::TcpSharing;
use crate::proto::ServerError;

/// Everything `zdctl run` decided before the supervisor starts.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub config: ServiceConfig,
    /// The service file, read again before every restart; `None` for the flags form.
    pub config_path: Option<PathBuf>,
    /// Where the control socket is bound.
    pub control_socket: PathBuf,
}

/// Why the supervisor could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Control(#[from] ServerError),
    #[error(transparent)]
    RuntimeDir(#[from] crate::paths::RuntimeDirError),
    #[error(
        "the service file asks for 'handoff: steered', and {reason}; use 'handoff: shared' or remove the key"
    )]
    Steering { reason: String },
    #[error("the service asks for 'intercept_binds', and {reason}")]
    Intercept { reason: String },
    #[error("cannot start generation 1 of '{service}': {reason}")]
    FirstSpawn { service: String, reason: String },
    #[error(
        "'{service}' stopped, but not cleanly: {}; give it a longer 'drain_timeout', or make it exit on its 'stop_signal'",
        describe_killed(.killed)
    )]
    UncleanStop {
        service: String,
        /// The generations (number, main pid) killed at their drain deadline.
        killed: Vec<(u64, i32)>,
    },
    #[error("cannot take over from the previous binary of the supervisor: {reason}")]
    Reexec { reason: String },
    #[error("cannot adopt what the last supervisor of '{service}' left: {reason}")]
    Adopt { service: String, reason: String },
    #[error("cannot {about}")]
    Io {
        about: String,
        #[source]
        source: std::io::Error,
    },
}

/// `generation 3 (pid 812) did not exit within its drain_timeout and was killed`.
fn describe_killed(killed: &[(u64, i32)]) -> String {
    let list: Vec<String> = killed
        .iter()
        .map(|(generation, pid)| format!("generation {generation} (pid {pid})"))
        .collect();
    let verb = if killed.len() == 1 { "was" } else { "were" };
    format!(
        "{} did not exit within its drain_timeout and {verb} killed",
        list.join(", ")
    )
}

impl SupervisorError {
    /// Whether the error comes from what the user asked for (exit 2) rather than from the
    /// running service (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SupervisorError::Config(_)
                | SupervisorError::Listen(_)
                | SupervisorError::Control(_)
                | SupervisorError::RuntimeDir(_)
                | SupervisorError::FirstSpawn { .. }
                | SupervisorError::Steering { .. }
                | SupervisorError::Intercept { .. }
        )
    }
}

pub use control::Prepared;

/// Validates the config and opens (or adopts, under systemd socket activation) the
/// listeners. Call it before starting the async runtime: adopting fds 3.. is only sound
/// while nothing else in the process has opened a file, and the runtime opens several.
pub fn prepare(options: SupervisorOptions) -> Result<Prepared, SupervisorError> {
    options.config.validate()?;
    if let Some(dir) = options.control_socket.parent() {
        crate::paths::ensure_runtime_dir(dir)?;
    }
    limit_malloc_arenas();
    if let Some(mut resume) = control::take_reexec_state(&options.config)
        .map_err(|reason| SupervisorError::Reexec { reason })?
    {
        let listeners = resume.listeners(&options.config)?;
        return Ok(Prepared {
            options,
            listeners,
            resume: Some(resume),
        });
    }
    // A running supervisor of the same service holds the same addresses: say that, rather
    // than the "address in use" that binding would report.
    if std::os::unix::net::UnixStream::connect(&options.control_socket).is_ok() {
        return Err(crate::proto::ServerError::AlreadyRunning {
            path: options.control_socket,
        }
        .into());
    }
    let runtime_dir = options
        .control_socket
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(crate::paths::runtime_dir);
    if let Some(mut resume) = adopt::find(&options.config, &runtime_dir)? {
        let listeners = resume.listeners(&options.config)?;
        return Ok(Prepared {
            options,
            listeners,
            resume: Some(resume),
        });
    }
    if options.config.intercept_binds {
        crate::handoff::intercept::kernel_support()
            .map_err(|reason| SupervisorError::Intercept { reason })?;
    }
    let sharing = choose_handoff(&options.config)?;
    let listeners =
        crate::listen::open_or_adopt_listeners_with(&options.config.listeners, sharing)?;
    // Before the runtime starts its threads, so that they inherit the weaker priority.
    if options.config.yield_cpu {
        match priority::give_way() {
            priority::GiveWay::Lowered { original, lowered } => info!(
                original,
                lowered,
                "the supervisor runs at a weaker CPU priority than the generations it starts"
            ),
            priority::GiveWay::NotPermitted => info!(
                "the supervisor runs at the service's CPU priority: without CAP_SYS_NICE its \
                 generations could not be started back at a stronger one"
            ),
            priority::GiveWay::AtLowest => {}
        }
    }
    Ok(Prepared {
        options,
        listeners,
        resume: None,
    })
}

/// `zdctl run` started by a supervisor that wants to re-execute itself into this binary
/// (`ZDCTL_REEXEC_CHECK`): checks that this binary reads the service file and the state
/// it was given, and that they fit. Returns the line to print: the marker the supervisor
/// waits for, and this binary's version.
pub fn check_reexec(options: &SupervisorOptions) -> Result<String, SupervisorError> {
    options.config.validate()?;
    let reexec = |reason: String| SupervisorError::Reexec { reason };
    let fd = std::env::var(snapshot::CHECK_FD_VAR)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .ok_or_else(|| reexec(format!("{} is not an fd number", snapshot::CHECK_FD_VAR)))?;
    let state = snapshot::Snapshot::from_fd(fd).map_err(reexec)?;
    state.check_fits(&options.config).map_err(reexec)?;
    Ok(format!(
        "{} {}",
        snapshot::CHECKED,
        crate::version::version()
    ))
}

/// Whether this process was started to check a reexec's state ([`check_reexec`]).
pub fn is_reexec_check() -> bool {
    std::env::var_os(snapshot::CHECK_FD_VAR).is_some()
}

/// How the TCP and UDP listeners will reach generations: steered when the file asks for
/// it or says nothing, and the kernel allows it (checked now, on a throwaway pair of
/// sockets of each protocol the service listens on). A kernel or sandbox that refuses
/// falls back to shared, with one log line that says why, unless the file asked for
/// `steered`. Steered with a TCP listener, `tcp_migrate_req` is turned on where
/// permitted, unless `migrate_requests: false`. Under systemd with an fd store, a file that
/// says nothing gets shared: a steered socket cannot be stored (see [`systemd`]).
fn choose_handoff(config: &ServiceConfig) -> Result<TcpSharing, SupervisorError> {
    let tcp = config.listeners.iter().any(|l| l.addr.is_tcp());
    let udp = config.listeners.iter().any(|l| l.addr.is_udp());
    if !(tcp || udp) || config.handoff == Some(Handoff::Shared) {
        return Ok(TcpSharing::Alone);
    }
    if config.handoff.is_none() && systemd::fd_store_offered() {
        info!(
            "handoff: shared, so that systemd's fd store keeps each listener's socket open \
             across a crash of the supervisor (the service file may ask for 'handoff: steered')"
        );
        return Ok(TcpSharing::Alone);
    }
    let support = if tcp {
        crate::listen::steer::kernel_support()
    } else {
        Ok(())
    };
    let support = match support {
        Ok(()) if udp => crate::listen::steer::kernel_support_udp(),
        other => other,
    };
    match support {
        Ok(()) => {
            if tcp && config.migrate_requests != Some(false) {
                crate::listen::migrate::enable();
            }
            Ok(TcpSharing::ReusePort)
        }
        Err(reason) if config.handoff == Some(Handoff::Steered) => {
            Err(SupervisorError::Steering { reason })
        }
        Err(reason) => {
            warn!(%reason, "handoff: shared (every generation accepts from one socket per listener)");
            Ok(TcpSharing::Alone)
        }
    }
}

/// [`prepare`] then [`Prepared::run`], for callers that already run inside a runtime and
/// are not socket-activated.
pub async fn run(options: SupervisorOptions) -> Result<(), SupervisorError> {
    prepare(options)?.run().await
}

/// What the owner and the tasks around it share: nothing that changes, but the way to the
/// owner and to the clients that watch events.
struct Context {
    /// Handles on the unix listeners, whose socket files are removed at the end. The
    /// sockets themselves are the owner's (`State::sockets`).
    socket_files: Vec<Listener>,
    config_path: Option<PathBuf>,
    /// The service file as read at the last restart, kept while the file is unchanged. A
    /// cache, not state: only the running restart uses it.
    config_cache: Mutex<crate::config::FileCache>,
    events: broadcast::Sender<Event>,
    /// The owner's mailbox.
    owner: mpsc::UnboundedSender<Msg>,
    /// Becomes true once when the supervisor starts stopping.
    stopping: watch::Sender<bool>,
}

impl Context {
    /// Sends the owner a message that carries a reply channel, and waits for the reply;
    /// `None` once the owner is gone.
    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.owner.send(msg(tx)).ok()?;
        rx.await.ok()
    }

    /// Tells the owner something that needs no reply.
    fn tell(&self, msg: Msg) {
        let _ = self.owner.send(msg);
    }

    /// Publishes an event to every watcher and to the requester of `restart`.
    fn emit(&self, restart: Option<(u64, Instant)>, kind: EventKind) {
        self.emit_at(restart, Instant::now(), kind);
    }

    /// Sends an event that happened at `at` (a little earlier than now), with its times as
    /// of then.
    fn emit_at(&self, restart: Option<(u64, Instant)>, at: Instant, kind: EventKind) {
        let unix = std::time::SystemTime::now()
            .checked_sub(at.elapsed())
            .unwrap_or_else(std::time::SystemTime::now);
        let since = |started: Instant| at.saturating_duration_since(started);
        let event = Event {
            unix_ms: unix_ms(unix),
            restart: restart.map(|(r, _)| r),
            elapsed_ms: restart.map(|(_, t)| since(t).as_millis() as u64),
            elapsed_us: restart.map(|(_, t)| since(t).as_micros() as u64),
            kind,
        };
        let _ = self.events.send(event);
    }
}

/// glibc gives every thread that allocates its own malloc arena and never returns their
/// memory; the runtime's blocking threads come and go during restarts, so without a cap
/// the supervisor's RSS grows with each new thread (flipbench, connection-per-request mode:
/// 7 MiB idle, 22 MiB after 600 restarts). Two arenas are plenty for a supervisor.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; called before the runtime starts
    // any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands memory freed by a restart's /proc scans (whole tcp tables under
/// connection-per-request load) back to the kernel, so the supervisor's RSS stays where it
/// was when idle instead of keeping the high-water mark of the busiest restart.
pub(crate) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
