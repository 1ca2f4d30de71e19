//! Capacity over time: while verify runs, how many instances of a native service serve
//! (`status.capacity`: live, ready, not draining, not standing by) against how many it is
//! configured to run (`status.instances`).
//!
//! A [`Sampler`] asks the supervisor for its status every [`SAMPLE_EVERY`] on a task of
//! its own, each call bounded by [`STATUS_DEADLINE`] so that a supervisor busy with a
//! restart delays one sample, never the run. It keeps a [`Tally`] (the figures of the
//! report, constant size) and the moments the capacity changed (for the plot), at most
//! [`MAX_CHANGES`] of them: memory stays bounded however long the run.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use zd_core::service::Service;

use zd_load::verify::millis;

/// How often the status is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Bound on one status call; a slower answer is a missed sample.
const STATUS_DEADLINE: Duration = Duration::from_secs(1);

/// How many capacity changes the plot keeps (a rolling restart of N instances makes
/// about 2N); past this the plot's line stops, the figures do not.
const MAX_CHANGES: usize = 10_000;

/// One reading of the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Since the sampling began.
    pub at: Duration,
    pub capacity: u32,
    pub instances: u32,
}

/// The figures `verify` reports; the `capacity` object of `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacitySummary {
    /// The configured `instances`, as the last sample read it.
    pub instances: u32,
    pub min: u32,
    pub max: u32,
    pub samples: u64,
    /// Status calls that failed or took longer than a second.
    pub missed: u64,
    /// Samples whose capacity was below the `instances` of the same moment.
    pub below_samples: u64,
    /// Runs of consecutive samples below.
    pub below_stretches: u64,
    /// The longest run below, from its first sample to the first one back up (or to the
    /// last sample, when the run ended below).
    pub longest_below_ms: f64,
}

impl CapacitySummary {
    /// Whether capacity ever fell below the configured count.
    pub fn dropped(&self) -> bool {
        self.below_samples > 0
    }
}

/// The running figures, fed one sample at a time.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    last: Option<Sample>,
    min: u32,
    max: u32,
    samples: u64,
    missed: u64,
    below_samples: u64,
    below_stretches: u64,
    /// When the stretch below that is still open began.
    below_since: Option<Duration>,
    longest_below: Duration,
}

impl Tally {
    pub fn add(&mut self, s: Sample) {
        if self.samples == 0 {
            (self.min, self.max) = (s.capacity, s.capacity);
        }
        self.min = self.min.min(s.capacity);
        self.max = self.max.max(s.capacity);
        self.samples += 1;
        if s.capacity < s.instances {
            self.below_samples += 1;
            if self.below_since.is_none() {
                self.below_stretches += 1;
                self.below_since = Some(s.at);
            }
        } else {
            self.close_stretch(s.at);
        }
        self.last = Some(s);
    }

    pub fn miss(&mut self) {
        self.missed += 1;
    }

    fn close_stretch(&mut self, at: Duration) {
        if let Some(since) = self.below_since.take() {
            self.longest_below = self.longest_below.max(at.saturating_sub(since));
        }
    }

    /// The figures; `None` when not one sample was read.
    pub fn summary(&self) -> Option<CapacitySummary> {
        let last = self.last?;
        let mut tally = self.clone();
        tally.close_stretch(last.at);
        Some(CapacitySummary {
            instances: last.instances,
            min: tally.min,
            max: tally.max,
            samples: tally.samples,
            missed: tally.missed,
            below_samples: tally.below_samples,
            below_stretches: tally.below_stretches,
            longest_below_ms: millis(tally.longest_below),
        })
    }
}

/// The summary of a list of samples.
pub fn summarize(samples: &[Sample]) -> Option<CapacitySummary> {
    let mut tally = Tally::default();
    for &s in samples {
        tally.add(s);
    }
    tally.summary()
}

/// What the sampling found: the figures and, for the plot, each change of capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub summary: CapacitySummary,
    /// The first sample and every one whose capacity or instances differ from the one
    /// before, then the last sample; times since the sampling began.
    pub changes: Vec<Sample>,
    /// When the sampling began, to line the changes up with the load's clock.
    pub started: Instant,
}

impl Trace {
    /// The changes as (seconds since `origin`, capacity, instances), for the plot.
    pub fn steps_since(&self, origin: Instant) -> Vec<(f64, u32, u32)> {
        let shift = self.started.saturating_duration_since(origin).as_secs_f64()
            - origin.saturating_duration_since(self.started).as_secs_f64();
        self.changes
            .iter()
            .map(|s| (s.at.as_secs_f64() + shift, s.capacity, s.instances))
            .collect()
    }
}

