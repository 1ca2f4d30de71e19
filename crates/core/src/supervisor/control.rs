//! The main loop: start-up, control requests, signals, crashes and the graceful stop.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{error, info, warn};

use super::child::{Started, send_signal, start_generation};
use super::drain::drain;
use super::restart::RestartRun;
use super::start_priority::IdleStart;
use super::state::State;
use super::{LoopMsg, Shared, SupervisorError, SupervisorOptions};
use crate::config::RestartMode;
use crate::listen::remove_socket_files;
use crate::proto::{
    ControlServer, ErrorKind, Event, EventKind, ExitInfo, GenerationState, ListenerInfo, Op,
    PeerPolicy, Replies, Reply, ReplyResult, ServerRequest, Status, request_queue, unix_ms,
};
use crate::ready::{ReadyContext, wait_ready};
use crate::signal::Signal;

/// A supervisor whose config is valid and whose listeners are open, ready to [`run`](Prepared::run).
#[derive(Debug)]
pub struct Prepared {
    pub(super) options: SupervisorOptions,
    pub(super) listeners: Vec<crate::listen::Listener>,
}

impl Prepared {
    /// The listeners, as opened or adopted.
    pub fn listeners(&self) -> &[crate::listen::Listener] {
        &self.listeners
    }

    /// Runs the supervisor until it is stopped (TERM, INT or the `stop` op). Returns `Ok`
    /// after a graceful stop in which every generation exited.
    pub async fn run(self) -> Result<(), SupervisorError> {
        run_prepared(self).await
    }
}

async fn run_prepared(prepared: Prepared) -> Result<(), SupervisorError> {
    let Prepared { options, listeners } = prepared;
    let config = options.config;
    // Signals first: a HUP or TERM that arrives while we start must not kill us.
    let mut signals = match install_signals() {
        Ok(s) => s,
        Err(e) => {
            remove_socket_files(&listeners);
            return Err(e);
        }
    };
    let server = match ControlServer::bind(&options.control_socket).await {
        Ok(s) => s,
        Err(e) => {
            remove_socket_files(&listeners);
            return Err(e.into());
        }
    };
    let runtime_dir = options
        .control_socket
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(crate::paths::runtime_dir);
    let (events, _) = broadcast::channel(1024);
    let (loop_tx, mut loop_rx) = mpsc::unbounded_channel();
    let (stopping, _) = watch::channel(false);
    // What a generation leaves behind comes to us rather than to init, to be ended and
    // reaped (crate::contain).
    if let Err(e) = crate::contain::become_subreaper() {
        warn!(error = %e, "cannot become a child subreaper; orphans of generations go to init");
    }
    let reaper = tokio::spawn(reap_orphans_on_sigchld());
    let shared = Arc::new(Shared {
        state: Mutex::new(State::new(config.clone())),
        listeners,
        runtime_dir,
        config_path: options.config_path,
        config_cache: Mutex::default(),
        events,
        loop_tx,
        stopping,
        cgroups: crate::contain::ServiceCgroups::create(&config.name),
        started: SystemTime::now(),
    });
    for l in &shared.listeners {
        info!(name = l.name(), address = %l.local_display(), inode = l.inode(), "listening");
    }

    match start_generation(&shared, &config, GenerationState::Active, true) {
        Ok(Started {
            generation,
            pid,
            idle_start,
            ..
        }) => {
            shared.lock().active = Some(generation);
            shared.write_pidfile(pid);
            shared.emit(None, EventKind::Spawned { generation, pid });
            log_first_readiness(&shared, generation, pid, idle_start);
        }
        Err(reason) => {
            ControlServer::remove(server.path());
            remove_socket_files(&shared.listeners);
            return Err(SupervisorError::FirstSpawn {
                service: config.name.clone(),
                reason,
            });
        }
    }

    let control_path = server.path().to_path_buf();
    let (req_tx, mut req_rx) = request_queue(64);
    let server_task = tokio::spawn(server.serve(PeerPolicy::current(), req_tx));
    info!(socket = %control_path.display(), "supervisor ready");

    let mut stop_requesters = Vec::new();
    loop {
        tokio::select! {
            Some(req) = req_rx.recv() => {
                if let Some(replies) = handle_request(&shared, req) {
                    stop_requesters.push(replies);
                    break;
                }
            }
            Some(sig) = signals.recv() => match sig {
                Signal::Terminate | Signal::Interrupt => {
                    info!(signal = %sig, "stopping");
                    break;
                }
                Signal::Hangup => {
                    if let Err(busy) = start_restart(&shared, Instant::now(), None, None) {
                        warn!(restart = busy, "SIGHUP ignored: a restart is already running");
                    }
                }
                other => {
                    forward_signal(&shared, other);
                }
            },
            Some(msg) = loop_rx.recv() => on_loop_msg(&shared, msg),
        }
    }

    stop_all(&shared).await;
    reaper.abort();
    server_task.abort();
    ControlServer::remove(&control_path);
    for replies in stop_requesters {
        let (id, tx) = replies;
        let _ = tx
            .send(Reply::result(
                id,
                ReplyResult::Done {
                    message: "stopped".into(),
                },
            ))
            .await;
        // Let the connection flush the reply before the process exits.
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.closed()).await;
    }
    Ok(())
}

