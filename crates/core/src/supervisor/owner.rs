//! The owner: the one task that holds the supervisor's [`State`] and changes it, in the
//! order its inputs arrive (watchexec's job task is the model).
//!
//! Its inputs are control requests and signals (handled in [`super::control`]) and
//! [`Msg`]s from the tasks around it. Those tasks (exit watchers, respawn timers, the
//! running restart, the final stop) wait, sleep and drain as long as they need to, but
//! never touch the state: they ask the owner, which answers at once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
// Tokio's clock: the tests' paused time moves uptimes and `restart.limit`'s window.
use tokio::time::Instant as Clock;
use tracing::{error, info};

use super::Context;
use super::child::{ChildProcess, Children, SpawnRequest};
use super::drain::drain;
use super::snapshot::LiveGeneration;
use super::state::{FailedStart, Failing, Instance, Key, State};
use crate::config::{RestartMode, ServiceConfig};
use crate::listen::steer::Seat;
use crate::proto::{EventKind, ExitInfo, GenerationState, RestartOutcome, RestartReport};
use crate::signal::Signal;

/// What the tasks around the owner tell it or ask it.
#[derive(Debug)]
pub(super) enum Msg {
    /// An instance's main process exited (it is not reaped yet). The reply: the main pids
    /// of the instances still live, whose groups its end must spare.
    Exited {
        key: Key,
        pid: i32,
        status: ExitInfo,
        live: oneshot::Sender<Vec<i32>>,
    },
    /// The respawn backoff elapsed.
    RespawnDue,
    /// The backoff of one instance's respawn elapsed.
    RespawnInstanceDue { key: Key },
    /// An instance passed its readiness checks. With `announce`, the generation's `Ready`
    /// goes out once all its instances are (a restart sends its own).
    InstanceReady { key: Key, pid: i32, announce: bool },
    /// A rolling restart starts one more instance of `generation` with `config`: a new
    /// one, or an old one drained earlier, again, when it rolls back.
    SpawnInstance {
        generation: u64,
        instance: u32,
        config: Box<ServiceConfig>,
        reply: oneshot::Sender<Result<Started, String>>,
    },
    /// New connections go to these generations' sockets, in proportion to the weights.
    Steer {
        weights: Vec<(u64, u32)>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A drain of one instance begins (see [`Msg::Drain`]).
    DrainInstance {
        key: Key,
        reply: oneshot::Sender<Option<DrainTarget>>,
    },
    /// The running restart's bake window begins (`Some`) or ends (`None`). The reply
    /// becomes true when `zdctl revert` asks for a revert.
    Bake {
        info: Option<crate::proto::BakeInfo>,
        reply: oneshot::Sender<watch::Receiver<bool>>,
    },
    /// A revert during the bake window: generation `old` is the service again, with
    /// `config`, and the new one drains.
    Revert {
        generation: u64,
        old: u64,
        config: Box<ServiceConfig>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// `restart.refuse_after` elapsed since the service began failing.
    RefuseDue,
    /// The running restart read the service file: start the new generation with it.
    Spawn {
        config: Box<ServiceConfig>,
        reply: oneshot::Sender<Result<Started, String>>,
    },
    /// The running restart's new generation is ready and named by the pidfile: make it
    /// the active one.
    Promote {
        generation: u64,
        config: Box<ServiceConfig>,
        /// With a bake window: the old generation stands by, serving beside the new one.
        bake: bool,
        reply: oneshot::Sender<Promotion>,
    },
    /// A drain begins: mark the generation's instances draining and hand over what
    /// stopping each takes.
    Drain {
        generation: u64,
        reply: oneshot::Sender<Vec<DrainTarget>>,
    },
    /// The running restart ended.
    RestartFinished {
        report: RestartReport,
        started: Instant,
    },
    /// A drain's deadline passed and the instance was killed.
    Killed { generation: u64, pid: i32 },
    /// Every generation was drained and has ended: the supervisor may exit.
    Stopped,
    /// No process of a generation is left to hold a file: the sockets it received may
    /// close.
    Released { seat: Seat },
    /// The new binary of a `reexec` checked the snapshot (or could not).
    ReexecChecked(ReexecCheck),
}

/// How the check of a `reexec`'s new binary ended: the binary, ready to take over, or the
/// binary and why not, with the client that asked.
pub(super) type ReexecCheck =
    Result<Box<super::reexec::Checked>, (String, String, Option<(u64, crate::proto::Replies)>)>;

/// A generation just started.
#[derive(Debug)]
pub(super) struct Started {
    pub generation: u64,
    pub instance: u32,
    pub pid: i32,
    pub child: Arc<dyn ChildProcess>,
    /// Becomes `Some` once the owner has recorded the exit.
    pub exited: watch::Receiver<Option<ExitInfo>>,
}

/// The answer to [`Msg::Promote`].
#[derive(Debug)]
pub(super) enum Promotion {
    /// The new generation is active; the old one (if any, and live) is draining.
    Promoted { old: Option<u64> },
    /// The supervisor is stopping: nothing changed. `active_pid` is the generation that is
    /// still the service.
    Stopping { active_pid: Option<i32> },
    /// New connections could not be steered to the new generation: nothing changed.
    Unsteerable {
        reason: String,
        active_pid: Option<i32>,
    },
}

/// What a drain needs to stop one instance.
#[derive(Debug)]
pub(super) struct DrainTarget {
    pub generation: u64,
    pub pid: i32,
    /// `None` when the generation has already exited.
    pub child: Option<Arc<dyn ChildProcess>>,
    pub signal: Signal,
    pub timeout: Duration,
    pub exited: watch::Receiver<Option<ExitInfo>>,
    /// Becomes true once no process of the generation is left (see
    /// [`Generation::released`]).
    pub released: watch::Receiver<bool>,
    /// Steered handoff, when the generation no longer gets new connections: what its
    /// sockets hold is left to it before its stop signal, within this wait.
    pub queue: Option<QueueWait>,
}

/// The old generation's own sockets, whose accept queues must empty before it is stopped.
#[derive(Debug)]
pub(super) struct QueueWait {
    pub sockets: Vec<crate::listen::Listener>,
    pub wait: Duration,
}

pub(super) struct Owner {
    pub cx: Arc<Context>,
    pub st: State,
    pub children: Arc<dyn Children>,
    pub inbox: mpsc::UnboundedReceiver<Msg>,
}

impl Owner {
    pub fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Exited {
                key,
                pid,
                status,
                live,
            } => {
                // A stale word of an instance already replaced by its respawn: ignore.
                if self.st.instances.get(&key).is_some_and(|i| i.pid != pid) {
                    let _ = live.send(self.live_pids());
                    return;
                }
                let was = self
                    .st
                    .instances
                    .get(&key)
                    .map_or(GenerationState::Exited, |i| i.state);
                self.st.mark_exited(key, status);
                let _ = live.send(self.live_pids());
                self.on_exit(key, was, status);
            }
            Msg::RespawnDue => self.respawn(),
            Msg::RespawnInstanceDue { key } => self.respawn_instance(key),
            Msg::InstanceReady { key, pid, announce } => self.instance_ready(key, pid, announce),
            Msg::RefuseDue => self.refuse_if_due(),
            Msg::Spawn { config, reply } => {
                let _ = reply.send(self.start_new(&config));
            }
            Msg::SpawnInstance {
                generation,
                instance,
                config,
                reply,
            } => {
                let _ = reply.send(self.spawn_instance(generation, instance, &config));
            }
            Msg::Steer { weights, reply } => {
                let _ = reply.send(self.steer(&weights));
            }
            Msg::Promote {
                generation,
                config,
                bake,
                reply,
            } => {
                let _ = reply.send(self.promote(generation, *config, bake));
            }
            Msg::Drain { generation, reply } => {
                let _ = reply.send(self.begin_drain(generation));
            }
            Msg::DrainInstance { key, reply } => {
                let _ = reply.send(self.begin_drain_instance(key));
            }
            Msg::Bake { info, reply } => {
                let _ = reply.send(self.bake(info));
            }
            Msg::Revert {
                generation,
                old,
                config,
                reply,
            } => {
                let _ = reply.send(self.revert(generation, old, *config));
            }
            Msg::RestartFinished { report, started } => self.restart_finished(report, started),
            // Taken by the loop in `run` while stopping, the only time it is sent.
            Msg::Stopped => {}
            Msg::Killed { generation, pid } => {
                if self.st.stopping {
                    self.st.killed_at_stop.push((generation, pid));
                }
            }
            Msg::Released { seat } => {
                if !self.st.sockets.has_seat(seat) {
                    // A dead supervisor's generation held it: once none is left, the
                    // groups hold our sockets alone.
                    self.reattach_when_alone();
                }
                self.st.release_seat(seat);
            }
            // Taken by the loop in `run`, which waits while it hands over.
            Msg::ReexecChecked(_) => {}
        }
    }

