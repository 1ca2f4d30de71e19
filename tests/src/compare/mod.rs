//! `cargo run --release -p zd-tests --bin compare`: one run of the same verification
//! workload (the `zd_load::verify` library behind `zdctl verify`) against zdctl and the
//! tools people use for the same job, plus two naive restarts that must show failures.
//!
//! Peers: `zdctl run` + the fixture (keep-alive and a new connection per request),
//! Server::Starter's `start_server` (HUP), nginx's binary upgrade (USR2, WINCH, QUIT),
//! HAProxy master-worker reloaded over its master socket, stop-then-start, and an
//! SO_REUSEPORT handover whose old process closes its own listener. A peer whose program
//! is not installed is reported as skipped, never as passing.
//!
//! Two rows run a Go `net/http` server written the standard way (Serve, then Shutdown on
//! SIGTERM) under `zdctl run`, with `handoff: steered` and `handoff: shared`: the drop the
//! steered handoff prevents (needs a Go toolchain, see `zd_tests::go`).
//!
//! One row restarts nothing: the baseline runs the fixture under `zdctl run` and, in each
//! "flip", starts a second fixture on a port of its own that exits after 10 ms. It shows
//! what the machine does to latency when a process starts and ends beside the service,
//! which every restart does at least, next to the `steady p99` of each row.
//!
//! The binary is also its own helper: `compare fixture ARGS` is the fixture service,
//! `compare naive-server --listen ADDR` the server of the naive SO_REUSEPORT handover (see
//! `naive.rs` for how it stops), and `compare haproxy-reload SOCKET` reloads HAProxy
//! through its master socket and waits until the old worker is gone.

mod naive;
mod peers;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use zd_load::load::{ConnectionMode, LiveCounters, LoadConfig};
use zd_load::verify::{self, VerifyConfig, VerifyReport};

/// Restarts per peer, the pause around them and the load: small enough for a laptop,
/// bounded in time (about 10 s per peer).
const RESTARTS: u32 = 10;
const INTERVAL: Duration = Duration::from_millis(300);
const CONCURRENCY: usize = 16;

pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match args.next().as_deref().and_then(|a| a.to_str()) {
        Some("fixture") => return exit(zd_demo::run_with_args(args)),
        Some("naive-server") => return exit(naive::run(args)),
        Some("haproxy-reload") => {
            let Some(socket) = args.next() else {
                eprintln!("usage: compare haproxy-reload SOCKET");
                return ExitCode::from(2);
            };
            return match peers::haproxy_reload(std::path::Path::new(&socket)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("haproxy reload failed: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(other) => {
            eprintln!(
                "usage: compare [fixture ARGS | naive-server --listen ADDR | haproxy-reload \
                 SOCKET]; not '{other}'"
            );
            return ExitCode::from(2);
        }
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for peer in peers::ALL {
        eprintln!("compare: {} ({})", peer.tool, mode_name(peer.mode));
        let row = match peers::start(peer) {
            Err(peers::Unavailable(why)) => Row::skipped(peer, why),
            Ok(running) => {
                let result = runtime.block_on(measure(&running, peer.mode));
                drop(running);
                match result {
                    Ok(report) => {
                        eprintln!("{}", row_summary(&report));
                        Row::measured(peer, &report)
                    }
                    Err(e) => Row::skipped(peer, format!("error: {e:#}")),
                }
            }
        };
        rows.push(row);
    }
    print!("{}", table(&rows));
    ExitCode::SUCCESS
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn mode_name(mode: ConnectionMode) -> &'static str {
    match mode {
        ConnectionMode::KeepAlive => "keep-alive",
        ConnectionMode::Close => "new connection per request",
    }
}

async fn measure(
    running: &peers::Running,
    mode: ConnectionMode,
) -> Result<VerifyReport, anyhow::Error> {
    let mut load = LoadConfig::new(format!("http://{}/", running.address).parse()?);
    load.concurrency = CONCURRENCY;
    load.mode = mode;
    load.request_timeout = Duration::from_secs(2);
    let config = VerifyConfig {
        load,
        restarter: running.restarter.clone(),
        restarts: RESTARTS,
        interval: INTERVAL,
    };
    let verification = verify::run(config, Arc::new(LiveCounters::default()), |_, _| {}).await?;
    Ok(verification.report)
}

/// The table's headings: the tool, its connection mode, then one per measured cell.
const HEADINGS: [&str; 10] = [
    "tool",
    "connections",
    "requests",
    "run time",
    "failed",
    "kernel drops",
    "flip p99",
    "steady p99",
    "flip max",
    "median flip (completed)",
];

/// One line of the table.
struct Row {
    tool: &'static str,
    mode: &'static str,
    cells: Result<[String; HEADINGS.len() - 2], String>,
}

impl Row {
    fn skipped(peer: &peers::Peer, why: String) -> Row {
        Row {
            tool: peer.tool,
            mode: mode_name(peer.mode),
            cells: Err(why),
        }
    }

    fn measured(peer: &peers::Peer, r: &VerifyReport) -> Row {
        let ms = |v: f64| format!("{v:.1}ms");
        let drops = r.kernel.listen_overflows.max(r.kernel.listen_drops);
        Row {
            tool: peer.tool,
            mode: mode_name(peer.mode),
            cells: Ok([
                r.requests.to_string(),
                format!("{:.1}s", r.duration_ms / 1000.0),
                if r.failed == 0 {
                    "0".to_owned()
                } else {
                    format!("{} ({})", r.failed, kinds(r))
                },
                drops.to_string(),
                ms(r.latency.flips.p99_ms),
                ms(r.latency.steady.p99_ms),
                ms(r.latency.flips.max_ms),
                format!(
                    "{} ({}/{})",
                    ms(r.flips.p50_ms),
                    r.flips.completed,
                    r.flips.requested
                ),
            ]),
        }
    }
}

fn kinds(r: &VerifyReport) -> String {
    let f = &r.failures;
    [
        ("refused", f.refused),
        ("reset", f.reset),
        ("timeout", f.timeout),
        ("non-2xx", f.non_2xx),
        ("short read", f.short_read),
        ("other", f.other),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// A markdown table, ready to paste into docs/benchmarks.md.
fn table(rows: &[Row]) -> String {
    // An empty cell is written `| |`, as a person would.
    let line = |cells: &[&str]| {
        let mut text: String = cells
            .iter()
            .map(|c| {
                if c.is_empty() {
                    "| ".into()
                } else {
                    format!("| {c} ")
                }
            })
            .collect();
        text += "|\n";
        text
    };
    let mut out = line(&HEADINGS);
    out += &"|---".repeat(HEADINGS.len());
    out += "|\n";
    for row in rows {
        let skipped;
        let mut cells = vec![row.tool, row.mode];
        match &row.cells {
            Ok(measured) => cells.extend(measured.iter().map(String::as_str)),
            Err(why) => {
                skipped = format!("skipped: {why}");
                cells.push(&skipped);
            }
        }
        cells.resize(HEADINGS.len(), "");
        out += &line(&cells);
    }
    out
}

fn row_summary(r: &VerifyReport) -> String {
    format!(
        "  {} requests in {:.1}s, {} failed, median flip {:.1}ms, slowest flip {:.1}ms",
        r.requests,
        r.duration_ms / 1000.0,
        r.failed,
        r.flips.p50_ms,
        r.flips.max_ms
    )
}

#[cfg(test)]
mod tests {
    use zd_load::verify::{FailureCounts, FlipSummary, KernelCounters, Latency, LatencyReport};

    use super::*;

    fn report() -> VerifyReport {
        let latency = |p99_ms| Latency {
            requests: 100,
            p99_ms,
            max_ms: 9.0,
            ..Latency::default()
        };
        VerifyReport {
            target: "cmp".into(),
            url: "http://127.0.0.1:1/".into(),
            mode: "close",
            concurrency: CONCURRENCY,
            rate: None,
            duration_ms: 2500.0,
            requests: 200,
            failed: 3,
            retried: 0,
            failures: FailureCounts {
                refused: 2,
                reset: 1,
                ..FailureCounts::default()
            },
            latency: LatencyReport {
                flips: latency(4.3),
                steady: latency(0.5),
            },
            flips: FlipSummary {
                requested: 10,
                completed: 9,
                p50_ms: 12.0,
                max_ms: 30.0,
                list: Vec::new(),
            },
            kernel: KernelCounters::default(),
            accept_queue_max: None,
            passed: false,
        }
    }

    fn cells(line: &str) -> Vec<&str> {
        line.trim_matches('|').split('|').map(str::trim).collect()
    }

    #[test]
    fn measured_and_skipped_rows_line_up_with_the_header() {
        let peer = &peers::ALL[1];
        let rows = [
            Row::measured(peer, &report()),
            Row::skipped(peer, "not installed".into()),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let header = cells(lines[0]);
        for line in &lines[1..] {
            assert_eq!(cells(line).len(), header.len(), "{line}");
        }
        let measured = cells(lines[2]);
        let at = |name: &str| measured[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(at("failed"), "3 (refused 2, reset 1)");
        assert_eq!(at("flip p99"), "4.3ms");
        assert_eq!(at("steady p99"), "0.5ms");
        assert_eq!(at("median flip (completed)"), "12.0ms (9/10)");
        assert!(cells(lines[3])[2].starts_with("skipped: not installed"));
    }
}
