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
    ExitInfo, FailingInfo, GenerationInfo, GenerationState, InstanceInfo, RestartCounters,
    RestartReport, SocketInfo, unix_ms,
};
use crate::signal::Signal;

/// How many exited generations `status` keeps showing.
const KEEP_EXITED: usize = 5;

/// An instance's key: its generation's number, then its own (`ZD_INSTANCE`).
pub(super) type Key = (u64, u32);

/// The record of one process of a generation: instance `instance` of `of` (a generation
/// runs `instances` of them; most run one, instance 0). The owner keeps one record per
/// instance; a generation is the records that share its number.
#[derive(Debug)]
pub(super) struct Instance {
    pub generation: u64,
    pub instance: u32,
    /// How many instances its generation runs.
    pub of: u32,
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
    /// Whether its readiness checks passed.
    pub ready: bool,
    /// How many times this instance was started again alone after it died.
    pub respawns: u32,
    /// Its crashes in a row, for its own respawn backoff (see [`backoff`]).
    pub crash_streak: u32,
    /// Whether a drain took it in hand (it is signalled once).
    pub drain_begun: bool,
}

impl Instance {
    pub fn key(&self) -> Key {
        (self.generation, self.instance)
    }

    pub fn instance_info(&self) -> InstanceInfo {
        InstanceInfo {
            instance: self.instance,
            pid: self.pid,
            state: self.state,
            started_unix_ms: unix_ms(self.started),
            ready: self.ready,
            respawns: self.respawns,
            exit: self.exit,
            output_lines: self.output.as_ref().map(|o| o.len() as u64),
        }
    }

    pub fn is_live(&self) -> bool {
        self.state != GenerationState::Exited
    }

    /// Whether it takes connections now: live, ready, neither asked to stop nor standing
    /// by during a bake window.
    pub fn serves(&self) -> bool {
        self.ready
            && matches!(
                self.state,
                GenerationState::Active | GenerationState::Starting
            )
    }
}

