//! Reading a service file without trusting what sits at its path.
//!
//! The supervisor reads its service file again before every restart, and whoever can write
//! the directory decides what it finds there. A FIFO makes `open` wait for a writer that may
//! never come; a device such as `/dev/zero` never ends; a file on a stalled network mount
//! blocks in `read`; a generated file may be huge. Each of these once froze the supervisor's
//! main loop (issue 17). So a service file is read like this:
//!
//! - Symlinks are followed: `services.d/api.yaml -> ../available/api.yaml` is a common
//!   layout. What they lead to must be a regular file: it is checked with `stat` before the
//!   open, so that no device or FIFO is ever opened, and again with `fstat` on the opened
//!   descriptor, so that a file swapped in between cannot slip through.
//! - The open uses `O_NONBLOCK` (a FIFO swapped in after the `stat` opens at once instead of
//!   waiting for a writer, then fails the `fstat` check) and `O_NOCTTY`.
//! - At most [`MAX_FILE_SIZE`] + 1 bytes are read, whatever the file's size says.
//! - The nesting of the text is capped before the YAML parser sees it (see `nesting`).
//! - When the supervisor reads, it does so on a thread of its own and gives up after
//!   [`READ_DEADLINE`] ([`off_thread`]): a read that blocks in the kernel cannot be cancelled,
//!   but it no longer holds up anything else.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use super::ConfigError;

/// The largest service file read: real ones are a few kilobytes.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// How long the supervisor waits for its service file to be read, parsed and validated
/// before a restart fails without it.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Reads a service file's text: a regular file (symlinks followed), at most
/// [`MAX_FILE_SIZE`] bytes, UTF-8.
pub fn read_service_file(path: &Path) -> Result<String, ConfigError> {
    let failed = |source: io::Error| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // Refuse before opening: opening some devices has effects of its own.
    let meta = std::fs::metadata(path).map_err(failed)?;
    regular(path, meta.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(failed)?;
    // The path may name something else by now: what counts is what was opened.
    regular(path, file.metadata().map_err(failed)?.file_type())?;
    let bytes = read_capped(file, MAX_FILE_SIZE).map_err(failed)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_SIZE,
        });
    }
    String::from_utf8(bytes).map_err(|_| {
        failed(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file is not UTF-8 text; save it as UTF-8",
        ))
    })
}

/// Up to `cap` + 1 bytes: one more than allowed tells a file that is too large.
fn read_capped(file: File, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn regular(path: &Path, kind: FileType) -> Result<(), ConfigError> {
    if kind.is_file() {
        return Ok(());
    }
    let kind = crate::paths::describe_file_type(kind);
    Err(ConfigError::NotRegular {
        path: path.to_owned(),
        kind,
    })
}

/// Runs `work` (a read of the service file at `path`) on a thread of its own and waits at
/// most `deadline` for it, without blocking the caller's runtime thread.
///
/// A plain thread rather than `spawn_blocking`: a read stuck in the kernel cannot be
/// interrupted, and the runtime waits for its blocking tasks when it shuts down, so a
/// stuck one would hold up the supervisor's exit too. A detached thread ends with the
/// process.
pub(crate) async fn off_thread<T: Send + 'static>(
    path: &Path,
    deadline: Duration,
    work: impl FnOnce() -> Result<T, ConfigError> + Send + 'static,
) -> Result<T, ConfigError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("zd-config-read".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(result)) => result,
        // The sender was dropped without a result: `work` panicked.
        Ok(Err(_)) => Err(ConfigError::Read {
            path: path.to_owned(),
            source: io::Error::other("the reading thread failed"),
        }),
        Err(_) => Err(ConfigError::ReadTimedOut {
            path: path.to_owned(),
            limit: deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_that_never_returns_fails_at_the_deadline_and_the_caller_goes_on() {
        let (_keep, blocked) = std::sync::mpsc::channel::<()>();
        let path = Path::new("/srv/api/api.yaml");
        // `work` waits for a message that never comes, like a read on a stalled mount.
        let err = off_thread(path, Duration::from_millis(50), move || {
            let _ = blocked.recv();
            Ok(())
        })
        .await
        .expect_err("never returns");
        assert!(matches!(err, ConfigError::ReadTimedOut { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("/srv/api/api.yaml: reading the service file took longer than 50ms"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_read_that_panics_is_an_error_not_a_crash() {
        let err = off_thread::<()>(Path::new("/x.yaml"), READ_DEADLINE, || panic!("boom"))
            .await
            .expect_err("panicked");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_read_that_returns_in_time_gives_its_result() {
        let text = off_thread(Path::new("/x.yaml"), READ_DEADLINE, || Ok("command: [x]"))
            .await
            .expect("in time");
        assert_eq!(text, "command: [x]");
    }
}
