//! What a service name means, for every command.
//!
//! A name is a service run by our own supervisor (`zdctl run`, reached over its control
//! socket) or one a foreign supervisor runs and a driver works (`driver:` in its file).
//! [`Service::open`] decides which, once; then `status`, `restart`, `stop`, `signal` and
//! `snapshot` work the same for both, with one event stream ([`Event`]), one report
//! ([`RestartReport`]) and one error type ([`ServiceError`]). Every call has a deadline:
//! the control client's for native services, the driver's `timeout:` (or the caller's)
//! for restarts, [`STATUS_DEADLINE`] for reading a foreign service from /proc.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{self, ConfigError, ServiceFile};
use crate::driver::{self, DriverConfig, DriverError};
use crate::inspect::{InspectError, Inspector, Snapshot};
use crate::paths;
use crate::proto::{
    Client, ClientError, ErrorKind, ErrorReply, Event, EventKind, ListenerInfo, LogsReport, Op,
    ReexecInfo, Reply, ReplyResult, RestartReport, Status,
};
use crate::signal::Signal;

/// How long reading a foreign service's status from /proc (or from `systemctl`) may take.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(10);

/// How long the new binary of a `reexec` may take to answer `status`.
pub const REEXEC_ANSWER: Duration = Duration::from_secs(30);

/// A service, found by name or in the config directories and runtime directory.
#[derive(Debug, Clone)]
pub struct Service {
    name: String,
    runner: Runner,
    /// The service file, when one was found.
    file: Option<PathBuf>,
    /// The directories looked in, when no file was found (for "no such service").
    searched: Option<Vec<PathBuf>>,
}

/// Who runs a service.
#[derive(Debug, Clone)]
pub enum Runner {
    /// Our supervisor, reached on this control socket.
    Supervisor { socket: PathBuf },
    /// A foreign supervisor, worked by this driver.
    Driver(Box<DriverConfig>),
}

/// What a restart asks for beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestartOptions {
    /// The readiness deadline (native) or the whole restart's (driver); the service's
    /// own when `None`.
    pub timeout: Option<Duration>,
    /// When another restart runs, follow it instead of failing with [`ServiceError::Busy`].
    pub attach: bool,
    /// Return as soon as the new generation is promoted (native services: the supervisor
    /// drains the old one on its own). A driver runs in this process, so its restart is
    /// always followed to the end.
    pub until_promoted: bool,
    /// Skip the service's `bake` window (native services).
    pub no_bake: bool,
}

/// How a restart call ended.
#[derive(Debug, Clone)]
pub enum Restarted {
    /// The restart ran to its end: completed, rolled back or failed, as the report says.
    Finished(RestartReport),
    /// [`RestartOptions::until_promoted`]: the `promoted` event.
    Promoted(Box<Event>),
}

/// The status of a service, whoever runs it: the native shape, and the driver's name for
/// a foreign one. This is also the `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    #[serde(flatten)]
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// Where a signal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signalled {
    pub generation: Option<u64>,
    pub pid: Option<i32>,
}

