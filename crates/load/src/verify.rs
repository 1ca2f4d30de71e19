//! `zdctl verify`: restart a service N times under load and count every
//! request that suffered.
//!
//! # How it works
//!
//! The load client ([`crate::load`]) runs for the whole verification and
//! records every request's start, end and outcome. Meanwhile the service is
//! restarted `restarts` times, `interval` apart (after one `interval` of
//! warm-up), through its supervisor's control socket or a shell command
//! ([`Restarter`]); each flip's window runs from the request to the
//! restart's end. While a flip runs, the accept queue of the listener is
//! sampled every 2 ms over netlink `sock_diag` ([`AcceptQueue`]). The kernel's `ListenOverflows`,
//! `ListenDrops` and `OutRsts` are read before and after the run. The
//! [`VerifyReport`] then splits latency into flip windows and steady state.
//!
//! A run passes when not one request failed, every flip completed and the
//! kernel dropped no connection at a listener. The kernel counters cover
//! the whole network namespace, so other traffic on the machine can fail a
//! run too: that errs on the side of not claiming zero downtime.
//!
//! The library never prints: progress comes from [`LiveCounters`] and the
//! `on_flip` callback.

mod flip;
mod kernel;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zd_core::inspect::AcceptQueue;
use zd_core::proc::ProcError;

use crate::load::{self, Endpoint, LiveCounters, LoadConfig, LoadError, LoadReport, StopSignal};

pub use flip::{FlipResult, Restarter};
pub use kernel::{KernelCounters, counter};
pub use report::{
    FailureCounts, FlipReport, FlipSummary, Latency, LatencyReport, VerifyReport, millis,
};

/// What to verify and how hard.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The load; its `duration` is the least the run lasts (the restarts may
    /// need longer) and `max_requests` is ignored.
    pub load: LoadConfig,
    pub restarter: Restarter,
    pub restarts: u32,
    /// The pause before the first restart, between restarts and after the last.
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error(transparent)]
    Service(#[from] zd_core::service::ServiceError),
    #[error("cannot run the restart command '{command}'")]
    Command {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot read the kernel's network counters")]
    Counters(#[source] ProcError),
}

/// Everything a verification produced: the figures and the raw requests (for
/// a plot).
#[derive(Debug, Clone)]
pub struct Verification {
    pub report: VerifyReport,
    pub load: LoadReport,
    /// Each flip's window as offsets from the start of the load.
    pub windows: Vec<(Duration, Duration)>,
}

/// Runs the load, restarts the service, and reports. `on_flip(i, &flip)` is
/// called after each flip, with `i` counting from 1.
pub async fn run(
    config: VerifyConfig,
    live: Arc<LiveCounters>,
    mut on_flip: impl FnMut(u32, &FlipResult),
) -> Result<Verification, VerifyError> {
    // No sampling of unix sockets, nor when the kernel has no `inet_diag`:
    // the report then has no accept-queue figures.
    let mut queue = match config.load.target.endpoint {
        Endpoint::Tcp(addr) => AcceptQueue::open(addr).ok(),
        Endpoint::Unix(_) => None,
    };
    let before = KernelCounters::read().map_err(VerifyError::Counters)?;
    let min_duration = config.load.duration;
    let mut load_config = config.load.clone();
    load_config.duration = None;
    load_config.max_requests = None;
    let stop = StopSignal::new();
    let started = Instant::now();
    let load = tokio::spawn(load::run_with_counters(load_config, stop.clone(), live));

    let mut flips = Vec::new();
    let mut queue_peaks = Vec::new();
    let mut failure = None;
    tokio::time::sleep(config.interval).await;
    for i in 1..=config.restarts {
        let sampler = queue.take().map(Sampler::start);
        let result = config.restarter.flip().await;
        let mut peak = None;
        if let Some(sampler) = sampler
            && let Some((back, seen)) = sampler.finish().await
        {
            queue = Some(back);
            peak = Some(seen);
        }
        match result {
            Ok(flip) => {
                on_flip(i, &flip);
                flips.push(flip);
                queue_peaks.push(peak);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        tokio::time::sleep(config.interval).await;
    }
    if failure.is_none()
        && let Some(min) = min_duration
    {
        tokio::time::sleep_until((started + min).into()).await;
    }
    stop.stop();
    let load = load
        .await
        .map_err(|e| VerifyError::Load(LoadError::Task(e)))??;
    if let Some(e) = failure {
        return Err(e);
    }
    let after = KernelCounters::read().map_err(VerifyError::Counters)?;
    let windows: Vec<(Duration, Duration)> = flips
        .iter()
        .map(|f| (load.offset_of(f.requested), load.offset_of(f.finished)))
        .collect();
    let report = VerifyReport::build(
        &config,
        &load,
        &flips,
        &windows,
        &queue_peaks,
        after.since(&before),
    );
    Ok(Verification {
        report,
        load,
        windows,
    })
}

/// How often the accept queue is read while a flip runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// Samples the accept queue on a blocking thread until [`Sampler::finish`],
/// or until dropped (a cancelled verification must not leave the thread
/// running, or the runtime could not shut down).
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<tokio::task::JoinHandle<(AcceptQueue, u32)>>,
}

impl Sampler {
    fn start(mut queue: AcceptQueue) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = tokio::task::spawn_blocking(move || {
            let mut peak = 0;
            // At least one sample, however short the flip.
            loop {
                if let Ok(Some(queued)) = queue.sample() {
                    peak = peak.max(queued);
                }
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            (queue, peak)
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns the queue reader and the largest queue seen.
    async fn finish(mut self) -> Option<(AcceptQueue, u32)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.await.ok()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
