//! What one request produced, stored compactly: a run at 30k requests per
//! second for a minute keeps two million of these.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a request failed. Every failure is counted; a request is retried only under
/// [`LoadConfig::retry_idle_close`](super::LoadConfig::retry_idle_close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The connection was refused (ECONNREFUSED): nobody was listening.
    Refused,
    /// The connection broke (ECONNRESET, EPIPE) or the server closed it
    /// before sending a complete response.
    Reset,
    /// No complete response within the request timeout (or no connection
    /// within the connect timeout).
    Timeout,
    /// A complete response with a status outside 2xx.
    Status(u16),
    /// The body ended before its `Content-Length`, or the response was not
    /// valid HTTP/1.x.
    ShortRead,
    /// A response framing this client does not implement (chunked transfer
    /// encoding): counted as a failure rather than misread.
    Unsupported,
    /// Any other I/O error.
    Other(io::ErrorKind),
}

impl FailureKind {
    /// Classifies an I/O error from connect, write or read.
    pub fn from_io(error: &io::Error) -> FailureKind {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => FailureKind::Reset,
            io::ErrorKind::TimedOut => FailureKind::Timeout,
            kind => FailureKind::Other(kind),
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureKind::Refused => f.write_str("refused"),
            FailureKind::Reset => f.write_str("reset"),
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Status(code) => write!(f, "status {code}"),
            FailureKind::ShortRead => f.write_str("short read"),
            FailureKind::Unsupported => f.write_str("unsupported response"),
            FailureKind::Other(kind) => write!(f, "{kind}"),
        }
    }
}

/// The result of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete 2xx response, with its status.
    Ok(u16),
    Failed(FailureKind),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// One request: when it started, how long it took, how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// Nanoseconds from the start of the run to the request's start. In open
    /// loop this is the scheduled start, not the moment a connection was free.
    pub start_ns: u64,
    /// Nanoseconds from the start to the outcome being known.
    pub latency_ns: u64,
    pub outcome: Outcome,
    /// Whether the request was sent a second time, on a new connection, because the
    /// kept-alive one closed before any byte of the answer (see
    /// [`LoadConfig::retry_idle_close`](super::LoadConfig::retry_idle_close)).
    pub retried: bool,
}

impl RequestRecord {
    /// Offset of the request's start from the start of the run.
    pub fn start(&self) -> Duration {
        Duration::from_nanos(self.start_ns)
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_ns)
    }

    /// Offset of the request's end from the start of the run.
    pub fn end(&self) -> Duration {
        Duration::from_nanos(self.start_ns.saturating_add(self.latency_ns))
    }

    /// Whether the request was in flight at some point of `[from, to]`.
    pub fn overlaps(&self, from: Duration, to: Duration) -> bool {
        self.start() <= to && self.end() >= from
    }
}

/// Counters a caller can read while the run goes on (for a progress bar).
#[derive(Debug, Default)]
pub struct LiveCounters {
    requests: AtomicU64,
    failures: AtomicU64,
}

impl LiveCounters {
    /// Requests finished so far, failed or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed requests so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, outcome: Outcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !outcome.is_ok() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}
