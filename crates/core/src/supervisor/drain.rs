//! Draining a generation: its stop signal, a deadline, then SIGKILL to the whole generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Context;
use super::child::ChildProcess;
use super::owner::{DrainTarget, Msg, QueueWait};
use super::state::Key;
use crate::proto::{EventKind, ExitInfo};

/// Stops every instance of `generation` at once and waits until each has ended (its main
/// process reaped, nothing it started left). Emits `draining`, `killed` (when the deadline
/// passed) and `exited` events under `restart`. Returns how its first instance ended.
pub(super) async fn drain(
    cx: &Arc<Context>,
    generation: u64,
    restart: Option<(u64, Instant)>,
) -> Option<ExitInfo> {
    let targets = cx
        .ask(|reply| Msg::Drain { generation, reply })
        .await
        .unwrap_or_default();
    let mut targets = targets.into_iter();
    let first = targets.next()?;
    let mut others = tokio::task::JoinSet::new();
    for target in targets {
        let cx = cx.clone();
        others.spawn(async move { stop(&cx, target, restart).await });
    }
    let status = stop(cx, first, restart).await;
    while others.join_next().await.is_some() {}
    status
}

/// Stops one instance (`key`) and waits until it has ended, as [`drain`] does.
pub(super) async fn drain_instance(
    cx: &Context,
    key: Key,
    restart: Option<(u64, Instant)>,
) -> Option<ExitInfo> {
    let target = cx
        .ask(|reply| Msg::DrainInstance { key, reply })
        .await
        .flatten()?;
    stop(cx, target, restart).await
}

/// Stops one instance: waits for its sockets' queues when they no longer get new
/// connections, sends its stop signal, kills it at the deadline, and waits until nothing
/// of it is left.
async fn stop(
    cx: &Context,
    target: DrainTarget,
    restart: Option<(u64, Instant)>,
) -> Option<ExitInfo> {
    let DrainTarget {
        generation,
        pid,
        child,
        signal,
        timeout,
        mut exited,
        queue,
        mut released,
    } = target;
    let Some(child) = child else {
        // Already exited: nothing to signal, only its leftovers' end to wait for.
        let _ = released.wait_for(|e| *e).await;
        return *exited.borrow();
    };
    if let Some(queue) = queue {
        wait_for_queues(generation, child.as_ref(), &queue, &exited).await;
    }
    if exited.borrow().is_none() {
        if let Err(e) = child.signal(signal) {
            warn!(generation, pid, error = %e, "cannot send the stop signal");
        }
        cx.emit(
            restart,
            EventKind::Draining {
                generation,
                pid,
                signal: signal.to_string(),
                deadline_ms: timeout.as_millis() as u64,
            },
        );
    }
    let in_time = tokio::time::timeout(timeout, exited.wait_for(|s| s.is_some()))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|s| *s));
    let status = match in_time {
        Some(s) => Some(s),
        None => {
            info!(
                generation,
                pid, "drain deadline passed; killing the process group"
            );
            child.kill();
            cx.tell(Msg::Killed { generation, pid });
            cx.emit(restart, EventKind::Killed { generation, pid });
            exited.wait_for(|s| s.is_some()).await.ok().and_then(|s| *s)
        }
    };
    // Its sockets close once nothing of it is left to hold them, and the drain is over
    // only then: the next restart finds the group with the active generation's socket
    // alone. (Its reaping may take long on a busy machine, and is not waited for.)
    let _ = released.wait_for(|e| *e).await;
    if let Some(status) = status {
        cx.emit(
            restart,
            EventKind::Exited {
                generation,
                pid,
                status,
            },
        );
    }
    status
}

/// How often the old generation's queues are looked at while it takes what they hold: a
/// connection waits in them for about as long.
const QUEUE_POLL: Duration = Duration::from_millis(1);

/// Steered handoff: the old generation gets no new connection any more, but what the
/// kernel queued on its own sockets before the promotion is its to take. Its stop signal
/// waits until the accept queues of its sockets are empty, its UDP sockets hold no
/// datagram, and no connection of it holds bytes it has not read (a request it has not
/// seen), or until `queue.wait` has passed, or it has exited. Many servers stop between
/// accept and read: a request they have read is answered, one that waits is dropped;
/// and a datagram left on a socket that closes is lost.
async fn wait_for_queues(
    generation: u64,
    child: &dyn ChildProcess,
    queue: &QueueWait,
    exited: &watch::Receiver<Option<ExitInfo>>,
) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + queue.wait;
    let deadline_passed = || tokio::time::Instant::now() >= deadline;
    let ports: Vec<u16> = queue
        .sockets
        .iter()
        .filter_map(|l| match l.local_addr() {
            crate::listen::ListenAddr::Tcp(addr) => Some(addr.port()),
            _ => None,
        })
        .collect();
    loop {
        if exited.borrow().is_some() {
            return;
        }
        let queued: u32 = queue
            .sockets
            .iter()
            .map(|l| crate::listen::steer::queued(l).unwrap_or(0))
            .fold(0, u32::saturating_add);
        // Bounded by the same deadline: on a loaded machine one look may take long. Only
        // TCP listeners have connections (and no port would mean every port).
        let unread = queued == 0
            && !ports.is_empty()
            && tokio::time::timeout_at(deadline, child.unread_input(ports.clone()))
                .await
                .unwrap_or(true);
        if queued == 0 && !unread {
            debug!(
                generation,
                waited_us = started.elapsed().as_micros() as u64,
                "the old generation's queues are empty"
            );
            return;
        }
        if deadline_passed() {
            warn!(
                generation,
                queued,
                unread,
                "handoff_wait passed with connections still waiting for the old generation"
            );
            return;
        }
        tokio::time::sleep(QUEUE_POLL).await;
    }
}
