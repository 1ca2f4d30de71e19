//! nginx's binary upgrade (USR2, WINCH, QUIT) with rollback, or a plain HUP reload; the
//! same upgrade drives gunicorn's USR2 (without WINCH, which gunicorn ignores unless it
//! daemonized, and with TERM as its graceful stop).
//!
//! On USR2 the old master renames its pidfile to `PIDFILE.oldbin` and forks a child that
//! execs the master's argv[0] *literally* (execve, no PATH search). The new master writes
//! the pidfile and starts its workers; both sets of workers now accept on the same
//! sockets. WINCH makes the old workers finish their requests and exit; QUIT then ends the
//! old master. If the new master dies, the old master renames `.oldbin` back.
//!
//! gunicorn (19 and later) leaves the pidfile alone on USR2: its new arbiter writes
//! `PIDFILE.2` while the old one lives, and renames it to `PIDFILE` once the old one has
//! exited and it finds itself orphaned. The driver accepts `PIDFILE.2` as naming the new
//! arbiter, and waits for the rename before it calls the upgrade complete.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::process::{Reaped, Target, cmdline, dead_children, live_children, target_from_pidfile};
use super::run::{Run, rolled_back, tick};
use super::{DriverConfig, DriverError, NginxMode, watch};
use crate::duration::format_duration;
use crate::pidfile;
use crate::proto::{EventKind, RestartOutcome};
use crate::ready::accepting::find_accepting;
use crate::signal::Signal;
use crate::stamp::FileStamp;

/// How long a rollback may wait for the new master to go, after the restart's deadline.
const ROLLBACK_GRACE: Duration = Duration::from_secs(5);

pub(super) async fn restart(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    match config.nginx {
        NginxMode::Reload => watch::workers_replaced(config, run).await,
        NginxMode::Upgrade => upgrade(config, run, "nginx").await,
    }
}

/// The argv[0] nginx was started with, from `nginx: master process ARGV0 ...`, when it is
/// not a path: nginx cannot exec it again.
pub(super) fn relative_argv0(cmdline: &str) -> Option<String> {
    let argv0 = cmdline
        .strip_prefix("nginx: master process ")?
        .split(' ')
        .next()?;
    (!argv0.contains('/')).then(|| argv0.to_owned())
}

/// Why nginx cannot exec its new binary, when its argv[0] explains it.
fn cannot_exec(master: i32, is_nginx: bool) -> Option<String> {
    let argv0 = relative_argv0(&cmdline(master)).filter(|_| is_nginx)?;
    Some(format!(
        "nginx was started as '{argv0}', a relative argv[0], and execs that literally on USR2: \
         execve() failed, see its error log; start it with an absolute path, like \
         '/usr/sbin/nginx'"
    ))
}

