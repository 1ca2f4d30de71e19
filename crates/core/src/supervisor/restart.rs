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

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::Context;
use super::child::ChildProcess;
use super::drain::{drain, drain_instance};
use super::output::KEEP_LINES;
use super::owner::{Msg, Promotion, Started, ready_event};
use crate::config::{FileCache, ServiceConfig};
use crate::duration::format_duration;
use crate::proto::{EventKind, ExitInfo, RestartOutcome, RestartReport, unix_ms};
use crate::ready::ReadyCheck;

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
    /// Skip the service's bake window (`restart --no-bake`).
    pub no_bake: bool,
    /// The config the service runs as the restart begins. No other restart can change it
    /// meanwhile: one runs at a time.
    pub current: ServiceConfig,
    /// The active generation as the restart begins, and its live instances.
    pub old_generation: Option<u64>,
    pub old_instances: Vec<u32>,
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
        let mut done = Done::default();
        let (outcome, new, log) = match spawned {
            Ok((config, started)) => {
                let new = Some((started.generation, started.pid));
                let log = started.child.output();
                (self.attempt(config, started, &mut done).await, new, log)
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
            new_pids: done.new_pids,
            steps: done.steps,
            bake_ms: done.bake_ms,
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

    /// From the new generation's first instance: start the others, wait until each is
    /// ready (rolling out the old instances as they are), promote it, bake, drain the old.
    async fn attempt(
        &self,
        config: ServiceConfig,
        started: Started,
        done: &mut Done,
    ) -> RestartOutcome {
        let generation = started.generation;
        let pid = started.pid;
        let count = config.instances.max(1);
        let checks: Vec<String> = config.ready.checks.iter().map(|c| c.to_string()).collect();
        let timeout = self.ready_timeout.unwrap_or(config.ready.timeout);
        self.emit(EventKind::WaitingReady {
            generation,
            checks,
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        });
        let old = self.old_generation;
        let mut roll = Roll {
            run: self,
            config: &config,
            generation,
            count,
            surge: config.rollout.surge.clamp(1, count),
            timeout,
            // Old instances drain as new ones are ready, unless a bake keeps them all.
            rolling: count > 1 && old.is_some() && !self.baking(&config),
            waits: JoinSet::new(),
            exits: Vec::new(),
            children: Vec::new(),
            started: 1,
            ready: 0,
            old_serving: self.old_instances.clone(),
            drained: Vec::new(),
            drains: JoinSet::new(),
        };
        roll.watch(started);
        if let Err(reason) = roll.ramp().await {
            return roll.roll_back(reason).await;
        }
        if count > 1 {
            done.new_pids = roll.children.iter().map(|(_, pid, _)| *pid).collect();
            done.steps = Some(count);
        }

        // The pidfile names the new generation before anything depends on it: one that
        // cannot be written (a full disk, a directory made read-only) rolls the restart back
        // rather than leave whatever reads it signalling a generation that is about to go.
        if let Some(path) = &config.pidfile {
            if let Err(e) = crate::pidfile::write(path, pid) {
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                return roll
                    .roll_back(format!("{e}{cause}; the old generation keeps serving"))
                    .await;
            }
            info!(pid, path = %path.display(), "pidfile written");
        }

        // Promote: from here on the new generation is the service.
        let pidfile = config.pidfile.clone();
        let bake = self.baking(&config).then(|| config.bake.clone()).flatten();
        let promotion = self
            .cx
            .ask(|reply| Msg::Promote {
                generation,
                config: Box::new(config.clone()),
                bake: bake.is_some(),
                reply,
            })
            .await
            .unwrap_or(Promotion::Stopping { active_pid: None });
        let old = match promotion {
            Promotion::Promoted { old } => old,
            Promotion::Stopping { active_pid } => {
                self.restore_pidfile(pidfile.as_deref(), active_pid);
                return roll.roll_back("the supervisor is stopping".into()).await;
            }
            Promotion::Unsteerable { reason, active_pid } => {
                self.restore_pidfile(pidfile.as_deref(), active_pid);
                return roll.roll_back(reason).await;
            }
        };
        let Roll {
            exits,
            drains,
            children,
            ..
        } = roll;
        self.emit(EventKind::Promoted { generation, pid });
        if let (Some(bake), Some(old)) = (bake, old) {
            let started = Instant::now();
            let verdict = self
                .bake(generation, pid, old, &bake, exits, children)
                .await;
            done.bake_ms = Some(started.elapsed().as_millis() as u64);
            if let Err(reason) = verdict {
                return self.revert(generation, old, reason, drains).await;
            }
        }
        if let Some(old) = old {
            drain(&self.cx, old, self.restart_tag()).await;
        }
        drains.join_all().await;
        RestartOutcome::Completed
    }

    /// Whether this restart keeps the old generation through a bake window.
    fn baking(&self, config: &ServiceConfig) -> bool {
        config.bake.is_some() && !self.no_bake && !self.old_instances.is_empty()
    }

    async fn steer(&self, weights: &[(u64, u32)]) -> Result<(), String> {
        let weights = weights.to_vec();
        self.cx
            .ask(|reply| Msg::Steer { weights, reply })
            .await
            .unwrap_or_else(|| Err("the supervisor is stopping".to_owned()))
    }

    /// A restart that cannot go on after its new generation was ready: the new
    /// generation drains (the old one was never touched, or was restored by a roll back
    /// before this is reached) and the restart rolls back for `reason`.
    async fn undo(
        &self,
        generation: u64,
        drains: JoinSet<Option<ExitInfo>>,
        reason: String,
    ) -> RestartOutcome {
        drains.join_all().await;
        drain(&self.cx, generation, self.restart_tag()).await;
        RestartOutcome::RolledBack { reason }
    }

    /// The bake window: the new generation serves beside the old one for `bake.window`,
    /// its bake checks run every `bake.interval`, and any exit of one of its instances,
    /// a failing check or `zdctl revert` ends it early with the reason to revert.
    async fn bake(
        &self,
        generation: u64,
        pid: i32,
        old: u64,
        bake: &crate::config::Bake,
        mut exits: Vec<(u32, i32, watch::Receiver<Option<ExitInfo>>)>,
        children: Vec<(u32, i32, Arc<dyn ChildProcess>)>,
    ) -> Result<(), String> {
        let count = exits.len();
        let checks: Vec<String> = bake.checks.iter().map(|c| c.to_string()).collect();
        let now = std::time::SystemTime::now();
        let info = crate::proto::BakeInfo {
            generation,
            old_generation: old,
            started_unix_ms: unix_ms(now),
            ends_unix_ms: unix_ms(now + bake.window),
            checks: checks.clone(),
        };
        let Some(mut revert) = self
            .cx
            .ask(|reply| Msg::Bake {
                info: Some(info),
                reply,
            })
            .await
        else {
            return Ok(());
        };
        self.emit(EventKind::Baking {
            generation,
            old_generation: old,
            bake_ms: bake.window.as_millis() as u64,
            checks,
        });
        info!(generation, old, window = %format_duration(bake.window), "baking");
        let (exited_tx, mut exited) = tokio::sync::mpsc::unbounded_channel();
        let mut watchers = JoinSet::new();
        for (instance, pid, mut rx) in exits.drain(..) {
            let tx = exited_tx.clone();
            watchers.spawn(async move {
                if let Ok(status) = rx.wait_for(|s| s.is_some()).await {
                    let _ = tx.send((instance, pid, *status));
                }
            });
        }
        let end = tokio::time::Instant::now() + bake.window;
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + bake.interval, bake.interval);
        let mut stopping = self.cx.stopping.subscribe();
        let context = crate::ready::ReadyContext {
            service: self.current.name.clone(),
            generation,
            instance: 0,
            pid,
            listener_inodes: Vec::new(),
            notify: None,
            idle_start: false,
        };
        let mut revert_open = true;
        let verdict = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break Ok(()),
                _ = async { stopping.wait_for(|s| *s).await.map(drop) } => break Ok(()),
                Some((instance, pid, status)) = exited.recv() => {
                    let how = status.map_or_else(|| "exited".to_owned(), |s| format!("exited with {s}"));
                    let who = if count > 1 {
                        format!("instance {instance} of generation {generation}")
                    } else {
                        format!("generation {generation}")
                    };
                    break Err(format!("{who} (pid {pid}) {how}"));
                }
                asked = async { revert.wait_for(|r| *r).await.map(drop) }, if revert_open => {
                    if asked.is_ok() {
                        break Err("'zdctl revert' asked for it".to_owned());
                    }
                    revert_open = false;
                }
                _ = ticks.tick() => {
                    let limit = bake.interval.max(Duration::from_millis(100));
                    if let Err(failed) = crate::ready::check_all_once(&bake.checks, &context, limit).await {
                        break Err(failed);
                    }
                    if let Err(failed) = still_accepting(&bake.checks, &children, limit).await {
                        break Err(failed);
                    }
                }
            }
        };
        watchers.abort_all();
        let _ = self.cx.ask(|reply| Msg::Bake { info: None, reply }).await;
        verdict
    }

    /// Ends a bake window with a revert: the old generation is the service again, as it
    /// was, and the new one drains.
    async fn revert(
        &self,
        generation: u64,
        old: u64,
        reason: String,
        drains: JoinSet<Option<ExitInfo>>,
    ) -> RestartOutcome {
        warn!(restart = self.restart, generation, old, %reason, "reverting during bake");
        let config = Box::new(self.current.clone());
        let reverted = self
            .cx
            .ask(|reply| Msg::Revert {
                generation,
                old,
                config,
                reply,
            })
            .await
            .unwrap_or_else(|| Err("the supervisor is stopping".to_owned()));
        if let Err(e) = reverted {
            error!(restart = self.restart, error = %e, "cannot revert to the old generation");
            drains.join_all().await;
            return RestartOutcome::RolledBack {
                reason: format!("reverted during bake: {reason}; but {e}"),
            };
        }
        self.emit(EventKind::Reverted {
            generation,
            old_generation: old,
            reason: reason.clone(),
        });
        self.undo(
            generation,
            drains,
            format!("reverted during bake: {reason}; generation {old} serves again"),
        )
        .await
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

/// The `accepting` bake check: each instance of the new generation still waits for
/// connections on its listeners (seen in /proc within `limit`).
async fn still_accepting(
    checks: &[ReadyCheck],
    children: &[(u32, i32, Arc<dyn ChildProcess>)],
    limit: Duration,
) -> Result<(), String> {
    if !checks.contains(&ReadyCheck::Accepting) {
        return Ok(());
    }
    let accepting = [ReadyCheck::Accepting];
    for (instance, pid, child) in children {
        let seen = tokio::time::timeout(limit, child.wait_ready(&accepting)).await;
        if !matches!(seen, Ok(Ok(_))) {
            return Err(format!(
                "bake check 'accepting' failed: instance {instance} (pid {pid}) no longer waits on its listeners"
            ));
        }
    }
    Ok(())
}

/// What a restart gathers besides its outcome, for its report.
#[derive(Debug, Default)]
struct Done {
    new_pids: Vec<i32>,
    steps: Option<u32>,
    bake_ms: Option<u64>,
}

/// A readiness wait's end: the instance, its pid and process, and the evidence or why not.
type Verdict = (u32, i32, Arc<dyn ChildProcess>, Result<String, String>);

/// The first part of a restart: the new generation's instances started (`surge` at a
/// time) and proven ready one by one; in a rolling restart, one old instance drains as
/// each new one is ready, the last one at the promotion, so that the instances serving
/// never number fewer than `count`.
struct Roll<'a> {
    run: &'a RestartRun,
    config: &'a ServiceConfig,
    generation: u64,
    count: u32,
    surge: u32,
    timeout: Duration,
    rolling: bool,
    /// The readiness waits of the new instances that are not ready yet.
    waits: JoinSet<Verdict>,
    /// Each new instance's exit, for the bake window.
    exits: Vec<(u32, i32, watch::Receiver<Option<ExitInfo>>)>,
    /// The new instances: number, pid, process.
    children: Vec<(u32, i32, Arc<dyn ChildProcess>)>,
    started: u32,
    ready: u32,
    /// The old generation's instances that still serve, lowest first.
    old_serving: Vec<u32>,
    /// The old instances this restart drained.
    drained: Vec<u32>,
    drains: JoinSet<Option<ExitInfo>>,
}