/// How an error should end a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request itself is wrong (exit 2).
    Usage,
    /// The service is not running, or there is no such service (exit 3).
    NotRunning,
    /// The service was reached and something failed (exit 1).
    Failure,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("invalid service name '{name}'; use letters, digits, '-', '_', '.' or '@', like 'api'")]
    InvalidName { name: String },
    #[error(transparent)]
    Config(ConfigError),
    #[error("{}{}", no_such_service(name, searched, &paths::runtime_dir()), crate::suggest::did_you_mean(suggestion.as_deref()))]
    NoSuchService {
        name: String,
        searched: Vec<PathBuf>,
        /// The known service whose name is closest, when one is close.
        suggestion: Option<String>,
    },
    #[error(
        "service '{name}' is not running: no supervisor answers on '{}'; start it with \
         'zdctl run {name}'",
        socket.display()
    )]
    NotRunning { name: String, socket: PathBuf },
    #[error(
        "a restart of '{name}' is already running{}; wait for it, or follow it with \
         'zdctl restart {name} --attach'",
        restart.map(|n| format!(" (restart #{n})")).unwrap_or_default()
    )]
    Busy { name: String, restart: Option<u64> },
    #[error("the supervisor of '{name}' refused: {message}")]
    Refused { name: String, message: String },
    #[error("the supervisor of '{name}' closed the connection before answering; check its log")]
    Closed { name: String },
    /// Whole sentences that name the socket and what to do.
    #[error("cannot control '{name}': {reason}")]
    Unreachable { name: String, reason: ClientError },
    #[error("talking to the supervisor of '{name}' failed")]
    Client {
        name: String,
        #[source]
        source: ClientError,
    },
    #[error("the supervisor of '{name}' sent an unexpected answer: {detail}")]
    Unexpected { name: String, detail: String },
    /// The driver's error says it all; its causes follow it.
    #[error("'{name}': {error}")]
    Driver { name: String, error: DriverError },
    #[error("'{name}' is run by {driver}, not by 'zdctl run', so zdctl cannot {what} it; {hint}")]
    Unsupported {
        name: String,
        driver: &'static str,
        what: &'static str,
        hint: String,
    },
    #[error(
        "the supervisor of '{name}' (pid {pid}) answered 'stopped' but did not exit within \
         {}s; its listeners may still be open: check 'zdctl status {name}' and its log",
        waited.as_secs()
    )]
    StillRunning {
        name: String,
        pid: i32,
        waited: Duration,
    },
    #[error("reading the status of '{name}' took longer than {}s", STATUS_DEADLINE.as_secs())]
    StatusDeadline { name: String },
    #[error("the supervisor of '{name}' is busy: {reason}; run 'zdctl reexec {name}' again")]
    ReexecBusy { name: String, reason: String },
    #[error("reexec of '{name}' failed: {reason}; the supervisor runs on as before")]
    ReexecFailed { name: String, reason: String },
    #[error(
        "the supervisor of '{name}' did not answer within {}s after its reexec; check its log \
         and 'zdctl status {name}'",
        waited.as_secs()
    )]
    ReexecSilent { name: String, waited: Duration },
}

/// How a `revert` went (see [`Service::revert`]): `generation` was drained and
/// `old_generation` serves alone again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reverted {
    pub generation: u64,
    pub old_generation: u64,
}

/// How a `reexec` went (see [`Service::reexec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reexecuted {
    pub supervisor_pid: i32,
    pub from_version: String,
    pub to_version: String,
    pub binary: String,
    /// From the request to the new binary's first answer to `status`.
    pub elapsed_ms: u64,
    pub elapsed_us: u64,
    /// The listeners' inodes, the same before and after.
    pub listener_inodes: Vec<u64>,
    /// The supervisor's reexecs so far.
    pub reexecs: u64,
}

impl ServiceError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ServiceError::InvalidName { .. }
            | ServiceError::Config(_)
            | ServiceError::Unsupported { .. } => ErrorClass::Usage,
            ServiceError::NoSuchService { .. } | ServiceError::NotRunning { .. } => {
                ErrorClass::NotRunning
            }
            ServiceError::Driver { error, .. } if error.is_not_running() => ErrorClass::NotRunning,
            _ => ErrorClass::Failure,
        }
    }

    /// Whether the error only says the service is not running (a listing skips it).
    pub fn is_not_running(&self) -> bool {
        self.class() == ErrorClass::NotRunning
    }
}

/// The known service (a file or a running supervisor) whose name is closest to `name`,
/// when one is close enough to be a typo of it.
pub fn closest_service(name: &str) -> Option<String> {
    let mut known: Vec<String> = config::discover().into_iter().map(|f| f.name).collect();
    known.extend(paths::socket_services());
    closest(name, &known)
}

/// The name of `known` closest to `name`, never `name`.
fn closest(name: &str, known: &[String]) -> Option<String> {
    crate::suggest::closest(name, known.iter().map(String::as_str)).map(str::to_owned)
}

/// The message for a name that has neither a service file nor a supervisor.
pub fn no_such_service(name: &str, searched: &[PathBuf], runtime: &Path) -> String {
    let dirs: Vec<String> = searched
        .iter()
        .map(|d| format!("'{}'", d.display()))
        .collect();
    let dirs = if dirs.is_empty() {
        "no service directory".to_owned()
    } else {
        dirs.join(", ")
    };
    format!(
        "no service named '{name}': looked in {dirs} and '{}'; check the name with \
         'zdctl list', or start it with 'zdctl run'",
        runtime.display()
    )
}

