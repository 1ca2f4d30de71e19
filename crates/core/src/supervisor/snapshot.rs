//! What one supervisor binary hands to the next (`zdctl reexec`): its generations, its
//! listeners, its counters, in a versioned JSON form written to a memfd that survives
//! `execve`, together with the fds it names.
//!
//! The next binary reads it before it opens anything ([`super::prepare`]), takes the fds
//! back (each listener checked against the inode recorded), and carries on as the same
//! supervisor: same pid, same sockets, the same generations, still its children.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::child::Carried;
use super::state::{Instance, State};
use crate::proto::{
    AdoptedInfo, FailingInfo, GenerationState, ReexecInfo, RestartCounters, RestartReport, unix_ms,
};
use crate::signal::Signal;

/// The form of [`Snapshot`]; a binary refuses a snapshot of a form it does not read, so a
/// `reexec` to a binary that cannot read this one's state fails before anything changes.
/// Form 2 adds the instances of a pool (`instances` above 1); a service of one instance
/// per generation is still written in form 1, which every binary reads.
pub(super) const FORMAT: u32 = 2;

/// The forms this binary reads.
const READS: [u32; 2] = [1, 2];

/// The environment variable that names the memfd holding the snapshot: set by the
/// supervisor for the binary it executes (`ZDCTL_REEXEC_STATE`), or for the binary it
/// asks to check the snapshot first (`ZDCTL_REEXEC_CHECK`).
pub const STATE_FD_VAR: &str = "ZDCTL_REEXEC_STATE";
pub const CHECK_FD_VAR: &str = "ZDCTL_REEXEC_CHECK";

/// The line a binary that checked a snapshot prints before it exits 0.
pub(super) const CHECKED: &str = "zdctl-reexec-ok";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub format: u32,
    pub service: String,
    /// The version of the binary that wrote it.
    pub version: String,
    pub supervisor_pid: i32,
    /// The supervisor's start time (`/proc/PID/stat`): a live process with the same pid
    /// and start time is this supervisor, whose state file must not be touched.
    #[serde(default)]
    pub supervisor_start_ticks: u64,
    pub started_unix_ms: u64,
    /// The binary `reexec` executes by default: the one the supervisor was started from.
    pub binary: String,
    pub next_generation: u64,
    pub restart_seq: u64,
    pub counters: RestartCounters,
    pub last_restart: Option<RestartReport>,
    pub active: Option<u64>,
    pub crash_streak: u32,
    /// The generations still running (the exited ones are not carried over).
    pub live: Vec<LiveGeneration>,
    /// The seat new connections go to, and its sockets in config order.
    pub seat: u64,
    pub listeners: Vec<ListenerRecord>,
    pub failing: Option<FailingInfo>,
    pub reexecs: u64,
    pub last_reexec: Option<ReexecInfo>,
    pub adopted: Option<AdoptedInfo>,
    /// The control socket's listening fd.
    pub control_fd: i32,
}

/// A running generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LiveGeneration {
    pub generation: u64,
    /// Which of the generation's `of` instances it is (form 2; 0 of 1 in form 1).
    #[serde(default)]
    pub instance: u32,
    #[serde(default = "one")]
    pub of: u32,
    #[serde(default)]
    pub respawns: u32,
    pub pid: i32,
    /// The process's start time (`/proc/PID/stat`), so that a recycled pid is refused.
    pub start_ticks: u64,
    pub state: GenerationState,
    pub started_unix_ms: u64,
    pub stop_signal: Signal,
    pub drain_timeout_ms: u64,
    pub seat: u64,
    pub cgroup: Option<String>,
    /// The fds kept open for it (see [`Carried`]).
    pub intercept_fd: Option<i32>,
    pub output_fds: [Option<i32>; 2],
    /// The inodes of its output pipes: an adopting supervisor takes their read ends from
    /// the generation, which holds them too (see `handoff::child::KEEP_READ_ENDS`).
    #[serde(default)]
    pub output_inodes: [Option<u64>; 2],
    pub prefix: String,
    pub keep_output: bool,
    /// How many lines its log keeps (`log.lines` when it started).
    #[serde(default)]
    pub log_lines: u32,
}

/// One listener of the seat new connections go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ListenerRecord {
    pub name: String,
    pub address: String,
    pub inode: u64,
    pub steered: bool,
    pub fd: i32,
}

/// Why a snapshot cannot be taken now: the service is in the middle of something.
pub(super) fn not_quiescent(st: &State) -> Option<String> {
    if let Some(restart) = st.restart {
        return Some(format!(
            "restart #{restart} is in progress; reexec once it has ended"
        ));
    }
    if st.stopping {
        return Some("the service is stopping".to_owned());
    }
    if let Some(g) = st
        .instances
        .values()
        .find(|g| g.is_live() && st.active != Some(g.generation))
    {
        return Some(format!(
            "generation {} is still {}; reexec once it has ended",
            g.generation,
            state_word(g.state)
        ));
    }
    if let Some(g) = st.instances.values().find(|g| !*g.ended.borrow()) {
        if !g.is_live() {
            return Some(format!(
                "generation {} is still being ended; try again in a moment",
                g.generation
            ));
        }
    }
    if st.sockets.open_count() > 1 {
        return Some("an older generation's sockets are still open; try again in a moment".into());
    }
    None
}

