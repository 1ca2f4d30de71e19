//! Messages on stderr, prefixed with `pidwatch:`.
//!
//! Writes ignore errors on purpose: SIGPIPE is blocked, so a closed stderr yields EPIPE, and
//! losing a log line must never stop the process that keeps the service supervised.

use std::fmt::Display;
use std::io::Write;

#[derive(Debug, Clone, Copy)]
pub struct Log {
    quiet: bool,
}

impl Log {
    pub fn new(quiet: bool) -> Self {
        Self { quiet }
    }

    /// What pidwatch follows and forwards; silenced by `--quiet`.
    pub fn info(&self, msg: impl Display) {
        if !self.quiet {
            write_line(msg);
        }
    }

    /// Something the user should fix; silenced by `--quiet` too, as it does not end anything.
    pub fn warn(&self, msg: impl Display) {
        if !self.quiet {
            write_line(format_args!("warning: {msg}"));
        }
    }

    /// Why pidwatch is giving up; always printed.
    pub fn error(&self, msg: impl Display) {
        write_line(format_args!("error: {msg}"));
    }
}

/// Formats first and writes once: one `write(2)` per line keeps lines whole when the
/// service shares the same stderr.
fn write_line(msg: impl Display) {
    let line = format!("pidwatch: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
