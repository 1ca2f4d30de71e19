//! Logging: `ZD_LOG` (an env-filter directive such as `debug` or `zd_core=trace`) wins;
//! otherwise `-v` raises the level one step per use from the command's default.
//!
//! A supervisor must never wait for its log reader: with stderr on a pipe to a logger that
//! stalls (a full disk under svlogd or multilog, a stopped `less`), a blocking write would
//! freeze restarts, drain deadlines and the reaping of children. So `zdctl run` logs
//! through [`Lossy`]: lines go to a bounded queue that one thread writes out, and when the
//! queue is full they are dropped and counted, and the count is reported once the reader
//! catches up.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// Lines the queue holds before new ones are dropped: seconds of a busy supervisor's log.
const QUEUE_LINES: usize = 4096;
/// How long [`flush`] waits for queued lines to be written before the process exits.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// The queue of the lossy writer, once installed.
static LOSSY: OnceLock<Lossy> = OnceLock::new();

/// A writer that never blocks: each write is one formatted line, queued for the writer
/// thread, or dropped and counted when the queue is full.
#[derive(Clone)]
struct Lossy {
    queue: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    pending: Arc<Pending>,
}

/// Lines queued and not yet written, for [`flush`].
#[derive(Default)]
struct Pending {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Pending {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn done(&self) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Waits until nothing is pending, or `deadline`.
    fn wait_empty(&self, deadline: Instant) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            count = self
                .changed
                .wait_timeout(count, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Lossy {
    fn start() -> std::io::Result<Lossy> {
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(Pending::default());
        let writer = Lossy {
            queue,
            dropped: Arc::clone(&dropped),
            pending: Arc::clone(&pending),
        };
        std::thread::Builder::new()
            .name("zdctl-log".into())
            .spawn(move || write_lines(&lines, &dropped, &pending))?;
        Ok(writer)
    }
}

impl Write for Lossy {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Counted before the send, so the writer thread cannot finish it first.
        self.pending.add();
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(buf.to_vec())
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.pending.done();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer thread: stderr may block here, and only here.
fn write_lines(lines: &Receiver<Vec<u8>>, dropped: &AtomicU64, pending: &Pending) {
    let mut stderr = std::io::stderr();
    while let Ok(line) = lines.recv() {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                stderr,
                "zdctl: {lost} log lines dropped: stderr was not being read fast enough"
            );
        }
        let _ = stderr.write_all(&line);
        pending.done();
    }
}

/// Waits, briefly, until the lines queued so far are written: call before exiting.
pub fn flush() {
    if let Some(lossy) = LOSSY.get() {
        lossy.pending.wait_empty(Instant::now() + FLUSH_WAIT);
    }
}

/// Installs the stderr subscriber. `base` is the level with no `-v`: 0 warn, 1 info,
/// 2 debug, 3 trace. With `lossy`, log lines never block the caller (see the module docs).
pub fn init(base: u8, verbose: u8, lossy: bool) {
    let filter = match std::env::var("ZD_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|e| {
                eprintln!("warning: ignoring ZD_LOG='{directives}': {e}");
                EnvFilter::new(level(base, verbose))
            }),
        _ => EnvFilter::new(level(base, verbose)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // A second init (tests calling main_exit twice) is harmless: keep the first.
    let writer = if lossy { lossy_writer() } else { None };
    let _ = match writer {
        Some(writer) => builder.with_writer(move || writer.clone()).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// The process's lossy writer, started on first use; `None` if its thread cannot start
/// (then logging blocks, as it would anyway).
fn lossy_writer() -> Option<Lossy> {
    if let Some(existing) = LOSSY.get() {
        return Some(existing.clone());
    }
    let started = Lossy::start().ok()?;
    Some(LOSSY.get_or_init(|| started).clone())
}

fn level(base: u8, verbose: u8) -> &'static str {
    match base.saturating_add(verbose) {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn each_verbose_flag_raises_the_level_one_step() {
        assert_eq!(level(0, 0), "warn");
        assert_eq!(level(0, 1), "info");
        assert_eq!(level(1, 1), "debug");
        assert_eq!(level(0, 9), "trace");
    }
}
