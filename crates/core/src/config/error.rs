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
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] at `at`.
    pub(crate) fn invalid(at: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            at,
            message: message.into(),
        }
    }

    /// Where the error is, when it is about a position in a service file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Invalid { at, .. }
            | ConfigError::CommandNotFound { at, .. }
            | ConfigError::CommandNotExecutable { at, .. } => Some(at),
            _ => None,
        }
    }
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
