//! In-flight connections per generation over the last minute: the chart's data.
//!
//! Times are the snapshots' own (`taken_unix_ms`), never the clock's, so a test that feeds
//! fixed snapshots draws the same chart every time.

use std::collections::{BTreeMap, HashMap, VecDeque};

use zd_core::inspect::Snapshot;

/// How far back the chart looks.
pub const WINDOW_MS: u64 = 60_000;

/// One refresh of one service: when, and each generation's connection count.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    unix_ms: u64,
    counts: Vec<(u64, usize)>,
}

#[derive(Debug, Default)]
pub struct History {
    services: HashMap<String, VecDeque<Sample>>,
}

/// One generation's line: (seconds relative to the newest sample, connections).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub generation: u64,
    pub points: Vec<(f64, f64)>,
}

impl History {
    pub fn record(&mut self, service: &str, snapshot: &Snapshot) {
        let samples = self.services.entry(service.to_owned()).or_default();
        let unix_ms = snapshot.taken_unix_ms;
        // A snapshot older than the last one (a clock step back) starts the history over.
        if samples.back().is_some_and(|s| s.unix_ms > unix_ms) {
            samples.clear();
        }
        samples.push_back(Sample {
            unix_ms,
            counts: per_generation(snapshot),
        });
        while samples
            .front()
            .is_some_and(|s| unix_ms.saturating_sub(s.unix_ms) > WINDOW_MS)
        {
            samples.pop_front();
        }
    }

    /// Forgets the services `keep` says no to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.services.retain(|name, _| keep(name));
    }

    /// Every generation seen in the window, oldest first, each with a point per sample it
    /// was in. A generation that is gone drops to 0 at the first sample without it, so the
    /// load is seen leaving it.
    pub fn series(&self, service: &str) -> Vec<Series> {
        let Some(samples) = self.services.get(service) else {
            return Vec::new();
        };
        let Some(newest) = samples.back().map(|s| s.unix_ms) else {
            return Vec::new();
        };
        let mut lines: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
        let mut previous: Vec<u64> = Vec::new();
        for sample in samples {
            // Milliseconds to seconds for the axis: the precision lost does not show.
            let x = -((newest - sample.unix_ms) as f64) / 1000.0;
            for &(generation, count) in &sample.counts {
                lines.entry(generation).or_default().push((x, count as f64));
            }
            for generation in &previous {
                if !sample.counts.iter().any(|(g, _)| g == generation)
                    && let Some(points) = lines.get_mut(generation)
                    && points.last().is_some_and(|p| p.1 > 0.0)
                {
                    points.push((x, 0.0));
                }
            }
            previous = sample.counts.iter().map(|(g, _)| *g).collect();
        }
        lines
            .into_iter()
            .map(|(generation, points)| Series { generation, points })
            .collect()
    }

    /// The largest count in the window, for the y axis.
    pub fn peak(&self, service: &str) -> usize {
        self.services
            .get(service)
            .into_iter()
            .flatten()
            .flat_map(|s| s.counts.iter().map(|c| c.1))
            .max()
            .unwrap_or(0)
    }
}

/// Each generation's connections, its instances' summed: the chart has a line per
/// generation, however many processes it runs.
fn per_generation(snapshot: &Snapshot) -> Vec<(u64, usize)> {
    let mut counts: Vec<(u64, usize)> = Vec::new();
    for g in &snapshot.generations {
        match counts.last_mut() {
            Some((generation, count)) if *generation == g.generation => {
                *count += g.connection_count
            }
            _ => counts.push((g.generation, g.connection_count)),
        }
    }
    counts
}
