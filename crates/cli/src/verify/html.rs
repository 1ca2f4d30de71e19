//! `--report FILE.html`: one self-contained page a browser opens with nothing else: the
//! plot as inline SVG, the table the human output prints, each flip, the failures by kind
//! and the kernel's counters. No script and no stylesheet or font from the network, so it
//! can be mailed or attached to a ticket as it is.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use zd_load::verify::{Latency, VerifyReport};

use super::capacity::{self, Capacity};
use super::{Watched, bake, plot, print};

/// Writes the page to `file`.
pub fn write(file: &Path, v: &Watched) -> anyhow::Result<()> {
    std::fs::write(file, page(v)?)
        .with_context(|| format!("cannot write the report to '{}'", file.display()))
}

/// The whole page. Every string that comes from the run (the service name, the URL, a
/// flip's problem) goes through [`escape`]; the SVG is plotters' output, whose text is our
/// own captions and numbers.
pub fn page(w: &Watched) -> anyhow::Result<String> {
    let r = &w.verification.report;
    let svg = plot::svg_watched(w)?;
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    let title = format!(
        "zdctl verify {}: {verdict}, {} of {} requests failed",
        r.target, r.failed, r.requests
    );
    let mut out = String::new();
    // `write!` to a String cannot fail.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1 class=\"{}\">{}</h1>\n",
        escape(&title),
        verdict.to_lowercase(),
        escape(&format!(
            "{verdict}: {} restarts of {} under load at {}",
            r.flips.requested, r.target, r.url
        )),
    );
    out += "<h2>Summary</h2>\n";
    out += &summary_table(w);
    out += "<h2>Over time</h2>\n<figure>\n";
    out += &svg;
    out += "\n</figure>\n";
    out += "<h2>Latency</h2>\n";
    out += &latency_table(r);
    out += "<h2>Failures by kind</h2>\n";
    out += &failures_table(r);
    out += "<h2>Kernel counters</h2>\n";
    out += &kernel_table(r);
    out += "<h2>Restarts</h2>\n";
    out += &flips_table(r);
    out += "</body>\n</html>\n";
    Ok(out)
}

/// Only what a browser needs to lay the tables out; no external resource.
const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1040px}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
h1.pass{color:#060}h1.fail{color:#b00}figure{margin:0}svg{max-width:100%;height:auto}";

/// Text made safe for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

/// A table of `(heading, value)` rows, both escaped.
fn rows_table(id: &str, rows: &[(&str, String)]) -> String {
    let mut out = format!("<table id=\"{id}\">\n");
    for (heading, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(heading),
            escape(value)
        );
    }
    out + "</table>\n"
}

/// The lines of the human output, one row each.
fn summary_table(w: &Watched) -> String {
    let r = &w.verification.report;
    let rate = super::print::requests_per_second(r);
    let load = super::print::load_words(r);
    let mode = if r.mode == "close" {
        "a new connection per request"
    } else {
        "keep-alive"
    };
    let mut rows = vec![
        ("verdict", if r.passed { "PASS" } else { "FAIL" }.to_owned()),
        ("service", r.target.clone()),
        ("url", r.url.clone()),
        (
            "requests",
            format!(
                "{} in {:.1}s ({rate:.0}/s), {} failed; {} connections, {mode}, {load}",
                r.requests,
                r.duration_ms / 1000.0,
                r.failed,
                r.concurrency
            ),
        ),
        ("failures", print::failures_line(&r.failures)),
    ];
    if r.retried > 0 {
        rows.push((
            "retried",
            format!(
                "{} (their kept-alive connection closed before the answer)",
                r.retried
            ),
        ));
    }
    rows.push((
        "flips",
        format!(
            "{}/{} completed, p50 {}, max {}",
            r.flips.completed,
            r.flips.requested,
            print::ms(r.flips.p50_ms),
            print::ms(r.flips.max_ms)
        ),
    ));
    if let Some(b) = &w.bake {
        rows.push(("bake", bake::line(b, r.failed)));
    }
    match &w.capacity {
        Capacity::Sampled(trace) => {
            rows.push(("capacity", capacity::line(&trace.summary)));
            if let Some(warning) = capacity::warning(&trace.summary) {
                rows.push(("warning", warning));
            }
        }
        Capacity::NotSampled(why) => rows.push(("capacity", format!("not sampled: {why}"))),
        Capacity::NotApplicable => {}
    }
    rows.push(("kernel", print::kernel_line(r)));
    rows_table("summary", &rows)
}

fn latency_table(r: &VerifyReport) -> String {
    let mut out = String::from(
        "<table id=\"latency\">\n<tr><th></th><th>requests</th><th>failed</th><th>p50</th>\
         <th>p99</th><th>p99.9</th><th>max</th></tr>\n",
    );
    let row = |label: &str, l: &Latency| {
        format!(
            "<tr><th>{label}</th><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>\n",
            l.requests,
            l.failed,
            print::ms(l.p50_ms),
            print::ms(l.p99_ms),
            print::ms(l.p999_ms),
            print::ms(l.max_ms)
        )
    };
    out += &row("during flips", &r.latency.flips);
    out += &row("steady", &r.latency.steady);
    out + "</table>\n"
}

fn failures_table(r: &VerifyReport) -> String {
    let f = &r.failures;
    let kinds = [
        ("refused", f.refused),
        ("reset", f.reset),
        ("timeout", f.timeout),
        ("non-2xx", f.non_2xx),
        ("short read", f.short_read),
        ("other", f.other),
        ("total", r.failed),
    ];
    let rows: Vec<(&str, String)> = kinds.iter().map(|&(k, n)| (k, n.to_string())).collect();
    rows_table("failures", &rows)
}

