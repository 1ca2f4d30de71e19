//! The progress bar and the report of `zdctl verify`, human or JSON.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use zd_load::load::LiveCounters;
use zd_load::verify::{FailureCounts, Latency, VerifyReport};

use super::Watched;
use super::bake::{self, BakeSummary};
use super::capacity::{self, Capacity, CapacitySummary};
use crate::output;

/// One bar step per restart, on stderr; hidden with `--json` or off a terminal.
pub fn bar(restarts: u32, label: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar =
        ProgressBar::with_draw_target(Some(u64::from(restarts)), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} restarts  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(format!("verifying {label}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub fn live_message(live: &LiveCounters) -> String {
    format!("{} requests, {} failed", live.requests(), live.failures())
}

pub fn print_report(report: &VerifyReport, json: bool) -> anyhow::Result<()> {
    if json {
        output::json_line(report)
    } else {
        output::text(&human_report(report))
    }
}

/// The `--json` shape of `verify`: the report, then `capacity` (a native service's, when
/// it was sampled) and `bake` (with `--bake`).
#[derive(Debug, Serialize)]
struct WatchedJson<'a> {
    #[serde(flatten)]
    report: &'a VerifyReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<&'a CapacitySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bake: Option<&'a BakeSummary>,
}

pub fn print_watched(w: &Watched, json: bool) -> anyhow::Result<()> {
    if json {
        output::json_line(&WatchedJson {
            report: &w.verification.report,
            capacity: w.capacity.summary(),
            bake: w.bake.as_ref(),
        })
    } else {
        output::text(&watched_report(w))
    }
}

/// The report as a few aligned lines, with the capacity and the bake lines.
pub fn watched_report(w: &Watched) -> String {
    let r = &w.verification.report;
    let mut extra = Vec::new();
    if let Some(b) = &w.bake {
        extra.push(format!("bake       {}\n", bake::line(b, r.failed)));
    }
    match &w.capacity {
        Capacity::Sampled(trace) => {
            extra.push(format!("capacity   {}\n", capacity::line(&trace.summary)));
        }
        Capacity::NotSampled(why) => extra.push(format!("capacity   not sampled: {why}\n")),
        Capacity::NotApplicable => {}
    }
    let mut out = report_text(r, &extra);
    if let Some(warning) = w.capacity.summary().and_then(capacity::warning) {
        out += &crate::color::bad(&warning, crate::color::Stream::Stdout);
        out += "\n";
    }
    out
}

/// Requests per second over the whole run.
pub(crate) fn requests_per_second(r: &VerifyReport) -> f64 {
    if r.duration_ms > 0.0 {
        r.requests as f64 * 1000.0 / r.duration_ms
    } else {
        0.0
    }
}

/// `open loop at 500/s`, or `closed loop`.
pub(crate) fn load_words(r: &VerifyReport) -> String {
    match r.rate {
        Some(rate) => format!("open loop at {rate}/s"),
        None => "closed loop".to_owned(),
    }
}

/// The report as a few aligned lines.
pub fn human_report(r: &VerifyReport) -> String {
    report_text(r, &[])
}

/// The report's lines, with `extra` lines before the kernel's.
fn report_text(r: &VerifyReport, extra: &[String]) -> String {
    let stream = crate::color::Stream::Stdout;
    let verdict = if r.passed {
        crate::color::good("PASS", stream)
    } else {
        crate::color::bad("FAIL", stream)
    };
    let rate = requests_per_second(r);
    let load = load_words(r);
    let mut out = format!(
        "{verdict}: {} restarts of {} under load at {}\n",
        r.flips.requested, r.target, r.url
    );
    out += &format!(
        "requests   {} in {:.1}s ({rate:.0}/s), {} failed; {} connections, {}, {load}\n",
        r.requests,
        r.duration_ms / 1000.0,
        r.failed,
        r.concurrency,
        if r.mode == "close" {
            "a new connection per request"
        } else {
            "keep-alive"
        },
    );
    out += &format!("failures   {}\n", failures_line(&r.failures));
    if r.retried > 0 {
        out += &format!(
            "retried    {} (their kept-alive connection closed before the answer)\n",
            r.retried
        );
    }
    out += "latency    requests      p50      p99    p99.9      max\n";
    out += &latency_line("  flips", &r.latency.flips);
    out += &latency_line("  steady", &r.latency.steady);
    out += &format!(
        "flips      {}/{} completed, p50 {}, max {}\n",
        r.flips.completed,
        r.flips.requested,
        ms(r.flips.p50_ms),
        ms(r.flips.max_ms)
    );
    for (i, flip) in r.flips.list.iter().enumerate() {
        if let Some(problem) = &flip.problem {
            out += &format!("  flip {}: {problem}\n", i + 1);
        }
    }
    for line in extra {
        out += line;
    }
    out += &format!("kernel     {}\n", kernel_line(r));
    out
}

/// The kernel's counters and the accept queue's peak, on one line.
pub(super) fn kernel_line(r: &VerifyReport) -> String {
    let queue = r
        .accept_queue_max
        .map(|q| format!("; accept queue peak {q}"))
        .unwrap_or_default();
    format!(
        "ListenOverflows +{}, ListenDrops +{}, resets sent +{}{queue}",
        r.kernel.listen_overflows, r.kernel.listen_drops, r.kernel.out_rsts
    )
}

pub(super) fn failures_line(f: &FailureCounts) -> String {
    let kinds = [
        ("refused", f.refused),
        ("reset", f.reset),
        ("timeout", f.timeout),
        ("non-2xx", f.non_2xx),
        ("short read", f.short_read),
        ("other", f.other),
    ];
    let seen: Vec<String> = kinds
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    if seen.is_empty() {
        "none".to_owned()
    } else {
        seen.join(", ")
    }
}

fn latency_line(label: &str, l: &Latency) -> String {
    format!(
        "{label:<10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        l.requests,
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.p999_ms),
        ms(l.max_ms)
    )
}

