//! Exit codes, decided in one place.
//!
//! Every command returns `anyhow::Result<()>`. An error that must end with a specific code
//! carries an [`ExitError`]; anything else is a failure (1). [`report`] turns the result
//! into the process's exit code and prints the one `error:` line.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// The command did what was asked.
pub const SUCCESS: u8 = 0;
/// The command ran and the thing failed: a restart rolled back or failed, the supervisor
/// answered with an error, the supervisor stopped with an error.
pub const FAILURE: u8 = 1;
/// The command line or the service configuration is wrong (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// The service is not running, or there is no such service.
pub const NOT_RUNNING: u8 = 3;

/// An error with the exit code it deserves and a message for the user.
#[derive(Debug)]
pub struct ExitError {
    pub code: u8,
    pub message: String,
    /// What went wrong, for `--json` (`{"error":{"kind":…}}`): stable words a script can
    /// match, like `usage`, `not_running`, `busy`, `rolled_back`.
    pub kind: &'static str,
    /// Whether the `--json` output already says it (a restart's report does): then no
    /// error object follows.
    pub reported: bool,
}

impl ExitError {
    pub fn with_code(code: u8, message: impl Into<String>) -> anyhow::Error {
        Self::of_kind(code, default_kind(code), message)
    }

    /// An error of a kind more precise than its exit code says.
    pub fn of_kind(code: u8, kind: &'static str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(ExitError {
            code,
            message: message.into(),
            kind,
            reported: false,
        })
    }

    /// An error the `--json` output has already reported (see [`ExitError::reported`]).
    pub fn reported(code: u8, kind: &'static str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(ExitError {
            code,
            message: message.into(),
            kind,
            reported: true,
        })
    }

    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Self::with_code(USAGE, message)
    }

    pub fn failure(message: impl Into<String>) -> anyhow::Error {
        Self::with_code(FAILURE, message)
    }

    pub fn not_running(message: impl Into<String>) -> anyhow::Error {
        Self::with_code(NOT_RUNNING, message)
    }
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

/// The kind of an error that says no more than its exit code.
fn default_kind(code: u8) -> &'static str {
    match code {
        USAGE => "usage",
        NOT_RUNNING => "not_running",
        _ => "failed",
    }
}

/// The exit code and message (empty: print nothing) for a command's result.
pub fn classify(result: &anyhow::Result<()>) -> (u8, String) {
    let (code, message, _) = classify_kind(result);
    (code, message)
}

/// [`classify`], with the error's kind and whether `--json` output reported it already.
fn classify_kind(result: &anyhow::Result<()>) -> (u8, String, Option<(&'static str, bool)>) {
    let Err(err) = result else {
        return (SUCCESS, String::new(), None);
    };
    // `zdctl status | head -1`: the reader went away, which is not our failure.
    if is_broken_pipe(err) {
        return (SUCCESS, String::new(), None);
    }
    for cause in err.chain() {
        if let Some(exit) = cause.downcast_ref::<ExitError>() {
            return (
                exit.code,
                exit.message.clone(),
                Some((exit.kind, exit.reported)),
            );
        }
    }
    (FAILURE, format!("{err:#}"), Some(("failed", false)))
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<StdoutClosed>().is_some())
}

/// The reader of our stdout went away (see `output::line`).
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Prints the error line, if any, and returns the exit code. With `json` (the command was
/// asked for `--json`), the error is also one JSON object on stdout,
/// `{"error":{"kind":"not_running","message":"…","exit_code":3}}`, unless the command's
/// own output already reported it.
pub fn report(result: anyhow::Result<()>, json: bool) -> ExitCode {
    let (code, message, kind) = classify_kind(&result);
    if !message.is_empty() {
        let prefix = crate::color::bad("error:", crate::color::Stream::Stderr);
        let _ = writeln!(std::io::stderr().lock(), "{prefix} {message}");
        if let Some((kind, false)) = kind.filter(|_| json) {
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                json_error(kind, &message, code)
            );
        }
    }
    ExitCode::from(code)
}

/// The JSON object of an error.
pub fn json_error(kind: &str, message: &str, code: u8) -> String {
    serde_json::json!({ "error": { "kind": kind, "message": message, "exit_code": code } })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_exit_error_keeps_its_code_under_context() {
        let result: anyhow::Result<()> =
            Err(ExitError::not_running("service 'a' is not running")).context("while restarting");
        assert_eq!(
            classify(&result),
            (NOT_RUNNING, "service 'a' is not running".to_owned())
        );
    }

    #[test]
    fn a_closed_stdout_exits_zero_silently() {
        let result: anyhow::Result<()> = Err(anyhow::Error::new(StdoutClosed).context("printing"));
        assert_eq!(classify(&result), (SUCCESS, String::new()));
    }

    #[test]
    fn a_broken_pipe_elsewhere_is_a_failure() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let result: anyhow::Result<()> = Err(anyhow::Error::new(io).context("control socket"));
        assert_eq!(classify(&result).0, FAILURE);
    }

    #[test]
    fn any_other_error_is_a_failure_with_its_causes() {
        let result: anyhow::Result<()> = Err(anyhow::anyhow!("inner")).context("outer");
        assert_eq!(classify(&result), (FAILURE, "outer: inner".to_owned()));
    }
}