/// Logs when generation 1 becomes ready. Nothing waits on it: there is no older generation
/// to protect, and the listener queues clients until the app accepts.
fn log_first_readiness(shared: &Arc<Shared>, generation: u64, pid: i32, idle_start: IdleStart) {
    let (checks, timeout, name, notify) = {
        let st = shared.lock();
        let notify = st
            .generations
            .get(&generation)
            .and_then(|g| g.notify.as_ref().map(|n| n.state()));
        (
            st.config.ready.checks.clone(),
            st.config.ready.timeout,
            st.config.name.clone(),
            notify,
        )
    };
    let ctx = ReadyContext {
        service: name,
        generation,
        pid,
        listener_inodes: shared.listeners.iter().map(|l| l.inode()).collect(),
        notify,
        idle_start: idle_start.began(),
    };
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, wait_ready(&checks, &ctx)).await {
            Ok(Ok(evidence)) => info!(generation, pid, %evidence, "ready"),
            Ok(Err(e)) => warn!(generation, pid, error = %e, "not ready"),
            Err(_) => warn!(generation, pid, "not ready within the readiness timeout"),
        }
        // Ready or not, this generation is the service now: at its normal priority.
        idle_start.end();
    });
}

/// Handles one control request. Returns the requester of a `stop`, which ends the loop.
fn handle_request(shared: &Arc<Shared>, req: ServerRequest) -> Option<(u64, Replies)> {
    let ServerRequest {
        id,
        op,
        received,
        replies,
    } = req;
    let reply = |r: Reply| {
        let replies = replies.clone();
        tokio::spawn(async move {
            let _ = replies.send(r).await;
        });
    };
    match op {
        Op::Status => reply(Reply::result(
            id,
            ReplyResult::Status(Box::new(status(shared))),
        )),
        Op::Restart {
            ready_timeout_ms: Some(0),
            ..
        } => reply(Reply::error(
            id,
            ErrorKind::Invalid,
            "ready_timeout_ms must be positive: a readiness timeout of 0 rolls every restart back",
        )),
        Op::Restart {
            ready_timeout_ms,
            attach,
        } => {
            let timeout = ready_timeout_ms.map(Duration::from_millis);
            let requester = Some((id, replies.clone()));
            if let Err(running) = start_restart(shared, received, timeout, requester) {
                if attach {
                    follow_restart(shared.events.subscribe(), running, id, replies.clone());
                } else {
                    let mut r = Reply::error(
                        id,
                        ErrorKind::Busy,
                        format!(
                            "restart #{running} is in progress; wait for it or follow it with --attach"
                        ),
                    );
                    if let Reply::Error { error, .. } = &mut r {
                        error.restart = Some(running);
                    }
                    reply(r);
                }
            }
        }
        Op::Stop => return Some((id, replies)),
        Op::Signal { signal } => match Signal::from_str(&signal) {
            Ok(sig) => match forward_signal(shared, sig) {
                Some(pid) => reply(Reply::result(
                    id,
                    ReplyResult::Done {
                        message: format!("sent {sig} to pid {pid}"),
                    },
                )),
                None => reply(Reply::error(
                    id,
                    ErrorKind::Invalid,
                    "the service has no active generation to signal",
                )),
            },
            Err(e) => reply(Reply::error(id, ErrorKind::Invalid, e.to_string())),
        },
        Op::Watch => {
            let mut rx = shared.events.subscribe();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => {
                            if replies.send(Reply::event(id, event)).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
    }
    None
}

/// Starts a restart unless one is running (then returns its number).
fn start_restart(
    shared: &Arc<Shared>,
    requested_at: Instant,
    ready_timeout: Option<Duration>,
    requester: Option<(u64, Replies)>,
) -> Result<u64, u64> {
    let events = shared.events.subscribe();
    let restart = {
        let mut st = shared.lock();
        if let Some(running) = st.restart {
            return Err(running);
        }
        if st.stopping {
            return Err(0);
        }
        st.restart_seq += 1;
        st.counters.requested += 1;
        st.restart = Some(st.restart_seq);
        st.restart_seq
    };
    if let Some((id, replies)) = requester {
        follow_restart(events, restart, id, replies);
    }
    let run = RestartRun {
        shared: shared.clone(),
        restart,
        started: requested_at,
        ready_timeout,
    };
    let begun = run.begin();
    tokio::spawn(run.run(begun));
    Ok(restart)
}

/// Streams the events of `restart` to a client and ends with its report. The restart goes
/// on if the client leaves.
fn follow_restart(mut rx: broadcast::Receiver<Event>, restart: u64, id: u64, replies: Replies) {
    tokio::spawn(async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if event.restart != Some(restart) {
                continue;
            }
            let report = match &event.kind {
                EventKind::Finished { report } => Some(report.clone()),
                _ => None,
            };
            if replies.send(Reply::event(id, event)).await.is_err() {
                break;
            }
            if let Some(report) = report {
                let _ = replies
                    .send(Reply::result(id, ReplyResult::Restart(report)))
                    .await;
                break;
            }
        }
    });
}

