//! Readiness: the evidence that a new generation can take over alone (DESIGN §5).
//!
//! A new generation shares the listener from its first instant, so readiness does not route
//! traffic: it decides when the old generation may be stopped. [`wait_ready`] returns when
//! every configured check has passed; the caller bounds it with the
//! readiness timeout and races it against the generation's exit.

pub mod accepting;
pub mod check;
mod notify;
mod probe;

use std::time::Duration;

use crate::sched::{EAGER_POLL, IDLE_START_LIMIT};

pub use check::ReadyCheck;
pub use notify::{NotifySender, NotifySocket, NotifyState, NotifyUpdates};

/// What the checks need to know about the generation under test.
#[derive(Debug, Clone)]
pub struct ReadyContext {
    pub service: String,
    pub generation: u64,
    /// Which of the generation's processes (`ZD_INSTANCE`).
    pub instance: u32,
    pub pid: i32,
    /// Inodes of the listeners the generation inherited.
    pub listener_inodes: Vec<u64>,
    /// The generation's notify socket state, for `notify`.
    pub notify: Option<NotifyUpdates>,
    /// It starts at the idle priority (`crate::sched`): once it accepts
    /// connections, it must get its normal priority back without delay.
    pub idle_start: bool,
}

/// A check that can never pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadyError {
    #[error("the app reported failure through NOTIFY_SOCKET (ERRNO={errno})")]
    NotifyErrno { errno: i32 },
    #[error("'notify' needs a NOTIFY_SOCKET, and none could be created")]
    NoNotifySocket,
    #[error("'accepting' needs at least one listener; use another check")]
    NoListeners,
}

/// Waits until every check passes and returns the evidence, one clause per check. Checks
/// are awaited in order: each one polls or waits on its own source, so the total still ends
/// when the slowest passes, and all must pass anyway.
pub async fn wait_ready(checks: &[ReadyCheck], ctx: &ReadyContext) -> Result<String, ReadyError> {
    let mut parts = Vec::with_capacity(checks.len());
    for check in checks {
        parts.push(wait_one(check, ctx).await?);
    }
    Ok(parts.join("; "))
}

async fn wait_one(check: &ReadyCheck, ctx: &ReadyContext) -> Result<String, ReadyError> {
    match check {
        ReadyCheck::Accepting => wait_accepting(ctx).await,
        ReadyCheck::Notify => notify::wait_ready(ctx).await,
        ReadyCheck::Http {
            host,
            port,
            path,
            url,
        } => {
            probe::wait_http(host, *port, path).await;
            Ok(format!("GET {url} answered 2xx"))
        }
        ReadyCheck::Tcp { addr } => {
            probe::wait_tcp(addr).await;
            Ok(format!("connected to {addr}"))
        }
        ReadyCheck::Exec { command } => {
            probe::wait_exec(command, ctx).await;
            Ok(format!("'{command}' exited 0"))
        }
        ReadyCheck::Alive(d) => {
            tokio::time::sleep(*d).await;
            Ok(format!(
                "alive for {}",
                crate::duration::format_duration(*d)
            ))
        }
    }
}

/// Runs each check once, each within `limit` (a bake window's checks): the first that
/// fails says why. `http:`, `tcp:` and `exec:` probe the service; `accepting` is the
/// caller's, which knows the processes (see `supervisor::restart`); `notify` and `alive`
/// have nothing to check again once ready.
pub async fn check_all_once(
    checks: &[ReadyCheck],
    ctx: &ReadyContext,
    limit: Duration,
) -> Result<(), String> {
    for check in checks {
        let once = async {
            match check {
                ReadyCheck::Http {
                    host, port, path, ..
                } => probe::http_once(host, *port, path).await,
                ReadyCheck::Tcp { addr } => probe::tcp_once(addr).await,
                ReadyCheck::Exec { command } => probe::exec_once(command, ctx).await,
                ReadyCheck::Accepting | ReadyCheck::Notify | ReadyCheck::Alive(_) => Ok(()),
            }
        };
        match tokio::time::timeout(limit, once).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("bake check '{check}' failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "bake check '{check}' did not answer within {}",
                    crate::duration::format_duration(limit)
                ));
            }
        }
    }
    Ok(())
}

/// Polls /proc for evidence, quickly at first (most servers are up within milliseconds),
/// then backing off so a slow starter costs little. This runs only during a restart.
async fn wait_accepting(ctx: &ReadyContext) -> Result<String, ReadyError> {
    if ctx.listener_inodes.is_empty() {
        return Err(ReadyError::NoListeners);
    }
    let started = std::time::Instant::now();
    let mut delay = Duration::from_micros(500);
    loop {
        // Read on this worker, not handed off with `block_in_place`: a scan of a starting
        // generation reads a few dozen /proc files, while handing the worker's other tasks
        // to another thread and back wakes threads at every poll, in the milliseconds the
        // machine is busiest (docs/benchmarks.md). The other worker serves the control
        // socket meanwhile; the one read that can be big, the tcp tables, still hands off.
        let found = accepting::find_accepting(ctx.pid, &ctx.listener_inodes);
        if let Ok(Some(evidence)) = found {
            return Ok(evidence.to_string());
        }
        if ctx.idle_start && started.elapsed() < IDLE_START_LIMIT {
            tokio::time::sleep(EAGER_POLL).await;
            continue;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}
