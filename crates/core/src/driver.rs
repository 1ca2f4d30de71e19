//! Drivers: restarting services whose supervisor is not ours (start_server, nginx, HAProxy,
//! gunicorn, psflip, socketmaster, huptime, einhorn, systemd, or anything that restarts on
//! a signal).
//!
//! A driver run is driven by the caller (`zdctl restart`), not by a supervisor: [`restart`]
//! pokes the foreign supervisor the way it documents (a signal, its control socket,
//! `systemctl`), watches /proc, pidfiles and the peer's own status until the restart has
//! completed, rolled back or failed, and reports every step as the same
//! [`Event`](crate::proto::Event)s a native restart emits. Before any signal it proves that
//! the pid it read is the expected program (alive, its cmdline names it) and holds a pidfd
//! on it, so a recycled pid can never receive it.
//!
//! `docs/drivers.md` is the user's reference for the keys and for what each driver can and
//! cannot know.

mod config;
mod control;
mod einhorn;
mod haproxy;
mod lock;
mod nginx;
mod process;
mod record;
mod run;
mod start_server;
mod status;
mod systemd;
mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{
    DriverConfig, DriverKind, GunicornMode, NginxMode, SystemdAction, WatchMode, load_file,
    names_driver, parse_str,
};
pub use status::{root_pid, status};
pub use systemd::{UnitState, parse_show};

use crate::proto::{Event, RestartReport};
use crate::signal::Signal;

