//! `verify --bake`: every restart of the run is reverted during its `bake` window, and
//! verify checks that the old generation serves again and that the load lost nothing.
//!
//! # How it works
//!
//! The restarts themselves are `zd_load::verify`'s, as without `--bake`. Beside them a
//! [`Reverter`] task follows the supervisor's events (`watch`): when a `baking` event says
//! a window opened, it sends `revert` on a connection of its own, whose answer is the
//! restart's report once the old generation is the only one left. When `zd_load` reports
//! a flip over, the reverter judges it: reverted during bake (the report's reason), and
//! the generation active before the run, with the same pid, active again. A restart
//! during which no window opened is a problem of that flip, said plainly: the service has
//! no `bake:`, or its restart skipped it (`--no-bake`). [`apply`] then writes the verdicts
//! into the report, so that a flip reverted as asked counts as completed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use zd_core::config::{self, ServiceFile};
use zd_core::proto::{
    Client, EventKind, GenerationInfo, Op, Reply, ReplyResult, RestartOutcome, Status,
};
use zd_core::service::{Runner, Service};
use zd_load::verify::{FlipResult, VerifyReport};

use crate::control;
use crate::exit::ExitError;

/// Bound on the answer to `revert`: the new generation's drain comes first.
const REVERT_DEADLINE: Duration = Duration::from_secs(120);

/// Bound on one status call.
const STATUS_DEADLINE: Duration = Duration::from_secs(10);

/// What a reverted restart's reason starts with (`supervisor::restart`).
const REVERTED: &str = "reverted during bake";

/// The `bake` object of `--json`: how the restarts of a `--bake` run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BakeSummary {
    pub restarts: u32,
    /// Restarts reverted during their bake window with the old generation serving again.
    pub reverted: u32,
    /// The generation that served before the run, and after every revert.
    pub generation: u64,
    pub pid: i32,
}

/// Refuses `--bake` for a service whose restarts cannot have a bake window (exit 2), or
/// that is not running (exit 3).
pub async fn check(service: &Service) -> anyhow::Result<()> {
    if let Some(driver) = service.driver() {
        return Err(ExitError::usage(format!(
            "--bake needs a service that 'zdctl run' supervises; '{}' is run by {driver}, \
             which has no bake window",
            service.name()
        )));
    }
    let Some(file) = service.file() else {
        // Not running, or no such service, says more than any advice about its file.
        service.status().await.map_err(control::service_error)?;
        return Err(ExitError::usage(format!(
            "--bake needs a bake window, and '{}' has no service file to give it one; write \
             one with 'bake: 30s' and run the service from it",
            service.name()
        )));
    };
    match config::load_any(file) {
        Ok(ServiceFile::Native(config)) if config.bake.is_some() => Ok(()),
        Ok(ServiceFile::BrokenNative(e)) => Err(ExitError::usage(format!(
            "--bake needs a bake window, and the service file of '{}' cannot be used: {e}",
            service.name()
        ))),
        Ok(_) => Err(ExitError::usage(format!(
            "--bake needs a bake window; add 'bake:' to the service file of '{}' ('{}'), \
             like 'bake: 30s'",
            service.name(),
            file.display()
        ))),
        Err(e) => Err(ExitError::usage(format!(
            "--bake needs a bake window, and the service file of '{}' cannot be read: {e}",
            service.name()
        ))),
    }
}

/// The generation that serves, as one status says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Serving {
    generation: u64,
    pid: i32,
    /// Every instance's pid, in instance order (empty from an older supervisor).
    pids: Vec<i32>,
}

impl Serving {
    fn of(status: &Status) -> Option<Serving> {
        let generation = status.active_generation?;
        let g: &GenerationInfo = status
            .generations
            .iter()
            .find(|g| g.generation == generation)?;
        Some(Serving {
            generation,
            pid: g.pid,
            pids: g.instances.iter().map(|i| i.pid).collect(),
        })
    }

    fn describe(&self) -> String {
        format!("generation {} (pid {})", self.generation, self.pid)
    }
}

