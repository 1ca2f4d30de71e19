//! The supervisor's state: generations, the active one, the running restart, counters. Held
//! under one mutex that is never kept across an await.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::config::ServiceConfig;
use crate::proto::{
    ExitInfo, GenerationInfo, GenerationState, RestartCounters, RestartReport, unix_ms,
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
    /// Becomes `Some` when the main process has been reaped.
    pub exited: watch::Receiver<Option<ExitInfo>>,
    /// A pidfd, so that signals can never reach a recycled pid; dropped once the process is
    /// reaped, so exited records hold no fd.
    pub pidfd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// The generation's own stop signal and drain timeout: those of the config it was
    /// started with.
    pub stop_signal: Signal,
    pub drain_timeout: Duration,
    /// Keeps the NOTIFY_SOCKET alive (and removes it on drop).
    pub notify: Option<crate::ready::NotifySocket>,
    /// The generation's cgroup, where cgroups are used.
    pub cgroup: Option<std::sync::Arc<crate::contain::GenerationCgroup>>,
    /// Becomes true once the main process is reaped and nothing it started is left.
    pub ended: watch::Receiver<bool>,
}

impl Generation {
    pub fn info(&self) -> GenerationInfo {
        GenerationInfo {
            generation: self.generation,
            pid: self.pid,
            state: self.state,
            started_unix_ms: unix_ms(self.started),
            exit: self.exit,
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
    /// Crashes in a row of short-lived active generations, for the respawn backoff.
    pub crash_streak: u32,
    pub pidfile: Option<PathBuf>,
    /// How the last active generation ended, while no new one has replaced it.
    pub lost: Option<ExitInfo>,
}

impl State {
    pub fn new(config: ServiceConfig) -> Self {
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
            crash_streak: 0,
            pidfile,
            lost: None,
        }
    }

    pub fn active_generation(&self) -> Option<&Generation> {
        self.active.and_then(|g| self.generations.get(&g))
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

    /// Records that a generation's main process exited; forgets the oldest exited records.
    pub fn mark_exited(&mut self, generation: u64, status: ExitInfo) {
        if let Some(g) = self.generations.get_mut(&generation) {
            g.state = GenerationState::Exited;
            g.exit = Some(status);
            g.notify = None;
            g.pidfd = None;
            g.cgroup = None;
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
        if uptime >= Duration::from_secs(10) {
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
        let mut s = State::new(config);
        let short = Duration::from_millis(5);
        assert_eq!(s.next_backoff(short), Duration::from_millis(100));
        assert_eq!(s.next_backoff(short), Duration::from_millis(200));
        assert_eq!(s.next_backoff(short), Duration::from_millis(350));
        assert_eq!(
            s.next_backoff(Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }
}
