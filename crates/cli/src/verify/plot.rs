//! `--plot FILE.svg`: latency and throughput over time, each flip shaded, drawn with
//! plotters' SVG backend.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use zd_load::verify::Verification;

/// Per time bucket: its start (s), median and max latency (ms), requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    at: f64,
    p50_ms: f64,
    max_ms: f64,
    per_second: f64,
    failed: u64,
}

/// About 200 buckets over the run, at least 10 ms each.
fn bucket_width(run: Duration) -> Duration {
    (run / 200).max(Duration::from_millis(10))
}

fn points(v: &Verification) -> Vec<Point> {
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
    latencies
        .iter_mut()
        .enumerate()
        .map(|(i, bucket)| {
            bucket.sort_unstable();
            let ms = |ns: Option<&u64>| ns.map_or(0.0, |&ns| ns as f64 / 1e6);
            let (ok, failed) = throughput.get(i).map_or((0, 0), |b| (b.ok, b.failed));
            Point {
                at: (width * u32::try_from(i).unwrap_or(u32::MAX)).as_secs_f64(),
                p50_ms: ms(bucket.get(bucket.len() / 2)),
                max_ms: ms(bucket.last()),
                per_second: (ok + failed) as f64 / width.as_secs_f64(),
                failed,
            }
        })
        .collect()
}

/// Writes the SVG to `file`.
pub fn draw(file: &Path, v: &Verification) -> anyhow::Result<()> {
    let mut svg = String::new();
    render(&mut svg, v).map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    std::fs::write(file, svg)
        .with_context(|| format!("cannot write the plot to '{}'", file.display()))
}

fn render(svg: &mut String, v: &Verification) -> Result<(), Box<dyn std::error::Error>> {
    let points = points(v);
    let end = points.last().map_or(1.0, |p| p.at).max(0.1);
    let root = SVGBackend::with_string(svg, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(340);
    let flips: Vec<(f64, f64)> = v
        .windows
        .iter()
        .map(|(a, b)| (a.as_secs_f64(), b.as_secs_f64()))
        .collect();
    let shade = RGBColor(255, 200, 200).filled();

    let max_ms = points.iter().map(|p| p.max_ms).fold(1.0, f64::max) * 1.05;
    let mut latency = ChartBuilder::on(&top)
        .caption(
            "latency (ms): median and max per bucket, flips shaded",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_ms)?;
    latency.configure_mesh().x_desc("seconds").draw()?;
    latency.draw_series(
        flips
            .iter()
            .map(|&(a, b)| Rectangle::new([(a, 0.0), (b.max(a + end / 500.0), max_ms)], shade)),
    )?;
    latency
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.at, p.max_ms)),
            &RED,
        ))?
        .label("max")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    latency
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.at, p.p50_ms)),
            &BLUE,
        ))?
        .label("median")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    latency
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;

    let max_rate = points.iter().map(|p| p.per_second).fold(1.0, f64::max) * 1.05;
    let mut rate = ChartBuilder::on(&bottom)
        .caption(
            "throughput (requests/s), failures in red",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_rate)?;
    rate.configure_mesh().x_desc("seconds").draw()?;
    rate.draw_series(
        flips
            .iter()
            .map(|&(a, b)| Rectangle::new([(a, 0.0), (b.max(a + end / 500.0), max_rate)], shade)),
    )?;
    rate.draw_series(LineSeries::new(
        points.iter().map(|p| (p.at, p.per_second)),
        &BLACK,
    ))?;
    rate.draw_series(
        points
            .iter()
            .filter(|p| p.failed > 0)
            .map(|p| Circle::new((p.at, p.per_second), 3, RED.filled())),
    )?;
    root.present()?;
    drop(root);
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
