//! clone + execve of one generation, with the listeners at fds 3, 4, … and `LISTEN_PID`
//! written by the child itself.
//!
//! This is the parent's side: it resolves the program, allocates everything the child will
//! touch, clones it and reads back how its exec went ([`ExecReport`]). What the child runs
//! between the clone and the exec is in `child.rs`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::HandoffError;
use super::child::{ChildContext, PID_DIGITS, Stage, exec_child};
use super::env::{generation_env, handoff_vars};
use crate::listen::Listener;
use crate::sched::SchedAttr;

/// What to start.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    pub service: &'a str,
    pub generation: u64,
    /// Which of the generation's processes it is (`ZD_INSTANCE`).
    pub instance: u32,
    pub command: &'a [String],
    pub workdir: Option<&'a Path>,
    pub env: &'a BTreeMap<String, String>,
    pub listeners: &'a [Listener],
    pub notify_socket: Option<&'a Path>,
    /// Give the child pipes for stdout and stderr instead of ours.
    pub capture_output: bool,
    /// The nice value the child sets before exec: the supervisor's own threads may run
    /// at a weaker one, when it gives way to its generations (`yield_cpu`).
    pub nice: Option<i32>,
    /// Start at `SCHED_IDLE` ([`crate::sched`]); the supervisor gives the
    /// normal priority back once the generation is ready.
    pub idle_start: bool,
    /// Start the child under the bind filter of `intercept_binds` ([`super::intercept`]).
    pub intercept_binds: bool,
}

/// A started generation.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    /// A pidfd for the child: readable when it exits; immune to pid reuse.
    pub pidfd: OwnedFd,
    /// The read ends of the child's stdout and stderr when `capture_output` was set.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Tells whether the child reached the program (see [`ExecReport`]).
    pub exec: ExecReport,
    /// With `intercept_binds`: where the child sends its seccomp listener before exec
    /// ([`super::intercept::receive_listener`]).
    pub intercept: Option<OwnedFd>,
}

/// The parent's end of the pipe through which a child reports a failure before exec. The
/// write end is close-on-exec in the child, so the pipe reads EOF the moment the child has
/// exec'd the program; if anything failed before that, the child wrote the stage and errno
/// and exited 127.
///
/// It also owns the memory the child runs on until then (see [`clone_child`]): that is
/// freed once the pipe has answered, and dropping the report first waits for that answer.
#[derive(Debug)]
pub struct ExecReport {
    pipe: OwnedFd,
    program: String,
    memory: std::sync::Mutex<Option<ChildMemory>>,
}

impl ExecReport {
    /// Blocks until the child has exec'd the program, or returns why it could not.
    pub fn wait(&self) -> Result<(), HandoffError> {
        match self.read() {
            Some((stage, errno)) => Err(self.error(stage, errno)),
            None => Ok(()),
        }
    }

    /// Why the child failed before exec, asked once it has exited (so the read cannot
    /// block): `None` when it did exec, and its exit is the program's own.
    pub fn failure(&self) -> Option<HandoffError> {
        self.read().map(|(stage, errno)| self.error(stage, errno))
    }

    /// Reads the pipe to its end. Once it has ended the child no longer runs on our
    /// memory (it exec'd or exited), so that memory goes.
    fn read(&self) -> Option<(&'static str, i32)> {
        let failure = read_exec_error(&self.pipe);
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        failure
    }