/// Sends `sig` to the active generation; returns its pid.
fn forward_signal(shared: &Arc<Shared>, sig: Signal) -> Option<i32> {
    let (generation, pid, pidfd) = {
        let st = shared.lock();
        let g = st.active_generation().filter(|g| g.is_live())?;
        (g.generation, g.pid, g.pidfd.clone()?)
    };
    match send_signal(&pidfd, sig) {
        Ok(()) => {
            info!(generation, pid, signal = %sig, "forwarded");
            shared.emit(
                None,
                EventKind::Signalled {
                    generation,
                    pid,
                    signal: sig.to_string(),
                },
            );
            Some(pid)
        }
        Err(e) => {
            warn!(generation, pid, signal = %sig, error = %e, "cannot forward");
            None
        }
    }
}

fn on_loop_msg(shared: &Arc<Shared>, msg: LoopMsg) {
    match msg {
        LoopMsg::Exited { generation, status } => on_exit(shared, generation, status),
        LoopMsg::ActiveLost => schedule_respawn(shared, None),
        LoopMsg::RespawnDue => respawn(shared),
    }
}

/// A generation's main process exited. Only the active generation's exit matters here:
/// starting and draining ones are watched by the restart that owns them.
fn on_exit(shared: &Arc<Shared>, generation: u64, status: ExitInfo) {
    let (pid, uptime) = {
        let mut st = shared.lock();
        if st.stopping || st.active != Some(generation) {
            return;
        }
        st.counters.crashes += 1;
        st.active = None;
        let Some(g) = st.generations.get(&generation) else {
            return;
        };
        (g.pid, g.started_at.elapsed())
    };
    error!(generation, pid, %status, "the active generation exited");
    shared.emit(
        None,
        EventKind::Exited {
            generation,
            pid,
            status,
        },
    );
    if let Some(path) = shared.lock().pidfile.clone() {
        crate::pidfile::remove_if(&path, pid);
    }
    if shared.lock().restart.is_some() {
        // The running restart replaces it, or asks for a respawn when it rolls back.
        shared.lock().lost = Some(status);
        return;
    }
    shared.lock().lost = Some(status);
    schedule_respawn(shared, Some(uptime));
}

/// Applies the restart policy after the active generation was lost.
fn schedule_respawn(shared: &Arc<Shared>, uptime: Option<Duration>) {
    let (delay, next) = {
        let mut st = shared.lock();
        let Some(status) = st.lost else { return };
        let wanted = match st.config.restart.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => !status.success(),
            RestartMode::Never => false,
        };
        if !wanted || st.stopping {
            info!(%status, "not respawning (restart policy)");
            return;
        }
        let delay = st.next_backoff(uptime.unwrap_or_default());
        (delay, st.next_generation)
    };
    info!(
        generation = next,
        delay_ms = delay.as_millis() as u64,
        "respawning"
    );
    shared.emit(
        None,
        EventKind::Respawning {
            generation: next,
            delay_ms: delay.as_millis() as u64,
        },
    );
    let tx = shared.loop_tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(LoopMsg::RespawnDue);
    });
}