fn state_word(state: GenerationState) -> &'static str {
    match state {
        GenerationState::Starting => "starting",
        GenerationState::Active => "active",
        GenerationState::Draining => "draining",
        GenerationState::Standby => "standby",
        GenerationState::Exited => "exiting",
    }
}

/// What the snapshot of the supervisor records about itself besides its state.
pub(super) struct Identity<'a> {
    pub started: std::time::SystemTime,
    pub binary: &'a str,
    pub control_fd: i32,
    pub reexecs: u64,
    pub last_reexec: Option<ReexecInfo>,
    pub adopted: Option<AdoptedInfo>,
}

impl Snapshot {
    /// The snapshot of `st`, which must be quiescent ([`not_quiescent`]).
    pub fn of(st: &State, me: Identity<'_>) -> Result<Snapshot, String> {
        let seat = st.sockets.steered_to();
        let steered = st.sockets.steered_flags();
        let listeners = st
            .sockets
            .seat(seat)
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerRecord {
                name: l.name().to_owned(),
                address: l.local_display(),
                inode: l.inode(),
                steered: steered.get(i).copied().unwrap_or(false),
                fd: l.as_raw_fd(),
            })
            .collect();
        let mut live = Vec::new();
        for g in st.instances.values().filter(|g| g.is_live()) {
            live.push(LiveGeneration::of(g)?);
        }
        let pooled = live.iter().any(|g| g.instance > 0 || g.of > 1);
        Ok(Snapshot {
            format: if pooled { FORMAT } else { 1 },
            service: st.config.name.clone(),
            version: crate::version::version(),
            supervisor_pid: std::process::id() as i32,
            supervisor_start_ticks: crate::proc::start_time_ticks(std::process::id() as i32)
                .unwrap_or(0),
            started_unix_ms: unix_ms(me.started),
            binary: me.binary.to_owned(),
            next_generation: st.next_generation,
            restart_seq: st.restart_seq,
            counters: st.counters.clone(),
            last_restart: st.last_restart.clone(),
            active: st.active,
            crash_streak: st.crash_streak,
            live,
            seat,
            listeners,
            failing: st.failing.as_ref().map(|f| f.info()),
            reexecs: me.reexecs,
            last_reexec: me.last_reexec,
            adopted: me.adopted,
            control_fd: me.control_fd,
        })
    }

    /// Every fd the next binary takes over.
    pub fn fds(&self) -> Vec<i32> {
        let mut fds = vec![self.control_fd];
        fds.extend(self.listeners.iter().map(|l| l.fd));
        for g in &self.live {
            fds.extend(g.intercept_fd);
            fds.extend(g.output_fds.iter().flatten());
        }
        fds
    }

    /// Writes the snapshot to a new memfd (close-on-exec until the exec).
    pub fn to_memfd(&self) -> std::io::Result<OwnedFd> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let fd = nix::sys::memfd::memfd_create(
            c"zdctl-reexec-state",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&json)?;
        file.rewind()?;
        Ok(file.into())
    }

    /// Reads the snapshot from the memfd `fd`, which this call takes.
    pub fn from_fd(fd: i32) -> Result<Snapshot, String> {
        let is_memfd = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|p| p.to_string_lossy().starts_with("/memfd:zdctl-reexec-state"));
        if !is_memfd {
            return Err(format!("fd {fd} is not a reexec state"));
        }
        // SAFETY: fd names our memfd (checked above), handed to us to own.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.rewind().map_err(|e| e.to_string())?;
        let mut text = String::new();
        (&mut file)
            .take(MAX_SNAPSHOT)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the reexec state: {e}"))?;
        let snapshot: Snapshot = serde_json::from_str(&text)
            .map_err(|e| format!("cannot read the reexec state: {e}"))?;
        if !READS.contains(&snapshot.format) {
            return Err(format!(
                "the reexec state is of form {}, this binary reads forms 1 and {FORMAT}",
                snapshot.format
            ));
        }
        Ok(snapshot)
    }

    /// Checks that the snapshot fits the service as configured now: same name, same
    /// listeners in the same order.
    pub fn check_fits(&self, config: &crate::config::ServiceConfig) -> Result<(), String> {
        if self.service != config.name {
            return Err(format!(
                "the running supervisor is '{}', this one would be '{}'",
                self.service, config.name
            ));
        }
        let names: Vec<&str> = config.listeners.iter().map(|l| l.fd_name()).collect();
        let held: Vec<&str> = self.listeners.iter().map(|l| l.name.as_str()).collect();
        if names != held {
            return Err(format!(
                "the service file now lists the listeners {names:?}, the supervisor holds {held:?}; \
                 a reexec keeps the listeners, so change them with a stop and a new run"
            ));
        }
        Ok(())
    }
}

