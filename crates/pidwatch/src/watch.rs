//! The poll loop: one thread, two kinds of descriptors (the signalfd, which also carries the
//! pid file's directory notifications, and the watched process's pidfd).

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use crate::dirwatch::PidfileWatch;
use crate::error::Error;
use crate::follow::Follower;
use crate::log::Log;
use crate::pidfd::PidFd;
use crate::reap::{self, Subreaper};
use crate::signals::{self, Receiver};
use crate::spawn::spawn;
use crate::status::Ending;

/// Everything `run` needs, already validated by the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub pidfile: PathBuf,
    pub grace: Duration,
    pub startup_timeout: Duration,
    pub trust_owner: bool,
    pub quiet: bool,
    /// Do not become a subreaper: the fallback for old kernels, on demand (for tests).
    pub no_subreaper: bool,
    pub command: Vec<OsString>,
}

/// Why pidwatch stopped watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The service is gone; this is how its last watched process ended.
    Ended(Ending),
    /// No valid pid appeared in the pid file in time; the children were sent SIGTERM.
    StartupTimeout,
}

/// Where the service stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// No valid pid has been read yet; signals go to the direct child.
    Starting { deadline: Instant },
    /// The pid file named this live descendant.
    Watching(PidFd),
    /// The watched process ended; a new pid may still appear until the deadline.
    Grace {
        deadline: Instant,
        pid: Pid,
        ending: Ending,
    },
}

/// Runs the command and watches it until the service is gone.
pub fn run(config: &Config) -> Result<Outcome, Error> {
    let log = Log::new(config.quiet);
    let subreaper = if config.no_subreaper {
        Subreaper::Declined
    } else {
        reap::become_subreaper()
    };
    let fallback = "falling back to following whatever the pid file names, if its process \
                    belongs to the pid file's owner";
    match subreaper {
        Subreaper::Unsupported(errno) => log.warn(format_args!(
            "this kernel cannot make pidwatch a child subreaper ({errno}): {fallback}"
        )),
        Subreaper::Declined => log.warn(format_args!("--no-subreaper: {fallback}")),
        Subreaper::Enabled | Subreaper::Init => {}
    }
    // Blocked before the spawn, so no signal sent from now on can be lost.
    let signals = Receiver::block_all().map_err(|source| Error::Setup {
        about: "block signals and open a signalfd",
        source,
    })?;
    let pidfile_watch = PidfileWatch::new(&config.pidfile)?;
    let child = spawn(config)?;
    let mut follower = Follower::new(config, log, subreaper, child);
    follower.reread();

    loop {
        if let Some(outcome) = follower.outcome(Instant::now()) {
            return Ok(outcome);
        }
        let timeout = follower
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            // Round up so that we never wake just before the deadline and spin.
            .map(|left| u32::try_from(left.as_millis() + 1).unwrap_or(u32::MAX))
            .map_or(PollTimeout::NONE, |ms| {
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            });
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(watched) = follower.watched() {
            fds.push(PollFd::new(watched.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(source) => {
                return Err(Error::Setup {
                    about: "poll",
                    source,
                });
            }
        }
        let signal_ready = fds[0].any().unwrap_or(false);
        drop(fds);

        if signal_ready {
            // A burst of directory notices costs one read of the pid file, done before the
            // next forwarded signal: a signal sent after the file changed goes to the new pid.
            let mut pidfile_changed = false;
            while let Ok(Some(signal)) = signals.next() {
                if pidfile_watch.is_notice(&signal) {
                    pidfile_changed = true;
                    continue;
                }
                if std::mem::take(&mut pidfile_changed) {
                    follower.reread();
                }
                if signals::is_child_event(signal.signo) {
                    follower.reap();
                } else {
                    follower.forward(signal);
                }
            }
            if pidfile_changed {
                follower.reread();
            }
        }
        // Checked after the pid file, which may already name the successor.
        follower.check_watched();
    }
}
