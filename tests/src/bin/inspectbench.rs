//! inspectbench: what one inspector snapshot costs with 1k, 10k and 100k
//! established loopback connections, on the netlink path and on the /proc
//! path. Prints figures; asserts nothing.
//!
//! ```text
//! inspectbench [--connections 1000,10000,100000] [--snapshots N] [--budget SECONDS]
//!              [--sources netlink,netlink-full,procfs]
//! ```
//!
//! `netlink` is the inspector as `zdctl top` uses it: a snapshot carries over
//! the connections an earlier one read while nothing signals a change, so
//! with idle connections the warm snapshots read only the listeners.
//! `netlink-full` reads the connections at every snapshot (connection reuse
//! set to zero): what a snapshot costs when they changed. `reads` counts the
//! warm snapshots that read the connections.
//!
//! For each count a server (this program with `--serve`) listens on
//! 127.0.0.1 and starts prefork workers (`--worker`) that get the listener
//! as their stdin, accept up to 15,000 connections each and hold them.
//! Client processes (`--client`) hold the connecting ends, each bound to
//! its own source address 127.0.0.2, .3, … so the ephemeral ports suffice.
//! No process needs more than 20k fds, a common hard limit. The snapshot is
//! `snapshot_native` of a status naming the server as generation 1 (its
//! tree is the server and its workers) and the listener. Each series first
//! takes one cold snapshot (the inspector reads every fd table), then N
//! warm ones (default 100, fewer if the series exceeds its time budget),
//! and prints the median and p99 wall time of the warm ones, and their mean
//! CPU time (user + system, which includes the kernel's work for us: the
//! figure that does not depend on what else the machine runs). `off` counts
//! warm snapshots whose connection count was not the number held: both
//! paths resume their walk of the kernel's socket hash at a position after
//! each read, so sockets closing meanwhile (here: time-wait ends of the
//! previous count expiring) can shift it; /proc/net/tcp counts positions
//! over the whole table, netlink only within one hash bucket.
//! Build it in release: `cargo run --release -p zd-tests --bin inspectbench`.

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Socket, Type};
use zd_core::inspect::{Inspector, SocketSource};
use zd_core::proto::{
    GenerationInfo, GenerationState, ListenerInfo, RestartCounters, Status, unix_ms,
};

/// Connections per worker and per client process: under a 20k fd limit,
/// and under the 28k ephemeral ports of one source address.
const PER_PROCESS: usize = 15_000;
/// How long establishing one count's connections may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(180);

/// One way of taking snapshots.
#[derive(Clone, Copy)]
struct Series {
    source: SocketSource,
    /// Read the connections at every snapshot.
    full: bool,
}

impl Series {
    fn name(self) -> &'static str {
        match (self.source, self.full) {
            (SocketSource::Netlink, true) => "netlink-full",
            (source, _) => source.as_str(),
        }
    }
}

struct Options {
    counts: Vec<usize>,
    snapshots: usize,
    budget: Duration,
    series: Vec<Series>,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut options = Options {
        counts: vec![1_000, 10_000, 100_000],
        snapshots: 100,
        budget: Duration::from_secs(60),
        series: vec![
            Series {
                source: SocketSource::Netlink,
                full: false,
            },
            Series {
                source: SocketSource::Netlink,
                full: true,
            },
            Series {
                source: SocketSource::Procfs,
                full: false,
            },
        ],
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connections" => {
                options.counts = value()?
                    .split(',')
                    .map(|n| n.trim().parse().context("a connection count"))
                    .collect::<Result<_>>()?;
            }
            "--snapshots" => options.snapshots = value()?.parse()?,
            "--budget" => options.budget = Duration::from_secs(value()?.parse()?),
            "--sources" => {
                options.series = value()?
                    .split(',')
                    .map(|name| {
                        let (source, full) = match name {
                            "netlink" => (SocketSource::Netlink, false),
                            "netlink-full" => (SocketSource::Netlink, true),
                            "procfs" => (SocketSource::Procfs, false),
                            other => bail!("unknown source '{other}'"),
                        };
                        Ok(Series { source, full })
                    })
                    .collect::<Result<_>>()?;
            }
            other => bail!("unknown argument '{other}'"),
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let number = |args: &mut dyn Iterator<Item = String>| -> Result<usize> {
        Ok(args.next().context("a count")?.parse()?)
    };
    match args.peek().map(String::as_str) {
        Some("--serve") => {
            args.next();
            return serve(number(&mut args)?);
        }
        Some("--worker") => {
            args.next();
            return work(number(&mut args)?);
        }
        Some("--client") => {
            args.next();
            let port: u16 = args.next().context("port")?.parse()?;
            let source: Ipv4Addr = args.next().context("source")?.parse()?;
            return connect_clients(port, source, number(&mut args)?);
        }
        _ => {}
    }
    let options = parse_options(args)?;
    println!(
        "inspectbench: {} warm snapshots per series (at most {} s each)",
        options.snapshots,
        options.budget.as_secs()
    );
    println!(
        "{:>8}  {:<12}  {:>9}  {:>9}  {:>9}  {:>9}  {:>5}  {:>5}  {:>5}  {:>10}",
        "conns",
        "source",
        "cold ms",
        "median ms",
        "p99 ms",
        "cpu ms",
        "n",
        "off",
        "reads",
        "json bytes"
    );
    for &count in &options.counts {
        run_count(count, &options)?;
    }
    Ok(())
}

