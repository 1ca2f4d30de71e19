//! One mode of the benchmark, start to finish: supervisor up, idle cost, load, flips,
//! figures, supervisor down.

use std::time::Duration;

use anyhow::{Context, Result};
use zd_load::load::ConnectionMode;

use std::path::Path;

use super::flips::{self, Plan};
use super::load::BackgroundLoad;
use super::procfs;
use super::report::ModeResult;
use super::service::{Binaries, Service};
use super::{Options, Server};

/// The hard cap on one mode's flipping.
const MODE_CAP: Duration = Duration::from_secs(600);

/// The load's own bound: the cap plus room for the last flip. The load is stopped as soon
/// as the flipping ends; this only matters if that never happens.
const LOAD_BOUND: Duration = Duration::from_secs(660);

/// A pause between the first generation's readiness and the idle window, so that the
/// window measures the steady idle state and not the tail of the start (the reply to
/// the status request that saw the service ready, the log line of the start).
const SETTLE: Duration = Duration::from_millis(500);

pub fn mode_name(mode: ConnectionMode) -> &'static str {
    match mode {
        ConnectionMode::KeepAlive => "keepalive",
        ConnectionMode::Close => "close",
    }
}

/// What one mode runs: the program, its handoff and the load's connections.
pub struct Run<'a> {
    pub program: &'a Path,
    pub server: Server,
    pub handoff: Option<&'static str>,
    pub mode: ConnectionMode,
    pub instances: u32,
}

impl Run<'_> {
    /// `close`, or `close, go, handoff: steered` when those were chosen.
    pub fn label(&self) -> String {
        let mut label = mode_name(self.mode).to_owned();
        if self.server == Server::Go {
            label += ", go";
        }
        if let Some(handoff) = self.handoff {
            label += &format!(", handoff: {handoff}");
        }
        if self.instances > 1 {
            label += &format!(", instances: {}", self.instances);
        }
        label
    }
}

pub fn run_mode(binaries: &Binaries, options: &Options, run: &Run<'_>) -> Result<ModeResult> {
    let mode = run.mode;
    let name = run.label();
    let dir_label: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // The control client gets its own single-threaded runtime on this thread: the load's
    // tasks live elsewhere and cannot delay the reading of a restart's result.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let extra = if run.instances > 1 {
        format!("instances: {}\n", run.instances)
    } else {
        String::new()
    };
    let mut service = Service::start_with(
        binaries,
        run.program,
        run.handoff,
        &extra,
        &dir_label,
        options.keep,
    )?;
    let status = service.wait_active(&control)?;
    let pid = status.supervisor_pid;
    let address = status
        .listeners
        .first()
        .context("the supervisor reports no listener")?
        .address
        .clone();
    eprintln!("flipbench: mode {name}: supervisor pid {pid} on {address}");

    std::thread::sleep(SETTLE);
    let before = procfs::thread_switches(pid)?;
    std::thread::sleep(options.idle);
    let idle_wakeups = procfs::thread_switches(pid)?.wakeups_since(&before);
    let idle_memory = procfs::memory(pid)?;

    let load = BackgroundLoad::start(
        &address,
        options.concurrency,
        mode,
        options.retry_idle_close,
        LOAD_BOUND,
    )?;
    let plan = Plan {
        flips: options.flips,
        min_requests: options.min_requests,
        cap: MODE_CAP,
    };
    let capacity = (run.instances > 1).then(|| CapacitySampler::start(service.socket()));
    let flips = control.block_on(flips::flip(service.socket(), plan, &load.live));
    let capacity = capacity.map(CapacitySampler::finish);
    // Before the load stops: the memory the supervisor holds while it works.
    let after_memory = procfs::memory(pid)?;
    let supervisor_threads = procfs::thread_switches(pid)?.threads();
    let report = load.finish()?;
    let stopped_cleanly = service.stop()?;
    if !stopped_cleanly {
        eprintln!(
            "flipbench: the supervisor did not stop on SIGTERM; its log:\n{}",
            service.log_text()
        );
    }
    drop(service);

    let windows: Vec<(Duration, Duration)> = flips
        .iter()
        .map(|f| (report.offset_of(f.started), report.offset_of(f.ended)))
        .collect();
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let completed = flips.iter().filter(|f| f.outcome.is_ok()).count();
    Ok(ModeResult {
        mode: name,
        retried: report.retried(),
        requests: report.total(),
        failed_requests: report.failed(),
        failures_by_kind: report.failures_by_kind(),
        requests_per_second: report.requests_per_second(),
        restarts_completed: completed,
        restarts_failed: flips.len() - completed,
        flip_us: flips.iter().map(|f| us(f.elapsed())).collect(),
        to_spawned_us: flips.iter().filter_map(|f| f.phases.to_spawned).collect(),
        spawned_to_ready_us: flips
            .iter()
            .filter_map(|f| f.phases.spawned_to_ready)
            .collect(),
        ready_to_draining_us: flips
            .iter()
            .filter_map(|f| f.phases.ready_to_draining)
            .collect(),
        draining_to_exited_us: flips
            .iter()
            .filter_map(|f| f.phases.draining_to_exited)
            .collect(),
        drain_kills: flips.iter().filter(|f| f.phases.killed).count(),
        latency: report.summary_in_windows(&windows),
        idle_memory,
        after_memory,
        idle: options.idle,
        idle_wakeups,
        supervisor_threads,
        stopped_cleanly,
        instances: run.instances,
        capacity,
    })
}

/// Reads the supervisor's `capacity` (instances serving) every 10 ms on a thread of its
/// own, while the flips run.
struct CapacitySampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Capacity>,
}

/// The fewest instances serving that the samples saw, and how many samples there were.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub min: u32,
    pub samples: usize,
}

impl CapacitySampler {
    fn start(socket: &Path) -> CapacitySampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let socket = socket.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let mut capacity = Capacity {
                min: u32::MAX,
                samples: 0,
            };
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(serving) = rt.block_on(capacity_now(&socket)) {
                    capacity.min = capacity.min.min(serving);
                    capacity.samples += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            capacity
        });
        CapacitySampler { stop, thread }
    }

    fn finish(self) -> Capacity {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or(Capacity { min: 0, samples: 0 })
    }
}

async fn capacity_now(socket: &Path) -> Option<u32> {
    use zd_core::proto::{Client, Op, Reply, ReplyResult};
    let mut client = Client::connect(socket).await.ok()?;
    match client.call(Op::Status, |_| {}).await.ok()? {
        Reply::Result { result, .. } => match *result {
            ReplyResult::Status(s) => s.capacity,
            _ => None,
        },
        _ => None,
    }
}
