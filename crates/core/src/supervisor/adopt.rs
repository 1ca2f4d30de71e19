//! Adoption after a crash: a supervisor keeps a small state file in the runtime directory
//! (its generations with pid and start time, its listeners with their inodes), rewritten
//! whenever they change. A new `zdctl run` of the same service that finds the file, a dead
//! supervisor and a live generation that served takes the listening sockets from that
//! generation (`pidfd_getfd`, each checked against the recorded inode) and carries on with
//! it: clients that came meanwhile waited in the kept queues, and none is refused.
//!
//! A state file whose supervisor still runs (same pid, same start time) is never touched.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};

use super::SupervisorError;
use super::control::Resume;
use super::owner::Owner;
use super::resumed::Taken;
use super::snapshot::{LiveGeneration, Snapshot, read_state_file, write_state_file};
use crate::config::ServiceConfig;

/// Looks for a dead supervisor's generation to adopt. `None`: start afresh (no state
/// file, or nothing of it is alive; a stale file is removed).
pub(super) fn find(
    config: &ServiceConfig,
    runtime_dir: &Path,
) -> Result<Option<Resume>, SupervisorError> {
    let path = crate::paths::state_file_in(runtime_dir, &config.name);
    let adopt_err = |reason: String| SupervisorError::Adopt {
        service: config.name.clone(),
        reason,
    };
    let Some(mut snapshot) = read_state_file(&path).map_err(adopt_err)? else {
        return Ok(None);
    };
    let supervisor = snapshot.supervisor_pid;
    // A zombie is dead: its parent has not reaped it yet.
    let alive = |pid: i32, ticks: u64| {
        crate::proc::start_time_ticks(pid).is_ok_and(|t| t == ticks && ticks != 0)
            && crate::proc::state(pid).is_ok_and(|s| s != 'Z' && s != 'X')
    };
    if supervisor == std::process::id() as i32 || alive(supervisor, snapshot.supervisor_start_ticks)
    {
        return Err(adopt_err(format!(
            "its supervisor (pid {supervisor}) still runs but does not answer on its control \
             socket; stop it (kill {supervisor}) before starting another"
        )));
    }
    snapshot.live.retain(|g| alive(g.pid, g.start_ticks));
    let active = snapshot
        .active
        .and_then(|a| snapshot.live.iter().find(|g| g.generation == a))
        .cloned();
    let Some(active) = active else {
        end_unadoptable(&snapshot.live);
        info!(
            dead_supervisor = supervisor,
            "found the state of a supervisor that died, with no serving generation left: starting afresh"
        );
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    };
    snapshot.check_fits(config).map_err(adopt_err)?;
    let listeners = take_listeners(&active, &snapshot).map_err(adopt_err)?;
    info!(
        dead_supervisor = supervisor,
        generation = active.generation,
        pid = active.pid,
        "adopting the generation of a supervisor that died"
    );
    Ok(Some(Resume {
        taken: Taken::Adopted,
        snapshot,
        control: None,
        listeners: listeners.into_iter().map(Some).collect(),
    }))
}

/// Duplicates the listening sockets of `snapshot` from generation `g`'s processes: the
/// fds whose socket inode is the recorded one.
fn take_listeners(g: &LiveGeneration, snapshot: &Snapshot) -> Result<Vec<OwnedFd>, String> {
    let mut held = Vec::new();
    for pid in std::iter::once(g.pid).chain(crate::proc::descendants(g.pid)) {
        if let Ok(fds) = crate::proc::socket_fds(pid) {
            held.extend(fds.into_iter().map(|(fd, inode)| (pid, fd, inode)));
        }
    }
    snapshot
        .listeners
        .iter()
        .map(|l| {
            let (pid, fd, _) = held
                .iter()
                .find(|(_, _, inode)| *inode == l.inode)
                .ok_or_else(|| {
                    format!(
                        "generation {} (pid {}) no longer holds listener '{}' (socket inode {}); \
                     stop it and start the service afresh",
                        g.generation, g.pid, l.name, l.inode
                    )
                })?;
            crate::proc::duplicate_fd(*pid, *fd).ok_or_else(|| {
                format!(
                    "cannot take listener '{}' from pid {pid} (pidfd_getfd needs the right to \
                     trace it: the same user, or root; Linux 5.6 or later)",
                    l.name
                )
            })
        })
        .collect()
}

/// Ends the generations of a dead supervisor that cannot be adopted (none of them was
/// serving): a generation that was starting was never proven ready, and its sockets would
/// sit in the listeners' groups. SIGKILL through a pidfd, then a wait for them to go.
fn end_unadoptable(live: &[LiveGeneration]) {
    for g in live {
        let Some(pidfd) = crate::proc::pidfd(g.pid) else {
            continue;
        };
        // The pidfd pins the process: if it is still the recorded one, the signal below
        // reaches nothing else, even if its pid was reused since it was checked.
        if crate::proc::start_time_ticks(g.pid).ok() != Some(g.start_ticks) {
            continue;
        }
        warn!(
            generation = g.generation,
            pid = g.pid,
            "ending a generation of the dead supervisor that was not serving"
        );
        let _ = super::process::send_signal(&pidfd, crate::signal::Signal::Kill);
        crate::proc::wait_gone(&pidfd, Duration::from_secs(5));
    }
}

impl Owner {
    /// Writes the state file when what it records has changed. Called after each thing
    /// the owner handles; a snapshot is a few /proc reads.
    pub(super) fn persist(&mut self) {
        let Some(path) = self.st.me.state_file.clone() else {
            return;
        };
        if self.st.stopping {
            return;
        }
        let Ok(snapshot) = self.snapshot() else {
            // A generation is exiting right now: the next change writes it.
            return;
        };
        if self.st.me.written.as_ref() == Some(&snapshot) {
            return;
        }
        match write_state_file(&path, &snapshot) {
            Ok(()) => self.st.me.written = Some(snapshot),
            Err(e) => {
                if self.st.me.written.is_some() {
                    warn!(error = %e, path = %path.display(), "cannot write the state file; a supervisor started after a crash of this one could not adopt the generations");
                }
                self.st.me.written = None;
            }
        }
    }

    /// After a clean stop, nothing is left to adopt.
    pub(super) fn remove_state_file(&self) {
        if let Some(path) = &self.st.me.state_file {
            let _ = std::fs::remove_file(path);
        }
    }
}
