//! The real child processes behind the seam ([`super::child`]): starting a generation,
//! watching it exit, ending what it left, forwarding its output, signalling it, and its
//! readiness as /proc and its notify socket show it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use super::child::{BoxFuture, Carried, ChildProcess, Children, SpawnRequest};
use super::output::{MAX_LINE, OutputLog, Pipes, Slot};
use super::start_priority::IdleStart;
use crate::config::StartPriority;
use crate::contain::{GenerationCgroup, OwnChildren, ServiceCgroups};
use crate::handoff::intercept::{InterceptCounts, Interception};
use crate::handoff::{ExecReport, SpawnSpec, spawn_generation, start_child};
use crate::proto::{ExitInfo, LogStream};
use crate::ready::{NotifySender, NotifySocket, ReadyCheck, ReadyContext, wait_ready};
use crate::signal::Signal;

/// Starts generations as real processes.
pub(super) struct Processes {
    /// Where each generation's notify socket is bound.
    pub runtime_dir: PathBuf,
    /// Where generations get their cgroups; `None` where cgroup v2 is not writable.
    pub cgroups: Option<ServiceCgroups>,
}

/// A generation's process.
#[derive(Debug)]
struct Process {
    pid: i32,
    /// A pidfd, so that signals can never reach a recycled pid.
    pidfd: Arc<OwnedFd>,
    /// Why the child could not reach its program, to ask once it has exited. Dropped as
    /// soon as the program is known to run (its exec was waited for, or it is ready): it
    /// holds the child's stack and a pipe.
    exec: Mutex<Option<ExecReport>>,
    /// When the clone returned (or, when waiting for the exec, when that ended).
    spawned_at: Instant,
    /// Its start at the idle priority, to end once it is ready.
    idle_start: IdleStart,
    /// Keeps the NOTIFY_SOCKET alive (and removes it on drop) until [`ChildProcess::release`].
    notify: Mutex<Option<NotifySocket>>,
    /// The generation's cgroup, where cgroups are used; dropped (removed) once the
    /// generation has ended.
    cgroup: Mutex<Option<Arc<GenerationCgroup>>>,
    /// The move into the cgroup, on a blocking thread; ending the leftovers waits for it,
    /// or a process it had still to move (on a busy machine it may run after the
    /// generation's exit) would escape the cgroup's kill.
    adoption: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What the readiness checks need.
    ready: ReadyContext,
    /// With `intercept_binds`: the thread that answers its binds, until
    /// [`ChildProcess::release`].
    interception: Mutex<Option<Interception>>,
    /// What that thread answered, kept after it has ended.
    intercept_counts: Option<Arc<InterceptCounts>>,
    /// The last lines it printed, when its output goes through us.
    output: Option<Arc<OutputLog>>,
    /// Its output pipes, while their forwarders run: a `reexec` hands them to the next
    /// binary.
    pipes: Pipes,
}

