//! The per-generation `NOTIFY_SOCKET` (sd_notify protocol): a unix datagram socket whose
//! messages are newline-separated `KEY=VALUE` assignments.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tracing::debug;

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

/// A bound notify socket; its reader task updates a watch channel until dropped.
pub struct NotifySocket {
    path: PathBuf,
    state: watch::Receiver<NotifyState>,
    task: tokio::task::JoinHandle<()>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        // The app may drop privileges before it notifies (workers under another user), so
        // anyone who can reach the per-service runtime directory may write; the socket is
        // specific to one generation, which is what identifies the sender.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        let (tx, rx) = watch::channel(NotifyState::default());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                debug!(message = %String::from_utf8_lossy(&buf[..n]), "notify");
                tx.send_modify(|s| s.apply(&buf[..n]));
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            state: rx,
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> watch::Receiver<NotifyState> {
        self.state.clone()
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
        {
            let s = rx.borrow_and_update();
            if let Some(errno) = s.errno {
                return Err(ReadyError::NotifyErrno { errno });
            }
            if s.ready {
                return Ok(match &s.status {
                    Some(status) => format!("READY=1 (STATUS={status})"),
                    None => "READY=1".to_owned(),
                });
            }
        }
        if rx.changed().await.is_err() {
            // The socket's task ended; nothing more will arrive. Wait for the timeout.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
