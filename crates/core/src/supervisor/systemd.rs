//! Under systemd (`Type=notify`): telling the service manager how the service is doing,
//! and keeping the listeners in its fd store (sd_notify(3)).
//!
//! Only when `NOTIFY_SOCKET` is in the supervisor's environment (systemd's, not the one
//! each generation gets from us: the handoff replaces it in theirs). The supervisor stays
//! the service's main process: the readiness, restarts and stop it reports are those of
//! the service as a whole.
//!
//! | event | message |
//! |---|---|
//! | the first generation is ready | `READY=1`, `MAINPID=` (our pid), `STATUS=` |
//! | a restart begins | `RELOADING=1`, `MONOTONIC_USEC=`, `STATUS=` |
//! | a restart ends, completed or not (the service is up either way) | `READY=1`, `MAINPID=`, `STATUS=` |
//! | the active generation exits, respawns, or the service is failing | `STATUS=` |
//! | the stop begins | `STOPPING=1`, `STATUS=` |
//!
//! The fd store: when systemd says it keeps fds for us (`FDSTORE=`, set by systemd 254
//! and later to the unit's `FileDescriptorStoreMax=`), each listener is sent once at start
//! (`FDSTORE=1`, `FDNAME=` the listener's name). systemd hands them back on the next start
//! in `LISTEN_FDS`, where socket activation adopts them by name, so a crash of the
//! supervisor and of every generation refuses no connection: the sockets stayed open in
//! systemd, their queues holding the clients. Listeners adopted from systemd (a socket
//! unit, or the store itself after such a crash) are not sent again: systemd holds them
//! already. Nothing is ever removed (`FDSTOREREMOVE=1`): a listener lives as long as the
//! supervisor.
//!
//! A steered listener is not stored. Its sockets are one per generation in an
//! `SO_REUSEPORT` group, and a copy in systemd would keep a socket in the group after the
//! supervisor closed its own, where new connections could land with nobody to accept
//! them. That is why, when the fd store is on and the service file names no `handoff`,
//! the supervisor chooses `shared` ([`fd_store_offered`]). The listeners are stored all or
//! none (see [`store_listeners`]), so a service with a steered listener, or with several
//! unnamed ones, stores none.

use std::ffi::OsString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, setsockopt,
    socket, sockopt,
};
use nix::sys::time::TimeVal;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::Context;
use crate::listen::steer::Sockets;
use crate::proto::{Event, EventKind, RestartOutcome};

/// How long one message may wait for room in systemd's socket: systemd reads it at once,
/// and a supervisor must never hang on a manager that stopped reading.
const SEND_TIMEOUT_SECS: i64 = 1;

/// Starts reporting to systemd when `NOTIFY_SOCKET` is set, and stores the listeners of
/// `sockets` in its fd store when it keeps one for us and `store` (a supervisor that took
/// its listeners over from an earlier binary does not store them twice). Call it before the first generation
/// starts, so that its events are seen.
pub(super) fn start(cx: &Context, sockets: &Sockets, store: bool) {
    let Some(manager) = Manager::from_env() else {
        return;
    };
    if store && fd_store_max(std::env::var_os("FDSTORE")) > 0 {
        store_listeners(&manager, sockets);
    }
    let events = cx.events.subscribe();
    tokio::spawn(report(manager, events));
}

/// Whether systemd keeps an fd store for this service: `NOTIFY_SOCKET` is set and
/// `FDSTORE` (systemd 254 and later: the unit's `FileDescriptorStoreMax=`) is positive.
pub(super) fn fd_store_offered() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
        && fd_store_max(std::env::var_os("FDSTORE")) > 0
}