fn kernel_table(r: &VerifyReport) -> String {
    let mut rows = vec![
        ("ListenOverflows", format!("+{}", r.kernel.listen_overflows)),
        ("ListenDrops", format!("+{}", r.kernel.listen_drops)),
        ("resets sent (OutRsts)", format!("+{}", r.kernel.out_rsts)),
    ];
    if let Some(q) = r.accept_queue_max {
        rows.push(("accept queue peak", q.to_string()));
    }
    rows_table("kernel", &rows)
}

fn flips_table(r: &VerifyReport) -> String {
    let mut out = String::from(
        "<table id=\"flips\">\n<tr><th>#</th><th>start</th><th>end</th><th>took</th>\
         <th>accept queue peak</th><th>problem</th></tr>\n",
    );
    for (i, flip) in r.flips.list.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{:.3}s</td><td class=\"n\">{:.3}s</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            i + 1,
            flip.start_ms / 1000.0,
            flip.end_ms / 1000.0,
            print::ms(flip.elapsed_ms),
            flip.accept_queue_max
                .map(|q| q.to_string())
                .unwrap_or_default(),
            escape(flip.problem.as_deref().unwrap_or("")),
        );
    }
    out + "</table>\n"
}

#[cfg(test)]
pub(super) mod tests {
    use zd_load::load::LoadReport;
    use zd_load::verify::{FailureCounts, FlipReport, FlipSummary, KernelCounters, LatencyReport};

    use super::*;

    /// A report consistent with `load`, for a service with a name that needs escaping.
    pub fn report_of(load: &LoadReport) -> VerifyReport {
        let failed = load.failed();
        VerifyReport {
            target: "<api> & \"co\"".to_owned(),
            url: "http://127.0.0.1:8080/?a=1&b=<2>".to_owned(),
            mode: "keepalive",
            concurrency: 4,
            rate: None,
            duration_ms: 1000.0,
            requests: load.total(),
            failed,
            retried: 0,
            failures: FailureCounts::of(load),
            latency: LatencyReport::default(),
            flips: FlipSummary {
                requested: 1,
                completed: 0,
                p50_ms: 120.0,
                max_ms: 120.0,
                list: vec![FlipReport {
                    start_ms: 400.0,
                    end_ms: 520.0,
                    elapsed_ms: 120.0,
                    accept_queue_max: Some(7),
                    problem: Some("generation 2 said <script>alert(1)</script>".to_owned()),
                }],
            },
            kernel: KernelCounters {
                listen_overflows: 2,
                listen_drops: 5,
                out_rsts: 11,
            },
            accept_queue_max: Some(7),
            passed: failed == 0,
        }
    }

    #[test]
    fn every_special_character_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_page_escapes_what_the_run_named_and_holds_the_svg_and_the_tables() {
        let v = Watched::plain(crate::verify::plot::tests::synthetic());
        let html = page(&v).expect("page");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(
            !html.contains("<api>") && !html.contains("<script"),
            "{html}"
        );
        assert!(html.contains("&lt;api&gt; &amp; &quot;co&quot;"));
        assert!(html.contains("a=1&amp;b=&lt;2&gt;"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert_eq!(html.matches("<svg").count(), 1);
        assert_eq!(html.matches("</svg>").count(), 1);
        for id in ["summary", "latency", "failures", "kernel", "flips"] {
            assert!(
                html.contains(&format!("<table id=\"{id}\">")),
                "no {id} table"
            );
        }
        assert!(html.contains("<tr><th>ListenDrops</th><td>+5</td></tr>"));
        assert!(html.contains("<tr><th>refused</th><td>3</td></tr>"));
        assert!(html.contains("FAIL"));
    }

    #[test]
    fn the_summary_has_the_bake_and_capacity_rows_and_the_warning() {
        let html = page(&crate::verify::print::tests::watched()).expect("page");
        assert!(
            html.contains("<tr><th>bake</th><td>1 restarts, 1 reverted during bake, 3 failed"),
            "{html}"
        );
        assert!(html.contains("<tr><th>capacity</th><td>below 3 instances"));
        assert!(html.contains("<tr><th>warning</th><td>warning: capacity fell to 2 of 3"));
        assert!(
            html.contains("capacity: instances serving"),
            "no capacity chart"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let html = page(&Watched::plain(crate::verify::plot::tests::synthetic())).expect("page");
        for outside in ["<script", "<link", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(outside), "the page has {outside}");
        }
    }

    /// Tags open and close in order: a stray `<` from an unescaped string, or a table left
    /// open, shows up as a mismatch.
    #[test]
    fn the_page_is_well_nested() {
        let html = page(&Watched::plain(crate::verify::plot::tests::synthetic())).expect("page");
        let body = &html[html.find("<html").expect("html")..];
        let mut open: Vec<String> = Vec::new();
        let void = ["meta", "br", "hr", "img", "input", "link"];
        for tag in body.split('<').skip(1) {
            let end = tag.find('>').expect("every tag ends");
            let inside = &tag[..end];
            let self_closing = inside.ends_with('/');
            let name: String = inside
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if inside.starts_with('!') || inside.starts_with('?') {
                continue;
            }
            if let Some(closed) = inside.strip_prefix('/') {
                let closed = closed.trim();
                assert_eq!(
                    open.pop().as_deref(),
                    Some(closed),
                    "</{closed}> closes nothing"
                );
            } else if !self_closing && !void.contains(&name.as_str()) {
                open.push(name);
            }
        }
        assert!(open.is_empty(), "left open: {open:?}");
    }
}