    /// Steers again once no live generation holds sockets outside our seats.
    fn reattach_when_alone(&self) {
        let foreign = self
            .st
            .instances
            .values()
            .any(|g| g.is_live() && !self.st.sockets.has_seat(g.seat));
        if !foreign {
            if let Err(e) = self.st.sockets.reattach() {
                error!(error = %e, "cannot steer new connections again");
            }
        }
    }

    /// Starts a restart's new generation (its first instance): on sockets of its own,
    /// which get no connection until it is promoted, while the active generation runs.
    /// Without a live active generation there is nothing to protect, and the clients that
    /// wait in the queue of the steered-to sockets are served sooner by the new generation
    /// on those.
    pub fn start_new(&mut self, config: &ServiceConfig) -> Result<Started, String> {
        self.accept_again()?;
        let active_live = self.st.active_generation().is_some_and(|g| g.is_live());
        let seat = if active_live {
            self.st
                .sockets
                .open_seat()
                .map_err(|e| format!("cannot open the new generation's sockets: {e}"))?
        } else {
            self.st.sockets.steered_to()
        };
        let generation = self.st.next_generation;
        self.st.next_generation += 1;
        let started = self.start_instance(
            (generation, 0),
            config,
            GenerationState::Starting,
            false,
            seat,
        );
        if started.is_err() {
            self.st.release_seat(seat);
        }
        started
    }

