//! The time one `bind(2)` takes, with and without `intercept_binds`.
//!
//! The service's command is this program as the binder (`bindbench --binder OUT LISTENER
//! OTHER COUNT`): COUNT rounds of three binds, each on a fresh TCP socket that is closed
//! right after, timed around the `bind` call alone. Then it times batches of `getppid(2)`,
//! a syscall that does next to nothing: what the seccomp filter adds to every syscall that
//! is not a bind. Writing the samples to OUT (through a temp file and a rename, so the
//! parent never reads half of it) is the binder's last act; it then waits for the
//! supervisor's stop signal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use socket2::{Domain, SockAddr, Socket, Type};

use super::{Options, free_port, quantile};
use crate::flipbench::service::{Binaries, Service, service_path};

/// How long the binder may take to write its samples.
const BINDER_DEADLINE: Duration = Duration::from_secs(60);

/// How long the binder waits for the stop signal after writing them, before it exits on
/// its own (the supervisor then does not respawn it: `restart: never`).
const BINDER_LINGER: Duration = Duration::from_secs(60);

/// Batches of `getppid` calls, and the calls in each. The fastest batch is the figure:
/// what else the machine does can only add to a batch's time, and the two binders run
/// seconds apart, under whatever load there is then.
const SYSCALL_BATCHES: usize = 50;
const SYSCALLS_PER_BATCH: u32 = 10_000;

/// What one bind asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The listener's address: intercepted, it gets the listener (ADDFD).
    Listener,
    /// Another free port on 127.0.0.1: intercepted, it continues.
    Other,
    /// Port 0: intercepted, it continues.
    Zero,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Listener, Kind::Other, Kind::Zero];

    fn name(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::Other => "other",
            Kind::Zero => "zero",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn describe(self, intercepted: bool) -> &'static str {
        match (self, intercepted) {
            (Kind::Listener, true) => "the listener's address (ADDFD)",
            (Kind::Listener, false) => "the listener's address",
            (Kind::Other, true) => "another port (continue)",
            (Kind::Other, false) => "another port",
            (Kind::Zero, true) => "port 0 (continue)",
            (Kind::Zero, false) => "port 0",
        }
    }
}

/// The hidden mode's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinderArgs {
    out: PathBuf,
    listener: SocketAddrV4,
    other: SocketAddrV4,
    count: usize,
}

impl BinderArgs {
    pub(super) fn parse(args: impl Iterator<Item = String>) -> Result<BinderArgs> {
        let args: Vec<String> = args.collect();
        let [out, listener, other, count] = args.as_slice() else {
            bail!("usage: bindbench --binder OUT LISTENER_ADDR OTHER_ADDR COUNT");
        };
        let address = |a: &str| -> Result<SocketAddrV4> {
            a.parse()
                .with_context(|| format!("--binder: '{a}' is not an IPv4 address and port"))
        };
        Ok(BinderArgs {
            out: PathBuf::from(out),
            listener: address(listener)?,
            other: address(other)?,
            count: count
                .parse()
                .with_context(|| format!("--binder: '{count}' is not a count"))?,
        })
    }
}

/// The binder: makes the binds, writes the samples (or the error) to the out file, and
/// waits to be stopped.
pub fn run_binder(args: &BinderArgs) -> Result<()> {
    let text = match measure(args) {
        Ok(samples) => samples,
        Err(e) => format!("error {e:#}\n"),
    };
    let partial = args.out.with_extension("partial");
    std::fs::write(&partial, text)
        .with_context(|| format!("cannot write '{}'", partial.display()))?;
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("cannot rename '{}'", partial.display()))?;
    // The stop signal (TERM, default action) ends this sleep.
    std::thread::sleep(BINDER_LINGER);
    Ok(())
}

