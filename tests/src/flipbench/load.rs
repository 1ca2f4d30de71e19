//! The load, on its own runtime and thread so that the control client's timings do not
//! wait behind the load's tasks.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use zd_load::load::{ConnectionMode, LiveCounters, LoadConfig, LoadReport, StopSignal};

/// A bound on the number of requests, whatever else happens: every record is kept in
/// memory (24 bytes each), so this caps the run at about half a gigabyte.
const MAX_REQUESTS: u64 = 20_000_000;

/// How long the first answers may take to arrive.
const FIRST_ANSWERS: Duration = Duration::from_secs(10);

pub struct BackgroundLoad {
    stop: StopSignal,
    thread: Option<JoinHandle<Result<LoadReport>>>,
    pub live: Arc<LiveCounters>,
}

impl BackgroundLoad {
    /// Starts `concurrency` closed-loop clients against `address` and waits for their
    /// first answers. The load stops by itself after `bound` at the latest.
    pub fn start(
        address: &str,
        concurrency: usize,
        mode: ConnectionMode,
        retry_idle_close: bool,
        bound: Duration,
    ) -> Result<BackgroundLoad> {
        let mut config = LoadConfig::new(format!("http://{address}/").parse()?);
        config.concurrency = concurrency;
        config.mode = mode;
        config.retry_idle_close = retry_idle_close;
        config.duration = Some(bound);
        config.max_requests = Some(MAX_REQUESTS);
        let stop = StopSignal::new();
        let live = Arc::new(LiveCounters::default());
        let counters = Arc::clone(&live);
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("load".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(zd_load::load::run_with_counters(config, stopped, counters))
                    .context("the load failed")
            })?;
        let load = BackgroundLoad {
            stop,
            thread: Some(thread),
            live,
        };
        let started = Instant::now();
        while load.live.requests() < concurrency as u64 {
            if started.elapsed() > FIRST_ANSWERS {
                bail!(
                    "the load got {} answers in {FIRST_ANSWERS:?}",
                    load.live.requests()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(load)
    }

    /// Stops the load, lets in-flight requests finish and returns every record.
    pub fn finish(mut self) -> Result<LoadReport> {
        self.stop.stop();
        let thread = self
            .thread
            .take()
            .context("the load was already finished")?;
        thread
            .join()
            .map_err(|_| anyhow!("the load thread panicked"))?
    }
}

impl Drop for BackgroundLoad {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