    /// A rolling restart's next instance of `generation` (or, as it rolls back, an old
    /// instance started again): on the generation's sockets, in the state of its siblings.
    fn spawn_instance(
        &mut self,
        generation: u64,
        instance: u32,
        config: &ServiceConfig,
    ) -> Result<Started, String> {
        if self.st.stopping {
            return Err("the supervisor is stopping".to_owned());
        }
        let sibling = self
            .st
            .first_of(generation)
            .ok_or_else(|| format!("generation {generation} is not known"))?;
        let (seat, state) = (sibling.seat, sibling.state);
        let state = match state {
            GenerationState::Exited | GenerationState::Draining => GenerationState::Active,
            other => other,
        };
        if !self.st.sockets.has_seat(seat) {
            return Err(format!("generation {generation}'s sockets are closed"));
        }
        self.start_instance((generation, instance), config, state, false, seat)
    }

    fn live_pids(&self) -> Vec<i32> {
        self.st
            .instances
            .values()
            .filter(|g| g.is_live())
            .map(|g| g.pid)
            .collect()
    }

    /// Starts instance `key` with `config`, records it (in place of the record of the
    /// same instance that ended, whose respawns it counts on), and starts watching its
    /// exit.
    pub fn start_instance(
        &mut self,
        key: Key,
        config: &ServiceConfig,
        state: GenerationState,
        wait_exec: bool,
        seat: Seat,
    ) -> Result<Started, String> {
        let (generation, instance) = key;
        let before = self.st.instances.get(&key);
        if before.is_some_and(|i| i.is_live()) {
            return Err(format!(
                "instance {instance} of generation {generation} is running already"
            ));
        }
        let respawns = before.map_or(0, |i| i.respawns + 1);
        let crash_streak = before.map_or(0, |i| i.crash_streak);
        let (exited_tx, exited) = watch::channel(None);
        let child = self.children.spawn(SpawnRequest {
            generation,
            instance,
            respawns,
            config,
            listeners: self.st.sockets.seat(seat),
            wait_exec,
            exited: exited.clone(),
            keep_output: self.st.starts_failing(),
        })?;
        let pid = child.pid();
        let (ended, released) = self.watch_exit(key, child.clone(), seat);
        self.st.instances.insert(
            key,
            Instance {
                generation,
                instance,
                of: config.instances,
                pid,
                state,
                started: SystemTime::now(),
                started_at: Clock::now(),
                exit: None,
                exited: exited_tx,
                child: Some(child.clone()),
                stop_signal: config.stop_signal,
                drain_timeout: config.drain_timeout,
                ended,
                released,
                seat,
                intercept: child.intercept_counts(),
                output: child.output(),
                ready: false,
                respawns,
                crash_streak,
                drain_begun: false,
            },
        );
        Ok(Started {
            generation,
            instance,
            pid,
            child,
            exited,
        })
    }

    /// Starts the task that waits for instance `key`'s exit: it tells the owner, then
    /// ends what the instance left behind. Returns the instance's `ended` and `released`
    /// (see [`Instance`]).
    fn watch_exit(
        &self,
        key: Key,
        watched: Arc<dyn ChildProcess>,
        seat: Seat,
    ) -> (watch::Receiver<bool>, watch::Receiver<bool>) {
        let (ended_tx, ended) = watch::channel(false);
        let (released_tx, released) = watch::channel(false);
        let pid = watched.pid();
        let cx = self.cx.clone();
        tokio::spawn(async move {
            let status = watched.wait_exit().await;
            tracing::debug!(generation = key.0, instance = key.1, pid, %status, "exited");
            let live = cx
                .ask(|live| Msg::Exited {
                    key,
                    pid,
                    status,
                    live,
                })
                .await
                .unwrap_or_default();
            watched.end_leftovers(live).await;
            // No process of it holds its sockets now. The owner hears of it before anyone
            // who waits for `released` can tell it something else (a drain, then the
            // restart's end): its sockets are closed first.
            cx.tell(Msg::Released { seat });
            let _ = released_tx.send(true);
            watched.reap().await;
            let _ = ended_tx.send(true);
        });
        (ended, released)
    }

    /// Takes back an instance that ran before this supervisor's program was replaced
    /// (`reexec`), as the record says it was.
    pub fn resume_generation(&mut self, record: &LiveGeneration, child: Arc<dyn ChildProcess>) {
        let key = (record.generation, record.instance);
        let (exited_tx, _) = watch::channel(None);
        let (ended, released) = self.watch_exit(key, child.clone(), record.seat);
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(record.started_unix_ms);
        let age = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default();
        self.st.instances.insert(
            key,
            Instance {
                generation: record.generation,
                instance: record.instance,
                of: record.of.max(1),
                pid: record.pid,
                state: record.state,
                started,
                started_at: Clock::now().checked_sub(age).unwrap_or_else(Clock::now),
                exit: None,
                exited: exited_tx,
                child: Some(child.clone()),
                stop_signal: record.stop_signal,
                drain_timeout: Duration::from_millis(record.drain_timeout_ms),
                ended,
                released,
                seat: record.seat,
                intercept: child.intercept_counts(),
                output: child.output(),
                // It served before the reexec (a starting one is not carried over).
                ready: true,
                respawns: record.respawns,
                crash_streak: 0,
                drain_begun: false,
            },
        );
    }

