//! The signal-and-watch drivers: `signal`, `psflip`, `socketmaster`, `huptime`, and the
//! in-place worker reloads (gunicorn HUP, nginx HUP).
//!
//! psflip and huptime (in its default fork mode) both replace the pidfile's process: the
//! old process forks the new one, the new one writes the pidfile, the old one exits. They
//! differ in what happens when the new one dies: psflip keeps the old one serving, while
//! huptime's old process stopped accepting at the HUP and exits once its connections are
//! done, so the service goes down.

use std::collections::BTreeSet;
use std::time::Instant;

use super::process::{Reaped, Target, dead_children, live_children, target_from_pidfile};
use super::run::{Run, failed, rolled_back, tick};
use super::{DriverConfig, DriverError, DriverKind};
use crate::duration::format_duration;
use crate::pidfile;
use crate::proto::{EventKind, RestartOutcome};

/// What a failed huptime restart leaves behind.
const HUPTIME_DOWN: &str = "huptime's old process stopped accepting at the HUP and exits \
                            once its connections are done, so the service is going down \
                            (huptime has no health check and cannot roll back): fix the \
                            program and start it again";

/// How long the psflip driver waits for a new process before it signals again.
const PSFLIP_ASK_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);

fn pidfile_of(config: &DriverConfig) -> Result<&std::path::Path, DriverError> {
    config
        .pidfile
        .as_deref()
        .ok_or_else(|| DriverError::NotRunning {
            path: config.source.clone(),
            reason: format!(
                "the service file '{}' names no `pidfile:`",
                config.source.display()
            ),
        })
}

/// Sends the configured signal to `target` and says so.
fn poke(config: &DriverConfig, run: &mut Run<'_>, target: &Target) -> Result<(), DriverError> {
    target.signal(config.signal)?;
    run.emit(EventKind::Signalled {
        generation: run.old_generation.unwrap_or(0),
        pid: target.pid,
        signal: config.signal.to_string(),
    });
    Ok(())
}

/// What a supervisor's generation is, for numbering it.
enum Numbering {
    /// Each child is a generation (socketmaster).
    Children,
    /// The supervisor is, and replaces its workers in place (gunicorn, nginx HUP).
    Supervisor,
}

/// The start of the drivers that watch a supervisor's children: the supervisor from the
/// pidfile, proven to be the expected program; its children before the signal; the
/// generation numbers; the signal.
fn signal_supervisor(
    config: &DriverConfig,
    run: &mut Run<'_>,
    numbering: Numbering,
) -> Result<(Target, BTreeSet<i32>, Reaped), DriverError> {
    let root = target_from_pidfile(pidfile_of(config)?, config.expect.as_deref())?;
    let old: BTreeSet<i32> = live_children(root.pid).into_iter().collect();
    match numbering {
        Numbering::Children => run.numbers_from_pool(&old),
        Numbering::Supervisor => run.numbers_from_record(root.pid),
    }
    let reaped = Reaped::watch(root.pid);
    poke(config, run, &root)?;
    Ok((root, old, reaped))
}

/// A candidate new generation and when it was first seen.
struct Candidate {
    target: Target,
    seen: Instant,
    ready: bool,
}

impl Candidate {
    /// Takes hold of a new generation's process and announces it.
    fn spot(run: &mut Run<'_>, pid: i32) -> Option<Candidate> {
        let target = Target::open(pid)?;
        run.spawned(target.pid);
        Some(Candidate {
            target,
            seen: Instant::now(),
            ready: false,
        })
    }

    /// Once the candidate has lived for `settle`, announces it ready (with the evidence
    /// `describe` gives for its pid) and promoted; true the first time only.
    fn settle(
        &mut self,
        config: &DriverConfig,
        run: &mut Run<'_>,
        describe: impl FnOnce(i32) -> String,
    ) -> bool {
        if self.ready || self.seen.elapsed() < config.settle {
            return false;
        }
        self.ready = true;
        let pid = self.target.pid;
        run.ready(format!(
            "{}, alive for {}",
            describe(pid),
            format_duration(config.settle)
        ));
        run.promoted(pid);
        true
    }
}

