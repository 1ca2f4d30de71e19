//! The load client against small in-test servers whose misbehaviour is
//! scripted by request number, so every failure kind can be counted exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use zd_load::load::{
    self, ConnectionMode, FailureKind, LoadConfig, LoadReport, StopSignal, Target,
};

/// What the scripted server does with the n-th request it receives (1-based).
#[derive(Clone, Copy)]
enum Reply {
    Ok,
    /// 200 with `Connection: close`, then close.
    OkThenClose,
    Error500,
    /// 200 without `Connection: close`, then close anyway, as a server
    /// closing an idle keep-alive connection does.
    OkThenQuietClose,
    /// Close without answering.
    Hangup,
    /// Never answer.
    Silence,
}

/// Serves on 127.0.0.1:0 until the test's runtime ends; `script` decides
/// each reply from the global request number.
async fn scripted_server(script: fn(u64) -> Reply) -> (Target, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(stream, script, Arc::clone(&counter)));
        }
    });
    let target = format!("http://{addr}/").parse().expect("valid target");
    (target, received)
}

async fn serve(mut stream: TcpStream, script: fn(u64) -> Reply, received: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..head_end);
        let n = received.fetch_add(1, Ordering::SeqCst) + 1;
        let reply: &[u8] = match script(n) {
            Reply::Ok => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
            Reply::OkThenClose => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
            }
            Reply::OkThenQuietClose => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
            Reply::Error500 => b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            Reply::Hangup => return,
            Reply::Silence => {
                std::future::pending::<()>().await;
                return;
            }
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
        if matches!(script(n), Reply::OkThenClose | Reply::OkThenQuietClose) {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Every 7th request fails with 500, every 11th (not 7th) hangs up, every
/// 5th of the rest closes cleanly after answering.
fn mixed(n: u64) -> Reply {
    if n % 7 == 0 {
        Reply::Error500
    } else if n % 11 == 0 {
        Reply::Hangup
    } else if n % 5 == 0 {
        Reply::OkThenClose
    } else {
        Reply::Ok
    }
}

async fn run(config: LoadConfig) -> LoadReport {
    load::run(config, StopSignal::new())
        .await
        .expect("load run")
}

fn counts(pairs: &[(FailureKind, u64)]) -> BTreeMap<FailureKind, u64> {
    pairs.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_load_counts_every_failure_by_kind() {
    let (target, received) = scripted_server(mixed).await;
    let mut config = LoadConfig::new(target);
    config.concurrency = 8;
    config.max_requests = Some(770);
    let report = run(config).await;

    assert_eq!(received.load(Ordering::SeqCst), 770);
    assert_eq!(report.total(), 770);
    // Multiples of 7: 110. Multiples of 11 that are not multiples of 7: 70 - 10.
    assert_eq!(
        report.failures_by_kind(),
        counts(&[(FailureKind::Status(500), 110), (FailureKind::Reset, 60)])
    );
    assert_eq!(report.succeeded(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_are_shared_out_over_the_threads_and_every_request_counts() {
    // More threads than CPUs and an uneven split: 7 connections over 3 threads.
    let (target, received) = scripted_server(mixed).await;
    let mut config = LoadConfig::new(target.clone());
    config.concurrency = 7;
    config.threads = 3;
    config.max_requests = Some(770);
    let report = run(config).await;
    assert_eq!(received.load(Ordering::SeqCst), 770);
    assert_eq!(report.total(), 770);
    assert_eq!(report.succeeded(), 600);

    // More threads than connections: one thread per connection.
    let mut config = LoadConfig::new(target);
    config.concurrency = 2;
    config.threads = 16;
    config.max_requests = Some(77);
    assert_eq!(run(config).await.total(), 77);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_threads_is_an_invalid_setting() {
    let (target, _) = scripted_server(mixed).await;
    let mut config = LoadConfig::new(target);
    config.threads = 0;
    let err = load::run(config, StopSignal::new())
        .await
        .expect_err("0 threads");
    assert!(err.to_string().contains("thread"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_mode_opens_a_connection_per_request_and_counts_the_same() {
    let (target, received) = scripted_server(mixed).await;
    let mut config = LoadConfig::new(target);
    config.concurrency = 4;
    config.mode = ConnectionMode::Close;
    config.max_requests = Some(154);
    let report = run(config).await;

    assert_eq!(received.load(Ordering::SeqCst), 154);
    assert_eq!(
        report.failures_by_kind(),
        counts(&[(FailureKind::Status(500), 22), (FailureKind::Reset, 12)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_server_closed_is_replaced_before_sending() {
    let (target, received) = scripted_server(|_| Reply::OkThenQuietClose).await;
    let mut config = LoadConfig::new(target);
    // Open loop leaves each connection idle between slots, the way a server
    // sees an idle keep-alive connection it decides to close.
    config.rate = Some(200.0);
    config.max_requests = Some(20);
    let report = run(config).await;

    assert_eq!(received.load(Ordering::SeqCst), 20);
    assert_eq!(report.failures_by_kind(), counts(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_is_refused_every_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = LoadConfig::new(format!("http://{addr}/").parse().unwrap());
    config.concurrency = 2;
    config.max_requests = Some(10);
    let report = run(config).await;

    assert_eq!(report.total(), 10);
    assert_eq!(
        report.failures_by_kind(),
        counts(&[(FailureKind::Refused, 10)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_yields_timeouts_not_hangs() {
    let (target, _) = scripted_server(|_| Reply::Silence).await;
    let mut config = LoadConfig::new(target);
    config.concurrency = 2;
    config.max_requests = Some(4);
    config.request_timeout = Duration::from_millis(50);
    let report = run(config).await;

    assert_eq!(
        report.failures_by_kind(),
        counts(&[(FailureKind::Timeout, 4)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_runs_the_scheduled_requests_and_the_stop_channel_ends_a_run() {
    let (target, _) = scripted_server(|_| Reply::Ok).await;
    let mut config = LoadConfig::new(target.clone());
    config.concurrency = 4;
    config.rate = Some(2000.0);
    config.max_requests = Some(100);
    let report = run(config).await;
    assert_eq!(report.total(), 100);
    assert_eq!(report.failed(), 0);
    // Open loop: record n starts at its slot, n / rate after the start.
    assert_eq!(report.records[99].start(), Duration::from_micros(99 * 500));

    let mut config = LoadConfig::new(target);
    config.concurrency = 2;
    let live = Arc::new(load::LiveCounters::default());
    let stop = StopSignal::new();
    let running = tokio::spawn(load::run_with_counters(
        config,
        stop.clone(),
        Arc::clone(&live),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live.requests() < 50 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::task::yield_now().await;
    }
    stop.stop();
    let report = running.await.unwrap().unwrap();
    assert!(report.total() >= 50);
    assert_eq!(report.failed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_split_latencies_between_flips_and_steady_state() {
    let (target, _) = scripted_server(|_| Reply::Ok).await;
    let mut config = LoadConfig::new(target);
    config.max_requests = Some(200);
    let report = run(config).await;
    let all = report.latency_histogram(|_| true);
    assert_eq!(all.len(), 200);

    let whole_run = [(Duration::ZERO, report.elapsed)];
    let split = report.summary_in_windows(&whole_run);
    assert_eq!(split.in_windows.requests, 200);
    assert_eq!(split.steady.requests, 0);
    let split = report.summary_in_windows(&[]);
    assert_eq!(split.steady.requests, 200);

    let buckets = report.throughput(Duration::from_millis(10));
    assert_eq!(buckets.iter().map(|b| b.ok).sum::<u64>(), 200);
}

/// Every third request received is closed unanswered, as by a server that closes an
/// idle keep-alive connection just as the next request arrives.
fn every_third_hangs_up(n: u64) -> Reply {
    if n % 3 == 0 { Reply::Hangup } else { Reply::Ok }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_kept_alive_connection_closed_unanswered_is_retried_once_when_asked() {
    let load = |retry| async move {
        let (target, received) = scripted_server(every_third_hangs_up).await;
        let mut config = LoadConfig::new(target);
        config.concurrency = 1;
        config.threads = 1;
        config.max_requests = Some(60);
        config.retry_idle_close = retry;
        (run(config).await, received.load(Ordering::SeqCst))
    };

    // Strict: each hang-up is a failure, nothing is sent twice.
    let (strict, received) = load(false).await;
    assert_eq!((strict.total(), received), (60, 60));
    assert_eq!(
        strict.failures_by_kind(),
        counts(&[(FailureKind::Reset, 20)])
    );
    assert_eq!(strict.retried(), 0);

    // Retrying: every hang-up was on a reused connection (two answered requests before
    // it), so each is sent again on a new one and answered.
    let (retrying, received) = load(true).await;
    assert_eq!(retrying.total(), 60);
    assert_eq!(retrying.failed(), 0, "{:?}", retrying.failures_by_kind());
    assert_eq!(retrying.retried(), received - 60);
    assert!(retrying.retried() >= 20, "{}", retrying.retried());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_made_only_on_a_reused_connection_and_only_once() {
    // The first request is answered; every later one is closed unanswered.
    let (target, received) =
        scripted_server(|n| if n == 1 { Reply::Ok } else { Reply::Hangup }).await;
    let mut config = LoadConfig::new(target.clone());
    config.concurrency = 1;
    config.threads = 1;
    config.max_requests = Some(3);
    config.retry_idle_close = true;
    let report = run(config).await;
    // Request 2 goes out on the kept connection, is retried once on a new one and fails
    // there; request 3 starts on a new connection, so it is not retried.
    assert_eq!(report.succeeded(), 1);
    assert_eq!(
        report.failures_by_kind(),
        counts(&[(FailureKind::Reset, 2)])
    );
    assert_eq!(report.retried(), 1);
    assert_eq!(received.load(Ordering::SeqCst), 4);

    // A connection per request is never reused, so never retried.
    let (target, _) = scripted_server(every_third_hangs_up).await;
    let mut config = LoadConfig::new(target);
    config.concurrency = 1;
    config.threads = 1;
    config.mode = ConnectionMode::Close;
    config.max_requests = Some(30);
    config.retry_idle_close = true;
    let report = run(config).await;
    assert_eq!(
        report.failures_by_kind(),
        counts(&[(FailureKind::Reset, 10)])
    );
    assert_eq!(report.retried(), 0);
}
