//! Draining a generation: its stop signal, a deadline, then SIGKILL to its process group.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::Shared;
use super::child::{kill_group, send_signal};
use crate::proto::EventKind;
use crate::proto::{ExitInfo, GenerationState};

/// Stops `generation` and waits until its main process has exited. Emits `draining`,
/// `killed` (when the deadline passed) and `exited` events under `restart`.
pub(super) async fn drain(
    shared: &Arc<Shared>,
    generation: u64,
    restart: Option<(u64, Instant)>,
) -> Option<ExitInfo> {
    let (pid, pidfd, signal, timeout, mut exited) = {
        let mut st = shared.lock();
        let g = st.generations.get_mut(&generation)?;
        if g.is_live() {
            g.state = GenerationState::Draining;
        }
        (
            g.pid,
            g.pidfd.clone(),
            g.stop_signal,
            g.drain_timeout,
            g.exited.clone(),
        )
    };
    let Some(pidfd) = pidfd else {
        // Already reaped: nothing to signal or wait for.
        return *exited.borrow();
    };
    if exited.borrow().is_none() {
        if let Err(e) = send_signal(&pidfd, signal) {
            warn!(generation, pid, error = %e, "cannot send the stop signal");
        }
        shared.emit(
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
            kill_group(pid);
            let _ = send_signal(&pidfd, crate::signal::Signal::Kill);
            shared.emit(restart, EventKind::Killed { generation, pid });
            exited.wait_for(|s| s.is_some()).await.ok().and_then(|s| *s)
        }
    };
    if let Some(status) = status {
        shared.emit(
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