/// The outcome when the new `noun` (pid `pid`) exited before it took over; `old` names
/// the old one, which may still run.
fn new_one_exited(noun: &str, pid: i32, old: &str, old_alive: bool) -> RestartOutcome {
    if old_alive {
        rolled_back(format!(
            "the new {noun} (pid {pid}) exited; the old one{old} keeps running"
        ))
    } else {
        failed(format!(
            "the new {noun} (pid {pid}) exited and the old one{old} is gone too: the service \
             is down"
        ))
    }
}

/// The pidfile's process replaces itself: success when the pidfile names a new process
/// that has lived for `settle` and the old process has exited.
pub(super) async fn pidfile_flip(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let path = pidfile_of(config)?;
    let old = target_from_pidfile(path, config.expect.as_deref())?;
    run.numbers_from_record(old.pid);
    let before: BTreeSet<i32> = live_children(old.pid).into_iter().collect();
    let reaped = Reaped::watch(old.pid);
    // Any child psflip reaps or leaves dead during an upgrade is its successor: it starts
    // no other. The program behind `signal` or huptime may run and reap children of its
    // own at any time, so only a successor seen alive and then gone counts there.
    let knows_its_children = config.kind == DriverKind::Psflip;
    // huptime forks the new copy from the old process and reaps only when a copy starts,
    // so a copy that died stays a zombie child of the old process: a new zombie child
    // with the old process's name is its successor that gave up.
    let copy_name = (config.kind == DriverKind::Huptime)
        .then(|| comm(old.pid))
        .flatten();
    poke(config, run, &old)?;
    let mut poked = Instant::now();
    let mut candidate: Option<Candidate> = None;
    // Children the old process started after the signal: a successor that dies before it
    // writes the pidfile shows only here.
    let mut successors: BTreeSet<i32> = BTreeSet::new();
    let mut old_gone_at: Option<Instant> = None;
    loop {
        if candidate.is_none() {
            let named = pidfile::named(path).filter(|pid| *pid != old.pid);
            candidate = named.and_then(|pid| Candidate::spot(run, pid));
        }
        let kids = live_children(old.pid);
        successors.extend(kids.iter().filter(|k| !before.contains(k)));
        match &mut candidate {
            Some(c) => {
                if !c.target.is_alive() {
                    let pid = c.target.pid;
                    if config.kind == DriverKind::Huptime {
                        return Ok(failed(format!(
                            "the new process (pid {pid}) exited; {HUPTIME_DOWN}"
                        )));
                    }
                    let named_old = format!(" (pid {})", old.pid);
                    return Ok(new_one_exited("process", pid, &named_old, old.is_alive()));
                }
                if c.settle(config, run, |pid| format!("pid {pid} named by the pidfile")) {
                    // The old process ends by itself once the new one took over (psflip
                    // after its shutdown delay, huptime once its connections are done).
                    run.draining(
                        old.pid,
                        &format!("{} earlier; it exits by itself", config.signal),
                    );
                }
                if c.ready && !old.is_alive() {
                    return Ok(RestartOutcome::Completed);
                }
            }
            None => {
                // A successor that died: seen alive, then gone; or seen only as a zombie;
                // or never seen, but reaped while every earlier child still runs.
                let dead_copy = copy_name.as_ref().is_some_and(|name| {
                    dead_children(old.pid)
                        .iter()
                        .any(|k| !before.contains(k) && comm(*k).as_ref() == Some(name))
                });
                let gave_up = dead_copy
                    || successors
                        .iter()
                        .any(|pid| !crate::proc::is_alive(*pid) && !kids.contains(pid))
                    || (knows_its_children
                        && (dead_children(old.pid).iter().any(|k| !before.contains(k))
                            || (reaped.any() && before.iter().all(|k| kids.contains(k)))));
                if gave_up && config.kind == DriverKind::Huptime {
                    return Ok(failed(format!(
                        "the new process started by pid {} exited before it wrote the \
                         pidfile; {HUPTIME_DOWN}",
                        old.pid
                    )));
                }
                if gave_up && old.is_alive() && kids.iter().all(|k| before.contains(k)) {
                    return Ok(rolled_back(format!(
                        "the new process started by pid {} exited before it took over; the \
                         old one keeps running",
                        old.pid
                    )));
                }
                if !old.is_alive() {
                    // A flipper writes the pidfile before the old process exits; give a
                    // late writer one settle period, and as long as a successor it
                    // started still runs (huptime's old process may exit at once, before
                    // its new copy got as far as writing the pidfile).
                    let gone = *old_gone_at.get_or_insert_with(Instant::now);
                    let successor_runs = successors.iter().any(|pid| crate::proc::is_alive(*pid));
                    if gone.elapsed() >= config.settle
                        && !successor_runs
                        && config.kind == DriverKind::Huptime
                    {
                        return Ok(failed(format!(
                            "the old process (pid {}) exited and no new copy took over (none \
                             wrote '{}'); {HUPTIME_DOWN}",
                            old.pid,
                            path.display()
                        )));
                    }
                    if gone.elapsed() >= config.settle && !successor_runs {
                        return Ok(failed(format!(
                            "the old process (pid {}) exited and no new pid appeared in '{}'",
                            old.pid,
                            path.display()
                        )));
                    }
                }
                // Nothing seen of a successor: psflip (tableflip) refuses an upgrade asked
                // for before it is ready for one, before it noticed that its own parent
                // has exited (a moment after that parent is gone). It logs the refusal and
                // drops the signal; asking again is harmless (an upgrade under way refuses
                // the next one).
                if config.kind == DriverKind::Psflip
                    && successors.is_empty()
                    && kids.iter().all(|k| before.contains(k))
                    && poked.elapsed() >= PSFLIP_ASK_AGAIN
                    && old.is_alive()
                {
                    poke(config, run, &old)?;
                    poked = Instant::now();
                }
            }
        }
        if run.timed_out() {
            return Ok(timeout_outcome(config, run, &old, candidate.as_ref()));
        }
        tick().await;
    }
}

