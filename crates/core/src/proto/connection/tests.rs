//! One connection against a fake engine, in-process over `UnixStream::pair()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use super::*;
use crate::proto::{ControlServer, ReplyResult};

/// Generous: these tests never assert on speed.
const DEADLINE: Duration = Duration::from_secs(20);

/// What the fake engine saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    /// The reply senders of `watch` requests, to see when the connection lets them go.
    watches: std::sync::Mutex<Vec<Replies>>,
}

/// Answers every request as the real engine does: each reply sent from a task of its own.
/// A status is answered with `padding` bytes of message, so that few fill a socket.
fn fake_engine(padding: usize) -> (RequestSender, Arc<Seen>) {
    let (tx, mut rx) = crate::proto::request_queue(64);
    let seen = Arc::new(Seen::default());
    let engine = seen.clone();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            engine.requests.fetch_add(1, Ordering::SeqCst);
            match req.op {
                Op::Watch => engine.watches.lock().unwrap().push(req.replies),
                _ => {
                    let reply = Reply::result(
                        req.id,
                        ReplyResult::Done {
                            message: "x".repeat(padding),
                        },
                    );
                    tokio::spawn(async move {
                        let _ = req.replies.send(reply).await;
                    });
                }
            }
        }
    });
    (tx, seen)
}

/// A served connection and the client's end of it.
fn connect(limits: Limits, padding: usize) -> (UnixStream, Arc<Seen>, tokio::task::JoinHandle<()>) {
    let (client, server) = UnixStream::pair().expect("socketpair");
    let (requests, seen) = fake_engine(padding);
    let served = tokio::spawn(serve(server, PeerPolicy::current(), requests, limits));
    (client, seen, served)
}

fn status_line(id: u64) -> String {
    format!("{{\"v\":1,\"id\":{id},\"op\":\"status\"}}\n")
}

async fn read_reply(lines: &mut BufReader<OwnedReadHalf>) -> Option<Reply> {
    let mut line = String::new();
    let n = tokio::time::timeout(DEADLINE, lines.read_line(&mut line))
        .await
        .expect("a reply within the deadline")
        .expect("read");
    (n > 0).then(|| serde_json::from_str(&line).expect("a reply line"))
}

fn error_kind(reply: &Reply) -> Option<ErrorKind> {
    match reply {
        Reply::Error { error, .. } => Some(error.kind),
        _ => None,
    }
}