    /// Starts a generation that becomes the service at once (the first, or a respawn):
    /// every instance of it.
    pub fn start_active(&mut self, respawn: bool) -> Result<(), String> {
        let config = self.st.config.clone();
        // The first generation, or a respawn: on the sockets new connections go to, where
        // the clients that came while none ran are waiting.
        let seat = self.st.sockets.steered_to();
        let generation = self.st.next_generation;
        self.st.next_generation += 1;
        for instance in 0..config.instances.max(1) {
            let started = self.start_instance(
                (generation, instance),
                &config,
                GenerationState::Active,
                true,
                seat,
            );
            let Started { pid, child, .. } = match started {
                Ok(started) => started,
                // The first could not start: nothing did.
                Err(e) if instance == 0 => return Err(e),
                // A later one (the program went away meanwhile): the others serve, and it
                // is tried again as if it had crashed at once.
                Err(e) => {
                    error!(generation, instance, error = %e, "cannot start an instance");
                    self.schedule_instance_respawn((generation, instance), Duration::ZERO);
                    continue;
                }
            };
            if instance == 0 {
                self.st.active = Some(generation);
                self.st.lost = None;
                self.write_pidfile(pid);
            }
            self.cx.emit(None, EventKind::Spawned { generation, pid });
            if respawn && instance == 0 {
                self.cx.emit(None, EventKind::Promoted { generation, pid });
            }
            self.watch_first_readiness((generation, instance), child);
        }
        Ok(())
    }

    /// Watches the readiness of an instance that is the service from its start: logs it,
    /// records it, and publishes the generation's `Ready` once all its instances are (no
    /// restart's event: systemd's `READY=1` waits for it). Nothing in the supervisor waits
    /// on it: there is no older generation to protect, and the listener queues clients
    /// until the app accepts.
    fn watch_first_readiness(&self, key: Key, child: Arc<dyn ChildProcess>) {
        let checks = self.st.config.ready.checks.clone();
        let timeout = self.st.config.ready.timeout;
        let of = self.st.config.instances;
        let cx = self.cx.clone();
        let (generation, instance) = key;
        tokio::spawn(async move {
            let pid = child.pid();
            match tokio::time::timeout(timeout, child.wait_ready(&checks)).await {
                Ok(Ok(evidence)) => {
                    info!(generation, instance, pid, %evidence, "ready");
                    cx.tell(Msg::InstanceReady {
                        key,
                        pid,
                        announce: true,
                    });
                    cx.emit(None, ready_event(key, of, pid, evidence));
                }
                Ok(Err(e)) => tracing::warn!(generation, instance, pid, error = %e, "not ready"),
                Err(_) => {
                    tracing::warn!(
                        generation,
                        instance,
                        pid,
                        "not ready within the readiness timeout"
                    )
                }
            }
            // Ready or not, this instance is the service now: at its normal priority.
            child.end_idle_start();
        });
    }

    /// An instance passed its checks: recorded; the generation's `Ready` goes out once
    /// every instance of a generation of several is.
    fn instance_ready(&mut self, key: Key, pid: i32, announce: bool) {
        let Some(i) = self.st.instances.get_mut(&key) else {
            return;
        };
        if i.pid != pid || !i.is_live() {
            return;
        }
        i.ready = true;
        let (generation, of) = (i.generation, i.of);
        if of <= 1 || !announce {
            return;
        }
        let ready = self.st.live_of(generation).filter(|i| i.ready).count() as u32;
        if ready == of {
            self.cx.emit(
                None,
                EventKind::Ready {
                    generation,
                    evidence: format!("all {of} instances are ready"),
                },
            );
        }
    }
    pub fn write_pidfile(&self, pid: i32) {
        if let Some(path) = &self.st.pidfile {
            match crate::pidfile::write(path, pid) {
                Ok(()) => info!(pid, path = %path.display(), "pidfile written"),
                Err(e) => error!(
                    error = %e,
                    cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default(),
                    "cannot write the pidfile; it names an older generation or none"
                ),
            }
        }
    }

