//! The per-generation `NOTIFY_SOCKET` (sd_notify protocol): a unix datagram socket whose
//! messages are newline-separated `KEY=VALUE` assignments.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{ReadyContext, ReadyError};

/// What a generation has told us so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    pub ready: bool,
    pub status: Option<String>,
    pub main_pid: Option<i32>,
    pub errno: Option<i32>,
}

impl NotifyState {
    /// Applies one datagram.
    pub fn apply(&mut self, datagram: &[u8]) {
        for line in String::from_utf8_lossy(datagram).lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "READY" => self.ready = value == "1",
                "STATUS" => self.status = Some(value.to_owned()),
                "MAINPID" => self.main_pid = value.trim().parse().ok(),
                "ERRNO" => self.errno = value.trim().parse().ok(),
                _ => {}
            }
        }
    }
}

/// What a generation has told its notify socket, as it changes: one reader of a
/// [`NotifySocket`]'s state.
#[derive(Debug, Clone)]
pub struct NotifyUpdates(watch::Receiver<NotifyState>);

impl NotifyUpdates {
    /// The state as it is now, which counts as seen for [`NotifyUpdates::changed`].
    pub fn latest(&mut self) -> NotifyState {
        self.0.borrow_and_update().clone()
    }

    /// Waits until the state differs from the one last seen. False when it never will:
    /// the socket is gone.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// Who may speak for a generation on its notify socket: its main process, and any process
/// in its cgroup or below it in the process tree.
#[derive(Debug, Clone)]
pub struct NotifySender {
    /// The generation's main process.
    pub pid: i32,
    /// The generation's cgroup as `/proc/PID/cgroup` names it, when it has one.
    pub cgroup: Option<String>,
}

impl NotifySender {
    /// Whether the process `sender` (as the kernel attested it) belongs to the generation.
    pub fn admits(&self, sender: i32) -> bool {
        if sender == self.pid {
            return true;
        }
        if let Some(cgroup) = &self.cgroup
            && crate::contain::cgroup_of(sender).is_some_and(|c| &c == cgroup)
        {
            return true;
        }
        // Walk up from the sender; a tree is rarely deep, and the walk is bounded anyway.
        let mut pid = sender;
        for _ in 0..64 {
            match crate::proc::parent(pid) {
                Ok(parent) if parent == self.pid => return true,
                Ok(parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    }
}

/// A bound notify socket; its reader task updates a watch channel until dropped.
///
/// The socket's path is known to every process of the generation and may be reachable by
/// others, so a datagram counts only when the kernel's credentials (`SO_PASSCRED`) name a
/// process of the generation ([`NotifySender`]), as systemd's `NotifyAccess=all` checks
/// the cgroup. Others' datagrams are dropped and logged.
pub struct NotifySocket {
    path: PathBuf,
    state: watch::Receiver<NotifyState>,
    sender: watch::Sender<Option<NotifySender>>,
    task: tokio::task::JoinHandle<()>,
}

impl NotifySocket {
    /// Binds the socket at `path`, in a runtime directory that only this user can write
    /// ([`crate::paths::ensure_runtime_dir`]): nobody can swap the path between the bind
    /// and the mode change. Datagrams wait until [`NotifySocket::admit`] names the
    /// generation's processes.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true)
            .map_err(std::io::Error::from)?;
        // A generation that switches to another uid before it notifies can reach the socket
        // only if the directory lets it in (mode 0711 or 0755, the operator's choice); then
        // the socket itself is open to it, and the sender check is what keeps others out.
        let mode = match path.parent() {
            Some(dir) if crate::paths::traversable_by_others(dir) => 0o666,
            _ => 0o600,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        let (tx, rx) = watch::channel(NotifyState::default());
        let (sender_tx, sender_rx) = watch::channel(None);
        let task = tokio::spawn(read_datagrams(socket, sender_rx, tx));
        Ok(Self {
            path: path.to_path_buf(),
            state: rx,
            sender: sender_tx,
            task,
        })
    }

    /// From now on, datagrams from `sender`'s processes count.
    pub fn admit(&self, sender: NotifySender) {
        self.sender.send_replace(Some(sender));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> NotifyUpdates {
        NotifyUpdates(self.state.clone())
    }
}

/// The largest datagram read; sd_notify messages are a few dozen bytes.
const DATAGRAM_MAX: usize = 4096;

async fn read_datagrams(
    socket: UnixDatagram,
    mut sender: watch::Receiver<Option<NotifySender>>,
    state: watch::Sender<NotifyState>,
) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        let Ok((n, pid)) = recv_with_pid(&socket, &mut buf).await else {
            return;
        };
        // A datagram may come before the spawn's caller has named the generation.
        let Ok(admitted) = sender.wait_for(|s| s.is_some()).await else {
            return;
        };
        let allowed = match (pid, admitted.as_ref()) {
            (Some(pid), Some(s)) => s.admits(pid),
            _ => false,
        };
        drop(admitted);
        if !allowed {
            warn!(
                sender_pid = pid.unwrap_or(0),
                "ignored a notify datagram from a process outside the generation"
            );
            continue;
        }
        debug!(message = %String::from_utf8_lossy(&buf[..n]), "notify");
        state.send_modify(|s| s.apply(&buf[..n]));
    }
}

/// Receives one datagram and the sender's pid from its `SCM_CREDENTIALS`.
async fn recv_with_pid(
    socket: &UnixDatagram,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
    use std::os::fd::AsRawFd;
    loop {
        socket.readable().await?;
        let got = socket.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = [std::io::IoSliceMut::new(buf)];
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let msg = recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let pid = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
            });
            Ok((msg.bytes, pid))
        });
        match got {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

impl std::fmt::Debug for NotifySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySocket")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(super) async fn wait_ready(ctx: &ReadyContext) -> Result<String, ReadyError> {
    let mut rx = ctx.notify.clone().ok_or(ReadyError::NoNotifySocket)?;
    loop {
        let s = rx.latest();
        if let Some(errno) = s.errno {
            return Err(ReadyError::NotifyErrno { errno });
        }
        if s.ready {
            return Ok(match &s.status {
                Some(status) => format!("READY=1 (STATUS={status})"),
                None => "READY=1".to_owned(),
            });
        }
        if !rx.changed().await {
            // The socket's task ended; nothing more will arrive. Wait for the timeout.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_generation_and_its_descendants_may_notify() {
        let me = std::process::id() as i32;
        let sender = NotifySender {
            pid: me,
            cgroup: None,
        };
        assert!(sender.admits(me));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        assert!(
            sender.admits(child.id() as i32),
            "a child of the generation"
        );
        assert!(!sender.admits(1), "init is nobody's descendant");
        let other = NotifySender {
            pid: child.id() as i32,
            cgroup: None,
        };
        assert!(!other.admits(me), "a parent is not a descendant");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn datagrams_update_the_state() {
        let mut s = NotifyState::default();
        s.apply(b"STATUS=warming up\nMAINPID=42");
        assert!(!s.ready);
        assert_eq!(s.status.as_deref(), Some("warming up"));
        assert_eq!(s.main_pid, Some(42));
        s.apply(b"READY=1\n");
        assert!(s.ready);
        s.apply(b"ERRNO=5");
        assert_eq!(s.errno, Some(5));
    }
}
