//! The supervisor's side of the control socket: binds it safely, caps the connections,
//! and hands each one to [`connection`](super::connection), which checks who connects,
//! frames and parses lines, and passes each valid request to the supervisor as a [`Request`]
//! with a channel for its replies. Malformed input is answered there and never reaches the
//! engine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::connection;
use super::types::{Op, Reply};

/// A request that passed framing, parsing and the peer check.
#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub op: Op,
    /// When its line was read: where a restart's times count from.
    pub received: std::time::Instant,
    /// Where the engine sends the request's events and its one final reply: a channel of
    /// this request alone, with room for a few lines, so a client that does not read makes
    /// the engine's sends wait instead of piling up. Closed when the client goes away, and
    /// once the final reply was written to the client.
    pub replies: Replies,
}

/// The way back to the client of one request: its events and its one final reply, in order.
#[derive(Debug, Clone)]
pub struct Replies(mpsc::Sender<Reply>);

/// The client of a request is gone: it left, or its final reply was already written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client of this request is gone")]
pub struct ClientGone;

impl Replies {
    /// A request's queue of `capacity` lines: the engine's end, and the connection's.
    pub(crate) fn channel(capacity: usize) -> (Replies, mpsc::Receiver<Reply>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Replies(tx), rx)
    }

    /// Queues one line for the client, waiting while the request's queue is full.
    pub async fn send(&self, reply: Reply) -> Result<(), ClientGone> {
        self.0.send(reply).await.map_err(|_| ClientGone)
    }

    /// Whether the client is gone, so that nothing sent would reach it.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Returns once the client is gone: its connection closed, or its final reply was
    /// written to it.
    pub async fn closed(&self) {
        self.0.closed().await;
    }
}

/// A queue for the requests of every connection of a server: give the sender to
/// [`ControlServer::serve`], and take the requests from the [`RequestQueue`] in the order
/// they were read. A full queue makes the connections wait.
pub fn request_queue(capacity: usize) -> (RequestSender, RequestQueue) {
    let (tx, rx) = mpsc::channel(capacity);
    (RequestSender(tx), RequestQueue(rx))
}

/// The server's end of a [`request_queue`].
#[derive(Debug, Clone)]
pub struct RequestSender(mpsc::Sender<Request>);

impl RequestSender {
    /// Hands a request to the engine, waiting while the queue is full. False when the
    /// engine no longer takes requests.
    pub(crate) async fn send(&self, request: Request) -> bool {
        self.0.send(request).await.is_ok()
    }
}

/// The engine's end of a [`request_queue`].
#[derive(Debug)]
pub struct RequestQueue(mpsc::Receiver<Request>);

impl RequestQueue {
    /// The next request; `None` once no server holds the queue's sender any more.
    pub async fn recv(&mut self) -> Option<Request> {
        self.0.recv().await
    }
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

/// What one supervisor spends on its control clients, at most. Every limit stands between
/// a client, careless or hostile, and what the supervisor needs for the service itself:
/// file descriptors to start generations, memory, and the attention of its main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections served at once; more are refused with a `too_many_connections` line.
    /// Each costs a file descriptor, and the supervisor needs some to spawn a generation
    /// (pipes, a pidfd, its notify socket): 21 000 idle connections once left it none, and
    /// a crashed generation could not be started again for 25 s. Our own clients hold a
    /// connection for one command (top: one per refresh), so a few are ever open.
    pub connections: usize,
    /// A connection that has no request in flight and sends no complete request for this
    /// long is closed, so that forgotten clients do not hold the connection slots. A `watch`,
    /// or a restart being followed, is in flight for as long as it lasts.
    pub idle: Duration,
    /// A client that takes none of its replies off the socket for this long is closed: its
    /// requests stay in flight until it reads, so it would never be idle.
    pub write: Duration,
    /// Requests of one connection answered at once. The connection's next line is read
    /// only when one of them has finished and its replies have been queued, so a client
    /// that sends without reading stops being read: back-pressure instead of memory.
    pub in_flight: usize,
}

impl Limits {
    /// 64 connections: far more than our own clients open at once (one per command, one
    /// per `top` refresh), and a small part of the usual 1024 open files. 30 s of
    /// idleness: longer than any pause of our clients between two requests on one
    /// connection, short enough to win the slots of a flood back soon. 8 requests in
    /// flight: a client needs one (status) or two (a watch beside another request).
    pub const DEFAULT: Limits = Limits {
        connections: 64,
        idle: Duration::from_secs(30),
        write: Duration::from_secs(30),
        in_flight: 8,
    };

    /// The connection cap under an open-files limit of `open_files`: at most a quarter of
    /// it, so that three quarters stay for the service's listeners and generations
    /// whatever clients do.
    pub fn connections_within(&self, open_files: u64) -> usize {
        let quarter = usize::try_from(open_files / 4).unwrap_or(usize::MAX);
        self.connections.min(quarter).max(1)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The soft RLIMIT_NOFILE: the most file descriptors this process may hold.
///
/// The supervisor leaves it as it found it rather than raising it to the hard limit: the
/// generations it starts inherit it, and a service that uses `select(2)` breaks past 1024.
/// The connection cap keeps the control socket well below it instead.
fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own, and touches nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc == 0 { limit.rlim_cur } else { 1024 }
}

/// A bound control socket. Removing the socket file is the owner's job at shutdown
/// ([`ControlServer::remove`]), so a crash leaves a stale file that the next bind replaces.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    limits: Limits,
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
        // can be told the path. The peer-uid check of each connection is the real gate; the
        // mode is depth.
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
            limits: Limits::DEFAULT,
        })
    }

    /// The server of a supervisor that re-executed itself: the listening socket at `fd`,
    /// kept open across `execve`, which must still be the socket file at `path`.
    pub fn resume(path: &Path, fd: std::os::fd::OwnedFd) -> Result<Self, ServerError> {
        let io = |about, source| ServerError::Io {
            about,
            path: path.to_path_buf(),
            source,
        };
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)
            .map_err(|e| io("take back the control socket", e))?;
        let listener =
            UnixListener::from_std(std).map_err(|e| io("take back the control socket", e))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            limits: Limits::DEFAULT,
        })
    }

    /// The listening socket's fd, for a `reexec` to keep open.
    pub fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// Serves within `limits` instead of [`Limits::DEFAULT`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients forever, sending their parsed requests to `requests`, within the
    /// [`Limits`] of the server.
    pub async fn serve(self, policy: PeerPolicy, requests: RequestSender) {
        let limits = self.limits;
        let cap = limits.connections_within(open_files_limit());
        if cap < limits.connections {
            warn!(
                cap,
                "few open files allowed (RLIMIT_NOFILE): control connections are capped lower"
            );
        }
        let open = Arc::new(Semaphore::new(cap));
        // Log the first refusal of a flood, not each of its connections.
        let mut refusing = false;
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
            let Ok(permit) = open.clone().try_acquire_owned() else {
                if !refusing {
                    warn!(cap, "too many control connections: refusing new ones");
                    refusing = true;
                }
                connection::refuse_over_cap(&stream, cap);
                continue;
            };
            refusing = false;
            let requests = requests.clone();
            tokio::spawn(async move {
                connection::serve(stream, policy, requests, limits).await;
                drop(permit);
            });
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
