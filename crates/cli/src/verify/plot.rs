//! `--plot FILE.svg`: latency and throughput over time, each flip shaded, drawn with
//! plotters' SVG backend; below them, when it was sampled, the capacity (instances
//! serving) as a step line against the configured `instances`.
//!
//! Successes and failures are drawn apart: a refused connection is answered at once, so a
//! throughput that counted both would rise exactly when a naive restart loses requests. A
//! bucket where no request finished has no latency, and is drawn as a gap in the latency
//! lines: a 0 ms point there would read as the fastest moment of the run.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use zd_load::verify::Verification;

use super::Watched;
use super::capacity::Capacity;

/// One time bucket: its start (s), the latency of the requests that finished in it (none
/// when none did), and how many succeeded and failed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    at: f64,
    latency: Option<BucketLatency>,
    ok: u64,
    failed: u64,
}

/// Median and max latency (ms) of one bucket's requests, failures included (a timeout is
/// a slow request, not a missing one).
#[derive(Debug, Clone, Copy, PartialEq)]
struct BucketLatency {
    p50_ms: f64,
    max_ms: f64,
}

/// Which latency of a bucket a line draws.
type LatencyOf = fn(&BucketLatency) -> f64;

/// About 200 buckets over the run, at least 10 ms each.
fn bucket_width(run: Duration) -> Duration {
    (run / 200).max(Duration::from_millis(10))
}

fn points(v: &Verification) -> (Duration, Vec<Point>) {
    let width = bucket_width(v.load.elapsed);
    let mut latencies: Vec<Vec<u64>> = Vec::new();
    for record in &v.load.records {
        let i = (record.end().as_nanos() / width.as_nanos().max(1)) as usize;
        if latencies.len() <= i {
            latencies.resize(i + 1, Vec::new());
        }
        latencies[i].push(record.latency_ns);
    }
    let throughput = v.load.throughput(width);
    latencies.resize(throughput.len().max(latencies.len()), Vec::new());
    let points = latencies
        .iter_mut()
        .enumerate()
        .map(|(i, bucket)| {
            bucket.sort_unstable();
            let ms = |ns: u64| ns as f64 / 1e6;
            let latency = bucket.last().map(|&max| BucketLatency {
                p50_ms: ms(bucket[bucket.len() / 2]),
                max_ms: ms(max),
            });
            let (ok, failed) = throughput.get(i).map_or((0, 0), |b| (b.ok, b.failed));
            Point {
                at: (width * u32::try_from(i).unwrap_or(u32::MAX)).as_secs_f64(),
                latency,
                ok,
                failed,
            }
        })
        .collect();
    (width, points)
}