/// A `baking` event, as the reverter saw it.
#[derive(Debug, Clone, Copy)]
struct Baking {
    generation: u64,
    seen: Instant,
}

/// A revert the reverter asked for: when its window was seen, and how it ended (the
/// restart's reason, or why it could not be asked).
#[derive(Debug, Clone)]
struct Revert {
    seen: Instant,
    generation: u64,
    ended: Result<RestartOutcome, String>,
}

/// Reverts each restart's bake window and judges each flip.
pub struct Reverter {
    flips: mpsc::UnboundedSender<FlipResult>,
    task: tokio::task::JoinHandle<Judged>,
}

/// The reverter's verdicts: one per flip, in order; `None` when the flip was reverted
/// during bake as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    verdicts: Vec<Option<String>>,
    /// The generation and pid that served before the run.
    before: (u64, i32),
}

impl Reverter {
    /// Reads which generation serves, starts following the events, and returns the
    /// reverter. Call before the first restart.
    pub async fn start(service: &Service) -> anyhow::Result<Reverter> {
        let Runner::Supervisor { socket } = service.runner() else {
            return Err(ExitError::usage(
                "--bake needs a service that 'zdctl run' supervises",
            ));
        };
        let status = status_of(service).await?;
        let before = Serving::of(&status).ok_or_else(|| {
            ExitError::failure(format!(
                "'{}' has no active generation to come back to; wait until it serves, then \
                 run verify again",
                service.name()
            ))
        })?;
        let (bakes_tx, bakes) = mpsc::unbounded_channel();
        let mut watch = Client::connect(socket).await.map_err(|e| {
            ExitError::failure(format!(
                "cannot follow the events of '{}': {e}",
                service.name()
            ))
        })?;
        let watcher = tokio::spawn(async move {
            let _ = watch
                .call(Op::Watch, |event| {
                    if let EventKind::Baking { generation, .. } = event.kind {
                        let _ = bakes_tx.send(Baking {
                            generation,
                            seen: Instant::now(),
                        });
                    }
                })
                .await;
        });
        let (flips, flips_rx) = mpsc::unbounded_channel();
        let judge = Judge {
            service: service.clone(),
            socket: socket.clone(),
            before,
            reverts: Vec::new(),
            verdicts: Vec::new(),
        };
        let task = tokio::spawn(async move {
            let judged = judge.run(bakes, flips_rx).await;
            watcher.abort();
            judged
        });
        Ok(Reverter { flips, task })
    }

    /// Tells the reverter a flip is over (`zd_load`'s `on_flip`).
    pub fn flip_done(&self, flip: &FlipResult) {
        let _ = self.flips.send(flip.clone());
    }

    /// Waits for the verdicts of every flip told.
    pub async fn finish(self) -> anyhow::Result<Judged> {
        let Reverter { flips, task } = self;
        drop(flips);
        task.await
            .map_err(|e| ExitError::failure(format!("the bake reverter failed: {e}")))
    }
}

struct Judge {
    service: Service,
    socket: PathBuf,
    before: Serving,
    reverts: Vec<Revert>,
    verdicts: Vec<Option<String>>,
}

impl Judge {
    async fn run(
        mut self,
        mut bakes: mpsc::UnboundedReceiver<Baking>,
        mut flips: mpsc::UnboundedReceiver<FlipResult>,
    ) -> Judged {
        loop {
            tokio::select! {
                biased;
                flip = flips.recv() => match flip {
                    Some(flip) => {
                        // A window the events told of just before the flip ended is this
                        // flip's, even if its event is read after.
                        while let Ok(baking) = bakes.try_recv() {
                            self.revert(baking).await;
                        }
                        let verdict = self.judge(&flip).await;
                        self.verdicts.push(verdict);
                    }
                    None => break,
                },
                Some(baking) = bakes.recv() => self.revert(baking).await,
            }
        }
        Judged {
            verdicts: self.verdicts,
            before: (self.before.generation, self.before.pid),
        }
    }

