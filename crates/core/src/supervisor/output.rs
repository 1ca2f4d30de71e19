//! What a generation printed: the last lines of its stdout and stderr, kept for `zdctl
//! logs`, for the report of a restart it failed, and for `status` of a failing service.
//!
//! Bounded both ways: at most the configured number of lines (`log.lines`) of at most
//! [`MAX_LINE`] bytes each, whatever the program prints, so a program that prints
//! megabytes in one line or millions of lines costs the supervisor a bounded amount.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Numbers this process's lines from `next` on, or from the time in microseconds if that
/// is later: the lines of the binary before a `reexec` were numbered below `next`, and a
/// `zdctl logs --follow` asks for those above the last it saw, even if the clock went back.
pub fn continue_from(next: u64) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let _ = NEXT_SEQ.compare_exchange(0, next.max(now), Ordering::SeqCst, Ordering::SeqCst);
}

/// A number above every line kept so far: a line numbered from now on is at or above it.
pub fn seq_bound() -> u64 {
    NEXT_SEQ.load(Ordering::SeqCst).max(1)
}

/// Takes the next line's number. The first is the time in microseconds since the epoch,
/// so that the numbers of a supervisor's next binary (after `reexec`) or of one that
/// adopts its generations start above those a `zdctl logs --follow` has seen.
fn next_seq() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let _ = NEXT_SEQ.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    NEXT_SEQ.fetch_add(1, Ordering::SeqCst)
}

/// The last lines one generation printed, on stdout and stderr together.
#[derive(Debug)]
pub struct OutputLog {
    generation: u64,
    instance: u32,
    capacity: usize,
    lines: Mutex<VecDeque<LogLine>>,
    /// How many of its output streams are still being read.
    open: watch::Sender<usize>,
}

impl OutputLog {
    /// An empty log of generation `generation` that keeps its last `capacity` lines (at
    /// least [`KEEP_LINES`]).
    pub fn new(generation: u64, capacity: usize) -> OutputLog {
        OutputLog::of_instance(generation, 0, capacity)
    }

    /// [`OutputLog::new`] for instance `instance` of the generation.
    pub fn of_instance(generation: u64, instance: u32, capacity: usize) -> OutputLog {
        OutputLog {
            generation,
            instance,
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
        // Invalid bytes each became a 3-byte U+FFFD: cut again, on a character.
        let mut end = text.len().min(MAX_LINE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = line.len() > MAX_LINE || end < text.len();
        text.truncate(end);
        if cut {
            // A cut through a multi-byte character shows as U+FFFD before the mark.
            text.push('…');
        }
        // No spare capacity: a kept line costs what it holds.
        text.shrink_to_fit();
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
            instance: self.instance,
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
        self.newest_before(u64::MAX, n)
    }

    /// The last `n` of the lines numbered below `bound`, oldest first.
    pub fn newest_before(&self, bound: u64, n: usize) -> Vec<LogLine> {
        let Ok(lines) = self.lines.lock() else {
            return Vec::new();
        };
        let end = lines.partition_point(|l| l.seq < bound);
        lines.range(end.saturating_sub(n)..end).cloned().collect()
    }

    /// The first of the lines numbered above `after` and below `bound`, oldest first,
    /// until `n` lines or `bytes` of text are taken; and the number of the first line left
    /// out by those limits, if one was.
    pub fn oldest_after(
        &self,
        after: u64,
        bound: u64,
        n: usize,
        bytes: usize,
    ) -> (Vec<LogLine>, Option<u64>) {
        let Ok(lines) = self.lines.lock() else {
            return (Vec::new(), None);
        };
        let start = lines.partition_point(|l| l.seq <= after);
        let mut taken = Vec::new();
        let mut size = 0;
        for line in lines.range(start..) {
            if line.seq >= bound {
                return (taken, None);
            }
            if taken.len() == n || size >= bytes {
                return (taken, Some(line.seq));
            }
            size += line.text.len();
            taken.push(line.clone());
        }
        (taken, None)
    }

    /// How many lines are kept.
    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
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
    /// The read ends of stdout's and stderr's pipes while their forwarders read them (-1
    /// without, or once a forwarder has ended and closed its fd: a program may point its
    /// stderr elsewhere and close our pipe long before it exits).
    fds: Arc<[AtomicI32; 2]>,
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
            fds: Arc::new([AtomicI32::new(-1), AtomicI32::new(-1)]),
            prefix,
            log_lines,
            ..Pipes::default()
        };
        let streams = [LogStream::Stdout, LogStream::Stderr];
        for (i, (fd, stream)) in read_ends.into_iter().zip(streams).enumerate() {
            if let Some(fd) = fd {
                pipes.fds[i].store(fd.as_raw_fd(), Ordering::SeqCst);
                pipes.inodes[i] = nix::sys::stat::fstat(&fd).ok().map(|s| s.st_ino);
                let slot = Slot {
                    fds: pipes.fds.clone(),
                    index: i,
                };
                super::process::forward_output(fd, pipes.prefix.clone(), stream, log, Some(slot));
            }
        }
        pipes
    }

