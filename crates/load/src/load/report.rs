//! The result of a load run and the figures drawn from it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::histogram::LatencyHistogram;
use super::record::{FailureKind, Outcome, RequestRecord};

/// Every request of a run, sorted by start.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub records: Vec<RequestRecord>,
    /// When the run started; record offsets count from here.
    pub started: Instant,
    /// From start until the last request finished.
    pub elapsed: Duration,
}

/// Latency percentiles of a set of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    pub requests: u64,
    pub failures: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

/// Requests that overlap the given windows (flips) against all the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowedSummary {
    pub in_windows: LatencySummary,
    pub steady: LatencySummary,
}

/// Requests finished during one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputBucket {
    /// Offset of the bucket's start from the start of the run.
    pub start: Duration,
    pub ok: u64,
    pub failed: u64,
}

impl LoadReport {
    pub fn total(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn succeeded(&self) -> u64 {
        self.records.iter().filter(|r| r.outcome.is_ok()).count() as u64
    }

    pub fn failed(&self) -> u64 {
        self.total() - self.succeeded()
    }

    /// Requests sent twice because their kept-alive connection closed before the answer
    /// (only with [`LoadConfig::retry_idle_close`](super::LoadConfig::retry_idle_close)),
    /// failed or not.
    pub fn retried(&self) -> u64 {
        self.records.iter().filter(|r| r.retried).count() as u64
    }

    pub fn failures_by_kind(&self) -> BTreeMap<FailureKind, u64> {
        let mut counts = BTreeMap::new();
        for record in &self.records {
            if let Outcome::Failed(kind) = record.outcome {
                *counts.entry(kind).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Finished requests per second over the whole run.
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total() as f64 / secs
        } else {
            0.0
        }
    }

    /// The offset of `instant` from the start of the run (zero if before),
    /// to turn timestamps taken elsewhere (a flip's start) into windows.
    pub fn offset_of(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.started)
    }

    /// Latencies in microseconds of the records `filter` keeps, failures
    /// included (a timeout is a slow request, not a missing one).
    pub fn latency_histogram(&self, filter: impl Fn(&RequestRecord) -> bool) -> LatencyHistogram {
        let mut histogram = LatencyHistogram::new();
        for record in self.records.iter().filter(|r| filter(r)) {
            histogram.record(record.latency());
        }
        histogram
    }

    /// Percentiles of the requests in flight during any of `windows`
    /// (offsets from the start of the run) and of all the other requests.
    pub fn summary_in_windows(&self, windows: &[(Duration, Duration)]) -> WindowedSummary {
        let mut inside = (LatencyHistogram::new(), 0u64);
        let mut outside = (LatencyHistogram::new(), 0u64);
        for record in &self.records {
            let overlaps = windows.iter().any(|&(from, to)| record.overlaps(from, to));
            let (histogram, failures) = if overlaps { &mut inside } else { &mut outside };
            histogram.record(record.latency());
            if !record.outcome.is_ok() {
                *failures += 1;
            }
        }
        WindowedSummary {
            in_windows: summarize(&inside.0, inside.1),
            steady: summarize(&outside.0, outside.1),
        }
    }

    /// Requests by the bucket in which they finished.
    pub fn throughput(&self, bucket: Duration) -> Vec<ThroughputBucket> {
        let width = bucket.as_nanos().max(1);
        let last_end = self.records.iter().map(RequestRecord::end).max();
        let span = last_end.unwrap_or_default().max(self.elapsed);
        let mut buckets: Vec<ThroughputBucket> = (0..=span.as_nanos() / width)
            .map(|i| ThroughputBucket {
                start: Duration::from_nanos(u64::try_from(i * width).unwrap_or(u64::MAX)),
                ok: 0,
                failed: 0,
            })
            .collect();
        for record in &self.records {
            let i = (record.end().as_nanos() / width) as usize;
            if let Some(b) = buckets.get_mut(i) {
                if record.outcome.is_ok() {
                    b.ok += 1;
                } else {
                    b.failed += 1;
                }
            }
        }
        buckets
    }
}

fn summarize(histogram: &LatencyHistogram, failures: u64) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    let at = |q: f64| histogram.value_at_quantile(q);
    LatencySummary {
        requests: histogram.len(),
        failures,
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: histogram.max(),
    }
}
