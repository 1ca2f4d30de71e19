//! flipbench: the restart benchmark. It runs the real `zdctl run` with the fixture service,
//! puts it under closed-loop HTTP load on loopback, restarts it back to back through the
//! control socket, and prints what the flips cost: failed requests, flip time, the
//! supervisor's own overhead, request latency during flips against steady state, the
//! supervisor's memory and its wake-ups while idle. `docs/benchmarks.md` shows a run.
//!
//! # How it works
//!
//! Each mode (keep-alive connections, or a new connection per request) gets a fresh
//! supervisor in a temp dir. Its idle cost is measured before any load: `VmRSS`, and the
//! context switches of all its threads over the idle window. Then the load starts on its
//! own runtime and thread, and the main thread restarts the service as `zdctl restart`
//! does, timing each restart from the client and reading the supervisor's own timings
//! from the events' `elapsed_us`. The flip windows (client side) split the requests into
//! "during flips" and "steady state".

mod bench;
mod flips;
pub(crate) mod load;
pub(crate) mod procfs;
pub(crate) mod report;
pub mod service;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use zd_load::load::ConnectionMode;

pub const USAGE: &str = "\
usage: flipbench [--flips N] [--concurrency C] [--mode keepalive|close|both]
                 [--server fixture|go] [--handoff steered|shared|both]
                 [--retry-idle-close] [--min-requests R] [--idle DURATION]
                 [--instances N]

  --flips N          restarts per mode, at least (default 200)
  --concurrency C    load connections (default 64)
  --mode M           keepalive, close or both (default both)
  --server S         the service: the fixture (default), or a Go net/http server
                     written the standard way (Serve, then Shutdown on SIGTERM),
                     built with the Go toolchain of the peers directory or PATH
  --handoff H        the service file's handoff: steered, shared or both
                     (default: none given, so the supervisor's default)
  --min-requests R   keep restarting until the load did R requests (default 200000)
  --idle DURATION    how long to watch the idle supervisor (default 5s)
  --instances N      the service's 'instances' (default 1): each restart rolls
                     N processes one by one, and the fewest instances serving
                     during the flips is measured
  --retry-idle-close keep-alive clients send a request once more on a new
                     connection when theirs closed before any byte of the answer,
                     as HTTP clients do; counted as retried, not failed
  --keep             keep each mode's temp dir (service file, supervisor log)

Each handoff runs each mode. Finds zdctl and zd-fixture next to itself: run `cargo build --release --workspace` first.
Exit status: 0 if no request and no restart failed, 1 if any did, 2 if it could not
measure.
";

#[derive(Debug, Clone)]
pub struct Options {
    pub flips: usize,
    pub concurrency: usize,
    pub modes: Vec<ConnectionMode>,
    pub min_requests: u64,
    pub idle: Duration,
    pub keep: bool,
    pub server: Server,
    pub retry_idle_close: bool,
    /// The `handoff:` of the service file, each in turn; `None` leaves it out.
    pub handoffs: Vec<Option<&'static str>>,
    /// The service file's `instances:`.
    pub instances: u32,
}

/// The program the supervisor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The fixture service of this workspace.
    Fixture,
    /// A Go net/http server (see `zd_tests::go`).
    Go,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flips: 200,
            concurrency: 64,
            modes: vec![ConnectionMode::KeepAlive, ConnectionMode::Close],
            min_requests: 200_000,
            idle: Duration::from_secs(5),
            keep: false,
            server: Server::Fixture,
            retry_idle_close: false,
            handoffs: vec![None],
            instances: 1,
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub enum Command {
    Run(Options),
    Help,
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        if flag == "--keep" {
            options.keep = true;
            continue;
        }
        if flag == "--retry-idle-close" {
            options.retry_idle_close = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("'{flag}' needs a value; see --help"))?;
        let number = |what: &str| -> Result<u64> {
            value
                .parse()
                .with_context(|| format!("{flag}: '{value}' is not {what}"))
        };
        match flag.as_str() {
            "--flips" => options.flips = usize::try_from(number("a count")?)?,
            "--concurrency" => options.concurrency = usize::try_from(number("a count")?)?,
            "--min-requests" => options.min_requests = number("a count")?,
            "--instances" => {
                options.instances = u32::try_from(number("a count")?)?;
                if options.instances == 0 {
                    bail!("--instances must be at least 1");
                }
            }
            "--idle" => {
                options.idle = humantime::parse_duration(&value).with_context(|| {
                    format!("--idle: '{value}' is not a duration such as '5s' or '500ms'")
                })?;
            }
            "--mode" => {
                options.modes = match value.as_str() {
                    "keepalive" => vec![ConnectionMode::KeepAlive],
                    "close" => vec![ConnectionMode::Close],
                    "both" => vec![ConnectionMode::KeepAlive, ConnectionMode::Close],
                    _ => bail!("--mode: '{value}' is not keepalive, close or both"),
                };
            }
            "--server" => {
                options.server = match value.as_str() {
                    "fixture" => Server::Fixture,
                    "go" => Server::Go,
                    _ => bail!("--server: '{value}' is not fixture or go"),
                };
            }
            "--handoff" => {
                options.handoffs = match value.as_str() {
                    "steered" => vec![Some("steered")],
                    "shared" => vec![Some("shared")],
                    "both" => vec![Some("steered"), Some("shared")],
                    _ => bail!("--handoff: '{value}' is not steered, shared or both"),
                };
            }
            _ => bail!("unknown flag '{flag}'; see --help"),
        }
    }
    if options.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    Ok(Command::Run(options))
}

