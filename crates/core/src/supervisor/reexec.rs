//! `zdctl reexec` (and SIGUSR2): the supervisor replaces its own program in place.
//!
//! 1. The owner takes a [`Snapshot`] of a quiescent service (no restart or stop running,
//!    one live generation at most) into a memfd.
//! 2. The new binary is run once with the snapshot (`ZDCTL_REEXEC_CHECK`) and the
//!    supervisor's own arguments: it reads the service file and the snapshot, checks that
//!    they fit, prints [`CHECKED`] and its version, and exits. A binary that crashes, is not
//!    executable, cannot read this snapshot or the service file fails here, and nothing
//!    has changed.
//! 3. The owner takes the snapshot again; if the service changed during the check (a
//!    generation died) the reexec is refused. Otherwise it answers the client, clears
//!    close-on-exec on the fds the snapshot names and `execve`s the new binary with
//!    `ZDCTL_REEXEC_STATE`, keeping its pid, its children and every socket.
//!
//! During the exec the listeners stay open (their fds survive), so the kernel keeps
//! queueing connections, and the generations never notice. The supervisor's handlers for
//! HUP, TERM, INT and USR2 are set to "ignore" just before `execve`, so that a signal in
//! the moment before the new binary installs its own is lost rather than fatal.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tracing::{error, info, warn};

use super::child::ChildProcess;
use super::output::OutputLog;
use super::owner::{Msg, Owner, ReexecCheck};
use super::resumed::Taken;
use super::snapshot::{
    CHECK_FD_VAR, CHECKED, Identity, LiveGeneration, STATE_FD_VAR, Snapshot, not_quiescent,
    set_cloexec,
};
use super::state::{FailedStart, Failing};
use crate::proto::{
    AdoptedInfo, ErrorKind, FailingInfo, LogStream, ReexecInfo, Replies, Reply, ReplyResult,
    unix_ms,
};

/// Where the next binary finds the number its output lines continue from (see
/// [`super::output::continue_from`]).
pub(super) const LOG_SEQ_VAR: &str = "ZDCTL_REEXEC_LOG_SEQ";

/// How much of each of the check's output streams is read.
const CHECK_OUTPUT: u64 = 64 * 1024;

/// How long the new binary may take to check the snapshot.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// A new binary that checked the snapshot, waiting for the owner to hand over to it.
#[derive(Debug)]
pub(super) struct Checked {
    snapshot: Snapshot,
    memfd: OwnedFd,
    binary: String,
    version: String,
    requester: Option<(u64, Replies)>,
}

impl Owner {
    /// Begins a reexec into `binary` (the installed one when `None`), for the client
    /// `requester` (none for SIGUSR2).
    pub(super) fn begin_reexec(
        &mut self,
        binary: Option<String>,
        requester: Option<(u64, Replies)>,
    ) {
        let binary = binary.unwrap_or_else(|| self.st.me.binary.clone());
        let refuse = |kind: ErrorKind, message: String| {
            if let Some((id, replies)) = requester.clone() {
                tokio::spawn(async move {
                    let _ = replies.send(Reply::error(id, kind, message)).await;
                });
            } else {
                warn!(%message, "SIGUSR2: no reexec");
            }
        };
        if self.st.me.reexecing {
            return refuse(ErrorKind::Busy, "a reexec is already being checked".into());
        }
        if let Some(reason) = not_quiescent(&self.st) {
            return refuse(ErrorKind::Busy, reason);
        }
        if let Err(reason) = executable(&binary) {
            self.record_reexec(&binary, Some(reason.clone()));
            return refuse(ErrorKind::Invalid, reason);
        }
        let snapshot = match self.snapshot() {
            Ok(s) => s,
            Err(reason) => return refuse(ErrorKind::Internal, reason),
        };
        let memfd = match snapshot.to_memfd() {
            Ok(fd) => fd,
            Err(e) => {
                return refuse(
                    ErrorKind::Internal,
                    format!("cannot write the state for the next binary: {e}"),
                );
            }
        };
        info!(binary, "reexec: checking the new binary");
        self.st.me.reexecing = true;
        let args = self.st.me.args.clone();
        let owner = self.cx.owner.clone();
        tokio::spawn(async move {
            let checked = check(&binary, &args, &memfd).await;
            let _ = owner.send(Msg::ReexecChecked(match checked {
                Ok(version) => Ok(Box::new(Checked {
                    snapshot,
                    memfd,
                    binary,
                    version,
                    requester,
                })),
                Err(reason) => Err((binary, reason, requester)),
            }));
        });
    }

