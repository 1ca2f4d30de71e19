//! One driver run: its clock, its deadline, its events and its report.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use super::DriverConfig;
use super::record;
use crate::proto::{Event, EventKind, RestartOutcome, RestartReport, unix_ms};

/// How often the drivers look at /proc, pidfiles and status files.
pub(super) const POLL: Duration = Duration::from_millis(20);

pub(super) struct Run<'a> {
    config: &'a DriverConfig,
    started: Instant,
    pub(super) deadline: Instant,
    on_event: Box<dyn FnMut(Event) + 'a>,
    /// The generation numbers, as far as the driver knows them.
    pub(super) old_generation: Option<u64>,
    pub(super) new_generation: Option<u64>,
    pub(super) new_pid: Option<i32>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        config: &'a DriverConfig,
        timeout: Duration,
        on_event: Box<dyn FnMut(Event) + 'a>,
    ) -> Run<'a> {
        let started = Instant::now();
        Run {
            config,
            started,
            deadline: started + timeout,
            on_event,
            old_generation: None,
            new_generation: None,
            new_pid: None,
        }
    }

    pub(super) fn emit(&mut self, kind: EventKind) {
        let elapsed = self.started.elapsed();
        (self.on_event)(Event {
            unix_ms: unix_ms(SystemTime::now()),
            restart: Some(1),
            elapsed_ms: Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
            elapsed_us: Some(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)),
            kind,
        });
    }

    pub(super) fn requested(&mut self) {
        self.emit(EventKind::RestartRequested);
    }

    pub(super) fn timed_out(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub(super) fn timeout(&self) -> Duration {
        self.deadline.saturating_duration_since(self.started)
    }

    /// Sets the old generation from the record of the last restart, when it names `pid`;
    /// the new generation is the next number.
    pub(super) fn numbers_from_record(&mut self, old_pid: i32) {
        let old = record::generation_of(&self.config.name, old_pid).unwrap_or(1);
        self.old_generation = Some(old);
        self.new_generation = Some(old + 1);
    }

    /// Like [`Run::numbers_from_record`] for a pool of workers, any of which the record
    /// may name.
    pub(super) fn numbers_from_pool(&mut self, pids: &BTreeSet<i32>) {
        let old = pids
            .iter()
            .filter_map(|pid| record::generation_of(&self.config.name, *pid))
            .max()
            .unwrap_or(1);
        self.old_generation = Some(old);
        self.new_generation = Some(old + 1);
    }

    /// A new generation's process appeared.
    pub(super) fn spawned(&mut self, pid: i32) {
        self.new_pid = Some(pid);
        let generation = self.new_generation.unwrap_or(0);
        self.emit(EventKind::Spawned { generation, pid });
    }

    pub(super) fn ready(&mut self, evidence: String) {
        let generation = self.new_generation.unwrap_or(0);
        self.emit(EventKind::Ready {
            generation,
            evidence,
        });
    }

    pub(super) fn promoted(&mut self, pid: i32) {
        let generation = self.new_generation.unwrap_or(0);
        self.emit(EventKind::Promoted { generation, pid });
    }

    /// The old generation's process `pid` is being stopped.
    pub(super) fn draining(&mut self, pid: i32, signal: &str) {
        let generation = self.old_generation.unwrap_or(0);
        self.stopping(generation, pid, signal);
    }

    /// A rollback stops the new generation's process `pid`.
    pub(super) fn stopping_new(&mut self, pid: i32, signal: &str) {
        let generation = self.new_generation.unwrap_or(0);
        self.stopping(generation, pid, signal);
    }

    fn stopping(&mut self, generation: u64, pid: i32, signal: &str) {
        let deadline_ms = u64::try_from(
            self.deadline
                .saturating_duration_since(Instant::now())
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        self.emit(EventKind::Draining {
            generation,
            pid,
            signal: signal.to_owned(),
            deadline_ms,
        });
    }

    /// The report; a completed restart is recorded so that `status` can number it.
    pub(super) fn finish(mut self, outcome: RestartOutcome) -> RestartReport {
        if outcome.is_success() {
            if let (Some(generation), Some(pid)) = (self.new_generation, self.new_pid) {
                record::write(&self.config.name, generation, pid);
            }
        }
        let report = RestartReport {
            restart: 1,
            outcome,
            old_generation: self.old_generation,
            new_generation: self.new_generation.filter(|_| self.new_pid.is_some()),
            new_pid: self.new_pid,
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        self.emit(EventKind::Finished {
            report: report.clone(),
        });
        report
    }
}

/// Waits one polling interval.
pub(super) async fn tick() {
    tokio::time::sleep(POLL).await;
}

pub(super) fn failed(reason: impl Into<String>) -> RestartOutcome {
    RestartOutcome::Failed {
        reason: reason.into(),
    }
}

pub(super) fn rolled_back(reason: impl Into<String>) -> RestartOutcome {
    RestartOutcome::RolledBack {
        reason: reason.into(),
    }
}