/// The runs of consecutive buckets that have a value: each is drawn as its own line, so an
/// empty bucket breaks the line instead of pulling it to zero.
fn segments(points: &[Point], value: impl Fn(&Point) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for p in points {
        match value(p) {
            Some(y) => current.push((p.at, y)),
            None if current.is_empty() => {}
            None => segments.push(std::mem::take(&mut current)),
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// Each run of consecutive buckets with failures: where its worst bucket is, how many
/// requests per second failed there, and how many failed in the whole run of buckets. One
/// label per run keeps a long outage readable where a label per bucket would overlap.
fn failure_episodes(points: &[Point]) -> Vec<(f64, u64, u64)> {
    let mut episodes: Vec<(f64, u64, u64)> = Vec::new();
    let mut open = false;
    for p in points {
        if p.failed == 0 {
            open = false;
            continue;
        }
        match episodes.last_mut() {
            Some((at, worst, total)) if open => {
                if p.failed > *worst {
                    (*at, *worst) = (p.at, p.failed);
                }
                *total += p.failed;
            }
            _ => episodes.push((p.at, p.failed, p.failed)),
        }
        open = true;
    }
    episodes
}

/// Writes the SVG to `file`.
pub fn draw(file: &Path, v: &Verification) -> anyhow::Result<()> {
    write(file, &svg(v)?)
}

/// [`draw`], with the capacity when it was sampled.
pub fn draw_watched(file: &Path, w: &Watched) -> anyhow::Result<()> {
    write(file, &svg_watched(w)?)
}

fn write(file: &Path, svg: &str) -> anyhow::Result<()> {
    std::fs::write(file, svg)
        .with_context(|| format!("cannot write the plot to '{}'", file.display()))
}

/// The plot as an SVG document (an `<svg>` element, no XML prolog, so it can be put inline
/// in HTML as it is).
pub fn svg(v: &Verification) -> anyhow::Result<String> {
    let mut svg = String::new();
    render(&mut svg, v, None).map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    Ok(svg)
}

/// [`svg`], with the capacity when it was sampled.
pub fn svg_watched(w: &Watched) -> anyhow::Result<String> {
    let v = &w.verification;
    let steps = match &w.capacity {
        Capacity::Sampled(trace) => Some(trace.steps_since(v.load.started)),
        _ => None,
    };
    let mut svg = String::new();
    render(&mut svg, v, steps.as_deref()).map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    Ok(svg)
}

/// A step line through `(at, value)` changes: each value holds until the next change, and
/// the last one until `end`.
fn step_line(changes: impl Iterator<Item = (f64, f64)>, end: f64) -> Vec<(f64, f64)> {
    let mut line: Vec<(f64, f64)> = Vec::new();
    for (at, value) in changes {
        if let Some(&(_, before)) = line.last() {
            line.push((at, before));
        }
        line.push((at, value));
    }
    if let Some(&(at, value)) = line.last()
        && at < end
    {
        line.push((end, value));
    }
    line
}

fn render(
    svg: &mut String,
    v: &Verification,
    capacity: Option<&[(f64, u32, u32)]>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (width, points) = points(v);
    let per_second = |n: u64| n as f64 / width.as_secs_f64();
    let end = points.last().map_or(1.0, |p| p.at).max(0.1);
    let height = if capacity.is_some() { 840 } else { 640 };
    let root = SVGBackend::with_string(svg, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(340);
    let (bottom, below) = rest.split_vertically(300);
    let flips: Vec<(f64, f64)> = v
        .windows
        .iter()
        .map(|(a, b)| (a.as_secs_f64(), b.as_secs_f64()))
        .collect();
    let shade = RGBColor(255, 200, 200).filled();

    let max_ms = points
        .iter()
        .filter_map(|p| p.latency.map(|l| l.max_ms))
        .fold(1.0, f64::max)
        * 1.05;
    let mut latency = ChartBuilder::on(&top)
        .caption(
            "latency (ms): median and max per bucket, flips shaded, gaps where no request finished",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        // As wide as the throughput chart's right axis, so the two time axes line up.
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_ms)?;
    latency.configure_mesh().x_desc("seconds").draw()?;
    latency.draw_series(
        flips
            .iter()
            .map(|&(a, b)| Rectangle::new([(a, 0.0), (b.max(a + end / 500.0), max_ms)], shade)),
    )?;
    let lines: [(&str, RGBColor, LatencyOf); 2] =
        [("max", RED, |l| l.max_ms), ("median", BLUE, |l| l.p50_ms)];
    for (label, color, value) in lines {
        let segments = segments(&points, |p| p.latency.as_ref().map(value));
        for (i, segment) in segments.into_iter().enumerate() {
            let series = latency.draw_series(LineSeries::new(segment, &color))?;
            if i == 0 {
                series
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            }
        }
    }
    latency
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;

    // Failures get their own scale, on the right: a few hundred refusals a second next to
    // tens of thousands of successes would be bars one pixel high.
    let failed: u64 = points.iter().map(|p| p.failed).sum();
    let max_rate = points.iter().map(|p| per_second(p.ok)).fold(1.0, f64::max) * 1.15;
    let max_failed = points
        .iter()
        .map(|p| per_second(p.failed))
        .fold(1.0, f64::max)
        * 1.15;
    let mut rate = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "throughput: successful requests/s (left), failed requests/s in red (right); \
                 {failed} failed"
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_rate)?
        .set_secondary_coord(0.0..end, 0.0..max_failed);
    rate.configure_mesh().x_desc("seconds").draw()?;
    rate.configure_secondary_axes()
        .axis_style(RED)
        .label_style(("sans-serif", 12).into_font().color(&RED))
        .draw()?;
    rate.draw_series(
        flips
            .iter()
            .map(|&(a, b)| Rectangle::new([(a, 0.0), (b.max(a + end / 500.0), max_rate)], shade)),
    )?;
    rate.draw_series(LineSeries::new(
        points.iter().map(|p| (p.at, per_second(p.ok))),
        &BLACK,
    ))?
    .label("successful")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    // Bars from zero, so a bucket whose every request failed still shows.
    let bar = end / 400.0;
    rate.draw_secondary_series(points.iter().filter(|p| p.failed > 0).map(|p| {
        Rectangle::new(
            [(p.at, 0.0), (p.at + bar.max(1e-6), per_second(p.failed))],
            RED.filled(),
        )
    }))?
    .label(format!("failed: {failed} in total"))
    .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 20, y + 4)], RED.filled()));
    rate.draw_secondary_series(
        failure_episodes(&points)
            .into_iter()
            .map(|(at, worst, total)| {
                Text::new(
                    format!("{total} failed"),
                    (at, per_second(worst) + max_failed * 0.03),
                    ("sans-serif", 13).into_font().color(&RED),
                )
            }),
    )?;
    rate.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;

    if let Some(steps) = capacity {
        let top_value = steps.iter().map(|&(_, c, n)| c.max(n)).max().unwrap_or(1);
        let max_y = f64::from(top_value) + 1.0;
        let mut chart = ChartBuilder::on(&below)
            .caption(
                "capacity: instances serving (ready, not draining, not standing by), and the \
                 configured instances",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_labels(usize::try_from(top_value).unwrap_or(1).min(10) + 2)
            .draw()?;
        chart.draw_series(
            flips
                .iter()
                .map(|&(a, b)| Rectangle::new([(a, 0.0), (b.max(a + end / 500.0), max_y)], shade)),
        )?;
        let configured = step_line(steps.iter().map(|&(at, _, n)| (at, f64::from(n))), end);
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new(configured, &grey))?
            .label("instances")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
        let serving = step_line(steps.iter().map(|&(at, c, _)| (at, f64::from(c))), end);
        chart
            .draw_series(LineSeries::new(serving, &BLUE))?
            .label("serving")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
    }
    root.present()?;
    drop(root);
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use zd_load::load::{FailureKind, LoadReport, Outcome, RequestRecord};

    use super::*;

    #[test]
    fn a_run_gets_about_two_hundred_buckets_of_at_least_ten_milliseconds() {
        assert_eq!(
            bucket_width(Duration::from_secs(20)),
            Duration::from_millis(100)
        );
        assert_eq!(
            bucket_width(Duration::from_secs(1)),
            Duration::from_millis(10)
        );
    }

    fn record(end_ms: u64, latency_ms: u64, outcome: Outcome) -> RequestRecord {
        RequestRecord {
            start_ns: (end_ms - latency_ms) * 1_000_000,
            latency_ns: latency_ms * 1_000_000,
            outcome,
            retried: false,
        }
    }

    /// One second of load (10 ms buckets): successes until 400 ms, nothing finished from
    /// 400 to 500 ms, then 3 refusals at 505 ms, then successes again; one flip at 400-520.
    pub fn synthetic() -> Verification {
        let mut records = Vec::new();
        for end in (5..400).step_by(10) {
            records.push(record(end, 2, Outcome::Ok(200)));
        }
        for _ in 0..3 {
            records.push(record(505, 0, Outcome::Failed(FailureKind::Refused)));
        }
        for end in (515..1000).step_by(10) {
            records.push(record(end, 2, Outcome::Ok(200)));
        }
        records.sort_by_key(|r| r.start_ns);
        let load = LoadReport {
            records,
            started: Instant::now(),
            elapsed: Duration::from_secs(1),
        };
        let windows = vec![(Duration::from_millis(400), Duration::from_millis(520))];
        let report = crate::verify::html::tests::report_of(&load);
        Verification {
            report,
            load,
            windows,
        }
    }

    #[test]
    fn a_bucket_where_no_request_finished_has_no_latency_and_breaks_the_line() {
        let v = synthetic();
        let (_, points) = points(&v);
        let empty = points.iter().find(|p| (p.at - 0.45).abs() < 1e-9);
        assert_eq!(empty.map(|p| p.latency), Some(None));
        let lines = segments(&points, |p| p.latency.map(|l| l.max_ms));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines
                .iter()
                .flatten()
                .all(|&(at, _)| !(0.4..0.5).contains(&at)),
            "{lines:?}"
        );
    }

    #[test]
    fn failures_are_counted_apart_from_successes_and_labelled_with_their_number() {
        let v = synthetic();
        let (_, points) = points(&v);
        let failing: Vec<_> = points.iter().filter(|p| p.failed > 0).collect();
        assert_eq!(failing.len(), 1);
        assert_eq!((failing[0].ok, failing[0].failed), (0, 3));
        assert_eq!(failure_episodes(&points), vec![(failing[0].at, 3, 3)]);
        let svg = svg(&v).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..200.min(svg.len())]);
        assert!(svg.contains("3 failed"), "no count label");
        assert!(svg.contains("failed: 3 in total"), "no total in the legend");
    }

    #[test]
    fn a_step_line_holds_each_value_until_the_next_change_and_to_the_end() {
        let line = step_line([(0.0, 3.0), (0.5, 4.0), (0.7, 3.0)].into_iter(), 1.0);
        assert_eq!(
            line,
            vec![
                (0.0, 3.0),
                (0.5, 3.0),
                (0.5, 4.0),
                (0.7, 4.0),
                (0.7, 3.0),
                (1.0, 3.0)
            ]
        );
        assert!(step_line(std::iter::empty(), 1.0).is_empty());
    }

    #[test]
    fn a_sampled_capacity_gets_its_own_chart() {
        let v = synthetic();
        let plain = svg(&v).expect("svg");
        assert!(!plain.contains("capacity"));
        let mut w = Watched::plain(v);
        let at = |ms, capacity| crate::verify::capacity::Sample {
            at: Duration::from_millis(ms),
            capacity,
            instances: 3,
        };
        let samples = [at(0, 3), at(450, 4), at(520, 3)];
        w.capacity = Capacity::Sampled(crate::verify::capacity::Trace {
            summary: crate::verify::capacity::summarize(&samples).expect("summary"),
            changes: samples.to_vec(),
            started: w.verification.load.started,
        });
        let svg = svg_watched(&w).expect("svg");
        assert!(
            svg.contains("capacity: instances serving"),
            "no capacity chart"
        );
        assert!(svg.contains("serving") && svg.contains("instances"));
    }

    #[test]
    fn consecutive_failing_buckets_get_one_label_with_their_sum() {
        let at = |i: u32, ok: u64, failed: u64| Point {
            at: f64::from(i) / 100.0,
            latency: None,
            ok,
            failed,
        };
        let points = [
            at(0, 5, 0),
            at(1, 0, 2),
            at(2, 0, 4),
            at(3, 5, 0),
            at(4, 1, 1),
        ];
        assert_eq!(failure_episodes(&points), vec![(0.02, 4, 6), (0.04, 1, 1)]);
    }
}