impl Children for Processes {
    /// Starts the next generation with `request.config` and returns it.
    fn spawn(&self, request: SpawnRequest<'_>) -> Result<Arc<dyn ChildProcess>, String> {
        let SpawnRequest {
            generation,
            instance,
            respawns,
            config,
            listeners,
            wait_exec,
            exited,
            keep_output,
        } = request;
        let cgroup = self.cgroups.as_ref().and_then(|c| match c.instance(generation, instance, respawns) {
            Ok(cg) => Some(Arc::new(cg)),
            Err(e) => {
                warn!(generation, error = %e, "cannot create the generation's cgroup; its processes are found by process group");
                None
            }
        });
        let notify_path = crate::paths::instance_notify_socket_in(
            &self.runtime_dir,
            &config.name,
            generation,
            instance,
        );
        let notify = match NotifySocket::bind(&notify_path) {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(error = %e, path = %notify_path.display(), "cannot create the notify socket");
                None
            }
        };
        let spec = SpawnSpec {
            service: &config.name,
            generation,
            instance,
            command: &config.command,
            workdir: config.workdir.as_deref(),
            env: &config.env,
            listeners,
            notify_socket: notify.as_ref().map(|n| n.path()),
            capture_output: config.log_lines > 0 || config.log_prefix || keep_output,
            nice: super::priority::generation_nice(),
            idle_start: config.start_priority == StartPriority::Idle,
            intercept_binds: config.intercept_binds,
        };
        // Listed as our own child before a sweep for orphans could see it.
        let spawned = {
            let mut own = OwnChildren::get().lock();
            let spawned = if wait_exec {
                // Waiting for the exec can take a while on a busy machine: keep it off the
                // worker threads that serve the control socket and reap children.
                crate::rt::blocking(|| spawn_generation(&spec))
            } else {
                start_child(&spec)
            }
            .map_err(|e| e.to_string())?;
            own.insert(spawned.pid);
            spawned
        };
        let spawned_at = Instant::now();
        let pid = spawned.pid;
        info!(generation, instance, pid, "spawned");
        // Into its cgroup by our hand, not the child's: a migration's wait would delay the
        // exec (GenerationCgroup::adopt).
        let adoption = cgroup.clone().map(|cg| {
            tokio::task::spawn_blocking(move || {
                let moved = cg.adopt(pid);
                debug!(generation, pid, moved, "moved into the generation's cgroup");
            })
        });
        if let Some(n) = &notify {
            n.admit(NotifySender {
                pid,
                cgroup: cgroup.as_ref().map(|c| c.rel().to_owned()),
            });
        }
        let interception = match spawned.intercept {
            Some(channel) => match Interception::start(generation, pid, channel, listeners) {
                Ok(i) => Some(i),
                Err(e) => {
                    // Its binds would wait forever: end it (alone in its group, at most
                    // just exec'd), reap it, and the restart reports why.
                    kill_group(pid);
                    let _ = send_signal(&spawned.pidfd, Signal::Kill);
                    let mut status = 0;
                    // SAFETY: waiting for our own child, just killed.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    OwnChildren::get().forget(pid);
                    return Err(format!(
                        "cannot intercept the binds of generation {generation}: {e}"
                    ));
                }
            },
            None => None,
        };
        let intercept_counts = interception.as_ref().map(Interception::counts);
        let output = spec.capture_output.then(|| {
            Arc::new(OutputLog::of_instance(
                generation,
                instance,
                config.log_lines as usize,
            ))
        });
        let prefix = if config.log_prefix && config.instances > 1 {
            format!("[{} gen {generation}.{instance}] ", config.name)
        } else if config.log_prefix {
            format!("[{} gen {generation}] ", config.name)
        } else {
            String::new()
        };
        let pipes = Pipes::read(
            [spawned.stdout, spawned.stderr],
            prefix,
            config.log_lines,
            output.as_ref(),
        );
        let idle_start = if spec.idle_start {
            IdleStart::begin(pid, exited)
        } else {
            IdleStart::default()
        };
        let ready = ReadyContext {
            service: config.name.clone(),
            generation,
            instance,
            pid,
            listener_inodes: crate::ready::accepting::watched_inodes(listeners),
            notify: notify.as_ref().map(|n| n.state()),
            idle_start: idle_start.began(),
        };
        Ok(Arc::new(Process {
            pid,
            pidfd: Arc::new(spawned.pidfd),
            exec: Mutex::new((!wait_exec).then_some(spawned.exec)),
            spawned_at,
            idle_start,
            notify: Mutex::new(notify),
            cgroup: Mutex::new(cgroup),
            adoption: Mutex::new(adoption),
            ready,
            interception: Mutex::new(interception),
            intercept_counts,
            output,
            pipes,
        }))
    }

    fn containment(&self) -> String {
        match &self.cgroups {
            Some(c) => format!("cgroup:{}", c.rel()),
            None => "process-group".to_owned(),
        }
    }
}