    /// The check ended: hand over to the new binary, or say why not.
    pub(super) async fn finish_reexec(&mut self, checked: ReexecCheck) {
        self.st.me.reexecing = false;
        let checked = match checked {
            Ok(c) => *c,
            Err((binary, reason, requester)) => {
                error!(binary, %reason, "reexec refused: the new binary cannot take over");
                self.record_reexec(&binary, Some(reason.clone()));
                answer(requester, Err(reason)).await;
                return;
            }
        };
        let Checked {
            snapshot,
            memfd,
            binary,
            version,
            requester,
        } = checked;
        // The service may have changed while the new binary checked the snapshot.
        let now = not_quiescent(&self.st)
            .map_or_else(|| self.snapshot(), Err)
            .and_then(|s| {
                (s == snapshot).then_some(s).ok_or_else(|| {
                    "the service changed while the new binary was checked; try again".to_owned()
                })
            });
        if let Err(reason) = now {
            warn!(%reason, "reexec refused");
            self.record_reexec(&binary, Some(reason.clone()));
            answer(requester, Err(reason)).await;
            return;
        }
        info!(binary, from = %snapshot.version, to = %version, "reexec: handing over");
        answer(
            requester,
            Ok(format!(
                "handing over to {binary} ({version}), checked; pid {} stays",
                std::process::id()
            )),
        )
        .await;
        let e = exec(&binary, &self.st.me.args, &snapshot, &memfd);
        let reason = format!("cannot execute {binary}: {e}");
        error!(%reason, "reexec failed; this binary goes on");
        self.record_reexec(&binary, Some(reason));
    }

    /// Carries on from the state the previous binary of this supervisor handed over
    /// (`Taken::Reexec`), or that a supervisor that died left (`Taken::Adopted`), with the
    /// generations taken over (`resumed`). Adopted generations that were not the active
    /// one are drained; a service whose active generation was lost is respawned.
    pub(super) fn resume(
        &mut self,
        taken: Taken,
        snapshot: Snapshot,
        resumed: Vec<(LiveGeneration, Arc<dyn ChildProcess>)>,
    ) -> Result<(), String> {
        let st = &mut self.st;
        st.next_generation = snapshot.next_generation;
        st.restart_seq = snapshot.restart_seq;
        st.counters = snapshot.counters;
        st.last_restart = snapshot.last_restart;
        st.crash_streak = snapshot.crash_streak;
        st.failing = snapshot.failing.map(failing_from);
        st.me.reexecs = snapshot.reexecs;
        st.me.last_reexec = snapshot.last_reexec;
        st.me.adopted = snapshot.adopted;
        let mut ids: Vec<u64> = resumed.iter().map(|(r, _)| r.generation).collect();
        ids.dedup();
        match taken {
            Taken::Reexec => {
                st.me.started =
                    SystemTime::UNIX_EPOCH + Duration::from_millis(snapshot.started_unix_ms);
                st.me.binary = snapshot.binary;
                st.me.reexecs += 1;
                st.me.last_reexec = Some(ReexecInfo {
                    unix_ms: unix_ms(SystemTime::now()),
                    from_version: snapshot.version.clone(),
                    binary: st.me.binary_now(),
                    error: None,
                });
                info!(
                    from = %snapshot.version,
                    to = %crate::version::version(),
                    generations = ?ids,
                    "reexec: this binary took over"
                );
            }
            Taken::Adopted => {
                st.me.adopted = Some(AdoptedInfo {
                    unix_ms: unix_ms(SystemTime::now()),
                    from_pid: snapshot.supervisor_pid,
                    generations: ids.clone(),
                });
                info!(
                    dead_supervisor = snapshot.supervisor_pid,
                    generations = ?ids,
                    "adopted the generations of the supervisor that died"
                );
            }
        }
        for (record, child) in resumed {
            self.resume_generation(&record, child);
        }
        let active = snapshot.active.filter(|g| ids.contains(g));
        self.st.active = active;
        if let Some(pid) = self.st.active_generation().map(|g| g.pid) {
            self.write_pidfile(pid);
        }
        // What was starting or draining when the supervisor died is not the service.
        let leftovers: Vec<u64> = ids.into_iter().filter(|g| Some(*g) != active).collect();
        for generation in leftovers {
            let cx = self.cx.clone();
            tokio::spawn(async move { super::drain::drain(&cx, generation, None).await });
        }
        if active.is_none() && self.st.failing.is_none() {
            return self.start_active(true);
        }
        // An instance of the pool that had died was waiting for its respawn, whose timer
        // did not come along: it starts again now.
        if let Some(g) = active {
            let of = self.st.first_of(g).map_or(1, |i| i.of);
            let missing: Vec<u32> = (0..of)
                .filter(|i| !self.st.instances.get(&(g, *i)).is_some_and(|r| r.is_live()))
                .collect();
            for instance in missing {
                self.schedule_instance_respawn((g, instance), Duration::ZERO);
            }
        }
        // The previous binary's `restart.refuse_after` timer did not come along.
        self.arm_refuse_timer();
        Ok(())
    }

