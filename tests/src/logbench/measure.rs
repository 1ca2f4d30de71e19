//! One run: a fresh supervisor with the printer as its generation, the go, and the
//! readings; and the table of all of them.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::printer::{PrintOptions, monotonic_ns, stamp_of};
use super::{Options, median};
use crate::flipbench::procfs;
use crate::flipbench::report::percentiles;
use crate::flipbench::service::{Binaries, Service};

/// What one throughput run measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The printer's first write to the end of its last (what the program felt).
    print: Duration,
    /// The printer's first write to the moment the supervisor's output file held every line.
    delivered: Duration,
    /// The supervisor's utime + stime over the run.
    cpu: Duration,
    rss_kib: u64,
    peak_kib: u64,
}

/// One row of the table: the runs of one line size and one `log.lines`.
struct Row {
    size: usize,
    log_lines: u32,
    samples: Vec<Sample>,
}

/// Runs everything and prints the table; `Ok(true)` when every run measured.
pub fn run(options: &Options) -> Result<bool> {
    let binaries = Binaries::next_to_this_program()?;
    let printer = std::env::current_exe().context("cannot find this program's own path")?;
    let work = tempfile::Builder::new().prefix("logbench-").tempdir()?;
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average: Vec<&str> = load_average.split_whitespace().take(3).collect();
    println!(
        "logbench: {} lines per run, {} per write(2), {} runs per row (medians); supervisor \
         stdout: a regular file",
        options.lines, options.batch, options.repetitions
    );
    println!(
        "{} CPUs, load average {} before the run",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average.join(" ")
    );

    let mut rows = Vec::new();
    for &size in &options.sizes {
        let mut by_mode: Vec<Row> = options
            .log_lines
            .iter()
            .map(|&log_lines| Row {
                size,
                log_lines,
                samples: Vec::new(),
            })
            .collect();
        // Modes alternate within each repetition, so a burst of load on the machine
        // falls on both.
        for rep in 0..options.repetitions {
            for row in &mut by_mode {
                let label = format!("{}-{}-{rep}", row.size, row.log_lines);
                let run = Run::new(&binaries, &printer, work.path(), options, &label);
                let sample = run
                    .throughput(row.log_lines, row.size)
                    .with_context(|| format!("run {label}"))?;
                eprintln!(
                    "logbench: {label}: print {:.1} ms, delivered {:.1} ms, CPU {:.0} ms, RSS {} KiB",
                    ms(sample.print),
                    ms(sample.delivered),
                    ms(sample.cpu),
                    sample.rss_kib
                );
                row.samples.push(sample);
            }
        }
        rows.extend(by_mode);
    }
    print_throughput(options, &rows);

    if options.latency_lines > 0 {
        println!(
            "\nlatency of one line: {} lines of {} bytes, {:?} apart; printer's write -> \
             logbench sees it in the supervisor's output file (inotify)",
            options.latency_lines, options.sizes[0], options.spacing
        );
        println!(
            "{:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
            "log.lines", "p50", "p90", "p99", "max"
        );
        for &log_lines in &options.log_lines {
            let label = format!("latency-{log_lines}");
            let run = Run::new(&binaries, &printer, work.path(), options, &label);
            let mut us = run
                .latency(log_lines, options.sizes[0])
                .with_context(|| format!("run {label}"))?;
            us.sort_unstable();
            let p = percentiles(&us);
            let p90 = us
                .get((us.len() * 9).div_ceil(10).saturating_sub(1))
                .copied()
                .unwrap_or(0);
            println!(
                "{log_lines:>9}  {:>6} µs  {:>6} µs  {:>6} µs  {:>6} µs",
                p.p50, p90, p.p99, p.max
            );
        }
    }
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average: Vec<&str> = load_average.split_whitespace().take(3).collect();
    println!("\nload average {} after the run", load_average.join(" "));
    Ok(true)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_throughput(options: &Options, rows: &[Row]) {
    println!(
        "\n{:>5}  {:>9}  {:>11}  {:>11}  {:>10}  {:>12}  {:>16}",
        "size", "log.lines", "print", "all in file", "lines/s", "CPU s/M lines", "RSS after (peak)"
    );
    for row in rows {
        let of = |f: fn(&Sample) -> f64| median(&row.samples.iter().map(f).collect::<Vec<_>>());
        let delivered = of(|s| s.delivered.as_secs_f64());
        let cpu_per_million = of(|s| s.cpu.as_secs_f64()) / options.lines as f64 * 1e6;
        println!(
            "{:>3} B  {:>9}  {:>8.1} ms  {:>8.1} ms  {:>10.0}  {:>12.2}  {:>6.1} ({:.1}) MiB",
            row.size,
            row.log_lines,
            of(|s| ms(s.print)),
            delivered * 1000.0,
            options.lines as f64 / delivered,
            cpu_per_million,
            of(|s| s.rss_kib as f64) / 1024.0,
            of(|s| s.peak_kib as f64) / 1024.0,
        );
    }
}

/// One supervisor with the printer as its generation.
struct Run<'a> {
    binaries: &'a Binaries,
    printer: &'a Path,
    options: &'a Options,
    label: &'a str,
    go: PathBuf,
    marks: PathBuf,
}

