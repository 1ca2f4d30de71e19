//! One control connection: the peer check, then requests read line by line and answered
//! through bounded queues, until the client leaves, idles or stops reading.
//!
//! ```text
//!  socket ─► lines ─► parse ─► engine ─► request's queue (4) ─► forwarder ─┐
//!                                                                          ├─► connection's queue (16) ─► writer ─► socket
//!            error replies (malformed, too long, idle) ─────────────────────┘
//! ```
//!
//! Every queue is bounded and the next line is read only while fewer than
//! [`Limits::in_flight`] requests are being answered, so a client that sends without reading
//! fills the queues, then the socket, then stops being read: it costs a few dozen replies,
//! never memory in proportion to what it sends. A writer that cannot hand a line to the
//! client for [`Limits::write`] closes the connection.

use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use tracing::{debug, warn};

use super::codec::{LineError, LineReader, parse_request};
use super::server::{Limits, PeerPolicy, Replies, Request, RequestSender};
use super::types::{ErrorKind, Op, Reply};

/// Lines waiting for the writer of one connection.
const REPLY_QUEUE: usize = 16;

/// Lines of one request waiting for its forwarder: enough for the events a restart emits
/// in a burst, few enough that a stuck client holds little.
const REQUEST_QUEUE: usize = 4;

/// Tells a client over the cap why it is closed at once. Never waits: the line fits the
/// empty socket buffer, and a flood must not hold the accept loop. What the client already
/// sent is read and dropped first: closing a socket with unread data resets the peer's, and
/// the client would see "connection reset" where it should read the refusal.
pub(super) fn refuse_over_cap(stream: &UnixStream, cap: usize) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let reply = Reply::error(
        0,
        ErrorKind::TooManyConnections,
        format!(
            "too many control connections: the supervisor serves at most {cap} at once; \
             try again in a moment, and look for clients that hold connections open"
        ),
    );
    let _ = stream.try_write(&encode(&reply));
}

/// Serves one accepted connection to its end.
pub(super) async fn serve(
    stream: UnixStream,
    policy: PeerPolicy,
    requests: RequestSender,
    limits: Limits,
) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            warn!(error = %e, "cannot read the peer credentials of a control connection");
            return;
        }
    };
    if !policy.allows(uid) {
        refuse_peer(stream, uid, policy).await;
        return;
    }
    let (read, write) = stream.into_split();
    let (out, out_rx) = mpsc::channel(REPLY_QUEUE);
    let writer = tokio::spawn(write_replies(write, out_rx, limits.write));
    let mut connection = Connection {
        out,
        requests,
        answering: JoinSet::new(),
        watches: JoinSet::new(),
        limits,
    };
    connection.run(LineReader::new(BufReader::new(read))).await;
    // Ends every forwarder still running (watches); the writer then writes what is queued
    // and stops, each line within the write limit.
    drop(connection);
    let _ = writer.await;
}

/// A line for the writer. The last line of a request carries the request's queue: dropping
/// it once the line is written closes the engine's sender, which is how the engine knows
/// its answer reached the client (a `stop` waits for that before the supervisor exits).
struct Outgoing {
    reply: Reply,
    done: Option<mpsc::Receiver<Reply>>,
}

struct Connection {
    out: mpsc::Sender<Outgoing>,
    requests: RequestSender,
    /// The forwarders of requests that end with a final reply.
    answering: JoinSet<()>,
    /// The forwarders of `watch` requests, which end only with the connection.
    watches: JoinSet<()>,
    limits: Limits,
}

