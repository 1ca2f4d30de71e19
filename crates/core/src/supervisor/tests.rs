//! The owner and the restart state machine, in-process, against a fake child: every
//! transition of DESIGN §6, the crash policy and the stop. Time is paused, so deadlines
//! and backoffs pass at once.

mod fake;
mod intercept;
mod lifecycle;
mod restart;
mod start_limit;
mod steer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use super::Context;
use super::control::{StopOutcome, answer_stop};
use super::owner::Owner;
use crate::config::{RestartMode, ServiceConfig};
use crate::proto::{
    ErrorKind, Event, EventKind, ExitInfo, GenerationState, Op, Replies, Reply, ReplyResult,
    RestartOutcome, RestartReport, ServerRequest, Status, request_queue,
};
use crate::signal::Signal;
use fake::{Done, FakeChildren, Readiness, Script, pid_of};

const CODE_0: ExitInfo = ExitInfo::Code { code: 0 };

/// Awaits `f`, or fails the test once a minute of (paused, so instant) time has passed
/// without it: a transition that never comes fails rather than hangs.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("nothing happened for a minute")
}

fn no_sockets() -> crate::listen::steer::Sockets {
    crate::listen::steer::Sockets::new(Vec::new()).expect("no sockets")
}

fn config() -> ServiceConfig {
    let mut c = ServiceConfig::defaults_for("svc", vec!["app".into()]);
    c.ready.timeout = Duration::from_secs(5);
    c.drain_timeout = Duration::from_secs(3);
    c.restart.backoff = Duration::from_millis(100);
    c.restart.backoff_max = Duration::from_secs(1);
    c
}

/// An owner running on a fake child, fed requests and signals as `zdctl run` feeds it.
struct Harness {
    fake: FakeChildren,
    requests: crate::proto::RequestSender,
    signals: mpsc::UnboundedSender<Signal>,
    events: broadcast::Receiver<Event>,
    owner: tokio::task::JoinHandle<(Arc<Context>, StopOutcome)>,
    next_id: u64,
}

/// A request on its way: its replies arrive here.
struct Pending(mpsc::Receiver<Reply>);

impl Pending {
    /// The events, then the final reply.
    async fn replies(mut self) -> (Vec<Event>, Reply) {
        let mut events = Vec::new();
        while let Some(r) = within(self.0.recv()).await {
            match r {
                Reply::Event { event, .. } => events.push(*event),
                last => return (events, last),
            }
        }
        panic!("the request got no final reply");
    }

    /// For a restart: its events, described, and its report.
    async fn restart(self) -> (Vec<String>, RestartReport) {
        let (events, last) = self.replies().await;
        match last {
            Reply::Result { result, .. } => match *result {
                ReplyResult::Restart(report) => (describe_all(&events), report),
                other => panic!("not a restart report: {other:?}"),
            },
            other => panic!("not a result: {other:?}"),
        }
    }
}

impl Harness {
    /// Starts the owner with generation 1, as `zdctl run` does.
    fn start(fake: &FakeChildren, config: ServiceConfig) -> Harness {
        Harness::start_on(fake, config, no_sockets())
    }

    /// [`Harness::start`] with these sockets.
    fn start_on(
        fake: &FakeChildren,
        config: ServiceConfig,
        sockets: crate::listen::steer::Sockets,
    ) -> Harness {
        let mut owner = Owner::new(config, sockets, None, Arc::new(fake.clone()));
        let events = owner.cx.events.subscribe();
        owner.start_active(false).expect("generation 1 starts");
        let (requests, mut queue) = request_queue(8);
        let (signals, mut signal_rx) = mpsc::unbounded_channel();
        let owner = tokio::spawn(async move { owner.run(&mut queue, &mut signal_rx).await });
        Harness {
            fake: fake.clone(),
            requests,
            signals,
            events,
            owner,
            next_id: 0,
        }
    }

    async fn send(&mut self, op: Op) -> Pending {
        let (replies, rx) = Replies::channel(64);
        self.next_id += 1;
        let request = ServerRequest {
            id: self.next_id,
            op,
            received: Instant::now(),
            replies,
        };
        assert!(
            self.requests.send(request).await,
            "the owner takes requests"
        );
        Pending(rx)
    }

    async fn restart(&mut self) -> Pending {
        self.restart_within(None).await
    }

    async fn restart_within(&mut self, ready_timeout_ms: Option<u64>) -> Pending {
        self.send(Op::Restart {
            ready_timeout_ms,
            attach: false,
            no_bake: false,
        })
        .await
    }

    async fn status(&mut self) -> Status {
        match self.send(Op::Status).await.replies().await.1 {
            Reply::Result { result, .. } => match *result {
                ReplyResult::Status(s) => *s,
                other => panic!("not a status: {other:?}"),
            },
            other => panic!("not a result: {other:?}"),
        }
    }