impl ChildProcess for Process {
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
        kill_group(self.pid);
        let _ = send_signal(&self.pidfd, Signal::Kill);
    }

    fn wait_exit(&self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(wait_exit(&self.pidfd))
    }

    fn end_leftovers(&self, live: Vec<i32>) -> BoxFuture<'_, ()> {
        let cgroup = lock(&self.cgroup).clone();
        let adoption = lock(&self.adoption).take();
        let pid = self.pid;
        Box::pin(async move {
            if let Some(adoption) = adoption {
                let _ = adoption.await;
            }
            let _ = tokio::task::spawn_blocking(move || {
                crate::contain::end_leftovers(pid, cgroup.as_deref(), &live, LEFTOVERS_LIMIT);
            })
            .await;
        })
    }

    fn reap(&self) -> BoxFuture<'_, ()> {
        let cgroup = lock(&self.cgroup).take();
        Box::pin(reap_generation(self.pid, self.pidfd.clone(), cgroup))
    }

    fn wait_ready<'a>(&'a self, checks: &'a [ReadyCheck]) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let evidence = wait_ready(checks, &self.ready).await;
            if evidence.is_ok() {
                // Ready: the program runs, so its exec report has nothing left to say.
                lock(&self.exec).take();
            }
            evidence.map_err(|e| e.to_string())
        })
    }

    fn not_ready_detail(&self, checks: &[ReadyCheck]) -> String {
        if !checks.contains(&ReadyCheck::Accepting) {
            return String::new();
        }
        let intercepting = lock(&self.interception).is_some();
        let seen = crate::rt::blocking(|| {
            crate::ready::accepting::describe(self.pid, &self.ready.listener_inodes, intercepting)
        });
        format!("; accepting saw {seen}")
    }

    fn exec_failure(&self) -> Option<String> {
        lock(&self.exec)
            .as_ref()
            .and_then(|exec| exec.failure())
            .map(|e| e.to_string())
    }

    fn end_idle_start(&self) {
        self.idle_start.end();
    }

    fn release(&self) {
        lock(&self.notify).take();
        lock(&self.interception).take();
    }

    fn output(&self) -> Option<Arc<OutputLog>> {
        self.output.clone()
    }

    fn intercept_counts(&self) -> Option<Arc<InterceptCounts>> {
        self.intercept_counts.clone()
    }

    fn unread_input(&self, ports: Vec<u16>) -> BoxFuture<'_, bool> {
        Box::pin(unread_input_of(self.pid, ports))
    }

    fn carried(&self) -> Carried {
        carried(&self.cgroup, &self.interception, &self.pipes, &self.output)
    }
}

/// What a generation's supervisor holds for it, for a `reexec` to hand over.
pub(super) fn carried(
    cgroup: &Mutex<Option<Arc<GenerationCgroup>>>,
    interception: &Mutex<Option<Interception>>,
    pipes: &Pipes,
    output: &Option<Arc<OutputLog>>,
) -> Carried {
    Carried {
        cgroup: lock(cgroup).as_ref().map(|c| c.rel().to_owned()),
        intercept: lock(interception)
            .as_ref()
            .and_then(Interception::seccomp_fd),
        output: pipes.open_fds(),
        output_inodes: pipes.inodes,
        prefix: pipes.prefix.clone(),
        keep_output: output.is_some(),
        log_lines: pipes.log_lines,
    }
}

/// [`unread_input`] off the runtime's threads.
pub(super) async fn unread_input_of(pid: i32, ports: Vec<u16>) -> bool {
    tokio::task::spawn_blocking(move || unread_input(pid, &ports))
        .await
        .unwrap_or(false)
}

/// Whether a TCP connection on one of `ports` that `root`'s process tree holds has unread
/// bytes, or has received nothing yet: a client that connected a moment ago sends its
/// request next, and a server that reads it after its stop signal may drop it (Go's
/// `net/http` does), so such a connection is waited for like unread bytes (an idle
/// keep-alive connection has received its earlier requests, so it does not count).
/// sock_diag lists the connections with their `tcp_info`, filtered in the kernel by port
/// and state (cheap even with many connections); only when some wait are the tree's fds
/// read, to see whether one is the generation's. A generation that is gone, or a kernel
/// without sock_diag, has nothing we could wait for.
pub(super) fn unread_input(root: i32, ports: &[u16]) -> bool {
    const ESTABLISHED: u8 = 1;
    const ESTABLISHED_OR_CLOSE_WAIT: u32 = (1 << ESTABLISHED) | (1 << 8);
    let Ok(mut diag) = crate::inspect::diag_socket() else {
        return false;
    };
    let mut records = Vec::new();
    let families = [libc::AF_INET as u8, libc::AF_INET6 as u8];
    if diag
        .tcp_with_info(&families, ESTABLISHED_OR_CLOSE_WAIT, ports, &mut records)
        .is_err()
    {
        return false;
    }
    let waiting: std::collections::HashSet<u64> = records
        .iter()
        .filter(|r| {
            let fresh = r.state == ESTABLISHED && r.bytes_received == Some(0);
            r.inode != 0 && (r.rqueue > 0 || fresh)
        })
        .map(|r| r.inode)
        .collect();
    if waiting.is_empty() {
        return false;
    }
    crate::proc::descendants(root)
        .iter()
        .filter_map(|p| crate::proc::socket_fds(*p).ok())
        .flatten()
        .any(|(_, inode)| waiting.contains(&inode))
}

