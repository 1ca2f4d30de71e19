//! The state of the service: which process is watched, where signals go, when it is over.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::unistd::{Pid, getpgid, getpgrp};

use crate::log::Log;
use crate::pidfd::PidFd;
use crate::pidfile::{self, Reading};
use crate::proc;
use crate::reap::{self, Children, Subreaper};
use crate::signals::{self, Received};
use crate::status::Ending;
use crate::watch::{Config, Outcome, Phase};

/// Signals kept for a target that does not exist yet; more of them is a runaway sender.
const MAX_PENDING: usize = 64;

/// Why the pid file names no acceptable pid: the warning, and the same in a few words for
/// the startup timeout's error.
#[derive(Debug, PartialEq, Eq)]
struct Complaint {
    message: String,
    cause: String,
}

#[derive(Debug)]
pub(crate) struct Follower {
    pidfile: PathBuf,
    grace: Duration,
    log: Log,
    me: Pid,
    /// Accept non-descendants owned by the pid file's owner (`--trust-owner`, or no subreaper).
    trust_owner: bool,
    /// Orphans land on us, so "no children left" means no acceptable pid can ever appear.
    adopts_orphans: bool,
    phase: Phase,
    /// The command pidwatch started, while it lives.
    child: Option<PidFd>,
    child_ending: Option<Ending>,
    /// Status of the watched process if a reaping pass collected it before its pidfd fired.
    watched_ending: Option<Ending>,
    children: Children,
    pending: Vec<i32>,
    /// The last complaint about the pid file, so that a stuck file is reported once, and
    /// said again if it never names a pid in time.
    last_complaint: Option<Complaint>,
}

impl Follower {
    pub fn new(config: &Config, log: Log, subreaper: Subreaper, child: PidFd) -> Self {
        Self {
            pidfile: config.pidfile.clone(),
            grace: config.grace,
            log,
            me: Pid::this(),
            trust_owner: config.trust_owner || !subreaper.adopts_orphans(),
            adopts_orphans: subreaper.adopts_orphans(),
            phase: Phase::Starting {
                deadline: Instant::now() + config.startup_timeout,
            },
            child: Some(child),
            child_ending: None,
            watched_ending: None,
            children: Children::Remain,
            pending: Vec::new(),
            last_complaint: None,
        }
    }

    pub fn watched(&self) -> Option<&PidFd> {
        match &self.phase {
            Phase::Watching(fd) => Some(fd),
            _ => None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Starting { deadline } | Phase::Grace { deadline, .. } => Some(*deadline),
            Phase::Watching(_) => None,
        }
    }

    /// Why the pid file named no acceptable pid last time, for an error that gives up on it:
    /// the warning said so already, unless --quiet hid it.
    fn last_cause(&self) -> Option<&str> {
        self.last_complaint.as_ref().map(|c| c.cause.as_str())
    }

    /// Whether no process that could ever be accepted is left.
    fn tree_is_gone(&self) -> bool {
        self.adopts_orphans && !self.trust_owner && self.children == Children::None
    }