/// Whether capacity was watched, and if not, why.
#[derive(Debug, Clone, PartialEq)]
pub enum Capacity {
    Sampled(Trace),
    /// Said once in the report: a driven service, or a supervisor that reports no capacity.
    NotSampled(String),
    /// `--restart-cmd`: there is no service to ask.
    NotApplicable,
}

impl Capacity {
    pub fn summary(&self) -> Option<&CapacitySummary> {
        match self {
            Capacity::Sampled(trace) => Some(&trace.summary),
            _ => None,
        }
    }
}

/// Reads `status` every [`SAMPLE_EVERY`] until [`Sampler::finish`].
pub struct Sampler {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Capacity>,
}

impl Sampler {
    /// Starts sampling `service`, or a stand-in that says why it cannot be sampled.
    pub fn start(service: Option<Service>) -> Sampler {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            match service {
                None => Capacity::NotApplicable,
                Some(service) => match service.driver() {
                    Some(driver) => Capacity::NotSampled(format!(
                        "'{}' is run by {driver}, which reports no capacity",
                        service.name()
                    )),
                    None => sample(&service, stopped).await,
                },
            }
        });
        Sampler {
            stop: Some(stop),
            task,
        }
    }

    pub async fn finish(mut self) -> Capacity {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Capacity::NotSampled(format!("the sampler failed: {e}")))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sample(service: &Service, mut stopped: oneshot::Receiver<()>) -> Capacity {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut changes: Vec<Sample> = Vec::new();
    let mut last = None;
    let mut unreported = false;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = ticks.tick() => {}
        }
        let status = tokio::time::timeout(STATUS_DEADLINE, service.status()).await;
        let Ok(Ok(status)) = status else {
            tally.miss();
            continue;
        };
        let (Some(capacity), Some(instances)) = (status.status.capacity, status.status.instances)
        else {
            unreported = true;
            tally.miss();
            continue;
        };
        let s = Sample {
            at: started.elapsed(),
            capacity,
            instances,
        };
        tally.add(s);
        let changed =
            last.is_none_or(|l: Sample| (l.capacity, l.instances) != (capacity, instances));
        if changed && changes.len() < MAX_CHANGES {
            changes.push(s);
        }
        last = Some(s);
    }
    match tally.summary() {
        Some(summary) => {
            if let Some(l) = last
                && changes.last() != Some(&l)
                && changes.len() < MAX_CHANGES
            {
                changes.push(l);
            }
            Capacity::Sampled(Trace {
                summary,
                changes,
                started,
            })
        }
        None if unreported => Capacity::NotSampled(format!(
            "the supervisor of '{}' reports no capacity (an older zdctl; 'zdctl reexec {}' \
             updates it)",
            service.name(),
            service.name()
        )),
        None => Capacity::NotSampled(format!(
            "no status of '{}' could be read during the run",
            service.name()
        )),
    }
}

/// The report's line: `3 of 3 instances serving throughout (min 3, max 4, 120 samples)`,
/// or what fell short.
pub fn line(s: &CapacitySummary) -> String {
    let missed = if s.missed > 0 {
        format!(", {} missed", s.missed)
    } else {
        String::new()
    };
    let range = format!(
        "min {}, max {}, {} samples{missed}",
        s.min, s.max, s.samples
    );
    if s.dropped() {
        format!(
            "below {} instances in {} of {} samples ({}, the longest {}); {range}",
            s.instances,
            s.below_samples,
            s.samples,
            stretches(s.below_stretches),
            super::print::ms(s.longest_below_ms),
        )
    } else {
        format!(
            "{} of {} instances serving or more throughout ({range})",
            s.min, s.instances
        )
    }
}

/// The warning printed when capacity fell below the configured count.
pub fn warning(s: &CapacitySummary) -> Option<String> {
    s.dropped().then(|| {
        format!(
            "warning: capacity fell to {} of {} instances ({}, the longest {}); fewer \
             instances served than configured",
            s.min,
            s.instances,
            stretches(s.below_stretches),
            super::print::ms(s.longest_below_ms)
        )
    })
}

