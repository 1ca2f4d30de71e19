//! Handoff: how listeners reach a generation (DESIGN §4).
//!
//! Listeners are duplicated onto fds 3, 4, … in config order and described in every common
//! dialect at once (systemd, einhorn/socketmaster, Server::Starter, ours), so an unmodified app
//! written for any of them finds its sockets.
//!
//! `LISTEN_PID` must equal the pid of the process that execs the app (sd_listen_fds() and
//! gunicorn check it), and that pid is only known once the child exists. So the child is
//! started with a hand-rolled `clone` + `execve`: everything is allocated before the clone,
//! the child runs on the supervisor's memory without a copy (cheaper than a fork), and it
//! only writes the pid's digits into a buffer reserved for them, moves fds and makes direct
//! syscalls until it execs.

mod child;
mod env;
pub mod intercept;
mod spawn;

pub use env::{HandoffVars, handoff_vars};
pub use spawn::{ExecReport, SpawnSpec, Spawned, resolve_program, spawn_generation, start_child};

/// Why a generation could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    #[error(
        "command '{program}' not found in PATH ({path}); give its full path or fix PATH in the service's env"
    )]
    NotFound { program: String, path: String },
    #[error("command '{}' is not an executable file; check the path and its mode (chmod +x)", program.display())]
    NotExecutable { program: std::path::PathBuf },
    #[error("the command is empty; give the program to run")]
    EmptyCommand,
    #[error("'{value}' cannot be passed to a process (it contains a NUL byte)")]
    Nul { value: String },
    #[error("cannot start '{program}': {stage} failed: {source}")]
    Exec {
        program: String,
        stage: &'static str,
        source: std::io::Error,
    },
    /// The errno is part of the message (the supervisor reports spawn failures as text),
    /// so it is not also a `source` that a chain would print twice.
    #[error("cannot {about}: {error}")]
    Io {
        about: &'static str,
        error: std::io::Error,
    },
}
