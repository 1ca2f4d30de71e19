//! Reading the pid file strictly, and without trusting what sits at its path.
//!
//! A pid file is read often and may be caught half-written, so reading never fails loudly:
//! every outcome other than a clean positive integer is a [`Reading`] the caller may log and
//! then wait for the next change of the file.
//!
//! pidwatch often runs as root over a pid file in a directory the service can write, so the
//! path may hold anything. It is opened with `O_NOFOLLOW` (a symbolic link, say to
//! `/etc/shadow`, is refused, not read), `O_NONBLOCK` (opening a FIFO does not wait for a
//! writer), `O_NOCTTY` (a terminal does not become pidwatch's controlling terminal) and
//! `O_CLOEXEC` (std's default: the service never inherits it). `fstat` on the open file must
//! then show a regular file of at most [`MAX_LEN`] bytes, and at most one byte more is read.
//! Content that is not a pid is never kept, so it cannot reach a log: only a run of ASCII
//! digits is (at most [`MAX_DIGITS_SHOWN`]), which cannot drive the operator's terminal.

use std::fmt;
use std::fs::{self, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::unistd::Pid;

/// Longer than any decimal pid plus whitespace: a bigger file is not a pid file.
pub const MAX_LEN: u64 = 64;

/// The most digits of a number that is not a pid kept for the log, twice as many as any pid.
pub const MAX_DIGITS_SHOWN: usize = 20;

/// What the pid file holds right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// A positive pid, and the uid that owns the file.
    Pid { pid: Pid, owner: u32 },
    /// The file does not exist (yet, or any more).
    Missing,
    /// The file holds nothing but whitespace: typically truncated and not yet rewritten.
    Empty,
    /// Something other than a regular file is at the path; nothing was read from it.
    NotRegular(Kind),
    /// The file holds something that is not a pid.
    Invalid(Invalid),
    /// The file could not be opened or read for another reason (the system's error message).
    Unreadable(String),
}

/// What is at the pid file path instead of a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SymbolicLink,
    Directory,
    Fifo,
    Socket,
    CharacterDevice,
    BlockDevice,
}

/// Why the content of the pid file is not a pid. The content itself is not kept, except
/// digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Longer than [`MAX_LEN`] bytes: at least `len`.
    TooLong { len: u64 },
    /// Digits alone, yet not a pid: zero, a leading zero, or more than `i32::MAX`. At most
    /// [`MAX_DIGITS_SHOWN`] of them are kept, with `...` when there were more.
    Number(String),
    /// Anything else: a sign, letters, several words, bytes that are not text. Not kept: it
    /// may be another file's secret, or escape sequences for the operator's terminal.
    NotANumber,
}

/// Reads the pid file at `path` once, never blocking and never following a symbolic link.
pub fn read(path: &Path) -> Reading {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Reading::Missing,
        // O_NOFOLLOW fails with ELOOP on a symbolic link, and opening a socket with ENXIO:
        // say what is there rather than the error.
        Err(err) => {
            return match fs::symlink_metadata(path).map(|m| Kind::of(m.file_type())) {
                Ok(Some(kind)) => Reading::NotRegular(kind),
                _ => Reading::Unreadable(err.to_string()),
            };
        }
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(err) => return Reading::Unreadable(err.to_string()),
    };
    if let Some(kind) = Kind::of(meta.file_type()) {
        return Reading::NotRegular(kind);
    }
    if meta.len() > MAX_LEN {
        return Reading::Invalid(Invalid::TooLong { len: meta.len() });
    }
    // One byte more than a pid file may hold, in case the file grew since the fstat.
    let mut bytes = Vec::with_capacity(MAX_LEN as usize + 1);
    if let Err(err) = file.take(MAX_LEN + 1).read_to_end(&mut bytes) {
        return Reading::Unreadable(err.to_string());
    }
    match parse(&bytes) {
        Ok(Some(pid)) => Reading::Pid {
            pid,
            owner: meta.uid(),
        },
        Ok(None) => Reading::Empty,
        Err(invalid) => Reading::Invalid(invalid),
    }
}

/// Parses pid file content: surrounding whitespace (a trailing newline, as nginx writes) is
/// ignored, and what remains must be a decimal integer in `1..=i32::MAX` without sign or
/// leading zero. `Ok(None)` means only whitespace.
pub fn parse(bytes: &[u8]) -> Result<Option<Pid>, Invalid> {
    if bytes.len() as u64 > MAX_LEN {
        return Err(Invalid::TooLong {
            len: bytes.len() as u64,
        });
    }
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.iter().all(u8::is_ascii_digit) {
        return Err(Invalid::NotANumber);
    }
    // ASCII digits only from here: valid UTF-8, and harmless in a log.
    let digits = std::str::from_utf8(text).map_err(|_| Invalid::NotANumber)?;
    let shown = || match digits.get(..MAX_DIGITS_SHOWN) {
        Some(head) if head.len() < digits.len() => format!("{head}..."),
        _ => digits.to_owned(),
    };
    if digits.starts_with('0') {
        return Err(Invalid::Number(shown()));
    }
    digits
        .parse::<i32>()
        .map(|raw| Some(Pid::from_raw(raw)))
        .map_err(|_| Invalid::Number(shown()))
}

