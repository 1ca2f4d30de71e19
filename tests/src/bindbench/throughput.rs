//! Requests per second of the Go server in the three setups, under the same load, the
//! setups taking turns round after round.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zd_load::load::{ConnectionMode, LoadConfig, StopSignal};

use super::{Options, free_port, median};
use crate::flipbench::service::{Binaries, Service, service_path};

/// The warm-up round of each setup, per mode: the server's heap, the connections.
const WARM_UP: Duration = Duration::from_secs(1);

/// A bound on the requests of one round, whatever its length: every record is kept in
/// memory (24 bytes each).
const MAX_REQUESTS: u64 = 20_000_000;

/// The target: interception costs no requests.
const TARGET_RATIO: f64 = 0.98;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    OwnPort,
    ListenFds,
    Intercepted,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::OwnPort, Setup::ListenFds, Setup::Intercepted];

    fn name(self) -> &'static str {
        match self {
            Setup::OwnPort => "own-port",
            Setup::ListenFds => "listen-fds",
            Setup::Intercepted => "intercepted",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Setup::OwnPort => {
                "ListenAndServe on a port that is not a listener, no intercept_binds: \
                 its bind goes to the kernel, the socket is its own"
            }
            Setup::ListenFds => {
                "Serve on the listener from LISTEN_FDS (same handler), no intercept_binds: \
                 the supervisor's socket, no seccomp filter"
            }
            Setup::Intercepted => {
                "ListenAndServe on the listener's address, intercept_binds: true: \
                 its bind gets the listener"
            }
        }
    }
}

/// One setup's running service, the address its server answers on, and the pids whose
/// CPU time is read: the server (the generation's main process) and its supervisor.
struct Running {
    setup: Setup,
    service: Service,
    address: String,
    server: i32,
    supervisor: i32,
}

/// The Go programs: one that binds its own port, one that serves `LISTEN_FDS`.
struct Programs<'a> {
    listen_and_serve: &'a Path,
    listen_fds: &'a Path,
}

fn start(
    binaries: &Binaries,
    options: &Options,
    programs: &Programs<'_>,
    setup: Setup,
    control: &tokio::runtime::Runtime,
) -> Result<Running> {
    let listener = free_port()?;
    let own = loop {
        let port = free_port()?;
        if port != listener {
            break port;
        }
    };
    let quote = |p: &Path| -> Result<String> { Ok(serde_json::to_string(service_path(p)?)?) };
    let (command, address, extra) = match setup {
        Setup::OwnPort => (
            format!(
                "[{}, \"127.0.0.1:{own}\"]",
                quote(programs.listen_and_serve)?
            ),
            format!("127.0.0.1:{own}"),
            // The listener is never served: readiness is the server's own port.
            format!("ready: \"tcp:127.0.0.1:{own}\"\n"),
        ),
        Setup::ListenFds => (
            format!("[{}]", quote(programs.listen_fds)?),
            format!("127.0.0.1:{listener}"),
            String::new(),
        ),
        Setup::Intercepted => (
            format!(
                "[{}, \"127.0.0.1:{listener}\"]",
                quote(programs.listen_and_serve)?
            ),
            format!("127.0.0.1:{listener}"),
            "intercept_binds: true\n".to_owned(),
        ),
    };
    let mut yaml = format!(
        "command: {command}\nlisten: [\"127.0.0.1:{listener}\"]\nstart_priority: normal\n\
         drain_timeout: 5s\n{extra}"
    );
    if let Some(handoff) = options.handoff {
        yaml += &format!("handoff: {handoff}\n");
    }
    let mut service = Service::start_file(binaries, setup.name(), options.keep, &yaml)?;
    let status = service
        .wait_active(control)
        .with_context(|| format!("setup {}", setup.name()))?;
    let server = status
        .generations
        .iter()
        .find(|g| Some(g.generation) == status.active_generation)
        .map(|g| g.pid)
        .with_context(|| format!("setup {}: the status names no active pid", setup.name()))?;
    Ok(Running {
        setup,
        service,
        address,
        server,
        supervisor: status.supervisor_pid,
    })
}

