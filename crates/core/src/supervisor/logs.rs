//! `logs`: the lines the generations printed, from the logs the supervisor keeps of them.

use std::sync::Arc;

use super::output::{OutputLog, seq_bound};
use super::owner::Owner;
use crate::proto::{ErrorKind, LogLine, LogsReport, Reply, ReplyResult};

/// How many lines `logs` returns when the request does not say.
pub const DEFAULT_LINES: u32 = 100;

/// How many bytes of JSON one answer may hold at most, well below the protocol's line
/// limit; a longer one is cut, says `more`, and the client asks for the rest.
const REPLY_BYTES: usize = 48 * 1024;

/// A request's view: which lines it may return.
struct Window {
    after: Option<u64>,
    /// Lines numbered below it only.
    bound: u64,
    lines: usize,
}

impl Owner {
    /// Answers `logs` (see [`crate::proto::Op::Logs`]).
    pub(super) fn logs(
        &self,
        id: u64,
        generation: Option<u64>,
        after: Option<u64>,
        until: Option<u64>,
        lines: Option<u32>,
    ) -> Reply {
        // Taken before any log is read: a line numbered later may land in a log already
        // read, so it is left for the next request rather than skipped.
        let bound = until.map_or(seq_bound(), |u| seq_bound().min(u.saturating_add(1)));
        let kept: Vec<(u64, Arc<OutputLog>)> = self
            .st
            .instances
            .values()
            .filter_map(|g| g.output.clone().map(|log| (g.generation, log)))
            .collect();
        let mut generations: Vec<u64> = kept.iter().map(|(g, _)| *g).collect();
        generations.dedup();
        if let Some(wanted) = generation {
            if !generations.contains(&wanted) {
                return Reply::error(id, ErrorKind::Invalid, not_kept(wanted, &generations));
            }
        }
        let logs: Vec<&OutputLog> = kept
            .iter()
            .filter(|(g, _)| generation.is_none_or(|w| w == *g))
            .map(|(_, log)| log.as_ref())
            .collect();
        let window = Window {
            after,
            bound,
            lines: lines.map_or(
                if after.is_some() {
                    usize::MAX
                } else {
                    DEFAULT_LINES as usize
                },
                |n| n as usize,
            ),
        };
        let (lines, more) = select(&logs, &window);
        let newest = bound.saturating_sub(1);
        let last_seq = lines
            .last()
            .map_or(newest.max(after.unwrap_or(0)), |l| l.seq);
        Reply::result(
            id,
            ReplyResult::Logs(LogsReport {
                lines,
                last_seq,
                more,
                newest,
                generations,
                keep_lines: self.st.config.log_lines,
            }),
        )
    }
}

/// The lines of `logs` that `window` asks for, oldest first and cut to one answer, and
/// whether more remain.
fn select(logs: &[&OutputLog], window: &Window) -> (Vec<LogLine>, bool) {
    let mut found: Vec<LogLine> = Vec::new();
    // The number of the first line some log left out: nothing at or after it may be
    // returned, or the lines of that log before it would be skipped.
    let mut cutoff: Option<u64> = None;
    match window.after {
        None => {
            for log in logs {
                found.extend(log.newest_before(window.bound, window.lines));
            }
            found.sort_unstable_by_key(|l| l.seq);
            found.drain(..found.len().saturating_sub(window.lines));
        }
        Some(after) => {
            for log in logs {
                let (lines, left) =
                    log.oldest_after(after, window.bound, window.lines, REPLY_BYTES);
                found.extend(lines);
                cutoff = match (cutoff, left) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            found.sort_unstable_by_key(|l| l.seq);
            if let Some(cutoff) = cutoff {
                found.retain(|l| l.seq < cutoff);
            }
            found.truncate(window.lines);
        }
    }
    let fits = fitting(&found);
    let more = fits < found.len() || cutoff.is_some();
    found.truncate(fits);
    (found, more)
}

/// How many of `lines`, from the first, fit in one answer (at least one).
fn fitting(lines: &[LogLine]) -> usize {
    let mut size = 0;
    for (i, line) in lines.iter().enumerate() {
        size += serde_json::to_string(line).map_or(line.text.len(), |s| s.len()) + 1;
        if size > REPLY_BYTES {
            return i.max(1);
        }
    }
    lines.len()
}

fn not_kept(wanted: u64, generations: &[u64]) -> String {
    match generations {
        [] => format!(
            "generation {wanted}'s output is not kept: no generation's is (log.lines: 0, or \
             none has started)"
        ),
        kept => format!(
            "generation {wanted}'s output is not kept; the supervisor keeps that of \
             generations {}",
            kept.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::LogStream;

    #[test]
    fn an_answer_is_cut_at_its_size_but_holds_one_line_at_least() {
        let line = |seq, len| LogLine {
            instance: 0,
            generation: 1,
            seq,
            unix_ms: 0,
            stream: LogStream::Stdout,
            text: "x".repeat(len),
        };
        let small: Vec<LogLine> = (0..10).map(|i| line(i, 100)).collect();
        assert_eq!(fitting(&small), 10);
        let many: Vec<LogLine> = (0..1000).map(|i| line(i, 100)).collect();
        let fits = fitting(&many);
        assert!(fits > 100 && fits < 1000, "{fits}");
        let huge = vec![line(0, REPLY_BYTES * 2)];
        assert_eq!(fitting(&huge), 1);
    }

    /// Two generations printing at once, read page by page after a number: every line
    /// comes exactly once, in order, though one log holds far more than a page.
    #[test]
    fn paging_after_a_number_skips_and_repeats_nothing_across_generations() {
        let old = OutputLog::new(1, 10_000);
        let new = OutputLog::new(2, 10_000);
        for i in 0..3000 {
            old.push(
                LogStream::Stdout,
                format!("old {i} {}", "x".repeat(60)).as_bytes(),
            );
            if i % 10 == 0 {
                new.push(LogStream::Stderr, format!("new {i}").as_bytes());
            }
        }
        let expected: Vec<u64> = {
            let mut all: Vec<u64> = old
                .last(10_000)
                .iter()
                .chain(new.last(10_000).iter())
                .map(|l| l.seq)
                .collect();
            all.sort_unstable();
            all
        };
        let logs = [&old, &new];
        let bound = seq_bound();
        let mut after = 0;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let window = Window {
                after: Some(after),
                bound,
                lines: usize::MAX,
            };
            let (lines, more) = select(&logs, &window);
            pages += 1;
            assert!(pages < 100, "no end");
            seen.extend(lines.iter().map(|l| l.seq));
            if let Some(last) = lines.last() {
                after = last.seq;
            }
            if !more {
                break;
            }
        }
        assert_eq!(seen, expected);
        assert!(pages > 2, "{pages} pages");
        // The newest few, in a tail request.
        let tail = Window {
            after: None,
            bound,
            lines: 3,
        };
        let (lines, more) = select(&logs, &tail);
        assert!(!more);
        assert_eq!(
            lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            expected[expected.len() - 3..]
        );
    }
}
