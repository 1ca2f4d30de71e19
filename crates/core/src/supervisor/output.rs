//! What a generation printed: the last lines of its stdout and stderr, kept for `zdctl
//! logs`, for the report of a restart it failed, and for `status` of a failing service.
//!
//! Bounded both ways: at most the configured number of lines (`log.lines`) of at most
//! [`MAX_LINE`] bytes each, whatever the program prints, so a program that prints
//! megabytes in one line or millions of lines costs the supervisor a bounded amount.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::proto::{LogLine, LogStream, unix_ms};

/// How many lines a failing service's status and a failed restart's report show.
pub const KEEP_LINES: usize = 10;
/// How many bytes of one line are kept; the rest is cut and marked with `…`.
pub const MAX_LINE: usize = 2048;

/// The sequence number of the next line kept, over every generation (and every service
/// of this process: only the order matters); 0 until the first line.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Takes the next line's number. The first is the time in microseconds since the epoch,
/// so that the numbers of a supervisor's next binary (after `reexec`) or of one that
/// adopts its generations start above those a `zdctl logs --follow` has seen.
fn next_seq() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let _ = NEXT_SEQ.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    NEXT_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The last lines one generation printed, on stdout and stderr together.
#[derive(Debug)]
pub struct OutputLog {
    generation: u64,
    capacity: usize,
    lines: Mutex<VecDeque<LogLine>>,
    /// How many of its output streams are still being read.
    open: watch::Sender<usize>,
}

impl OutputLog {
    /// An empty log of generation `generation` that keeps its last `capacity` lines (at
    /// least [`KEEP_LINES`]).
    pub fn new(generation: u64, capacity: usize) -> OutputLog {
        OutputLog {
            generation,
            capacity: capacity.max(KEEP_LINES),
            lines: Mutex::default(),
            open: watch::Sender::new(0),
        }
    }

    /// Keeps one line (without its newline); invalid UTF-8 is replaced.
    pub fn push(&self, stream: LogStream, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let kept = &line[..line.len().min(MAX_LINE)];
        let mut text = String::from_utf8_lossy(kept).into_owned();
        if line.len() > MAX_LINE {
            // A cut through a multi-byte character shows as U+FFFD before the mark.
            text.push('…');
        }
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        // Taken under the lock: lines are kept in the order of their numbers.
        let seq = next_seq();
        lines.push_back(LogLine {
            generation: self.generation,
            seq,
            unix_ms: unix_ms(SystemTime::now()),
            stream,
            text,
        });
    }

    /// The texts of the last [`KEEP_LINES`] lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.last(KEEP_LINES).into_iter().map(|l| l.text).collect()
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<LogLine> {
        self.after(0, n)
    }

    /// The last `n` of the lines numbered above `after`, oldest first.
    pub fn after(&self, after: u64, n: usize) -> Vec<LogLine> {
        let Ok(lines) = self.lines.lock() else {
            return Vec::new();
        };
        let newer = lines.partition_point(|l| l.seq <= after);
        let skip = (lines.len() - newer).saturating_sub(n);
        lines.iter().skip(newer + skip).cloned().collect()
    }

    /// How many lines are kept.
    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// The number of the newest line kept, 0 when none is.
    pub fn newest(&self) -> u64 {
        self.lines
            .lock()
            .ok()
            .and_then(|l| l.back().map(|l| l.seq))
            .unwrap_or(0)
    }

    /// Marks one more output stream as read into this log, until the guard is dropped.
    pub fn reading(self: &std::sync::Arc<Self>) -> Reading {
        self.open.send_modify(|n| *n += 1);
        Reading(self.clone())
    }

    /// Waits until every stream read into this log has ended (the generation and whatever
    /// it started closed their ends), at most `limit`: what it printed last is kept then.
    pub async fn wait_closed(&self, limit: Duration) {
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(limit, open.wait_for(|n| *n == 0)).await;
    }
}

