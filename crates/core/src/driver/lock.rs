//! One restart at a time per foreign service: `flock(2)` on `NAME.lock` in the runtime
//! directory, held for the whole driver run. The kernel drops the lock with the last fd,
//! so a zdctl that is killed mid-restart never leaves the service locked; the record's
//! `in_progress` then tells the next holder that a restart ended without a report.
//!
//! `status` takes the lock too, without waiting, for the moment it takes to update the
//! record; a restart that finds the lock held by such a reader (no restart in progress
//! in the record) waits briefly for it instead of answering busy.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::DriverError;
use super::record::{self, Record};
use crate::paths;

/// How long a restart waits for a lock held by something other than a restart.
const READER_GRACE: Duration = Duration::from_millis(500);

/// How often a waiter tries the lock again: flock(2) has no timeout and no event to wait
/// on, and a blocked flock in a thread could not be abandoned at the deadline.
const RETRY: Duration = Duration::from_millis(20);

/// The restart lock of one service; dropped, it is released.
pub(super) struct RestartLock {
    _file: Flock<File>,
    dir: PathBuf,
    name: String,
}

impl RestartLock {
    /// The lock of `name`, or `None` when someone holds it.
    pub(super) fn try_acquire(name: &str) -> Result<Option<RestartLock>, DriverError> {
        let dir = paths::runtime_dir();
        // The lock and the record are created by path: only in a checked directory.
        paths::ensure_runtime_dir(&dir)?;
        let path = dir.join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| DriverError::io(format!("open the lock '{}'", path.display()), e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(Some(RestartLock {
                _file: file,
                dir,
                name: name.to_owned(),
            })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(DriverError::io(
                format!("lock '{}'", path.display()),
                errno.into(),
            )),
        }
    }

    /// The lock of `name` for a restart: `Busy` when another restart holds it.
    pub(super) async fn for_restart(name: &str) -> Result<RestartLock, DriverError> {
        let grace = Instant::now() + READER_GRACE;
        loop {
            if let Some(lock) = RestartLock::try_acquire(name)? {
                return Ok(lock);
            }
            let restart = read(name).and_then(|r| r.in_progress);
            if restart.is_some() || Instant::now() >= grace {
                return Err(DriverError::Busy { restart });
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Waits until `deadline` for the lock of `name`.
    pub(super) async fn wait(name: &str, timeout: Duration) -> Result<RestartLock, DriverError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(lock) = RestartLock::try_acquire(name)? {
                return Ok(lock);
            }
            if Instant::now() >= deadline {
                return Err(DriverError::StillBusy {
                    restart: read(name).and_then(|r| r.in_progress),
                    waited: timeout,
                });
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The record, with a restart whose zdctl died counted as failed (and written).
    pub(super) fn record(&self) -> Record {
        let mut record = record::read_in(&self.dir, &self.name).unwrap_or_default();
        if record.settle_abandoned() {
            self.write(&record);
        }
        record
    }

    /// Writes the record. Best effort: a runtime directory that cannot be written only
    /// loses the numbering and the counters.
    pub(super) fn write(&self, record: &Record) {
        if let Err(error) = record::write_in(&self.dir, &self.name, record) {
            tracing::warn!(%error, service = self.name, "cannot write the driver record");
        }
    }
}

/// The record of `name`, read without the lock (for numbers only: never to write back).
pub(super) fn read(name: &str) -> Option<Record> {
    record::read_in(&paths::runtime_dir(), name)
}
