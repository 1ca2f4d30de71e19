//! The client side of the control socket, used by every `zdctl` command that talks to a
//! supervisor.
//!
//! Two things a client must not take on trust. Who answers: anyone who can write to the
//! runtime directory can put a socket at the path, so right after connecting the client
//! checks with `SO_PEERCRED` that root or its own user serves it. And that an answer
//! comes: a stopped or stuck supervisor would hold a command forever, so every line has a
//! deadline ([`REPLY_TIMEOUT`], or as long as the phase the supervisor announced).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::codec::{LineError, LineReader};
use super::types::{Event, Op, Reply, Request};

/// How long a supervisor may take to accept a connection, and to send each line of an
/// answer that does not wait on the service. A status is answered in microseconds; this
/// leaves room for a machine under heavy load.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The supervisor accepted nothing or sent nothing within the deadline.
    #[error(
        "the supervisor{} did not answer on '{}' within {}; {}",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        path.display(),
        crate::duration::format_duration(*waited),
        match (pid, stopped) {
            (Some(pid), true) => format!("it is stopped: resume it with 'kill -CONT {pid}'"),
            _ => "check that it is not stopped or stuck, and read its log".to_owned(),
        }
    )]
    NoAnswer {
        path: PathBuf,
        pid: Option<i32>,
        waited: Duration,
        /// Whether the supervisor process was seen stopped (SIGSTOP, a debugger).
        stopped: bool,
    },
    /// The socket's queue of connections waiting to be accepted is full.
    #[error(
        "the supervisor on '{}' accepts no connections (its queue is full); check that it is \
         not stopped or stuck, and read its log",
        path.display()
    )]
    NotAccepting { path: PathBuf },
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

/// How long the next line may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patience {
    /// [`REPLY_TIMEOUT`]: the supervisor answers at once.
    Short,
    /// [`FIRST_LINE_PATIENCE`] times [`REPLY_TIMEOUT`]: the first line of a restart, which
    /// the supervisor sends once it has taken the restart on; a loaded machine can hold that
    /// up for seconds.
    Long,
    /// A wait of no known length (a `stop` draining the generations, a `watch`, a restart
    /// under way): as long as the supervisor process runs, looked at every
    /// [`REPLY_TIMEOUT`]. A stopped or vanished supervisor ends it.
    WhileRunning,
}

/// How many short deadlines the first line of a restart may take.
const FIRST_LINE_PATIENCE: u32 = 6;

impl Patience {
    /// Before the first line of the answer to `op`.
    fn for_op(op: &Op) -> Patience {
        match op {
            Op::Status | Op::Signal { .. } => Patience::Short,
            Op::Restart { attach: false, .. } => Patience::Long,
            _ => Patience::WhileRunning,
        }
    }

    /// After an event, when the answer to `op` waits for the next line. Once a restart
    /// has begun, the supervisor bounds each of its phases itself (readiness, drain, the
    /// service file's read) and always ends it with a result: as long as its process runs,
    /// the client waits for that result, so that the exit code says how the restart ended,
    /// also on a machine so loaded that a phase takes longer than [`REPLY_TIMEOUT`].
    fn after(op: &Op) -> Patience {
        match op {
            Op::Restart { .. } => Patience::WhileRunning,
            other => Patience::for_op(other),
        }
    }

    /// How long in all the next line may take.
    fn wait(self, short: Duration) -> Duration {
        match self {
            Patience::Short => short,
            Patience::Long => short.saturating_mul(FIRST_LINE_PATIENCE),
            Patience::WhileRunning => Duration::MAX,
        }
    }
}

pub struct Client {
    reader: LineReader<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
    path: PathBuf,
    /// The supervisor's pid, from its credentials: for messages, and to tell a supervisor
    /// busy with a long phase from a stopped one.
    pid: Option<i32>,
    reply_timeout: Duration,
    /// The last request sent, whose answer the next lines are.
    pending: Option<Op>,
    patience: Patience,
}