/// The output pipes of one generation as its supervisor reads them: what a `reexec` hands
/// to the next binary and an adopting supervisor looks for.
#[derive(Debug, Clone, Default)]
pub(super) struct Pipes {
    /// The read ends of stdout's and stderr's pipes, open in this process.
    pub fds: [Option<i32>; 2],
    /// Their inodes.
    pub inodes: [Option<u64>; 2],
    /// The prefix of its forwarded lines.
    pub prefix: String,
    /// How many lines its log keeps.
    pub log_lines: u32,
}

impl Pipes {
    /// Starts reading `read_ends` (stdout's, stderr's) into `log` and forwarding them to our
    /// own output.
    pub fn read(
        read_ends: [Option<std::os::fd::OwnedFd>; 2],
        prefix: String,
        log_lines: u32,
        log: Option<&std::sync::Arc<OutputLog>>,
    ) -> Pipes {
        use std::os::fd::AsRawFd;
        let mut pipes = Pipes {
            prefix,
            log_lines,
            ..Pipes::default()
        };
        let streams = [LogStream::Stdout, LogStream::Stderr];
        for (i, (fd, stream)) in read_ends.into_iter().zip(streams).enumerate() {
            if let Some(fd) = fd {
                pipes.fds[i] = Some(fd.as_raw_fd());
                pipes.inodes[i] = nix::sys::stat::fstat(&fd).ok().map(|s| s.st_ino);
                super::process::forward_output(fd, pipes.prefix.clone(), stream, log);
            }
        }
        pipes
    }
}

/// One output stream being read into an [`OutputLog`]; see [`OutputLog::reading`].
#[derive(Debug)]
pub struct Reading(std::sync::Arc<OutputLog>);

impl Reading {
    /// Keeps one line of this stream.
    pub fn push(&self, stream: LogStream, line: &[u8]) {
        self.0.push(stream, line);
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_lines_are_kept_each_cut_to_its_bound() {
        let log = OutputLog::new(3, 0);
        for i in 0..KEEP_LINES + 3 {
            log.push(LogStream::Stdout, format!("line {i}\n").as_bytes());
        }
        log.push(LogStream::Stderr, &vec![b'x'; MAX_LINE * 10]);
        log.push(LogStream::Stderr, b"bad \xff byte\r\n");
        let lines = log.lines();
        assert_eq!(lines.len(), KEEP_LINES);
        assert_eq!(lines[0], "line 5");
        assert_eq!(lines[KEEP_LINES - 2], format!("{}…", "x".repeat(MAX_LINE)));
        assert_eq!(lines[KEEP_LINES - 1], "bad \u{fffd} byte");
        let last = log.last(1);
        assert_eq!(last[0].generation, 3);
        assert_eq!(last[0].stream, LogStream::Stderr);
    }

    #[test]
    fn lines_after_a_number_are_the_newer_ones_and_at_most_n() {
        let log = OutputLog::new(1, 100);
        for i in 0..20 {
            log.push(LogStream::Stdout, format!("{i}").as_bytes());
        }
        let all = log.last(100);
        assert_eq!(all.len(), 20);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        let after = log.after(all[14].seq, 100);
        let texts: Vec<&str> = after.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["15", "16", "17", "18", "19"]);
        let two = log.after(all[14].seq, 2);
        assert_eq!(two[0].text, "18");
        assert_eq!(log.newest(), all[19].seq);
        assert!(log.after(log.newest(), 10).is_empty());
    }

    #[tokio::test]
    async fn closed_once_every_stream_ended() {
        let log = std::sync::Arc::new(OutputLog::new(1, 10));
        let out = log.reading();
        let err = log.reading();
        drop(out);
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            log.wait_closed(Duration::from_secs(60)),
        )
        .await;
        assert!(waited.is_err(), "one stream is still open");
        drop(err);
        log.wait_closed(Duration::from_secs(60)).await;
    }
}