impl<'a> Run<'a> {
    fn new(
        binaries: &'a Binaries,
        printer: &'a Path,
        work: &Path,
        options: &'a Options,
        label: &'a str,
    ) -> Run<'a> {
        Run {
            binaries,
            printer,
            options,
            label,
            go: work.join(format!("go-{label}")),
            marks: work.join(format!("marks-{label}")),
        }
    }

    /// Starts the supervisor with a printer that prints `lines` lines of `size` bytes,
    /// spaced out or not; returns once the printer waits for the go.
    fn start(
        &self,
        log_lines: u32,
        lines: usize,
        size: usize,
        spacing: Option<Duration>,
    ) -> Result<(Service, File)> {
        nix::unistd::mkfifo(&self.go, nix::sys::stat::Mode::S_IRWXU)
            .with_context(|| format!("cannot make the FIFO '{}'", self.go.display()))?;
        let print = PrintOptions {
            lines,
            size,
            batch: self.options.batch,
            spacing,
            go: self.go.clone(),
            marks: self.marks.clone(),
        };
        let mut command = vec![self.printer.display().to_string()];
        command.extend(print.to_args());
        // No listener: the readiness check is `alive:1s`, which reads nothing while the
        // printer prints. `start_priority: normal`, so that the printer is not at the idle
        // priority when the go comes; `restart: never`, so that a printer that died is not
        // started again (the run then times out and says so).
        let yaml = format!(
            "command: {}\nstart_priority: normal\nrestart: never\nlog:\n  lines: {log_lines}\n",
            serde_json::to_string(&command)?
        );
        let mut service =
            Service::start_file_split(self.binaries, self.label, self.options.keep, &yaml)?;
        let go = self.open_go(&mut service)?;
        Ok((service, go))
    }

    /// Opens the FIFO to write, which succeeds once the printer has opened it to read.
    fn open_go(&self, service: &mut Service) -> Result<File> {
        let started = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.go)
            {
                Ok(file) => return Ok(file),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => return Err(e).context("cannot open the FIFO"),
            }
            if let Some(exit) = service.try_wait()? {
                bail!("zdctl run exited with {exit}:\n{}", service.log_text());
            }
            if started.elapsed() > self.options.timeout {
                bail!("the printer did not start:\n{}", service.log_text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn throughput(&self, log_lines: u32, size: usize) -> Result<Sample> {
        let lines = self.options.lines;
        let (mut service, mut go) = self.start(log_lines, lines, size, None)?;
        let pid = service.pid().context("the supervisor is gone")?;
        let expected = (lines * size) as u64;
        let cpu_before = cpu_time(pid)?;
        let started = Instant::now();
        go.write_all(b"g")?;
        drop(go);
        let delivered_at = loop {
            let len = std::fs::metadata(service.stdout()).map_or(0, |m| m.len());
            if len >= expected {
                break monotonic_ns();
            }
            self.check(&mut service, started, len, expected)?;
            std::thread::sleep(Duration::from_millis(1));
        };
        let cpu_after = cpu_time(pid)?;
        let memory = procfs::memory(pid)?;
        let (start, end) = loop {
            if let Some(marks) = read_marks(&self.marks) {
                break marks;
            }
            self.check(&mut service, started, expected, expected)?;
            std::thread::sleep(Duration::from_millis(1));
        };
        service.stop()?;
        Ok(Sample {
            print: Duration::from_nanos(end.saturating_sub(start)),
            delivered: Duration::from_nanos(delivered_at.saturating_sub(start)),
            cpu: cpu_after.saturating_sub(cpu_before),
            rss_kib: memory.rss_kib,
            peak_kib: memory.peak_kib,
        })
    }

    /// The latency of each spaced-out line, in microseconds.
    fn latency(&self, log_lines: u32, size: usize) -> Result<Vec<u64>> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let lines = self.options.latency_lines;
        let (mut service, mut go) =
            self.start(log_lines, lines, size, Some(self.options.spacing))?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        inotify.add_watch(service.stdout(), AddWatchFlags::IN_MODIFY)?;
        let mut output = File::open(service.stdout())?;
        output.seek(SeekFrom::End(0))?;
        let mut pending = Vec::new();
        let mut latencies = Vec::with_capacity(lines);
        let started = Instant::now();
        go.write_all(b"g")?;
        drop(go);
        while latencies.len() < lines {
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&inotify),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            let now = monotonic_ns();
            let _ = inotify.read_events();
            output.read_to_end(&mut pending)?;
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let stamp = stamp_of(&line[..end]).context("a line without its stamp")?;
                latencies.push(now.saturating_sub(stamp) / 1000);
            }
            let seen = (latencies.len() * size) as u64;
            self.check(&mut service, started, seen, (lines * size) as u64)?;
        }
        service.stop()?;
        Ok(latencies)
    }

    /// Fails when the supervisor exited or the run took too long.
    fn check(
        &self,
        service: &mut Service,
        started: Instant,
        seen: u64,
        expected: u64,
    ) -> Result<()> {
        if let Some(exit) = service.try_wait()? {
            bail!("zdctl run exited with {exit}:\n{}", service.log_text());
        }
        if started.elapsed() > self.options.timeout {
            bail!(
                "not done after {:?}: {seen} of {expected} bytes in the output file; the \
                 supervisor's log:\n{}",
                self.options.timeout,
                service.log_text()
            );
        }
        Ok(())
    }
}

/// The printer's `START_NS END_NS`, once written.
fn read_marks(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// utime + stime of every thread of `pid`, from `/proc/PID/stat`.
fn cpu_time(pid: i32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read '{path}'"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("no utime/stime in '{path}'"))?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = after.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_add_utime_and_stime_after_an_odd_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 4 0 1";
        assert_eq!(cpu_ticks(stat), Some(287));
        assert!(cpu_time(std::process::id() as i32).is_ok());
    }

    #[test]
    fn marks_are_read_only_when_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("marks");
        assert_eq!(read_marks(&path), None);
        std::fs::write(&path, "12 ").expect("write");
        assert_eq!(read_marks(&path), None);
        std::fs::write(&path, "12 30\n").expect("write");
        assert_eq!(read_marks(&path), Some((12, 30)));
    }
}
