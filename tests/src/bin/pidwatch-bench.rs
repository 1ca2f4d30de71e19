//! pidwatch-bench: prints pidwatch's exit-detection latency (the watched process exits →
//! pidwatch exits) next to a 100 ms polling loop's, pidwatch's resident memory, and the
//! wake-ups of both while the service idles.
//!
//! ```text
//! pidwatch-bench [--pidwatch PATH] [--runs N] [--idle SECONDS]
//! ```
//!
//! PATH defaults to `pidwatch` next to this program; measure a release build of pidwatch
//! (`cargo build --release -p pidwatch`). The watched service is `sh -c 'echo $$ > PIDFILE;
//! exec sleep 3600'`, killed with SIGKILL; its exit instant is taken from a pidfd of it,
//! pidwatch's from a pidfd of pidwatch, both in one poll loop.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

const POLL_INTERVAL: Duration = Duration::from_millis(100);

struct Options {
    pidwatch: PathBuf,
    runs: usize,
    idle: Duration,
}

fn parse_options() -> Result<Options> {
    let exe = std::env::current_exe()?;
    let mut options = Options {
        pidwatch: exe.with_file_name("pidwatch"),
        runs: 200,
        idle: Duration::from_secs(10),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pidwatch" => options.pidwatch = value.into(),
            "--runs" => options.runs = value.parse()?,
            "--idle" => options.idle = Duration::from_secs(value.parse()?),
            _ => bail!("unknown flag '{flag}'"),
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    // Internal mode: the baseline watcher, started by this program itself.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--poll-loop") {
        return poll_loop(Path::new(&args[2]), &args[3..]);
    }
    let options = parse_options()?;
    if !options.pidwatch.is_file() {
        bail!(
            "no pidwatch at '{}': build it or pass --pidwatch",
            options.pidwatch.display()
        );
    }
    let dir = tempfile_dir()?;
    let pidfile = dir.join("svc.pid");
    let service = format!("echo $$ > '{}'; exec sleep 3600", pidfile.display());
    let pidwatch_cmd = || {
        let mut cmd = Command::new(&options.pidwatch);
        cmd.arg("--pidfile").arg(&pidfile);
        cmd.args(["--", "sh", "-c", &service]);
        cmd
    };
    let poll_cmd = || {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.arg("--poll-loop")
            .arg(&pidfile)
            .args(["sh", "-c", &service]);
        cmd
    };

    println!("pidwatch-bench: {}", options.pidwatch.display());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load: Vec<&str> = load.split(' ').take(3).collect();
    println!("load average {} on {cpus} CPUs", load.join(" "));

    let ours = latencies(options.runs, &pidfile, pidwatch_cmd)?;
    let baseline = latencies(options.runs.min(100), &pidfile, poll_cmd)?;
    println!("\nexit-detection latency (watched process exits -> watcher exits)");
    println!(
        "{:<24}{:>6}{:>12}{:>12}{:>12}",
        "watcher", "runs", "p50", "p99", "max"
    );
    report("pidwatch", &ours);
    report("100 ms polling loop", &baseline);

    println!("\nwhile the service idles for {} s", options.idle.as_secs());
    let (mem, sleep, ours) = idle(&options, &pidfile, pidwatch_cmd())?;
    let (_, _, baseline) = idle(&options, &pidfile, poll_cmd())?;
    println!(
        "pidwatch memory: RSS {:.2} MiB (peak {:.2} MiB), of which anonymous {:.2} MiB; \
         PSS {:.2} MiB",
        mib(mem.rss),
        mib(mem.peak),
        mib(mem.anon),
        mib(mem.pss)
    );
    println!(
        "for scale, the idle service (coreutils sleep): RSS {:.2} MiB, anonymous {:.2} MiB",
        mib(sleep.rss),
        mib(sleep.anon)
    );
    println!("wake-ups: pidwatch {ours}, 100 ms polling loop {baseline}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pidwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(name: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank =
        |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{name:<24}{:>6}{:>12}{:>12}{:>12}",
        sorted.len(),
        ms(rank(0.50)),
        ms(rank(0.99)),
        ms(sorted[sorted.len() - 1])
    );
}

