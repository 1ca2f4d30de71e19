//! Draining a generation: its stop signal, a deadline, then SIGKILL to the whole generation.

use std::time::Instant;

use tracing::{info, warn};

use super::Context;
use super::owner::{DrainTarget, Msg};
use crate::proto::{EventKind, ExitInfo};

/// Stops `generation` and waits until its main process has exited. Emits `draining`,
/// `killed` (when the deadline passed) and `exited` events under `restart`.
pub(super) async fn drain(
    cx: &Context,
    generation: u64,
    restart: Option<(u64, Instant)>,
) -> Option<ExitInfo> {
    let DrainTarget {
        pid,
        child,
        signal,
        timeout,
        mut exited,
    } = cx
        .ask(|reply| Msg::Drain { generation, reply })
        .await
        .flatten()?;
    let Some(child) = child else {
        // Already exited: nothing to signal or wait for.
        return *exited.borrow();
    };
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
            cx.emit(restart, EventKind::Killed { generation, pid });
            exited.wait_for(|s| s.is_some()).await.ok().and_then(|s| *s)
        }
    };
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