/// `FDSTORE`'s value; 0 when unset or not a number.
fn fd_store_max(value: Option<OsString>) -> u32 {
    value
        .and_then(|v| v.to_str().and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Sends every listener to systemd's fd store, one message each, unless systemd holds
/// them already or one of them cannot be stored. All or none: after a crash, the new
/// supervisor adopts what systemd passes only if it covers every listener, so storing some
/// would turn a crash into a start that fails.
fn store_listeners(manager: &Manager, sockets: &Sockets) {
    if crate::listen::adopted_from_systemd() {
        info!("the listeners came from systemd, which holds them: not storing them again");
        return;
    }
    if let Some(reason) = why_not_storable(sockets) {
        warn!(reason, "no listener is put in systemd's fd store");
        return;
    }
    for listener in sockets.seat(sockets.steered_to()) {
        let name = listener.name();
        match manager.send_fd(&fd_store_message(name), listener.fd().as_raw_fd()) {
            Ok(()) => info!(
                name,
                inode = listener.inode(),
                "stored in systemd's fd store"
            ),
            Err(e) => warn!(name, error = %e, "cannot put the listener in systemd's fd store"),
        }
    }
}

/// Why the listeners cannot go to the fd store, if they cannot.
fn why_not_storable(sockets: &Sockets) -> Option<&'static str> {
    let seat = sockets.seat(sockets.steered_to());
    let steered = (0..seat.len()).any(|i| sockets.is_steered(i));
    let unnamed = seat.iter().filter(|l| l.spec().name.is_none()).count();
    if steered {
        Some(
            "a steered listener cannot be stored; give the service 'handoff: shared' to keep \
             its sockets open across a crash of the supervisor",
        )
    } else if unnamed > 1 {
        // systemd hands stored fds back in an order of its own: only names tell them apart.
        Some("several listeners have no name; name each one ('NAME=ADDRESS')")
    } else {
        None
    }
}

/// Follows the supervisor's events and tells systemd what they mean for the service.
async fn report(manager: Manager, mut events: broadcast::Receiver<Event>) {
    let mut service = ServiceView::new(std::process::id());
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(missed, "systemd notification fell behind the events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if let Some(message) = service.message_for(&event, monotonic_usec) {
            if let Err(e) = manager.send(&message) {
                warn!(error = %e, "cannot notify systemd");
            }
        }
    }
}

/// What systemd has been told, and the active generation, as the events show them.
#[derive(Debug)]
struct ServiceView {
    own_pid: u32,
    /// The active generation's number and main pid.
    active: Option<(u64, i32)>,
    /// `READY=1` was sent once: a later generation's readiness only changes the status.
    ready: bool,
    /// `STOPPING=1` was sent: nothing says ready again.
    stopping: bool,
    /// How the last restart ended, for the status line.
    last_restart: Option<String>,
}

impl ServiceView {
    fn new(own_pid: u32) -> ServiceView {
        ServiceView {
            own_pid,
            active: None,
            ready: false,
            stopping: false,
            last_restart: None,
        }
    }

    /// The message `event` calls for, if any. `monotonic_usec` is read only for a restart's
    /// start (`RELOADING=1` must carry the time it was sent).
    fn message_for(
        &mut self,
        event: &Event,
        monotonic_usec: impl FnOnce() -> u64,
    ) -> Option<String> {
        if self.stopping {
            return None;
        }
        let from_restart = event.restart.is_some();
        match &event.kind {
            EventKind::Spawned { generation, pid } if !from_restart => {
                self.active = Some((*generation, *pid));
                Some(status_message(&format!(
                    "generation {generation} (pid {pid}) starting"
                )))
            }
            EventKind::Promoted { generation, pid } => {
                self.active = Some((*generation, *pid));
                None
            }
            EventKind::Ready { generation, .. } if !from_restart => {
                if self.active.is_none_or(|(g, _)| g != *generation) {
                    return None;
                }
                if self.ready {
                    // A respawn: the service was up before, and is again.
                    return Some(status_message(&self.status_line()));
                }
                Some(self.ready_message())
            }
            EventKind::RestartRequested => {
                let restart = event.restart.unwrap_or_default();
                let status = match self.active {
                    Some((g, pid)) => format!(
                        "restart #{restart}: starting a new generation; generation {g} (pid {pid}) active"
                    ),
                    None => format!("restart #{restart}: starting a new generation"),
                };
                Some(format!(
                    "RELOADING=1\nMONOTONIC_USEC={}\n{}",
                    monotonic_usec(),
                    status_message(&status)
                ))
            }
            EventKind::Finished { report } => {
                self.last_restart = Some(match &report.outcome {
                    RestartOutcome::Completed => "completed".to_owned(),
                    RestartOutcome::RolledBack { reason } => format!("rolled back: {reason}"),
                    RestartOutcome::Failed { reason } => format!("failed: {reason}"),
                });
                // A restart that did not complete leaves the service as it was: up (the
                // end of its RELOADING=1), or, while the first generation has not been
                // ready yet, still starting.
                if !self.ready && !report.outcome.is_success() {
                    return Some(status_message(&self.status_line()));
                }
                Some(self.ready_message())
            }
            EventKind::Exited {
                generation, status, ..
            } if !from_restart && self.active.is_some_and(|(g, _)| g == *generation) => {
                self.active = None;
                Some(status_message(&format!(
                    "no active generation: generation {generation} exited ({status})"
                )))
            }
            EventKind::Respawning {
                generation,
                delay_ms,
            } => Some(status_message(&format!(
                "no active generation: generation {generation} starts in {delay_ms} ms"
            ))),
            EventKind::Failing { failed_starts, .. } => Some(status_message(&format!(
                "failing after {failed_starts} failed starts: nothing is respawned until \
                 'zdctl restart'; the listeners keep clients waiting"
            ))),
            EventKind::Stopping => {
                self.stopping = true;
                Some(format!(
                    "STOPPING=1\n{}",
                    status_message("stopping: draining every generation")
                ))
            }
            _ => None,
        }
    }