/// Writes `snapshot` to the state file at `path` (in the private runtime directory):
/// a temporary file renamed into place, so a reader sees the old state or the new.
pub(super) fn write_state_file(path: &std::path::Path, snapshot: &Snapshot) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let json = serde_json::to_vec(snapshot).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("state.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let written = file
        .write_all(&json)
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Reads the state file at `path`: `None` when there is none. Only a regular file of ours
/// (not a link, a FIFO or another user's) of bounded size is read.
pub(super) fn read_state_file(path: &std::path::Path) -> Result<Option<Snapshot>, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the state file '{shown}': {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the state file '{shown}': {e}"))?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "'{shown}' is not a state file this user wrote; remove it if nothing runs the service"
        ));
    }
    let mut text = String::new();
    file.take(MAX_SNAPSHOT)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the state file '{shown}': {e}"))?;
    let snapshot: Snapshot = serde_json::from_str(&text).map_err(|e| {
        format!("the state file '{shown}' is damaged ({e}); remove it if nothing runs the service")
    })?;
    if !READS.contains(&snapshot.format) {
        return Err(format!(
            "the state file '{shown}' is of form {}, this binary reads forms 1 and {FORMAT}",
            snapshot.format
        ));
    }
    Ok(Some(snapshot))
}

/// The largest snapshot read; a few generations and listeners take a few kilobytes.
const MAX_SNAPSHOT: u64 = 1 << 20;

fn one() -> u32 {
    1
}

impl LiveGeneration {
    fn of(g: &Instance) -> Result<LiveGeneration, String> {
        let carried = g.child.as_ref().map(|c| c.carried()).unwrap_or_default();
        let Carried {
            cgroup,
            intercept,
            output,
            output_inodes,
            prefix,
            keep_output,
            log_lines,
        } = carried;
        let start_ticks = crate::proc::start_time_ticks(g.pid)
            .map_err(|e| format!("cannot read generation {}'s start time: {e}", g.generation))?;
        Ok(LiveGeneration {
            generation: g.generation,
            instance: g.instance,
            of: g.of,
            respawns: g.respawns,
            pid: g.pid,
            start_ticks,
            state: g.state,
            started_unix_ms: unix_ms(g.started),
            stop_signal: g.stop_signal,
            drain_timeout_ms: g.drain_timeout.as_millis() as u64,
            seat: g.seat,
            cgroup,
            intercept_fd: intercept,
            output_fds: output,
            output_inodes,
            prefix,
            keep_output,
            log_lines,
        })
    }
}

/// Sets or clears close-on-exec on `fd`.
pub(super) fn set_cloexec(fd: i32, cloexec: bool) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: the fd stays open for the call; only its flags change.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if cloexec {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(borrowed, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            format: FORMAT,
            service: "web".into(),
            version: "0.1.0".into(),
            supervisor_pid: 10,
            supervisor_start_ticks: 5,
            started_unix_ms: 1,
            binary: "zdctl".into(),
            next_generation: 4,
            restart_seq: 2,
            counters: RestartCounters::default(),
            last_restart: None,
            active: Some(3),
            crash_streak: 0,
            live: Vec::new(),
            seat: 3,
            listeners: vec![ListenerRecord {
                name: "http".into(),
                address: "127.0.0.1:8080".into(),
                inode: 77,
                steered: true,
                fd: 9,
            }],
            failing: None,
            reexecs: 0,
            last_reexec: None,
            adopted: None,
            control_fd: 7,
        }
    }

    #[test]
    fn a_snapshot_round_trips_through_a_memfd() {
        let snapshot = sample();
        let fd = snapshot.to_memfd().expect("memfd");
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        assert_eq!(Snapshot::from_fd(raw).expect("read back"), snapshot);
    }

    #[test]
    fn a_snapshot_of_another_form_or_a_file_that_is_not_one_is_refused() {
        let mut snapshot = sample();
        snapshot.format = FORMAT + 1;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(snapshot.to_memfd().expect("memfd"));
        let err = Snapshot::from_fd(raw).expect_err("another form");
        assert!(err.contains("form"), "{err}");
        let file = std::fs::File::open("/proc/self/stat").expect("a file");
        let raw = std::os::fd::IntoRawFd::into_raw_fd(file);
        let err = Snapshot::from_fd(raw).expect_err("not a memfd");
        assert!(err.contains("not a reexec state"), "{err}");
        // SAFETY: from_fd refused it without taking it.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
    }

    #[test]
    fn the_listeners_must_be_the_ones_held() {
        let snapshot = sample();
        let mut config = crate::config::ServiceConfig::defaults_for("web", vec!["true".into()]);
        let err = snapshot.check_fits(&config).expect_err("no listener now");
        assert!(err.contains("stop and a new run"), "{err}");
        let mut spec = crate::listen::ListenerSpec::new("127.0.0.1:8080".parse().expect("addr"));
        spec.name = Some("http".into());
        config.listeners = vec![spec];
        snapshot.check_fits(&config).expect("fits");
        config.name = "api".into();
        assert!(snapshot.check_fits(&config).is_err());
    }
}
