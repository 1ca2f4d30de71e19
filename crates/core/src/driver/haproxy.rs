//! HAProxy in master-worker mode: `reload` on the master CLI socket (`-S PATH`), then
//! `show proc` until the master counts one more reload, a new worker runs and the old
//! workers have finished their connections.
//!
//! The master stays (it re-executes itself in place) and is the service's supervisor; its
//! workers are the generations, as einhorn's are: a reload starts generation N+1 (the new
//! worker) beside generation N (the old one, which lives while it has connections).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::control::{ask, socket_of};
use super::run::{Run, failed, rolled_back, tick};
use super::{DriverConfig, DriverError};
use crate::duration::format_duration;
use crate::proc;
use crate::proto::{EventKind, RestartOutcome};

/// One `show proc` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct ProcList {
    pub(super) master: i32,
    pub(super) reloads: u64,
    pub(super) failed: u64,
    /// Current workers, then old ones still finishing.
    pub(super) workers: Vec<i32>,
    pub(super) old_workers: Vec<i32>,
}

/// Parses `show proc`; `None` when it is not a `show proc` answer.
pub(super) fn parse_show_proc(text: &str) -> Option<ProcList> {
    let mut list = ProcList::default();
    let mut section = "";
    let mut saw_master = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(title) = line.strip_prefix('#') {
            section = if title.trim() == "old workers" {
                "old"
            } else if title.trim() == "workers" {
                "workers"
            } else {
                "other"
            };
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(pid), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        match (kind, section) {
            ("master", _) => {
                saw_master = true;
                list.master = pid;
                list.reloads = words.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                let rest: Vec<&str> = words.collect();
                list.failed = rest
                    .windows(2)
                    .find(|w| w[0] == "[failed:")
                    .and_then(|w| w[1].trim_end_matches(']').parse().ok())
                    .unwrap_or(0);
            }
            ("worker", "old") => list.old_workers.push(pid),
            ("worker", _) => list.workers.push(pid),
            _ => {}
        }
    }
    saw_master.then_some(list)
}

async fn show_proc(socket: &Path, timeout: Duration) -> Result<ProcList, DriverError> {
    // The master CLI keeps the connection open; the list ends with an empty line.
    let answer = ask(socket, "show proc\n", timeout, |t| {
        t.contains("master") && t.ends_with("\n\n")
    })
    .await?;
    parse_show_proc(&answer).ok_or_else(|| DriverError::Garbage {
        path: socket.to_owned(),
        reason: format!(
            "the answer to 'show proc' is not HAProxy's process list (found {:?}); is \
             `socket:` HAProxy's master CLI socket (-S)?",
            answer.chars().take(60).collect::<String>()
        ),
    })
}

/// The outcome when the master counts a failed reload since `before`: HAProxy refused the
/// new configuration and kept its old workers, untouched: a rollback.
fn refused(before: &ProcList, now: &ProcList) -> Option<RestartOutcome> {
    (now.reloads > before.reloads && now.failed > before.failed).then(|| {
        rolled_back(format!(
            "HAProxy could not load the new configuration (failed reloads: {}); the old \
             workers keep serving; check it with 'haproxy -c -f FILE'",
            now.failed
        ))
    })
}

pub(super) async fn restart(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let (socket, per_call) = socket_of(config, "the master CLI socket")?;
    // The master CLI refuses connections while the master re-executes, as it does for a
    // moment after every reload: ask again for one settle period before calling the
    // service not running.
    let asked = std::time::Instant::now();
    let before = loop {
        match show_proc(socket, per_call).await {
            Err(DriverError::SocketRefused { .. })
                if asked.elapsed() < config.settle && !run.timed_out() =>
            {
                tick().await;
            }
            answer => break answer?,
        }
    };
    if let Some(expect) = config.expect.as_deref() {
        if !super::process::is_program(before.master, expect) {
            return Err(DriverError::Unexpected {
                path: socket.to_owned(),
                pid: before.master,
                expected: format!("'{expect}'"),
                found: format!("'{}'", super::process::cmdline(before.master)),
            });
        }
    }
    let old: BTreeSet<i32> = before.workers.iter().copied().collect();
    run.numbers_from_pool(&old);
    // HAProxy 2.6 re-executes the master and closes the connection without an answer;
    // later versions answer first. Either is fine.
    let _ = ask(socket, "reload\n", per_call, |_| false).await;
    run.emit(EventKind::Signalled {
        generation: run.old_generation.unwrap_or(0),
        pid: before.master,
        signal: "reload (master CLI)".to_owned(),
    });
    let mut announced = false;
    loop {
        // While the master re-executes, its socket may refuse for a moment.
        if let Ok(now) = show_proc(socket, per_call).await {
            if let Some(refused) = refused(&before, &now) {
                return Ok(refused);
            }
            let new: Vec<i32> = now
                .workers
                .iter()
                .copied()
                .filter(|w| !old.contains(w))
                .collect();
            if now.reloads > before.reloads {
                if let Some(&worker) = new.first() {
                    if !announced {
                        announced = true;
                        run.spawned(worker);
                        run.ready(format!(
                            "'show proc' lists worker {worker} after reload {}",
                            now.reloads
                        ));
                        run.promoted(worker);
                        for pid in &old {
                            run.draining(*pid, "(by the master)");
                        }
                    }
                    let draining = old
                        .iter()
                        .any(|w| now.old_workers.contains(w) || now.workers.contains(w));
                    if !draining || old.iter().all(|w| !proc::is_alive(*w)) {
                        return Ok(RestartOutcome::Completed);
                    }
                }
            }
        }
        if run.timed_out() {
            return Ok(failed(format!(
                "HAProxy showed no completed reload within {} (a new worker, old workers gone)",
                format_duration(run.timeout())
            )));
        }
        tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_the_master_counts_as_failed_is_a_rollback() {
        let before = ProcList {
            master: 10,
            reloads: 3,
            failed: 0,
            workers: vec![11],
            old_workers: Vec::new(),
        };
        let now = ProcList {
            reloads: 4,
            failed: 1,
            ..before.clone()
        };
        assert!(matches!(
            refused(&before, &now),
            Some(RestartOutcome::RolledBack { reason }) if reason.contains("keep serving")
        ));
        // A reload that went through, or none yet.
        let reloaded = ProcList {
            reloads: 4,
            workers: vec![12],
            ..before.clone()
        };
        assert_eq!(refused(&before, &reloaded), None);
        assert_eq!(refused(&before, &before), None);
    }
}
