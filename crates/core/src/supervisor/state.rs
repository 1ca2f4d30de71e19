//! The supervisor's state: generations, the active one, the running restart, counters.
//! Owned by the owner task ([`super::owner`]), the only code that reads or writes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::child::ChildProcess;
use crate::config::ServiceConfig;
use crate::handoff::intercept::InterceptCounts;
use crate::listen::steer::{Seat, Sockets};
use crate::proto::{
    ExitInfo, GenerationInfo, GenerationState, RestartCounters, RestartReport, SocketInfo, unix_ms,
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
        }
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
}