/// Polls `check` every few milliseconds until it holds, failing after [`DEADLINE`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_client_that_sends_without_reading_stops_being_read_and_gets_every_answer_later() {
    // 8 KiB replies: the socket holds about 26 of them, the queues 16 + 8 × 5. Requests
    // of 1 KiB (an unknown field pads them), so that 2000 of them do not fit the socket.
    let (client, seen, _served) = connect(Limits::DEFAULT, 8 * 1024);
    let (read, mut write) = client.into_split();
    const SENT: u64 = 2_000;
    let writer = tokio::spawn(async move {
        let pad = "p".repeat(1000);
        let all: String = (1..=SENT)
            .map(|id| format!("{{\"v\":1,\"id\":{id},\"op\":\"status\",\"pad\":\"{pad}\"}}\n"))
            .collect();
        write.write_all(all.as_bytes()).await.expect("send");
        write
    });
    // The queues fill; then the supervisor reads no more of this client.
    until("the engine to answer the first requests", || {
        seen.requests.load(Ordering::SeqCst) > 8
    })
    .await;
    // An observation window, not a synchronisation: however slow the machine, the count
    // must stay bounded through it (it reached all 2000 before back-pressure).
    let bound = 150;
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(500) {
        let taken = seen.requests.load(Ordering::SeqCst);
        assert!(
            taken <= bound,
            "{taken} requests taken from a client that reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !writer.is_finished(),
        "the client's 2000 requests were all read"
    );
    // Once the client reads, every request is answered, in order.
    let mut lines = BufReader::new(read);
    for id in 1..=SENT {
        match read_reply(&mut lines).await {
            Some(Reply::Result { id: got, .. }) => assert_eq!(got, id),
            other => panic!("reply {id}: {other:?}"),
        }
    }
    let _write = writer.await.expect("writer");
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_one_with_a_watch_in_flight_is_not() {
    let limits = Limits {
        idle: Duration::from_millis(200),
        ..Limits::DEFAULT
    };
    // The watch goes first, so its connection's idle deadline comes before the other's.
    let (watching, watch_seen, _w) = connect(limits, 0);
    let (watch_read, mut watch_write) = watching.into_split();
    watch_write
        .write_all(b"{\"v\":1,\"id\":1,\"op\":\"watch\"}\n")
        .await
        .unwrap();
    until("the watch to reach the engine", || {
        watch_seen.requests.load(Ordering::SeqCst) == 1
    })
    .await;
    let (idle, _seen, idle_served) = connect(limits, 0);
    let (idle_read, mut idle_write) = idle.into_split();
    // Half a request is no request.
    idle_write.write_all(b"{\"v\":1,").await.unwrap();
    let mut idle_lines = BufReader::new(idle_read);
    let reply = read_reply(&mut idle_lines).await.expect("the idle error");
    assert_eq!(error_kind(&reply), Some(ErrorKind::Idle), "{reply:?}");
    assert!(
        read_reply(&mut idle_lines).await.is_none(),
        "closed after it"
    );
    tokio::time::timeout(DEADLINE, idle_served)
        .await
        .expect("the idle connection ended")
        .unwrap();
    // The watching connection outlived its own idle deadline and still answers.
    watch_write
        .write_all(status_line(2).as_bytes())
        .await
        .unwrap();
    let mut watch_lines = BufReader::new(watch_read);
    match read_reply(&mut watch_lines).await {
        Some(Reply::Result { id: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_closes_its_side_gets_its_answers_and_its_watch_ends() {
    let (client, seen, served) = connect(Limits::DEFAULT, 0);
    let (read, mut write) = client.into_split();
    write
        .write_all(b"{\"v\":1,\"id\":1,\"op\":\"watch\"}\n")
        .await
        .unwrap();
    write.write_all(status_line(2).as_bytes()).await.unwrap();
    write.shutdown().await.unwrap();
    let mut lines = BufReader::new(read);
    match read_reply(&mut lines).await {
        Some(Reply::Result { id: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        read_reply(&mut lines).await.is_none(),
        "closed after the answer"
    );
    tokio::time::timeout(DEADLINE, served)
        .await
        .expect("the connection ended")
        .unwrap();
    let watch = seen.watches.lock().unwrap().pop().expect("the watch");
    assert!(watch.is_closed(), "the watch's replies are no longer taken");
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_after_the_write_limit() {
    let limits = Limits {
        write: Duration::from_millis(200),
        ..Limits::DEFAULT
    };
    let (client, _seen, served) = connect(limits, 32 * 1024);
    let (_read, mut write) = client.into_split();
    tokio::spawn(async move {
        let all: String = (1..=1000).map(status_line).collect();
        let _ = write.write_all(all.as_bytes()).await;
    });
    tokio::time::timeout(DEADLINE, served)
        .await
        .expect("the connection was closed")
        .unwrap();
}

#[tokio::test]
async fn malformed_lines_are_answered_on_the_connection_and_never_reach_the_engine() {
    let (client, seen, _served) = connect(Limits::DEFAULT, 0);
    let (read, mut write) = client.into_split();
    let mut huge = vec![b'x'; MAX_LINE_FOR_TEST];
    huge.push(b'\n');
    write.write_all(b"{\"v\":-1}\n").await.unwrap();
    write
        .write_all(br#"{"v":1,"id":3,"op":"status","op":"stop"}"#)
        .await
        .unwrap();
    write.write_all(b"\n").await.unwrap();
    write.write_all(&huge).await.unwrap();
    write.write_all(status_line(4).as_bytes()).await.unwrap();
    let mut lines = BufReader::new(read);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(error_kind(&read_reply(&mut lines).await.expect("reply")));
    }
    assert_eq!(
        kinds,
        [
            Some(ErrorKind::Version),
            Some(ErrorKind::Malformed),
            Some(ErrorKind::TooLong)
        ]
    );
    match read_reply(&mut lines).await {
        Some(Reply::Result { id: 4, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

const MAX_LINE_FOR_TEST: usize = crate::proto::MAX_LINE + 1;

#[tokio::test]
async fn connections_over_the_cap_are_told_so_and_closed_and_a_freed_slot_serves_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("api.sock");
    let limits = Limits {
        connections: 2,
        ..Limits::DEFAULT
    };
    let server = ControlServer::bind(&path)
        .await
        .expect("bind")
        .with_limits(limits);
    let (requests, _seen) = fake_engine(0);
    let serving = tokio::spawn(server.serve(PeerPolicy::current(), requests));

    // Two held connections, each proven served.
    let mut held = Vec::new();
    for id in 1..=2 {
        let stream = UnixStream::connect(&path).await.expect("connect");
        let (read, mut write) = stream.into_split();
        write.write_all(status_line(id).as_bytes()).await.unwrap();
        let mut lines = BufReader::new(read);
        assert!(matches!(
            read_reply(&mut lines).await,
            Some(Reply::Result { .. })
        ));
        held.push((lines, write));
    }
    let over = UnixStream::connect(&path).await.expect("connect");
    let (read, mut write) = over.into_split();
    let _ = write.write_all(status_line(3).as_bytes()).await;
    let mut lines = BufReader::new(read);
    let reply = read_reply(&mut lines).await.expect("the refusal");
    assert_eq!(
        error_kind(&reply),
        Some(ErrorKind::TooManyConnections),
        "{reply:?}"
    );
    // Closed after it: the end of the stream, or a reset when the request arrived after
    // the server had read what was there.
    let mut rest = String::new();
    let after = tokio::time::timeout(DEADLINE, lines.read_line(&mut rest)).await;
    assert!(matches!(after, Ok(Ok(0)) | Ok(Err(_))), "{after:?} {rest}");

    // Closing one frees its slot once the server saw it go.
    drop(held.pop());
    let start = Instant::now();
    loop {
        let stream = UnixStream::connect(&path).await.expect("connect");
        let (read, mut write) = stream.into_split();
        let _ = write.write_all(status_line(4).as_bytes()).await;
        match read_reply(&mut BufReader::new(read)).await {
            Some(Reply::Result { id: 4, .. }) => break,
            Some(r) if error_kind(&r) == Some(ErrorKind::TooManyConnections) => {}
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < DEADLINE, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serving.abort();
}

#[test]
fn the_connection_cap_leaves_three_quarters_of_the_open_files_limit() {
    let limits = Limits::DEFAULT;
    assert_eq!(limits.connections_within(1024), 64);
    assert_eq!(limits.connections_within(1 << 20), 64);
    assert_eq!(limits.connections_within(128), 32);
    assert_eq!(limits.connections_within(2), 1);
}
