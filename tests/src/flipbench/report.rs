//! The figures of a mode, printed, and the table against the targets.

use std::collections::BTreeMap;
use std::time::Duration;

use zd_load::load::{FailureKind, LatencySummary, WindowedSummary};

use super::procfs::Memory;

/// The targets.
pub const TARGET_FLIPS: usize = 200;
pub const TARGET_REQUESTS: u64 = 200_000;
pub const TARGET_OVERHEAD_P99_US: u64 = 5_000;
pub const TARGET_FLIP_MAX_LATENCY: Duration = Duration::from_millis(100);
pub const TARGET_RSS_KIB: u64 = 8 * 1024;

/// Everything measured in one mode.
#[derive(Debug, Clone, Default)]
pub struct ModeResult {
    /// The connection mode, with the server and handoff when chosen.
    pub mode: String,
    pub requests: u64,
    pub failed_requests: u64,
    /// Requests sent twice after their kept-alive connection closed unanswered
    /// (`--retry-idle-close`).
    pub retried: u64,
    pub failures_by_kind: BTreeMap<FailureKind, u64>,
    pub requests_per_second: f64,
    pub restarts_completed: usize,
    pub restarts_failed: usize,
    /// Client side, request sent → final result, µs.
    pub flip_us: Vec<u64>,
    pub to_spawned_us: Vec<u64>,
    pub spawned_to_ready_us: Vec<u64>,
    pub ready_to_draining_us: Vec<u64>,
    pub draining_to_exited_us: Vec<u64>,
    /// Old generations killed at their drain deadline.
    pub drain_kills: usize,
    pub latency: WindowedSummary,
    pub idle_memory: Memory,
    pub after_memory: Memory,
    pub idle: Duration,
    pub idle_wakeups: u64,
    pub supervisor_threads: usize,
    /// The supervisor exited by itself on SIGTERM within the deadline.
    pub stopped_cleanly: bool,
    /// The service's `instances`, and the fewest serving during the flips (when above 1).
    pub instances: u32,
    pub capacity: Option<super::bench::Capacity>,
}

impl ModeResult {
    pub fn idle_wakeups_per_second(&self) -> f64 {
        self.idle_wakeups as f64 / self.idle.as_secs_f64().max(f64::EPSILON)
    }

    pub fn passed(&self) -> bool {
        self.failed_requests == 0 && self.restarts_failed == 0
    }
}

/// Nearest-rank percentiles of exact samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