/// A child process, killed and reaped however the run ends.
struct Process(Child);

impl Process {
    fn spawn(command: &mut Command) -> Result<Process> {
        Ok(Process(
            command
                .stdout(Stdio::piped())
                .spawn()
                .context("start a bench process")?,
        ))
    }

    fn lines(&mut self) -> Result<Lines<BufReader<ChildStdout>>> {
        Ok(BufReader::new(self.0.stdout.take().context("stdout")?).lines())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> Result<String> {
    lines
        .next()
        .with_context(|| format!("no {what} line"))?
        .with_context(|| format!("reading the {what} line"))
}

/// The server: a listener, prefork workers that accept and hold
/// `count` connections between them; `PORT INODE` once listening, `ready`
/// once every connection is accepted; exits when stdin closes.
fn serve(count: usize) -> Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    socket.listen(4096)?;
    let listener: TcpListener = socket.into();
    let pid = i32::try_from(std::process::id())?;
    let inode = zd_core::proc::socket_fds(pid)?
        .into_iter()
        .find(|(fd, _)| *fd == listener.as_raw_fd())
        .map(|(_, inode)| inode)
        .context("the listener's inode")?;
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    let mut left = count;
    while left > 0 {
        let quota = left.min(PER_PROCESS);
        left -= quota;
        // The worker gets the listener as its stdin, the way inetd did.
        let listener_fd = listener.as_fd().try_clone_to_owned()?;
        workers.push(Process::spawn(
            Command::new(&exe)
                .args(["--worker", &quota.to_string()])
                .stdin(Stdio::from(listener_fd)),
        )?);
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{} {inode}", listener.local_addr()?.port())?;
    stdout.flush()?;
    for worker in &mut workers {
        let mut lines = worker.lines()?;
        if expect_line(&mut lines, "worker ready")? != "ready" {
            bail!("a worker failed");
        }
    }
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    Ok(())
}

/// A worker: accepts `quota` connections on its stdin, says `ready`, and
/// holds them until the server kills it (or dies).
fn work(quota: usize) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let parent = nix::unistd::getppid();
    let listener = TcpListener::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut held = Vec::with_capacity(quota);
    while held.len() < quota {
        held.push(listener.accept().context("accept")?.0);
    }
    println!("ready");
    std::io::stdout().flush()?;
    // Bounded: an hour, or until the server is gone.
    for _ in 0..3600 {
        if nix::unistd::getppid() != parent {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

/// A client process: `count` connections from `source`, `ready`, then
/// holds them until stdin closes.
fn connect_clients(port: u16, source: Ipv4Addr, count: usize) -> Result<()> {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    for index in 0..count {
        if started.elapsed() > CONNECT_DEADLINE {
            bail!("only {index} of {count} connections after {CONNECT_DEADLINE:?}");
        }
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddrV4::new(source, 0).into())?;
        socket
            .connect(&target.into())
            .with_context(|| format!("connection {index} from {source}"))?;
        held.push(socket);
    }
    println!("ready");
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    Ok(())
}

fn run_count(count: usize, options: &Options) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut server = Process::spawn(
        Command::new(&exe)
            .args(["--serve", &count.to_string()])
            .stdin(Stdio::piped()),
    )?;
    let mut server_lines = server.lines()?;
    let listening = expect_line(&mut server_lines, "listening")?;
    let (port, inode) = listening.split_once(' ').context("PORT INODE")?;
    let (port, inode): (u16, u64) = (port.parse()?, inode.parse()?);
    let mut clients = Vec::new();
    let mut left = count;
    while left > 0 {
        let quota = left.min(PER_PROCESS);
        left -= quota;
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(clients.len())?);
        clients.push(Process::spawn(
            Command::new(&exe)
                .args(["--client", &port.to_string(), &source.to_string()])
                .arg(quota.to_string())
                .stdin(Stdio::piped()),
        )?);
    }
    for client in &mut clients {
        let mut lines = client.lines()?;
        if expect_line(&mut lines, "client ready")? != "ready" {
            bail!("a client failed");
        }
    }
    if expect_line(&mut server_lines, "server ready")? != "ready" {
        bail!("the server did not accept every connection");
    }
    let server_pid = i32::try_from(server.0.id())?;
    let started = unix_ms(std::time::SystemTime::now());
    let status = Status {
        bake: None,
        capacity: None,
        instances: None,
        service: "bench".to_owned(),
        supervisor_pid: server_pid,
        started_unix_ms: started,
        config_path: None,
        active_generation: Some(1),
        restart_in_progress: None,
        generations: vec![GenerationInfo {
            instances: Vec::new(),
            generation: 1,
            pid: server_pid,
            state: GenerationState::Active,
            started_unix_ms: started,
            exit: None,
            intercept: None,
            output_lines: None,
        }],
        listeners: vec![ListenerInfo {
            name: "http".to_owned(),
            address: format!("127.0.0.1:{port}"),
            inode,
            fd: 0,
        }],
        sockets: Vec::new(),
        restarts: RestartCounters::default(),
        last_restart: None,
        containment: None,
        intercept_binds: false,
        failing: None,
        supervisor: None,
        log_lines: None,
    };
    for &kind in &options.series {
        series(count, &status, kind, options)?;
    }
    // The server closes first, so the time-wait ends are on its side and
    // do not use up client ports for the next count.
    drop(server.0.stdin.take());
    let _ = server.0.wait();
    drop(clients);
    Ok(())
}

fn series(count: usize, status: &Status, kind: Series, options: &Options) -> Result<()> {
    let source = kind.source;
    let mut inspector = Inspector::new(source);
    if kind.full {
        inspector.set_connection_reuse(Duration::ZERO);
    }
    let cold = Instant::now();
    let first = inspector.snapshot_native(status)?;
    let cold = cold.elapsed();
    if first.source != source.as_str() {
        bail!("asked for {} but got {}", source.as_str(), first.source);
    }
    let json = serde_json::to_vec(&first)?.len();
    let mut times = Vec::with_capacity(options.snapshots);
    let mut miscounted = 0usize;
    let mut reads = 0usize;
    let mut last_read = first.connections_read_unix_ms;
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    while times.len() < options.snapshots && started.elapsed() < options.budget {
        let at = Instant::now();
        let snapshot = inspector.snapshot_native(status)?;
        times.push(at.elapsed());
        let seen: usize = snapshot
            .generations
            .iter()
            .map(|g| g.connection_count)
            .sum();
        if seen != count {
            miscounted += 1;
        }
        if snapshot.connections_read_unix_ms != last_read {
            reads += 1;
            last_read = snapshot.connections_read_unix_ms;
        }
    }
    let cpu = (cpu_time()? - cpu_before).as_secs_f64() * 1000.0 / times.len().max(1) as f64;
    times.sort_unstable();
    let at = |quantile: f64| {
        let index = ((quantile * times.len() as f64).ceil() as usize).saturating_sub(1);
        times.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{count:>8}  {:<12}  {:>9.2}  {:>9.2}  {:>9.2}  {cpu:>9.2}  {:>5}  {miscounted:>5}  {reads:>5}  {json:>10}",
        kind.name(),
        cold.as_secs_f64() * 1000.0,
        at(0.5),
        at(0.99),
        times.len(),
    );
    Ok(())
}

/// User plus system CPU time of this process so far. The kernel's work for
/// a netlink dump or a /proc/net read runs in our syscalls, so it counts
/// here; unlike wall time it does not grow when other work shares the CPU.
fn cpu_time() -> Result<Duration> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}