    fn error(&self, stage: &'static str, errno: i32) -> HandoffError {
        HandoffError::Exec {
            program: self.program.clone(),
            stage,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }
}

impl Drop for ExecReport {
    fn drop(&mut self) {
        let memory = self.memory.get_mut().unwrap_or_else(|e| e.into_inner());
        if memory.is_some() {
            // The child may still run on this memory: wait until it exec'd or exited. By
            // the time a report is dropped that has almost always happened already.
            read_exec_error(&self.pipe);
            memory.take();
        }
    }
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// Starts one generation and returns once the child has exec'd the program, or why it could
/// not (the failed child is reaped).
pub fn spawn_generation(spec: &SpawnSpec<'_>) -> Result<Spawned, HandoffError> {
    let spawned = start_child(spec)?;
    if let Err(e) = spawned.exec.wait() {
        // The child failed before exec and exits 127 at once; reap it so it leaves no zombie.
        let mut status = 0;
        // SAFETY: waiting for our own child that is about to exit.
        unsafe { libc::waitpid(spawned.pid, &mut status, 0) };
        return Err(e);
    }
    Ok(spawned)
}

/// Starts one generation and returns right after the clone, without waiting for the child to
/// reach exec: on a busy machine that wait is most of what a spawn costs. The caller learns
/// of a failure before exec from the child's exit (status 127) and [`ExecReport::failure`],
/// and reaps the child itself.
pub fn start_child(spec: &SpawnSpec<'_>) -> Result<Spawned, HandoffError> {
    let program = spec.command.first().ok_or(HandoffError::EmptyCommand)?;
    let vars = handoff_vars(
        spec.service,
        spec.generation,
        spec.instance,
        spec.listeners,
        spec.notify_socket,
    );
    let env = generation_env(std::env::vars(), spec.env, &vars);
    let resolved = resolve_program(program, spec.workdir, env.get("PATH").map(String::as_str))?;

    // Everything the child touches is allocated here, before the clone, and kept until the
    // child has exec'd or exited.
    let path_c = cstring(resolved.as_os_str().as_bytes())?;
    let argv_c: Vec<CString> = spec
        .command
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_bufs: Vec<Vec<u8>> = Vec::with_capacity(env.len() + 1);
    for (k, v) in &env {
        let mut b = Vec::with_capacity(k.len() + v.len() + 2);
        b.extend_from_slice(k.as_bytes());
        b.push(b'=');
        b.extend_from_slice(v.as_bytes());
        if b.contains(&0) {
            return Err(HandoffError::Nul { value: k.clone() });
        }
        b.push(0);
        env_bufs.push(b);
    }
    // The LISTEN_PID slot: the prefix, room for any pid's digits, and the terminating NUL,
    // which the child moves to just after the digits it writes.
    let mut listen_pid_buf = Vec::new();
    if !spec.listeners.is_empty() {
        listen_pid_buf.extend_from_slice(LISTEN_PID_PREFIX);
        listen_pid_buf.extend_from_slice(&[b'0'; PID_DIGITS]);
        listen_pid_buf.push(0);
    }
    let mut env_p: Vec<*const libc::c_char> = env_bufs.iter().map(|b| b.as_ptr().cast()).collect();
    if !listen_pid_buf.is_empty() {
        env_p.push(listen_pid_buf.as_ptr().cast());
    }
    env_p.push(std::ptr::null());
    let listen_pid_slot: *mut u8 = if listen_pid_buf.is_empty() {
        std::ptr::null_mut()
    } else {
        // SAFETY: the offset is within the buffer built just above, whose heap block the
        // child memory keeps.
        unsafe { listen_pid_buf.as_mut_ptr().add(LISTEN_PID_PREFIX.len()) }
    };
    let workdir_c = match spec.workdir {
        Some(dir) => Some(cstring(dir.as_os_str().as_bytes())?),
        None => None,
    };
    let listener_fds: Vec<RawFd> = spec.listeners.iter().map(|l| l.fd().as_raw_fd()).collect();
    let mut scratch_fds: Vec<RawFd> = vec![-1; listener_fds.len()];

    let (err_read, err_write) = pipe_cloexec()?;
    let (out_pipes, err_pipes) = if spec.capture_output {
        (Some(output_pipe()?), Some(output_pipe()?))
    } else {
        (None, None)
    };
    let channels = if spec.intercept_binds {
        Some(
            super::intercept::channel().map_err(|error| HandoffError::Io {
                about: "create the socket pair that carries the seccomp listener",
                error,
            })?,
        )
    } else {
        None
    };
    let child_channel = channels.as_ref().map_or(-1, |(_, c)| c.as_raw_fd());
    let child_out = out_pipes.as_ref().map_or(-1, |(_, w)| w.as_raw_fd());
    let child_err = err_pipes.as_ref().map_or(-1, |(_, w)| w.as_raw_fd());

    let mut sched_attr = Box::new(SchedAttr::default());
    let context = Box::new(ChildContext {
        path: path_c.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: env_p.as_ptr(),
        listen_pid_slot,
        workdir: workdir_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        listener_fds: listener_fds.as_ptr(),
        listener_count: listener_fds.len(),
        scratch_fds: scratch_fds.as_mut_ptr(),
        err_pipe: err_write.as_raw_fd(),
        stdout: child_out,
        stderr: child_err,
        read_ends: [
            out_pipes.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
            err_pipes.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
        ],
        nice: spec.nice,
        idle_start: spec.idle_start,
        sched_attr: &mut *sched_attr,
        intercept_channel: child_channel,
        intercept_unlink: spec.listeners.iter().any(|l| l.unix_path().is_some()),
    });
    let mut memory = ChildMemory {
        context,
        stack: vec![0u128; CHILD_STACK / std::mem::size_of::<u128>()],
        _buffers: Box::new((
            path_c,
            argv_c,
            argv_p,
            env_bufs,
            env_p,
            listen_pid_buf,
            workdir_c,
            listener_fds,
            scratch_fds,
            sched_attr,
        )),
    };
    let (pid, pidfd) = clone_child(&mut memory)?;
    // The child has its own fd table: our copies of its ends of the pipes may go.
    drop(err_write);
    // Also set the group from here: whichever of the two runs first wins, so the child is
    // in its own group before anyone signals it by group.
    // SAFETY: plain syscall on the child's pid; an error (the child already exec'd) is fine.
    unsafe { libc::setpgid(pid, pid) };
    let intercept = channels.map(|(ours, _child)| ours);
    let stdout = out_pipes.map(|(r, _w)| r);
    let stderr = err_pipes.map(|(r, _w)| r);
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
        intercept,
        exec: ExecReport {
            pipe: err_read,
            program: program.clone(),
            memory: std::sync::Mutex::new(Some(memory)),
        },
    })
}

