//! What an epoll instance watches, from `/proc/PID/fdinfo/FD`.
//!
//! The kernel writes one line per registered descriptor:
//!
//! ```text
//! tfd:        4 events:       19 data:                4  pos:0 ino:3d67 sdev:9
//! ```
//!
//! `tfd` is the descriptor number in the process that registered it and
//! `events` the epoll event mask, both in the registering process's terms.
//! Since Linux 3.8 the line also carries `ino:` (the inode of the watched
//! file, in hex), which identifies a socket no matter which process or fd
//! number refers to it; older kernels stop after `data:`.

use std::path::Path;

use super::{ProcError, pid_path};

/// One descriptor registered in an epoll set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EpollTarget {
    /// The registered descriptor, as numbered by the registering process.
    pub fd: i32,
    /// The requested event mask (`EPOLLIN` = 0x1, …).
    pub events: u32,
    /// The inode of the watched file, when the kernel reports it.
    pub inode: Option<u64>,
}

/// Parses the fdinfo text of an epoll descriptor. Lines other than `tfd:`
/// lines are ignored. `path` only names the file in errors.
pub fn parse_epoll_fdinfo(text: &str, path: &Path) -> Result<Vec<EpollTarget>, ProcError> {
    let mut targets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("tfd:") {
            continue;
        }
        let bad = |what: &str| ProcError::parse(path, index + 1, what);
        let fd = words
            .next()
            .and_then(|word| word.parse::<i32>().ok())
            .ok_or_else(|| bad("tfd is not a number"))?;
        let mut events = None;
        let mut inode = None;
        while let Some(word) = words.next() {
            if word == "events:" {
                events = words
                    .next()
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok());
            } else if let Some(hex) = word.strip_prefix("ino:") {
                inode =
                    Some(u64::from_str_radix(hex, 16).map_err(|_| bad("ino is not hexadecimal"))?);
            }
        }
        let events = events.ok_or_else(|| bad("events missing or not hexadecimal"))?;
        targets.push(EpollTarget { fd, events, inode });
    }
    Ok(targets)
}

/// The descriptors registered in the epoll instance `epoll_fd` of `pid`.
pub fn epoll_targets(pid: i32, epoll_fd: i32) -> Result<Vec<EpollTarget>, ProcError> {
    let path = pid_path(pid, &format!("fdinfo/{epoll_fd}"));
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ProcError::from_io(pid, "epoll registrations", err))?;
    parse_epoll_fdinfo(&text, &path)
}
