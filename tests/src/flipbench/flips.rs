//! Restarts back to back through the control socket, each as `zdctl restart` does it: connect,
//! send `restart`, read every event until the final result.

use std::path::Path;
use std::time::{Duration, Instant};

use zd_core::proto::{Client, Event, EventKind, Op, Reply, ReplyResult, RestartOutcome};
use zd_load::load::LiveCounters;

/// After this many failed restarts in a row the supervisor is taken to be broken, and the
/// mode stops flipping instead of piling up failures until the time cap.
const GIVE_UP_AFTER: usize = 5;

/// A restart slower than this gets its event timeline printed: the figures say that a
/// flip was slow, the timeline says which step was.
const SLOW_FLIP: Duration = Duration::from_secs(1);

/// When to stop flipping.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub flips: usize,
    pub min_requests: u64,
    /// The hard cap on the mode's flipping, whatever the two goals say.
    pub cap: Duration,
}

/// One restart as the client saw it.
#[derive(Debug, Clone)]
pub struct Flip {
    /// Just before the request was sent.
    pub started: Instant,
    /// Just after the final result arrived.
    pub ended: Instant,
    /// `Err(reason)` for anything but a completed restart.
    pub outcome: Result<(), String>,
    pub phases: Phases,
}

impl Flip {
    pub fn elapsed(&self) -> Duration {
        self.ended.duration_since(self.started)
    }
}

/// Spans of one restart in µs, from the supervisor's own clock (the events' `elapsed_us`,
/// counted from the moment it accepted the request). `None` when an event is missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Request accepted → new generation forked and exec'd (config re-read included).
    pub to_spawned: Option<u64>,
    /// Spawned → readiness proven: mostly the app's own start, plus detection latency.
    pub spawned_to_ready: Option<u64>,
    /// Ready → promoted, pidfile written, old generation signalled.
    pub ready_to_draining: Option<u64>,
    /// Old generation signalled → it exited: the app's drain.
    pub draining_to_exited: Option<u64>,
    /// The old generation outlived its drain deadline and was killed.
    pub killed: bool,
}

impl Phases {
    pub fn from_events(events: &[Event]) -> Phases {
        let at = |wanted: fn(&EventKind) -> bool| {
            events
                .iter()
                .find(|e| wanted(&e.kind))
                .and_then(|e| e.elapsed_us)
        };
        let spawned = at(|k| matches!(k, EventKind::Spawned { .. }));
        let ready = at(|k| matches!(k, EventKind::Ready { .. }));
        let draining = events.iter().find_map(|e| match e.kind {
            EventKind::Draining { generation, .. } => Some((generation, e.elapsed_us?)),
            _ => None,
        });
        let exited = draining.and_then(|(old, _)| {
            events.iter().find_map(|e| match e.kind {
                EventKind::Exited { generation, .. } if generation == old => e.elapsed_us,
                _ => None,
            })
        });
        let draining = draining.map(|(_, us)| us);
        let span = |from: Option<u64>, to: Option<u64>| to?.checked_sub(from?);
        Phases {
            to_spawned: spawned,
            spawned_to_ready: span(spawned, ready),
            ready_to_draining: span(ready, draining),
            draining_to_exited: span(draining, exited),
            killed: events
                .iter()
                .any(|e| matches!(e.kind, EventKind::Killed { .. })),
        }
    }
}

/// Restarts until `plan.flips` are done and the load has done `plan.min_requests`, or
/// until the cap. Progress goes to stderr.
pub async fn flip(socket: &Path, plan: Plan, live: &LiveCounters) -> Vec<Flip> {
    let started = Instant::now();
    let mut flips: Vec<Flip> = Vec::with_capacity(plan.flips);
    let mut failed_in_a_row = 0;
    while (flips.len() < plan.flips || live.requests() < plan.min_requests)
        && started.elapsed() < plan.cap
    {
        let flip = restart_once(socket).await;
        if let Err(reason) = &flip.outcome {
            eprintln!("flipbench: restart {} failed: {reason}", flips.len() + 1);
            failed_in_a_row += 1;
        } else {
            failed_in_a_row = 0;
        }
        flips.push(flip);
        if flips.len() % 50 == 0 {
            eprintln!(
                "flipbench: {} restarts, {} requests",
                flips.len(),
                live.requests()
            );
        }
        if failed_in_a_row >= GIVE_UP_AFTER {
            eprintln!("flipbench: {GIVE_UP_AFTER} restarts failed in a row; giving up");
            break;
        }
    }
    if started.elapsed() >= plan.cap {
        eprintln!("flipbench: stopped at the {:?} cap", plan.cap);
    }
    flips
}