/// Room for `exec_child`'s frames: a few hundred bytes in a release build, a few KiB in a
/// debug one.
const CHILD_STACK: usize = 64 * 1024;

/// What a child started by [`clone_child`] reads and writes until it execs: heap blocks
/// that must stay where they are, whatever moves the owning values.
struct ChildMemory {
    context: Box<ChildContext>,
    /// The child's stack; 16-byte aligned, as the ABIs want the stack pointer.
    stack: Vec<u128>,
    /// The strings, pointer arrays and fd lists `context` points into.
    _buffers: Box<dyn std::any::Any>,
}

impl std::fmt::Debug for ChildMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildMemory")
    }
}

// SAFETY: the raw pointers in `context` point into `_buffers`, which this value owns; no
// other thread of ours reads or writes them, so the whole may move between threads.
unsafe impl Send for ChildMemory {}
// SAFETY: as above; a shared reference gives no access to the pointed-to memory.
unsafe impl Sync for ChildMemory {}

/// Starts the child with `clone(CLONE_VM | CLONE_PIDFD)`: it runs on our memory (on its own
/// stack) instead of a copy, and this thread goes on at once.
///
/// A `fork` copies the supervisor's page tables and leaves every page copy-on-write, so each
/// thread then takes faults as it writes; measured on a 2-vCPU VM that cost about 0.3 ms per
/// spawn when idle and several ms at the 99th percentile under load. `CLONE_VFORK`, as
/// `posix_spawn` does it, avoids the copy but sleeps until the kernel has committed the
/// exec, which took longer still. `CLONE_PIDFD` returns the pidfd with the pid, so there is
/// no moment when the pid could name another process.
///
/// Sharing our memory puts three rules on the child, which `exec_child` keeps: it only reads
/// and writes `memory` (kept until the exec report's pipe answers); it calls the kernel
/// directly, never through libc, because libc would write `errno` in the thread-local
/// storage of the thread that called `clone`, which goes on running; and it runs none of
/// our signal handlers: every signal is blocked in this thread across the clone, the child
/// inherits that mask and resets the handlers before it unblocks anything.
fn clone_child(memory: &mut ChildMemory) -> Result<(i32, OwnedFd), HandoffError> {
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the context in `ChildMemory`, which outlives the child's use.
        unsafe { exec_child(&*arg.cast::<ChildContext>()) }
    }
    let all: u64 = !0;
    let mut saved: u64 = 0;
    let mut pidfd: libc::c_int = -1;
    let context: *mut ChildContext = &mut *memory.context;
    // SAFETY: the raw rt_sigprocmask takes the kernel's 8-byte mask (glibc's wrapper would
    // leave its two internal signals unblocked). `clone` gets a stack and a context that the
    // caller keeps until the child exec'd or exited, an entry that never returns, and a
    // place for the pidfd.
    let (pid, clone_error) = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut saved as *mut u64,
            std::mem::size_of::<u64>(),
        );
        let top = memory
            .stack
            .as_mut_ptr()
            .add(memory.stack.len())
            .cast::<libc::c_void>();
        let pid = libc::clone(
            entry,
            top,
            libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD,
            context.cast(),
            &mut pidfd as *mut libc::c_int,
        );
        let clone_error = std::io::Error::last_os_error();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &saved as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        );
        (pid, clone_error)
    };
    if pid < 0 {
        let about = clone_failure(clone_error.raw_os_error());
        return Err(HandoffError::Io {
            about,
            error: clone_error,
        });
    }
    // SAFETY: CLONE_PIDFD stored a fresh fd, close-on-exec, that nothing else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// What a failed clone means, by its errno. EINVAL is an old kernel that does not know