/// Starts a watcher and waits until it follows the service; returns the service's pid.
fn start(mut cmd: Command, pidfile: &Path) -> Result<(Child, Pid)> {
    let _ = std::fs::remove_file(pidfile);
    let mut child = cmd.stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().context("stderr pipe")?;
    let mut lines = BufReader::new(stderr).lines();
    let pid = loop {
        let line = lines
            .next()
            .context("the watcher ended before following")??;
        if let Some(pid) = line.strip_prefix("pidwatch: following pid ") {
            break Pid::from_raw(pid.trim().parse()?);
        }
    };
    // Keep draining stderr so that the watcher never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, pid))
}

fn pidfd(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) })
}

fn latencies(runs: usize, pidfile: &Path, cmd: impl Fn() -> Command) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    let mut seed = u64::from(std::process::id());
    for _ in 0..runs {
        let (mut watcher, service) = start(cmd(), pidfile)?;
        let watcher_fd = pidfd(Pid::from_raw(i32::try_from(watcher.id())?))?;
        let service_fd = pidfd(service)?;
        // A random phase, so that the exit does not line up with the polling loop's ticks.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let phase = (seed >> 11) as f64 / (1u64 << 53) as f64;
        std::thread::sleep(POLL_INTERVAL.mul_f64(phase));
        kill(service, Signal::SIGKILL)?;
        let mut fds = [PollFd::new(service_fd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::NONE)?;
        let exited = Instant::now();
        let mut fds = [PollFd::new(watcher_fd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::NONE)?;
        samples.push(exited.elapsed());
        watcher.wait()?;
    }
    Ok(samples)
}

/// A `Name:  value kB` field of a /proc status-like file.
fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Context switches of `pid`: every time it slept and woke, plus preemptions.
fn wakeups(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(field(&status, "voluntary_ctxt_switches:") + field(&status, "nonvoluntary_ctxt_switches:"))
}

/// Memory of a watcher, in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss: u64,
    peak: u64,
    anon: u64,
    pss: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(Memory {
        rss: field(&status, "VmRSS:"),
        peak: field(&status, "VmHWM:"),
        anon: field(&status, "RssAnon:"),
        pss: field(&rollup, "Pss:"),
    })
}

/// Wake-ups of the watcher over the idle window, and its memory and the service's at the end
/// of it.
fn idle(options: &Options, pidfile: &Path, cmd: Command) -> Result<(Memory, Memory, u64)> {
    let (mut watcher, service) = start(cmd, pidfile)?;
    // Let the watcher finish the round that printed "following" and go back to sleep.
    std::thread::sleep(Duration::from_millis(500));
    let before = wakeups(watcher.id())?;
    std::thread::sleep(options.idle);
    let after = wakeups(watcher.id())?;
    let watcher_memory = memory(watcher.id())?;
    let service_memory = memory(u32::try_from(service.as_raw())?)?;
    kill(service, Signal::SIGKILL)?;
    watcher.wait()?;
    Ok((watcher_memory, service_memory, after - before))
}

/// The baseline: what a polling pid-file watcher does. Starts the command, then every
/// 100 ms reaps, re-reads the pid file and checks that the pid is alive.
fn poll_loop(pidfile: &Path, command: &[String]) -> Result<()> {
    let (program, args) = command.split_first().context("no command")?;
    let _child = Command::new(program).args(args).spawn()?;
    let mut announced = None;
    loop {
        std::thread::sleep(POLL_INTERVAL);
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .map(Pid::from_raw)
        else {
            continue;
        };
        if announced != Some(pid) {
            eprintln!("pidwatch: following pid {pid}");
            announced = Some(pid);
        }
        if kill(pid, None).is_err() {
            return Ok(());
        }
    }
}
