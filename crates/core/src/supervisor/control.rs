//! Start-up, the owner's loop over control requests, signals and messages, and the
//! graceful stop.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, warn};

use super::child::{ChildProcess, Children};
use super::owner::{Msg, Owner};
use super::process::Processes;
use super::restart::RestartRun;
use super::resumed::{Resumed, Taken};
use super::snapshot::{LiveGeneration, STATE_FD_VAR, Snapshot, set_cloexec};
use super::state::{Myself, State};
use super::{Context, SupervisorError, SupervisorOptions};
use crate::listen::Listener;
use crate::listen::remove_socket_files;
use crate::listen::steer::Sockets;
use crate::proto::{
    ControlServer, ErrorKind, Event, EventKind, ListenerInfo, Op, PeerPolicy, Replies, Reply,
    ReplyResult, RequestQueue, ServerRequest, Status, request_queue, unix_ms,
};
use crate::signal::Signal;

/// A supervisor whose config is valid and whose listeners are open, ready to [`run`](Prepared::run).
#[derive(Debug)]
pub struct Prepared {
    pub(super) options: SupervisorOptions,
    pub(super) listeners: Vec<crate::listen::Listener>,
    /// Set when this binary takes over from the previous one of the same supervisor.
    pub(super) resume: Option<Resume>,
}

/// What the previous binary of this supervisor handed over (`reexec`).
#[derive(Debug)]
pub(super) struct Resume {
    pub taken: Taken,
    pub snapshot: Snapshot,
    /// The control socket (a reexec keeps it; after a crash it is bound anew).
    pub control: Option<std::os::fd::OwnedFd>,
    /// The listeners' sockets, in the order of the snapshot's.
    pub listeners: Vec<Option<std::os::fd::OwnedFd>>,
}

/// Reads the state the previous binary left for this one (`ZDCTL_REEXEC_STATE`), if any,
/// and takes its fds, made close-on-exec again so that no generation inherits them.
/// Call it before anything opens an fd: they are at the numbers the state names.
pub(super) fn take_reexec_state(
    config: &crate::config::ServiceConfig,
) -> Result<Option<Resume>, String> {
    if let Some(next) = std::env::var_os(super::reexec::LOG_SEQ_VAR) {
        // SAFETY: as below, before any thread runs; generations must not inherit it.
        unsafe { std::env::remove_var(super::reexec::LOG_SEQ_VAR) };
        if let Some(next) = next.to_str().and_then(|v| v.parse().ok()) {
            super::output::continue_from(next);
        }
    }
    let Some(value) = std::env::var_os(STATE_FD_VAR) else {
        return Ok(None);
    };
    // SAFETY: called before the runtime starts any thread (see `prepare`), so nothing
    // reads the environment meanwhile; generations must not inherit the variable.
    unsafe { std::env::remove_var(STATE_FD_VAR) };
    let fd = value
        .to_str()
        .and_then(|v| v.parse::<i32>().ok())
        .ok_or_else(|| format!("{STATE_FD_VAR} is not an fd number"))?;
    let snapshot = Snapshot::from_fd(fd)?;
    snapshot.check_fits(config)?;
    for fd in snapshot.fds() {
        set_cloexec(fd, true).map_err(|e| format!("fd {fd} was not handed over: {e}"))?;
    }
    use std::os::fd::FromRawFd;
    // SAFETY: the previous binary kept these fds open for us, and nothing in this process
    // has opened or taken them (checked above: they are open).
    let own = |fd: i32| Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    Ok(Some(Resume {
        taken: Taken::Reexec,
        control: own(snapshot.control_fd),
        listeners: snapshot.listeners.iter().map(|l| own(l.fd)).collect(),
        snapshot,
    }))
}

impl Resume {
    /// The listeners handed over, each checked against the inode recorded.
    pub(super) fn listeners(
        &mut self,
        config: &crate::config::ServiceConfig,
    ) -> Result<Vec<Listener>, SupervisorError> {
        let mut listeners = Vec::new();
        for ((spec, record), fd) in config
            .listeners
            .iter()
            .zip(&self.snapshot.listeners)
            .zip(&mut self.listeners)
        {
            let fd = fd.take().ok_or_else(|| SupervisorError::Reexec {
                reason: format!("listener '{}' was not handed over", record.name),
            })?;
            listeners.push(crate::listen::resume_listener(spec, fd, record.inode)?);
        }
        Ok(listeners)
    }
}