impl Roll<'_> {
    /// Starts waiting for a new instance's readiness, raced against its exit and the
    /// supervisor's stop.
    fn watch(&mut self, started: Started) {
        let Started {
            generation,
            instance,
            pid,
            child,
            mut exited,
        } = started;
        self.exits.push((instance, pid, exited.clone()));
        self.children.push((instance, pid, child.clone()));
        let checks = self.config.ready.checks.clone();
        let timeout = self.timeout;
        let name = if self.count > 1 {
            format!("generation {generation} instance {instance} (pid {pid})")
        } else {
            format!("generation {generation} (pid {pid})")
        };
        let mut stopping = self.run.cx.stopping.subscribe();
        self.waits.spawn(async move {
            let verdict = tokio::select! {
                r = tokio::time::timeout(timeout, child.wait_ready(&checks)) => match r {
                    Ok(Ok(evidence)) => Ok(evidence),
                    Ok(Err(e)) => Err(format!("{name} failed its readiness check: {e}")),
                    Err(_) => Err(format!(
                        "{name} was not ready within {} ({}){}",
                        format_duration(timeout),
                        checks.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
                        child.not_ready_detail(&checks),
                    )),
                },
                status = exited.wait_for(|s| s.is_some()) => {
                    let status = status.ok().and_then(|s| *s);
                    Err(match (child.exec_failure(), status) {
                        (Some(e), _) => format!("{name} could not start: {e}"),
                        (None, Some(s)) => format!("{name} exited with {s} before it was ready"),
                        (None, None) => format!("{name} exited before it was ready"),
                    })
                },
                _ = stopping.wait_for(|s| *s) => Err("the supervisor is stopping".to_owned()),
            };
            (instance, pid, child, verdict)
        });
    }

    /// Starts the new instances and waits until every one is ready.
    async fn ramp(&mut self) -> Result<(), String> {
        while self.ready < self.count {
            while self.started < self.count && self.started - self.ready < self.surge {
                let (generation, instance) = (self.generation, self.started);
                let config = Box::new(self.config.clone());
                let started = self
                    .run
                    .cx
                    .ask(|reply| Msg::SpawnInstance {
                        generation,
                        instance,
                        config,
                        reply,
                    })
                    .await
                    .unwrap_or_else(|| Err("the supervisor is stopping".to_owned()))
                    .map_err(|e| {
                        format!("cannot start instance {instance} of generation {generation}: {e}")
                    })?;
                self.run.emit(EventKind::Spawned {
                    generation,
                    pid: started.pid,
                });
                self.started += 1;
                self.watch(started);
            }
            let (instance, pid, child, verdict) = self
                .waits
                .join_next()
                .await
                .ok_or("no instance left to wait for")?
                .map_err(|e| format!("a readiness wait failed: {e}"))?;
            let evidence = verdict?;
            // It serves requests from now on: at the priority it would have without us.
            child.end_idle_start();
            self.ready += 1;
            let key = (self.generation, instance);
            self.run.cx.tell(Msg::InstanceReady {
                key,
                pid,
                announce: false,
            });
            self.run.emit(ready_event(key, self.count, pid, evidence));
            if self.count > 1 {
                self.step().await?;
            }
        }
        if self.count > 1 {
            self.run.emit(EventKind::Ready {
                generation: self.generation,
                evidence: format!("all {} instances are ready", self.count),
            });
        }
        Ok(())
    }

    /// One more new instance is ready: it gets its share of new connections and, in a
    /// rolling restart, an old instance drains (never the last: the promotion drains it,
    /// once its sockets get no new connection).
    async fn step(&mut self) -> Result<(), String> {
        let Some(old) = self.run.old_generation else {
            return Ok(());
        };
        let mut now = Vec::new();
        if self.rolling {
            while self.old_serving.len() > 1
                && self.old_serving.len() as u32 + self.ready > self.count
            {
                now.push(self.old_serving.remove(0));
            }
        }
        self.run
            .steer(&[
                (self.generation, self.ready),
                (old, self.old_serving.len() as u32),
            ])
            .await?;
        for instance in now {
            self.drained.push(instance);
            let cx = self.run.cx.clone();
            let tag = self.run.restart_tag();
            self.drains
                .spawn(async move { drain_instance(&cx, (old, instance), tag).await });
        }
        self.run.emit(EventKind::Step {
            generation: self.generation,
            step: self.ready,
            of: self.count,
        });
        Ok(())
    }

    /// The restart failed at `reason`: the old instances it drained start again from the
    /// old generation's command, new connections go to the old generation alone, and
    /// the new generation drains.
    async fn roll_back(mut self, reason: String) -> RestartOutcome {
        self.waits.abort_all();
        let run = self.run;
        let mut reason = reason;
        if let Some(old) = run.old_generation.filter(|_| self.count > 1) {
            std::mem::take(&mut self.drains).join_all().await;
            let (mut back, mut lost) = (Vec::new(), Vec::new());
            for instance in std::mem::take(&mut self.drained) {
                match self.restore(old, instance).await {
                    Ok(()) => back.push(instance.to_string()),
                    Err(e) => lost.push(format!("instance {instance} ({e})")),
                }
            }
            let serving = (self.old_serving.len() + back.len()) as u32;
            if serving > 0 {
                if let Err(e) = run.steer(&[(old, serving)]).await {
                    lost.push(e);
                }
            }
            if !back.is_empty() {
                reason.push_str(&format!(
                    "; instances {} of generation {old} had been drained and were started again from its command",
                    back.join(", ")
                ));
            }
            if !lost.is_empty() {
                reason.push_str(&format!(
                    "; could not start again {} of generation {old}",
                    lost.join(", ")
                ));
            }
        }
        run.undo(self.generation, self.drains, reason).await
    }

    /// Starts old instance `instance` again, with the old generation's config, and waits
    /// until it is ready.
    async fn restore(&self, old: u64, instance: u32) -> Result<(), String> {
        let run = self.run;
        let config = Box::new(run.current.clone());
        let started = run
            .cx
            .ask(|reply| Msg::SpawnInstance {
                generation: old,
                instance,
                config,
                reply,
            })
            .await
            .unwrap_or_else(|| Err("the supervisor is stopping".to_owned()))?;
        let Started {
            pid,
            child,
            mut exited,
            ..
        } = started;
        run.emit(EventKind::Spawned {
            generation: old,
            pid,
        });
        let checks = &run.current.ready.checks;
        let verdict = tokio::select! {
            r = tokio::time::timeout(run.current.ready.timeout, child.wait_ready(checks)) => match r {
                Ok(Ok(evidence)) => Ok(evidence),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("not ready in time".to_owned()),
            },
            _ = exited.wait_for(|s| s.is_some()) => Err("it exited".to_owned()),
        };
        let evidence = verdict?;
        child.end_idle_start();
        let key = (old, instance);
        run.cx.tell(Msg::InstanceReady {
            key,
            pid,
            announce: false,
        });
        run.emit(ready_event(key, run.current.instances, pid, evidence));
        Ok(())
    }
}
