//! The supervisor's state: generations, the active one, the running restart, counters.
//! Owned by the owner task ([`super::owner`]), the only code that reads or writes it.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
// Tokio's clock, so that the tests' paused time moves uptimes and windows.
use tokio::time::Instant;

use super::child::ChildProcess;
use super::output::OutputLog;
use crate::config::{HEALTHY_UPTIME, ServiceConfig};
use crate::handoff::intercept::InterceptCounts;
use crate::listen::steer::{Seat, Sockets};
use crate::proto::{
    ExitInfo, FailingInfo, GenerationInfo, GenerationState, RestartCounters, RestartReport,
    SocketInfo, unix_ms,
};
use crate::signal::Signal;

/// How many exited generations `status` keeps showing.
const KEEP_EXITED: usize = 5;

/// One generation's record.
#[derive(Debug)]
pub(super) struct Generation {
    pub generation: u64,
    pub pid: i32,
    pub state: GenerationState,
    pub started: SystemTime,
    pub started_at: Instant,
    pub exit: Option<ExitInfo>,
    /// Set to the exit status when the owner records the exit; restarts and drains wait
    /// on it.
    pub exited: watch::Sender<Option<ExitInfo>>,
    /// The running process; dropped once it has exited, so exited records hold no fd.
    pub child: Option<Arc<dyn ChildProcess>>,
    /// The generation's own stop signal and drain timeout: those of the config it was
    /// started with.
    pub stop_signal: Signal,
    pub drain_timeout: Duration,
    /// Becomes true once the main process is reaped and nothing it started is left.
    pub ended: watch::Receiver<bool>,
    /// Becomes true once nothing it started is left (its main process may be a zombie
    /// still): no process of it holds its sockets.
    pub released: watch::Receiver<bool>,
    /// The sockets it received.
    pub seat: Seat,
    /// With `intercept_binds`: what the interception of its binds answered. Kept with
    /// the record after the exit (a few counters), so `status` still shows them.
    pub intercept: Option<Arc<InterceptCounts>>,
    /// The last lines it printed, when they are kept (kept with the record too).
    pub output: Option<Arc<OutputLog>>,
}

