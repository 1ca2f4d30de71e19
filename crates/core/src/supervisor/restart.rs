//! One restart, as DESIGN §6 draws it:
//!
//! ```text
//! request ─► re-read config (invalid: fail, old untouched)
//!         ─► spawn gen N+1 ─► wait readiness ──fail/exit/timeout──► stop gen N+1 ─► RolledBack
//!                                  │ ready
//!                                  ▼
//!                           promote N+1, write pidfile
//!                                  ▼
//!                  drain gen N: stop signal, wait ≤ drain timeout, SIGKILL ─► Completed
//! ```
//!
//! [`RestartRun::begin`] runs inside the owner, up to the new child; [`RestartRun::run`] is
//! a task of its own that waits and drains, and changes the state only by asking the owner.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Context;
use super::drain::drain;
use super::output::KEEP_LINES;
use super::owner::{Msg, Promotion, Started};
use crate::config::{FileCache, ServiceConfig};
use crate::duration::format_duration;
use crate::proto::{EventKind, RestartOutcome, RestartReport};

/// How long a failed restart's report waits for the last lines of the generation that
/// failed, after it exited: what a process it started still holds its pipes open.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// How [`RestartRun::begin`] ended: the new generation and the config it runs, or the
/// outcome of a restart that could not start one; `None` when the service file changed and
/// must be read first, which [`RestartRun::run`] does off the owner.
pub(super) struct Begun {
    old_generation: Option<u64>,
    spawned: Option<Result<(ServiceConfig, Started), RestartOutcome>>,
}

/// The config for the new generation, with the event that says the file was read.
type Reloaded = Result<(ServiceConfig, Option<(Instant, EventKind)>), String>;

pub(super) struct RestartRun {
    pub cx: Arc<Context>,
    pub restart: u64,
    pub started: Instant,
    pub ready_timeout: Option<Duration>,
    /// The config the service runs as the restart begins. No other restart can change it
    /// meanwhile: one runs at a time.
    pub current: ServiceConfig,
}

impl RestartRun {
    fn emit(&self, kind: EventKind) {
        self.cx.emit(Some((self.restart, self.started)), kind);
    }

    /// The start of the restart, up to the new child: the config taken again and the new
    /// generation spawned by `spawn`. It is synchronous and runs in the owner, where the
    /// request was taken, so that no task switch, which can wait for a CPU on a busy
    /// machine, stands between the request and the child. A changed service file is not
    /// read here: reading may block (a FIFO, a stalled mount), and this is the owner.
    pub fn begin(
        &self,
        old_generation: Option<u64>,
        spawn: impl FnOnce(&ServiceConfig) -> Result<Started, String>,
    ) -> Begun {
        // Until the child exists, events are recorded and sent only after: each send wakes
        // the threads that write to clients, and on a busy machine a woken thread can preempt
        // this one in the middle of the millisecond it needs.
        let mut pending = vec![(self.started, EventKind::RestartRequested)];
        let spawned = self.config_at_hand().map(|config| {
            let (config, reloaded) = config.map_err(|reason| RestartOutcome::Failed { reason })?;
            pending.extend(reloaded);
            let started = spawn(&config);
            self.spawned(config, started, &mut pending)
        });
        self.flush(&mut pending);
        Begun {
            old_generation,
            spawned,
        }
    }

    /// The new generation started with `config`, or why not, recording the events to send.
    fn spawned(
        &self,
        config: ServiceConfig,
        started: Result<Started, String>,
        pending: &mut Vec<(Instant, EventKind)>,
    ) -> Result<(ServiceConfig, Started), RestartOutcome> {
        match started {
            Ok(started) => {
                pending.push((
                    started.child.spawned_at(),
                    EventKind::Spawned {
                        generation: started.generation,
                        pid: started.pid,
                    },
                ));
                Ok((config, started))
            }
            Err(e) => Err(RestartOutcome::Failed {
                reason: format!("cannot start the new generation: {e}"),
            }),
        }
    }

