//! A generation this supervisor did not start in its current program:
//!
//! - started before a `reexec`: it is still our child, and what it needs (its pidfd, its
//!   cgroup, its notify socket, the interception of its binds, the forwarding of its
//!   output) is set up again from the [`LiveGeneration`] record and the fds kept across
//!   `execve`;
//! - adopted from a supervisor that died: it is not our child, so its exit status goes to
//!   its new parent (we see only that it exited, through its pidfd) and we never reap it;
//!   what it leaves behind is ended through its cgroup, where there is one (without one,
//!   its process group is not ours to signal: its pid may be reused once another parent
//!   reaped it). The interception of its binds and its output pipe died with the old
//!   supervisor: a bind it makes from now on fails (ENOSYS), and with `log_prefix` its
//!   writes to stdout or stderr fail (EPIPE).

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::warn;

use super::child::{BoxFuture, Carried, ChildProcess};
use super::output::{OutputLog, Pipes};
use super::process::{
    LEFTOVERS_LIMIT, carried, kill_group, lock, reap_generation, send_signal, unread_input_of,
    wait_exit, wait_gone,
};
use super::snapshot::LiveGeneration;
use crate::contain::{GenerationCgroup, OwnChildren, ServiceCgroups};
use crate::handoff::intercept::{InterceptCounts, Interception};
use crate::listen::Listener;
use crate::proto::ExitInfo;
use crate::ready::{NotifySender, NotifySocket, ReadyCheck};
use crate::signal::Signal;

/// How a generation came to this supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// Across this supervisor's own `reexec`: still our child.
    Reexec,
    /// From a supervisor that died: not our child.
    Adopted,
}

#[derive(Debug)]
pub(super) struct Resumed {
    pid: i32,
    taken: Taken,
    pidfd: Arc<OwnedFd>,
    spawned_at: Instant,
    cgroup: Mutex<Option<Arc<GenerationCgroup>>>,
    notify: Mutex<Option<NotifySocket>>,
    interception: Mutex<Option<Interception>>,
    intercept_counts: Option<Arc<InterceptCounts>>,
    output: Option<Arc<OutputLog>>,
    pipes: Pipes,
}

impl Resumed {
    /// Takes generation `record` over. After a `reexec` it is still our child, and its fds
    /// are open in this process at the numbers recorded; it is listed as our own child at
    /// once, so the orphan reaper leaves it alone (call this before any task reaps).
    pub fn take(
        record: &LiveGeneration,
        taken: Taken,
        listeners: &[Listener],
        service: &str,
        runtime_dir: &Path,
        cgroups: Option<&ServiceCgroups>,
    ) -> Result<Resumed, String> {
        let generation = record.generation;
        let pidfd = crate::proc::pidfd(record.pid)
            .ok_or_else(|| format!("generation {generation} (pid {}) is gone", record.pid))?;
        let same = crate::proc::start_time_ticks(record.pid).is_ok_and(|t| t == record.start_ticks);
        if !same {
            return Err(format!(
                "pid {} is no longer generation {generation}",
                record.pid
            ));
        }
        let ours = taken == Taken::Reexec;
        if ours {
            OwnChildren::get().lock().insert(record.pid);
        }
        let cgroup = match (&record.cgroup, taken) {
            (Some(_), Taken::Reexec) => {
                cgroups.map(|c| c.instance(generation, record.instance, record.respawns))
            }
            (Some(rel), Taken::Adopted) => Some(GenerationCgroup::open_existing(service, rel)),
            (None, _) => None,
        };
        let cgroup = cgroup.and_then(|c| {
            c.inspect_err(
                |e| warn!(generation, error = %e, "cannot open the generation's cgroup again"),
            )
            .ok()
            .map(Arc::new)
        });
        let notify_path = crate::paths::instance_notify_socket_in(
            runtime_dir,
            service,
            generation,
            record.instance,
        );
        let notify = NotifySocket::bind(&notify_path)
            .inspect_err(|e| warn!(generation, error = %e, "cannot bind the notify socket again"))
            .ok();
        if let Some(n) = &notify {
            n.admit(NotifySender {
                pid: record.pid,
                cgroup: cgroup.as_ref().map(|c| c.rel().to_owned()),
            });
        }
        // An adopted generation's fds were the dead supervisor's: none is ours.
        let kept = |fd: Option<i32>| fd.filter(|_| ours);
        let interception = kept(record.intercept_fd).and_then(|fd| {
            // SAFETY: the previous binary kept this fd open for us; nothing else owns it.
            let notify = unsafe { OwnedFd::from_raw_fd(fd) };
            Interception::resume(generation, record.pid, notify, listeners)
                .inspect_err(
                    |e| warn!(generation, error = %e, "cannot answer the generation's binds again"),
                )
                .ok()
        });
        let intercept_counts = interception.as_ref().map(Interception::counts);
        let output = record.keep_output.then(|| {
            Arc::new(OutputLog::of_instance(
                generation,
                record.instance,
                record.log_lines as usize,
            ))
        });
        let read_ends = if ours {
            [0, 1].map(|i| {
                let fd = record.output_fds[i]?;
                // SAFETY: the previous binary kept this fd open for us: it is ours unless
                // its number names another file than the pipe recorded (then it is left
                // alone rather than closed: it could be another fd handed over).
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let inode = nix::sys::stat::fstat(borrowed).ok().map(|s| s.st_ino);
                if record.output_inodes[i].is_some_and(|want| inode != Some(want)) {
                    warn!(
                        generation,
                        fd, "an output pipe handed over is not the one recorded; not read"
                    );
                    return None;
                }
                // SAFETY: as above.
                Some(unsafe { OwnedFd::from_raw_fd(fd) })
            })
        } else {
            // The dead supervisor's were closed with it; the generation holds its own.
            record
                .output_inodes
                .map(|inode| take_read_end(record.pid, inode?))
        };
        let pipes = Pipes::read(
            read_ends,
            record.prefix.clone(),
            record.log_lines,
            output.as_ref(),
        );
        Ok(Resumed {
            pid: record.pid,
            taken,
            pidfd: Arc::new(pidfd),
            spawned_at: Instant::now(),
            cgroup: Mutex::new(cgroup),
            notify: Mutex::new(notify),
            interception: Mutex::new(interception),
            intercept_counts,
            output,
            pipes,
        })
    }
}

