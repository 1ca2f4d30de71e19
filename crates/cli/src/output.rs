//! Writing to stdout and the small formatting helpers every command shares.
//!
//! Output goes through `writeln!` on a locked stdout rather than `println!`, so a closed
//! pipe is an error that [`crate::exit`] turns into exit 0 instead of a panic.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;
use zd_core::duration::format_duration;
use zd_core::proto::ExitInfo;

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}

/// Writes `text` as is (it ends with its own newline, or not) to stdout.
pub fn text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}

/// A closed stdout (`zdctl status | head -1`) is marked so that it, and only it, exits 0: a
/// broken pipe on the control socket is a real failure.
fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(crate::exit::StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Writes `value` as one JSON line on stdout.
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value).context("cannot encode JSON")?;
    line(&text)
}

/// Writes `value` as pretty JSON on stdout.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    line(&text)
}

/// How a process ended, the way a shell would put it: `exit code 3`, or
/// `killed by SIGKILL (137)` (128 + the signal number).
pub fn exit_status(exit: ExitInfo) -> String {
    match exit {
        ExitInfo::Code { .. } | ExitInfo::Unknown => exit.to_string(),
        ExitInfo::Signal { .. } => format!("{exit} ({})", exit.shell_code()),
    }
}

/// Milliseconds as a short duration: `412ms`, `1.2s`, `2m30s`.
pub fn millis(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

/// How long ago `unix_ms` was, relative to `now`: `5s`, `2h13m`.
pub fn age(unix_ms: u64, now: SystemTime) -> String {
    let now_ms = zd_core::proto::unix_ms(now);
    let span = Duration::from_millis(now_ms.saturating_sub(unix_ms));
    // Whole seconds read better in a table than `12.3s`.
    if span >= Duration::from_secs(1) {
        format_duration(Duration::from_secs(span.as_secs()))
    } else {
        format_duration(span)
    }
}

/// Aligns `rows` under `headers` in columns two spaces apart. No trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths.get(i).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<pad$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_killed_by_a_signal_shows_128_plus_n() {
        assert_eq!(
            exit_status(ExitInfo::Signal { signal: 9 }),
            "killed by SIGKILL (137)"
        );
        assert_eq!(exit_status(ExitInfo::Code { code: 3 }), "exit code 3");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let rows = vec![
            vec!["8".to_owned(), "1234".to_owned(), "active".to_owned()],
            vec!["10".to_owned(), "99".to_owned(), String::new()],
        ];
        assert_eq!(
            table(&["GEN", "PID", "STATE"], &rows),
            "GEN  PID   STATE\n8    1234  active\n10   99\n"
        );
    }

    #[test]
    fn ages_are_whole_seconds_past_one_second() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(10_000_000);
        assert_eq!(age(10_000_000 - 7_800, now), "7s");
        assert_eq!(age(10_000_000 - 8_000_000, now), "2h13m20s");
        assert_eq!(age(10_000_000 - 300, now), "300ms");
        assert_eq!(millis(412), "412ms");
    }
}
