//! What every lookalike shares: its flags, the listener, starting workers with the listener
//! on fd 3, signals read from a non-blocking signalfd, reaping, and the pidfile.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid};

/// The environment variable that hands the listener's fd to a re-executed lookalike (a new
/// psflip), as tableflip passes its sockets on.
pub const LISTENER_ENV: &str = "ZD_LOOKALIKE_FD";

/// How often the lookalikes look at their signals, children and sockets.
pub const TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Default)]
pub struct Args {
    /// The words before `--`, as given (a re-executed lookalike gets them again).
    pub flags: Vec<OsString>,
    pub pidfile: Option<PathBuf>,
    pub listen: Option<String>,
    pub socket: Option<PathBuf>,
    pub healthy_after: Duration,
    pub start: Duration,
    pub workers: usize,
    pub ack_after: Duration,
    /// The worker's command line, after `--`.
    pub worker: Vec<OsString>,
}

pub fn parse_args(words: Vec<OsString>) -> Result<Args> {
    let mut args = Args {
        healthy_after: Duration::from_secs(1),
        start: Duration::from_secs(3),
        workers: 1,
        ack_after: Duration::from_secs(1),
        ..Args::default()
    };
    let mut it = words.into_iter();
    while let Some(word) = it.next() {
        if word == "--" {
            args.worker = it.by_ref().collect();
            break;
        }
        args.flags.push(word.clone());
        let flag = word.to_string_lossy().into_owned();
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        args.flags.push(value.clone());
        let text = value.to_string_lossy().into_owned();
        let duration = || humantime::parse_duration(&text).with_context(|| format!("in {flag}"));
        match flag.as_str() {
            "--pidfile" => args.pidfile = Some(value.into()),
            "--listen" => args.listen = Some(text),
            "--socket" => args.socket = Some(value.into()),
            "--healthy-after" => args.healthy_after = duration()?,
            "--start" => args.start = duration()?,
            "--workers" => args.workers = text.parse()?,
            "--ack-after" => args.ack_after = duration()?,
            _ => bail!("unknown flag '{flag}'"),
        }
    }
    if args.worker.is_empty() {
        bail!("no worker command after '--'");
    }
    Ok(args)
}

/// The lowest fd the lookalikes keep their own descriptors at, so that placing the
/// listener on fd 3 and a pipe on fd 4 in a child never overwrites one with the other.
const HIGH_FD: RawFd = 10;