/// Duplicates the read end of output pipe `inode` from generation `pid`'s process tree,
/// where the generation keeps it (see `handoff::child::KEEP_READ_ENDS`).
fn take_read_end(pid: i32, inode: u64) -> Option<OwnedFd> {
    let taken = std::iter::once(pid)
        .chain(crate::proc::descendants(pid))
        .find_map(|p| {
            let fd = crate::proc::pipe_read_end(p, inode)?;
            // The fd number was read from /proc before the pidfd was taken: a pid reused
            // in between could hand us another file, which is checked and dropped.
            let taken = crate::proc::duplicate_fd(p, fd)?;
            nix::sys::stat::fstat(&taken)
                .is_ok_and(|s| s.st_ino == inode)
                .then_some(taken)
        });
    if taken.is_none() {
        warn!(
            pid,
            inode,
            "cannot take the read end of the generation's output pipe: its output is lost, and \
             once the pipe is full its writes wait (a restart gives it new pipes)"
        );
    }
    taken
}

impl ChildProcess for Resumed {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        send_signal(&self.pidfd, signal)
    }

    fn kill(&self) {
        if self.taken == Taken::Reexec {
            // Our unreaped child: its group id cannot have been reused.
            kill_group(self.pid);
        }
        let _ = send_signal(&self.pidfd, Signal::Kill);
    }

    fn wait_exit(&self) -> BoxFuture<'_, ExitInfo> {
        match self.taken {
            Taken::Reexec => Box::pin(wait_exit(&self.pidfd)),
            Taken::Adopted => {
                let pidfd = self.pidfd.clone();
                Box::pin(async move {
                    // Not our child: its status goes to its parent.
                    wait_gone(&pidfd).await;
                    ExitInfo::Unknown
                })
            }
        }
    }

    fn end_leftovers(&self, live: Vec<i32>) -> BoxFuture<'_, ()> {
        let cgroup = lock(&self.cgroup).clone();
        let pid = self.pid;
        let taken = self.taken;
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || match taken {
                Taken::Reexec => {
                    crate::contain::end_leftovers(pid, cgroup.as_deref(), &live, LEFTOVERS_LIMIT);
                }
                Taken::Adopted => {
                    if let Some(cg) = cgroup {
                        cg.kill_all(LEFTOVERS_LIMIT);
                    }
                }
            })
            .await;
        })
    }

    fn reap(&self) -> BoxFuture<'_, ()> {
        let cgroup = lock(&self.cgroup).take();
        match self.taken {
            Taken::Reexec => Box::pin(reap_generation(self.pid, self.pidfd.clone(), cgroup)),
            // Its parent reaps it; its cgroup goes now that it is empty.
            Taken::Adopted => Box::pin(async move { drop(cgroup) }),
        }
    }

    fn wait_ready<'a>(&'a self, _: &'a [ReadyCheck]) -> BoxFuture<'a, Result<String, String>> {
        // Only generations that were serving are taken over.
        Box::pin(async { Ok("served before this supervisor took it over".to_owned()) })
    }

    fn not_ready_detail(&self, _: &[ReadyCheck]) -> String {
        String::new()
    }

    fn exec_failure(&self) -> Option<String> {
        None
    }

    fn end_idle_start(&self) {}

    fn release(&self) {
        lock(&self.notify).take();
        lock(&self.interception).take();
    }

    fn intercept_counts(&self) -> Option<Arc<InterceptCounts>> {
        self.intercept_counts.clone()
    }

    fn output(&self) -> Option<Arc<OutputLog>> {
        self.output.clone()
    }

    fn unread_input(&self, ports: Vec<u16>) -> BoxFuture<'_, bool> {
        Box::pin(unread_input_of(self.pid, ports))
    }

    fn carried(&self) -> Carried {
        carried(&self.cgroup, &self.interception, &self.pipes, &self.output)
    }
}