    /// An instance's main process exited. Only the exit of an instance of the active
    /// generation that was serving matters here: starting and draining ones are watched
    /// by the restart or the drain that owns them, and so is the new generation during a
    /// bake window (its restart reverts). An instance of a pool whose siblings live is
    /// respawned alone; the last one's end is the generation's.
    fn on_exit(&mut self, key: Key, was: GenerationState, status: ExitInfo) {
        let (generation, instance) = key;
        if self.st.stopping
            || self.st.active != Some(generation)
            || was == GenerationState::Draining
            || self
                .st
                .bake
                .as_ref()
                .is_some_and(|b| b.info.generation == generation)
        {
            return;
        }
        self.st.counters.crashes += 1;
        let Some(g) = self.st.instances.get(&key) else {
            return;
        };
        let (pid, uptime, of) = (g.pid, g.started_at.elapsed(), g.of);
        let failed = FailedStart::of(g);
        if of > 1 {
            error!(generation, instance, pid, %status, "an instance of the active generation exited");
        } else {
            error!(generation, pid, %status, "the active generation exited");
        }
        if let Some(log) = g.output.clone() {
            // The crash report ends with the program's own last words, once its pipes
            // have delivered them.
            tokio::spawn(async move {
                log.wait_closed(Duration::from_millis(500)).await;
                let lines = log.lines();
                if !lines.is_empty() {
                    error!(
                        generation,
                        pid,
                        "the last lines it printed:\n  {}",
                        lines.join("\n  ")
                    );
                }
            });
        }
        self.cx.emit(
            None,
            EventKind::Exited {
                generation,
                pid,
                status,
            },
        );
        let sibling = self.st.live_of(generation).next().map(|i| i.pid);
        if let Some(sibling) = sibling {
            // The pool still serves: the pidfile names a live instance, and this one
            // starts again alone.
            if let Some(path) = &self.st.pidfile {
                if crate::pidfile::read(path).ok() == Some(pid) {
                    self.write_pidfile(sibling);
                }
            }
            self.schedule_instance_respawn(key, uptime);
            return;
        }
        self.st.active = None;
        if let Some(path) = &self.st.pidfile {
            crate::pidfile::remove_if(path, pid);
        }
        self.st.lost = Some(status);
        // While a restart runs, it replaces the lost generation, or asks for a respawn
        // when it rolls back.
        if self.st.restart.is_none() {
            self.schedule_respawn(uptime, failed);
        }
    }