fn timeout_outcome(
    config: &DriverConfig,
    run: &Run<'_>,
    old: &Target,
    candidate: Option<&Candidate>,
) -> RestartOutcome {
    let within = format_duration(run.timeout());
    match candidate {
        None => failed(format!(
            "no new process within {within} after {} to pid {}; it keeps running as before",
            config.signal, old.pid
        )),
        Some(c) if !c.ready => failed(format!(
            "the new process (pid {}) did not live {} within {within}",
            c.target.pid,
            format_duration(config.settle)
        )),
        Some(c) => failed(format!(
            "the new process (pid {}) runs, but the old one (pid {}) has not exited within \
             {within}",
            c.target.pid, old.pid
        )),
    }
}

/// The pidfile's process starts a new child and stops the old one: success when a new
/// child has lived for `settle` and every old child has exited.
pub(super) async fn child_flip(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let (root, old, reaped) = signal_supervisor(config, run, Numbering::Children)?;
    let mut candidate: Option<Candidate> = None;
    loop {
        if !root.is_alive() {
            return Ok(failed(format!(
                "the supervisor (pid {}) exited during the restart",
                root.pid
            )));
        }
        let kids = live_children(root.pid);
        if candidate.is_none() {
            candidate = kids
                .iter()
                .find(|k| !old.contains(k))
                .and_then(|pid| Candidate::spot(run, *pid));
        }
        if candidate.is_none() {
            // A new child that died before the first look: a zombie not yet reaped, or
            // one the supervisor already reaped while every old child still runs.
            let zombie = dead_children(root.pid)
                .into_iter()
                .find(|k| !old.contains(k));
            let all_old_run = old.iter().all(|p| kids.contains(p));
            // socketmaster starts nothing but its children; a `signal` supervisor may.
            let knows_its_children = config.kind == DriverKind::Socketmaster;
            if knows_its_children && (zombie.is_some() || (reaped.any() && all_old_run)) {
                let which = zombie.map(|p| format!(" (pid {p})")).unwrap_or_default();
                return Ok(if all_old_run && !old.is_empty() {
                    rolled_back(format!(
                        "the new child{which} exited at once, before it could be watched; the \
                         old one keeps running"
                    ))
                } else {
                    failed(format!(
                        "the new child{which} exited at once and no old child runs: the \
                         service is down"
                    ))
                });
            }
        }
        if let Some(c) = &mut candidate {
            if !c.target.is_alive() {
                let pid = c.target.pid;
                let old_alive = old.iter().any(|p| kids.contains(p));
                return Ok(new_one_exited("child", pid, "", old_alive));
            }
            if c.settle(config, run, |pid| format!("child pid {pid}")) {
                // The supervisor may have stopped an old child before the new one had
                // settled (socketmaster does as soon as it started the new one): it is
                // drained all the same, and the event says when.
                for pid in &old {
                    let when = if kids.contains(pid) {
                        "(by the supervisor)"
                    } else {
                        "(by the supervisor; it had already exited)"
                    };
                    run.draining(*pid, when);
                }
            }
            if c.ready && !old.iter().any(|p| kids.contains(p)) {
                return Ok(RestartOutcome::Completed);
            }
        }
        if run.timed_out() {
            return Ok(timeout_outcome(config, run, &root, candidate.as_ref()));
        }
        tick().await;
    }
}

