//! One load task: a connection (kept or reopened per request) doing request
//! after request until the run stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

use super::pace::Pacer;
use super::record::{FailureKind, LiveCounters, Outcome, RequestRecord};
use super::response::{self, HeadError, MAX_HEAD};
use super::{ConnectionMode, Endpoint, LoadConfig};

/// How long a task pauses after a failed connect before its next request.
/// Each attempt is still counted; the pause only keeps a run against a dead
/// port from recording millions of identical failures per second.
const CONNECT_FAILURE_PAUSE: Duration = Duration::from_millis(1);

/// State shared by every task of one run.
pub(super) struct Run {
    pub config: LoadConfig,
    /// The request, formatted once.
    pub request: Vec<u8>,
    pub started: Instant,
    pub deadline: Option<Instant>,
    /// Next request number: the budget for `max_requests` and the slot on
    /// the open-loop schedule.
    pub next: AtomicU64,
    pub stopping: AtomicBool,
    pub stop: watch::Receiver<bool>,
    pub live: Arc<LiveCounters>,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    async fn connect(endpoint: &Endpoint) -> std::io::Result<Stream> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                // One small write per request: Nagle would only add delay.
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(bytes).await,
            Stream::Unix(s) => s.write_all(bytes).await,
        }
    }

    /// Whether an idle keep-alive connection can still carry a request: a
    /// server may close it while idle (the fixture does during a drain).
    /// Noticing that before sending is not a retry, since nothing was sent;
    /// sending anyway would turn a clean close into a spurious `Reset`.
    ///
    /// This asks the kernel (`recv` with `MSG_PEEK`, non-blocking: one cheap
    /// syscall) rather than tokio's `try_read`, which answers from the
    /// readiness the reactor last saw: on a busy runtime the reactor may not
    /// have polled since the server's FIN arrived, and the request then went
    /// out on a closed connection.
    fn still_open(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let peek = match self {
            Stream::Tcp(s) => socket2::SockRef::from(s).peek(&mut probe),
            Stream::Unix(s) => socket2::SockRef::from(s).peek(&mut probe),
        };
        // EOF, an error or unsolicited bytes all mean "do not reuse". tokio
        // made the socket non-blocking, so an empty queue is `WouldBlock`.
        matches!(peek, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
        }
    }
}