    /// Runs the rest of the restart to its end and reports the outcome to the owner.
    pub async fn run(self, begun: Begun) {
        let Begun {
            old_generation,
            spawned,
        } = begun;
        let spawned = match spawned {
            Some(spawned) => spawned,
            None => self.read_and_spawn().await,
        };
        let (outcome, new, log) = match spawned {
            Ok((config, started)) => {
                let new = Some((started.generation, started.pid));
                let log = started.child.output();
                (self.attempt(config, started).await, new, log)
            }
            Err(outcome) => (outcome, None, None),
        };
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        // Why it failed, in its own words: its last lines, once its pipes have ended (it
        // was stopped before we get here, but what it printed last may still be in them).
        let output = match log {
            Some(log) if !outcome.is_success() => {
                log.wait_closed(LAST_WORDS).await;
                log.last(KEEP_LINES)
            }
            _ => Vec::new(),
        };
        let report = RestartReport {
            restart: self.restart,
            outcome,
            old_generation,
            new_generation: new.map(|(g, _)| g),
            new_pid: new.map(|(_, p)| p),
            elapsed_ms,
            output,
            new_pids: Vec::new(),
            steps: None,
            bake_ms: None,
        };
        match &report.outcome {
            RestartOutcome::Completed => info!(restart = self.restart, "restart completed"),
            other => warn!(
                restart = self.restart,
                reason = other.reason().unwrap_or(""),
                "restart did not complete"
            ),
        }
        self.cx.tell(Msg::RestartFinished {
            report,
            started: self.started,
        });
        super::release_freed_memory();
    }

    /// Reads the changed service file, then has the owner spawn the new generation.
    async fn read_and_spawn(&self) -> Result<(ServiceConfig, Started), RestartOutcome> {
        // A stop does not wait for the read: it may take until its deadline.
        let mut stopping = self.cx.stopping.subscribe();
        let config = tokio::select! {
            config = self.read_config() => config,
            _ = stopping.wait_for(|s| *s) => Err("the supervisor is stopping".to_owned()),
        };
        let (config, reloaded) = config.map_err(|reason| RestartOutcome::Failed { reason })?;
        let mut pending = Vec::from_iter(reloaded);
        let started = self
            .cx
            .ask(|reply| Msg::Spawn {
                config: Box::new(config.clone()),
                reply,
            })
            .await
            .unwrap_or_else(|| Err("the supervisor is stopping".to_owned()));
        let spawned = self.spawned(config, started, &mut pending);
        self.flush(&mut pending);
        spawned
    }

    /// Sends events recorded earlier, each with the time it happened.
    fn flush(&self, pending: &mut Vec<(Instant, EventKind)>) {
        for (at, kind) in pending.drain(..) {
            self.cx
                .emit_at(Some((self.restart, self.started)), at, kind);
        }
    }

    fn restart_tag(&self) -> Option<(u64, Instant)> {
        Some((self.restart, self.started))
    }

