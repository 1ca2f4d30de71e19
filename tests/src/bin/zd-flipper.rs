//! zd-flipper: a service that upgrades itself by replacing its main process, the pattern of
//! psflip and nginx's USR2 binary upgrade, for pidwatch's end-to-end tests.
//!
//! On its flip signal it starts its successor (the same program, next generation), waits
//! until the successor has written the pid file, then exits 0. It appends one line per event
//! to the log (`PID gen=G EVENT DETAIL`): `start ppid=N`, `signal SIGNAME`, `flip-to PID`,
//! `exit CODE`, `raise SIGNAME`, `orphans N`. Synchronous: signals are read from a signalfd.
//!
//! ```text
//! zd-flipper --pidfile PATH --log PATH [--flip-on SIG] [--term-exit CODE]
//!            [--term-signal SIG] [--daemonize] [--orphans N] [--late-successor FIFO]
//! ```
//!
//! `--late-successor FIFO`: the flipping process exits without waiting for its successor,
//! which writes the pid file only once a byte arrives on FIFO (a slow start, on cue).
//!
//! ```text
//! ```

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid, pipe2, setsid};

#[derive(Debug, Clone)]
struct Args {
    pidfile: PathBuf,
    log: PathBuf,
    flip_on: Signal,
    term_exit: i32,
    term_signal: Option<Signal>,
    daemonize: bool,
    orphans: u32,
    generation: u32,
    ready_fd: Option<i32>,
    wait_fifo: Option<PathBuf>,
    late_successor: Option<PathBuf>,
}

fn parse_signal(text: &str) -> Result<Signal> {
    let name = if text.starts_with("SIG") {
        text.to_owned()
    } else {
        format!("SIG{text}")
    };
    Signal::from_str(&name).with_context(|| format!("'{text}' is not a signal name"))
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        pidfile: PathBuf::new(),
        log: PathBuf::new(),
        flip_on: Signal::SIGUSR2,
        term_exit: 0,
        term_signal: None,
        daemonize: false,
        orphans: 0,
        generation: 1,
        ready_fd: None,
        wait_fifo: None,
        late_successor: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--daemonize" {
            args.daemonize = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pidfile" => args.pidfile = value.into(),
            "--log" => args.log = value.into(),
            "--flip-on" => args.flip_on = parse_signal(&value)?,
            "--term-exit" => args.term_exit = value.parse()?,
            "--term-signal" => args.term_signal = Some(parse_signal(&value)?),
            "--orphans" => args.orphans = value.parse()?,
            "--generation" => args.generation = value.parse()?,
            "--ready-fd" => args.ready_fd = Some(value.parse()?),
            "--wait-fifo" => args.wait_fifo = Some(value.into()),
            "--late-successor" => args.late_successor = Some(value.into()),
            _ => bail!("unknown flag '{flag}'"),
        }
    }
    if args.pidfile.as_os_str().is_empty() || args.log.as_os_str().is_empty() {
        bail!("--pidfile and --log are required");
    }
    Ok(args)
}

