//! fork + execve of one generation, with the listeners at fds 3, 4, … and `LISTEN_PID`
//! written by the child itself.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::HandoffError;
use super::env::{generation_env, handoff_vars};
use crate::listen::Listener;

/// What to start.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    pub service: &'a str,
    pub generation: u64,
    pub command: &'a [String],
    pub workdir: Option<&'a Path>,
    pub env: &'a BTreeMap<String, String>,
    pub listeners: &'a [Listener],
    pub notify_socket: Option<&'a Path>,
    /// Give the child pipes for stdout and stderr instead of ours.
    pub capture_output: bool,
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
}

/// The parent's end of the pipe through which a child reports a failure before exec. The
/// write end is close-on-exec in the child, so the pipe reads EOF the moment the child has
/// exec'd the program; if anything failed before that, the child wrote the stage and errno
/// and exited 127.
#[derive(Debug)]
pub struct ExecReport {
    pipe: OwnedFd,
    program: String,
}

impl ExecReport {
    /// Blocks until the child has exec'd the program, or returns why it could not.
    pub fn wait(&self) -> Result<(), HandoffError> {
        match read_exec_error(&self.pipe) {
            Some((stage, errno)) => Err(self.error(stage, errno)),
            None => Ok(()),
        }
    }

    /// Why the child failed before exec, asked once it has exited (so the read cannot
    /// block): `None` when it did exec, and its exit is the program's own.
    pub fn failure(&self) -> Option<HandoffError> {
        read_exec_error(&self.pipe).map(|(stage, errno)| self.error(stage, errno))
    }

    fn error(&self, stage: &'static str, errno: i32) -> HandoffError {
        HandoffError::Exec {
            program: self.program.clone(),
            stage,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const PID_DIGITS: usize = 20;

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

/// Starts one generation and returns right after the fork, without waiting for the child to
/// reach exec: on a busy machine that wait is most of what a spawn costs. The caller learns
/// of a failure before exec from the child's exit (status 127) and [`ExecReport::failure`],
/// and reaps the child itself.
pub fn start_child(spec: &SpawnSpec<'_>) -> Result<Spawned, HandoffError> {
    let program = spec.command.first().ok_or(HandoffError::EmptyCommand)?;
    let vars = handoff_vars(
        spec.service,
        spec.generation,
        spec.listeners,
        spec.notify_socket,
    );
    let env = generation_env(std::env::vars(), spec.env, &vars);
    let resolved = resolve_program(program, spec.workdir, env.get("PATH").map(String::as_str))?;

    // Everything the child touches is allocated here, before the fork.
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
        // SAFETY: the offset is within the buffer built just above, which outlives the fork.
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
        (Some(pipe_cloexec()?), Some(pipe_cloexec()?))
    } else {
        (None, None)
    };
    let child_out = out_pipes.as_ref().map_or(-1, |(_, w)| w.as_raw_fd());
    let child_err = err_pipes.as_ref().map_or(-1, |(_, w)| w.as_raw_fd());

    let ctx = ChildContext {
        path: path_c.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: env_p.as_ptr(),
        listen_pid_slot,
        workdir: workdir_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        listener_fds: &listener_fds,
        scratch_fds: scratch_fds.as_mut_ptr(),
        err_pipe: err_write.as_raw_fd(),
        stdout: child_out,
        stderr: child_err,
    };

    // SAFETY: the child branch only runs `exec_child`, which calls async-signal-safe
    // functions on memory prepared above and never returns; see its SAFETY notes.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HandoffError::Io {
            about: "fork",
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: we are the child of a fork; `ctx` points into memory copied with us.
        unsafe { exec_child(&ctx) }
    }
    drop(err_write);
    // Also set the group from the parent: whichever of the two runs first wins, so the child
    // is in its own group before anyone signals it by group.
    // SAFETY: plain syscall on the child's pid; an error (the child already exec'd) is fine.
    unsafe { libc::setpgid(pid, pid) };
    let stdout = out_pipes.map(|(r, _w)| r);
    let stderr = err_pipes.map(|(r, _w)| r);

    // The child has its own copy of every buffer it reads, so ours may go now.
    drop((argv_c, env_bufs, listen_pid_buf, scratch_fds));
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Without a pidfd the child cannot be watched: stop it rather than leak it.
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
    };
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
        exec: ExecReport {
            pipe: err_read,
            program: program.clone(),
        },
    })
}

struct ChildContext<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    listen_pid_slot: *mut u8,
    workdir: *const libc::c_char,
    listener_fds: &'a [RawFd],
    scratch_fds: *mut RawFd,
    err_pipe: RawFd,
    stdout: RawFd,
    stderr: RawFd,
}

/// The kernel's `struct sigaction` for rt_sigaction on x86_64 and aarch64 (both define
/// SA_RESTORER): handler, flags, restorer, then a 64-bit mask.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

const STAGES: &[&str] = &[
    "chdir",
    "moving the listeners",
    "redirecting output",
    "execve",
];

