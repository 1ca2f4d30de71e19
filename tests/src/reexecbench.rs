//! reexecbench: what `zdctl reexec` costs. It runs the real `zdctl run` with the fixture
//! service, keeps closed-loop HTTP load on it, measures the steady state for a while, then
//! re-executes the supervisor N times, alternating between the zdctl under test and a
//! second build of it (a copy with a build tag stamped in), and prints the reexec time,
//! the failed requests, and the latency of requests in flight during a reexec against the
//! others. `docs/benchmarks.md` shows a run.
//!
//! # How it works
//!
//! Each mode (keep-alive connections, or a new connection per request) gets a fresh
//! supervisor in a temp dir (the flipbench harness, `crate::flipbench::service`). The load
//! runs on its own runtime and thread. The main thread runs `zdctl reexec bench --binary B
//! --json` as an operator would and reads its `elapsed_us`: from the request to the first
//! answer of the new binary to `status`. The window of each reexec (client side, the
//! command's start to its exit) splits the requests into "during reexecs" and "steady
//! state"; a pause between reexecs keeps steady requests between them too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zd_load::load::{ConnectionMode, LatencySummary, WindowedSummary};

use crate::flipbench::load::BackgroundLoad;
use crate::flipbench::report::percentiles;
use crate::flipbench::service::{Binaries, NAME, Service};

pub const USAGE: &str = "\
usage: reexecbench [--reexecs N] [--concurrency C] [--mode keepalive|close|both]
                   [--steady DURATION] [--pause DURATION] [--handoff steered|shared]
                   [--keep]

  --reexecs N        reexecs per mode, alternating two builds (default 50)
  --concurrency C    load connections (default 32)
  --mode M           keepalive, close or both (default both)
  --steady DURATION  load alone before the first reexec (default 5s)
  --pause DURATION   between two reexecs (default 100ms)
  --handoff H        the service file's handoff (default: the supervisor's)
  --keep             keep each mode's temp dir (service file, supervisor log)

Finds zdctl and zd-fixture next to itself: run `cargo build --release --workspace --bins`
first. Exit status: 0 if no request and no reexec failed, 1 if any did, 2 if it could not
measure.
";

/// The tag stamped into the second build; it reports `VERSION+reexecbench`.
const TAG: &str = "reexecbench";

/// The load's own bound; it is stopped as soon as the reexecs end.
const LOAD_BOUND: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Options {
    pub reexecs: usize,
    pub concurrency: usize,
    pub modes: Vec<ConnectionMode>,
    pub steady: Duration,
    pub pause: Duration,
    pub handoff: Option<&'static str>,
    pub keep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reexecs: 50,
            concurrency: 32,
            modes: vec![ConnectionMode::KeepAlive, ConnectionMode::Close],
            steady: Duration::from_secs(5),
            pause: Duration::from_millis(100),
            handoff: None,
            keep: false,
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
        let duration = || -> Result<Duration> {
            humantime::parse_duration(&value)
                .with_context(|| format!("{flag}: '{value}' is not a duration such as '5s'"))
        };
        match flag.as_str() {
            "--reexecs" => options.reexecs = count()?,
            "--concurrency" => options.concurrency = count()?,
            "--steady" => options.steady = duration()?,
            "--pause" => options.pause = duration()?,
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
    if options.concurrency == 0 || options.reexecs == 0 {
        bail!("--concurrency and --reexecs must be at least 1");
    }
    Ok(Command::Run(options))
}

/// Everything measured in one mode.
#[derive(Debug, Clone, Default)]
struct ModeResult {
    mode: &'static str,
    requests: u64,
    failed_requests: u64,
    requests_per_second: f64,
    /// `elapsed_us` of each reexec that succeeded.
    reexec_us: Vec<u64>,
    /// Why each failed reexec failed.
    reexec_errors: Vec<String>,
    /// The pid and the listeners' inodes were the same after every reexec, and each
    /// reported the version of the binary it was given.
    kept: bool,
    latency: WindowedSummary,
}

/// Runs every mode and prints the figures; `Ok(true)` when no request and no reexec failed.
pub fn run(options: &Options) -> Result<bool> {
    let binaries = Binaries::next_to_this_program()?;
    let builds = tempfile::Builder::new().prefix("reexecbench-").tempdir()?;
    let second = second_build(&binaries.zdctl, builds.path())?;
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average: Vec<&str> = load_average.split_whitespace().take(3).collect();
    println!(
        "reexecbench: {} reexecs per mode (alternating {} and a copy stamped '{TAG}'), \
         {} connections, {:?} of steady load first, {:?} between reexecs; handoff: {}",
        options.reexecs,
        binaries.zdctl.display(),
        options.concurrency,
        options.steady,
        options.pause,
        options.handoff.unwrap_or("the supervisor's default"),
    );
    println!(
        "{} CPUs, load average {} before the run",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average.join(" ")
    );
    let mut passed = true;
    for &mode in &options.modes {
        let result = run_mode(&binaries, &second, options, mode)
            .with_context(|| format!("mode {}", mode_name(mode)))?;
        print_mode(&result);
        passed &= result.failed_requests == 0 && result.reexec_errors.is_empty() && result.kept;
    }
    Ok(passed)
}

fn mode_name(mode: ConnectionMode) -> &'static str {
    match mode {
        ConnectionMode::KeepAlive => "keepalive",
        ConnectionMode::Close => "close",
    }
}

