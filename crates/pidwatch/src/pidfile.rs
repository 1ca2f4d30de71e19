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

    /// What a file at the pid file path must never make pidwatch keep or print.
    const SECRET: &str = "SECRET-pidwatch-must-not-print";

    fn fixtures() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("pidwatch-unit-")
            .tempdir()
            .expect("temp dir")
    }

    /// Reads on another thread, so that a read that blocks fails the test instead of hanging it.
    fn read_within_deadline(path: &Path) -> Reading {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_owned();
        std::thread::spawn(move || tx.send(read(&path)));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("reading the pid file blocked"))
    }

    #[test]
    fn a_missing_file_reads_as_missing() {
        let dir = fixtures();
        assert_eq!(read(&dir.path().join("nope.pid")), Reading::Missing);
    }

    #[test]
    fn a_regular_file_with_a_pid_reads_as_that_pid_and_the_file_owner() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, "4242\n").expect("pid file");
        let owner = std::fs::metadata(&path).expect("stat").uid();
        let pid = Pid::from_raw(4242);
        assert_eq!(read(&path), Reading::Pid { pid, owner });
    }

    #[test]
    fn a_symbolic_link_is_refused_even_to_a_valid_pid_file() {
        let dir = fixtures();
        let target = dir.path().join("real.pid");
        std::fs::write(&target, "4242\n").expect("pid file");
        let path = dir.path().join("app.pid");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let reading = read(&path);
        assert!(!matches!(reading, Reading::Pid { .. }), "{reading:?}");
    }

    #[test]
    fn a_dangling_symbolic_link_is_refused_not_missing() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &path).expect("symlink");
        let reading = read(&path);
        assert!(
            !matches!(reading, Reading::Pid { .. } | Reading::Missing),
            "{reading:?}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let reading = read_within_deadline(&path);
        assert!(
            !matches!(
                reading,
                Reading::Pid { .. } | Reading::Empty | Reading::Missing
            ),
            "{reading:?}"
        );
    }

    #[test]
    fn a_directory_a_socket_and_a_device_are_refused() {
        let dir = fixtures();
        let directory = dir.path().join("dir.pid");
        std::fs::create_dir(&directory).expect("mkdir");
        let socket = dir.path().join("socket.pid");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        for path in [&directory, &socket, Path::new("/dev/null")] {
            let reading = read_within_deadline(path);
            assert!(
                !matches!(
                    reading,
                    Reading::Pid { .. } | Reading::Empty | Reading::Missing
                ),
                "{}: {reading:?}",
                path.display()
            );
        }
    }

    #[test]
    fn content_that_is_not_a_pid_is_not_kept() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        for content in [
            format!("{SECRET}\n"),
            format!("4242 {SECRET}\n"),
            format!("password={SECRET}"),
        ] {
            std::fs::write(&path, &content).expect("pid file");
            let reading = read(&path);
            assert!(!matches!(reading, Reading::Pid { .. }), "{reading:?}");
            assert!(!format!("{reading:?}").contains(SECRET), "{reading:?}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused_and_not_kept() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, SECRET.repeat(40_000)).expect("pid file");
        let reading = read(&path);
        assert!(!matches!(reading, Reading::Pid { .. }), "{reading:?}");
        assert!(!format!("{reading:?}").contains("SECRET"), "{reading:?}");
    }
}