impl Reading {
    /// Why this reading names no pid, for the log; `None` when it names one, and when the
    /// file is missing or empty (a writer at work: nothing to complain about yet). Never
    /// contains the file's content, except digits.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Pid { .. } | Self::Missing | Self::Empty => None,
            Self::NotRegular(Kind::SymbolicLink) => Some(
                "it is a symbolic link, which pidwatch does not follow: give --pidfile the \
                 file itself"
                    .to_owned(),
            ),
            Self::NotRegular(kind) => Some(format!("it is {kind}, not a regular file")),
            Self::Invalid(invalid) => Some(invalid.to_string()),
            Self::Unreadable(err) => Some(format!("cannot read it: {err}")),
        }
    }
}

impl Kind {
    /// `None` for a regular file.
    fn of(file_type: FileType) -> Option<Self> {
        let kind = if file_type.is_file() {
            return None;
        } else if file_type.is_symlink() {
            Self::SymbolicLink
        } else if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_socket() {
            Self::Socket
        } else if file_type.is_char_device() {
            Self::CharacterDevice
        } else {
            // The only type left on Linux.
            Self::BlockDevice
        };
        Some(kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SymbolicLink => "a symbolic link",
            Self::Directory => "a directory",
            Self::Fifo => "a FIFO",
            Self::Socket => "a socket",
            Self::CharacterDevice => "a character device",
            Self::BlockDevice => "a block device",
        })
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len } => write!(
                f,
                "it holds at least {len} bytes, more than a pid file ever does"
            ),
            Self::Number(digits) => write!(f, "'{digits}' is not a valid pid"),
            Self::NotANumber => {
                f.write_str("it does not hold a pid, and what it holds is not shown")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(raw: i32) -> Result<Option<Pid>, Invalid> {
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
    fn digits_that_are_not_a_pid_are_refused_and_kept_for_the_log() {
        for (bad, kept) in [
            (&b"0\n"[..], "0"),
            (b"012", "012"),
            (b"99999999999", "99999999999"),
            (b"2147483648", "2147483648"),
        ] {
            assert_eq!(parse(bad), Err(Invalid::Number(kept.to_owned())));
        }
    }

    #[test]
    fn a_long_number_is_kept_truncated() {
        let digits = "9".repeat(60);
        let kept = format!("{}...", "9".repeat(20));
        assert_eq!(parse(digits.as_bytes()), Err(Invalid::Number(kept)));
    }

    #[test]
    fn anything_but_digits_is_not_a_number_and_not_kept() {
        for bad in [
            &b"-1"[..],
            b"+5",
            b"12 34",
            b"12abc",
            b"pid=12",
            b"\xff\xfe",
            b"\x1b]0;title\x07",
            "\u{661}\u{662}".as_bytes(), // Arabic-Indic digits are not ASCII digits
        ] {
            assert_eq!(
                parse(bad),
                Err(Invalid::NotANumber),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oversized_content_is_too_long() {
        let big = vec![b' '; 100];
        assert_eq!(parse(&big), Err(Invalid::TooLong { len: 100 }));
    }

    #[test]
    fn problems_name_the_kind_of_file_and_never_its_content() {
        let problem = |reading: Reading| reading.problem().expect("a problem");
        assert_eq!(
            problem(Reading::NotRegular(Kind::Fifo)),
            "it is a FIFO, not a regular file"
        );
        assert!(problem(Reading::NotRegular(Kind::SymbolicLink)).contains("symbolic link"));
        assert_eq!(
            problem(Reading::Invalid(Invalid::NotANumber)),
            "it does not hold a pid, and what it holds is not shown"
        );
        assert_eq!(
            problem(Reading::Invalid(Invalid::Number("0".into()))),
            "'0' is not a valid pid"
        );
        assert_eq!(Reading::Missing.problem(), None);
        assert_eq!(Reading::Empty.problem(), None);
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
        assert_eq!(read(&path), Reading::NotRegular(Kind::SymbolicLink));
    }

    #[test]
    fn a_dangling_symbolic_link_is_refused_not_missing() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &path).expect("symlink");
        assert_eq!(read(&path), Reading::NotRegular(Kind::SymbolicLink));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert_eq!(read_within_deadline(&path), Reading::NotRegular(Kind::Fifo));
    }

    #[test]
    fn a_directory_a_socket_and_a_device_are_refused() {
        let dir = fixtures();
        let directory = dir.path().join("dir.pid");
        std::fs::create_dir(&directory).expect("mkdir");
        let socket = dir.path().join("socket.pid");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        for (path, kind) in [
            (directory.as_path(), Kind::Directory),
            (socket.as_path(), Kind::Socket),
            (Path::new("/dev/null"), Kind::CharacterDevice),
        ] {
            let reading = read_within_deadline(path);
            assert_eq!(reading, Reading::NotRegular(kind), "{}", path.display());
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
            assert_eq!(reading, Reading::Invalid(Invalid::NotANumber));
            let problem = reading.problem().expect("a problem");
            assert!(!problem.contains(SECRET), "{problem}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused_and_not_kept() {
        let dir = fixtures();
        let path = dir.path().join("app.pid");
        let content = SECRET.repeat(40_000);
        std::fs::write(&path, &content).expect("pid file");
        let len = content.len() as u64;
        let reading = read(&path);
        assert_eq!(reading, Reading::Invalid(Invalid::TooLong { len }));
        let problem = reading.problem().expect("a problem");
        assert!(!problem.contains(SECRET), "{problem}");
    }
}