pub fn percentiles(samples: &[u64]) -> Percentiles {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = |q: f64| {
        let i = (q * sorted.len() as f64).ceil() as usize;
        sorted
            .get(i.clamp(1, sorted.len().max(1)) - 1)
            .copied()
            .unwrap_or(0)
    };
    Percentiles {
        count: sorted.len(),
        p50: rank(0.50),
        p99: rank(0.99),
        max: sorted.last().copied().unwrap_or(0),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

fn span_row(name: &str, samples: &[u64]) {
    let p = percentiles(samples);
    println!(
        "  {name:<40}{:>10}{:>10}{:>10}{:>8}",
        p.p50, p.p99, p.max, p.count
    );
}

fn latency_row(name: &str, s: &LatencySummary) {
    println!(
        "  {name:<22}{:>10}{:>12}{:>12}{:>12}{:>12}",
        s.requests,
        ms(s.p50),
        ms(s.p99),
        ms(s.p999),
        ms(s.max)
    );
}

pub fn print_mode(r: &ModeResult) {
    println!("\n== mode {} ==", r.mode);
    println!(
        "requests          {} ({:.0}/s), failed {}",
        r.requests, r.requests_per_second, r.failed_requests
    );
    if r.retried > 0 {
        println!(
            "retried           {} (their kept-alive connection closed before the answer)",
            r.retried
        );
    }
    if !r.failures_by_kind.is_empty() {
        let kinds: Vec<String> = r
            .failures_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        println!("failed by kind    {}", kinds.join(", "));
    }
    println!(
        "restarts          {} completed, {} failed, {} old generations killed at the drain deadline",
        r.restarts_completed, r.restarts_failed, r.drain_kills
    );
    if let Some(capacity) = r.capacity {
        println!(
            "capacity          at least {} of {} instances serving in {} samples during the flips (the supervisor's count, every 10 ms)",
            capacity.min, r.instances, capacity.samples
        );
    }
    let flip = percentiles(&r.flip_us);
    let us = |v: u64| ms(Duration::from_micros(v));
    println!(
        "flip time         p50 {}  p99 {}  max {}  (client side, request -> completed)",
        us(flip.p50),
        us(flip.p99),
        us(flip.max)
    );
    println!(
        "phases (µs, supervisor clock)             {:>10}{:>10}{:>10}{:>8}",
        "p50", "p99", "max", "n"
    );
    span_row("request -> spawned      [overhead]", &r.to_spawned_us);
    span_row(
        "ready -> draining       [overhead]",
        &r.ready_to_draining_us,
    );
    span_row(
        "spawned -> ready        (app start)",
        &r.spawned_to_ready_us,
    );
    span_row(
        "draining -> old exited  (app drain)",
        &r.draining_to_exited_us,
    );
    println!(
        "request latency         {:>10}{:>12}{:>12}{:>12}{:>12}",
        "requests", "p50", "p99", "p99.9", "max"
    );
    latency_row("during flips", &r.latency.in_windows);
    latency_row("steady state", &r.latency.steady);
    println!(
        "supervisor RSS    idle {}, after the flips {} (peak {}); {} threads",
        mib(r.idle_memory.rss_kib),
        mib(r.after_memory.rss_kib),
        mib(r.after_memory.peak_kib),
        r.supervisor_threads
    );
    println!(
        "idle wake-ups     {} in {:.1} s ({:.2}/s)",
        r.idle_wakeups,
        r.idle.as_secs_f64(),
        r.idle_wakeups_per_second()
    );
    if !r.stopped_cleanly {
        println!("supervisor        did not exit on SIGTERM in time; killed");
    }
}

/// A mode's column in the target table: wide enough for its label.
fn column_width(r: &ModeResult) -> usize {
    (r.mode.chars().count() + 2).max(16)
}

/// Picks one set of samples out of a mode's results.
type SamplesOf = fn(&ModeResult) -> &[u64];

/// One row of the target table: a label, the figure in each mode, whether each met it.
fn target_row(label: &str, results: &[ModeResult], figure: impl Fn(&ModeResult) -> (String, bool)) {
    let cells: Vec<(String, bool)> = results.iter().map(figure).collect();
    let met = cells.iter().all(|(_, ok)| *ok);
    print!("{label:<46}");
    for ((value, _), r) in cells.iter().zip(results) {
        print!("{value:>width$}", width = column_width(r));
    }
    println!("{:>8}", if met { "yes" } else { "NO" });
}

pub fn print_targets(results: &[ModeResult]) {
    println!("\n== against the targets ==");
    print!("{:<46}", "target");
    for r in results {
        print!("{:>width$}", r.mode, width = column_width(r));
    }
    println!("{:>8}", "met");
    target_row("0 failed requests", results, |r| {
        (r.failed_requests.to_string(), r.failed_requests == 0)
    });
    target_row("0 failed restarts", results, |r| {
        (r.restarts_failed.to_string(), r.restarts_failed == 0)
    });
    target_row(&format!(">= {TARGET_FLIPS} restarts"), results, |r| {
        let n = r.restarts_completed + r.restarts_failed;
        (n.to_string(), n >= TARGET_FLIPS)
    });
    target_row(&format!(">= {TARGET_REQUESTS} requests"), results, |r| {
        (r.requests.to_string(), r.requests >= TARGET_REQUESTS)
    });
    let overhead: [(&str, SamplesOf); 2] = [
        ("overhead p99 < 5 ms: request -> spawned", |r| {
            &r.to_spawned_us
        }),
        ("overhead p99 < 5 ms: ready -> draining", |r| {
            &r.ready_to_draining_us
        }),
    ];
    for (label, samples) in overhead {
        target_row(label, results, |r| {
            let p = percentiles(samples(r));
            (
                format!("{} µs", p.p99),
                p.count > 0 && p.p99 < TARGET_OVERHEAD_P99_US,
            )
        });
    }
    target_row("max request latency during flips < 100 ms", results, |r| {
        let max = r.latency.in_windows.max;
        (ms(max), max < TARGET_FLIP_MAX_LATENCY)
    });
    target_row("supervisor RSS < 8 MiB (after the flips)", results, |r| {
        let rss = r.after_memory.rss_kib.max(r.idle_memory.rss_kib);
        (mib(rss), rss < TARGET_RSS_KIB)
    });
    target_row("no wake-ups while idle", results, |r| {
        (format!("{}", r.idle_wakeups), r.idle_wakeups == 0)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let p = percentiles(&samples);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50, 99, 100));
        let one = percentiles(&[7]);
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        assert_eq!(percentiles(&[]).count, 0);
    }
}
