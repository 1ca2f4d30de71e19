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

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Shared;
use super::child::{Started, start_generation};
use super::drain::drain;
use crate::config::{FileCache, ServiceConfig};
use crate::duration::format_duration;
use crate::proto::{EventKind, GenerationState, RestartOutcome, RestartReport};
use crate::ready::{ReadyCheck, ReadyContext, wait_ready};

/// How [`RestartRun::begin`] ended: the new generation and the config it runs, or the
/// outcome of a restart that could not start one; `None` when the service file changed and
/// must be read first, which [`RestartRun::run`] does off the main loop.
pub(super) struct Begun {
    old_generation: Option<u64>,
    spawned: Option<Result<(ServiceConfig, Started), RestartOutcome>>,
}

/// The config for the new generation, with the event that says the file was read.
type Reloaded = Result<(ServiceConfig, Option<(Instant, EventKind)>), String>;

pub(super) struct RestartRun {
    pub shared: Arc<Shared>,
    pub restart: u64,
    pub started: Instant,
    pub ready_timeout: Option<Duration>,
}

impl RestartRun {
    fn emit(&self, kind: EventKind) {
        self.shared.emit(Some((self.restart, self.started)), kind);
    }

    /// The start of the restart, up to the new child: the config taken again and the new
    /// generation spawned. It is synchronous and runs where the request was taken, so
    /// that no task switch, which can wait for a CPU on a busy machine, stands between the
    /// request and the child. A changed service file is not read here: reading may block
    /// (a FIFO, a stalled mount), and this is the main loop.
    pub fn begin(&self) -> Begun {
        let old_generation = self.shared.lock().active;
        // Until the child exists, events are recorded and sent only after: each send wakes
        // the threads that write to clients, and on a busy machine a woken thread can preempt
        // this one in the middle of the millisecond it needs.
        let mut pending = vec![(self.started, EventKind::RestartRequested)];
        let spawned = self
            .config_at_hand()
            .map(|config| self.spawn(config, &mut pending));
        self.flush(&mut pending);
        Begun {
            old_generation,
            spawned,
        }
    }