impl Client {
    /// Connects to the supervisor at `path` and checks that root or our own user serves it.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        Self::connect_within(path, REPLY_TIMEOUT).await
    }

    /// [`Client::connect`] with another deadline for the connection and for short answers.
    pub async fn connect_within(path: &Path, reply_timeout: Duration) -> Result<Self, ClientError> {
        let stream = match tokio::time::timeout(reply_timeout, UnixStream::connect(path)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ClientError::PermissionDenied {
                    path: path.to_path_buf(),
                    owner: owner_of(path),
                });
            }
            // A unix socket whose backlog is full refuses a non-blocking connect at once:
            // a supervisor that accepts nothing, which is not one that is not running.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(ClientError::NotAccepting {
                    path: path.to_path_buf(),
                });
            }
            Ok(Err(source)) => {
                return Err(ClientError::NotRunning {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Err(_) => {
                return Err(ClientError::NoAnswer {
                    path: path.to_path_buf(),
                    pid: None,
                    waited: reply_timeout,
                    stopped: false,
                });
            }
        };
        let cred = stream.peer_cred()?;
        let pid = cred.pid().filter(|&pid| pid > 0);
        if !trusted(cred.uid(), nix::unistd::geteuid().as_raw()) {
            return Err(ClientError::Untrusted {
                path: path.to_path_buf(),
                uid: cred.uid(),
                pid,
            });
        }
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: LineReader::new(BufReader::new(read)),
            writer,
            next_id: 1,
            path: path.to_path_buf(),
            pid,
            reply_timeout,
            pending: None,
            patience: Patience::Short,
        })
    }

    /// The supervisor's pid, as the kernel reported it when we connected.
    pub fn supervisor_pid(&self) -> Option<i32> {
        self.pid
    }

    /// Sends a request and returns its id.
    pub async fn send(&mut self, op: Op) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.patience = Patience::for_op(&op);
        let req = Request {
            v: super::VERSION,
            id,
            op,
        };
        let mut line = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.pending = Some(req.op);
        self.write(&line).await?;
        Ok(id)
    }

    /// Sends raw bytes: for tests of the supervisor's handling of bad input.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write(bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match tokio::time::timeout(self.reply_timeout, self.writer.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            // A supervisor that turned the connection away (too many connections, another
            // user) wrote why and closed: the next line read is that reason.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(self.no_answer(self.reply_timeout)),
        }
    }

    /// The next line from the supervisor, within the deadline of the request's phase.
    pub async fn next_reply(&mut self) -> Result<Reply, ClientError> {
        // The deadlines waited, summed: what the message reports.
        let mut waited = Duration::ZERO;
        loop {
            let wait = self.reply_timeout;
            waited += wait;
            let line = match tokio::time::timeout(wait, self.reader.next_line()).await {
                Ok(line) => line?.ok_or(ClientError::Closed)?,
                // The reader is cancel safe: waiting again loses nothing. A stopped or
                // vanished supervisor ends every wait at the first deadline.
                Err(_)
                    if waited < self.patience.wait(self.reply_timeout)
                        && self.supervisor_runs() =>
                {
                    continue;
                }
                Err(_) => return Err(self.no_answer(waited)),
            };
            let reply: Reply =
                serde_json::from_slice(&line).map_err(|e| ClientError::Protocol {
                    detail: format!("{e}: {}", String::from_utf8_lossy(&line)),
                })?;
            self.patience = match (&reply, &self.pending) {
                (Reply::Event { .. }, Some(op)) => Patience::after(op),
                (Reply::Event { .. }, None) => self.patience,
                _ => Patience::Short,
            };
            return Ok(reply);
        }
    }

    /// Whether the supervisor process exists and is not stopped.
    fn supervisor_runs(&self) -> bool {
        self.pid
            .and_then(|pid| crate::proc::state(pid).ok())
            .is_some_and(|state| !matches!(state, 'T' | 't' | 'Z' | 'X'))
    }

    fn no_answer(&self, waited: Duration) -> ClientError {
        let stopped = self
            .pid
            .and_then(|pid| crate::proc::state(pid).ok())
            .is_some_and(|state| matches!(state, 'T' | 't'));
        ClientError::NoAnswer {
            path: self.path.clone(),
            pid: self.pid,
            waited,
            stopped,
        }
    }

    /// Sends `op`, passes every event to `on_event`, and returns the final line.
    pub async fn call(
        &mut self,
        op: Op,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Reply, ClientError> {
        let reply = self
            .call_until(op, |event| {
                on_event(event);
                std::ops::ControlFlow::Continue(())
            })
            .await?;
        Ok(reply.expect("the call was never broken off"))
    }

    /// [`Client::call`] that `on_event` may break off: then `None`, and the request's later
    /// lines are left unread. This is the one loop that reads a request's answer.
    pub async fn call_until(
        &mut self,
        op: Op,
        mut on_event: impl FnMut(&Event) -> std::ops::ControlFlow<()>,
    ) -> Result<Option<Reply>, ClientError> {
        let id = self.send(op).await?;
        loop {
            let reply = self.next_reply().await?;
            match &reply {
                Reply::Event { id: rid, event, .. } if *rid == id && on_event(event).is_break() => {
                    return Ok(None);
                }
                Reply::Event { .. } => {}
                // A connection-level error (id 0) also ends the call.
                Reply::Result { id: rid, .. } | Reply::Error { id: rid, .. }
                    if *rid == id || *rid == 0 =>
                {
                    return Ok(Some(reply));
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
