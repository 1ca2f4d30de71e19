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

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use super::ConfigError;

/// The largest service file read: real ones are a few kilobytes.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

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
    let kind = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a unix socket"
    } else {
        "a special file"
    };
    Err(ConfigError::NotRegular {
        path: path.to_owned(),
        kind,
    })
}