pub(super) async fn upgrade(
    config: &DriverConfig,
    run: &mut Run<'_>,
    program: &str,
) -> Result<RestartOutcome, DriverError> {
    let is_nginx = program == "nginx";
    let Some(path) = config.pidfile.as_deref() else {
        return Err(DriverError::NotRunning {
            path: config.source.clone(),
            reason: "the binary upgrade needs `pidfile:`".to_owned(),
        });
    };
    let old = target_from_pidfile(path, config.expect.as_deref())?;
    run.numbers_from_record(old.pid);
    let old_workers: BTreeSet<i32> = live_children(old.pid).into_iter().collect();
    let beside = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let oldbin = beside(".oldbin");
    // gunicorn's new arbiter's pidfile while the old one lives.
    let second = (!is_nginx).then(|| beside(".2"));
    let names = |file: &std::path::Path, pid: i32| pidfile::named(file) == Some(pid);
    // gunicorn forks its workers before they import the app: a worker that exists may be
    // about to die, and promoting on its existence would stop the old arbiter for a new
    // one that fails. Its workers waiting on one of the inherited listeners is the
    // evidence instead. nginx has loaded its configuration before it forks a worker, so
    // its workers' existence is enough (and cheaper to see on a busy machine).
    let listeners = if is_nginx {
        Vec::new()
    } else {
        listener_inodes(old.pid)
    };
    // What the pidfile looks like before the signal: a master that acted on USR2 moved it
    // away (and back, if its new binary failed), which changes its inode or ctime.
    let untouched = FileStamp::of(path);
    let reaped = Reaped::watch(old.pid);
    old.signal(Signal::User2)?;
    run.emit(EventKind::Signalled {
        generation: run.old_generation.unwrap_or(0),
        pid: old.pid,
        signal: Signal::User2.to_string(),
    });

    // Phase 1: a new master, named by the pidfile, whose workers wait on a listener, up
    // for `settle`.
    let mut new: Option<(Target, Instant)> = None;
    let mut up: Option<(Instant, String)> = None;
    let new_master = loop {
        if !old.is_alive() {
            return Err(DriverError::NotRunning {
                path: path.to_owned(),
                reason: format!("the old master (pid {}) exited after USR2", old.pid),
            });
        }
        if new.is_none() {
            let child = live_children(old.pid)
                .into_iter()
                .find(|pid| !old_workers.contains(pid))
                .and_then(Target::open);
            if let Some(target) = child {
                run.spawned(target.pid);
                new = Some((target, Instant::now()));
            }
        }
        match &new {
            Some((master, seen)) => {
                if !master.is_alive() {
                    let pid = master.pid;
                    let why = cannot_exec(old.pid, is_nginx).unwrap_or_else(|| {
                        "a bad binary or configuration? see the error log".to_owned()
                    });
                    let reason = format!(
                        "the new master (pid {pid}) exited before it was up ({why}); the old \
                         master (pid {}) keeps serving",
                        old.pid
                    );
                    return Ok(roll_back(run, path, &old, None, false, reason).await);
                }
                let named = names(path, master.pid)
                    || second.as_deref().is_some_and(|p| names(p, master.pid));
                let workers = live_children(master.pid).len();
                if named && workers > 0 && up.is_none() {
                    up = accepting(master.pid, &listeners).map(|e| (Instant::now(), e));
                }
                let settled = |since: &Instant| since.elapsed() >= config.settle;
                if seen.elapsed() >= config.settle && up.as_ref().is_some_and(|(at, _)| settled(at))
                {
                    break new.take().map(|(m, _)| m);
                }
            }
            None => {
                // No new master seen yet. Its death is told from the pidfile directory and
                // the old master's reaping, never from a timer, so a master slow to act on
                // USR2 (a busy host) is waited for up to the restart's timeout:
                // - nginx renames the pidfile to `.oldbin` before it forks, and back when
                //   the child died (execve failed): a pidfile that changed while no
                //   `.oldbin` exists was moved away and back (read in that order, so a
                //   rename between the two reads cannot pass for one);
                // - the exec child is seen as a zombie, or the old master reaped a child
                //   while every old worker still runs (gunicorn leaves the pidfile alone).
                let changed = FileStamp::of(path) != untouched;
                let moved = oldbin.exists() || second.as_deref().is_some_and(Path::exists);
                let renamed_back = is_nginx && changed && !moved && FileStamp::of(path).is_some();
                let zombie = dead_children(old.pid)
                    .into_iter()
                    .any(|k| !old_workers.contains(&k));
                let workers = live_children(old.pid);
                let reaped_child =
                    !moved && reaped.any() && old_workers.iter().all(|w| workers.contains(w));
                if renamed_back || zombie || reaped_child {
                    let why = cannot_exec(old.pid, is_nginx).unwrap_or_else(|| {
                        format!("the new {program} binary could not be started (see its error log)")
                    });
                    let seen = if renamed_back {
                        "the pidfile was renamed back from .oldbin"
                    } else {
                        "its exec child exited"
                    };
                    let reason = format!(
                        "no new master appeared after USR2 ({seen}): {why}; the old master (pid \
                         {}) keeps serving",
                        old.pid
                    );
                    return Ok(rolled_back(named_again(path, &old, reason).await));
                }
            }
        }
        if run.timed_out() {
            let master = new.take().map(|(m, _)| m);
            let reason = format!(
                "no new master was up within {}; the old master (pid {}) keeps serving",
                format_duration(run.timeout()),
                old.pid
            );
            return Ok(roll_back(run, path, &old, master.as_ref(), false, reason).await);
        }
        tick().await;
    };
    let Some(new_master) = new_master else {
        return Ok(rolled_back("lost track of the new master"));
    };
    run.ready(format!(
        "new master pid {} named by the pidfile, with {} workers, up for {}: {}",
        new_master.pid,
        live_children(new_master.pid).len(),
        format_duration(config.settle),
        up.map(|(_, evidence)| evidence).unwrap_or_default()
    ));
    run.promoted(new_master.pid);

    // Phase 2: the old workers finish their requests and exit.
    if is_nginx {
        old.signal(Signal::Winch)?;
        for pid in &old_workers {
            run.draining(*pid, "WINCH (by the old master)");
        }
        loop {
            if !new_master.is_alive() {
                let reason = format!(
                    "the new master (pid {}) exited while the old workers drained; the old \
                     master (pid {}) was told to start workers again",
                    new_master.pid, old.pid
                );
                return Ok(roll_back(run, path, &old, None, true, reason).await);
            }
            let left = live_children(old.pid)
                .into_iter()
                .filter(|pid| old_workers.contains(pid))
                .count();
            if left == 0 {
                break;
            }
            if run.timed_out() {
                let reason = format!(
                    "{left} old workers still running after {}",
                    format_duration(run.timeout())
                );
                return Ok(roll_back(run, path, &old, Some(&new_master), true, reason).await);
            }
            tick().await;
        }
    }

    // Phase 3: the old master goes.
    let stop = if is_nginx {
        Signal::Quit
    } else {
        Signal::Terminate
    };
    old.signal(stop)?;
    run.draining(old.pid, &stop.to_string());
    while old.is_alive() {
        if run.timed_out() {
            return Ok(RestartOutcome::Failed {
                reason: format!(
                    "the old master (pid {}) did not exit within {} after {stop}; the new \
                     master (pid {}) serves",
                    old.pid,
                    format_duration(run.timeout()),
                    new_master.pid
                ),
            });
        }
        tick().await;
    }
    // gunicorn: the new arbiter takes the pidfile's name once it notices it is orphaned.
    while !names(path, new_master.pid) {
        if !new_master.is_alive() {
            return Ok(RestartOutcome::Failed {
                reason: format!(
                    "the new master (pid {}) exited after the old one did: the service is down",
                    new_master.pid
                ),
            });
        }
        if run.timed_out() {
            return Ok(RestartOutcome::Failed {
                reason: format!(
                    "the new master (pid {}) serves, but '{}' does not name it within {}",
                    new_master.pid,
                    path.display(),
                    format_duration(run.timeout())
                ),
            });
        }
        tick().await;
    }
    Ok(RestartOutcome::Completed)
}

