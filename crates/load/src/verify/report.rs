//! The figures of a verification, in the shape `zdctl verify --json` prints.

use std::time::Duration;

use serde::Serialize;

use super::{FlipResult, KernelCounters, VerifyConfig};
use crate::load::{ConnectionMode, FailureKind, LatencySummary, LoadReport};

/// The whole report; see the zdctl README for the JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The service name, or the restart command.
    pub target: String,
    pub url: String,
    /// `keepalive` or `close`.
    pub mode: &'static str,
    pub concurrency: usize,
    /// Requests per second in open loop; absent in closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub duration_ms: f64,
    pub requests: u64,
    pub failed: u64,
    /// Requests sent a second time because their kept-alive connection closed before the
    /// answer (`--retry-idle-close`), failed or not.
    pub retried: u64,
    pub failures: FailureCounts,
    pub latency: LatencyReport,
    pub flips: FlipSummary,
    /// How much the namespace's counters grew during the run.
    pub kernel: KernelCounters,
    /// The largest accept queue seen during any flip (absent for unix sockets,
    /// and when the kernel has no `sock_diag` for TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_queue_max: Option<u32>,
    /// No failed request, every flip completed, no connection dropped by the kernel.
    pub passed: bool,
}

/// Failed requests by kind; every key is always present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FailureCounts {
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub non_2xx: u64,
    pub short_read: u64,
    pub other: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyReport {
    /// Requests in flight during any flip.
    pub flips: Latency,
    /// All the other requests.
    pub steady: Latency,
}

/// Latency percentiles in milliseconds (failed requests included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlipSummary {
    pub requested: u32,
    pub completed: u32,
    pub p50_ms: f64,
    pub max_ms: f64,
    pub list: Vec<FlipReport>,
}

/// One flip, its times as offsets from the start of the load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlipReport {
    pub start_ms: f64,
    pub end_ms: f64,
    pub elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_queue_max: Option<u32>,
    /// Why the flip did not complete; absent when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Milliseconds with microsecond precision, for reports.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

impl From<LatencySummary> for Latency {
    fn from(s: LatencySummary) -> Latency {
        Latency {
            requests: s.requests,
            failed: s.failures,
            p50_ms: millis(s.p50),
            p99_ms: millis(s.p99),
            p999_ms: millis(s.p999),
            max_ms: millis(s.max),
        }
    }
}

impl FailureCounts {
    pub fn of(load: &LoadReport) -> FailureCounts {
        let mut counts = FailureCounts::default();
        for (kind, n) in load.failures_by_kind() {
            let slot = match kind {
                FailureKind::Refused => &mut counts.refused,
                FailureKind::Reset => &mut counts.reset,
                FailureKind::Timeout => &mut counts.timeout,
                FailureKind::Status(_) => &mut counts.non_2xx,
                FailureKind::ShortRead => &mut counts.short_read,
                _ => &mut counts.other,
            };
            *slot += n;
        }
        counts
    }
}

impl VerifyReport {
    pub(crate) fn build(
        config: &VerifyConfig,
        load: &LoadReport,
        flips: &[FlipResult],
        windows: &[(Duration, Duration)],
        queue_peaks: &[Option<u32>],
        kernel: KernelCounters,
    ) -> VerifyReport {
        let list: Vec<FlipReport> = flips
            .iter()
            .zip(windows)
            .zip(queue_peaks)
            .map(|((flip, &(start, end)), &peak)| FlipReport {
                start_ms: millis(start),
                end_ms: millis(end),
                elapsed_ms: millis(flip.finished.duration_since(flip.requested)),
                accept_queue_max: peak,
                problem: flip.problem.clone(),
            })
            .collect();
        let mut times: Vec<f64> = list.iter().map(|f| f.elapsed_ms).collect();
        times.sort_by(f64::total_cmp);
        let completed = list.iter().filter(|f| f.problem.is_none()).count();
        let windowed = load.summary_in_windows(windows);
        let failed = load.failed();
        let target = config.restarter.label();
        let passed = failed == 0
            && completed == list.len()
            && list.len() == config.restarts as usize
            && kernel.listen_overflows == 0
            && kernel.listen_drops == 0;
        VerifyReport {
            target,
            url: format!(
                "http://{}{}",
                config.load.target.host, config.load.target.path
            ),
            mode: match config.load.mode {
                ConnectionMode::KeepAlive => "keepalive",
                ConnectionMode::Close => "close",
            },
            concurrency: config.load.concurrency,
            rate: config.load.rate,
            duration_ms: millis(load.elapsed),
            requests: load.total(),
            failed,
            retried: load.retried(),
            failures: FailureCounts::of(load),
            latency: LatencyReport {
                flips: windowed.in_windows.into(),
                steady: windowed.steady.into(),
            },
            flips: FlipSummary {
                requested: config.restarts,
                completed: u32::try_from(completed).unwrap_or(u32::MAX),
                p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
                max_ms: times.last().copied().unwrap_or(0.0),
                list,
            },
            kernel,
            accept_queue_max: queue_peaks.iter().flatten().copied().max(),
            passed,
        }
    }
}