/// A panic while holding one of these locks leaves plain data behind: carry on with it.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long after a generation's exit its zombie is reaped. Its exit status is read
/// at once (see [`wait_exit`]); the delay lets the exiting threads finish their own
/// `/proc` cleanup first, so that reaping has nothing left to wait for.
const REAP_DELAY: Duration = Duration::from_millis(200);

/// How long the processes a generation left behind may take to die once killed.
pub(super) const LEFTOVERS_LIMIT: Duration = Duration::from_secs(5);

/// Ends a generation whose main process `pid` has exited and is not reaped yet: kills what
/// it left behind (its process group, its cgroup, or the strays it re-parented to us), then
/// reaps it. Only after that may its pid, and so its process group id, be reused: nothing
/// here or later can signal a stranger's group. `live_groups` are the groups to spare.
pub(super) async fn reap_generation(
    pid: i32,
    pidfd: Arc<OwnedFd>,
    cgroup: Option<Arc<GenerationCgroup>>,
) {
    let reaped = tokio::task::spawn_blocking(move || {
        // See wait_exit: the zombie goes last, after its threads' /proc entries.
        std::thread::sleep(REAP_DELAY);
        wait_for_exit(pidfd.as_raw_fd(), Wait::Reap);
        OwnChildren::get().forget(pid);
        drop(cgroup);
    });
    let _ = reaped.await;
}

/// Waits until the process behind `pidfd` exits and returns its status, without tying
/// up a thread: a pidfd becomes readable when its process has exited.
///
/// The status is read with `WNOWAIT`, which leaves the zombie in place: its process group
/// is then ended by [`end_generation`], and the zombie is reaped after that, a little later
/// on a blocking thread ([`REAP_DELAY`]). Reaping is not the cheap call it
/// looks like: it drops the process's `/proc` entries, and when the process had many
/// threads whose entries were looked up (the `accepting` check reads every thread's
/// `syscall` file) while those threads are still dropping their own, the kernel
/// retries (`shrink_dcache_parent`) until they are done. On a loaded machine that took
/// 0.9 to 25 s inside one `waitid` and up to 18 s of the supervisor's CPU over 150
/// restarts; the restart waiting for it could not complete. A zombie costs nothing
/// meanwhile, and keeps its pid and process group from being reused.
pub(super) async fn wait_exit(pidfd: &Arc<OwnedFd>) -> ExitInfo {
    // SAFETY: `PidFd` holds an Arc of the OwnedFd, so the fd stays open and unreplaced for
    // as long as the AsyncFd is registered.
    let registered = unsafe {
        AsyncFd::register_with_interest(PidFd(pidfd.clone()), tokio::io::Interest::READABLE)
    };
    let afd = match registered {
        Ok(afd) => afd,
        Err(e) => {
            warn!(error = %e, "cannot register a pidfd; reaping on a blocking thread");
            let fd = pidfd.as_raw_fd();
            return tokio::task::spawn_blocking(move || wait_for_exit(fd, Wait::Block))
                .await
                .ok()
                .flatten()
                .unwrap_or(ExitInfo::Code { code: -1 });
        }
    };
    loop {
        let Ok(mut ready) = afd.readable().await else {
            return ExitInfo::Code { code: -1 };
        };
        if let Some(status) = wait_for_exit(pidfd.as_raw_fd(), Wait::Peek) {
            return status;
        }
        // Readable but not yet exited (a spurious wake-up): wait for the next edge.
        ready.clear_ready();
    }
}

