//! `zdctl verify NAME --url URL`: restart a service N times under load and report every
//! request that suffered. The work is done by `zd_load::verify`; this module parses flags,
//! shows progress and prints. Beside the run it samples a native service's capacity
//! ([`capacity`]) and, with `--bake`, reverts each restart during its bake window
//! ([`bake`]).

pub mod bake;
pub mod capacity;
pub mod html;
pub mod plot;
mod print;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use zd_core::duration::parse_duration;
use zd_core::service::Service;
use zd_load::load::{ConnectionMode, LiveCounters, LoadConfig, Target};
use zd_load::verify::{self, FlipResult, Restarter, VerifyConfig, VerifyError};

use crate::control;
use crate::exit::ExitError;

pub use print::{human_report, print_report, print_watched, watched_report};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zdctl verify api --url http://127.0.0.1:8080/ --restarts 20\n  \
    zdctl verify --restart-cmd 'systemctl reload nginx' --url http://127.0.0.1/ --close\n  \
    zdctl verify api --url http://127.0.0.1:8080/ --restarts 5 --bake\n\n\
    Exits 0 when no request failed and the kernel dropped no connection, 1 otherwise, \
    3 when the service is not running. The capacity of a service 'zdctl run' supervises \
    (its instances serving) is sampled through the run and reported; falling below the \
    configured 'instances' is a warning, not a failure.")]
pub struct VerifyArgs {
    /// The service to restart, through its supervisor or its driver (not needed with
    /// --restart-cmd).
    #[arg(value_name = "NAME", required_unless_present = "restart_cmd")]
    pub name: Option<String>,

    /// Where to send the load: `http://HOST:PORT/PATH` (a local address) or `unix:PATH`.
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    pub url: Target,

    /// How many restarts.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub restarts: u32,

    /// The pause before the first restart, between restarts and after the last.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "500ms")]
    pub interval: Duration,

    /// Connections in parallel.
    #[arg(long, value_name = "C", default_value_t = 16)]
    pub concurrency: usize,

    /// Client threads the connections are shared out over, each with its own event loop.
    /// One per CPU when left out.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Open loop: this many requests per second in total, whatever the latency. Closed loop
    /// (each connection sends as soon as it has an answer) when left out.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,

    /// Reuse each connection (the default).
    #[arg(long, conflicts_with = "close")]
    pub keepalive: bool,

    /// A new connection per request (`Connection: close`).
    #[arg(long)]
    pub close: bool,

    /// Send a request once more, on a new connection, when the kept-alive connection it went
    /// out on closed before any byte of the answer, as HTTP clients do (RFC 9112 9.3.1.1): a
    /// server may close an idle connection as a request crosses it. Such requests are
    /// counted and shown as retried, not failed. Off: every such close is a failure.
    #[arg(long, conflicts_with = "close")]
    pub retry_idle_close: bool,

    /// Run the load at least this long, even when the restarts are done sooner.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Bound on one request, connect included; slower requests count as timeouts.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,

    /// Restart by running this shell command instead of asking the supervisor; exit status
    /// 0 means the flip is done. Measures other tools and naive restarts.
    #[arg(long, value_name = "COMMAND")]
    pub restart_cmd: Option<String>,

    /// Draw latency and throughput over time, each flip marked, into this SVG file.
    /// Successful and failed requests are drawn apart, with the failures counted; a moment
    /// when no request finished is a gap in the latency lines.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Write one self-contained HTML page that any browser opens: the plot, the report's
    /// table, each restart, the failures by kind and the kernel's counters.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Rehearse a canary's revert: revert every restart during its bake window, as
    /// 'zdctl revert' does, and check that each ends rolled back, that the generation
    /// that served before (same number, same pid) serves again, and that no request
    /// failed. Needs 'bake:' in the service file.
    #[arg(long, conflicts_with = "restart_cmd")]
    pub bake: bool,

    /// Print the report as one JSON object; no progress bar.
    #[arg(long)]
    pub json: bool,
}

/// A verification and what was watched beside it.
#[derive(Debug, Clone)]
pub struct Watched {
    pub verification: verify::Verification,
    pub capacity: capacity::Capacity,
    /// With `--bake`: how the reverts went.
    pub bake: Option<bake::BakeSummary>,
}