/// Runs one task until the budget, the deadline or a stop; returns its records.
/// `pacer` waits for the open-loop slots (`None` in closed loop).
pub(super) async fn work(run: Arc<Run>, mut pacer: Option<Pacer>) -> Vec<RequestRecord> {
    let mut records = Vec::with_capacity(1024);
    let mut conn: Option<Stream> = None;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut stop = run.stop.clone();
    loop {
        if run.stopping.load(Ordering::Relaxed) {
            break;
        }
        let n = run.next.fetch_add(1, Ordering::Relaxed);
        if run.config.max_requests.is_some_and(|max| n >= max) {
            break;
        }
        let start = match pacer.as_mut() {
            // Open loop: request n is due at a fixed time whether or not a
            // connection is free; measuring from then counts the wait.
            Some(pacer) => {
                let due = pacer.due(run.started, n);
                if run.deadline.is_some_and(|d| due >= d) {
                    break;
                }
                let waited = tokio::select! {
                    waited = pacer.wait_until(due) => waited,
                    _ = stop.wait_for(|s| *s) => break,
                };
                if waited.is_err() {
                    // A timerfd that fails once armed leaves no way to keep the
                    // schedule precisely; tokio's millisecond timer still keeps it.
                    tokio::time::sleep_until(due.into()).await;
                }
                due
            }
            None => {
                let now = Instant::now();
                if run.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                now
            }
        };
        let exchanged = exchange(&run, &mut conn, &mut buf).await;
        let end = Instant::now();
        let record = RequestRecord {
            start_ns: nanos(start.saturating_duration_since(run.started)),
            latency_ns: nanos(end.saturating_duration_since(start)),
            outcome: exchanged.outcome,
            retried: exchanged.retried,
        };
        run.live.count(exchanged.outcome);
        records.push(record);
        if exchanged.connect_failed && pacer.is_none() {
            tokio::time::sleep(CONNECT_FAILURE_PAUSE).await;
        }
    }
    records
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How one request ended, before it becomes a record.
struct Exchanged {
    outcome: Outcome,
    /// Sent a second time after its kept-alive connection closed unanswered.
    retried: bool,
    /// The (last) connect failed.
    connect_failed: bool,
}

/// Why one try failed, and whether the answer had begun: a connection that closed
/// before any byte of it may have crossed the server's close of an idle connection.
struct Failure {
    kind: FailureKind,
    before_answer: bool,
}

impl Failure {
    fn at_once(kind: FailureKind) -> Failure {
        Failure {
            kind,
            before_answer: false,
        }
    }
}

/// One request on `conn` (opened first if needed), tried once more on a new connection
/// when [`LoadConfig::retry_idle_close`] allows it. The request timeout bounds both tries.
async fn exchange(run: &Run, conn: &mut Option<Stream>, buf: &mut [u8]) -> Exchanged {
    let config = &run.config;
    if conn.as_ref().is_some_and(|c| !c.still_open()) {
        *conn = None;
    }
    let reused = conn.is_some();
    let mut retried = false;
    let mut connect_failed = false;
    let tries = async {
        let first = try_once(run, conn, buf, &mut connect_failed).await;
        match first {
            Err(failure)
                if reused
                    && failure.before_answer
                    && failure.kind == FailureKind::Reset
                    && config.retry_idle_close =>
            {
                *conn = None;
                retried = true;
                try_once(run, conn, buf, &mut connect_failed).await
            }
            other => other,
        }
    };
    let result = match tokio::time::timeout(config.request_timeout, tries).await {
        Ok(result) => result,
        Err(_) => Err(Failure::at_once(FailureKind::Timeout)),
    };
    let outcome = match result {
        Ok((status, server_closes)) => {
            if server_closes || config.mode == ConnectionMode::Close {
                *conn = None;
            }
            if (200..300).contains(&status) {
                Outcome::Ok(status)
            } else {
                Outcome::Failed(FailureKind::Status(status))
            }
        }
        Err(failure) => {
            // The connection's state is unknown after any failure.
            *conn = None;
            Outcome::Failed(failure.kind)
        }
    };
    Exchanged {
        connect_failed: connect_failed && !outcome.is_ok(),
        outcome,
        retried,
    }
}

/// Connects if `conn` is empty, sends the request and reads the answer.
async fn try_once(
    run: &Run,
    conn: &mut Option<Stream>,
    buf: &mut [u8],
    connect_failed: &mut bool,
) -> Result<(u16, bool), Failure> {
    let config = &run.config;
    if conn.is_none() {
        let connected = tokio::time::timeout(
            config.connect_timeout,
            Stream::connect(&config.target.endpoint),
        )
        .await;
        match connected {
            Ok(Ok(stream)) => *conn = Some(stream),
            Ok(Err(e)) => {
                *connect_failed = true;
                return Err(Failure::at_once(FailureKind::from_io(&e)));
            }
            Err(_) => {
                *connect_failed = true;
                return Err(Failure::at_once(FailureKind::Timeout));
            }
        }
    }
    let Some(stream) = conn.as_mut() else {
        return Err(Failure::at_once(FailureKind::Other(
            std::io::ErrorKind::NotConnected,
        )));
    };
    if let Err(e) = stream.write_all(&run.request).await {
        return Err(Failure {
            kind: FailureKind::from_io(&e),
            before_answer: true,
        });
    }
    read_response(stream, buf).await
}

/// Reads one complete response; returns its status and whether the
/// connection must not be reused.
async fn read_response(stream: &mut Stream, buf: &mut [u8]) -> Result<(u16, bool), Failure> {
    let mut filled = 0;
    let head = loop {
        match response::parse_head(&buf[..filled]) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(HeadError::Malformed) => return Err(Failure::at_once(FailureKind::ShortRead)),
            Err(HeadError::Chunked) => return Err(Failure::at_once(FailureKind::Unsupported)),
        }
        let before_answer = filled == 0;
        let n = stream.read(&mut buf[filled..]).await.map_err(|e| Failure {
            kind: FailureKind::from_io(&e),
            before_answer,
        })?;
        if n == 0 {
            // The server closed before a complete head: for a client that
            // is indistinguishable from a reset.
            return Err(Failure {
                kind: FailureKind::Reset,
                before_answer,
            });
        }
        filled += n;
    };
    let mut body_read = (filled - head.head_len) as u64;
    match head.content_length {
        Some(length) => {
            while body_read < length {
                let n = stream
                    .read(buf)
                    .await
                    .map_err(|e| Failure::at_once(FailureKind::from_io(&e)))?;
                if n == 0 {
                    return Err(Failure::at_once(FailureKind::ShortRead));
                }
                body_read += n as u64;
            }
            // Bytes past the body would be a response we did not ask for.
            let extra = body_read > length;
            Ok((head.status, head.close || extra))
        }
        None => {
            while stream
                .read(buf)
                .await
                .map_err(|e| Failure::at_once(FailureKind::from_io(&e)))?
                > 0
            {}
            Ok((head.status, true))
        }
    }
}
