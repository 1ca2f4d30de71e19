//! Configuration errors. Each one about a service file starts with `file:line:column:`,
//! says what is wrong, then what to change.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::format_duration;

/// Where in a service file something is. Lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The service file; `None` for a service given by command-line flags.
    pub file: Option<PathBuf>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Location {
    /// A position in `file`.
    pub fn new(file: Option<PathBuf>, line: usize, column: usize) -> Location {
        Location { file, line, column }
    }
}

impl fmt::Display for Location {
    /// `file:line:column`, or `command line` for a service given by flags.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}:{}", file.display(), self.line, self.column),
            None => f.write_str("command line"),
        }
    }
}

/// A service configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the service file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path leads (through any symlinks) to something other than a regular file: a
    /// FIFO, a device, a directory or a socket.
    #[error(
        "{}: the service file is {kind}, not a regular file; point the path at a regular \
         YAML file (a symlink to one is fine)",
        path.display()
    )]
    NotRegular {
        /// The path as given.
        path: PathBuf,
        /// What it is instead, like "a named pipe (FIFO)".
        kind: &'static str,
    },
    /// The file is larger than service files may be.
    #[error(
        "{}: the service file is larger than {} (the limit); a service file is a few \
         kilobytes, so check that this is the file you meant",
        path.display(),
        size(*limit)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// Reading the file (on its own thread) did not finish in time; the thread is left to
    /// finish or block on its own.
    #[error(
        "{}: reading the service file took longer than {} and was given up; check that \
         the file and the filesystem it is on respond (a stalled network mount?), then try \
         again",
        path.display(),
        format_duration(*limit)
    )]
    ReadTimedOut {
        /// The file.
        path: PathBuf,
        /// How long the read was given.
        limit: Duration,
    },
    /// An earlier read of the file, given up on after its deadline, still has not returned.
    #[error(
        "{}: an earlier read of the service file is still blocked; check that the file \
         and the filesystem it is on respond (a stalled network mount?), then try again",
        path.display()
    )]
    StillReading {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid YAML, or a key or value is wrong. `message` says what to
    /// change.
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: Location,
        /// What is wrong, then what to change.
        message: String,
    },
    /// The program of `command` is not there.
    #[error(
        "{at}: command '{program}' not found ({searched}); install it, fix the path, or give \
         an absolute path"
    )]
    CommandNotFound {
        /// Where `command:` is.
        at: Location,
        /// The program as written.
        program: String,
        /// Where we looked: the resolved path, or the PATH that was searched.
        searched: String,
    },
    /// The program of `command` exists but cannot be executed.
    #[error(
        "{at}: command '{}' is not an executable file; run 'chmod +x' on it or fix the path",
        program.display()
    )]
    CommandNotExecutable {
        /// Where `command:` is.
        at: Location,
        /// The resolved path.
        program: PathBuf,
    },
    /// No service file has that name.
    #[error(
        "no service named '{name}' (looked for {name}.yaml, {name}.yml and files with \
         'name: {name}' in {}); create one there, set ZDCTL_CONFIG_DIR, or pass the file's path",
        list_dirs(searched)
    )]
    NotFound {
        /// The service name asked for.
        name: String,
        /// Every directory searched, in order.
        searched: Vec<PathBuf>,
    },
    /// Several problems in one service file, in file order, one per line; past
    /// [`MAX_LISTED`] the rest are counted, not listed.
    #[error("{}", list(errors, *more))]
    Many {
        /// The problems, each one of the other variants.
        errors: Vec<ConfigError>,
        /// Further problems found but not kept (past the cap).
        more: usize,
    },
}

/// How many problems of one file are listed; the rest are counted ("and 3 more").
pub const MAX_LISTED: usize = 20;

impl ConfigError {
    /// An [`ConfigError::Invalid`] at `at`.
    pub(crate) fn invalid(at: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            at,
            message: message.into(),
        }
    }

    /// One error for every problem in `errors` (plus `more` that were not kept): the
    /// problem itself when there is one, else [`ConfigError::Many`] with the problems
    /// in file order. `None` when there is none.
    pub(crate) fn from_list(errors: Vec<ConfigError>, more: usize) -> Option<ConfigError> {
        let mut flat = Vec::with_capacity(errors.len());
        let mut more = more;
        for err in errors {
            match err {
                ConfigError::Many { errors, more: m } => {
                    flat.extend(errors);
                    more += m;
                }
                one => flat.push(one),
            }
        }
        // Stable: problems at one place (or with none) keep the order they were found in.
        flat.sort_by_key(|e| e.location().map(|at| (at.line, at.column)));
        match (flat.len(), more) {
            (0, 0) => None,
            (1, 0) => flat.pop(),
            _ => Some(ConfigError::Many { errors: flat, more }),
        }
    }

    /// Where the error is, when it is about a position in a service file; for
    /// [`ConfigError::Many`], where the first problem is.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Invalid { at, .. }
            | ConfigError::CommandNotFound { at, .. }
            | ConfigError::CommandNotExecutable { at, .. } => Some(at),
            ConfigError::Many { errors, .. } => errors.first().and_then(ConfigError::location),
            _ => None,
        }
    }

    /// Every problem: the errors of [`ConfigError::Many`], else this one.
    pub fn problems(&self) -> &[ConfigError] {
        match self {
            ConfigError::Many { errors, .. } => errors,
            one => std::slice::from_ref(one),
        }
    }
}

/// The first [`MAX_LISTED`] problems, one per line, then how many more there are.
fn list(errors: &[ConfigError], more: usize) -> String {
    let mut lines: Vec<String> = errors
        .iter()
        .take(MAX_LISTED)
        .map(ToString::to_string)
        .collect();
    let unlisted = errors.len().saturating_sub(MAX_LISTED) + more;
    if unlisted > 0 {
        lines.push(format!(
            "and {unlisted} more {}",
            if unlisted == 1 { "problem" } else { "problems" }
        ));
    }
    lines.join("\n")
}

/// `1 MiB`, `64 KiB` or a number of bytes.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

fn list_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directory (HOME is unset)".to_owned();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