impl Generation {
    pub fn info(&self) -> GenerationInfo {
        GenerationInfo {
            generation: self.generation,
            pid: self.pid,
            state: self.state,
            started_unix_ms: unix_ms(self.started),
            exit: self.exit,
            intercept: self.intercept.as_ref().map(|c| c.info()),
            output_lines: self.output.as_ref().map(|o| o.len() as u64),
            instances: Vec::new(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.state != GenerationState::Exited
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub config: ServiceConfig,
    pub generations: BTreeMap<u64, Generation>,
    pub active: Option<u64>,
    pub next_generation: u64,
    /// The restart that is running: its number.
    pub restart: Option<u64>,
    pub restart_seq: u64,
    pub counters: RestartCounters,
    pub last_restart: Option<RestartReport>,
    pub stopping: bool,
    /// Generations (number, main pid) that outlived their drain deadline during the stop
    /// and were killed: the stop was not clean.
    pub killed_at_stop: Vec<(u64, i32)>,
    /// Crashes in a row of short-lived active generations, for the respawn backoff.
    pub crash_streak: u32,
    pub pidfile: Option<PathBuf>,
    /// How the last active generation ended, while no new one has replaced it.
    pub lost: Option<ExitInfo>,
    /// Every listener's sockets, by seat, and the seat new connections go to.
    pub sockets: Sockets,
    /// When the recent failed starts happened, oldest first, for `restart.limit`.
    pub failed_starts: VecDeque<Instant>,
    /// Set once `restart.limit` is reached: nothing is respawned until a restart.
    pub failing: Option<Failing>,
    /// The supervisor's own program: what `reexec` runs and has done.
    pub me: Myself,
}

/// The supervisor's own program.
#[derive(Debug)]
pub(super) struct Myself {
    /// When the supervisor started (its first binary, before any reexec).
    pub started: SystemTime,
    /// The control socket's listening fd, which a reexec keeps open.
    pub control_fd: i32,
    /// The binary `reexec` executes unless told another: the one the supervisor was
    /// started from.
    pub binary: String,
    /// The arguments it was started with, given again to the next binary.
    pub args: Vec<std::ffi::OsString>,
    pub reexecs: u64,
    pub last_reexec: Option<crate::proto::ReexecInfo>,
    pub adopted: Option<crate::proto::AdoptedInfo>,
    /// A `reexec` is being checked: restarts wait.
    pub reexecing: bool,
    /// Where the state a new supervisor adopts after a crash of this one is kept, and
    /// what was written there last.
    pub state_file: Option<PathBuf>,
    pub written: Option<super::snapshot::Snapshot>,
}

impl Myself {
    /// This process, as started: its binary (the path it was executed from, which a
    /// package upgrade replaces) and its arguments.
    pub fn current() -> Myself {
        let binary = std::env::current_exe()
            .map(|p| {
                let text = p.to_string_lossy().into_owned();
                text.strip_suffix(" (deleted)")
                    .map(str::to_owned)
                    .unwrap_or(text)
            })
            .unwrap_or_else(|_| "zdctl".to_owned());
        Myself {
            binary,
            args: std::env::args_os().skip(1).collect(),
            ..Myself::default()
        }
    }

    /// The binary this process runs now.
    pub fn binary_now(&self) -> String {
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| self.binary.clone())
    }

    pub fn info(&self) -> crate::proto::SupervisorInfo {
        crate::proto::SupervisorInfo {
            version: crate::version::version(),
            binary: self.binary.clone(),
            reexecs: self.reexecs,
            last_reexec: self.last_reexec.clone(),
            adopted: self.adopted.clone(),
        }
    }
}

impl Default for Myself {
    fn default() -> Myself {
        Myself {
            started: SystemTime::now(),
            control_fd: -1,
            binary: String::new(),
            args: Vec::new(),
            reexecs: 0,
            last_reexec: None,
            adopted: None,
            reexecing: false,
            state_file: None,
            written: None,
        }
    }
}

/// A start that failed: what `status` says of it.
#[derive(Debug, Clone, Default)]
pub(super) struct FailedStart {
    pub generation: Option<u64>,
    pub pid: Option<i32>,
    pub exit: Option<ExitInfo>,
    pub reason: Option<String>,
    pub output: Option<Arc<OutputLog>>,
}

impl FailedStart {
    /// Generation `generation`'s end, as its record tells.
    pub fn of(g: &Generation) -> FailedStart {
        FailedStart {
            generation: Some(g.generation),
            pid: Some(g.pid),
            exit: g.exit,
            reason: None,
            output: g.output.clone(),
        }
    }
}

/// The service is failing (`restart.limit` reached).
#[derive(Debug, Clone)]
pub(super) struct Failing {
    pub since: SystemTime,
    /// The same moment on tokio's clock, for `restart.refuse_after`.
    pub began: Instant,
    /// Since when the listeners refuse new connections (`restart.refuse_after`).
    pub refusing_since: Option<SystemTime>,
    pub failed_starts: u32,
    pub window: Duration,
    /// The last start that failed.
    pub last: FailedStart,
}

impl Failing {
    pub fn info(&self) -> FailingInfo {
        FailingInfo {
            since_unix_ms: unix_ms(self.since),
            failed_starts: self.failed_starts,
            window_ms: self.window.as_millis() as u64,
            refusing_since_unix_ms: self.refusing_since.map(unix_ms),
            generation: self.last.generation,
            pid: self.last.pid,
            exit: self.last.exit,
            reason: self.last.reason.clone(),
            // Read now, not when the limit was reached: the generation's last lines
            // reach us through its pipe after its exit was seen.
            output: self
                .last
                .output
                .as_ref()
                .map(|o| o.lines())
                .unwrap_or_default(),
        }
    }
}

impl State {
    pub fn new(config: ServiceConfig, sockets: Sockets) -> Self {
        let pidfile = config.pidfile.clone();
        State {
            config,
            generations: BTreeMap::new(),
            active: None,
            next_generation: 1,
            restart: None,
            restart_seq: 0,
            counters: RestartCounters::default(),
            last_restart: None,
            stopping: false,
            killed_at_stop: Vec::new(),
            crash_streak: 0,
            pidfile,
            lost: None,
            sockets,
            failed_starts: VecDeque::new(),
            failing: None,
            me: Myself::default(),
        }
    }

    /// Counts a failed start at `now`, of a generation that lived `uptime`, against
    /// `restart.limit`; returns whether the limit is reached.
    pub fn count_failed_start(&mut self, uptime: Duration, now: Instant) -> bool {
        // A generation that stayed up a while was healthy: what failed before it is over.
        if uptime >= HEALTHY_UPTIME {
            self.failed_starts.clear();
        }
        self.failed_starts.push_back(now);
        let Some(limit) = self.config.restart.limit else {
            // Only the last one matters to nobody; keep the list from growing.
            self.failed_starts.pop_front();
            return false;
        };
        while self
            .failed_starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.window)
        {
            self.failed_starts.pop_front();
        }
        self.failed_starts.len() >= limit.starts as usize
    }

    /// Whether the starts of the service failed lately: its next generation's output is
    /// kept, for `status` to show if it fails too.
    pub fn starts_failing(&self) -> bool {
        !self.failed_starts.is_empty() || self.failing.is_some()
    }

    pub fn active_generation(&self) -> Option<&Generation> {
        self.active.and_then(|g| self.generations.get(&g))
    }

    /// Closes `seat` once no live generation uses it (never the steered-to one).
    pub fn release_seat(&mut self, seat: Seat) {
        if !self
            .generations
            .values()
            .any(|g| g.seat == seat && g.is_live())
        {
            self.sockets.retire(seat);
        }
    }

    /// Every open socket, newest seat first, with the live generations that hold it. A
    /// shared listener's seats hold duplicates of one socket: it is listed once, with every
    /// generation.
    pub fn socket_infos(&self) -> Vec<SocketInfo> {
        let target = self.sockets.steered_to();
        let mut infos: Vec<SocketInfo> = Vec::new();
        for (seat, listeners) in self
            .sockets
            .open_seats()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let mut generations: Vec<u64> = self
                .generations
                .values()
                .filter(|g| g.seat == seat && g.is_live())
                .map(|g| g.generation)
                .collect();
            for (i, l) in listeners.iter().enumerate() {
                let inode = l.inode();
                if let Some(seen) = infos.iter_mut().find(|s| s.inode == inode) {
                    seen.generations.append(&mut generations.clone());
                    seen.generations.sort_unstable_by(|a, b| b.cmp(a));
                    seen.steered_to |= seat == target;
                    continue;
                }
                generations.sort_unstable_by(|a, b| b.cmp(a));
                infos.push(SocketInfo {
                    listener: l.name().to_owned(),
                    address: l.local_display(),
                    inode,
                    fd: 3 + i as i32,
                    generations: generations.clone(),
                    steered_to: seat == target,
                    refusing: self.sockets.is_refused(inode),
                    queue: (!l.is_udp())
                        .then(|| crate::listen::steer::accept_queue(l).ok())
                        .flatten(),
                    queued_bytes: l
                        .is_udp()
                        .then(|| crate::listen::steer::datagram_queue(l).ok())
                        .flatten(),
                });
            }
        }
        infos
    }

