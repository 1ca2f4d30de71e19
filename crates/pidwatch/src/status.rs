//! How a process ended, and the exit codes pidwatch uses.

use std::fmt;

/// Exit codes of pidwatch's own outcomes, outside the relayed statuses. They follow
/// `timeout(1)` and `env(1)`: 124 for a timeout, 125 for the tool's own failure, 126 and 127
/// when the command cannot be run.
pub mod code {
    /// The service ended but pidwatch could not learn its status: the watched process was
    /// not pidwatch's child when it exited (fallback mode, `--trust-owner`, or a process
    /// that its own parent reaped before it was re-parented).
    pub const UNKNOWN_STATUS: u8 = 121;
    /// No valid pid appeared in the pid file within `--startup-timeout`.
    pub const STARTUP_TIMEOUT: u8 = 124;
    /// pidwatch itself failed (setup error, missing pid file directory).
    pub const FAILURE: u8 = 125;
    /// The command exists but could not be executed.
    pub const CANNOT_EXECUTE: u8 = 126;
    /// The command was not found.
    pub const NOT_FOUND: u8 = 127;
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this code (0–255).
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
    /// It exited, but it was not pidwatch's child, so its status is unknown.
    Unknown,
}

impl Ending {
    /// Decodes a raw status from waitpid(2).
    pub fn from_wait_status(status: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(Self::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Self::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    /// The exit code that relays this ending: the code itself, 128+N for signal N, or
    /// [`code::UNKNOWN_STATUS`].
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Exited(n) => u8::try_from(n & 0xff).unwrap_or(code::FAILURE),
            Self::Signaled(n) => u8::try_from(128 + n).unwrap_or(255),
            Self::Unknown => code::UNKNOWN_STATUS,
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(n) => write!(f, "exited with code {n}"),
            Self::Signaled(n) => write!(f, "was killed by {}", crate::signals::name(*n)),
            Self::Unknown => f.write_str("exited (status unknown: not pidwatch's child)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_relayed_and_signals_become_128_plus_n() {
        assert_eq!(Ending::Exited(0).exit_code(), 0);
        assert_eq!(Ending::Exited(255).exit_code(), 255);
        assert_eq!(Ending::Signaled(libc::SIGKILL).exit_code(), 137);
        assert_eq!(Ending::Signaled(libc::SIGTERM).exit_code(), 143);
        assert_eq!(Ending::Unknown.exit_code(), code::UNKNOWN_STATUS);
    }

    #[test]
    fn raw_wait_statuses_decode() {
        assert_eq!(Ending::from_wait_status(3 << 8), Some(Ending::Exited(3)));
        assert_eq!(Ending::from_wait_status(9), Some(Ending::Signaled(9)));
    }
}