/// The process keeps its pid and replaces its workers: success when as many new workers as
/// there were old ones have lived for `settle` and every old worker has exited.
pub(super) async fn workers_replaced(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let (root, old, _) = signal_supervisor(config, run, Numbering::Supervisor)?;
    let wanted = old.len().max(1);
    let mut first_seen: Option<Instant> = None;
    let mut announced = BTreeSet::new();
    let mut drained = false;
    loop {
        if !root.is_alive() {
            return Ok(failed(format!(
                "the master (pid {}) exited during the reload",
                root.pid
            )));
        }
        let kids = live_children(root.pid);
        let new: Vec<i32> = kids.iter().copied().filter(|k| !old.contains(k)).collect();
        for pid in &new {
            if announced.insert(*pid) {
                run.spawned(*pid);
            }
        }
        if new.len() >= wanted {
            if !drained {
                // The master stops its old workers once it has started the new ones.
                drained = true;
                for pid in &old {
                    run.draining(*pid, "(by the master)");
                }
            }
            let since = *first_seen.get_or_insert_with(Instant::now);
            let old_left = old.iter().any(|p| kids.contains(p));
            if since.elapsed() >= config.settle && !old_left {
                run.new_pid = Some(root.pid);
                run.ready(format!(
                    "{} new workers alive for {}",
                    new.len(),
                    format_duration(config.settle)
                ));
                run.promoted(root.pid);
                return Ok(RestartOutcome::Completed);
            }
        } else {
            first_seen = None;
        }
        if run.timed_out() {
            let old_left: Vec<String> = old
                .iter()
                .filter(|p| kids.contains(p))
                .map(ToString::to_string)
                .collect();
            let reason = format!(
                "after {} to pid {}: {} of {wanted} new workers within {}; old workers still \
                 running: [{}]",
                config.signal,
                root.pid,
                new.len(),
                format_duration(run.timeout()),
                old_left.join(", ")
            );
            // No new worker at all and every old one serves on: the master refused the
            // reload (nginx with a configuration it rejects) and nothing changed.
            let untouched = new.is_empty() && old_left.len() == old.len();
            return Ok(if untouched {
                rolled_back(format!(
                    "{reason}: the master kept its old workers (a configuration it refused? see \
                     its error log)"
                ))
            } else {
                failed(reason)
            });
        }
        tick().await;
    }
}

/// A process's name (`/proc/PID/comm`), which a zombie keeps.
fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim_end().to_owned())
}
