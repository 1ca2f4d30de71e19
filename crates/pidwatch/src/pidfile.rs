//! Reading the pid file strictly.
//!
//! A pid file is read often and may be caught half-written, so reading never fails loudly:
//! every outcome other than a clean positive integer is a [`Reading`] the caller may log and
//! then wait for the next change of the file.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::Pid;

/// Longer than any decimal pid plus whitespace: a bigger file is not a pid file.
const MAX_LEN: u64 = 64;

/// What the pid file holds right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// A positive pid, and the uid that owns the file.
    Pid { pid: Pid, owner: u32 },
    /// The file does not exist (yet, or any more).
    Missing,
    /// The file holds nothing but whitespace: typically truncated and not yet rewritten.
    Empty,
    /// The file holds something that is not a positive integer; the text is kept for the log.
    Garbage(String),
    /// The file could not be read for another reason.
    Unreadable(String),
}

/// Reads the pid file at `path` once.
pub fn read(path: &Path) -> Reading {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Reading::Missing,
        Err(err) => return Reading::Unreadable(err.to_string()),
    };
    let owner = match file.metadata() {
        Ok(meta) => meta.uid(),
        Err(err) => return Reading::Unreadable(err.to_string()),
    };
    let mut bytes = Vec::new();
    if let Err(err) = file.take(MAX_LEN + 1).read_to_end(&mut bytes) {
        return Reading::Unreadable(err.to_string());
    }
    match parse(&bytes) {
        Ok(Some(pid)) => Reading::Pid { pid, owner },
        Ok(None) => Reading::Empty,
        Err(text) => Reading::Garbage(text),
    }
}

/// Parses pid file content: surrounding whitespace (a trailing newline, as nginx writes) is
/// ignored, and what remains must be a decimal integer in `1..=i32::MAX` without sign or
/// leading zero. `Ok(None)` means only whitespace; `Err` carries a printable excerpt.
pub fn parse(bytes: &[u8]) -> Result<Option<Pid>, String> {
    let excerpt = || String::from_utf8_lossy(&bytes[..bytes.len().min(32)]).into_owned();
    if bytes.len() as u64 > MAX_LEN {
        return Err(excerpt());
    }
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    let digits_only = text.iter().all(u8::is_ascii_digit);
    if !digits_only || text[0] == b'0' {
        return Err(excerpt());
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<i32>().ok())
        .map(|raw| Some(Pid::from_raw(raw)))
        .ok_or_else(excerpt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(raw: i32) -> Result<Option<Pid>, String> {
        Ok(Some(Pid::from_raw(raw)))
    }

    #[test]
    fn trailing_newline_and_surrounding_spaces_are_ignored() {
        assert_eq!(parse(b"1234\n"), pid(1234));
        assert_eq!(parse(b"  1234 \t\r\n"), pid(1234));
        assert_eq!(parse(b"7"), pid(7));
    }

    #[test]
    fn whitespace_only_is_empty_not_garbage() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b" \n\n"), Ok(None));
    }

    #[test]
    fn anything_but_a_positive_integer_is_garbage() {
        for bad in [
            &b"0"[..],
            b"-1",
            b"+5",
            b"012",
            b"12 34",
            b"12abc",
            b"pid=12",
            b"99999999999",
            b"\xff\xfe",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} must be garbage",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_oversized_file_is_garbage() {
        let big = vec![b' '; 100];
        assert!(parse(&big).is_err());
    }

    #[test]
    fn a_missing_file_reads_as_missing() {
        let dir = std::env::temp_dir().join(format!("pidwatch-unit-{}", std::process::id()));
        assert_eq!(read(&dir.join("nope.pid")), Reading::Missing);
    }
}