impl Watched {
    /// A verification with nothing watched beside it.
    pub fn plain(verification: verify::Verification) -> Watched {
        Watched {
            verification,
            capacity: capacity::Capacity::NotApplicable,
            bake: None,
        }
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
        .map_err(|e: zd_load::load::LoadError| e.to_string())
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let config = config_of(&args)?;
    let label = format!("'{}'", config.restarter.label());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let watched = runtime.block_on(run_watched(config, &label, args.json, args.bake))?;
    if let Some(file) = &args.plot {
        plot::draw_watched(file, &watched)?;
    }
    if let Some(file) = &args.report {
        html::write(file, &watched)?;
    }
    print_watched(&watched, args.json)?;
    verdict_of(&watched.verification.report, watched.bake.is_some())
}

/// The settings of a run from the flags.
pub fn config_of(args: &VerifyArgs) -> anyhow::Result<VerifyConfig> {
    let restarter = match (&args.restart_cmd, &args.name) {
        (Some(command), _) => Restarter::Command {
            command: command.clone(),
        },
        (None, Some(name)) => {
            // Fails early on a bad name or an invalid driver file.
            control::open(name)?;
            Restarter::Service {
                name: name.clone(),
                socket: None,
            }
        }
        (None, None) => {
            return Err(ExitError::usage(
                "name the service to restart, or give --restart-cmd",
            ));
        }
    };
    if args.concurrency == 0 {
        return Err(ExitError::usage(
            "--concurrency must be at least 1; try '--concurrency 16'",
        ));
    }
    if args.threads == Some(0) {
        return Err(ExitError::usage(
            "--threads must be at least 1; leave it out for one per CPU",
        ));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(ExitError::usage(
            "--rate must be a positive number of requests per second, like '--rate 2000'",
        ));
    }
    let mut load = LoadConfig::new(args.url.clone());
    load.concurrency = args.concurrency;
    if let Some(threads) = args.threads {
        load.threads = threads;
    }
    load.rate = args.rate;
    load.mode = if args.close {
        ConnectionMode::Close
    } else {
        ConnectionMode::KeepAlive
    };
    load.retry_idle_close = args.retry_idle_close;
    load.duration = args.duration;
    load.request_timeout = args.timeout;
    Ok(VerifyConfig {
        load,
        restarter,
        restarts: args.restarts,
        interval: args.interval,
    })
}

/// Runs a verification with a progress bar (hidden when `quiet` or off a terminal).
pub async fn run(
    config: VerifyConfig,
    label: &str,
    quiet: bool,
) -> anyhow::Result<verify::Verification> {
    run_with(config, label, quiet, |_| {}).await
}

/// [`run`], sampling the capacity of a service our supervisor runs, and with `bake`
/// reverting every restart during its bake window.
pub async fn run_watched(
    config: VerifyConfig,
    label: &str,
    quiet: bool,
    bake: bool,
) -> anyhow::Result<Watched> {
    let service = match &config.restarter {
        Restarter::Service {
            name,
            socket: Some(socket),
        } => Some(Service::supervised_at(name, socket)),
        Restarter::Service { name, socket: None } => Some(control::open(name)?),
        _ => None,
    };
    let reverter = match (bake, &service) {
        (false, _) => None,
        (true, None) => {
            return Err(ExitError::usage(
                "--bake needs a service that 'zdctl run' supervises, not --restart-cmd",
            ));
        }
        (true, Some(service)) => {
            bake::check(service).await?;
            Some(bake::Reverter::start(service).await?)
        }
    };
    let sampler = capacity::Sampler::start(service);
    let verification = run_with(config, label, quiet, |flip| {
        if let Some(reverter) = &reverter {
            reverter.flip_done(flip);
        }
    })
    .await;
    let capacity = sampler.finish().await;
    let judged = match reverter {
        Some(reverter) => Some(reverter.finish().await?),
        None => None,
    };
    let mut verification = verification?;
    let bake = judged.map(|judged| bake::apply(&mut verification.report, &judged));
    Ok(Watched {
        verification,
        capacity,
        bake,
    })
}

/// [`run`], telling `on_flip` of each flip as it ends.
async fn run_with(
    config: VerifyConfig,
    label: &str,
    quiet: bool,
    mut on_flip: impl FnMut(&FlipResult),
) -> anyhow::Result<verify::Verification> {
    let live = Arc::new(LiveCounters::default());
    let bar = print::bar(config.restarts, label, quiet);
    let ticker = {
        let (bar, live) = (bar.clone(), Arc::clone(&live));
        tokio::spawn(async move {
            loop {
                bar.set_message(print::live_message(&live));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = verify::run(config, Arc::clone(&live), |_, flip| {
        bar.inc(1);
        on_flip(flip);
    })
    .await;
    ticker.abort();
    bar.finish_and_clear();
    result.map_err(|e| error_of(label, e))
}

/// Exit codes: a service that is not running is 3, like every other command.
fn error_of(label: &str, err: VerifyError) -> anyhow::Error {
    match err {
        VerifyError::Service(err) => control::service_error(err),
        other => anyhow::Error::new(other).context(format!("verifying {label} failed")),
    }
}

/// Exit 1 when a request failed, a flip did not complete or the kernel dropped a
/// connection.
pub fn verdict(report: &verify::VerifyReport) -> anyhow::Result<()> {
    verdict_of(report, false)
}

/// [`verdict`]; with `bake`, a flip that did not complete is one that was not reverted
/// during its bake window. A capacity below `instances` is not part of it: every request
/// was still answered, and the run's promise is zero downtime; the report warns of it.
pub fn verdict_of(report: &verify::VerifyReport, bake: bool) -> anyhow::Result<()> {
    if report.passed {
        return Ok(());
    }
    let mut problems = Vec::new();
    if report.failed > 0 {
        problems.push(format!(
            "{} of {} requests failed",
            report.failed, report.requests
        ));
    }
    let dropped = report
        .kernel
        .listen_overflows
        .max(report.kernel.listen_drops);
    if dropped > 0 {
        problems.push(format!("the kernel dropped {dropped} connections"));
    }
    let downtime = !problems.is_empty();
    let missing = report
        .flips
        .requested
        .saturating_sub(report.flips.completed);
    if missing > 0 && bake {
        problems.push(format!("{missing} restarts were not reverted during bake"));
    } else if missing > 0 {
        problems.push(format!("{missing} restarts did not complete"));
    }
    let (kind, heading) = if downtime || !bake {
        ("downtime", "downtime seen")
    } else {
        ("bake", "bake not verified")
    };
    // The report (JSON too) says it: no error object follows it.
    Err(ExitError::reported(
        crate::exit::FAILURE,
        kind,
        format!("{heading}: {}; see the report above", problems.join(", ")),
    ))
}