/// Waits until the process behind `pidfd` (not necessarily our child) has exited: its
/// pidfd becomes readable.
pub(super) async fn wait_gone(pidfd: &Arc<OwnedFd>) {
    // SAFETY: as in `wait_exit`, the Arc keeps the fd open while it is registered.
    let registered = unsafe {
        AsyncFd::register_with_interest(PidFd(pidfd.clone()), tokio::io::Interest::READABLE)
    };
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(e) => {
            warn!(error = %e, "cannot register a pidfd; polling it on a blocking thread");
            let fd = pidfd.clone();
            let _ = tokio::task::spawn_blocking(move || {
                while !crate::proc::wait_gone(&fd, Duration::from_secs(60)) {}
            })
            .await;
        }
    }
}

/// What [`wait_for_exit`] does with the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Reads the status of a child that has exited, leaving it a zombie; never blocks.
    Peek,
    /// Blocks until the child has exited, leaving it a zombie.
    Block,
    /// Blocks until the child has exited and reaps it.
    Reap,
}

/// The exit status of the child behind pidfd `fd`; `None` when peeking at a child that
/// has not exited yet.
fn wait_for_exit(fd: i32, wait: Wait) -> Option<ExitInfo> {
    let flags = libc::WEXITED
        | match wait {
            Wait::Peek => libc::WNOHANG | libc::WNOWAIT,
            Wait::Block => libc::WNOWAIT,
            Wait::Reap => 0,
        };
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it in for our own child's pidfd.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PIDFD with a pidfd we own; WEXITED waits for its exit.
        let rc = unsafe { libc::waitid(libc::P_PIDFD, fd as libc::id_t, &mut info, flags) };
        if rc == 0 {
            // SAFETY: after a successful waitid the pid and status fields are valid; a zero
            // pid means WNOHANG found no exit yet.
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return None;
            }
            return Some(match info.si_code {
                libc::CLD_EXITED => ExitInfo::Code { code: status },
                _ => ExitInfo::Signal { signal: status },
            });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            warn!(error = %err, "waitid on a pidfd failed");
            return Some(ExitInfo::Code { code: -1 });
        }
    }
}

struct PidFd(Arc<OwnedFd>);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// Sends `signal` through the pidfd, so it cannot reach a recycled pid.
pub(super) fn send_signal(pidfd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal takes our pidfd, a signal number, no siginfo and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal.as_raw(),
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// SIGKILLs the process group the generation leads (its workers included). Only for a
/// generation whose main process is not reaped: until then its group id cannot be reused.
pub(super) fn kill_group(pgid: i32) {
    // SAFETY: killpg with the group id of an unreaped child of ours (the caller's promise),
    // which each generation leads.
    let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    if rc != 0 {
        debug!(pgid, error = %std::io::Error::last_os_error(), "killpg");
    }
}

/// Copies a child's output to ours, each line with a prefix naming the generation (or
/// none), and keeps its lines in `log`. What one read returns is written on in one write:
/// a line at a time cost the supervisor about 40 µs of CPU per line (logbench, in
/// docs/benchmarks.md), most of it handing each write to a blocking thread and back.
pub(super) fn forward_output(
    fd: OwnedFd,
    prefix: String,
    stream: LogStream,
    log: Option<&Arc<OutputLog>>,
    slot: Option<Slot>,
) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        warn!("cannot read a generation's output pipe");
        if let Some(slot) = slot {
            slot.ended();
        }
        return;
    };
    let stderr = stream == LogStream::Stderr;
    let tail = log.map(OutputLog::reading);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Written asynchronously: when our own output blocks (its reader stalls), this
        // task stops reading the generation's pipe, so the app feels the back-pressure it
        // would feel without us, and the supervisor's threads never wait.
        let mut out: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> = if stderr {
            Box::pin(tokio::io::stderr())
        } else {
            Box::pin(tokio::io::stdout())
        };
        // Bytes, not text: output that is not UTF-8 passes through unchanged.
        let mut buf = vec![0u8; FORWARD_READ];
        let mut lines = Lines::default();
        let mut text = Vec::with_capacity(FORWARD_READ);
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            text.clear();
            lines.split(&buf[..n], prefix.as_bytes(), &mut text, |line| {
                if let Some(tail) = &tail {
                    tail.push(stream, line);
                }
            });
            // An error: nobody can read our output any more; keep draining the pipe so
            // the app does not block on a full one.
            if out.write_all(&text).await.is_ok() {
                let _ = out.flush().await;
            }
        }
        // The last line, without its newline, at the end of the output.
        text.clear();
        lines.finish(&mut text, |line| {
            if let Some(tail) = &tail {
                tail.push(stream, line);
            }
        });
        if !text.is_empty() && out.write_all(&text).await.is_ok() {
            let _ = out.flush().await;
        }
        // Before the pipe's fd closes, as this task ends: its number may be reused.
        if let Some(slot) = slot {
            slot.ended();
        }
    });
}