    /// A snapshot of the service as it is now, with this process's fds.
    pub(super) fn snapshot(&self) -> Result<Snapshot, String> {
        let me = &self.st.me;
        Snapshot::of(
            &self.st,
            Identity {
                started: me.started,
                binary: &me.binary,
                control_fd: me.control_fd,
                reexecs: me.reexecs,
                last_reexec: me.last_reexec.clone(),
                adopted: me.adopted.clone(),
            },
        )
    }

    fn record_reexec(&mut self, binary: &str, error: Option<String>) {
        self.st.me.last_reexec = Some(ReexecInfo {
            unix_ms: unix_ms(SystemTime::now()),
            from_version: crate::version::version(),
            binary: binary.to_owned(),
            error,
        });
    }
}

/// The failing state as the previous binary recorded it.
fn failing_from(info: FailingInfo) -> Failing {
    let output = Arc::new(OutputLog::new(info.generation.unwrap_or(0), 0));
    for line in &info.output {
        output.push(LogStream::Stderr, line.as_bytes());
    }
    let since = SystemTime::UNIX_EPOCH + Duration::from_millis(info.since_unix_ms);
    let failing_for = SystemTime::now().duration_since(since).unwrap_or_default();
    let now = tokio::time::Instant::now();
    Failing {
        since,
        began: now.checked_sub(failing_for).unwrap_or(now),
        refusing_since: info
            .refusing_since_unix_ms
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        failed_starts: info.failed_starts,
        window: Duration::from_millis(info.window_ms),
        last: FailedStart {
            generation: info.generation,
            pid: info.pid,
            exit: info.exit,
            reason: info.reason,
            output: Some(output),
        },
    }
}

/// Answers the client of a reexec, and waits (a moment at most) for it to read the answer
/// and hang up: the process may be replaced right after.
async fn answer(requester: Option<(u64, Replies)>, outcome: Result<String, String>) {
    let Some((id, replies)) = requester else {
        return;
    };
    let reply = match outcome {
        Ok(message) => Reply::result(id, ReplyResult::Done { message }),
        Err(message) => Reply::error(id, ErrorKind::Internal, message),
    };
    if replies.send(reply).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), replies.closed()).await;
    }
}

/// Why `binary` cannot be executed, if it cannot.
fn executable(binary: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(binary).map_err(|e| format!("cannot use {binary}: {e}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{binary} is not an executable file; give the path of a zdctl binary"
        ));
    }
    Ok(())
}

