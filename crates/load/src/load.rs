//! An HTTP/1.1 load generator that counts every failure.
//!
//! It proves the central promise: while a service restarts under load, not
//! one request is refused, reset or answered with an error. The e2e tests,
//! the benchmarks and `zdctl verify` drive it.
//!
//! # How it works
//!
//! `concurrency` tokio tasks each own one connection. They are shared out
//! over `threads` OS threads, each with its own single-threaded runtime and
//! so its own epoll and timers, the way wrk runs its event loops. On a busy
//! machine the scheduler can leave a woken thread waiting behind another
//! process for a millisecond or two while a CPU idles; with one runtime for
//! the whole client, the thread left waiting could be the one holding the
//! reactor, and every connection waited with it. Now only that thread's
//! share waits. In closed loop a task
//! sends its next request as soon as the previous answer arrived. In open
//! loop (`rate`) request *n* is due at `start + n / rate`; a task takes the
//! next due slot, waits for its time and sends it, and the latency counts
//! from the due time, so a stalled server shows up as latency of the
//! requests that had to wait (no coordinated omission).
//!
//! Keep-alive tasks reuse their connection and reconnect when the server
//! says `Connection: close`; close-mode tasks open a connection per request.
//! A failed request is recorded with its kind and never retried. Each task
//! keeps its records in its own vector; they are merged at the end.
//!
//! The library never prints; progress is read from [`LiveCounters`]. A
//! [`StopSignal`] ends a run early.
//!
//! ```no_run
//! # async fn example() -> Result<(), zd_load::load::LoadError> {
//! use std::time::Duration;
//! use zd_load::load::{self, LoadConfig};
//!
//! let mut config = LoadConfig::new("http://127.0.0.1:8080/".parse()?);
//! config.concurrency = 32;
//! config.duration = Some(Duration::from_secs(10));
//! let report = load::run(config, load::StopSignal::new()).await?;
//! assert_eq!(report.failed(), 0, "{:?}", report.failures_by_kind());
//! # Ok(())
//! # }
//! ```

mod histogram;
mod pace;
mod record;
mod report;
mod response;
mod stop;
mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use pace::{Pacer, UnregisteredTimer};

pub use histogram::LatencyHistogram;
pub use record::{FailureKind, LiveCounters, Outcome, RequestRecord};
pub use report::{LatencySummary, LoadReport, ThroughputBucket, WindowedSummary};
pub use stop::StopSignal;

