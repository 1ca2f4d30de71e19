//! The client side of the control socket, used by every `zdctl` command that talks to a
//! supervisor.
//!
//! A client must not take on trust who answers: anyone who can write to the runtime
//! directory can put a socket at the path, so right after connecting the client checks
//! with `SO_PEERCRED` that root or its own user serves it.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::codec::{LineError, LineReader};
use super::types::{Event, Op, Reply, Request};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket: the service is not running.
    #[error("no supervisor answers on '{}'", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket (or a directory above it) is not ours to use: it belongs to another
    /// user. `owner` is whichever of them we could look at.
    #[error("{}", permission_denied(path, owner.as_ref()))]
    PermissionDenied { path: PathBuf, owner: Option<Owner> },
    /// The socket is served by a user other than root and ourselves.
    #[error(
        "refusing the control socket '{}': it is served by {}{}, which is neither root nor \
         your uid {me}; whoever can write to '{}' can answer in the service's name: check \
         who owns that directory and that only root or uid {me} can write to it",
        path.display(),
        describe_uid(*uid),
        pid.map(|pid| format!(" from pid {pid}")).unwrap_or_default(),
        path.parent().unwrap_or(Path::new("/")).display(),
        me = nix::unistd::geteuid().as_raw(),
    )]
    Untrusted {
        path: PathBuf,
        uid: u32,
        pid: Option<i32>,
    },
    #[error("the supervisor closed the connection before answering")]
    Closed,
    #[error("the supervisor sent an invalid line: {detail}")]
    Protocol { detail: String },
    #[error("talking to the supervisor failed")]
    Io(#[from] std::io::Error),
}

impl From<LineError> for ClientError {
    fn from(e: LineError) -> Self {
        match e {
            LineError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol {
                detail: other.to_string(),
            },
        }
    }
}

/// Who owns the control socket, or the directory above it that turned us away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub path: PathBuf,
    pub uid: u32,
}

fn permission_denied(path: &Path, owner: Option<&Owner>) -> String {
    let socket = path.display();
    match owner {
        Some(owner) if owner.path == path => {
            let who = describe_uid(owner.uid);
            let (allowed, next) = if owner.uid == 0 {
                ("only root".to_owned(), "as root")
            } else {
                (format!("only root and {who}"), "as one of them")
            };
            format!(
                "permission denied on the control socket '{socket}', which belongs to {who}: \
                 {allowed} may control this service; run the command {next}"
            )
        }
        Some(owner) => format!(
            "permission denied on the control socket '{socket}': '{}' belongs to {} and is \
             closed to you; only root and the user that runs the supervisor may control this \
             service",
            owner.path.display(),
            describe_uid(owner.uid)
        ),
        None => format!(
            "permission denied on the control socket '{socket}'; only root and the user that \
             runs the supervisor may control this service"
        ),
    }
}

/// `uid 1000 (alice)`, or `uid 1000` when the name cannot be found.
fn describe_uid(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

pub struct Client {
    reader: LineReader<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    /// Connects to the supervisor at `path` and checks that root or our own user serves it.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = match UnixStream::connect(path).await {
            Ok(stream) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ClientError::PermissionDenied {
                    path: path.to_path_buf(),
                    owner: owner_of(path),
                });
            }
            Err(source) => {
                return Err(ClientError::NotRunning {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let cred = stream.peer_cred()?;
        if !trusted(cred.uid(), nix::unistd::geteuid().as_raw()) {
            return Err(ClientError::Untrusted {
                path: path.to_path_buf(),
                uid: cred.uid(),
                pid: cred.pid().filter(|&pid| pid > 0),
            });
        }
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: LineReader::new(BufReader::new(read)),
            writer,
            next_id: 1,
        })
    }

    /// Sends a request and returns its id.
    pub async fn send(&mut self, op: Op) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            v: super::VERSION,
            id,
            op,
        };
        let mut line = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write(&line).await?;
        Ok(id)
    }

    /// Sends raw bytes: for tests of the supervisor's handling of bad input.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write(bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match self.writer.write_all(bytes).await {
            Ok(()) => Ok(()),
            // A supervisor that turned the connection away (too many connections, another
            // user) wrote why and closed: the next line read is that reason.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next line from the supervisor.
    pub async fn next_reply(&mut self) -> Result<Reply, ClientError> {
        let line = self.reader.next_line().await?.ok_or(ClientError::Closed)?;
        serde_json::from_slice(&line).map_err(|e| ClientError::Protocol {
            detail: format!("{e}: {}", String::from_utf8_lossy(&line)),
        })
    }

    /// Sends `op`, passes every event to `on_event`, and returns the final line.
    pub async fn call(
        &mut self,
        op: Op,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Reply, ClientError> {
        let id = self.send(op).await?;
        loop {
            let reply = self.next_reply().await?;
            match &reply {
                Reply::Event { id: rid, event, .. } if *rid == id => on_event(event),
                Reply::Event { .. } => {}
                // A connection-level error (id 0) also ends the call.
                Reply::Result { id: rid, .. } | Reply::Error { id: rid, .. }
                    if *rid == id || *rid == 0 =>
                {
                    return Ok(reply);
                }
                _ => {}
            }
        }
    }
}

/// A supervisor run by root may answer anyone (root controls every service); one run by
/// any other uid only that same user.
fn trusted(server_uid: u32, our_uid: u32) -> bool {
    server_uid == 0 || server_uid == our_uid
}

/// The owner of the socket, or else of the nearest directory above it we may look at: the
/// one whose permissions turned us away.
fn owner_of(path: &Path) -> Option<Owner> {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().find_map(|p| {
        std::fs::metadata(p).ok().map(|meta| Owner {
            path: p.to_path_buf(),
            uid: meta.uid(),
        })
    })
}

#[cfg(test)]
mod tests;