    /// `Some` when pidwatch should exit now.
    pub fn outcome(&mut self, now: Instant) -> Option<Outcome> {
        let outcome = match &self.phase {
            Phase::Watching(_) => return None,
            Phase::Starting { .. } if self.tree_is_gone() => {
                let ending = self.child_ending.unwrap_or(Ending::Unknown);
                let why = self
                    .last_cause()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                self.log.error(format_args!(
                    "the command {ending} and left no process behind before a valid pid \
                     appeared in '{}'{why}",
                    self.pidfile.display()
                ));
                Outcome::Ended(ending)
            }
            Phase::Starting { deadline } if now >= *deadline => {
                let why = self
                    .last_cause()
                    .map(|c| format!("; {c}"))
                    .unwrap_or_default();
                self.log.error(format_args!(
                    "no valid pid appeared in '{}' in time (see --startup-timeout{why}): \
                     stopping the command with SIGTERM",
                    self.pidfile.display()
                ));
                for pid in proc::own_children() {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                Outcome::StartupTimeout
            }
            Phase::Grace { ending, .. } if self.tree_is_gone() => Outcome::Ended(*ending),
            Phase::Grace {
                deadline, ending, ..
            } if now >= *deadline => Outcome::Ended(*ending),
            _ => return None,
        };
        if !self.pending.is_empty() {
            let names: Vec<String> = self.pending.iter().map(|s| signals::name(*s)).collect();
            self.log.warn(format_args!(
                "no process was left to receive {}",
                names.join(", ")
            ));
        }
        Some(outcome)
    }

    /// Reaps every ended child, keeping the statuses we relay.
    pub fn reap(&mut self) {
        let watched = self.watched().map(PidFd::pid);
        let child = self.child.as_ref().map(PidFd::pid);
        let (mut watched_ending, mut child_ending) = (None, None);
        self.children = reap::reap_all(|pid, ending| {
            if Some(pid) == watched {
                watched_ending = Some(ending);
            }
            if Some(pid) == child {
                child_ending = Some(ending);
            }
        });
        if watched_ending.is_some() {
            self.watched_ending = watched_ending;
        }
        if child_ending.is_some() {
            self.child_ending = child_ending;
            self.child = None;
        }
    }

    /// Moves to the grace period if the watched process has exited.
    pub fn check_watched(&mut self) {
        let Phase::Watching(fd) = &self.phase else {
            return;
        };
        if !fd.has_exited() {
            return;
        }
        let pid = fd.pid();
        // Its pidfd fired, so it is a zombie now: reap it if it is ours.
        let ending = self
            .watched_ending
            .take()
            .or_else(|| reap::try_reap(pid))
            .unwrap_or(Ending::Unknown);
        if self.child.as_ref().map(PidFd::pid) == Some(pid) {
            self.child = None;
            self.child_ending = Some(ending);
        }
        self.log.info(format_args!("pid {pid} {ending}"));
        self.phase = Phase::Grace {
            deadline: Instant::now() + self.grace,
            pid,
            ending,
        };
        // Learn whether any process is left that could write a successor's pid.
        self.reap();
        self.reread();
    }

    /// Forwards a signal to the watched process, or before there is one to the direct child;
    /// keeps it for the next watched process when there is no target at all.
    pub fn forward(&mut self, signal: Received) {
        let target = match &self.phase {
            Phase::Watching(fd) => Some(fd),
            Phase::Starting { .. } => self.child.as_ref(),
            Phase::Grace { .. } => None,
        };
        // A process that has exited but is not reaped yet still takes a signal without an
        // error, and the signal is lost with it: hold it for the successor, like ESRCH below.
        let Some(target) = target.filter(|t| !t.has_exited()) else {
            self.keep(signal.signo);
            return;
        };
        let in_our_group = getpgid(Some(target.pid())).is_ok_and(|g| g == getpgrp());
        if signals::needs_no_forwarding(&signal, self.me, in_our_group) {
            return;
        }
        let (name, pid) = (signals::name(signal.signo), target.pid());
        match target.send_signal(signal.signo) {
            Ok(()) => self.log.info(format_args!("forwarded {name} to pid {pid}")),
            // Exited, and not yet noticed: the successor will get it.
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => self.keep(signal.signo),
            Err(err) => self
                .log
                .warn(format_args!("cannot send {name} to pid {pid}: {err}")),
        }
    }

    fn keep(&mut self, signo: i32) {
        self.log.info(format_args!(
            "holding {} until a process can receive it",
            signals::name(signo)
        ));
        if self.pending.len() < MAX_PENDING {
            self.pending.push(signo);
        }
    }

    /// Reads the pid file and follows the pid in it if it is acceptable.
    ///
    /// A file that names no pid changes nothing: before the first pid, pidwatch keeps waiting
    /// until `--startup-timeout`; while it follows a process, it keeps following it. That
    /// holds for a FIFO, a symbolic link or a device at the path too: a path someone else
    /// can write to must not be a way to stop the service's supervision early.
    pub fn reread(&mut self) {
        let (pid, owner) = match pidfile::read(&self.pidfile) {
            Reading::Pid { pid, owner } => (pid, owner),
            // Absent or truncated (a writer is at work, or the service has not started) is no
            // problem; anything else is reported once.
            other => {
                if let Some(problem) = other.problem() {
                    self.complain(Complaint {
                        message: format!(
                            "ignoring pid file '{}': {problem}",
                            self.pidfile.display()
                        ),
                        cause: format!("the pid file: {problem}"),
                    });
                }
                return;
            }
        };
        let current = match &self.phase {
            Phase::Watching(fd) => Some(fd.pid()),
            Phase::Grace { pid, .. } => Some(*pid),
            Phase::Starting { .. } => None,
        };
        if current == Some(pid) {
            return;
        }
        match self.accept(pid, owner) {
            Ok(fd) => self.adopt(fd),
            Err(reason) => self.complain(Complaint {
                message: format!("ignoring pid {pid} from the pid file: {reason}"),
                cause: format!("pid {pid}: {reason}"),
            }),
        }
    }

    fn complain(&mut self, complaint: Complaint) {
        if self.last_complaint.as_ref() != Some(&complaint) {
            self.log.warn(&complaint.message);
            self.last_complaint = Some(complaint);
        }
    }

    /// Opens a pidfd first and checks ancestry second, then checks that the process still
    /// lives: a live process keeps its pid, so the ancestry we read was that process's.
    fn accept(&self, pid: Pid, owner: u32) -> Result<PidFd, String> {
        if pid == self.me {
            return Err("it is pidwatch itself".into());
        }
        let fd = PidFd::open(pid).map_err(|err| match err.raw_os_error() {
            Some(libc::ESRCH) => "no such process".to_owned(),
            _ => format!("cannot open a pidfd for it: {err}"),
        })?;
        if !proc::is_descendant(pid, self.me) {
            if !self.trust_owner {
                return Err(
                    "it is not a descendant of pidwatch (--trust-owner also accepts \
                            processes of the pid file's owner)"
                        .into(),
                );
            }
            let uid = proc::real_uid(pid).map_err(|err: io::Error| err.to_string())?;
            if uid != owner {
                return Err(format!(
                    "it is not a descendant of pidwatch and its uid {uid} does not own the \
                     pid file (uid {owner})"
                ));
            }
        }
        if fd.has_exited() {
            return Err("it has already exited".into());
        }
        Ok(fd)
    }

    fn adopt(&mut self, fd: PidFd) {
        self.log.info(format_args!("following pid {}", fd.pid()));
        self.last_complaint = None;
        self.watched_ending = None;
        for signo in std::mem::take(&mut self.pending) {
            let name = signals::name(signo);
            match fd.send_signal(signo) {
                Ok(()) => self.log.info(format_args!(
                    "forwarded {name}, held until now, to pid {}",
                    fd.pid()
                )),
                Err(err) => self.log.warn(format_args!("cannot send {name}: {err}")),
            }
        }
        self.phase = Phase::Watching(fd);
    }
}