/// How much [`forward_output`] reads at once.
const FORWARD_READ: usize = 64 * 1024;

/// Splits a stream of output into lines across reads: the prefix goes before each line
/// forwarded, and each line's start (at most [`MAX_LINE`] and a byte, enough for the log
/// to see that it was cut) is kept for the log until its newline comes.
#[derive(Debug, Default)]
struct Lines {
    /// The start of the line being read.
    start: Vec<u8>,
    /// Whether the next byte begins a line.
    within: bool,
    /// The line being read was given to the log already (it was longer than the bound).
    logged: bool,
}

impl Lines {
    /// Appends `chunk` to `text` with the prefix before each line, and gives `log` each line
    /// it completes (or starts beyond the bound).
    fn split(
        &mut self,
        chunk: &[u8],
        prefix: &[u8],
        text: &mut Vec<u8>,
        mut log: impl FnMut(&[u8]),
    ) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if !self.within {
                text.extend_from_slice(prefix);
                self.within = true;
            }
            text.extend_from_slice(piece);
            if !self.logged {
                let room = (MAX_LINE + 1).saturating_sub(self.start.len());
                self.start
                    .extend_from_slice(&piece[..piece.len().min(room)]);
                if self.start.len() > MAX_LINE {
                    // A line that long is cut in the log anyway: keep it now, so that one
                    // that never ends still shows.
                    log(&self.start);
                    self.logged = true;
                }
            }
            if piece.ends_with(b"\n") {
                if !self.logged {
                    log(&self.start);
                }
                self.start.clear();
                self.within = false;
                self.logged = false;
            }
        }
    }

    /// Ends the stream: a last line without a newline is logged and ended with one.
    fn finish(&mut self, text: &mut Vec<u8>, mut log: impl FnMut(&[u8])) {
        if self.within {
            if !self.logged {
                log(&self.start);
            }
            text.push(b'\n');
            *self = Lines::default();
        }
    }
}

#[cfg(test)]
mod lines_tests {
    use super::*;

    fn run(chunks: &[&[u8]], prefix: &str) -> (String, Vec<String>) {
        let mut lines = Lines::default();
        let mut text = Vec::new();
        let mut logged = Vec::new();
        for chunk in chunks {
            lines.split(chunk, prefix.as_bytes(), &mut text, |l| {
                logged.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        lines.finish(&mut text, |l| {
            logged.push(String::from_utf8_lossy(l).into_owned())
        });
        (String::from_utf8_lossy(&text).into_owned(), logged)
    }

    #[test]
    fn lines_split_across_reads_get_one_prefix_each_and_reach_the_log_whole() {
        let (text, logged) = run(&[b"one\ntw", b"o\n", b"thr", b"ee"], "[a] ");
        assert_eq!(text, "[a] one\n[a] two\n[a] three\n");
        assert_eq!(logged, ["one\n", "two\n", "three"]);
    }

    #[test]
    fn a_line_past_the_bound_is_logged_once_cut_and_forwarded_whole() {
        let long = vec![b'x'; MAX_LINE * 3];
        let (text, logged) = run(&[&long[..MAX_LINE], &long[MAX_LINE..], b"\nnext\n"], "");
        assert_eq!(text.len(), MAX_LINE * 3 + "\nnext\n".len());
        assert_eq!(
            logged.len(),
            2,
            "{:?}",
            logged.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(logged[0].len(), MAX_LINE + 1);
        assert_eq!(logged[1], "next\n");
    }
}