/// The time all threads of `pid` have spent on a CPU (user and kernel), from
/// `/proc/PID/task/*/schedstat`, in nanoseconds. Threads that ended are not counted: the
/// Go runtime and the supervisor keep theirs.
fn cpu_ns(pid: i32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&dir).with_context(|| format!("cannot read '{dir}'"))? {
        let path = task?.path().join("schedstat");
        // A thread that ended since the listing has nothing more to add.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("'{}' is not 'RUN_NS WAIT_NS SLICES'", path.display()))?;
    }
    Ok(total)
}

/// What one round measured.
struct Round {
    /// Requests that succeeded, per second.
    rate: f64,
    failed: u64,
    /// The server's CPU time per request that succeeded, in microseconds.
    server_us_per_request: f64,
    /// The supervisor's CPU time during the round, in microseconds.
    supervisor_us: f64,
    slowest: Duration,
}

/// One round of load against `r`.
fn round(
    rt: &tokio::runtime::Runtime,
    r: &Running,
    options: &Options,
    mode: ConnectionMode,
    length: Duration,
) -> Result<Round> {
    let address = &r.address;
    let mut config = LoadConfig::new(format!("http://{address}/").parse()?);
    config.concurrency = options.concurrency;
    config.mode = mode;
    config.duration = Some(length);
    config.max_requests = Some(MAX_REQUESTS);
    let (server, supervisor) = (cpu_ns(r.server)?, cpu_ns(r.supervisor)?);
    let report = rt
        .block_on(zd_load::load::run(config, StopSignal::new()))
        .with_context(|| format!("the load against {address} failed"))?;
    let server = cpu_ns(r.server)?.saturating_sub(server) as f64 / 1000.0;
    let supervisor = cpu_ns(r.supervisor)?.saturating_sub(supervisor) as f64 / 1000.0;
    let seconds = report.elapsed.as_secs_f64();
    let succeeded = report.succeeded();
    if seconds <= 0.0 || succeeded == 0 {
        bail!("a round against {address} got no answer");
    }
    Ok(Round {
        rate: succeeded as f64 / seconds,
        failed: report.failed(),
        server_us_per_request: server / succeeded as f64,
        supervisor_us: supervisor,
        slowest: report.latency_histogram(|_| true).max(),
    })
}