/// The inodes of the listening sockets `pid` holds.
fn listener_inodes(pid: i32) -> Vec<u64> {
    super::process::listening_sockets(pid)
        .into_iter()
        .map(|l| l.inode)
        .collect()
}

/// Evidence that the tree of `master` waits for connections on one of `listeners`; with no
/// listener to look at, its workers' existence has to do.
fn accepting(master: i32, listeners: &[u64]) -> Option<String> {
    if listeners.is_empty() {
        return Some("its workers run".to_owned());
    }
    match find_accepting(master, listeners) {
        Ok(Some(evidence)) => Some(evidence.to_string()),
        Ok(None) | Err(_) => None,
    }
}

/// Rolls back: HUP to the old master when its workers were stopped (it starts them
/// again), QUIT to the new master, and waits a little for the new master to go.
async fn roll_back(
    run: &mut Run<'_>,
    path: &Path,
    old: &Target,
    new_master: Option<&Target>,
    winched: bool,
    reason: String,
) -> RestartOutcome {
    if winched && old.signal(Signal::Hangup).is_ok() {
        run.emit(EventKind::Signalled {
            generation: run.old_generation.unwrap_or(0),
            pid: old.pid,
            signal: Signal::Hangup.to_string(),
        });
    }
    if let Some(master) = new_master.filter(|m| m.is_alive()) {
        if master.signal(Signal::Quit).is_ok() {
            run.stopping_new(master.pid, "QUIT");
        }
        let until = Instant::now() + ROLLBACK_GRACE;
        while master.is_alive() && Instant::now() < until {
            tick().await;
        }
    }
    run.new_pid = None;
    rolled_back(named_again(path, old, reason).await)
}

/// Waits (a little) for the pidfile to name the old master again: nginx renames `.oldbin`
/// back only once it has reaped its new master, which may come after the driver saw that
/// master die. A rollback that returns before that would leave an operator (and the next
/// restart) without a pidfile; one that waited in vain says so in its reason.
async fn named_again(path: &Path, old: &Target, reason: String) -> String {
    let until = Instant::now() + ROLLBACK_GRACE;
    loop {
        if pidfile::read(path).ok() == Some(old.pid) {
            return reason;
        }
        if !old.is_alive() || Instant::now() >= until {
            return format!(
                "{reason}; '{}' does not name the old master (pid {}) again",
                path.display(),
                old.pid
            );
        }
        tick().await;
    }
}
