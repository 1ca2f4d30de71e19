//! pidwatch's own failures, each mapped to one exit code.

use std::io;
use std::path::PathBuf;

use crate::status::code;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot start '{command}': {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot watch the directory of pid file '{path}': {source}; the directory must exist \
         before pidwatch starts"
    )]
    WatchPidfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {about}: {source}")]
    Setup {
        about: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot write generated files to '{path}': {source}")]
    Generate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                code::NOT_FOUND
            }
            Self::Spawn { .. } => code::CANNOT_EXECUTE,
            _ => code::FAILURE,
        }
    }
}
