//! The last lines a generation printed, kept so that `status` can say why a failing
//! service fails.
//!
//! Bounded both ways: at most [`KEEP_LINES`] lines of at most [`MAX_LINE`] bytes each,
//! whatever the program prints, so a program that prints megabytes in one line or
//! thousands of lines costs the supervisor a few kilobytes.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many lines are kept.
pub const KEEP_LINES: usize = 10;
/// How many bytes of one line are kept; the rest is cut and marked with `…`.
pub const MAX_LINE: usize = 200;

/// The last lines one generation printed, on stdout and stderr together.
#[derive(Debug, Default)]
pub struct OutputTail {
    lines: Mutex<VecDeque<String>>,
}

impl OutputTail {
    /// Keeps one line (without its newline); invalid UTF-8 is replaced.
    pub fn push(&self, line: &[u8]) {
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
        if lines.len() == KEEP_LINES {
            lines.pop_front();
        }
        lines.push_back(text);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_lines_are_kept_each_cut_to_its_bound() {
        let tail = OutputTail::default();
        for i in 0..KEEP_LINES + 3 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        tail.push(&vec![b'x'; MAX_LINE * 10]);
        tail.push(b"bad \xff byte\r\n");
        let lines = tail.lines();
        assert_eq!(lines.len(), KEEP_LINES);
        assert_eq!(lines[0], "line 5");
        assert_eq!(lines[KEEP_LINES - 2], format!("{}…", "x".repeat(MAX_LINE)));
        assert_eq!(lines[KEEP_LINES - 1], "bad \u{fffd} byte");
    }
}