/// `1 stretch`, `2 stretches`.
fn stretches(n: u64) -> String {
    if n == 1 {
        "1 stretch".to_owned()
    } else {
        format!("{n} stretches")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, capacity: u32) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            capacity,
            instances: 3,
        }
    }

    #[test]
    fn no_sample_has_no_summary() {
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn a_pool_that_never_fell_short_has_no_stretch_below() {
        let s = summarize(&[at(0, 3), at(100, 4), at(200, 3), at(300, 4), at(400, 3)])
            .expect("summary");
        assert_eq!((s.instances, s.min, s.max, s.samples), (3, 3, 4, 5));
        assert_eq!((s.below_samples, s.below_stretches), (0, 0));
        assert_eq!(s.longest_below_ms, 0.0);
        assert!(!s.dropped());
    }

    #[test]
    fn stretches_below_run_from_their_first_sample_to_the_first_one_back_up() {
        let s = summarize(&[
            at(0, 3),
            at(100, 2),
            at(200, 3),
            at(300, 2),
            at(400, 1),
            at(500, 2),
            at(600, 3),
        ])
        .expect("summary");
        assert_eq!((s.min, s.max), (1, 3));
        assert_eq!(s.below_samples, 4);
        assert_eq!(s.below_stretches, 2);
        assert_eq!(s.longest_below_ms, 300.0);
        assert!(s.dropped());
    }

    #[test]
    fn a_stretch_still_open_at_the_end_lasts_until_the_last_sample() {
        let s = summarize(&[at(0, 3), at(100, 2), at(250, 2)]).expect("summary");
        assert_eq!((s.below_samples, s.below_stretches), (2, 1));
        assert_eq!(s.longest_below_ms, 150.0);
    }

    #[test]
    fn below_is_judged_against_the_instances_of_the_same_moment() {
        // A restart that changed `instances` from 3 to 2: 2 is then all of them.
        let two = |ms, capacity| Sample {
            instances: 2,
            ..at(ms, capacity)
        };
        let s = summarize(&[at(0, 3), two(100, 2), two(200, 2)]).expect("summary");
        assert_eq!(s.instances, 2);
        assert_eq!(s.below_samples, 0);
    }

    #[test]
    fn missed_samples_are_counted_apart() {
        let mut tally = Tally::default();
        tally.miss();
        assert_eq!(tally.summary(), None);
        tally.add(at(0, 3));
        tally.miss();
        let s = tally.summary().expect("summary");
        assert_eq!((s.samples, s.missed), (1, 2));
    }

    #[test]
    fn the_line_says_full_capacity_or_how_far_it_fell() {
        let full = summarize(&[at(0, 3), at(100, 4), at(200, 3)]).expect("summary");
        assert_eq!(
            line(&full),
            "3 of 3 instances serving or more throughout (min 3, max 4, 3 samples)"
        );
        assert_eq!(warning(&full), None);
        let short = summarize(&[at(0, 3), at(100, 2), at(200, 3)]).expect("summary");
        assert_eq!(
            line(&short),
            "below 3 instances in 1 of 3 samples (1 stretch, the longest 100.0ms); min 2, \
             max 3, 3 samples"
        );
        assert_eq!(
            warning(&short).as_deref(),
            Some(
                "warning: capacity fell to 2 of 3 instances (1 stretch, the longest 100.0ms); \
                 fewer instances served than configured"
            )
        );
    }

    #[test]
    fn the_json_object_has_every_key() {
        let s = summarize(&[at(0, 3), at(100, 2), at(200, 3)]).expect("summary");
        let json = serde_json::to_value(s).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "instances": 3,
                "min": 2,
                "max": 3,
                "samples": 3,
                "missed": 0,
                "below_samples": 1,
                "below_stretches": 1,
                "longest_below_ms": 100.0,
            })
        );
    }

    #[test]
    fn steps_line_up_with_another_clock() {
        let started = Instant::now();
        let trace = Trace {
            summary: summarize(&[at(0, 3)]).expect("summary"),
            changes: vec![at(0, 3), at(500, 4)],
            started,
        };
        let later = started + Duration::from_millis(200);
        let steps = trace.steps_since(later);
        assert!((steps[1].0 - 0.3).abs() < 1e-9, "{steps:?}");
        let earlier = started.checked_sub(Duration::from_millis(200));
        if let Some(earlier) = earlier {
            let steps = trace.steps_since(earlier);
            assert!((steps[0].0 - 0.2).abs() < 1e-9, "{steps:?}");
        }
    }
}