/// Moves `fd` to [`HIGH_FD`] or above, close-on-exec.
fn lift(fd: OwnedFd) -> Result<OwnedFd> {
    let high = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// The listener: inherited from the lookalike that started this one, else bound to
/// `--listen`.
pub fn listener(args: &Args) -> Result<OwnedFd> {
    if let Some(fd) = std::env::var(LISTENER_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    {
        // SAFETY: our parent placed the listener on this fd for us; nothing else owns it.
        return lift(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let addr = args.listen.as_deref().context("--listen is required")?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot bind '{addr}'"))?;
    lift(listener.into())
}

/// A pipe whose ends sit at [`HIGH_FD`] or above, close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((lift(read)?, lift(write)?))
}

/// Starts `program args` with the listener on fd 3 and, when given, `extra` on fd 4.
pub fn spawn(
    program: &OsString,
    args: &[OsString],
    listener: &OwnedFd,
    extra: Option<&OwnedFd>,
    env: &[(&str, String)],
) -> Result<Pid> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let listener = listener.as_raw_fd();
    let extra = extra.map(AsRawFd::as_raw_fd);
    clean_signal_mask(&mut cmd);
    // SAFETY: between fork and exec the closure calls only dup2, which is
    // async-signal-safe. Both sources sit at HIGH_FD or above, so neither target (3, 4)
    // is a source. dup2 clears close-on-exec on its target: the listener crosses exec on
    // fd 3 on purpose, and the extra pipe end on fd 4.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(listener, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = extra {
                if libc::dup2(fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    Ok(Pid::from_raw(i32::try_from(child.id())?))
}

/// Starts the worker command with the listener on fd 3, announced as einhorn's count form
/// (which zd-fixture reads), plus `env`.
pub fn spawn_worker(args: &Args, listener: &OwnedFd, env: &[(&str, String)]) -> Result<Pid> {
    let mut all = vec![
        ("EINHORN_FD_COUNT", "1".to_owned()),
        ("EINHORN_FD_0", "3".to_owned()),
    ];
    all.extend(env.iter().cloned());
    spawn(&args.worker[0], &args.worker[1..], listener, None, &all)
}

/// Gives the child an empty signal mask. The lookalikes block every signal to read them
/// from a signalfd, and a mask survives fork and exec: a worker that inherited it could
/// not be woken by the signals it relies on (zd-fixture interrupts its blocked accept
/// with a real-time signal when it drains).
pub fn clean_signal_mask(cmd: &mut Command) {
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe and touch only the
    // child's own mask and a set on its stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            if libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts this program again with the same flags (a new psflip), the
/// listener on fd 3 and `extra` on fd 4.
pub fn spawn_self(
    mode: &str,
    args: &Args,
    listener: &OwnedFd,
    extra: Option<&OwnedFd>,
    env: &[(&str, String)],
) -> Result<Pid> {
    let exe: OsString = std::env::current_exe()?.into();
    let mut words: Vec<OsString> = vec![mode.into()];
    words.extend(args.flags.iter().cloned());
    words.push("--".into());
    words.extend(args.worker.iter().cloned());
    let mut env = env.to_vec();
    env.push((LISTENER_ENV, "3".to_owned()));
    spawn(&exe, &words, listener, extra, &env)
}

/// All signals, blocked and read from a non-blocking signalfd.
pub struct Signals(SignalFd);

impl Signals {
    pub fn new() -> Result<Signals> {
        let all = SigSet::all();
        all.thread_block()?;
        Ok(Signals(SignalFd::with_flags(&all, SfdFlags::SFD_NONBLOCK)?))
    }

    /// The signals that arrived since the last call, SIGCHLD left out (see [`reap`]).
    pub fn pending(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.0.read_signal() {
            let signal = i32::try_from(info.ssi_signo)
                .ok()
                .and_then(|n| Signal::try_from(n).ok());
            if let Some(signal) = signal.filter(|s| *s != Signal::SIGCHLD) {
                say(&format!("got {}", signal.as_str()));
                out.push(signal);
            }
        }
        out
    }
}

/// Children that ended since the last call, with their exit code (128+n when killed).
pub fn reap() -> Vec<(Pid, i32)> {
    let mut out = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => out.push((pid, 128 + signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    for (pid, code) in &out {
        say(&format!("child {pid} exited with {code}"));
    }
    out
}

/// Sends `signal` to `pid`, which is our own child.
pub fn signal(pid: Pid, signal: Signal) {
    say(&format!("sending {} to {pid}", signal.as_str()));
    let _ = nix::sys::signal::kill(pid, signal);
}

/// Waits until `pid` (our child) has exited, reaping every child that ends meanwhile;
/// SIGKILL after `patience`. Returns the other children that ended.
pub fn wait_exit(pid: Pid, patience: Duration) -> Vec<(Pid, i32)> {
    let until = Instant::now() + patience;
    let mut others = Vec::new();
    loop {
        for (gone, code) in reap() {
            if gone == pid {
                return others;
            }
            others.push((gone, code));
        }
        if Instant::now() >= until {
            signal(pid, Signal::SIGKILL);
        }
        std::thread::sleep(TICK);
    }
}

/// Writes our pid to `path` atomically (temp file, rename), as the real tools do.
pub fn write_pidfile(path: &std::path::Path) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", getpid()));
    std::fs::write(&tmp, format!("{}\n", getpid()))?;
    std::fs::rename(&tmp, path)?;
    say(&format!("wrote pidfile {}", path.display()));
    Ok(())
}

/// One line on stderr, prefixed with our pid: the test keeps it in the peer's log.
pub fn say(line: &str) {
    eprintln!("zd-lookalike[{}]: {line}", getpid());
}