    /// Spawns the new generation with `config`, recording the events to send.
    fn spawn(
        &self,
        config: Reloaded,
        pending: &mut Vec<(Instant, EventKind)>,
    ) -> Result<(ServiceConfig, Started), RestartOutcome> {
        let (config, reloaded) = config.map_err(|reason| RestartOutcome::Failed { reason })?;
        pending.extend(reloaded);
        match start_generation(&self.shared, &config, GenerationState::Starting, false) {
            Ok(started) => {
                pending.push((
                    started.spawned_at,
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

    /// Runs the rest of the restart to its end and records the outcome.
    pub async fn run(self, begun: Begun) {
        let Begun {
            old_generation,
            spawned,
        } = begun;
        let spawned = match spawned {
            Some(spawned) => spawned,
            None => {
                // A stop does not wait for the read: it may take until its deadline.
                let mut stopping = self.shared.stopping.subscribe();
                let config = tokio::select! {
                    config = self.read_config() => config,
                    _ = stopping.wait_for(|s| *s) => Err("the supervisor is stopping".to_owned()),
                };
                let mut pending = Vec::new();
                let spawned = self.spawn(config, &mut pending);
                self.flush(&mut pending);
                spawned
            }
        };
        let (outcome, new) = match spawned {
            Ok((config, started)) => {
                let new = Some((started.generation, started.pid));
                (self.attempt(config, started).await, new)
            }
            Err(outcome) => (outcome, None),
        };
        let report = RestartReport {
            restart: self.restart,
            outcome,
            old_generation,
            new_generation: new.map(|(g, _)| g),
            new_pid: new.map(|(_, p)| p),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        };
        match &report.outcome {
            RestartOutcome::Completed => info!(restart = self.restart, "restart completed"),
            other => warn!(
                restart = self.restart,
                reason = other.reason().unwrap_or(""),
                "restart did not complete"
            ),
        }
        let respawn = {
            let mut st = self.shared.lock();
            match report.outcome {
                RestartOutcome::Completed => st.counters.completed += 1,
                RestartOutcome::RolledBack { .. } => st.counters.rolled_back += 1,
                RestartOutcome::Failed { .. } => st.counters.failed += 1,
            }
            st.last_restart = Some(report.clone());
            st.restart = None;
            // The active generation may have died while this restart ran; if the restart
            // did not replace it, the crash policy applies now.
            !st.stopping && st.active_generation().is_none_or(|g| !g.is_live())
        };
        self.emit(EventKind::Finished { report });
        super::release_freed_memory();
        if respawn {
            let _ = self.shared.loop_tx.send(super::LoopMsg::ActiveLost);
        }
    }

    /// Sends events recorded earlier, each with the time it happened.
    fn flush(&self, pending: &mut Vec<(Instant, EventKind)>) {
        for (at, kind) in pending.drain(..) {
            self.shared
                .emit_at(Some((self.restart, self.started)), at, kind);
        }
    }

    /// From the new generation's start: wait for it to be ready, promote it, drain the old.
    async fn attempt(&self, config: ServiceConfig, started: Started) -> RestartOutcome {
        let Started {
            generation,
            pid,
            exec,
            idle_start,
            ..
        } = started;
        let checks: Vec<String> = config.ready.checks.iter().map(|c| c.to_string()).collect();
        let timeout = self.ready_timeout.unwrap_or(config.ready.timeout);
        self.emit(EventKind::WaitingReady {
            generation,
            checks,
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        });

        let (mut exited, notify) = {
            let st = self.shared.lock();
            match st.generations.get(&generation) {
                Some(g) => (g.exited.clone(), g.notify.as_ref().map(|n| n.state())),
                None => {
                    return RestartOutcome::Failed {
                        reason: "the new generation vanished".into(),
                    };
                }
            }
        };
        let ctx = ReadyContext {
            service: config.name.clone(),
            generation,
            pid,
            listener_inodes: self.shared.listeners.iter().map(|l| l.inode()).collect(),
            notify,
            idle_start: idle_start.began(),
        };
        let mut stopping = self.shared.stopping.subscribe();
        let verdict: Result<String, String> = tokio::select! {
            r = tokio::time::timeout(timeout, wait_ready(&config.ready.checks, &ctx)) => match r {
                Ok(Ok(evidence)) => Ok(evidence),
                Ok(Err(e)) => Err(format!("generation {generation} (pid {pid}) failed its readiness check: {e}")),
                Err(_) => Err(format!(
                    "generation {generation} (pid {pid}) was not ready within {} ({}){}",
                    format_duration(timeout),
                    config.ready.checks.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
                    accepting_seen(&config.ready.checks, &ctx),
                )),
            },
            status = exited.wait_for(|s| s.is_some()) => {
                let status = status.ok().and_then(|s| *s);
                Err(match (exec.failure(), status) {
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
                idle_start.end();
                self.emit(EventKind::Ready {
                    generation,
                    evidence,
                });
            }
            Err(reason) => {
                drain(&self.shared, generation, Some((self.restart, self.started))).await;
                return RestartOutcome::RolledBack { reason };
            }
        }

        // The pidfile names the new generation before anything depends on it: one that
        // cannot be written (a full disk, a directory made read-only) rolls the restart back
        // rather than leave whatever reads it signalling a generation that is about to go.
        if let Some(path) = &config.pidfile {
            if let Err(e) = crate::pidfile::write(path, pid) {
                drain(&self.shared, generation, Some((self.restart, self.started))).await;
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
        let old = {
            let mut st = self.shared.lock();
            if st.stopping {
                None
            } else {
                let old = st.active.replace(generation);
                st.config = config.clone();
                if let Some(g) = st.generations.get_mut(&generation) {
                    g.state = GenerationState::Active;
                }
                if let Some(g) = old.and_then(|o| st.generations.get_mut(&o)) {
                    if g.is_live() {
                        g.state = GenerationState::Draining;
                    }
                }
                st.pidfile = config.pidfile.clone();
                Some(old)
            }
        };
        let Some(old) = old else {
            // Stopping: the pidfile goes back to the generation that is still the service.
            if let (Some(path), Some(active)) = (&config.pidfile, self.active_pid()) {
                let _ = crate::pidfile::write(path, active);
            }
            drain(&self.shared, generation, Some((self.restart, self.started))).await;
            return RestartOutcome::RolledBack {
                reason: "the supervisor is stopping".into(),
            };
        };
        self.emit(EventKind::Promoted { generation, pid });
        if let Some(old) = old {
            drain(&self.shared, old, Some((self.restart, self.started))).await;
        }
        RestartOutcome::Completed
    }

    fn active_pid(&self) -> Option<i32> {
        self.shared.lock().active_generation().map(|g| g.pid)
    }

    /// The config for the new generation when it needs no read: the one we have for a
    /// service given by flags, or the service file's as read last time when the file is
    /// unchanged since (a `stat`). `None`: the file must be read ([`Self::read_config`]).
    fn config_at_hand(&self) -> Option<Reloaded> {
        let Some(path) = &self.shared.config_path else {
            return Some(Ok((self.shared.lock().config.clone(), None)));
        };
        let cached = self
            .shared
            .config_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)?;
        Some(self.reloaded(cached, path))
    }

    /// The service file read again, on a thread of its own and within
    /// [`crate::config::READ_DEADLINE`].
    async fn read_config(&self) -> Reloaded {
        let Some(path) = &self.shared.config_path else {
            return Ok((self.shared.lock().config.clone(), None));
        };
        let loaded = FileCache::reload(&self.shared.config_cache, path).await;
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

    /// A reloaded config may change anything but the name and the listeners. Compared
    /// under the lock rather than on a copy of the running config.
    fn check_unchanged_identity(&self, config: &ServiceConfig, path: &Path) -> Result<(), String> {
        let st = self.shared.lock();
        let current = &st.config;
        if config.name != current.name {
            return Err(format!(
                "the service file now names the service '{}' instead of '{}'; restore the name or run a new supervisor",
                config.name, current.name
            ));
        }
        if config.listeners != current.listeners {
            return Err(format!(
                "the listeners in '{}' changed; listeners are kept for the supervisor's whole life, so stop and start the supervisor to apply new ones",
                path.display()
            ));
        }
        Ok(())
    }
}

/// For a readiness timeout: what the `accepting` check saw last, if it was one of the checks.
fn accepting_seen(checks: &[ReadyCheck], ctx: &ReadyContext) -> String {
    if !checks.contains(&ReadyCheck::Accepting) {
        return String::new();
    }
    let seen =
        crate::rt::blocking(|| crate::ready::accepting::describe(ctx.pid, &ctx.listener_inodes));
    format!("; accepting saw {seen}")
}
