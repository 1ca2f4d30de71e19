//! `logs`: the lines the generations printed, from the logs the supervisor keeps of them.

use std::sync::Arc;

use super::output::OutputLog;
use super::owner::Owner;
use crate::proto::{ErrorKind, LogLine, LogsReport, Reply, ReplyResult};

/// How many lines `logs` returns when the request does not say.
pub const DEFAULT_LINES: u32 = 100;

/// How many bytes of JSON one answer may hold at most, well below the protocol's line
/// limit; a longer one is cut, says `more`, and the client asks for the rest.
const REPLY_BYTES: usize = 48 * 1024;

impl Owner {
    /// Answers `logs` (see [`crate::proto::Op::Logs`]).
    pub(super) fn logs(
        &self,
        id: u64,
        generation: Option<u64>,
        after: Option<u64>,
        lines: Option<u32>,
    ) -> Reply {
        let kept: Vec<(u64, Arc<OutputLog>)> = self
            .st
            .generations
            .values()
            .filter_map(|g| g.output.clone().map(|log| (g.generation, log)))
            .collect();
        let generations: Vec<u64> = kept.iter().map(|(g, _)| *g).collect();
        if let Some(wanted) = generation {
            if !generations.contains(&wanted) {
                return Reply::error(id, ErrorKind::Invalid, not_kept(wanted, &generations));
            }
        }
        let after = after.unwrap_or(0);
        let want = lines.unwrap_or(DEFAULT_LINES) as usize;
        let logs = kept
            .iter()
            .filter(|(g, _)| generation.is_none_or(|w| w == *g));
        let mut found: Vec<LogLine> = logs
            .clone()
            .flat_map(|(_, log)| log.after(after, want))
            .collect();
        found.sort_unstable_by_key(|l| l.seq);
        found.drain(..found.len().saturating_sub(want));
        let fits = fitting(&found);
        let more = fits < found.len();
        found.truncate(fits);
        let newest = logs.map(|(_, log)| log.newest()).max().unwrap_or(0);
        let last_seq = found.last().map_or(newest.max(after), |l| l.seq);
        Reply::result(
            id,
            ReplyResult::Logs(LogsReport {
                lines: found,
                last_seq,
                more,
                generations,
                keep_lines: self.st.config.log_lines,
            }),
        )
    }
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
}