fn respawn(shared: &Arc<Shared>) {
    let config = {
        let st = shared.lock();
        if st.stopping
            || st.restart.is_some()
            || st.active_generation().is_some_and(|g| g.is_live())
        {
            return;
        }
        st.config.clone()
    };
    match start_generation(shared, &config, GenerationState::Active, true) {
        Ok(Started {
            generation,
            pid,
            idle_start,
            ..
        }) => {
            {
                let mut st = shared.lock();
                st.active = Some(generation);
                st.lost = None;
            }
            shared.write_pidfile(pid);
            shared.emit(None, EventKind::Spawned { generation, pid });
            shared.emit(None, EventKind::Promoted { generation, pid });
            log_first_readiness(shared, generation, pid, idle_start);
        }
        Err(e) => {
            error!(error = %e, "respawn failed");
            schedule_respawn(shared, None);
        }
    }
}

fn status(shared: &Arc<Shared>) -> Status {
    let st = shared.lock();
    Status {
        service: st.config.name.clone(),
        supervisor_pid: std::process::id() as i32,
        started_unix_ms: unix_ms(shared.started),
        config_path: shared.config_path.as_ref().map(|p| p.display().to_string()),
        active_generation: st.active,
        restart_in_progress: st.restart,
        generations: st.generation_infos(),
        listeners: shared
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerInfo {
                name: l.name().to_owned(),
                address: l.local_display(),
                inode: l.inode(),
                fd: 3 + i as i32,
            })
            .collect(),
        restarts: st.counters.clone(),
        last_restart: st.last_restart.clone(),
        containment: Some(match &shared.cgroups {
            Some(c) => format!("cgroup:{}", c.rel()),
            None => "process-group".to_owned(),
        }),
    }
}

/// Stops everything: a running restart rolls back, every live generation drains, and what
/// is left of their process groups is killed.
async fn stop_all(shared: &Arc<Shared>) {
    shared.lock().stopping = true;
    shared.stopping.send_replace(true);
    shared.emit(None, EventKind::Stopping);
    // A running restart sees `stopping`, stops its new generation and finishes.
    let mut events = shared.events.subscribe();
    while shared.lock().restart.is_some() {
        let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
    }
    let live: Vec<(u64, i32)> = shared
        .lock()
        .generations
        .values()
        .filter(|g| g.is_live())
        .map(|g| (g.generation, g.pid))
        .collect();
    let mut drains = tokio::task::JoinSet::new();
    for (generation, _) in &live {
        let shared = shared.clone();
        let generation = *generation;
        drains.spawn(async move { drain(&shared, generation, None).await });
    }
    while drains.join_next().await.is_some() {}
    // Each generation's exit watcher ends what it left behind and reaps it; `stop` answers
    // only once that is done, so the ports are free when the client returns.
    let ended: Vec<watch::Receiver<bool>> = shared
        .lock()
        .generations
        .values()
        .map(|g| g.ended.clone())
        .collect();
    for mut e in ended {
        let _ = e.wait_for(|done| *done).await;
    }
    let (pidfile, active_pid) = {
        let st = shared.lock();
        (st.pidfile.clone(), st.active_generation().map(|g| g.pid))
    };
    if let (Some(path), Some(pid)) = (pidfile, active_pid) {
        crate::pidfile::remove_if(&path, pid);
    }
    shared
        .lock()
        .generations
        .values_mut()
        .for_each(|g| g.notify = None);
    remove_socket_files(&shared.listeners);
    info!("stopped");
}

/// Reaps the orphans that generations leave to us, each time a child of ours exits.
async fn reap_orphans_on_sigchld() {
    let Ok(mut chld) = signal(SignalKind::child()) else {
        warn!("cannot watch SIGCHLD; orphans of generations are reaped when a generation ends");
        return;
    };
    while chld.recv().await.is_some() {
        let _ = tokio::task::spawn_blocking(crate::contain::reap_orphans).await;
    }
}

/// Routes every signal the supervisor handles or forwards into one channel.
fn install_signals() -> Result<mpsc::UnboundedReceiver<Signal>, SupervisorError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let wanted = Signal::handled_by_supervisor()
        .iter()
        .chain(Signal::forwardable());
    for &sig in wanted {
        let mut stream =
            signal(SignalKind::from_raw(sig.as_raw())).map_err(|source| SupervisorError::Io {
                about: format!("install a handler for {sig}"),
                source,
            })?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}