    async fn revert(&mut self, baking: Baking) {
        let ended = match tokio::time::timeout(REVERT_DEADLINE, ask_revert(&self.socket)).await {
            Ok(ended) => ended,
            Err(_) => Err(format!(
                "no answer to 'revert' within {}s",
                REVERT_DEADLINE.as_secs()
            )),
        };
        self.reverts.push(Revert {
            seen: baking.seen,
            generation: baking.generation,
            ended,
        });
    }

    /// `None` when `flip` was reverted during bake and the old generation serves again;
    /// what went wrong otherwise.
    async fn judge(&mut self, flip: &FlipResult) -> Option<String> {
        let revert = self
            .reverts
            .iter()
            .rev()
            // Its event may be read just after the flip ended, never before it began.
            .find(|r| r.seen >= flip.requested)
            .cloned();
        self.reverts.clear();
        let Some(revert) = revert else {
            return Some(match &flip.problem {
                Some(problem) => format!("no bake window opened: {problem}"),
                None => "no bake window opened during this restart: the service file has no \
                         'bake:', or the restart skipped it (--no-bake)"
                    .to_owned(),
            });
        };
        let reason = match (&revert.ended, &flip.problem) {
            (Ok(RestartOutcome::RolledBack { reason }), _) => reason.clone(),
            // The window closed before the revert reached it: the flip says how it ended.
            (Err(e), Some(problem)) => format!("{problem} ({e})"),
            (Err(e), None) => {
                return Some(format!(
                    "the bake window of generation {} closed before verify could revert it: {e}",
                    revert.generation
                ));
            }
            (Ok(outcome), _) => {
                return Some(format!(
                    "asked to revert generation {}, the restart ended {outcome:?}",
                    revert.generation
                ));
            }
        };
        let reason = reason.strip_prefix("rolled back: ").unwrap_or(&reason);
        if !reason.starts_with(REVERTED) {
            return Some(format!(
                "the restart was not reverted during bake: {reason}"
            ));
        }
        match status_of(&self.service).await.map(|s| Serving::of(&s)) {
            Ok(Some(now)) if now == self.before => None,
            Ok(Some(now)) => Some(format!(
                "{reason}, but {} serves, not {} as before the run",
                now.describe(),
                self.before.describe()
            )),
            Ok(None) => Some(format!("{reason}, but no generation is active")),
            Err(e) => Some(format!("{reason}, but the status cannot be read: {e:#}")),
        }
    }
}