/// Builds the servers, starts the three setups, runs the rounds of each mode and prints
/// them; `Ok(true)` when no request failed.
pub fn run(binaries: &Binaries, options: &Options) -> Result<bool> {
    let go = crate::go::toolchain().map_err(anyhow::Error::msg)?;
    let build = tempfile::Builder::new().prefix("bindbench-go-").tempdir()?;
    let listen_and_serve = crate::go::build_listen_and_serve_server(&go, build.path())?;
    let listen_fds = crate::go::build_shutdown_server(&go, build.path())?;
    let programs = Programs {
        listen_and_serve: &listen_and_serve,
        listen_fds: &listen_fds,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut running = Vec::new();
    for setup in Setup::ALL {
        running.push(start(binaries, options, &programs, setup, &rt)?);
    }
    println!(
        "\nsetups, each its own `zdctl run` with one listener on 127.0.0.1 and \
         start_priority: normal; a Go net/http server (CGO_ENABLED=0) in each:"
    );
    for r in &running {
        println!("  {:<12} {}", r.setup.name(), r.setup.describe());
    }
    let mut clean = true;
    for &mode in &options.modes {
        clean &= run_mode(&rt, &running, options, mode)?;
    }
    for mut r in running {
        if !r.service.stop()? {
            eprintln!(
                "bindbench: the supervisor of {} did not stop on SIGTERM; its log:\n{}",
                r.setup.name(),
                r.service.log_text()
            );
        }
    }
    Ok(clean)
}

/// A request slower than this is reported: the server, or the whole machine, stalled.
const STALL: Duration = Duration::from_secs(1);

fn run_mode(
    rt: &tokio::runtime::Runtime,
    running: &[Running],
    options: &Options,
    mode: ConnectionMode,
) -> Result<bool> {
    let mode_name = match mode {
        ConnectionMode::KeepAlive => "keep-alive",
        ConnectionMode::Close => "a new connection per request",
    };
    println!(
        "\n== requests per second, {mode_name}, {} connections, {:?} rounds ==",
        options.concurrency, options.round
    );
    for r in running {
        round(rt, r, options, mode, WARM_UP.min(options.round))
            .with_context(|| format!("warm-up of {}", r.setup.name()))?;
    }
    let mut rounds: Vec<Vec<Round>> = running.iter().map(|_| Vec::new()).collect();
    print!("{:<30}", "round");
    for r in running {
        print!("{:>13}", r.setup.name());
    }
    println!("   order");
    for n in 0..options.rounds {
        let order: Vec<usize> = (0..running.len())
            .map(|i| (n + i) % running.len())
            .collect();
        for &i in &order {
            let r = &running[i];
            let result = round(rt, r, options, mode, options.round)
                .with_context(|| format!("round {} of {}", n + 1, r.setup.name()))?;
            if result.slowest > STALL {
                eprintln!(
                    "bindbench: round {} of {}: the slowest request took {:?}",
                    n + 1,
                    r.setup.name(),
                    result.slowest
                );
            }
            rounds[i].push(result);
        }
        print!("{:<30}", n + 1);
        for setup in &rounds {
            print!("{:>13.0}", setup.last().map_or(0.0, |r| r.rate));
        }
        let names: Vec<&str> = order.iter().map(|&i| running[i].setup.name()).collect();
        println!("   {}", names.join(", "));
    }
    let column = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .map(|setup| median(&setup.iter().map(f).collect::<Vec<_>>()))
            .collect()
    };
    let rates = column(&|r| r.rate);
    let line = |label: &str, values: &[f64], precision: usize| {
        print!("{label:<30}");
        for v in values {
            print!("{v:>13.precision$}");
        }
        println!();
    };
    line("median", &rates, 0);
    line(
        "server CPU µs/request, median",
        &column(&|r| r.server_us_per_request),
        2,
    );
    line(
        "supervisor CPU ms/round, max",
        &rounds
            .iter()
            .map(|setup| {
                setup
                    .iter()
                    .map(|r| r.supervisor_us / 1000.0)
                    .fold(0.0, f64::max)
            })
            .collect::<Vec<_>>(),
        2,
    );
    let failed: Vec<u64> = rounds
        .iter()
        .map(|setup| setup.iter().map(|r| r.failed).sum())
        .collect();
    line(
        "failed requests",
        &failed.iter().map(|&f| f as f64).collect::<Vec<_>>(),
        0,
    );
    let index = |s: Setup| running.iter().position(|r| r.setup == s);
    if let (Some(own), Some(fds), Some(intercepted)) = (
        index(Setup::OwnPort),
        index(Setup::ListenFds),
        index(Setup::Intercepted),
    ) {
        // Each round's own ratio compares setups measured seconds apart; their median
        // is less moved by what else the machine does than the ratio of the medians.
        let ratios = |a: usize, b: usize| -> (f64, f64) {
            let per_round: Vec<f64> = rounds[a]
                .iter()
                .zip(&rounds[b])
                .map(|(x, y)| x.rate / y.rate)
                .collect();
            (rates[a] / rates[b], median(&per_round))
        };
        println!("ratios                        of the medians   median of the rounds' ratios");
        let (headline, per_round) = ratios(intercepted, own);
        println!(
            "intercepted / own-port        {headline:>14.3}   {per_round:>12.3}   \
             (target >= {TARGET_RATIO}: {})",
            if headline >= TARGET_RATIO && per_round >= TARGET_RATIO {
                "met"
            } else {
                "not met"
            }
        );
        let (a, b) = ratios(intercepted, fds);
        println!(
            "intercepted / listen-fds      {a:>14.3}   {b:>12.3}   (the filter alone: same socket)"
        );
        let (a, b) = ratios(fds, own);
        println!(
            "listen-fds / own-port         {a:>14.3}   {b:>12.3}   (the listener against the program's own socket)"
        );
    }
    Ok(failed.iter().all(|&f| f == 0))
}