/// Runs `binary` with the supervisor's arguments and the snapshot in `memfd`, to check
/// that it can take over; returns the version it reports.
async fn check(binary: &str, args: &[OsString], memfd: &OwnedFd) -> Result<String, String> {
    let fd = memfd.as_raw_fd();
    let mut command = tokio::process::Command::new(binary);
    command
        .args(args)
        .env(CHECK_FD_VAR, fd.to_string())
        .env_remove(STATE_FD_VAR)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure only calls fcntl on an fd the parent keeps open, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(move || set_cloexec(fd, false));
    }
    // Listed as our own child before the orphan reaper could see it (see crate::contain).
    let mut child = {
        let mut own = crate::contain::OwnChildren::get().lock();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {binary}: {e}"))?;
        own.insert(child.id().map_or(0, |p| p as i32));
        child
    };
    let _listed = crate::contain::Listed(child.id().map_or(0, |p| p as i32));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        // Both at once: a binary that fills one pipe while we wait on the other would
        // otherwise hang until the timeout.
        let (out, err) = tokio::join!(read_some(stdout.as_mut()), read_some(stderr.as_mut()));
        let status = child.wait().await;
        (status, out, err)
    })
    .await;
    let Ok((status, out, err)) = outcome else {
        return Err(format!(
            "{binary} did not answer within {}s",
            CHECK_TIMEOUT.as_secs()
        ));
    };
    let status = status.map_err(|e| format!("cannot wait for {binary}: {e}"))?;
    let out = String::from_utf8_lossy(&out);
    let err = String::from_utf8_lossy(&err);
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix(CHECKED))
        .map(|v| v.trim().to_owned());
    match version {
        Some(version) if status.success() => Ok(version),
        _ => {
            let last_line = |text: &str| {
                text.lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_owned)
            };
            let said = last_line(&err)
                .or_else(|| last_line(&out))
                .unwrap_or_else(|| "nothing".to_owned());
            Err(format!(
                "{binary} cannot take over ({status}): it said: {said}"
            ))
        }
    }
}

/// At most [`CHECK_OUTPUT`] bytes of a check's output stream.
async fn read_some(pipe: Option<&mut (impl tokio::io::AsyncRead + Unpin)>) -> Vec<u8> {
    let mut text = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(CHECK_OUTPUT).read_to_end(&mut text).await;
    }
    text
}

/// Replaces this process's program with `binary`, handing it the fds of `snapshot` and the
/// snapshot itself. Returns only if `execve` failed, with everything as it was.
fn exec(binary: &str, args: &[OsString], snapshot: &Snapshot, memfd: &OwnedFd) -> std::io::Error {
    let to_c = |b: &[u8]| CString::new(b).map_err(std::io::Error::other);
    let prepared = (|| -> std::io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = to_c(binary.as_bytes())?;
        let mut argv = vec![path.clone()];
        for a in args {
            argv.push(to_c(a.as_bytes())?);
        }
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k == STATE_FD_VAR || k == CHECK_FD_VAR || k == LOG_SEQ_VAR {
                continue;
            }
            let mut pair = k.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(v.as_bytes());
            env.push(to_c(&pair)?);
        }
        env.push(to_c(
            format!("{STATE_FD_VAR}={}", memfd.as_raw_fd()).as_bytes(),
        )?);
        // Not in the snapshot, which must not change while the new binary checks it.
        env.push(to_c(
            format!("{LOG_SEQ_VAR}={}", super::output::seq_bound()).as_bytes(),
        )?);
        Ok((path, argv, env))
    })();
    let (path, argv, env) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut fds = snapshot.fds();
    fds.push(memfd.as_raw_fd());
    for fd in &fds {
        if let Err(e) = set_cloexec(*fd, false) {
            restore(&fds);
            return e;
        }
    }
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let saved = ignore_stop_signals();
    // SAFETY: path, argv and envp are NUL-terminated strings in NULL-terminated arrays,
    // alive for the call; execve returns only on failure.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    let e = std::io::Error::last_os_error();
    restore_signals(saved);
    restore(&fds);
    e
}

fn restore(fds: &[i32]) {
    for fd in fds {
        let _ = set_cloexec(*fd, true);
    }
}

/// The signals the supervisor handles, whose default action would end it.
const HANDLED: [i32; 4] = [libc::SIGHUP, libc::SIGTERM, libc::SIGINT, libc::SIGUSR2];

/// Sets the handled signals to "ignore" and returns the actions they had.
fn ignore_stop_signals() -> Vec<(i32, libc::sigaction)> {
    HANDLED
        .iter()
        .filter_map(|&sig| {
            // SAFETY: sigaction is plain data; zeroed with SIG_IGN is a valid action.
            let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
            ignore.sa_sigaction = libc::SIG_IGN;
            // SAFETY: as above, the old action is written to `old`.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are valid for the call.
            let rc = unsafe { libc::sigaction(sig, &ignore, &mut old) };
            (rc == 0).then_some((sig, old))
        })
        .collect()
}

fn restore_signals(saved: Vec<(i32, libc::sigaction)>) {
    for (sig, old) in saved {
        // SAFETY: `old` is the action sigaction gave us for this signal.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
}