/// Sends `revert` and returns how the restart ended.
async fn ask_revert(socket: &Path) -> Result<RestartOutcome, String> {
    let mut client = Client::connect(socket).await.map_err(|e| e.to_string())?;
    match client.call(Op::Revert, |_| {}).await {
        Ok(Reply::Result { result, .. }) => match *result {
            ReplyResult::Reverted {
                generation,
                old_generation,
            } => Ok(RestartOutcome::RolledBack {
                reason: format!(
                    "{REVERTED}: generation {generation} drained, generation {old_generation} serves again"
                ),
            }),
            ReplyResult::Restart(report) => Ok(report.outcome),
            other => Err(format!("an unexpected answer to 'revert': {other:?}")),
        },
        Ok(Reply::Error { error, .. }) => Err(error.message),
        Ok(Reply::Event { .. }) => Err("an event where the answer to 'revert' was due".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

async fn status_of(service: &Service) -> anyhow::Result<Status> {
    match tokio::time::timeout(STATUS_DEADLINE, service.status()).await {
        Ok(Ok(status)) => Ok(status.status),
        Ok(Err(e)) => Err(control::service_error(e)),
        Err(_) => Err(ExitError::failure(format!(
            "the status of '{}' took longer than {}s",
            service.name(),
            STATUS_DEADLINE.as_secs()
        ))),
    }
}

/// Writes the verdicts into the report: a flip reverted as asked completed, any other
/// has its problem; `passed` follows. Returns the `bake` summary.
pub fn apply(report: &mut VerifyReport, judged: &Judged) -> BakeSummary {
    for (flip, verdict) in report.flips.list.iter_mut().zip(&judged.verdicts) {
        flip.problem = verdict.clone();
    }
    // A flip the reverter never heard of (there should be none) keeps its problem.
    let completed = report
        .flips
        .list
        .iter()
        .filter(|f| f.problem.is_none())
        .count();
    let reverted = judged
        .verdicts
        .iter()
        .zip(&report.flips.list)
        .filter(|(v, _)| v.is_none())
        .count();
    report.flips.completed = u32::try_from(completed).unwrap_or(u32::MAX);
    // As `zd_load` judges a run, with "completed" read as "reverted as asked".
    report.passed = report.failed == 0
        && completed == report.flips.list.len()
        && report.flips.list.len() == report.flips.requested as usize
        && report.kernel.listen_overflows == 0
        && report.kernel.listen_drops == 0;
    let (generation, pid) = judged.before;
    BakeSummary {
        restarts: report.flips.requested,
        reverted: u32::try_from(reverted).unwrap_or(u32::MAX),
        generation,
        pid,
    }
}

/// `3 restarts, 3 reverted during bake, 0 failed requests; generation 1 (pid 42) served
/// again after each revert` (the generation only when every restart was reverted).
pub fn line(b: &BakeSummary, failed: u64) -> String {
    let mut line = format!(
        "{} restarts, {} {REVERTED}, {failed} failed requests",
        b.restarts, b.reverted
    );
    if b.restarts > 0 && b.reverted == b.restarts {
        line += &format!(
            "; generation {} (pid {}) served again after each revert",
            b.generation, b.pid
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use zd_load::load::LoadReport;

    use super::*;

    fn report_with_flips(n: usize) -> VerifyReport {
        let load = LoadReport {
            records: Vec::new(),
            started: Instant::now(),
            elapsed: Duration::from_secs(1),
        };
        let mut report = crate::verify::html::tests::report_of(&load);
        let flip = report.flips.list[0].clone();
        report.flips.list = vec![flip; n];
        report.flips.requested = u32::try_from(n).unwrap_or(0);
        report.kernel = Default::default();
        report
    }

    #[test]
    fn flips_reverted_as_asked_complete_and_the_run_passes() {
        let mut report = report_with_flips(3);
        let judged = Judged {
            verdicts: vec![None, None, None],
            before: (1, 42),
        };
        let bake = apply(&mut report, &judged);
        assert_eq!(
            bake,
            BakeSummary {
                restarts: 3,
                reverted: 3,
                generation: 1,
                pid: 42
            }
        );
        assert_eq!(report.flips.completed, 3);
        assert!(report.passed);
        assert!(report.flips.list.iter().all(|f| f.problem.is_none()));
        assert_eq!(
            line(&bake, report.failed),
            "3 restarts, 3 reverted during bake, 0 failed requests; generation 1 (pid 42) \
             served again after each revert"
        );
    }

    #[test]
    fn a_restart_without_a_bake_window_fails_the_run_with_its_reason() {
        let mut report = report_with_flips(2);
        let judged = Judged {
            verdicts: vec![None, Some("no bake window opened".to_owned())],
            before: (1, 42),
        };
        let bake = apply(&mut report, &judged);
        assert_eq!(bake.reverted, 1);
        assert_eq!(
            line(&bake, 0),
            "2 restarts, 1 reverted during bake, 0 failed requests"
        );
        assert_eq!(report.flips.completed, 1);
        assert!(!report.passed);
        assert_eq!(
            report.flips.list[1].problem.as_deref(),
            Some("no bake window opened")
        );
    }

    #[test]
    fn the_json_object_has_every_key() {
        let bake = BakeSummary {
            restarts: 3,
            reverted: 2,
            generation: 7,
            pid: 1234,
        };
        assert_eq!(
            serde_json::to_value(&bake).expect("json"),
            serde_json::json!({"restarts": 3, "reverted": 2, "generation": 7, "pid": 1234})
        );
    }
}