impl Service {
    /// The service called `name`: its file in the config directories says whether a
    /// driver works it; without a file, it is a supervisor's control socket (`zdctl run`
    /// with flags). Opening reaches nothing: a service that is not running is an error of
    /// the call that needs it to run.
    pub fn open(name: &str) -> Result<Service, ServiceError> {
        if !paths::valid_service_name(name) {
            return Err(ServiceError::InvalidName {
                name: name.to_owned(),
            });
        }
        match config::find_service(name) {
            Ok(path) => Service::from_file(name, &path),
            Err(ConfigError::NotFound { searched, .. }) => Ok(Service {
                name: name.to_owned(),
                runner: Runner::Supervisor {
                    socket: paths::control_socket(name),
                },
                file: None,
                searched: Some(searched),
            }),
            // A directory that cannot be listed: the supervisor, if one runs, still
            // answers.
            Err(_) => Ok(Service::supervised(name)),
        }
    }

    /// The service whose file is `path`. A driver file that is invalid is an error (nothing
    /// could drive it); a native file that cannot be read or used is not, since its
    /// supervisor runs on with its last good configuration.
    pub fn from_file(name: &str, path: &Path) -> Result<Service, ServiceError> {
        let runner = match config::load_any(path) {
            Ok(ServiceFile::Driver(config)) => Runner::Driver(config),
            Err(err) if matches!(err, ConfigError::Invalid { .. } | ConfigError::Many { .. }) => {
                return Err(ServiceError::Config(err));
            }
            _ => Runner::Supervisor {
                socket: paths::control_socket(name),
            },
        };
        Ok(Service {
            name: name.to_owned(),
            runner,
            file: Some(path.to_owned()),
            searched: None,
        })
    }

    /// A service known only by its control socket.
    fn supervised(name: &str) -> Service {
        Service::supervised_at(name, &paths::control_socket(name))
    }