    /// From the new generation's start: wait for it to be ready, promote it, drain the old.
    async fn attempt(&self, config: ServiceConfig, started: Started) -> RestartOutcome {
        let Started {
            generation,
            pid,
            child,
            mut exited,
        } = started;
        let checks: Vec<String> = config.ready.checks.iter().map(|c| c.to_string()).collect();
        let timeout = self.ready_timeout.unwrap_or(config.ready.timeout);
        self.emit(EventKind::WaitingReady {
            generation,
            checks,
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        });

        let mut stopping = self.cx.stopping.subscribe();
        let verdict: Result<String, String> = tokio::select! {
            r = tokio::time::timeout(timeout, child.wait_ready(&config.ready.checks)) => match r {
                Ok(Ok(evidence)) => Ok(evidence),
                Ok(Err(e)) => Err(format!("generation {generation} (pid {pid}) failed its readiness check: {e}")),
                Err(_) => Err(format!(
                    "generation {generation} (pid {pid}) was not ready within {} ({}){}",
                    format_duration(timeout),
                    config.ready.checks.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
                    child.not_ready_detail(&config.ready.checks),
                )),
            },
            status = exited.wait_for(|s| s.is_some()) => {
                let status = status.ok().and_then(|s| *s);
                Err(match (child.exec_failure(), status) {
                    (Some(e), _) => format!("generation {generation} (pid {pid}) could not start: {e}"),
                    (None, Some(s)) => format!("generation {generation} (pid {pid}) exited with {s} before it was ready"),
                    (None, None) => format!("generation {generation} (pid {pid}) exited before it was ready"),
                })
            },
            _ = stopping.wait_for(|s| *s) => Err("the supervisor is stopping".to_owned()),
        };
        match verdict {
            Ok(evidence) => {
                // It serves requests from now on: at the priority it would have without us.
                child.end_idle_start();
                self.emit(EventKind::Ready {
                    generation,
                    evidence,
                });
            }
            Err(reason) => {
                drain(&self.cx, generation, self.restart_tag()).await;
                return RestartOutcome::RolledBack { reason };
            }
        }

        // The pidfile names the new generation before anything depends on it: one that
        // cannot be written (a full disk, a directory made read-only) rolls the restart back
        // rather than leave whatever reads it signalling a generation that is about to go.
        if let Some(path) = &config.pidfile {
            if let Err(e) = crate::pidfile::write(path, pid) {
                drain(&self.cx, generation, self.restart_tag()).await;
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                return RestartOutcome::RolledBack {
                    reason: format!("{e}{cause}; the old generation keeps serving"),
                };
            }
            info!(pid, path = %path.display(), "pidfile written");
        }

        // Promote: from here on the new generation is the service.
        let pidfile = config.pidfile.clone();
        let promotion = self
            .cx
            .ask(|reply| Msg::Promote {
                generation,
                config: Box::new(config),
                reply,
            })
            .await
            .unwrap_or(Promotion::Stopping { active_pid: None });
        let old = match promotion {
            Promotion::Promoted { old } => old,
            Promotion::Stopping { active_pid } => {
                self.restore_pidfile(pidfile.as_deref(), active_pid);
                drain(&self.cx, generation, self.restart_tag()).await;
                return RestartOutcome::RolledBack {
                    reason: "the supervisor is stopping".into(),
                };
            }
            Promotion::Unsteerable { reason, active_pid } => {
                self.restore_pidfile(pidfile.as_deref(), active_pid);
                drain(&self.cx, generation, self.restart_tag()).await;
                return RestartOutcome::RolledBack { reason };
            }
        };
        self.emit(EventKind::Promoted { generation, pid });
        if let Some(old) = old {
            drain(&self.cx, old, self.restart_tag()).await;
        }
        RestartOutcome::Completed
    }

    /// After a promotion that did not happen: the pidfile names the generation that is
    /// still the service.
    fn restore_pidfile(&self, pidfile: Option<&Path>, active_pid: Option<i32>) {
        if let (Some(path), Some(active)) = (pidfile, active_pid) {
            let _ = crate::pidfile::write(path, active);
        }
    }

    /// The config for the new generation when it needs no read: the one we have for a
    /// service given by flags, or the service file's as read last time when the file is
    /// unchanged since (a `stat`). `None`: the file must be read ([`Self::read_config`]).
    fn config_at_hand(&self) -> Option<Reloaded> {
        let Some(path) = &self.cx.config_path else {
            return Some(Ok((self.current.clone(), None)));
        };
        let cached = self
            .cx
            .config_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)?;
        Some(self.reloaded(cached, path))
    }

    /// The service file read again, on a thread of its own and within
    /// [`crate::config::READ_DEADLINE`].
    async fn read_config(&self) -> Reloaded {
        let Some(path) = &self.cx.config_path else {
            return Ok((self.current.clone(), None));
        };
        let loaded = FileCache::reload(&self.cx.config_cache, path).await;
        let config = loaded.map_err(|e| {
            format!("the service file cannot be used; the old generation keeps serving: {e}")
        })?;
        self.reloaded(config, path)
    }

    /// A config read from the file at `path`, checked against the running one.
    fn reloaded(&self, config: ServiceConfig, path: &Path) -> Reloaded {
        self.check_unchanged_identity(&config, path)?;
        let reloaded = EventKind::ConfigReloaded {
            path: path.display().to_string(),
        };
        Ok((config, Some((Instant::now(), reloaded))))
    }

    /// A reloaded config may change anything but the name and the listeners.
    fn check_unchanged_identity(&self, config: &ServiceConfig, path: &Path) -> Result<(), String> {
        let current = &self.current;
        if config.name != current.name {
            return Err(format!(
                "the service file now names the service '{}' instead of '{}'; restore the name or run a new supervisor",
                config.name, current.name
            ));
        }
        if config.listeners != current.listeners || config.handoff != current.handoff {
            return Err(format!(
                "the listeners or the handoff in '{}' changed; listeners are kept for the supervisor's whole life, so stop and start the supervisor to apply new ones",
                path.display()
            ));
        }
        Ok(())
    }
}
