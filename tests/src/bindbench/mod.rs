//! bindbench: what `intercept_binds` costs. It prints the requests per second of a Go
//! `net/http` server that binds its own port (`ListenAndServe`), with and without the
//! interception, under the same load in the same run; and the time one `bind(2)` takes
//! when the supervisor answers it, next to the same binds without interception.
//! `docs/benchmarks.md` shows a run.
//!
//! # How it works
//!
//! Throughput (`throughput.rs`): three services run side by side, each under its own
//! `zdctl run` with one listener on a port of its own, all with `start_priority: normal`
//! (so that no thread of the server can be left at the idle priority in one setup and not
//! in another). They differ in how the Go server gets its socket:
//!
//! - `own-port`: `ListenAndServe` on a port that is not a listener, no `intercept_binds`.
//!   Its bind goes straight to the kernel; the socket is its own. What the program does
//!   without zdctl's help.
//! - `listen-fds`: the same handler served on the listener from `LISTEN_FDS`, no
//!   `intercept_binds`: the supervisor's socket without the seccomp filter.
//! - `intercepted`: `ListenAndServe` on the listener's address with `intercept_binds: true`:
//!   its bind gets the listener.
//!
//! `intercepted / own-port` is the cost of the feature as a user meets it;
//! `intercepted / listen-fds` is the filter's alone, on the same socket, and
//! `listen-fds / own-port` the socket's (the steered handoff's reuseport group). The
//! closed-loop load (`zd_load`) runs against one service at a time, for rounds of fixed
//! length, the setups taking turns in an order that rotates from round to round; the idle
//! ones wait in `epoll`. Each mode (keep-alive, a new connection per request) first gets
//! a warm-up round per setup that is not counted.
//!
//! Binds (`binds.rs`): the service's command is this program in a hidden mode
//! (`bindbench --binder ...`) that makes N binds of each kind, interleaved: to the
//! listener's address, to another free port, and to port 0, each on a fresh socket,
//! timed around the `bind` call alone, and writes the samples to a file. Once with
//! `intercept_binds: true` (the listener's bind takes the ADDFD path, the others continue
//! untouched), once without (the listener's bind fails with EADDRINUSE: the listener holds
//! the port).

mod binds;
mod throughput;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use zd_load::load::ConnectionMode;

pub use binds::run_binder;

pub const USAGE: &str = "\
usage: bindbench [--rounds N] [--seconds S] [--concurrency C]
                 [--mode keepalive|close|both] [--binds N] [--handoff steered|shared]
                 [--keep]

  --rounds N        measured rounds per setup and mode (default 15)
  --seconds S       length of one round, in seconds (default 1)
  --concurrency C   load connections (default 32)
  --mode M          keepalive, close or both (default both)
  --binds N         binds of each kind, with and without interception (default 1000)
  --handoff H       the service files' handoff (default: none given, so the
                    supervisor's default, steered where the kernel allows it)
  --keep            keep the temp dirs (service files, supervisor logs)

Three setups, each its own `zdctl run` with one listener on 127.0.0.1:
  own-port      Go ListenAndServe on a port that is not a listener (no intercept_binds)
  listen-fds    the same server on the listener from LISTEN_FDS (no intercept_binds)
  intercepted   Go ListenAndServe on the listener's address, intercept_binds: true

Finds zdctl next to itself: run `cargo build --release --workspace --bins` first. Builds
the Go servers with the Go toolchain of the peers directory (ZD_PEERS_DIR) or PATH.
Exit status: 0 if no request failed and every intercepted bind of the listener's address
got the listener, 1 if not, 2 if it could not measure.
";