async fn restart_once(socket: &Path) -> Flip {
    let failed = |started, reason: String| Flip {
        started,
        ended: Instant::now(),
        outcome: Err(reason),
        phases: Phases::default(),
    };
    let mut client = match Client::connect(socket).await {
        Ok(c) => c,
        Err(e) => return failed(Instant::now(), format!("{e}")),
    };
    let mut events = Vec::with_capacity(16);
    let started = Instant::now();
    let op = Op::Restart {
        ready_timeout_ms: None,
        attach: false,
        no_bake: false,
    };
    let reply = client.call(op, |event| events.push(event.clone())).await;
    let ended = Instant::now();
    if ended.duration_since(started) > SLOW_FLIP {
        let steps: Vec<String> = events
            .iter()
            .map(|e| format!("{:?} +{} µs", e.kind, e.elapsed_us.unwrap_or(0)))
            .collect();
        eprintln!(
            "flipbench: slow restart ({:?}):\n  {}",
            ended.duration_since(started),
            steps.join("\n  ")
        );
    }
    let outcome = match reply {
        Ok(Reply::Result { result, .. }) => match *result {
            ReplyResult::Restart(report) => match report.outcome {
                RestartOutcome::Completed => Ok(()),
                other => Err(format!("{other:?}")),
            },
            other => Err(format!("unexpected result {other:?}")),
        },
        Ok(Reply::Error { error, .. }) => Err(format!("{:?}: {}", error.kind, error.message)),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(format!("{e}")),
    };
    Flip {
        started,
        ended,
        outcome,
        phases: Phases::from_events(&events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zd_core::proto::ExitInfo;

    fn event(elapsed_us: u64, kind: EventKind) -> Event {
        Event {
            unix_ms: 0,
            restart: Some(1),
            elapsed_ms: Some(elapsed_us / 1000),
            elapsed_us: Some(elapsed_us),
            kind,
        }
    }

    #[test]
    fn phases_come_from_the_supervisors_elapsed_times() {
        let events = [
            event(5, EventKind::RestartRequested),
            event(
                800,
                EventKind::Spawned {
                    generation: 2,
                    pid: 20,
                },
            ),
            event(
                30_000,
                EventKind::Ready {
                    generation: 2,
                    evidence: "accepting".into(),
                },
            ),
            event(
                30_150,
                EventKind::Promoted {
                    generation: 2,
                    pid: 20,
                },
            ),
            event(
                30_400,
                EventKind::Draining {
                    generation: 1,
                    pid: 10,
                    signal: "TERM".into(),
                    deadline_ms: 10_000,
                },
            ),
            event(
                45_400,
                EventKind::Exited {
                    generation: 1,
                    pid: 10,
                    status: ExitInfo::Code { code: 0 },
                },
            ),
        ];
        let p = Phases::from_events(&events);
        assert_eq!(p.to_spawned, Some(800));
        assert_eq!(p.spawned_to_ready, Some(29_200));
        assert_eq!(p.ready_to_draining, Some(400));
        assert_eq!(p.draining_to_exited, Some(15_000));
        assert!(!p.killed);
    }

    #[test]
    fn missing_events_leave_spans_unknown() {
        let p = Phases::from_events(&[event(
            900,
            EventKind::Spawned {
                generation: 2,
                pid: 3,
            },
        )]);
        assert_eq!(p.to_spawned, Some(900));
        assert_eq!(p.ready_to_draining, None);
        assert_eq!(p.draining_to_exited, None);
    }
}