/// Where the load goes: an address to connect to, plus what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    /// The `Host` header.
    pub host: String,
    /// The request target, starting with `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = LoadError;

    /// Parses `http://127.0.0.1:8080/path`, `http://[::1]:8080`,
    /// `http://localhost:8080` or `unix:/run/app.sock`. Host names other than
    /// `localhost` are not resolved: the tool is meant for local services.
    fn from_str(s: &str) -> Result<Target, LoadError> {
        let invalid = |problem: &str| LoadError::InvalidTarget {
            target: s.to_owned(),
            problem: problem.to_owned(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid("the socket path is empty"));
            }
            return Ok(Target {
                endpoint: Endpoint::Unix(PathBuf::from(path)),
                host: "localhost".to_owned(),
                path: "/".to_owned(),
            });
        }
        if s.starts_with("https://") {
            return Err(invalid(
                "https is not supported; use http:// on a local port",
            ));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| invalid("expected http://HOST:PORT/PATH or unix:PATH"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (ip, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (ip, after) = v6
                    .split_once(']')
                    .ok_or_else(|| invalid("an IPv6 address needs its closing ']'"))?;
                (ip, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((ip, port)) => (ip, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| invalid("the port is not a number"))?,
            None => 80,
        };
        let ip = if ip.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            ip.parse()
                .map_err(|_| invalid("the host must be an IP address or localhost"))?
        };
        Ok(Target {
            endpoint: Endpoint::Tcp(SocketAddr::new(ip, port)),
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionMode {
    /// Reuse each connection until the server closes it.
    #[default]
    KeepAlive,
    /// Send `Connection: close` and open a new connection per request.
    Close,
}

/// What to send, how hard and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    pub target: Target,
    /// Connections (and tasks) in parallel.
    pub concurrency: usize,
    /// OS threads the connections are shared out over, each running its own event loop;
    /// never more than `concurrency`.
    pub threads: usize,
    pub mode: ConnectionMode,
    /// Requests per second in open loop; `None` for closed loop.
    pub rate: Option<f64>,
    /// Stop starting requests after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    pub max_requests: Option<u64>,
    /// Bound on one request, connect included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Send a request once more, on a new connection, when the kept-alive connection it
    /// went out on closed (end of file or reset) before any byte of the answer arrived:
    /// what HTTP clients do for an idempotent request (RFC 9112, section 9.3.1.1), since a
    /// server may close an idle connection at any moment and the request may cross that
    /// close. Only a reused connection qualifies, only once; the request is counted once,
    /// with [`RequestRecord::retried`] set, and failed if the second try fails. Off by
    /// default: every such close is then a failure, as `ab -k` counts it.
    pub retry_idle_close: bool,
}

impl LoadConfig {
    /// One keep-alive connection in closed loop, one thread per CPU, 5 s
    /// request timeout, no limit: set `duration` or `max_requests`, or stop
    /// it yourself.
    pub fn new(target: Target) -> LoadConfig {
        LoadConfig {
            target,
            concurrency: 1,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mode: ConnectionMode::KeepAlive,
            rate: None,
            duration: None,
            max_requests: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retry_idle_close: false,
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        let invalid = |problem: &str| {
            Err(LoadError::InvalidConfig {
                problem: problem.to_owned(),
            })
        };
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1");
        }
        if self.threads == 0 {
            return invalid("the load needs at least 1 thread");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return invalid("the rate must be a positive number of requests per second");
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("timeouts must be longer than zero");
        }
        Ok(())
    }

    /// The request bytes, formatted once for the whole run.
    fn request_bytes(&self) -> Vec<u8> {
        let connection = match self.mode {
            ConnectionMode::KeepAlive => "",
            ConnectionMode::Close => "Connection: close\r\n",
        };
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: zdctl-load\r\n{connection}\r\n",
            self.target.path, self.target.host
        )
        .into_bytes()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("invalid load target '{target}': {problem}")]
    InvalidTarget { target: String, problem: String },
    #[error("invalid load settings: {problem}")]
    InvalidConfig { problem: String },
    #[error("a load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot create the timers that pace an open-loop run")]
    Timer(#[source] std::io::Error),
    #[error("cannot start a load thread")]
    Thread(#[source] std::io::Error),
    #[error("a load thread ended without its records (it panicked)")]
    ThreadLost,
}

/// Runs the load until `duration`, `max_requests` or `stop` being stopped,
/// whichever comes first; in-flight requests are finished, not abandoned. A
/// `stop` that nobody stops only means nobody will stop the run early.
pub async fn run(config: LoadConfig, stop: StopSignal) -> Result<LoadReport, LoadError> {
    run_with_counters(config, stop, Arc::new(LiveCounters::default())).await
}

/// Like [`run`], updating `live` as requests finish.
pub async fn run_with_counters(
    config: LoadConfig,
    stop: StopSignal,
    live: Arc<LiveCounters>,
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    // One timer per task, all made before the first request so that running
    // out of file descriptors is an error up front rather than a task short.
    let mut timers = (0..config.concurrency)
        .map(|_| config.rate.map(|_| UnregisteredTimer::new()).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(LoadError::Timer)?;
    let threads = config.threads.min(config.concurrency);
    let started = Instant::now();
    let (internal_stop, internal_rx) = watch::channel(false);
    let run = Arc::new(worker::Run {
        request: config.request_bytes(),
        deadline: config.duration.map(|d| started + d),
        config,
        started,
        next: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        stop: internal_rx,
        live,
    });
    // Turns the caller's stop and the deadline into one flag the tasks
    // check between requests, and one channel that wakes them while they
    // wait for an open-loop slot.
    let watcher = {
        let run = Arc::clone(&run);
        let internal_stop = internal_stop.clone();
        tokio::spawn(async move {
            let deadline = async {
                match run.deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let caller = stop.stopped();
            tokio::select! {
                () = deadline => {}
                () = caller => {}
            }
            halt(&run, &internal_stop);
        })
    };
    // Each thread sends its records, or its error, when it ends.
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::with_capacity(threads);
    let mut failure = None;
    for i in 0..threads {
        // An even share of the connections not yet given out.
        let share = timers.len() / (threads - i);
        let mine: Vec<_> = timers.drain(..share).collect();
        match shard::start(i, Arc::clone(&run), mine, done.clone()) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                // Stop the threads already running before reporting.
                failure = Some(e);
                halt(&run, &internal_stop);
                break;
            }
        }
    }
    drop(done);
    let mut records = Vec::new();
    let mut reported = 0;
    while let Some(result) = results.recv().await {
        reported += 1;
        match result {
            Ok(mut r) => records.append(&mut r),
            Err(e) => {
                // One thread failing ends the run for all.
                halt(&run, &internal_stop);
                failure = failure.or(Some(e));
            }
        }
    }
    // Every thread has ended or dropped its sender: joining does not block.
    for handle in handles {
        let _ = handle.join();
    }
    if failure.is_none() && reported < threads {
        failure = Some(LoadError::ThreadLost);
    }
    watcher.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = started.elapsed();
    records.sort_unstable_by_key(|r| r.start_ns);
    Ok(LoadReport {
        records,
        started,
        elapsed,
    })
}

/// Tells every task to finish its request and end.
fn halt(run: &worker::Run, stop: &watch::Sender<bool>) {
    run.stopping.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
}

/// The OS threads of the load, each running its share of the tasks on its
/// own single-threaded runtime.
mod shard {
    use std::sync::Arc;

    use tokio::sync::mpsc::UnboundedSender;

    use super::{LoadError, Pacer, RequestRecord, UnregisteredTimer, worker};

    pub(super) type Done = UnboundedSender<Result<Vec<RequestRecord>, LoadError>>;

    /// Starts thread `index` with one task per entry of `timers` (`Some` in
    /// open loop); it sends its result on `done` when the tasks have ended.
    pub(super) fn start(
        index: usize,
        run: Arc<worker::Run>,
        timers: Vec<Option<UnregisteredTimer>>,
        done: Done,
    ) -> Result<std::thread::JoinHandle<()>, LoadError> {
        std::thread::Builder::new()
            .name(format!("zd-load-{index}"))
            .spawn(move || {
                let _ = done.send(work(run, timers));
            })
            .map_err(LoadError::Thread)
    }

    fn work(
        run: Arc<worker::Run>,
        timers: Vec<Option<UnregisteredTimer>>,
    ) -> Result<Vec<RequestRecord>, LoadError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LoadError::Thread)?;
        runtime.block_on(async {
            let rate = run.config.rate.unwrap_or(1.0);
            let pacers = timers
                .into_iter()
                .map(|timer| timer.map(|t| Pacer::new(t, rate)).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(LoadError::Timer)?;
            let tasks: Vec<_> = pacers
                .into_iter()
                .map(|pacer| tokio::spawn(worker::work(Arc::clone(&run), pacer)))
                .collect();
            let mut records = Vec::new();
            for task in tasks {
                records.append(&mut task.await?);
            }
            Ok(records)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_targets_give_address_host_and_path() {
        let t: Target = "http://127.0.0.1:8080/env?x=1".parse().unwrap();
        assert_eq!(t.endpoint, Endpoint::Tcp("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/env?x=1");
        let v6: Target = "http://[::1]:9000".parse().unwrap();
        assert_eq!(v6.endpoint, Endpoint::Tcp("[::1]:9000".parse().unwrap()));
        assert_eq!(v6.path, "/");
        let local: Target = "http://localhost".parse().unwrap();
        assert_eq!(
            local.endpoint,
            Endpoint::Tcp("127.0.0.1:80".parse().unwrap())
        );
    }

    #[test]
    fn unix_targets_take_the_socket_path() {
        let t: Target = "unix:/run/app.sock".parse().unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix(PathBuf::from("/run/app.sock")));
        assert_eq!(t.path, "/");
    }

    #[test]
    fn unsupported_targets_are_rejected() {
        for bad in [
            "https://127.0.0.1/",
            "ftp://x",
            "http://example.com/",
            "http://1.2.3.4:x/",
            "unix:",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn close_mode_requests_ask_for_close() {
        let mut config = LoadConfig::new("http://127.0.0.1:1/a".parse().unwrap());
        assert_eq!(
            config.request_bytes(),
            b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUser-Agent: zdctl-load\r\n\r\n"
        );
        config.mode = ConnectionMode::Close;
        assert!(
            String::from_utf8(config.request_bytes())
                .unwrap()
                .contains("Connection: close\r\n")
        );
    }
}