/// The hard bound on one round: whatever `--seconds` says.
const MAX_ROUND: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub rounds: usize,
    pub round: Duration,
    pub concurrency: usize,
    pub modes: Vec<ConnectionMode>,
    pub binds: usize,
    /// The `handoff:` of the service files; `None` leaves it out.
    pub handoff: Option<&'static str>,
    pub keep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 15,
            round: Duration::from_secs(1),
            concurrency: 32,
            modes: vec![ConnectionMode::KeepAlive, ConnectionMode::Close],
            binds: 1000,
            handoff: None,
            keep: false,
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Options),
    Help,
    /// The hidden mode the bind measurement runs as the service's command.
    Binder(binds::BinderArgs),
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let mut options = Options::default();
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("--binder") {
        return binds::BinderArgs::parse(args.skip(1)).map(Command::Binder);
    }
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--keep" => {
                options.keep = true;
                continue;
            }
            _ => {}
        }
        let value = args
            .next()
            .with_context(|| format!("'{flag}' needs a value; see --help"))?;
        let count = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag}: '{value}' is not a count"))
        };
        match flag.as_str() {
            "--rounds" => options.rounds = count()?,
            "--concurrency" => options.concurrency = count()?,
            "--binds" => options.binds = count()?,
            "--seconds" => {
                let seconds: f64 = value
                    .parse()
                    .with_context(|| format!("--seconds: '{value}' is not a number"))?;
                if !(seconds > 0.0 && seconds <= MAX_ROUND.as_secs_f64()) {
                    bail!(
                        "--seconds: '{value}' is out of range; give more than 0 and at most {}",
                        MAX_ROUND.as_secs()
                    );
                }
                options.round = Duration::from_secs_f64(seconds);
            }
            "--mode" => {
                options.modes = match value.as_str() {
                    "keepalive" => vec![ConnectionMode::KeepAlive],
                    "close" => vec![ConnectionMode::Close],
                    "both" => vec![ConnectionMode::KeepAlive, ConnectionMode::Close],
                    _ => bail!("--mode: '{value}' is not keepalive, close or both"),
                };
            }
            "--handoff" => {
                options.handoff = match value.as_str() {
                    "steered" => Some("steered"),
                    "shared" => Some("shared"),
                    _ => bail!("--handoff: '{value}' is not steered or shared"),
                };
            }
            _ => bail!("unknown flag '{flag}'; see --help"),
        }
    }
    if options.rounds == 0 || options.concurrency == 0 || options.binds == 0 {
        bail!("--rounds, --concurrency and --binds must be at least 1");
    }
    Ok(Command::Run(options))
}

/// Runs both measurements and prints them; `Ok(true)` when no request failed and every
/// intercepted bind of the listener's address got the listener.
pub fn run(options: &Options) -> Result<bool> {
    let binaries = crate::flipbench::service::Binaries::next_to_this_program()?;
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average: Vec<&str> = load_average.split_whitespace().take(3).collect();
    println!(
        "bindbench: {} rounds of {:?} per setup and mode, {} connections; {} binds of each kind",
        options.rounds, options.round, options.concurrency, options.binds
    );
    println!(
        "{} CPUs, load average {} before the run; handoff: {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average.join(" "),
        options.handoff.unwrap_or("the supervisor's default")
    );
    let served = throughput::run(&binaries, options).context("the throughput measurement")?;
    let bound = binds::run(&binaries, options).context("the bind measurement")?;
    Ok(served && bound)
}

/// A port on 127.0.0.1 that is free now. Programs here bind theirs themselves, so it
/// must be known before they start; another program could take it meanwhile, which the
/// start then reports.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port on 127.0.0.1")?
        .port())
}

/// The value at quantile `q` (0 to 1) of `sorted`, nearest rank; 0 when empty.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_override_the_defaults() {
        let Ok(Command::Run(o)) = parse(&["--rounds", "3", "--seconds", "0.5", "--mode", "close"])
        else {
            panic!("expected options");
        };
        assert_eq!(o.rounds, 3);
        assert_eq!(o.round, Duration::from_millis(500));
        assert_eq!(o.modes, vec![ConnectionMode::Close]);
        assert_eq!((o.concurrency, o.binds, o.handoff), (32, 1000, None));
        let Ok(Command::Run(o)) = parse(&["--handoff", "shared", "--keep"]) else {
            panic!("expected options");
        };
        assert_eq!((o.handoff, o.keep), (Some("shared"), true));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--rounds", "0"][..],
            &["--rounds"],
            &["--seconds", "0"],
            &["--seconds", "x"],
            &["--seconds", "NaN"],
            &["--mode", "fast"],
            &["--handoff", "magic"],
            &["--bogus", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
    }

    #[test]
    fn quantiles_and_medians() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&sorted, 0.5), 50);
        assert_eq!(quantile(&sorted, 0.99), 99);
        assert_eq!(quantile(&sorted, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