/// The child side. Never returns.
///
/// # Safety
/// Must only be called in the child right after `fork()`. Between fork and exec in a
/// multi-threaded parent only async-signal-safe functions may run and nothing may allocate:
/// everything used here is a raw syscall on memory prepared before the fork.
unsafe fn exec_child(ctx: &ChildContext<'_>) -> ! {
    // SAFETY (whole function): all calls are async-signal-safe syscalls; pointers come from
    // buffers allocated before the fork that this copy of the address space still holds.
    unsafe {
        // Our own process group, so a drain can signal and kill the generation's whole tree.
        libc::setpgid(0, 0);

        // A clean slate of signals: handlers back to default (exec would keep ignored ones
        // ignored: Rust ignores SIGPIPE, for one) and an empty mask. The raw syscall, because
        // glibc's wrappers refuse the two signals it reserves (32 and 33), which can still
        // arrive ignored from whoever started us. An all-zero kernel sigaction is SIG_DFL
        // with no flags and an empty mask.
        let dfl = KernelSigaction::default();
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        if !ctx.workdir.is_null() && libc::chdir(ctx.workdir) != 0 {
            fail(ctx.err_pipe, 0);
        }

        // Move the listeners to 3, 4, …. A source fd may itself sit in that range (or the
        // error pipe may), so first lift every source above the target range, then place.
        let n = ctx.listener_fds.len() as RawFd;
        let floor = 3 + n;
        let err_pipe = libc::fcntl(ctx.err_pipe, libc::F_DUPFD_CLOEXEC, floor);
        if err_pipe < 0 {
            fail(ctx.err_pipe, 1);
        }
        for (i, &fd) in ctx.listener_fds.iter().enumerate() {
            let lifted = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor);
            if lifted < 0 {
                fail(err_pipe, 1);
            }
            *ctx.scratch_fds.add(i) = lifted;
        }
        if ctx.stdout >= 0 && libc::dup2(ctx.stdout, 1) < 0 {
            fail(err_pipe, 2);
        }
        if ctx.stderr >= 0 && libc::dup2(ctx.stderr, 2) < 0 {
            fail(err_pipe, 2);
        }
        for i in 0..ctx.listener_fds.len() {
            // dup2 leaves FD_CLOEXEC clear on the new fd: this is where each listener is
            // made to cross the exec, on purpose, at fd 3 + i.
            if libc::dup2(*ctx.scratch_fds.add(i), 3 + i as RawFd) < 0 {
                fail(err_pipe, 1);
            }
        }
        // Nothing else of ours may leak into the app: mark every fd from the first one
        // after the listeners close-on-exec (the error pipe included: its closing at exec is
        // how the parent learns that exec succeeded).
        libc::syscall(
            libc::SYS_close_range,
            floor as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );

        if !ctx.listen_pid_slot.is_null() {
            write_pid(ctx.listen_pid_slot, libc::getpid());
        }
        libc::execve(ctx.path, ctx.argv, ctx.envp);
        fail(err_pipe, 3)
    }
}

/// Writes `pid` in decimal at `slot` followed by a NUL, without allocating.
///
/// # Safety
/// `slot` must point to at least `PID_DIGITS + 1` writable bytes.
unsafe fn write_pid(slot: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = pid as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: len <= PID_DIGITS and the caller guarantees the room.
        unsafe { *slot.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above; the NUL ends the variable right after the digits.
    unsafe { *slot.add(len) = 0 };
}

/// Reports `errno` and the failed stage to the parent and exits.
///
/// # Safety
/// Child side of a fork only.
unsafe fn fail(pipe: RawFd, stage: u8) -> ! {
    // SAFETY: errno location and write/_exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 5];
        msg[0] = stage;
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(pipe, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
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
    let stage = STAGES.get(msg[0] as usize).copied().unwrap_or("start");
    let errno = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
    Some((stage, errno))
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), HandoffError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| HandoffError::Io {
        about: "create a pipe",
        source: e.into(),
    })
}

/// Opens a pidfd for `pid`, close-on-exec.
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, HandoffError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(HandoffError::Io {
            about: "open a pidfd (Linux 5.3 or later is required)",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns; pidfds are created
    // close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn cstring(bytes: &[u8]) -> Result<CString, HandoffError> {
    CString::new(bytes).map_err(|_| HandoffError::Nul {
        value: String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// Finds the program the way execvp would, but before the fork, so that a missing command is
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
    fn write_pid_writes_digits_and_terminates() {
        let mut buf = [b'x'; PID_DIGITS + 1];
        // SAFETY: the buffer has PID_DIGITS + 1 bytes.
        unsafe { write_pid(buf.as_mut_ptr(), 4_194_303) };
        assert_eq!(&buf[..8], b"4194303\0");
        unsafe { write_pid(buf.as_mut_ptr(), 7) };
        assert_eq!(&buf[..2], b"7\0");
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