/// Runs every mode and prints the figures; `Ok(true)` when no request and no restart
/// failed.
pub fn run(options: &Options) -> Result<bool> {
    let binaries = service::Binaries::next_to_this_program()?;
    // The Go server is built once, into a directory that lives as long as the run.
    let build = tempfile::Builder::new().prefix("flipbench-go-").tempdir()?;
    let program = match options.server {
        Server::Fixture => binaries.fixture.clone(),
        Server::Go => {
            let go = crate::go::toolchain().map_err(anyhow::Error::msg)?;
            crate::go::build_shutdown_server(&go, build.path())?
        }
    };
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average: Vec<&str> = load_average.split_whitespace().take(3).collect();
    println!(
        "flipbench: {} restarts and >= {} requests per mode, {} connections, idle window {:?}",
        options.flips, options.min_requests, options.concurrency, options.idle
    );
    println!(
        "{} CPUs, load average {} before the run",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average.join(" ")
    );
    let mut results = Vec::new();
    for &handoff in &options.handoffs {
        for &mode in &options.modes {
            let run = bench::Run {
                program: &program,
                server: options.server,
                handoff,
                mode,
                instances: options.instances,
            };
            let result = bench::run_mode(&binaries, options, &run)
                .with_context(|| format!("mode {}", run.label()))?;
            report::print_mode(&result);
            results.push(result);
        }
    }
    report::print_targets(&results);
    Ok(results.iter().all(report::ModeResult::passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_override_the_defaults() {
        let Ok(Command::Run(o)) = parse(&["--flips", "3", "--mode", "close", "--idle", "250ms"])
        else {
            panic!("expected options");
        };
        assert_eq!(o.flips, 3);
        assert_eq!(o.modes, vec![ConnectionMode::Close]);
        assert_eq!(o.idle, Duration::from_millis(250));
        assert_eq!(o.concurrency, 64);
        assert_eq!(o.min_requests, 200_000);
        assert_eq!((o.server, o.handoffs), (Server::Fixture, vec![None]));
        let Ok(Command::Run(o)) = parse(&["--server", "go", "--handoff", "both"]) else {
            panic!("expected options");
        };
        assert_eq!(o.server, Server::Go);
        assert_eq!(o.handoffs, vec![Some("steered"), Some("shared")]);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--mode", "fast"][..],
            &["--flips"],
            &["--flips", "x"],
            &["--concurrency", "0"],
            &["--server", "python"],
            &["--handoff", "magic"],
            &["--bogus", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
    }
}