/// A generation as `status` shows it, from its instances' records (at least one). Its pid
/// and times are its first live instance's (instance 0's when none lives); its state is
/// the liveliest of theirs.
fn generation_info(instances: &[&Instance]) -> GenerationInfo {
    let first = instances
        .iter()
        .find(|i| i.is_live())
        .or(instances.first())
        .copied()
        .expect("a generation has an instance");
    let state = [
        GenerationState::Active,
        GenerationState::Standby,
        GenerationState::Starting,
        GenerationState::Draining,
    ]
    .into_iter()
    .find(|s| instances.iter().any(|i| i.state == *s))
    .unwrap_or(GenerationState::Exited);
    GenerationInfo {
        generation: first.generation,
        pid: first.pid,
        state,
        started_unix_ms: unix_ms(first.started),
        exit: (state == GenerationState::Exited)
            .then_some(first.exit)
            .flatten(),
        intercept: first.intercept.as_ref().map(|c| c.info()),
        output_lines: first.output.as_ref().map(|o| o.len() as u64),
        instances: if first.of > 1 || instances.len() > 1 {
            instances.iter().map(|i| i.instance_info()).collect()
        } else {
            Vec::new()
        },
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub config: ServiceConfig,
    /// Every instance's record, by generation then instance.
    pub instances: BTreeMap<Key, Instance>,
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
    /// The running restart's `bake` window, while it runs.
    pub bake: Option<Baking>,
    /// The clients of `zdctl revert`, answered with the restart's report when it ends.
    pub revert_waiters: Vec<(u64, crate::proto::Replies)>,
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

/// A restart's `bake` window: the new generation is the service, the old one stands by.
#[derive(Debug)]
pub(super) struct Baking {
    pub info: crate::proto::BakeInfo,
    /// Set by `zdctl revert`; the restart watches it.
    pub revert: watch::Sender<bool>,
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
    /// The thread that writes the state file.
    pub writer: Option<super::adopt::StateWriter>,
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
            writer: None,
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
    /// An instance's end, as its record tells.
    pub fn of(g: &Instance) -> FailedStart {
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
            instances: BTreeMap::new(),
            active: None,
            next_generation: 1,
            restart: None,
            restart_seq: 0,
            counters: RestartCounters::default(),
            last_restart: None,
            stopping: false,
            killed_at_stop: Vec::new(),
            crash_streak: 0,
            bake: None,
            revert_waiters: Vec::new(),
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

    /// The active generation, as its first live instance (its instance 0 when none
    /// lives).
    pub fn active_generation(&self) -> Option<&Instance> {
        self.active.and_then(|g| self.first_of(g))
    }

    /// Generation `generation`'s first live instance, else its first record.
    pub fn first_of(&self, generation: u64) -> Option<&Instance> {
        self.live_of(generation)
            .next()
            .or_else(|| self.of_generation(generation).next())
    }

    /// Generation `generation`'s instance records, by instance number.
    pub fn of_generation(&self, generation: u64) -> impl Iterator<Item = &Instance> {
        self.instances
            .range((generation, 0)..=(generation, u32::MAX))
            .map(|(_, i)| i)
    }

    /// The live instances of generation `generation`.
    pub fn live_of(&self, generation: u64) -> impl Iterator<Item = &Instance> {
        self.of_generation(generation).filter(|i| i.is_live())
    }

    /// The numbers of the generations with a live instance, oldest first.
    pub fn live_generations(&self) -> Vec<u64> {
        let mut live: Vec<u64> = self
            .instances
            .values()
            .filter(|i| i.is_live())
            .map(|i| i.generation)
            .collect();
        live.dedup();
        live
    }

    /// The instances that take connections now (see [`Instance::serves`]).
    pub fn capacity(&self) -> u32 {
        self.instances.values().filter(|i| i.serves()).count() as u32
    }

    /// Closes `seat` once no live instance uses it (never the steered-to one).
    pub fn release_seat(&mut self, seat: Seat) {
        if !self
            .instances
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
        let mut infos: Vec<SocketInfo> = Vec::new();
        for (seat, listeners) in self
            .sockets
            .open_seats()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let targeted = self.sockets.is_target(seat);
            let mut generations: Vec<u64> = self
                .instances
                .values()
                .filter(|g| g.seat == seat && g.is_live())
                .map(|g| g.generation)
                .collect();
            generations.dedup();
            for (i, l) in listeners.iter().enumerate() {
                let inode = l.inode();
                if let Some(seen) = infos.iter_mut().find(|s| s.inode == inode) {
                    seen.generations.append(&mut generations.clone());
                    seen.generations.sort_unstable_by(|a, b| b.cmp(a));
                    seen.generations.dedup();
                    seen.steered_to |= targeted;
                    continue;
                }
                generations.sort_unstable_by(|a, b| b.cmp(a));
                infos.push(SocketInfo {
                    listener: l.name().to_owned(),
                    address: l.local_display(),
                    inode,
                    fd: 3 + i as i32,
                    generations: generations.clone(),
                    steered_to: targeted,
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
        let mut numbers: Vec<u64> = self.instances.keys().map(|(g, _)| *g).collect();
        numbers.dedup();
        let infos: Vec<GenerationInfo> = numbers
            .into_iter()
            .rev()
            .map(|g| generation_info(&self.of_generation(g).collect::<Vec<_>>()))
            .collect();
        let (mut live, exited): (Vec<_>, Vec<_>) = infos
            .into_iter()
            .partition(|g| g.state != GenerationState::Exited);
        live.extend(exited);
        live
    }

    /// Records that an instance's main process exited, tells whoever waits for it, and
    /// forgets the oldest generations that have no live instance left.
    pub fn mark_exited(&mut self, key: Key, status: ExitInfo) {
        if let Some(g) = self.instances.get_mut(&key) {
            g.state = GenerationState::Exited;
            g.exit = Some(status);
            if let Some(child) = g.child.take() {
                child.release();
            }
            g.exited.send_replace(Some(status));
        }
        let live = self.live_generations();
        let mut exited: Vec<u64> = self
            .instances
            .keys()
            .map(|(g, _)| *g)
            .filter(|g| !live.contains(g))
            .collect();
        exited.dedup();
        if exited.len() > KEEP_EXITED {
            let forget = &exited[..exited.len() - KEEP_EXITED];
            self.instances.retain(|(g, _), _| !forget.contains(g));
        }
    }

    /// The delay before respawning after a crash of a generation that lived `uptime`.
    pub fn next_backoff(&mut self, uptime: Duration) -> Duration {
        backoff(&self.config.restart, &mut self.crash_streak, uptime)
    }
}

/// The delay before a respawn after a crash of a process that lived `uptime`, with
/// `streak` crashes in a row before it (counted up).
pub(super) fn backoff(
    policy: &crate::config::RestartPolicy,
    streak: &mut u32,
    uptime: Duration,
) -> Duration {
    // A process that stayed up a while was healthy: start the backoff over.
    if uptime >= HEALTHY_UPTIME {
        *streak = 0;
    }
    let factor = 1u32.checked_shl((*streak).min(16)).unwrap_or(u32::MAX);
    *streak = streak.saturating_add(1);
    policy
        .backoff
        .saturating_mul(factor)
        .min(policy.backoff_max)
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
