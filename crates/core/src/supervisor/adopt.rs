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
        match &self.st.me.writer {
            Some(writer) => writer.write(path, snapshot.clone()),
            None => {
                if let Err(e) = write_state_file(&path, &snapshot) {
                    warn!(error = %e, path = %path.display(), "cannot write the state file");
                }
            }
        }
        self.st.me.written = Some(snapshot);
    }

    /// After a clean stop, nothing is left to adopt: the state file goes, after any write
    /// still waiting.
    pub(super) fn remove_state_file(&self) {
        let Some(path) = &self.st.me.state_file else {
            return;
        };
        match &self.st.me.writer {
            Some(writer) => writer.remove(path.clone()),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Writes the state file on a thread of its own, so that the owner never waits on the
/// file system: a rename over the previous file waits for that file's pages to be written
/// back, which took the owner seconds at a time on a busy disk (kernel stacks in
/// `folio_wait_writeback` under `do_renameat2`, seen with a pool of 4 under load). Writes
/// are done in order, and of those waiting only the newest is written.
#[derive(Debug)]
pub(super) struct StateWriter {
    tx: std::sync::mpsc::Sender<StateWrite>,
}

#[derive(Debug)]
enum StateWrite {
    Write(std::path::PathBuf, Box<Snapshot>),
    /// Remove the file, then say so.
    Remove(std::path::PathBuf, std::sync::mpsc::Sender<()>),
}

/// How long a clean stop waits for the state file to be removed.
const REMOVE_WAIT: Duration = Duration::from_secs(5);

impl StateWriter {
    pub(super) fn start() -> StateWriter {
        let (tx, rx) = std::sync::mpsc::channel::<StateWrite>();
        let spawned = std::thread::Builder::new()
            .name("zdctl-state".to_owned())
            .spawn(move || {
                let mut failing = false;
                while let Ok(first) = rx.recv() {
                    let mut newest = None;
                    for job in std::iter::once(first).chain(rx.try_iter()) {
                        match job {
                            StateWrite::Write(path, snapshot) => newest = Some((path, snapshot)),
                            StateWrite::Remove(path, done) => {
                                newest = None;
                                let _ = std::fs::remove_file(&path);
                                let _ = done.send(());
                            }
                        }
                    }
                    let Some((path, snapshot)) = newest else { continue };
                    match write_state_file(&path, &snapshot) {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            warn!(error = %e, path = %path.display(), "cannot write the state file; a supervisor started after a crash of this one could not adopt the generations");
                        }
                        Err(_) => {}
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the state file's writer");
        }
        StateWriter { tx }
    }

    fn write(&self, path: std::path::PathBuf, snapshot: Snapshot) {
        let _ = self.tx.send(StateWrite::Write(path, Box::new(snapshot)));
    }

    /// Removes the file once the writes before are done, waiting for it a while.
    fn remove(&self, path: std::path::PathBuf) {
        let (done, removed) = std::sync::mpsc::channel();
        if self
            .tx
            .send(StateWrite::Remove(path.clone(), done))
            .is_err()
        {
            let _ = std::fs::remove_file(&path);
            return;
        }
        if removed.recv_timeout(REMOVE_WAIT).is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
}