    /// Applies the restart policy to one instance of a pool that died (lived `uptime`)
    /// while its siblings serve: it starts again alone, in its generation, after its own
    /// backoff. Its failed start counts towards `restart.limit`, which stops every
    /// respawn once reached.
    pub(super) fn schedule_instance_respawn(&mut self, key: Key, uptime: Duration) {
        let (generation, instance) = key;
        let status = self.st.instances.get(&key).and_then(|i| i.exit);
        let wanted = match self.st.config.restart.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => !status.is_some_and(ExitInfo::success),
            RestartMode::Never => false,
        };
        if !wanted || self.st.stopping {
            info!(
                generation,
                instance, "not respawning the instance (restart policy)"
            );
            return;
        }
        if self.st.failing.is_some() {
            return;
        }
        if self.st.count_failed_start(uptime, Clock::now()) {
            let failed = self
                .st
                .instances
                .get(&key)
                .map(FailedStart::of)
                .unwrap_or_default();
            self.begin_failing(failed);
            return;
        }
        let mut streak = self.st.instances.get(&key).map_or(0, |i| i.crash_streak);
        let delay = super::state::backoff(&self.st.config.restart, &mut streak, uptime);
        if let Some(i) = self.st.instances.get_mut(&key) {
            i.crash_streak = streak;
        }
        let delay_ms = delay.as_millis() as u64;
        info!(generation, instance, delay_ms, "respawning the instance");
        self.cx.emit(
            None,
            EventKind::InstanceRespawning {
                generation,
                instance,
                delay_ms,
            },
        );
        let owner = self.cx.owner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = owner.send(Msg::RespawnInstanceDue { key });
        });
    }

    /// Starts a dead instance of the active generation again, if its generation is still
    /// the service and serves (else the generation's own respawn, or a restart, took
    /// over).
    fn respawn_instance(&mut self, key: Key) {
        let (generation, instance) = key;
        let seat = self.st.live_of(generation).next().map(|i| i.seat);
        let Some(seat) = seat else { return };
        if self.st.stopping
            || self.st.failing.is_some()
            || self.st.active != Some(generation)
            || self.st.instances.get(&key).is_some_and(|i| i.is_live())
        {
            return;
        }
        let config = self.st.config.clone();
        match self.start_instance(key, &config, GenerationState::Active, true, seat) {
            Ok(Started { pid, child, .. }) => {
                self.cx.emit(None, EventKind::Spawned { generation, pid });
                self.watch_first_readiness(key, child);
            }
            Err(e) => {
                error!(generation, instance, error = %e, "cannot respawn the instance");
                self.schedule_instance_respawn(key, Duration::ZERO);
            }
        }
    }
    /// Applies the restart policy after the active generation was lost: `failed` is the
    /// start that failed (the lost generation, lived `uptime`, or a respawn or restart
    /// that could not replace it). Respawns unless `restart.limit` is reached, or the
    /// service is failing already.
    fn schedule_respawn(&mut self, uptime: Duration, failed: FailedStart) {
        let Some(status) = self.st.lost else { return };
        let wanted = match self.st.config.restart.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => !status.success(),
            RestartMode::Never => false,
        };
        if !wanted || self.st.stopping {
            info!(%status, "not respawning (restart policy)");
            return;
        }
        if let Some(failing) = &mut self.st.failing {
            // A restart that could not bring it back: still failing, for this reason now,
            // and refusing again if it was already due.
            failing.last = failed;
            self.refuse_if_due();
            return;
        }
        if self.st.count_failed_start(uptime, Clock::now()) {
            self.begin_failing(failed);
            return;
        }
        let delay = self.st.next_backoff(uptime);
        let generation = self.st.next_generation;
        let delay_ms = delay.as_millis() as u64;
        info!(generation, delay_ms, "respawning");
        self.cx.emit(
            None,
            EventKind::Respawning {
                generation,
                delay_ms,
            },
        );
        let owner = self.cx.owner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = owner.send(Msg::RespawnDue);
        });
    }

    /// `restart.limit` is reached: nothing is respawned until a restart request brings
    /// the service back. The listeners stay open: clients wait in their queues.
    fn begin_failing(&mut self, last: FailedStart) {
        let Some(limit) = self.st.config.restart.limit else {
            return;
        };
        let failed_starts = self.st.failed_starts.len() as u32;
        error!(
            failed_starts,
            limit = %limit,
            "the service is failing: not respawning until 'zdctl restart'"
        );
        self.cx.emit(
            None,
            EventKind::Failing {
                generation: last.generation,
                failed_starts,
                window_ms: limit.window.as_millis() as u64,
            },
        );
        self.st.failing = Some(Failing {
            since: SystemTime::now(),
            began: Clock::now(),
            refusing_since: None,
            failed_starts,
            window: limit.window,
            last,
        });
        self.arm_refuse_timer();
    }

    /// Sends [`Msg::RefuseDue`] once the service has been failing for
    /// `restart.refuse_after`.
    pub(super) fn arm_refuse_timer(&self) {
        let (Some(after), Some(failing)) = (self.st.config.restart.refuse_after, &self.st.failing)
        else {
            return;
        };
        let left = after.saturating_sub(failing.began.elapsed());
        let owner = self.cx.owner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            let _ = owner.send(Msg::RefuseDue);
        });
    }

    /// `restart.refuse_after`: once the service has been failing that long, and no
    /// restart is trying to bring it back, the TCP listeners refuse new connections
    /// instead of queueing clients nobody will serve. The sockets stay open (see
    /// [`crate::listen::refuse`]). A timer of an earlier failing state that ended finds
    /// this one too young, and does nothing.
    fn refuse_if_due(&mut self) {
        let st = &mut self.st;
        let (Some(after), Some(failing)) = (st.config.restart.refuse_after, &mut st.failing) else {
            return;
        };
        let serving = st.active.is_some_and(|g| {
            st.instances
                .range((g, 0)..=(g, u32::MAX))
                .any(|(_, i)| i.is_live())
        });
        if st.stopping
            || st.restart.is_some()
            || serving
            || st.sockets.is_refusing()
            || failing.began.elapsed() < after
        {
            return;
        }
        let (unix, errors) = st.sockets.refuse();
        for e in &errors {
            error!(error = %e, "cannot stop accepting; clients still wait in its queue");
        }
        if !unix.is_empty() {
            info!(
                listeners = %unix.join(", "),
                "unix listeners keep accepting: the kernel cannot make them accept again"
            );
        }
        if st.sockets.is_refusing() {
            failing.refusing_since = Some(SystemTime::now());
            let after = crate::duration::format_duration(after);
            error!(
                refuse_after = %after,
                "failing for restart.refuse_after: the TCP listeners refuse new connections \
                 until 'zdctl restart'"
            );
        }
    }

    /// Before a generation starts: listeners that refuse (`restart.refuse_after`) accept
    /// again, so that the new generation gets listening sockets.
    fn accept_again(&mut self) -> Result<(), String> {
        if !self.st.sockets.is_refusing() {
            return Ok(());
        }
        self.st.sockets.accept_again().map_err(|e| {
            format!(
                "the listeners refused new connections (restart.refuse_after) and {e}; \
                     if another program took the address meanwhile, stop it and restart again"
            )
        })?;
        if let Some(failing) = &mut self.st.failing {
            failing.refusing_since = None;
        }
        info!("the listeners accept new connections again");
        Ok(())
    }

    fn respawn(&mut self) {
        if self.st.stopping
            || self.st.restart.is_some()
            || self.st.failing.is_some()
            || self.st.active_generation().is_some_and(|g| g.is_live())
        {
            return;
        }
        if let Err(e) = self.start_active(true) {
            error!(error = %e, "respawn failed");
            let failed = FailedStart {
                reason: Some(e),
                ..FailedStart::default()
            };
            self.schedule_respawn(Duration::ZERO, failed);
        }
    }

    fn promote(&mut self, generation: u64, config: ServiceConfig, bake: bool) -> Promotion {
        let st = &mut self.st;
        let active_pid = st.active_generation().map(|g| g.pid);
        if st.stopping {
            return Promotion::Stopping { active_pid };
        }
        let Some(seat) = st.first_of(generation).map(|g| g.seat) else {
            return Promotion::Unsteerable {
                reason: format!("generation {generation} is not known"),
                active_pid,
            };
        };
        let previous = st.sockets.steered_to();
        let old = st.active.filter(|o| *o != generation);
        // New connections go to the new generation alone, also during a bake window:
        // whatever a client or a bake check sees through the port is the new version,
        // while the old generation stands by on its own sockets.
        if let Err(e) = st.sockets.steer(seat) {
            return Promotion::Unsteerable {
                reason: format!("cannot steer new connections to generation {generation}: {e}"),
                active_pid,
            };
        }
        if previous != seat {
            info!(
                generation,
                "new connections go to the new generation's sockets"
            );
            // An active generation that died during the restart left its sockets unused.
            st.release_seat(previous);
        }
        st.active = Some(generation);
        // A restart that completes starts the count of failed starts over, and ends a
        // failing state.
        if st.failing.take().is_some() {
            info!(generation, "the service is no longer failing");
        }
        st.failed_starts.clear();
        st.pidfile = config.pidfile.clone();
        st.config = config;
        for i in st.instances.values_mut().filter(|i| i.is_live()) {
            if i.generation == generation {
                i.state = GenerationState::Active;
            } else if Some(i.generation) == old {
                i.state = if bake {
                    GenerationState::Standby
                } else {
                    GenerationState::Draining
                };
            }
        }
        Promotion::Promoted { old }
    }

    /// Steers new connections to the seats of the generations in `weights`.
    fn steer(&mut self, weights: &[(u64, u32)]) -> Result<(), String> {
        let mut seats = Vec::with_capacity(weights.len());
        for (generation, weight) in weights {
            let seat = self
                .st
                .first_of(*generation)
                .map(|g| g.seat)
                .ok_or_else(|| format!("generation {generation} is not known"))?;
            match seats.iter_mut().find(|(s, _)| *s == seat) {
                Some((_, w)) => *w += weight,
                None => seats.push((seat, *weight)),
            }
        }
        self.st
            .sockets
            .steer_weighted(&seats)
            .map_err(|e| format!("cannot steer new connections: {e}"))
    }

    /// The bake window begins (`Some`) or ends (`None`); the reply watches `zdctl revert`.
    fn bake(&mut self, info: Option<crate::proto::BakeInfo>) -> watch::Receiver<bool> {
        match info {
            Some(info) => {
                let (revert, asked) = watch::channel(false);
                self.st.bake = Some(super::state::Baking { info, revert });
                asked
            }
            None => {
                self.st.bake = None;
                watch::channel(false).1
            }
        }
    }

    /// A revert during the bake window: `old` is the service again, with `config`; the
    /// new generation is marked draining (its drain follows).
    fn revert(&mut self, generation: u64, old: u64, config: ServiceConfig) -> Result<(), String> {
        let st = &mut self.st;
        let Some(first) = st.live_of(old).next() else {
            return Err(format!("generation {old} is gone"));
        };
        let (seat, pid) = (first.seat, first.pid);
        st.sockets
            .steer(seat)
            .map_err(|e| format!("cannot steer new connections back to generation {old}: {e}"))?;
        st.active = Some(old);
        st.lost = None;
        st.pidfile = config.pidfile.clone();
        st.config = config;
        for i in st.instances.values_mut().filter(|i| i.is_live()) {
            if i.generation == old {
                i.state = GenerationState::Active;
            } else if i.generation == generation {
                i.state = GenerationState::Draining;
            }
        }
        self.write_pidfile(pid);
        Ok(())
    }

    /// A drain of generation `generation` begins: what stopping each of its instances
    /// takes, but those whose drain began already.
    fn begin_drain(&mut self, generation: u64) -> Vec<DrainTarget> {
        let keys: Vec<Key> = self
            .st
            .of_generation(generation)
            .map(Instance::key)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.begin_drain_instance(key))
            .collect()
    }

    /// A drain of instance `key` begins: it is marked draining, and gets the wait for
    /// its sockets' queues when they no longer get new connections.
    fn begin_drain_instance(&mut self, key: Key) -> Option<DrainTarget> {
        let g = self.st.instances.get_mut(&key)?;
        if g.drain_begun {
            return None;
        }
        g.drain_begun = true;
        if g.is_live() {
            g.state = GenerationState::Draining;
        }
        let sockets = &self.st.sockets;
        let queue =
            (g.is_live() && sockets.any_steered() && !sockets.is_target(g.seat)).then(|| {
                QueueWait {
                    sockets: sockets.steered_sockets(g.seat),
                    wait: self.st.config.handoff_wait,
                }
            });
        Some(DrainTarget {
            generation: g.generation,
            queue,
            released: g.released.clone(),
            pid: g.pid,
            child: g.child.clone(),
            signal: g.stop_signal,
            timeout: g.drain_timeout,
            exited: g.exited.subscribe(),
        })
    }

    fn restart_finished(&mut self, report: RestartReport, started: Instant) {
        let st = &mut self.st;
        match report.outcome {
            RestartOutcome::Completed => st.counters.completed += 1,
            RestartOutcome::RolledBack { .. } => st.counters.rolled_back += 1,
            RestartOutcome::Failed { .. } => st.counters.failed += 1,
        }
        st.last_restart = Some(report.clone());
        st.bake = None;
        let restart = st.restart.take();
        // What failed, if the service is still lost: the restart's new generation when it
        // did not make it, else the generation that was lost.
        let new = report
            .new_generation
            .filter(|_| !report.outcome.is_success())
            .and_then(|g| st.first_of(g));
        let reason = report.outcome.reason().map(str::to_owned);
        let failed = match (new, reason) {
            (Some(g), reason) => FailedStart {
                reason,
                ..FailedStart::of(g)
            },
            // It could not start a generation at all (or could not read the file).
            (None, Some(reason)) => FailedStart {
                reason: Some(reason),
                ..FailedStart::default()
            },
            (None, None) => st
                .instances
                .values()
                .rev()
                .find(|g| !g.is_live())
                .map(FailedStart::of)
                .unwrap_or_default(),
        };
        // The active generation may have died while this restart ran; if the restart did
        // not replace it, the crash policy applies now.
        let lost = st.active_generation().is_none_or(|g| !g.is_live());
        let reverted = match (
            &report.outcome,
            report.new_generation,
            report.old_generation,
        ) {
            (RestartOutcome::RolledBack { reason }, Some(generation), Some(old_generation))
                if reason.starts_with("reverted during bake") =>
            {
                Ok(crate::proto::ReplyResult::Reverted {
                    generation,
                    old_generation,
                })
            }
            (outcome, _, _) => Err(format!(
                "the restart ended before the revert could be made: {}",
                outcome.reason().unwrap_or("it completed")
            )),
        };
        for (id, replies) in std::mem::take(&mut st.revert_waiters) {
            let answer = match &reverted {
                Ok(result) => crate::proto::Reply::result(id, result.clone()),
                Err(e) => {
                    crate::proto::Reply::error(id, crate::proto::ErrorKind::Invalid, e.clone())
                }
            };
            tokio::spawn(async move {
                let _ = replies.send(answer).await;
            });
        }
        self.cx.emit(
            restart.map(|r| (r, started)),
            EventKind::Finished { report },
        );
        if self.st.stopping {
            self.drain_all();
        } else if lost {
            self.schedule_respawn(Duration::ZERO, failed);
        }
    }

    /// The stop begins: a running restart sees it and rolls back; once none runs, every
    /// live generation drains.
    pub fn begin_stop(&mut self) {
        self.st.stopping = true;
        self.cx.stopping.send_replace(true);
        self.cx.emit(None, EventKind::Stopping);
        if self.st.restart.is_none() {
            self.drain_all();
        }
    }

    /// Drains every live generation, waits until each instance has ended (what it left
    /// behind killed and its process reaped, so the ports are free when `stop` answers),
    /// then sends [`Msg::Stopped`].
    fn drain_all(&self) {
        let live = self.st.live_generations();
        let ended: Vec<watch::Receiver<bool>> = self
            .st
            .instances
            .values()
            .map(|g| g.ended.clone())
            .collect();
        let cx = self.cx.clone();
        tokio::spawn(async move {
            let mut drains = tokio::task::JoinSet::new();
            for generation in live {
                let cx = cx.clone();
                drains.spawn(async move { drain(&cx, generation, None).await });
            }
            while drains.join_next().await.is_some() {}
            for mut e in ended {
                let _ = e.wait_for(|done| *done).await;
            }
            cx.tell(Msg::Stopped);
        });
    }

    /// After [`Msg::Stopped`]: the pidfile and the notify sockets go.
    pub fn finish_stop(&mut self) {
        if let (Some(path), Some(g)) = (&self.st.pidfile, self.st.active_generation()) {
            crate::pidfile::remove_if(path, g.pid);
        }
        for g in self.st.instances.values() {
            if let Some(child) = &g.child {
                child.release();
            }
        }
    }

    /// Sends `sig` to every live instance of the active generation; returns the first
    /// one's pid.
    pub fn forward_signal(&self, sig: Signal) -> Option<i32> {
        let generation = self.st.active?;
        let mut first = None;
        for g in self.st.live_of(generation) {
            let pid = g.pid;
            let Some(child) = g.child.as_ref() else {
                continue;
            };
            match child.signal(sig) {
                Ok(()) => {
                    info!(generation, instance = g.instance, pid, signal = %sig, "forwarded");
                    self.cx.emit(
                        None,
                        EventKind::Signalled {
                            generation,
                            pid,
                            signal: sig.to_string(),
                        },
                    );
                    first.get_or_insert(pid);
                }
                Err(e) => {
                    tracing::warn!(generation, pid, signal = %sig, error = %e, "cannot forward");
                }
            }
        }
        first
    }
}

/// The event that says instance `key` of a generation of `of` is ready: the generation's
/// own `Ready` when it runs one.
pub(super) fn ready_event(key: Key, of: u32, pid: i32, evidence: String) -> EventKind {
    let (generation, instance) = key;
    if of > 1 {
        EventKind::InstanceReady {
            generation,
            instance,
            pid,
            evidence,
        }
    } else {
        EventKind::Ready {
            generation,
            evidence,
        }
    }
}