/// One line per bind: kind, nanoseconds, outcome (`listener`, `bound` or the errno); then
/// one line per batch of `getppid` calls: `getppid NANOS`.
fn measure(args: &BinderArgs) -> Result<String> {
    let mut out = String::new();
    for _ in 0..args.count {
        for kind in Kind::ALL {
            let address = SockAddr::from(match kind {
                Kind::Listener => args.listener,
                Kind::Other => args.other,
                Kind::Zero => SocketAddrV4::new(*args.listener.ip(), 0),
            });
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)
                .context("cannot create a TCP socket")?;
            let started = Instant::now();
            let result = socket.bind(&address);
            let elapsed = started.elapsed();
            let outcome = match result {
                // A fresh socket never listens: one that does is the listener.
                Ok(()) if socket.is_listener().unwrap_or(false) => "listener".to_owned(),
                Ok(()) => "bound".to_owned(),
                Err(e) => format!("errno{}", e.raw_os_error().unwrap_or(0)),
            };
            // Closing the program's fd leaves the supervisor's listener open.
            drop(socket);
            writeln!(out, "{} {} {outcome}", kind.name(), elapsed.as_nanos())?;
        }
    }
    for _ in 0..SYSCALL_BATCHES {
        let started = Instant::now();
        for _ in 0..SYSCALLS_PER_BATCH {
            // getppid(2) each time: the C library does not cache it.
            std::hint::black_box(std::os::unix::process::parent_id());
        }
        writeln!(out, "getppid {}", started.elapsed().as_nanos())?;
    }
    Ok(out)
}

/// The binds of one kind, as the parent reads them.
#[derive(Default)]
struct Samples {
    nanos: Vec<u64>,
    outcomes: BTreeMap<String, usize>,
}

/// What the binder measured.
#[derive(Default)]
struct Measured {
    binds: BTreeMap<Kind, Samples>,
    /// Nanoseconds per batch of `getppid` calls.
    syscall_batches: Vec<u64>,
}

impl Measured {
    /// Nanoseconds per `getppid`, in the fastest batch.
    fn syscall_ns(&self) -> f64 {
        let fastest = self.syscall_batches.iter().copied().min().unwrap_or(0);
        fastest as f64 / f64::from(SYSCALLS_PER_BATCH)
    }
}

fn parse_samples(text: &str) -> Result<Measured> {
    if let Some(error) = text.strip_prefix("error ") {
        bail!("the binder failed: {}", error.trim());
    }
    let mut measured = Measured::default();
    for line in text.lines() {
        if let Some(nanos) = line.strip_prefix("getppid ") {
            measured.syscall_batches.push(
                nanos
                    .trim()
                    .parse()
                    .with_context(|| format!("'{nanos}' is not a count of nanoseconds"))?,
            );
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(nanos), Some(outcome)) = (
            fields.next().and_then(Kind::from_name),
            fields.next(),
            fields.next(),
        ) else {
            bail!("the binder wrote a line that is not 'KIND NANOS OUTCOME': '{line}'");
        };
        let entry = measured.binds.entry(kind).or_default();
        entry.nanos.push(
            nanos
                .parse()
                .with_context(|| format!("'{nanos}' is not a count of nanoseconds"))?,
        );
        *entry.outcomes.entry(outcome.to_owned()).or_default() += 1;
    }
    Ok(measured)
}

/// Runs the binder with and without interception and prints the figures; `Ok(true)` when
/// every intercepted bind of the listener's address got the listener.
pub fn run(binaries: &Binaries, options: &Options) -> Result<bool> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let dir = tempfile::Builder::new()
        .prefix("bindbench-binds-")
        .tempdir()?;
    println!(
        "\n== bind(2), {} of each kind, interleaved, each on a fresh socket (µs) ==",
        options.binds
    );
    println!(
        "{:<13}{:<33}{:>9}{:>9}{:>9}  outcome",
        "setup", "bind to", "p50", "p99", "max"
    );
    let mut all_got_it = true;
    let mut syscall_ns = Vec::new();
    for intercepted in [true, false] {
        let label = if intercepted { "intercepted" } else { "plain" };
        let measured = binder_run(binaries, options, &exe, dir.path(), intercepted)
            .with_context(|| format!("the binder, {label}"))?;
        syscall_ns.push(measured.syscall_ns());
        for kind in Kind::ALL {
            let Some(mut s) = measured
                .binds
                .get(&kind)
                .map(|s| (s.nanos.clone(), &s.outcomes))
            else {
                bail!("the binder wrote no '{}' bind", kind.name());
            };
            s.0.sort_unstable();
            let us = |q: f64| quantile(&s.0, q) as f64 / 1000.0;
            println!(
                "{label:<13}{:<33}{:>9.1}{:>9.1}{:>9.1}  {}",
                kind.describe(intercepted),
                us(0.5),
                us(0.99),
                us(1.0),
                outcomes(s.1)
            );
            if intercepted && kind == Kind::Listener {
                all_got_it &= s.1.get("listener") == Some(&options.binds);
            }
        }
    }
    if let [with, without] = syscall_ns[..] {
        println!(
            "any other syscall: getppid(2) takes {with:.1} ns intercepted, {without:.1} ns plain \
             ({:+.1} ns; fastest of {SYSCALL_BATCHES} batches of {SYSCALLS_PER_BATCH})",
            with - without
        );
    }
    if !all_got_it {
        println!("not every intercepted bind of the listener's address got the listener");
    }
    Ok(all_got_it)
}