/// `0.42ms`, `12.3ms`, `1.52s`.
pub(super) fn ms(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.2}s", value / 1000.0)
    } else if value >= 10.0 {
        format!("{value:.1}ms")
    } else {
        format!("{value:.2}ms")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use super::*;
    use crate::verify::capacity::{Sample, Trace, summarize};

    /// A run of a service with 3 instances whose capacity fell to 2 once, reverted during
    /// bake each of its restarts.
    pub fn watched() -> Watched {
        let mut w = Watched::plain(crate::verify::plot::tests::synthetic());
        let at = |ms, capacity| Sample {
            at: Duration::from_millis(ms),
            capacity,
            instances: 3,
        };
        let samples = [at(0, 3), at(100, 4), at(200, 2), at(300, 3)];
        w.capacity = Capacity::Sampled(Trace {
            summary: summarize(&samples).expect("summary"),
            changes: samples.to_vec(),
            started: Instant::now(),
        });
        w.bake = Some(BakeSummary {
            restarts: 1,
            reverted: 1,
            generation: 1,
            pid: 42,
        });
        w
    }

    #[test]
    fn the_text_report_has_a_bake_line_a_capacity_line_and_warns_of_a_drop() {
        let text = watched_report(&watched());
        let lines: Vec<&str> = text.lines().collect();
        let bake = lines.iter().position(|l| l.starts_with("bake "));
        let capacity = lines.iter().position(|l| l.starts_with("capacity "));
        let kernel = lines.iter().position(|l| l.starts_with("kernel "));
        assert!(bake < capacity && capacity < kernel, "{text}");
        assert!(
            text.contains("bake       1 restarts, 1 reverted during bake, 3 failed requests"),
            "{text}"
        );
        assert!(
            text.contains(
                "capacity   below 3 instances in 1 of 4 samples (1 stretch, the longest \
                 100.0ms); min 2, max 4, 4 samples"
            ),
            "{text}"
        );
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("warning: capacity fell to 2 of 3")),
            "{text}"
        );
    }

    #[test]
    fn a_service_that_cannot_be_sampled_says_so_once() {
        let mut w = watched();
        w.capacity =
            Capacity::NotSampled("'api' is run by psflip, which reports no capacity".into());
        let text = watched_report(&w);
        assert_eq!(text.matches("capacity").count(), 2, "{text}");
        assert!(text.contains(
            "capacity   not sampled: 'api' is run by psflip, which reports no capacity\n"
        ));
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn the_json_report_adds_capacity_and_bake_beside_the_report() {
        let w = watched();
        let json = serde_json::to_value(WatchedJson {
            report: &w.verification.report,
            capacity: w.capacity.summary(),
            bake: w.bake.as_ref(),
        })
        .expect("json");
        assert_eq!(json["capacity"]["min"], 2);
        assert_eq!(json["capacity"]["instances"], 3);
        assert_eq!(json["capacity"]["below_stretches"], 1);
        assert_eq!(json["bake"]["reverted"], 1);
        assert_eq!(json["failed"], 3, "the report's own keys stay at the top");
        let plain = Watched::plain(crate::verify::plot::tests::synthetic());
        let json = serde_json::to_value(WatchedJson {
            report: &plain.verification.report,
            capacity: plain.capacity.summary(),
            bake: plain.bake.as_ref(),
        })
        .expect("json");
        assert!(json.get("capacity").is_none() && json.get("bake").is_none());
    }

    #[test]
    fn only_the_kinds_that_happened_are_listed() {
        let f = FailureCounts {
            refused: 3,
            non_2xx: 2,
            ..FailureCounts::default()
        };
        assert_eq!(failures_line(&f), "refused 3, non-2xx 2");
        assert_eq!(failures_line(&FailureCounts::default()), "none");
    }

    #[test]
    fn milliseconds_keep_three_significant_digits() {
        assert_eq!(ms(0.4213), "0.42ms");
        assert_eq!(ms(12.34), "12.3ms");
        assert_eq!(ms(1520.0), "1.52s");
    }
}