    /// `READY=1`, with our pid as the main one (systemd must not take a generation's for
    /// it), and the status.
    fn ready_message(&mut self) -> String {
        self.ready = true;
        format!(
            "READY=1\nMAINPID={}\n{}",
            self.own_pid,
            status_message(&self.status_line())
        )
    }

    /// `generation 4 (pid 1234) active; last restart completed`.
    fn status_line(&self) -> String {
        let mut status = match self.active {
            Some((g, pid)) => format!("generation {g} (pid {pid}) active"),
            None => "no active generation".to_owned(),
        };
        if let Some(last) = &self.last_restart {
            status.push_str("; last restart ");
            status.push_str(last);
        }
        status
    }
}

/// `STATUS=text`, on one line: a line break in a reason must not start an assignment of
/// its own.
fn status_message(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// The message that puts one fd in the store under `name`.
fn fd_store_message(name: &str) -> String {
    format!("FDSTORE=1\nFDNAME={name}")
}

/// CLOCK_MONOTONIC in microseconds, the clock `MONOTONIC_USEC` is read on.
fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}

/// Where systemd listens (`NOTIFY_SOCKET`), and our socket to send from.
#[derive(Debug)]
struct Manager {
    addr: UnixAddr,
    socket: OwnedFd,
}

impl Manager {
    /// The manager `NOTIFY_SOCKET` names, or `None` when it names none we can reach (then
    /// with a warning that says why).
    fn from_env() -> Option<Manager> {
        let value = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty())?;
        let addr = match parse_notify_socket(value.as_bytes()) {
            Ok(addr) => addr,
            Err(problem) => {
                warn!(notify_socket = %value.to_string_lossy(), problem, "not notifying systemd");
                return None;
            }
        };
        Manager::new(addr)
            .inspect_err(|e| warn!(error = %e, "cannot open a socket to notify systemd"))
            .ok()
    }

    fn new(addr: UnixAddr) -> nix::Result<Manager> {
        let socket = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(
            &socket,
            sockopt::SendTimeout,
            &TimeVal::new(SEND_TIMEOUT_SECS, 0),
        )?;
        Ok(Manager { addr, socket })
    }

    fn send(&self, message: &str) -> nix::Result<()> {
        self.send_with(message, &[])
    }

    /// Sends `message` with `fd` attached (SCM_RIGHTS): systemd gets a duplicate.
    fn send_fd(&self, message: &str, fd: std::os::fd::RawFd) -> nix::Result<()> {
        self.send_with(message, &[ControlMessage::ScmRights(&[fd])])
    }

    fn send_with(&self, message: &str, cmsgs: &[ControlMessage<'_>]) -> nix::Result<()> {
        let iov = [IoSlice::new(message.as_bytes())];
        sendmsg(
            self.socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            Some(&self.addr),
        )?;
        Ok(())
    }
}

/// `NOTIFY_SOCKET`'s address: an absolute path, or `@name` for an abstract socket (what
/// systemd itself accepts besides `vsock:`, which a supervisor on the same host never
/// gets).
fn parse_notify_socket(value: &[u8]) -> Result<UnixAddr, &'static str> {
    match value {
        [b'/', ..] => UnixAddr::new(value).map_err(|_| "the path is too long for a unix socket"),
        [b'@', name @ ..] if !name.is_empty() => {
            UnixAddr::new_abstract(name).map_err(|_| "the name is too long for a unix socket")
        }
        _ => Err("it is neither an absolute path nor an abstract '@name'"),
    }
}

#[cfg(test)]
mod tests;
