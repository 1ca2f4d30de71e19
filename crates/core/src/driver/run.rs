//! One driver run: its clock, its deadline, its events and its report, under the
//! service's restart lock, recorded in the driver record.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use super::lock::RestartLock;
use super::record::{Pending, Record};
use crate::proto::{Event, EventKind, RestartOutcome, RestartReport, unix_ms};

/// How often the drivers look at /proc, pidfiles and status files.
pub(super) const POLL: Duration = Duration::from_millis(20);

pub(super) struct Run<'a> {
    started: Instant,
    pub(super) deadline: Instant,
    on_event: Box<dyn FnMut(Event) + 'a>,
    lock: RestartLock,
    record: Record,
    /// This restart's number in the record's life, from 1.
    number: u64,
    /// The generation numbers, as far as the driver knows them.
    pub(super) old_generation: Option<u64>,
    /// A process of the old generation, for the record when no new one takes over.
    pub(super) old_pid: Option<i32>,
    pub(super) new_generation: Option<u64>,
    pub(super) new_pid: Option<i32>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        timeout: Duration,
        lock: RestartLock,
        on_event: Box<dyn FnMut(Event) + 'a>,
    ) -> Run<'a> {
        let started = Instant::now();
        // Counted and marked in progress before anything is signalled: a zdctl killed
        // mid-run leaves the mark, and the next holder of the lock counts it as failed.
        let mut record = lock.record();
        record.restarts.requested += 1;
        let number = record.restarts.requested;
        record.in_progress = Some(number);
        lock.write(&record);
        Run {
            started,
            deadline: started + timeout,
            on_event,
            lock,
            record,
            number,
            old_generation: None,
            old_pid: None,
            new_generation: None,
            new_pid: None,
        }
    }

    pub(super) fn emit(&mut self, kind: EventKind) {
        let elapsed = self.started.elapsed();
        (self.on_event)(Event {
            unix_ms: unix_ms(SystemTime::now()),
            restart: Some(self.number),
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

    /// Numbers the old generation, whose process is `old_pid`, from the record (the next
    /// number when the record does not name it: it was started outside zdctl); the new
    /// generation is the number after it.
    pub(super) fn numbers_from_record(&mut self, old_pid: i32) {
        self.numbers_from_pool(&BTreeSet::from([old_pid]));
    }

    /// Like [`Run::numbers_from_record`] for a pool of workers, any of which the record
    /// may name.
    pub(super) fn numbers_from_pool(&mut self, pids: &BTreeSet<i32>) {
        let pids: Vec<i32> = pids.iter().copied().collect();
        let old = self.record.number(&pids);
        self.old_generation = Some(old);
        self.old_pid = pids
            .iter()
            .copied()
            .find(|pid| self.record.names(*pid))
            .or(pids.first().copied());
        self.new_generation = Some(old + 1);
    }

    /// A new generation's process appeared.
    pub(super) fn spawned(&mut self, pid: i32) {
        self.new_pid = Some(pid);
        let generation = self.new_generation.unwrap_or(0);
        self.note_pending(pid, false);
        self.emit(EventKind::Spawned { generation, pid });
    }

    /// Records the new generation's process for `status` while the restart runs.
    fn note_pending(&mut self, pid: i32, promoted: bool) {
        let Some(generation) = self.new_generation else {
            return;
        };
        let pending = match self.record.pending.take() {
            Some(pending) if pending.generation == generation => Pending {
                promoted,
                ..pending
            },
            _ => match crate::proc::start_time_ticks(pid) {
                Ok(start_ticks) => Pending {
                    generation,
                    pid,
                    start_ticks,
                    promoted,
                },
                Err(_) => return,
            },
        };
        self.record.pending = Some(pending);
        self.lock.write(&self.record);
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
        self.note_pending(pid, true);
        self.emit(EventKind::Promoted { generation, pid });
    }

    /// The old generation's process `pid` is being stopped.
    pub(super) fn draining(&mut self, pid: i32, signal: &str) {
        let generation = self.old_generation.unwrap_or(0);
        self.stopping(generation, pid, signal);
    }

    /// A rollback stops the new generation's process `pid`: said as the signal it was
    /// sent, never as `draining`, which names the old generation giving way to the new.
    pub(super) fn stopping_new(&mut self, pid: i32, signal: &str) {
        let generation = self.new_generation.unwrap_or(0);
        self.emit(EventKind::Signalled {
            generation,
            pid,
            signal: signal.to_owned(),
        });
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

    /// The report, recorded with the generation that serves now (the new one after a
    /// completed restart, else the old one), so that `status` can number and count it.
    pub(super) fn finish(mut self, outcome: RestartOutcome) -> RestartReport {
        let serving = if outcome.is_success() {
            (self.new_generation, self.new_pid)
        } else {
            (self.old_generation, self.old_pid)
        };
        if let (Some(generation), Some(pid)) = serving {
            self.record.set(generation, pid);
        }
        let report = RestartReport {
            restart: self.number,
            outcome,
            old_generation: self.old_generation,
            new_generation: self.new_generation.filter(|_| self.new_pid.is_some()),
            new_pid: self.new_pid,
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            output: Vec::new(),
            new_pids: Vec::new(),
            steps: None,
            bake_ms: None,
        };
        self.record.finished(&report);
        self.lock.write(&self.record);
        self.emit(EventKind::Finished {
            report: report.clone(),
        });
        report
    }

    /// The driver could not even try (an error before any signal): the restart stays
    /// counted as requested, with no outcome.
    pub(super) fn abandon(mut self) {
        self.record.in_progress = None;
        self.record.pending = None;
        self.lock.write(&self.record);
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