/// `1000 got the listener`, `1000 bound`, `1000 EADDRINUSE`, joined by commas.
fn outcomes(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(outcome, n)| {
            let outcome = match outcome.as_str() {
                "listener" => "got the listener".to_owned(),
                "bound" => "bound".to_owned(),
                e if e == format!("errno{}", libc::EADDRINUSE) => "EADDRINUSE".to_owned(),
                e => e.replace("errno", "errno "),
            };
            format!("{n} {outcome}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One `zdctl run` whose command is the binder; returns its samples.
fn binder_run(
    binaries: &Binaries,
    options: &Options,
    exe: &Path,
    dir: &Path,
    intercepted: bool,
) -> Result<Measured> {
    let label = if intercepted { "intercepted" } else { "plain" };
    let listener = free_port()?;
    let other = loop {
        let port = free_port()?;
        if port != listener {
            break port;
        }
    };
    let out = dir.join(format!("binds-{label}"));
    let command: Vec<String> = [
        service_path(exe)?,
        "--binder",
        service_path(&out)?,
        &format!("127.0.0.1:{listener}"),
        &format!("127.0.0.1:{other}"),
        &options.binds.to_string(),
    ]
    .iter()
    .map(serde_json::to_string)
    .collect::<Result<_, _>>()?;
    // `alive:1s`: the binder never accepts; `never`: a binder that fails is not respawned.
    let mut yaml = format!(
        "command: [{}]\nlisten: [\"127.0.0.1:{listener}\"]\nready: \"alive:1s\"\n\
         restart: never\nstart_priority: normal\n",
        command.join(", ")
    );
    if intercepted {
        yaml += "intercept_binds: true\n";
    }
    if let Some(handoff) = options.handoff {
        yaml += &format!("handoff: {handoff}\n");
    }
    let mut service =
        Service::start_file(binaries, &format!("binds-{label}"), options.keep, &yaml)?;
    let started = Instant::now();
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&out) {
            break text;
        }
        if let Some(exit) = service.try_wait()? {
            bail!("zdctl run exited with {exit}:\n{}", service.log_text());
        }
        if started.elapsed() > BINDER_DEADLINE {
            bail!(
                "the binder wrote no samples within {BINDER_DEADLINE:?}; the supervisor's log:\n{}",
                service.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !service.stop()? {
        eprintln!(
            "bindbench: the supervisor did not stop on SIGTERM; its log:\n{}",
            service.log_text()
        );
    }
    parse_samples(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binder_arguments_and_samples_parse() {
        let args = ["/tmp/o", "127.0.0.1:8080", "127.0.0.1:9090", "10"].map(String::from);
        let parsed = BinderArgs::parse(args.into_iter()).unwrap();
        assert_eq!(parsed.listener.port(), 8080);
        assert_eq!(parsed.count, 10);
        assert!(BinderArgs::parse(["x".to_owned()].into_iter()).is_err());

        let measured = parse_samples(
            "listener 1500 listener\nzero 900 bound\nzero 800 bound\ngetppid 700000\ngetppid 600000\n",
        )
        .unwrap();
        assert_eq!(measured.binds[&Kind::Listener].nanos, vec![1500]);
        assert_eq!(measured.binds[&Kind::Zero].outcomes["bound"], 2);
        assert_eq!(measured.syscall_ns(), 60.0);
        assert!(parse_samples("error no socket\n").is_err());
        assert!(parse_samples("listener x bound\n").is_err());
        let refused = BTreeMap::from([(format!("errno{}", libc::EADDRINUSE), 3)]);
        assert_eq!(outcomes(&refused), "3 EADDRINUSE");
    }
}