    /// Live generations first (newest first), then the most recent exited ones.
    pub fn generation_infos(&self) -> Vec<GenerationInfo> {
        let mut live: Vec<GenerationInfo> = self
            .generations
            .values()
            .rev()
            .filter(|g| g.is_live())
            .map(Generation::info)
            .collect();
        live.extend(
            self.generations
                .values()
                .rev()
                .filter(|g| !g.is_live())
                .map(Generation::info),
        );
        live
    }

    /// Records that a generation's main process exited, tells whoever waits for it, and
    /// forgets the oldest exited records.
    pub fn mark_exited(&mut self, generation: u64, status: ExitInfo) {
        if let Some(g) = self.generations.get_mut(&generation) {
            g.state = GenerationState::Exited;
            g.exit = Some(status);
            if let Some(child) = g.child.take() {
                child.release();
            }
            g.exited.send_replace(Some(status));
        }
        let exited: Vec<u64> = self
            .generations
            .values()
            .filter(|g| !g.is_live())
            .map(|g| g.generation)
            .collect();
        if exited.len() > KEEP_EXITED {
            for g in &exited[..exited.len() - KEEP_EXITED] {
                self.generations.remove(g);
            }
        }
    }

    /// The delay before respawning after a crash of a generation that lived `uptime`.
    pub fn next_backoff(&mut self, uptime: Duration) -> Duration {
        // A generation that stayed up a while was healthy: start the backoff over.
        if uptime >= HEALTHY_UPTIME {
            self.crash_streak = 0;
        }
        let policy = &self.config.restart;
        let factor = 1u32
            .checked_shl(self.crash_streak.min(16))
            .unwrap_or(u32::MAX);
        self.crash_streak = self.crash_streak.saturating_add(1);
        policy
            .backoff
            .saturating_mul(factor)
            .min(policy.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_crash_in_a_row_and_resets_after_a_healthy_run() {
        let mut config = ServiceConfig::defaults_for("t", vec!["true".into()]);
        config.restart.backoff = Duration::from_millis(100);
        config.restart.backoff_max = Duration::from_millis(350);
        let mut s = State::new(config, Sockets::new(Vec::new()).expect("no sockets"));
        let short = Duration::from_millis(5);
        assert_eq!(s.next_backoff(short), Duration::from_millis(100));
        assert_eq!(s.next_backoff(short), Duration::from_millis(200));
        assert_eq!(s.next_backoff(short), Duration::from_millis(350));
        assert_eq!(
            s.next_backoff(Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }

    fn limited(starts: u32, window: Duration) -> State {
        let mut config = ServiceConfig::defaults_for("t", vec!["true".into()]);
        config.restart.limit = Some(crate::config::StartLimit { starts, window });
        State::new(config, Sockets::new(Vec::new()).expect("no sockets"))
    }

    #[test]
    fn the_limit_counts_failed_starts_within_a_sliding_window() {
        let mut s = limited(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let short = Duration::from_millis(5);
        assert!(!s.count_failed_start(short, at(0)));
        assert!(!s.count_failed_start(short, at(4)));
        // The first has left the window: two within it.
        assert!(!s.count_failed_start(short, at(11)));
        assert!(!s.count_failed_start(short, at(15)));
        // 11, 15 and 18 are within 10s.
        assert!(s.count_failed_start(short, at(18)));
    }

    #[test]
    fn a_generation_that_lived_long_enough_forgets_the_failed_starts_before_it() {
        let mut s = limited(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let short = Duration::from_millis(5);
        assert!(!s.count_failed_start(short, t0));
        assert!(!s.count_failed_start(short, t0));
        assert!(!s.count_failed_start(HEALTHY_UPTIME, t0));
        assert_eq!(s.failed_starts.len(), 1);
        assert!(!s.count_failed_start(short, t0));
        assert!(s.count_failed_start(short, t0));
    }

    #[test]
    fn without_a_limit_nothing_is_ever_reached_and_nothing_piles_up() {
        let mut s = limited(1, Duration::from_secs(60));
        s.config.restart.limit = None;
        for _ in 0..100 {
            assert!(!s.count_failed_start(Duration::ZERO, Instant::now()));
        }
        assert!(s.failed_starts.is_empty());
    }
}