    /// The service our supervisor runs with its control socket at `socket`, wherever
    /// that is (a private runtime directory).
    pub fn supervised_at(name: &str, socket: &Path) -> Service {
        Service {
            name: name.to_owned(),
            runner: Runner::Supervisor {
                socket: socket.to_owned(),
            },
            file: None,
            searched: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The service file, when there is one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The driver's name (`psflip`, `nginx`, ...) for a foreign service.
    pub fn driver(&self) -> Option<&'static str> {
        match &self.runner {
            Runner::Driver(config) => Some(config.kind.name()),
            Runner::Supervisor { .. } => None,
        }
    }

    /// The status: generations, listeners, counters and the last restart.
    pub async fn status(&self) -> Result<ServiceStatus, ServiceError> {
        match &self.runner {
            Runner::Supervisor { .. } => {
                let mut client = self.connect().await?;
                let reply = client
                    .call(Op::Status, |_| {})
                    .await
                    .map_err(|e| self.client_error(e))?;
                match self.result(reply)? {
                    ReplyResult::Status(status) => Ok(ServiceStatus {
                        status: *status,
                        driver: None,
                    }),
                    other => Err(self.unexpected(&other)),
                }
            }
            Runner::Driver(config) => {
                let config = DriverConfig::clone(config);
                let read = tokio::task::spawn_blocking(move || {
                    let mut status = driver::status(&config)?;
                    if status.listeners.is_empty() {
                        status.listeners = listeners_of(&status);
                    }
                    Ok(status)
                });
                let status = match tokio::time::timeout(STATUS_DEADLINE, read).await {
                    Ok(Ok(status)) => status.map_err(|e| self.driver_error(e))?,
                    Ok(Err(join)) => {
                        return Err(self.driver_error(DriverError::io(
                            "read the service's processes",
                            std::io::Error::other(join.to_string()),
                        )));
                    }
                    Err(_) => {
                        return Err(ServiceError::StatusDeadline {
                            name: self.name.clone(),
                        });
                    }
                };
                Ok(ServiceStatus {
                    status,
                    driver: self.driver().map(str::to_owned),
                })
            }
        }
    }

    /// Restarts the service, passing each event to `on_event` as it happens. An error
    /// means the restart could not be asked for or followed; a restart that rolled back
    /// or failed is a report saying so.
    pub async fn restart(
        &self,
        options: RestartOptions,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Restarted, ServiceError> {
        match &self.runner {
            Runner::Supervisor { .. } => {
                let mut client = self.connect().await?;
                let op = Op::Restart {
                    ready_timeout_ms: options
                        .timeout
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                    attach: options.attach,
                    no_bake: options.no_bake,
                };
                let mut promoted = None;
                let reply = client
                    .call_until(op, |event| {
                        on_event(event);
                        if options.until_promoted
                            && matches!(event.kind, EventKind::Promoted { .. })
                        {
                            promoted = Some(Box::new(event.clone()));
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    })
                    .await
                    .map_err(|e| self.client_error(e))?;
                if let Some(event) = promoted {
                    return Ok(Restarted::Promoted(event));
                }
                let Some(reply) = reply else {
                    return Err(ServiceError::Closed {
                        name: self.name.clone(),
                    });
                };
                match self.result(reply)? {
                    ReplyResult::Restart(report) => Ok(Restarted::Finished(report)),
                    other => Err(self.unexpected(&other)),
                }
            }
            Runner::Driver(config) => {
                let timeout = options.timeout.unwrap_or(config.timeout);
                match driver::restart(config, timeout, |event| on_event(&event)).await {
                    Ok(report) => Ok(Restarted::Finished(report)),
                    Err(DriverError::Busy { restart }) if options.attach => {
                        // The other zdctl runs the restart and sees its events; this one
                        // waits for its lock and reports its outcome from the record.
                        driver::follow(config, restart, timeout)
                            .await
                            .map(Restarted::Finished)
                            .map_err(|e| self.driver_error(e))
                    }
                    Err(err) => Err(self.driver_error(err)),
                }
            }
        }
    }

    /// Stops a service our supervisor runs: every generation drains, then the supervisor
    /// exits. Returns the supervisor's message once its process is gone (within
    /// `exit_limit` after it answered), so its listeners are closed.
    pub async fn stop(
        &self,
        exit_limit: Duration,
        on_event: impl FnMut(&Event),
    ) -> Result<String, ServiceError> {
        if let Runner::Driver(config) = &self.runner {
            return Err(self.unsupported(
                "stop",
                format!("stop it with {} itself", config.kind.name()),
            ));
        }
        let mut client = self.connect().await?;
        // The supervisor's pid, held as a pidfd so that waiting for its exit cannot wait
        // for a stranger that reused the number.
        let reply = client
            .call(Op::Status, |_| {})
            .await
            .map_err(|e| self.client_error(e))?;
        let supervisor = match self.result(reply)? {
            ReplyResult::Status(status) => {
                let pid = pid_here(status.supervisor_pid, client.supervisor_pid());
                crate::proc::pidfd(pid).map(|fd| (pid, fd))
            }
            _ => None,
        };
        let reply = client
            .call(Op::Stop, on_event)
            .await
            .map_err(|e| self.client_error(e))?;
        drop(client);
        let message = match self.result(reply)? {
            ReplyResult::Done { message } => message,
            other => return Err(self.unexpected(&other)),
        };
        if let Some((pid, pidfd)) = supervisor {
            let gone =
                tokio::task::spawn_blocking(move || crate::proc::wait_gone(&pidfd, exit_limit))
                    .await
                    .unwrap_or(false);
            if !gone {
                return Err(ServiceError::StillRunning {
                    name: self.name.clone(),
                    pid,
                    waited: exit_limit,
                });
            }
        }
        Ok(message)
    }

    /// During a restart's `bake` window: drains the new generation and keeps the old one
    /// (see [`Op::Revert`]). Returns once the old generation is the only one left, with
    /// the events of the drain passed to `on_event`. A supervisor with no bake running
    /// refuses ([`ServiceError::Refused`]); a driven service has no bake window.
    pub async fn revert(&self, on_event: impl FnMut(&Event)) -> Result<Reverted, ServiceError> {
        if let Runner::Driver(_) = &self.runner {
            return Err(self.unsupported(
                "revert",
                "revert needs a service run by 'zdctl run' with 'bake'".to_owned(),
            ));
        }
        let mut client = self.connect().await?;
        let reply = client
            .call(Op::Revert, on_event)
            .await
            .map_err(|e| self.client_error(e))?;
        match self.result(reply)? {
            ReplyResult::Reverted {
                generation,
                old_generation,
            } => Ok(Reverted {
                generation,
                old_generation,
            }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Re-executes the supervisor in place with `binary` (its installed binary when
    /// `None`): waits while the supervisor is busy (a restart running) up to `wait`, then
    /// until the new binary answers `status`. Succeeds only when the supervisor that answers
    /// is the same process, with one more reexec and the same listeners.
    pub async fn reexec(
        &self,
        binary: Option<String>,
        wait: Duration,
    ) -> Result<Reexecuted, ServiceError> {
        if let Runner::Driver(config) = &self.runner {
            return Err(self.unsupported(
                "reexec",
                format!("upgrade {} with its own mechanism", config.kind.name()),
            ));
        }
        let name = self.name.clone();
        let inodes = |s: &Status| s.listeners.iter().map(|l| l.inode).collect::<Vec<_>>();
        let busy_until = std::time::Instant::now() + wait;
        let (before, sent, sent_unix_ms) = loop {
            // Read before each attempt, not once: a restart that kept the supervisor busy
            // may have ended in between (and another reexec too).
            let before = self.status().await?.status;
            let sent = std::time::Instant::now();
            let sent_unix_ms = crate::proto::unix_ms(std::time::SystemTime::now());
            let mut client = self.connect().await?;
            let reply = client
                .call(
                    Op::Reexec {
                        binary: binary.clone(),
                    },
                    |_| {},
                )
                .await
                .map_err(|e| self.client_error(e))?;
            match reply {
                Reply::Result { .. } => break (before, sent, sent_unix_ms),
                Reply::Error { error, .. } if error.kind == ErrorKind::Busy => {
                    if std::time::Instant::now() >= busy_until {
                        return Err(ServiceError::ReexecBusy {
                            name,
                            reason: error.message,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Reply::Error { error, .. } => {
                    return Err(ServiceError::ReexecFailed {
                        name,
                        reason: error.message,
                    });
                }
                Reply::Event { .. } => {
                    return Err(ServiceError::Unexpected {
                        name,
                        detail: "an event where a result was expected".to_owned(),
                    });
                }
            }
        };
        let reexecs_before = before.supervisor.as_ref().map_or(0, |s| s.reexecs);
        // The old binary answered and is handing over: the next status comes from the new
        // one, or from the old one if its execve failed.
        let deadline = std::time::Instant::now() + REEXEC_ANSWER;
        loop {
            if let Ok(status) = self.status().await.map(|s| s.status) {
                let me = status.supervisor.clone();
                let reexecs = me.as_ref().map_or(0, |s| s.reexecs);
                let failed = me
                    .as_ref()
                    .and_then(|s| s.last_reexec.as_ref())
                    .filter(|r| r.unix_ms >= sent_unix_ms)
                    .and_then(|r| r.error.clone());
                if reexecs > reexecs_before {
                    let elapsed = sent.elapsed();
                    if status.supervisor_pid != before.supervisor_pid {
                        return Err(ServiceError::ReexecFailed {
                            name,
                            reason: format!(
                                "the supervisor now answers as pid {}, not {}",
                                status.supervisor_pid, before.supervisor_pid
                            ),
                        });
                    }
                    // The listeners are the same sockets: the new binary took each back
                    // only if its inode was the recorded one, and failed otherwise.
                    let me = me.unwrap_or_else(|| unreachable!("reexecs counted above"));
                    let last = me.last_reexec.unwrap_or_else(|| ReexecInfo {
                        unix_ms: 0,
                        from_version: String::new(),
                        binary: String::new(),
                        error: None,
                    });
                    return Ok(Reexecuted {
                        supervisor_pid: status.supervisor_pid,
                        from_version: last.from_version,
                        to_version: me.version,
                        binary: last.binary,
                        elapsed_ms: elapsed.as_millis() as u64,
                        elapsed_us: elapsed.as_micros() as u64,
                        listener_inodes: inodes(&status),
                        reexecs,
                    });
                }
                if let Some(reason) = failed {
                    return Err(ServiceError::ReexecFailed { name, reason });
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(ServiceError::ReexecSilent {
                    name,
                    waited: REEXEC_ANSWER,
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The lines the generations printed, as the supervisor keeps them (see
    /// [`Op::Logs`]). A driven service's programs print to their own supervisor's output,
    /// which zdctl does not read.
    pub async fn logs(
        &self,
        generation: Option<u64>,
        after: Option<u64>,
        until: Option<u64>,
        lines: Option<u32>,
    ) -> Result<LogsReport, ServiceError> {
        if let Runner::Driver(config) = &self.runner {
            return Err(self.unsupported(
                "read the output of",
                format!(
                    "its programs print to {}'s own output or log files",
                    config.kind.name()
                ),
            ));
        }
        let mut client = self.connect().await?;
        let op = Op::Logs {
            generation,
            after,
            until,
            lines,
        };
        let reply = client
            .call(op, |_| {})
            .await
            .map_err(|e| self.client_error(e))?;
        match self.result(reply)? {
            ReplyResult::Logs(report) => Ok(report),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Sends `signal` to the active generation's main process.
    pub async fn signal(&self, signal: Signal) -> Result<Signalled, ServiceError> {
        match &self.runner {
            Runner::Supervisor { .. } => {
                let mut client = self.connect().await?;
                let mut delivered = Signalled {
                    generation: None,
                    pid: None,
                };
                let reply = client
                    .call(
                        Op::Signal {
                            signal: signal.to_string(),
                        },
                        |event| {
                            if let EventKind::Signalled {
                                generation, pid, ..
                            } = &event.kind
                            {
                                delivered = Signalled {
                                    generation: Some(*generation),
                                    pid: Some(*pid),
                                };
                            }
                        },
                    )
                    .await
                    .map_err(|e| self.client_error(e))?;
                match self.result(reply)? {
                    ReplyResult::Done { .. } => Ok(delivered),
                    other => Err(self.unexpected(&other)),
                }
            }
            Runner::Driver(config) => {
                let config = DriverConfig::clone(config);
                let send =
                    tokio::task::spawn_blocking(move || driver::signal_active(&config, signal));
                match tokio::time::timeout(STATUS_DEADLINE, send).await {
                    Ok(Ok(Ok((generation, pid)))) => Ok(Signalled {
                        generation: Some(generation),
                        pid: Some(pid),
                    }),
                    Ok(Ok(Err(e))) => Err(self.driver_error(e)),
                    Ok(Err(join)) => Err(self.driver_error(DriverError::io(
                        "signal the service",
                        std::io::Error::other(join.to_string()),
                    ))),
                    Err(_) => Err(ServiceError::StatusDeadline {
                        name: self.name.clone(),
                    }),
                }
            }
        }
    }

    /// What `zdctl top` shows of the service: each generation's processes, fds,
    /// listeners and connections, numbered as `status` numbers them.
    pub fn snapshot(
        &self,
        inspector: &mut Inspector,
        status: &Status,
    ) -> Result<Snapshot, InspectError> {
        inspector.snapshot_native(status)
    }

    async fn connect(&self) -> Result<Client, ServiceError> {
        let Runner::Supervisor { socket } = &self.runner else {
            unreachable!("only a supervisor has a control socket");
        };
        match Client::connect(socket).await {
            Ok(client) => Ok(client),
            Err(ClientError::NotRunning { .. }) => Err(match &self.searched {
                Some(searched) => ServiceError::NoSuchService {
                    suggestion: closest_service(&self.name),
                    name: self.name.clone(),
                    searched: searched.clone(),
                },
                None => ServiceError::NotRunning {
                    name: self.name.clone(),
                    socket: socket.clone(),
                },
            }),
            Err(e) => Err(self.client_error(e)),
        }
    }

    /// The final reply of a request that expects a result: the result, or the error.
    fn result(&self, reply: Reply) -> Result<ReplyResult, ServiceError> {
        match reply {
            Reply::Result { result, .. } => Ok(*result),
            Reply::Error { error, .. } => Err(self.reply_error(&error)),
            Reply::Event { .. } => Err(ServiceError::Unexpected {
                name: self.name.clone(),
                detail: "an event where a result was expected".to_owned(),
            }),
        }
    }

    fn reply_error(&self, error: &ErrorReply) -> ServiceError {
        match error.kind {
            ErrorKind::Busy => ServiceError::Busy {
                name: self.name.clone(),
                restart: error.restart,
            },
            _ => ServiceError::Refused {
                name: self.name.clone(),
                message: error.message.clone(),
            },
        }
    }

    fn unexpected(&self, result: &ReplyResult) -> ServiceError {
        ServiceError::Unexpected {
            name: self.name.clone(),
            detail: format!("{result:?}"),
        }
    }

    fn client_error(&self, err: ClientError) -> ServiceError {
        let name = self.name.clone();
        match err {
            ClientError::Closed => ServiceError::Closed { name },
            source @ (ClientError::PermissionDenied { .. }
            | ClientError::Untrusted { .. }
            | ClientError::NoAnswer { .. }
            | ClientError::NotAccepting { .. }) => ServiceError::Unreachable {
                name,
                reason: source,
            },
            source => ServiceError::Client { name, source },
        }
    }

    fn driver_error(&self, err: DriverError) -> ServiceError {
        match err {
            DriverError::Busy { restart } => ServiceError::Busy {
                name: self.name.clone(),
                restart,
            },
            error => ServiceError::Driver {
                name: self.name.clone(),
                error,
            },
        }
    }

    fn unsupported(&self, what: &'static str, hint: String) -> ServiceError {
        ServiceError::Unsupported {
            name: self.name.clone(),
            driver: self.driver().unwrap_or("its supervisor"),
            what,
            hint,
        }
    }
}

/// The pid to wait on for a supervisor that calls itself `reported`, given the pid the
/// kernel reports for the control socket's peer (`SO_PEERCRED`, in our pid namespace).
/// The two agree when the supervisor shares our pid namespace. One that is PID 1 of a
/// container's calls itself 1, which here is our own init: there only the kernel's figure
/// names it.
fn pid_here(reported: i32, peer: Option<i32>) -> i32 {
    match peer {
        Some(peer)
            if peer != reported && crate::proc::shares_pid_namespace(peer) == Some(false) =>
        {
            peer
        }
        _ => reported,
    }
}

/// The listening sockets a foreign service's processes hold, as our supervisor lists its
/// own: each with the fd it has in the first process holding it (the newest generation's
/// first, then the supervisor's), and that process's name.
fn listeners_of(status: &Status) -> Vec<ListenerInfo> {
    let Ok(snapshot) = Inspector::default().snapshot_native(status) else {
        return Vec::new();
    };
    let mut holders: Vec<i32> = status
        .generations
        .iter()
        .filter(|g| g.exit.is_none())
        .map(|g| g.pid)
        .collect();
    holders.push(status.supervisor_pid);
    let fds: Vec<(i32, Vec<(i32, u64)>)> = holders
        .iter()
        .map(|&pid| (pid, crate::proc::socket_fds(pid).unwrap_or_default()))
        .collect();
    snapshot
        .listeners
        .iter()
        .filter_map(|listener| {
            let (pid, fd) = fds.iter().find_map(|(pid, fds)| {
                fds.iter()
                    .find(|(_, inode)| *inode == listener.inode)
                    .map(|(fd, _)| (*pid, *fd))
            })?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim().to_owned())
                .unwrap_or_default();
            Some(ListenerInfo {
                name,
                address: listener.address.clone(),
                inode: listener.inode,
                fd,
            })
        })
        .collect()
}

/// A service found by [`discover`]: its name, its file and why that file cannot be used.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub file: Option<PathBuf>,
    /// Why the file cannot be used (the full `file:line:col:` message).
    pub error: Option<String>,
    /// The service, unless its file names a driver but is invalid.
    pub service: Option<Service>,
}

/// Every service there is: the files of the config directories, then the control sockets
/// of supervisors that have no file, sorted by name.
pub fn discover() -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    for file in config::discover() {
        if found.iter().any(|f| f.name == file.name) {
            continue;
        }
        // The file was read once by `config::discover`: a driver file's config is kept,
        // and any other file is a supervisor's (whose own reading reports its errors).
        let runner = match file.driver {
            Some(config) => Runner::Driver(config),
            None => Runner::Supervisor {
                socket: paths::control_socket(&file.name),
            },
        };
        // A driver file that cannot be used drives nothing.
        let service = (!file.bad_driver).then(|| Service {
            name: file.name.clone(),
            runner,
            file: Some(file.path.clone()),
            searched: None,
        });
        found.push(Found {
            name: file.name,
            file: Some(file.path),
            error: file.error,
            service,
        });
    }
    for name in paths::socket_services() {
        if !found.iter().any(|f| f.name == name) {
            found.push(Found {
                service: Some(Service::supervised(&name)),
                name,
                file: None,
                error: None,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The status of every running service, as [`discover`] finds them, fetched together:
/// a service that is not running (or whose control socket is stale) is left out; one that
/// runs but fails to answer is listed with its error.
pub async fn running() -> Vec<(Service, Result<ServiceStatus, ServiceError>)> {
    let services: Vec<Service> = discover().into_iter().filter_map(|f| f.service).collect();
    statuses(services)
        .await
        .into_iter()
        .filter(|(_, status)| !matches!(status, Err(e) if e.is_not_running()))
        .collect()
}

/// The status of each service, fetched concurrently, in the order given: one that does
/// not answer delays the whole by one deadline, not one per service.
pub async fn statuses(
    services: Vec<Service>,
) -> Vec<(Service, Result<ServiceStatus, ServiceError>)> {
    let mut fetches = tokio::task::JoinSet::new();
    for (i, service) in services.into_iter().enumerate() {
        fetches.spawn(async move {
            let status = service.status().await;
            (i, service, status)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = fetches.join_next().await {
        if let Ok(one) = joined {
            done.push(one);
        }
    }
    done.sort_by_key(|(i, _, _)| *i);
    done.into_iter().map(|(_, s, status)| (s, status)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_waits_on_the_reported_pid_unless_the_supervisor_is_in_another_pid_namespace() {
        let me = std::process::id() as i32;
        assert_eq!(pid_here(4242, None), 4242);
        assert_eq!(pid_here(me, Some(me)), me);
        // A peer in our own namespace that reports another pid is believed: only a
        // supervisor in another namespace is named by the kernel's figure instead.
        assert_eq!(pid_here(1, Some(me)), 1);
    }

    #[test]
    fn the_no_such_service_message_names_every_place_looked() {
        let message = no_such_service(
            "nosuch",
            &[PathBuf::from("/etc/zdctl/services.d")],
            Path::new("/run/zdctl"),
        );
        assert_eq!(
            message,
            "no service named 'nosuch': looked in '/etc/zdctl/services.d' and '/run/zdctl'; \
             check the name with 'zdctl list', or start it with 'zdctl run'"
        );
    }

    #[test]
    fn a_name_one_typo_away_from_a_known_service_is_suggested() {
        let known = vec!["pyapp".to_owned(), "api".to_owned(), "worker".to_owned()];
        assert_eq!(closest("pyap", &known), Some("pyapp".to_owned()));
        assert_eq!(closest("wroker", &known), Some("worker".to_owned()));
        assert_eq!(closest("zzz", &known), None);
        assert_eq!(closest("api", &known), None, "never the name itself");
    }

    #[test]
    fn busy_names_the_running_restart_and_how_to_follow_it() {
        let err = ServiceError::Busy {
            name: "api".into(),
            restart: Some(4),
        };
        assert_eq!(
            err.to_string(),
            "a restart of 'api' is already running (restart #4); wait for it, or follow it \
             with 'zdctl restart api --attach'"
        );
        assert_eq!(err.class(), ErrorClass::Failure);
    }

    #[test]
    fn an_invalid_name_is_a_usage_error_before_anything_is_looked_up() {
        let err = Service::open("../etc").expect_err("invalid");
        assert_eq!(err.class(), ErrorClass::Usage);
    }
}