/// Appends one line in a single write, so lines of several generations never interleave.
fn log(args: &Args, event: &str) {
    let line = format!("{} gen={} {event}\n", getpid(), args.generation);
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&args.log) {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Writes the pid file atomically, as nginx's and psflip's readers expect: temp + rename.
fn write_pidfile(args: &Args) -> Result<()> {
    let tmp = args.pidfile.with_extension(format!("tmp{}", getpid()));
    std::fs::write(&tmp, format!("{}\n", getpid()))?;
    std::fs::rename(&tmp, &args.pidfile)?;
    Ok(())
}

/// Starts the next generation and, with `wait`, waits for its "pid file written" byte on a
/// pipe; returns its pid if it became ready (or was not waited for).
fn start_successor(args: &Args, generation: u32, wait: bool) -> Result<Option<Pid>> {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--pidfile")
        .arg(&args.pidfile)
        .arg("--log")
        .arg(&args.log);
    cmd.args(["--flip-on", args.flip_on.as_str()]);
    cmd.args(["--term-exit", &args.term_exit.to_string()]);
    if let Some(sig) = args.term_signal {
        cmd.args(["--term-signal", sig.as_str()]);
    }
    cmd.args(["--generation", &generation.to_string()]);
    if wait {
        // Close-on-exec cleared on purpose: the successor reports readiness on this fd.
        fcntl(&write_end, FcntlArg::F_SETFD(FdFlag::empty()))?;
        cmd.args(["--ready-fd", &write_end.as_raw_fd().to_string()]);
    }
    if let Some(fifo) = &args.late_successor {
        cmd.arg("--wait-fifo").arg(fifo);
    }
    let child = cmd.spawn()?;
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    if !wait {
        return Ok(Some(pid));
    }
    drop(write_end);
    let mut byte = [0u8; 1];
    let mut reader = std::fs::File::from(read_end);
    let ready = matches!(reader.read(&mut byte), Ok(1));
    Ok(ready.then_some(pid))
}

/// Leaves `count` orphans behind: each intermediate process forks a grandchild and exits, so
/// the grandchild is re-parented to the nearest subreaper, which must reap it.
fn make_orphans(count: u32) -> Result<()> {
    for _ in 0..count {
        // SAFETY: this process is single-threaded, and both forked processes only call
        // async-signal-safe functions (fork, waitpid, _exit) before they end.
        match unsafe { fork() }? {
            ForkResult::Child => {
                // SAFETY: as above.
                let _ = unsafe { fork() };
                // SAFETY: _exit skips destructors and atexit handlers, which belong to the
                // parent's copy of the program.
                unsafe { libc::_exit(0) };
            }
            ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None)?;
            }
        }
    }
    Ok(())
}

fn die_on_term(args: &Args) -> ! {
    match args.term_signal {
        Some(sig) => {
            log(args, &format!("raise {}", sig.as_str()));
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit reads the struct we pass and keeps no pointer to it. No core
            // file: the tests raise SIGSEGV and SIGABRT on purpose.
            let _ = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            let mut set = SigSet::empty();
            set.add(sig);
            // SAFETY: restoring the default disposition installs no handler code.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
            let _ = kill(getpid(), sig);
            // A signal that does not kill by default (none of the tests use one) ends here.
            std::process::exit(1);
        }
        None => {
            log(args, &format!("exit {}", args.term_exit));
            std::process::exit(args.term_exit);
        }
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let all = SigSet::all();
    all.thread_block()?;
    let signals = SignalFd::new(&all)?;
    log(&args, &format!("start ppid={}", getppid()));

    if args.daemonize {
        // The launcher detaches into its own session, starts the real service there and exits,
        // as a daemonizing server does: the service is then re-parented to the subreaper.
        // Like nginx's, the launcher does not wait for the pid file.
        let _ = setsid();
        let next = start_successor(&args, args.generation + 1, false)?;
        log(&args, &format!("launched {next:?}"));
        std::process::exit(if next.is_some() { 0 } else { 1 });
    }
    if let Some(fifo) = &args.wait_fifo {
        // Holds the pid file back until the test writes a byte: a slow start, on cue.
        let mut byte = [0u8; 1];
        let _ = std::fs::File::open(fifo)?.read(&mut byte)?;
        log(&args, "go");
    }
    write_pidfile(&args)?;
    if let Some(fd) = args.ready_fd {
        // SAFETY: our parent passed this inherited pipe end by number; nothing else uses it.
        let mut ready = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let _ = ready.write_all(b"r");
    }
    if args.orphans > 0 {
        make_orphans(args.orphans)?;
        log(&args, &format!("orphans {}", args.orphans));
    }

    loop {
        let Some(info) = signals.read_signal()? else {
            continue;
        };
        let Ok(signal) = Signal::try_from(i32::try_from(info.ssi_signo)?) else {
            log(&args, &format!("signal {}", info.ssi_signo));
            continue;
        };
        if signal == Signal::SIGCHLD {
            continue;
        }
        log(&args, &format!("signal {}", signal.as_str()));
        if signal == args.flip_on {
            let wait = args.late_successor.is_none();
            match start_successor(&args, args.generation + 1, wait)? {
                Some(next) => {
                    log(&args, &format!("flip-to {next}"));
                    std::process::exit(0);
                }
                None => log(&args, "flip-failed"),
            }
        } else if signal == Signal::SIGTERM {
            die_on_term(&args);
        }
    }
}