impl Connection {
    async fn run<R: AsyncBufRead + Unpin>(&mut self, mut lines: LineReader<R>) {
        let mut active = Instant::now();
        let mut eof = false;
        loop {
            if eof {
                // The client sent all it will: its watches would never end, its other
                // requests still get their answers.
                self.watches.abort_all();
                if self.answering.is_empty() {
                    return;
                }
            }
            let in_flight = self.answering.len() + self.watches.len();
            tokio::select! {
                // The writer gave up: the client left, or stopped reading.
                () = self.out.closed() => return,
                line = lines.next_line(), if !eof && in_flight < self.limits.in_flight => {
                    let received = std::time::Instant::now();
                    active = Instant::now();
                    let go_on = match line {
                        Ok(Some(line)) => self.take(&line, received).await,
                        Ok(None) => {
                            eof = true;
                            true
                        }
                        Err(LineError::TooLong { max }) => {
                            let message = format!("request line longer than {max} bytes");
                            self.send(Reply::error(0, ErrorKind::TooLong, message)).await
                        }
                        Err(LineError::Io(e)) => {
                            debug!(error = %e, "reading a control connection failed");
                            false
                        }
                    };
                    if !go_on {
                        return;
                    }
                }
                Some(_) = self.answering.join_next() => active = Instant::now(),
                Some(_) = self.watches.join_next() => active = Instant::now(),
                () = tokio::time::sleep_until(active + self.limits.idle), if in_flight == 0 && !eof => {
                    debug!("closing an idle control connection");
                    let message = format!(
                        "closing the connection: no request for {}s; connect again to send one",
                        self.limits.idle.as_secs()
                    );
                    self.send(Reply::error(0, ErrorKind::Idle, message)).await;
                    return;
                }
            }
        }
    }

    /// Handles one complete line. False when the connection must end.
    async fn take(&mut self, line: &[u8], received: std::time::Instant) -> bool {
        let (id, op) = match parse_request(line) {
            Ok(request) => request,
            Err(reply) => return self.send(reply).await,
        };
        let watch = op == Op::Watch;
        let (replies, answers) = Replies::channel(REQUEST_QUEUE);
        let request = Request {
            id,
            op,
            received,
            replies,
        };
        if !self.requests.send(request).await {
            let stopping = Reply::error(id, ErrorKind::Stopping, "the supervisor is stopping");
            self.send(stopping).await;
            return false;
        }
        let forwarder = forward(answers, self.out.clone());
        if watch {
            self.watches.spawn(forwarder);
        } else {
            self.answering.spawn(forwarder);
        }
        true
    }

    /// Queues a line the connection itself answers. False when the writer is gone.
    async fn send(&self, reply: Reply) -> bool {
        let line = Outgoing { reply, done: None };
        self.out.send(line).await.is_ok()
    }
}

/// Moves one request's lines to the connection's queue, waiting while it is full.
async fn forward(mut answers: mpsc::Receiver<Reply>, out: mpsc::Sender<Outgoing>) {
    while let Some(reply) = answers.recv().await {
        if reply.is_final() {
            let done = Some(answers);
            let _ = out.send(Outgoing { reply, done }).await;
            return;
        }
        if out.send(Outgoing { reply, done: None }).await.is_err() {
            return;
        }
    }
}

async fn write_replies(
    mut write: OwnedWriteHalf,
    mut lines: mpsc::Receiver<Outgoing>,
    limit: Duration,
) {
    while let Some(Outgoing { reply, done }) = lines.recv().await {
        match tokio::time::timeout(limit, write.write_all(&encode(&reply))).await {
            Ok(Ok(())) => drop(done),
            Ok(Err(e)) => {
                debug!(error = %e, "a control client went away");
                return;
            }
            Err(_) => {
                warn!(
                    seconds = limit.as_secs(),
                    "closing a control connection whose client reads none of its replies"
                );
                return;
            }
        }
    }
}

/// A peer of another uid: one line saying why, then the connection ends.
async fn refuse_peer(stream: UnixStream, uid: u32, policy: PeerPolicy) {
    warn!(uid, "refused a control connection from another user");
    let (mut read, mut write) = stream.into_split();
    let reply = Reply::error(
        0,
        ErrorKind::Forbidden,
        format!(
            "uid {uid} may not control this service; run as root or as uid {}",
            policy.uid
        ),
    );
    let _ = write.write_all(&encode(&reply)).await;
    // Read (and drop) what the client sends until it hangs up, for a bounded time:
    // closing at once would make its request write fail with EPIPE before it reads the
    // refusal.
    let _ = write.shutdown().await;
    let mut sink = tokio::io::sink();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::copy(&mut (&mut read).take(64 * 1024), &mut sink),
    )
    .await;
}

fn encode(reply: &Reply) -> Vec<u8> {
    // Our own types always serialize; an empty line would be the visible trace if not.
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests;
