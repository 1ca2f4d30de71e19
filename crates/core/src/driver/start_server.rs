//! start_server (Server::Starter): HUP to the superdaemon, judged from its `--status-file`
//! (`generation:pid` lines) and from /proc.
//!
//! On HUP start_server forks a new worker, waits `--interval` seconds, and only if the
//! worker is still alive writes it to the status file and sends the old workers their
//! stop signal. A worker that dies in that interval is retried, forever, while the old
//! worker keeps serving: the driver reports the first death as a rollback.

use std::collections::BTreeSet;
use std::path::Path;

use super::process::{Target, target_from_pidfile};
use super::run::{Run, failed, rolled_back, tick};
use super::{DriverConfig, DriverError};
use crate::duration::format_duration;
use crate::proc;
use crate::proto::{EventKind, RestartOutcome};
use crate::signal::Signal;

/// Parses a status file: `generation:pid` per line, sorted by generation.
pub(super) fn parse_status(text: &str) -> Vec<(u64, i32)> {
    let mut lines: Vec<(u64, i32)> = text
        .lines()
        .filter_map(|line| {
            let (generation, pid) = line.trim().split_once(':')?;
            Some((generation.parse().ok()?, pid.parse().ok()?))
        })
        .collect();
    lines.sort_unstable();
    lines
}

pub(super) fn read_status(path: &Path) -> Result<Vec<(u64, i32)>, DriverError> {
    let text = std::fs::read_to_string(path).map_err(|e| DriverError::NotRunning {
        path: path.to_owned(),
        reason: format!(
            "cannot read start_server's status file '{}' ({e}); is it running with \
             --status-file={}?",
            path.display(),
            path.display()
        ),
    })?;
    let entries = parse_status(&text);
    if entries.is_empty() && !text.trim().is_empty() {
        return Err(DriverError::Garbage {
            path: path.to_owned(),
            reason: format!(
                "start_server's status file holds no 'generation:pid' line (found {:?})",
                text.chars().take(40).collect::<String>()
            ),
        });
    }
    Ok(entries)
}

pub(super) async fn restart(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let (Some(pidfile), Some(status_file)) = (&config.pidfile, &config.status_file) else {
        return Err(DriverError::NotRunning {
            path: config.source.clone(),
            reason: "start_server needs `pidfile:` and `status_file:`".to_owned(),
        });
    };
    let root = target_from_pidfile(pidfile, config.expect.as_deref())?;
    let before = read_status(status_file)?;
    let Some(&(old_generation, old_pid)) = before.last() else {
        return Err(DriverError::NotRunning {
            path: status_file.clone(),
            reason: format!(
                "start_server (pid {}) lists no worker in '{}': it is starting or its worker \
                 keeps failing; try again later",
                root.pid,
                status_file.display()
            ),
        });
    };
    run.old_generation = Some(old_generation);
    run.old_pid = Some(old_pid);
    // Every child, zombies too: a worker that already exited is not a new one.
    let old_workers: BTreeSet<i32> = proc::children(root.pid).into_iter().collect();
    root.signal(Signal::Hangup)?;
    run.emit(EventKind::Signalled {
        generation: old_generation,
        pid: root.pid,
        signal: Signal::Hangup.to_string(),
    });
    // The new worker once seen: its pid, and a hold on it unless it had already exited.
    // start_server reaps a worker that died only after `--interval`, so a worker that
    // exits at once is still listed among its children, as a zombie, for that long.
    let mut announced: Option<(i32, Option<Target>)> = None;
    let mut promoted = false;
    loop {
        if !root.is_alive() {
            return Ok(failed(format!(
                "start_server (pid {}) exited during the restart",
                root.pid
            )));
        }
        let entries = read_status(status_file).unwrap_or_default();
        let newest = entries
            .iter()
            .copied()
            .rfind(|(generation, _)| *generation > old_generation);
        if announced.is_none() {
            let spawned = proc::children(root.pid)
                .into_iter()
                .find(|pid| !old_workers.contains(pid));
            if let Some(pid) = spawned {
                run.new_generation = Some(newest.map_or(old_generation + 1, |(g, _)| g));
                run.spawned(pid);
                announced = Some((pid, Target::open(pid)));
            }
        }
        match newest {
            Some((generation, pid)) => {
                if !promoted {
                    promoted = true;
                    run.new_generation = Some(generation);
                    run.new_pid = Some(pid);
                    run.ready(format!(
                        "start_server lists generation {generation} (pid {pid}) in its status file"
                    ));
                    run.promoted(pid);
                    run.draining(old_pid, "TERM (by start_server)");
                }
                if !proc::is_alive(pid) {
                    return Ok(failed(format!(
                        "the new worker (generation {generation}, pid {pid}) exited after \
                         start_server promoted it"
                    )));
                }
                let old_listed = entries.iter().any(|(g, _)| *g <= old_generation);
                if !old_listed && !proc::is_alive(old_pid) {
                    return Ok(RestartOutcome::Completed);
                }
            }
            None => {
                if let Some((pid, target)) = &announced {
                    if !target.as_ref().is_some_and(Target::is_alive) {
                        return Ok(rolled_back(format!(
                            "the new worker (pid {pid}) exited within start_server's --interval; \
                             the old worker (generation {old_generation}, pid {old_pid}) keeps \
                             serving, and start_server keeps retrying new workers: see its log"
                        )));
                    }
                }
            }
        }
        if run.timed_out() {
            let within = format_duration(run.timeout());
            return Ok(failed(if promoted {
                format!(
                    "the old worker (generation {old_generation}, pid {old_pid}) has not \
                     exited within {within}"
                )
            } else {
                format!(
                    "start_server listed no new generation within {within}; the old worker \
                     (pid {old_pid}) keeps serving"
                )
            }));
        }
        tick().await;
    }
}