/// A copy of `zdctl` in `dir` with [`TAG`] stamped in.
fn second_build(zdctl: &Path, dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes =
        std::fs::read(zdctl).with_context(|| format!("cannot read '{}'", zdctl.display()))?;
    if !zd_core::version::stamp(&mut bytes, TAG) {
        bail!("'{}' has no empty build tag slot", zdctl.display());
    }
    let path = dir.join("zdctl-second");
    // Written and closed before it is ever executed (an fd open for writing would make
    // execve fail with ETXTBSY).
    std::fs::write(&path, &bytes)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn run_mode(
    binaries: &Binaries,
    second: &Path,
    options: &Options,
    mode: ConnectionMode,
) -> Result<ModeResult> {
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut service = Service::start(
        binaries,
        &binaries.fixture,
        options.handoff,
        mode_name(mode),
        options.keep,
    )?;
    let first = service.wait_active(&control)?;
    let pid = first.supervisor_pid;
    let inodes: Vec<u64> = first.listeners.iter().map(|l| l.inode).collect();
    let address = first
        .listeners
        .first()
        .context("the supervisor reports no listener")?
        .address
        .clone();
    eprintln!(
        "reexecbench: mode {}: supervisor pid {pid} on {address}",
        mode_name(mode)
    );

    let load = BackgroundLoad::start(&address, options.concurrency, mode, false, LOAD_BOUND)?;
    std::thread::sleep(options.steady);
    let mut windows = Vec::new();
    let mut reexec_us = Vec::new();
    let mut reexec_errors = Vec::new();
    let mut kept = true;
    for i in 0..options.reexecs {
        let (binary, version) = if i % 2 == 0 {
            (second, format!("{}+{TAG}", zd_core::version::version()))
        } else {
            (binaries.zdctl.as_path(), zd_core::version::version())
        };
        let started = Instant::now();
        let out = std::process::Command::new(&binaries.zdctl)
            .args(["reexec", NAME, "--json", "--binary"])
            .arg(binary)
            .env("ZDCTL_RUNTIME_DIR", service.dir().join("run"))
            .env("ZDCTL_CONFIG_DIR", service.dir().join("services.d"))
            .env_remove("ZD_LOG")
            .output()
            .context("cannot run zdctl reexec")?;
        windows.push((started, Instant::now()));
        let done: Option<serde_json::Value> = serde_json::from_slice(out.stdout.trim_ascii()).ok();
        match done {
            Some(done) if out.status.success() => {
                reexec_us.push(done["elapsed_us"].as_u64().unwrap_or(0));
                kept &= done["supervisor_pid"] == pid
                    && done["listener_inodes"] == serde_json::json!(inodes)
                    && done["to_version"] == version.as_str();
            }
            _ => reexec_errors.push(format!(
                "reexec {i} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
        std::thread::sleep(options.pause);
    }
    let report = load.finish()?;
    let stopped_cleanly = service.stop()?;
    if !stopped_cleanly || !reexec_errors.is_empty() {
        eprintln!("reexecbench: the supervisor's log:\n{}", service.log_text());
    }
    let windows: Vec<(Duration, Duration)> = windows
        .iter()
        .map(|&(from, to)| (report.offset_of(from), report.offset_of(to)))
        .collect();
    Ok(ModeResult {
        mode: mode_name(mode),
        requests: report.total(),
        failed_requests: report.failed(),
        requests_per_second: report.requests_per_second(),
        reexec_us,
        reexec_errors,
        kept,
        latency: report.summary_in_windows(&windows),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn latency_row(name: &str, s: &LatencySummary) {
    println!(
        "  {name:<22}{:>10}{:>12}{:>12}{:>12}{:>12}",
        s.requests,
        ms(s.p50),
        ms(s.p99),
        ms(s.p999),
        ms(s.max)
    );
}

fn ratio(during: Duration, steady: Duration) -> String {
    if steady.is_zero() {
        return "-".to_owned();
    }
    format!("{:.2}", during.as_secs_f64() / steady.as_secs_f64())
}

fn print_mode(r: &ModeResult) {
    println!("\n== mode {} ==", r.mode);
    println!(
        "requests          {} ({:.0}/s), failed {}",
        r.requests, r.requests_per_second, r.failed_requests
    );
    println!(
        "reexecs           {} done, {} failed; pid, listener inodes and versions {}",
        r.reexec_us.len(),
        r.reexec_errors.len(),
        if r.kept {
            "as expected"
        } else {
            "NOT as expected"
        }
    );
    for e in &r.reexec_errors {
        println!("  {e}");
    }
    let p = percentiles(&r.reexec_us);
    let us = |v: u64| ms(Duration::from_micros(v));
    println!(
        "reexec time       p50 {}  p99 {}  max {}  (request -> the new binary answers status)",
        us(p.p50),
        us(p.p99),
        us(p.max)
    );
    println!(
        "request latency         {:>10}{:>12}{:>12}{:>12}{:>12}",
        "requests", "p50", "p99", "p99.9", "max"
    );
    latency_row("during reexecs", &r.latency.in_windows);
    latency_row("steady state", &r.latency.steady);
    println!(
        "  {:<22}{:>10}{:>12}{:>12}",
        "during / steady",
        "",
        ratio(r.latency.in_windows.p50, r.latency.steady.p50),
        ratio(r.latency.in_windows.p99, r.latency.steady.p99)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_override_the_defaults() {
        let Ok(Command::Run(o)) = parse(&["--reexecs", "3", "--mode", "close", "--steady", "1s"])
        else {
            panic!("expected options");
        };
        assert_eq!(o.reexecs, 3);
        assert_eq!(o.modes, vec![ConnectionMode::Close]);
        assert_eq!(o.steady, Duration::from_secs(1));
        assert_eq!((o.concurrency, o.handoff), (32, None));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--mode", "fast"][..],
            &["--reexecs"],
            &["--reexecs", "0"],
            &["--handoff", "magic"],
            &["--bogus", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
    }
}
