//! The supervisor's side of the control socket: binds it safely, checks who connects, frames
//! and parses lines, and hands each valid request to the supervisor as a [`Request`] with a
//! channel for its replies. Malformed input is answered here and never reaches the engine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::codec::{LineError, LineReader, parse_request};
use super::types::{ErrorKind, Op, Reply};

/// A request that passed framing, parsing and the peer check.
#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub op: Op,
    /// When its line was read: where a restart's times count from.
    pub received: std::time::Instant,
    /// Where the engine sends the request's events and its one final reply. Closed when the
    /// client goes away.
    pub replies: mpsc::Sender<Reply>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(
        "service is already running: a supervisor answers on '{}'; stop it first (zdctl stop) or choose another name",
        path.display()
    )]
    AlreadyRunning { path: PathBuf },
    #[error("'{}' exists and is not a socket; remove it or set ZDCTL_RUNTIME_DIR", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot {about} '{}'", path.display())]
    Io {
        about: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which peers may talk to the supervisor.
#[derive(Debug, Clone, Copy)]
pub struct PeerPolicy {
    /// The supervisor's own uid; root is always allowed as well.
    pub uid: u32,
}

impl PeerPolicy {
    pub fn current() -> Self {
        Self {
            uid: nix::unistd::geteuid().as_raw(),
        }
    }
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.uid
    }
}

/// A bound control socket. Removing the socket file is the owner's job at shutdown
/// ([`ControlServer::remove`]), so a crash leaves a stale file that the next bind replaces.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` with mode 0600. A socket file that nothing answers on is stale and replaced;
    /// one that answers means the service already runs.
    pub async fn bind(path: &Path) -> Result<Self, ServerError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ServerError::Io {
                about: "create the runtime directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(ServerError::NotASocket {
                        path: path.to_path_buf(),
                    });
                }
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ServerError::AlreadyRunning {
                        path: path.to_path_buf(),
                    });
                }
                debug!(path = %path.display(), "removing stale control socket");
                remove_file(path)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ServerError::Io {
                    about: "inspect",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        // Bind under a restrictive umask-independent mode: create, then chmod before anyone
        // can be told the path. The peer-uid check below is the real gate; the mode is depth.
        let listener = UnixListener::bind(path).map_err(|source| ServerError::Io {
            about: "bind the control socket",
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ServerError::Io {
                about: "set the mode of",
                path: path.to_path_buf(),
                source,
            },
        )?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients forever, sending their parsed requests to `requests`.
    pub async fn serve(self, policy: PeerPolicy, requests: mpsc::Sender<Request>) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    warn!(error = %e, "accepting a control connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let requests = requests.clone();
            tokio::spawn(handle_connection(stream, policy, requests));
        }
    }

    /// Removes the socket file if it is still the one we bound.
    pub fn remove(path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

fn remove_file(path: &Path) -> Result<(), ServerError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServerError::Io {
            about: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

async fn handle_connection(
    stream: UnixStream,
    policy: PeerPolicy,
    requests: mpsc::Sender<Request>,
) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            warn!(error = %e, "cannot read the peer credentials of a control connection");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    if !policy.allows(uid) {
        warn!(uid, "refused a control connection from another user");
        let reply = Reply::error(
            0,
            ErrorKind::Forbidden,
            format!(
                "uid {uid} may not control this service; run as root or as uid {}",
                policy.uid
            ),
        );
        let _ = write_reply(&mut write, &reply).await;
        // Read (and drop) what the client sends until it hangs up, for a bounded time:
        // closing at once would make its request write fail with EPIPE before it reads the
        // refusal.
        let _ = write.shutdown().await;
        let mut sink = tokio::io::sink();
        let mut read = read;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::io::copy(&mut (&mut read).take(64 * 1024), &mut sink),
        )
        .await;
        return;
    }
    let mut lines = LineReader::new(BufReader::new(read));
    // One writer task per connection so that events of a long request and replies of the
    // next request never interleave mid-line.
    let (out_tx, mut out_rx) = mpsc::channel::<Reply>(256);
    let writer = tokio::spawn(async move {
        while let Some(reply) = out_rx.recv().await {
            if write_reply(&mut write, &reply).await.is_err() {
                break;
            }
        }
    });
    loop {
        let line = lines.next_line().await;
        let received = std::time::Instant::now();
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(LineError::TooLong { max }) => {
                let msg = format!("request line longer than {max} bytes");
                if out_tx
                    .send(Reply::error(0, ErrorKind::TooLong, msg))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
            Err(LineError::Io(_)) => break,
        };
        match parse_request(&line) {
            Ok((id, op)) => {
                let req = Request {
                    id,
                    op,
                    received,
                    replies: out_tx.clone(),
                };
                if requests.send(req).await.is_err() {
                    let _ = out_tx
                        .send(Reply::error(
                            id,
                            ErrorKind::Stopping,
                            "the supervisor is stopping",
                        ))
                        .await;
                    break;
                }
            }
            Err(reply) => {
                if out_tx.send(reply).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(out_tx);
    let _ = writer.await;
}

async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}
