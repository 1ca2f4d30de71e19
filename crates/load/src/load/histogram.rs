//! Latency percentiles: an HDR histogram behind a type of our own, so that hdrhistogram
//! stays out of this crate's API.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies counted at microsecond resolution with 3 significant digits, from 1 µs to an
/// hour, growing past that instead of dropping a value.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        let mut histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid");
        histogram.auto(true);
        LatencyHistogram(histogram)
    }

    /// Counts one latency, in whole microseconds and at least one.
    pub fn record(&mut self, latency: Duration) {
        self.0.saturating_record(micros(latency));
    }

    /// How many latencies were counted.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The latency at quantile `q`: 0.5 the median, 0.99 the 99th percentile.
    pub fn value_at_quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.0.value_at_quantile(q))
    }

    /// The largest latency counted.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.0.max())
    }
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