/// Why a driver could not even try: the service is not running, or the pid or socket it
/// was given is not what the service file says it should be. A restart that was tried and
/// went wrong is a [`RestartReport`] with a rolled-back or failed outcome instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The pidfile is missing or names a process that is gone.
    #[error("{reason}")]
    NotRunning {
        /// The pidfile or socket involved.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The pidfile names a live process that is not the expected program: nothing was sent.
    #[error(
        "pidfile '{}' names pid {pid} ({found}), which is not {expected}; no signal was sent; \
         fix `pidfile:` or `expect:` in the service file",
        path.display()
    )]
    Unexpected {
        /// The pidfile.
        path: PathBuf,
        /// The pid it names.
        pid: i32,
        /// What the driver looks for in the process's command line.
        expected: String,
        /// What the process's command line is.
        found: String,
    },
    /// The pidfile does not hold a pid.
    #[error("pidfile '{}' does not hold a pid (found {found:?}); fix `pidfile:`", path.display())]
    BadPidfile {
        /// The pidfile.
        path: PathBuf,
        /// Its first characters.
        found: String,
    },
    /// The peer's control socket (einhorn, HAProxy master CLI) refused the connection.
    #[error("{}: {reason}", path.display())]
    SocketRefused {
        /// The socket.
        path: PathBuf,
        /// What happened and what to do.
        reason: String,
    },
    /// The peer answered something the driver does not understand.
    #[error("{}: {reason}", path.display())]
    Garbage {
        /// The socket, or the program that answered.
        path: PathBuf,
        /// What was expected and what came back.
        reason: String,
    },
    /// Another restart of the service holds its lock (`restart` is its number, when the
    /// record names it).
    #[error("a restart is already running")]
    Busy {
        /// The restart that runs.
        restart: Option<u64>,
    },
    /// `--attach` waited `waited` and the restart it follows still runs.
    #[error("the restart that runs did not finish within {}", crate::duration::format_duration(*waited))]
    StillBusy {
        /// The restart that runs.
        restart: Option<u64>,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The restart `--attach` followed ended without an outcome: it found nothing to
    /// restart (its own output says why).
    #[error(
        "the restart{} ended before it tried anything (is the service running?); see that \
         restart's output",
        restart.map(|n| format!(" #{n}")).unwrap_or_default()
    )]
    NoReport {
        /// The restart followed.
        restart: Option<u64>,
    },
    /// The runtime directory, which holds the lock and the record, is not safe to use.
    #[error(transparent)]
    RuntimeDir(#[from] crate::paths::RuntimeDirError),
    /// A system call or a helper program failed.
    #[error("cannot {about}: {source}")]
    Io {
        /// What the driver was doing.
        about: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl DriverError {
    /// Whether the error means the service is not running (exit 3 in `zdctl`), rather than
    /// a failure (exit 1).
    pub fn is_not_running(&self) -> bool {
        matches!(
            self,
            DriverError::NotRunning { .. } | DriverError::SocketRefused { .. }
        )
    }

    pub(crate) fn io(about: impl Into<String>, source: std::io::Error) -> DriverError {
        DriverError::Io {
            about: about.into(),
            source,
        }
    }
}

/// Restarts a foreign service as its driver says, within `timeout`, calling `on_event` for
/// each step; the report's outcome says whether it completed, rolled back or failed, and
/// why. An error means nothing was attempted (nothing was signalled); [`DriverError::Busy`]
/// means another restart of the service runs ([`follow`] waits for it).
///
/// The run holds the service's restart lock from start to end and records its outcome
/// (counters, last restart, generation) for `status`.
pub async fn restart(
    config: &DriverConfig,
    timeout: Duration,
    on_event: impl FnMut(Event),
) -> Result<RestartReport, DriverError> {
    let lock = lock::RestartLock::for_restart(&config.name).await?;
    let mut run = run::Run::new(timeout, lock, Box::new(on_event));
    run.requested();
    let outcome = match config.kind {
        DriverKind::Signal if config.watch == WatchMode::Child => {
            watch::child_flip(config, &mut run).await
        }
        DriverKind::Signal | DriverKind::Psflip | DriverKind::Huptime => {
            watch::pidfile_flip(config, &mut run).await
        }
        DriverKind::Socketmaster => watch::child_flip(config, &mut run).await,
        DriverKind::StartServer => start_server::restart(config, &mut run).await,
        DriverKind::Nginx => nginx::restart(config, &mut run).await,
        DriverKind::Gunicorn => match config.gunicorn {
            GunicornMode::Hup => watch::workers_replaced(config, &mut run).await,
            GunicornMode::Upgrade => nginx::upgrade(config, &mut run, "gunicorn").await,
        },
        DriverKind::Haproxy => haproxy::restart(config, &mut run).await,
        DriverKind::Einhorn => einhorn::restart(config, &mut run).await,
        DriverKind::Systemd => systemd::restart(config, &mut run).await,
    };
    match outcome {
        Ok(outcome) => Ok(run.finish(outcome)),
        Err(err) => {
            run.abandon();
            Err(err)
        }
    }
}

/// Sends `signal` to the main process of the active generation of a foreign service, and
/// says which (generation, pid) it was. The process is held by a pidfd before the service's
/// processes are read again, so a pid that was recycled in between is never signalled.
pub fn signal_active(config: &DriverConfig, signal: Signal) -> Result<(u64, i32), DriverError> {
    let active = |status: &crate::proto::Status| {
        status
            .generations
            .iter()
            .find(|g| g.state == crate::proto::GenerationState::Active)
            .map(|g| (g.generation, g.pid))
    };
    let not_running = |reason: String| DriverError::NotRunning {
        path: config.source.clone(),
        reason,
    };
    let (generation, pid) = active(&status(config)?)
        .ok_or_else(|| not_running("no generation of the service is active".to_owned()))?;
    let target = process::Target::open(pid)
        .ok_or_else(|| not_running(format!("generation {generation} (pid {pid}) just exited")))?;
    if active(&status(config)?) != Some((generation, pid)) {
        return Err(not_running(format!(
            "generation {generation} (pid {pid}) stopped being the active one; try again"
        )));
    }
    target.signal(signal)?;
    Ok((generation, pid))
}

/// Follows the restart of a foreign service that another zdctl runs (`--attach`): waits
/// up to `timeout` for it to release the lock, then returns its report from the record.
/// `restart` is the number [`DriverError::Busy`] gave, when it gave one.
pub async fn follow(
    config: &DriverConfig,
    restart: Option<u64>,
    timeout: Duration,
) -> Result<RestartReport, DriverError> {
    let lock = lock::RestartLock::wait(&config.name, timeout).await?;
    let record = lock.record();
    match record.last_restart {
        Some(report) if restart.is_none_or(|n| report.restart >= n) => Ok(report),
        _ => Err(DriverError::NotRunning {
            path: record::path_in(&crate::paths::runtime_dir(), &config.name),
            reason: format!(
                "the restart{} ended before it tried anything (the service may not be \
                 running; see that restart's output)",
                restart.map(|n| format!(" #{n}")).unwrap_or_default()
            ),
        }),
    }
}