    /// The read ends still open, each checked to be the pipe it was: what a `reexec`
    /// hands over.
    pub fn open_fds(&self) -> [Option<i32>; 2] {
        [0, 1].map(|i| {
            let fd = self.fds[i].load(Ordering::SeqCst);
            let inode = self.inodes[i]?;
            // SAFETY: only read while the forwarder holds it; a number closed meanwhile
            // fails fstat or names another file, and is left out.
            let borrowed = (fd >= 0).then(|| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })?;
            let same = nix::sys::stat::fstat(borrowed).is_ok_and(|s| s.st_ino == inode);
            same.then_some(fd)
        })
    }
}

/// Where a forwarder says that it has ended, before it closes its fd.
#[derive(Debug)]
pub(super) struct Slot {
    fds: Arc<[AtomicI32; 2]>,
    index: usize,
}

impl Slot {
    pub fn ended(&self) {
        self.fds[self.index].store(-1, Ordering::SeqCst);
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
    fn lines_are_taken_newest_before_a_bound_or_oldest_after_a_number() {
        let log = OutputLog::new(1, 100);
        for i in 0..20 {
            log.push(LogStream::Stdout, format!("{i}").as_bytes());
        }
        let all = log.last(100);
        assert_eq!(all.len(), 20);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        let text = |lines: &[LogLine]| lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
        // The newest two below line 18.
        assert_eq!(text(&log.newest_before(all[18].seq, 2)), ["16", "17"]);
        // The oldest after line 14, all of them, then two, then bounded by line 18.
        let (after, left) = log.oldest_after(all[14].seq, u64::MAX, 100, 1 << 20);
        assert_eq!(text(&after), ["15", "16", "17", "18", "19"]);
        assert_eq!(left, None);
        let (two, left) = log.oldest_after(all[14].seq, u64::MAX, 2, 1 << 20);
        assert_eq!(text(&two), ["15", "16"]);
        assert_eq!(left, Some(all[17].seq), "the first one left out");
        let (bounded, left) = log.oldest_after(all[14].seq, all[18].seq, 100, 1 << 20);
        assert_eq!(text(&bounded), ["15", "16", "17"]);
        assert_eq!(left, None, "the bound is not a limit");
        // A byte budget stops after the line that reached it.
        let (few, left) = log.oldest_after(0, u64::MAX, 100, 3);
        assert_eq!(text(&few), ["0", "1", "2"]);
        assert_eq!(left, Some(all[3].seq));
        assert!(
            log.oldest_after(all[19].seq, u64::MAX, 10, 100)
                .0
                .is_empty()
        );
        assert!(seq_bound() > all[19].seq);
    }

    #[test]
    fn a_line_of_invalid_bytes_costs_no_more_than_its_bound() {
        let log = OutputLog::new(1, 10);
        log.push(LogStream::Stdout, &vec![0xff; MAX_LINE * 3]);
        let line = &log.last(1)[0];
        assert!(
            line.text.len() <= MAX_LINE + '…'.len_utf8(),
            "{}",
            line.text.len()
        );
        assert!(line.text.ends_with('…'));
        assert!(line.text.capacity() <= MAX_LINE + '…'.len_utf8());
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
