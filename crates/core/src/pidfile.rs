//! Pidfiles, written atomically and read strictly (DESIGN §8).
//!
//! A reader never sees a half-written pidfile because the new content is written to a fresh
//! temporary file in the same directory and renamed over the old one. The temporary file is
//! created with `O_EXCL | O_NOFOLLOW`, so a symlink planted in the directory cannot redirect
//! the write.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PidfileError {
    #[error("cannot {about} pidfile '{}'", path.display())]
    Io {
        about: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pidfile '{}' does not hold a positive integer (found {found:?})", path.display())]
    Invalid { path: PathBuf, found: String },
    #[error("pidfile '{}' names pid {pid}, which is not running", path.display())]
    Stale { path: PathBuf, pid: i32 },
}

/// Writes `pid` followed by a newline to `path`, atomically.
pub fn write(path: &Path, pid: i32) -> Result<(), PidfileError> {
    let io = |about| {
        move |source| PidfileError::Io {
            about,
            path: path.to_path_buf(),
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(".{file_name}.{}.{attempt}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                attempt += 1;
            }
            Err(e) => return Err(io("create a temporary file for")(e)),
        }
    };
    // No fsync: the rename alone is what makes readers see the old content or the new, and
    // a pidfile has nothing to say after a crash of the machine, while an fsync on a busy
    // disk would delay every promotion by milliseconds.
    let result = file
        .write_all(format!("{pid}\n").as_bytes())
        .map_err(io("write"))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io("rename into place")));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Parses pidfile content: surrounding whitespace is trimmed; the rest must be a positive
/// integer that fits a pid.
pub fn parse(content: &str) -> Option<i32> {
    let t = content.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i32>().ok().filter(|&p| p > 0)
}

/// The most of a pidfile that is read: a pid and some whitespace. A longer file is not a
/// pidfile, and reading it whole would cost what its writer chose.
const MAX_PIDFILE: u64 = 64;

/// The text of the pidfile at `path`, read without blocking and within [`MAX_PIDFILE`]
/// bytes: a FIFO or a device planted there is refused instead of waited on (drivers poll
/// pidfiles in their loops), a huge file is cut.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PIDFILE).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The pid `path` names, if it holds one (not checked to be running).
pub fn named(path: &Path) -> Option<i32> {
    read_text(path).ok().as_deref().and_then(parse)
}

/// Reads `path` strictly: a positive integer naming a live process.
pub fn read(path: &Path) -> Result<i32, PidfileError> {
    let content = read_text(path).map_err(|source| PidfileError::Io {
        about: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let pid = parse(&content).ok_or_else(|| PidfileError::Invalid {
        path: path.to_path_buf(),
        found: content.chars().take(40).collect(),
    })?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(PidfileError::Stale {
            path: path.to_path_buf(),
            pid,
        });
    }
    Ok(pid)
}

/// Removes `path` if it still names `pid` (another process may have taken it over).
pub fn remove_if(path: &Path, pid: i32) {
    if named(path) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_or_a_huge_file_is_refused_without_waiting_or_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.pid");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_text(&fifo).is_err());
        assert_eq!(named(&fifo), None);
        let huge = dir.path().join("huge.pid");
        std::fs::write(
            &huge,
            format!("{}{}", std::process::id(), " ".repeat(1 << 20)),
        )
        .unwrap();
        assert_eq!(read_text(&huge).unwrap().len(), MAX_PIDFILE as usize);
        assert_eq!(named(&huge), Some(std::process::id() as i32));
    }

    #[test]
    fn parse_accepts_trimmed_positive_integers_only() {
        assert_eq!(parse("123\n"), Some(123));
        assert_eq!(parse("  42  "), Some(42));
        for bad in ["", "\n", "0", "-5", "12a", "1 2", "99999999999"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn write_replaces_atomically_and_read_checks_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.pid");
        write(&path, std::process::id() as i32).unwrap();
        assert_eq!(read(&path).unwrap(), std::process::id() as i32);
        write(&path, i32::MAX - 1).unwrap();
        assert!(matches!(read(&path), Err(PidfileError::Stale { .. })));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn write_does_not_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("svc.pid");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write(&path, 77).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "77\n");
    }
}