/// CLONE_PIDFD; the others are the errno's own story, told with what to check.
fn clone_failure(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            "start the child with clone(CLONE_PIDFD) (Linux 5.2 or later is required)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "start the child: the supervisor is out of file descriptors (raise its 'ulimit -n' \
             or find what holds them with 'ls /proc/PID/fd')"
        }
        Some(libc::EAGAIN) => {
            "start the child: the process limit is reached (check 'ulimit -u' and the \
             cgroup's pids.max)"
        }
        _ => "start the child with clone",
    }
}

fn read_exec_error(pipe: &OwnedFd) -> Option<(&'static str, i32)> {
    let mut msg = [0u8; 5];
    let mut got = 0;
    while got < msg.len() {
        // SAFETY: reading into a stack buffer from a pipe we own.
        let n = unsafe {
            libc::read(
                pipe.as_raw_fd(),
                msg[got..].as_mut_ptr().cast(),
                msg.len() - got,
            )
        };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    if got < msg.len() {
        return None;
    }
    let stage = Stage::from_byte(msg[0]).map_or("start", Stage::describe);
    let errno = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
    Some((stage, errno))
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), HandoffError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| HandoffError::Io {
        about: "create a pipe for the child",
        error: e.into(),
    })
}

/// How many bytes an output pipe holds unread, where the kernel allows it: what the
/// program may print while no supervisor reads (between a crash and the adoption) before
/// its writes wait.
const OUTPUT_PIPE_SIZE: i32 = 1 << 20;

/// A pipe for the child's stdout or stderr, as large as [`OUTPUT_PIPE_SIZE`] when it may be.
fn output_pipe() -> Result<(OwnedFd, OwnedFd), HandoffError> {
    let (read, write) = pipe_cloexec()?;
    // Root only: an unprivileged user's pipes count against a per-user page quota
    // (fs.pipe-user-pages-soft), past which all of that user's new pipes are made tiny.
    // SAFETY: geteuid cannot fail; fcntl on a pipe we own, a refusal leaves the default.
    if unsafe { libc::geteuid() } == 0 {
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, OUTPUT_PIPE_SIZE) };
    }
    Ok((read, write))
}