    /// Every event broadcast since the last call, described.
    fn seen(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            seen.push(describe(&e.kind));
        }
        seen
    }

    /// Waits for a broadcast event described as `want`; returns those before it too.
    async fn wait_for(&mut self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let e = within(self.events.recv()).await.expect("events flow");
            seen.push(describe(&e.kind));
            if seen.last().is_some_and(|d| d == want) {
                return seen;
            }
        }
    }

    /// Stops with the `stop` op, as a client would; returns the events from the stop on.
    async fn stop(self) -> (Vec<String>, FakeChildren) {
        let (events, fake, _) = self.stop_killing().await;
        (events, fake)
    }

    /// [`Harness::stop`], also returning the generations the stop had to kill.
    async fn stop_killing(mut self) -> (Vec<String>, FakeChildren, Vec<(u64, i32)>) {
        let stop = self.send(Op::Stop).await;
        self.finish_killing(Some(stop)).await
    }

    async fn finish(self, stop: Option<Pending>) -> (Vec<String>, FakeChildren) {
        let (events, fake, _) = self.finish_killing(stop).await;
        (events, fake)
    }

    async fn finish_killing(
        mut self,
        stop: Option<Pending>,
    ) -> (Vec<String>, FakeChildren, Vec<(u64, i32)>) {
        let (_cx, outcome) = within(&mut self.owner).await.expect("the owner ends");
        let StopOutcome { requesters, killed } = outcome;
        assert_eq!(requesters.len(), usize::from(stop.is_some()));
        answer_stop(requesters).await;
        if let Some(stop) = stop {
            match stop.replies().await.1 {
                Reply::Result { result, .. } => {
                    assert!(
                        matches!(*result, ReplyResult::Done { ref message } if message == "stopped")
                    )
                }
                other => panic!("stop was not answered: {other:?}"),
            }
        }
        (self.seen(), self.fake, killed)
    }
}

fn describe_all(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| describe(&e.kind)).collect()
}

fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::RestartRequested => "requested".into(),
        EventKind::ConfigReloaded { .. } => "reloaded".into(),
        EventKind::Spawned { generation, pid } => {
            assert_eq!(*pid, pid_of(*generation));
            format!("spawned {generation}")
        }
        EventKind::WaitingReady { generation, .. } => format!("waiting {generation}"),
        EventKind::Ready { generation, .. } => format!("ready {generation}"),
        EventKind::Promoted { generation, .. } => format!("promoted {generation}"),
        EventKind::Draining {
            generation, signal, ..
        } => format!("draining {generation} {signal}"),
        EventKind::Killed { generation, .. } => format!("killed {generation}"),
        EventKind::Exited {
            generation, status, ..
        } => format!("exited {generation} {}", status.shell_code()),
        EventKind::Finished { report } => match report.outcome {
            RestartOutcome::Completed => "completed".into(),
            RestartOutcome::RolledBack { .. } => "rolled back".into(),
            RestartOutcome::Failed { .. } => "failed".into(),
        },
        EventKind::Respawning {
            generation,
            delay_ms,
        } => format!("respawning {generation} in {delay_ms}ms"),
        EventKind::Signalled {
            generation, signal, ..
        } => format!("signalled {generation} {signal}"),
        EventKind::Stopping => "stopping".into(),
        EventKind::Failing {
            generation,
            failed_starts,
            ..
        } => match generation {
            Some(g) => format!("failing after {g} ({failed_starts} failed starts)"),
            None => format!("failing ({failed_starts} failed starts)"),
        },
        EventKind::InstanceReady {
            generation,
            instance,
            ..
        } => format!("ready {generation}.{instance}"),
        EventKind::Step {
            generation,
            step,
            of,
        } => format!("step {generation} {step}/{of}"),
        EventKind::Baking { generation, .. } => format!("baking {generation}"),
        EventKind::Reverted { generation, .. } => format!("reverted {generation}"),
        EventKind::InstanceRespawning {
            generation,
            instance,
            delay_ms,
        } => format!("respawning {generation}.{instance} in {delay_ms}ms"),
        EventKind::Unknown => "unknown".into(),
    }
}

/// The generations in `status`, oldest first, with their states.
fn states(status: &Status) -> Vec<(u64, GenerationState)> {
    let mut g: Vec<_> = status
        .generations
        .iter()
        .map(|g| (g.generation, g.state))
        .collect();
    g.sort_by_key(|(generation, _)| *generation);
    g
}

fn reason(report: &RestartReport) -> &str {
    report.outcome.reason().unwrap_or("")
}