impl Prepared {
    /// The listeners, as opened or adopted.
    pub fn listeners(&self) -> &[crate::listen::Listener] {
        &self.listeners
    }

    /// Runs the supervisor until it is stopped (TERM, INT or the `stop` op). Returns `Ok`
    /// after a graceful stop in which every generation exited on its stop signal, and
    /// [`SupervisorError::UncleanStop`] when one had to be killed at its drain deadline.
    pub async fn run(self) -> Result<(), SupervisorError> {
        run_prepared(self).await
    }
}

async fn run_prepared(prepared: Prepared) -> Result<(), SupervisorError> {
    let Prepared {
        options,
        listeners,
        mut resume,
    } = prepared;
    let config = options.config;
    // Signals first: a HUP or TERM that arrives while we start must not kill us.
    let mut signals = match install_signals() {
        Ok(s) => s,
        Err(e) => {
            remove_socket_files(&listeners);
            return Err(e);
        }
    };
    let server = match resume.as_mut().and_then(|r| r.control.take()) {
        Some(fd) => ControlServer::resume(&options.control_socket, fd),
        None => ControlServer::bind(&options.control_socket).await,
    };
    let server = match server {
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
    // What a generation leaves behind comes to us rather than to init, to be ended and
    // reaped (crate::contain).
    if let Err(e) = crate::contain::become_subreaper() {
        warn!(error = %e, "cannot become a child subreaper; orphans of generations go to init");
    }
    let cgroups = crate::contain::ServiceCgroups::create(&config.name);
    let socket_files = unix_listeners(&listeners);
    let sockets = match &resume {
        Some(r) => Sockets::resume(
            listeners,
            r.snapshot.listeners.iter().map(|l| l.steered).collect(),
            r.snapshot.seat,
            r.snapshot.live.iter().all(|g| g.seat == r.snapshot.seat),
        ),
        None => Sockets::new(listeners),
    };
    let sockets = match sockets {
        Ok(s) => s,
        Err(e) => {
            ControlServer::remove(server.path());
            remove_socket_files(&socket_files);
            return Err(e.into());
        }
    };
    // The generations the previous binary ran, listed as our own children before the
    // orphan reaper starts.
    let resumed: Vec<(LiveGeneration, Arc<dyn ChildProcess>)> = resume
        .as_ref()
        .map(|r| {
            r.snapshot
                .live
                .iter()
                .filter_map(|record| {
                    Resumed::take(
                        record,
                        r.taken,
                        sockets.seat(record.seat),
                        &config.name,
                        &runtime_dir,
                        cgroups.as_ref(),
                    )
                    .inspect_err(|e| warn!(generation = record.generation, error = %e, "cannot take the generation back"))
                    .ok()
                    .map(|c| (record.clone(), Arc::new(c) as Arc<dyn ChildProcess>))
                })
                .collect()
        })
        .unwrap_or_default();
    let reaper = tokio::spawn(reap_orphans_on_sigchld());
    let state_file = crate::paths::state_file_in(&runtime_dir, &config.name);
    let children = Processes {
        runtime_dir,
        cgroups,
    };
    for (i, l) in sockets.seat(sockets.steered_to()).iter().enumerate() {
        let handoff = if sockets.is_steered(i) {
            "steered"
        } else {
            "shared"
        };
        info!(name = l.name(), address = %l.local_display(), inode = l.inode(), handoff, "listening");
    }
    let mut owner = Owner::new(
        config.clone(),
        sockets,
        options.config_path,
        Arc::new(children),
    );
    owner.st.me = Myself::current();
    owner.st.me.control_fd = server.raw_fd();
    owner.st.me.state_file = Some(state_file);
    owner.st.me.writer = Some(super::adopt::StateWriter::start());
    // Under systemd: it hears of readiness, restarts and the stop, and keeps the listeners
    // (stored once, by the supervisor that opened them: a reexec's or an adopter's were
    // stored before).
    super::systemd::start(&owner.cx, &owner.st.sockets, resume.is_none());

    let started = match resume {
        Some(r) => owner.resume(r.taken, r.snapshot, resumed),
        None => owner.start_active(false),
    };
    if let Err(reason) = started {
        ControlServer::remove(server.path());
        remove_socket_files(&owner.cx.socket_files);
        return Err(SupervisorError::FirstSpawn {
            service: config.name.clone(),
            reason,
        });
    }

    let control_path = server.path().to_path_buf();
    let (req_tx, mut req_rx) = request_queue(64);
    let server_task = tokio::spawn(server.serve(PeerPolicy::current(), req_tx));
    info!(socket = %control_path.display(), "supervisor ready");

    let (cx, stop) = owner.run(&mut req_rx, &mut signals).await;
    // Every generation has ended; whatever escaped them ends before `stop` is answered, so
    // no listener stays open behind the supervisor.
    let _ = tokio::task::spawn_blocking(|| crate::contain::end_all_strays(STRAYS_LIMIT)).await;
    remove_socket_files(&cx.socket_files);
    info!("stopped");
    reaper.abort();
    server_task.abort();
    ControlServer::remove(&control_path);
    answer_stop(stop.requesters).await;
    if stop.killed.is_empty() {
        Ok(())
    } else {
        Err(SupervisorError::UncleanStop {
            service: config.name.clone(),
            killed: stop.killed,
        })
    }
}

/// How long the processes that escaped every generation may take to die at the stop.
const STRAYS_LIMIT: Duration = Duration::from_secs(2);

/// Handles on the unix listeners, whose socket files go when the supervisor stops. Unix
/// listeners are always shared, so holding one more handle keeps no socket open longer.
fn unix_listeners(listeners: &[Listener]) -> Vec<Listener> {
    listeners
        .iter()
        .filter(|l| l.unix_path().is_some())
        .filter_map(|l| l.try_clone().ok())
        .collect()
}

/// A client waiting for the answer to its request: the request's id and its replies.
pub(super) type Requester = (u64, Replies);

/// How the stop ended.
#[derive(Debug)]
pub(super) struct StopOutcome {
    /// The clients that asked for it, to be answered once the supervisor is done.
    pub requesters: Vec<Requester>,
    /// The generations (number, main pid) that outlived their drain deadline and were
    /// killed.
    pub killed: Vec<(u64, i32)>,
}

/// Tells the clients that asked for the stop that it is done.
pub(super) async fn answer_stop(requesters: Vec<Requester>) {
    for (id, tx) in requesters {
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
}

impl Owner {
    /// An owner for a service that runs `config`, with no generation yet.
    pub(super) fn new(
        config: crate::config::ServiceConfig,
        sockets: Sockets,
        config_path: Option<std::path::PathBuf>,
        children: Arc<dyn Children>,
    ) -> Owner {
        let (events, _) = broadcast::channel(1024);
        let (tx, inbox) = mpsc::unbounded_channel();
        let (stopping, _) = watch::channel(false);
        let first: Vec<Listener> = sockets
            .open_seats()
            .flat_map(|(_, l)| l)
            .filter_map(|l| l.try_clone().ok())
            .collect();
        let cx = Arc::new(Context {
            socket_files: unix_listeners(&first),
            config_path,
            config_cache: Mutex::default(),
            events,
            owner: tx,
            stopping,
        });
        Owner {
            cx,
            st: State::new(config, sockets),
            children,
            inbox,
        }
    }

    /// The owner's loop: until the stop is done, takes control requests, signals and
    /// messages one at a time. Returns the context and how the stop went.
    ///
    /// Once stopping, it takes only messages: requests wait in the queue and signals in
    /// their channel, as they did before the owner existed.
    pub(super) async fn run(
        mut self,
        requests: &mut RequestQueue,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
    ) -> (Arc<Context>, StopOutcome) {
        let mut stop_requesters = Vec::new();
        self.persist();
        while !self.st.stopping {
            tokio::select! {
                Some(req) = requests.recv() => {
                    // Reading the status or watching changes nothing worth writing down.
                    let reads = matches!(req.op, Op::Status | Op::Watch | Op::Logs { .. });
                    if let Some(requester) = self.on_request(req) {
                        stop_requesters.push(requester);
                        self.begin_stop();
                    }
                    if reads {
                        continue;
                    }
                }
                Some(sig) = signals.recv() => self.on_signal(sig),
                Some(msg) = self.inbox.recv() => match msg {
                    Msg::ReexecChecked(checked) => self.finish_reexec(checked).await,
                    msg => self.on_msg(msg),
                },
            }
            self.persist();
        }
        while let Some(msg) = self.inbox.recv().await {
            match msg {
                Msg::Stopped => break,
                Msg::ReexecChecked(checked) => self.finish_reexec(checked).await,
                msg => self.on_msg(msg),
            }
        }
        self.finish_stop();
        self.remove_state_file();
        let outcome = StopOutcome {
            requesters: stop_requesters,
            killed: std::mem::take(&mut self.st.killed_at_stop),
        };
        (self.cx, outcome)
    }

    fn on_signal(&mut self, sig: Signal) {
        match sig {
            Signal::Terminate | Signal::Interrupt => {
                info!(signal = %sig, "stopping");
                self.begin_stop();
            }
            Signal::User2 => {
                info!("SIGUSR2: re-executing the installed binary");
                self.begin_reexec(None, None);
            }
            Signal::Hangup if self.restart_blocked().is_some() => {
                let reason = self.restart_blocked().unwrap_or_default();
                warn!(%reason, "SIGHUP ignored");
            }
            Signal::Hangup => {
                if let Err(busy) = self.start_restart(Instant::now(), None, false, None) {
                    warn!(
                        restart = busy,
                        "SIGHUP ignored: a restart is already running"
                    );
                }
            }
            other => {
                self.forward_signal(other);
            }
        }
    }

    /// Handles one control request. Returns the requester of a `stop`.
    fn on_request(&mut self, req: ServerRequest) -> Option<Requester> {
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
                ReplyResult::Status(Box::new(self.status())),
            )),
            Op::Restart {
                ready_timeout_ms: Some(0),
                ..
            } => reply(Reply::error(
                id,
                ErrorKind::Invalid,
                "ready_timeout_ms must be positive: a readiness timeout of 0 rolls every restart back",
            )),
            Op::Restart { .. } if self.restart_blocked().is_some() => reply(Reply::error(
                id,
                ErrorKind::Busy,
                self.restart_blocked().unwrap_or_default(),
            )),
            Op::Restart {
                ready_timeout_ms,
                attach,
                no_bake,
            } => {
                let timeout = ready_timeout_ms.map(Duration::from_millis);
                let requester = Some((id, replies.clone()));
                if let Err(running) = self.start_restart(received, timeout, no_bake, requester) {
                    if attach {
                        follow_restart(self.cx.events.subscribe(), running, id, replies.clone());
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
            Op::Logs {
                generation,
                after,
                until,
                lines,
            } => reply(self.logs(id, generation, after, until, lines)),
            Op::Revert => match &self.st.bake {
                Some(bake) => {
                    info!(
                        generation = bake.info.generation,
                        old = bake.info.old_generation,
                        "revert asked"
                    );
                    bake.revert.send_replace(true);
                    self.st.revert_waiters.push((id, replies.clone()));
                }
                None => reply(Reply::error(
                    id,
                    ErrorKind::Invalid,
                    "no restart of this service is in its bake window: nothing to revert",
                )),
            },
            Op::Stop => return Some((id, replies)),
            Op::Reexec { binary } => self.begin_reexec(binary, Some((id, replies))),
            Op::Signal { signal } => match Signal::from_str(&signal) {
                Ok(sig) => match self.forward_signal(sig) {
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
                let mut rx = self.cx.events.subscribe();
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

    /// Why a restart cannot begin now, apart from one running: a reexec being checked, or
    /// a generation adopted from a dead supervisor that is still draining.
    fn restart_blocked(&self) -> Option<String> {
        if self.st.me.reexecing {
            return Some(
                "the supervisor is re-executing itself; restart once 'zdctl reexec' is done"
                    .to_owned(),
            );
        }
        if self.st.restart.is_none() {
            let active = self.st.active;
            if let Some(g) = self
                .st
                .instances
                .values()
                .find(|g| g.is_live() && Some(g.generation) != active)
            {
                return Some(format!(
                    "generation {} (pid {}), left by the supervisor that died, is still draining; \
                     restart once it has exited",
                    g.generation, g.pid
                ));
            }
        }
        None
    }

    /// Starts a restart unless one is running (then returns its number).
    fn start_restart(
        &mut self,
        requested_at: Instant,
        ready_timeout: Option<Duration>,
        no_bake: bool,
        requester: Option<Requester>,
    ) -> Result<u64, u64> {
        let events = self.cx.events.subscribe();
        if let Some(running) = self.st.restart {
            return Err(running);
        }
        if self.st.stopping {
            return Err(0);
        }
        self.st.restart_seq += 1;
        self.st.counters.requested += 1;
        let restart = self.st.restart_seq;
        self.st.restart = Some(restart);
        if let Some((id, replies)) = requester {
            follow_restart(events, restart, id, replies);
        }
        let run = RestartRun {
            cx: self.cx.clone(),
            restart,
            started: requested_at,
            ready_timeout,
            no_bake,
            current: self.st.config.clone(),
            old_generation: self.st.active,
            old_instances: self
                .st
                .active
                .map(|g| self.st.live_of(g).map(|i| i.instance).collect())
                .unwrap_or_default(),
        };
        let begun = run.begin(self.st.active, |config| self.start_new(config));
        tokio::spawn(run.run(begun));
        Ok(restart)
    }

    fn status(&self) -> Status {
        let st = &self.st;
        Status {
            service: st.config.name.clone(),
            supervisor_pid: std::process::id() as i32,
            started_unix_ms: unix_ms(st.me.started),
            config_path: self
                .cx
                .config_path
                .as_ref()
                .map(|p| p.display().to_string()),
            active_generation: st.active,
            restart_in_progress: st.restart,
            generations: st.generation_infos(),
            listeners: st
                .sockets
                .seat(st.sockets.steered_to())
                .iter()
                .enumerate()
                .map(|(i, l)| ListenerInfo {
                    name: l.name().to_owned(),
                    address: l.local_display(),
                    inode: l.inode(),
                    fd: 3 + i as i32,
                })
                .collect(),
            sockets: st.socket_infos(),
            restarts: st.counters.clone(),
            last_restart: st.last_restart.clone(),
            containment: Some(self.children.containment()),
            intercept_binds: st.config.intercept_binds,
            failing: st.failing.as_ref().map(|f| f.info()),
            supervisor: Some(st.me.info()),
            log_lines: Some(st.config.log_lines),
            instances: Some(st.config.instances),
            capacity: Some(st.capacity()),
            bake: st.bake.as_ref().map(|b| b.info.clone()),
        }
    }
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

/// Reaps the orphans that come to us, each time a child of ours exits: those generations
/// leave, and, as a container's PID 1, every orphan of the pid namespace.
///
/// Each round sweeps until a sweep reaps nothing: the kernel's list of our children
/// (`/proc/PID/task/TID/children`) may skip an entry while it changes under the read, and
/// a zombie missed after the last SIGCHLD would otherwise wait for the next one, which may
/// never come. [`REAP_BACKSTOP`] bounds that wait even so.
async fn reap_orphans_on_sigchld() {
    let mut chld = signal(SignalKind::child())
        .inspect_err(
            |e| warn!(error = %e, "cannot watch SIGCHLD; orphans are reaped every few seconds"),
        )
        .ok();
    let mut backstop = tokio::time::interval(REAP_BACKSTOP);
    backstop.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(()) = async { chld.as_mut()?.recv().await } => {}
            _ = backstop.tick() => {}
        }
        while let Ok(reaped @ 1..) = tokio::task::spawn_blocking(crate::contain::reap_orphans).await
        {
            tracing::trace!(reaped, "reaped orphans");
        }
    }
}

/// How long a zombie the SIGCHLD-driven sweeps missed may wait at most.
const REAP_BACKSTOP: Duration = Duration::from_secs(5);

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