fn cstring(bytes: &[u8]) -> Result<CString, HandoffError> {
    CString::new(bytes).map_err(|_| HandoffError::Nul {
        value: String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// Finds the program the way execvp would, but before the clone, so that a missing command is
/// an error the user sees rather than an exit code 127.
pub fn resolve_program(
    program: &str,
    workdir: Option<&Path>,
    path_var: Option<&str>,
) -> Result<PathBuf, HandoffError> {
    if program.contains('/') {
        let p = Path::new(program);
        let full = match workdir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        return if is_executable(&full) {
            Ok(full)
        } else if full.exists() {
            Err(HandoffError::NotExecutable { program: full })
        } else {
            Err(HandoffError::NotFound {
                program: program.to_owned(),
                path: full.display().to_string(),
            })
        };
    }
    let path_var = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(HandoffError::NotFound {
        program: program.to_owned(),
        path: path_var.to_owned(),
    })
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_out_of_file_descriptors_says_so_rather_than_blaming_the_kernel() {
        assert!(clone_failure(Some(libc::EMFILE)).contains("out of file descriptors"));
        assert!(clone_failure(Some(libc::EAGAIN)).contains("process limit"));
        assert!(clone_failure(Some(libc::EINVAL)).contains("Linux 5.2"));
        assert!(!clone_failure(Some(libc::ENOMEM)).contains("Linux"));
    }

    fn spec<'a>(
        command: &'a [String],
        workdir: Option<&'a Path>,
        env: &'a BTreeMap<String, String>,
    ) -> SpawnSpec<'a> {
        SpawnSpec {
            service: "unit",
            generation: 1,
            instance: 0,
            command,
            workdir,
            env,
            listeners: &[],
            notify_socket: None,
            capture_output: false,
            nice: None,
            idle_start: false,
            intercept_binds: false,
        }
    }

    fn reap(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn a_failure_before_exec_reports_its_stage_and_errno() {
        let command = vec!["true".to_owned()];
        let env = BTreeMap::new();
        let missing = Path::new("/nonexistent-zd-workdir");
        let spawned = start_child(&spec(&command, Some(missing), &env)).unwrap();
        let error = spawned.exec.wait().unwrap_err().to_string();
        assert!(error.contains("chdir"), "{error}");
        assert!(error.contains("No such file or directory"), "{error}");
        let status = reap(spawned.pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 127);
    }

    /// The child runs on our memory while our threads go on: spawn from several threads at
    /// once, each child checking what it got, and drop the reports early and late.
    #[test]
    fn concurrent_spawns_each_exec_their_own_command() {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let want = format!("{t}-{i}");
                        let command = vec![
                            "sh".to_owned(),
                            "-c".to_owned(),
                            format!("test \"$ZD_WANT\" = {want}"),
                        ];
                        let env = BTreeMap::from([("ZD_WANT".to_owned(), want)]);
                        let spawned = start_child(&spec(&command, None, &env)).unwrap();
                        if i % 2 == 0 {
                            spawned.exec.wait().unwrap();
                        }
                        let pid = spawned.pid;
                        drop(spawned);
                        let status = reap(pid);
                        assert!(
                            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                            "child {t}-{i}: status {status:#x}"
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn resolve_program_searches_path_and_reports_missing_commands() {
        assert!(resolve_program("sh", None, Some("/nonexistent:/bin:/usr/bin")).is_ok());
        assert!(matches!(
            resolve_program("no-such-program-zd", None, Some("/bin")),
            Err(HandoffError::NotFound { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            resolve_program("./script", Some(dir.path()), None),
            Err(HandoffError::NotExecutable { .. })
        ));
    }
}
