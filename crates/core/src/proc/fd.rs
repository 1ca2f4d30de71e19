//! Open file descriptors, from the links in `/proc/PID/fd/`.

use super::{ProcError, is_gone, pid_path};

/// What an open file descriptor refers to, as far as we care.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdTarget {
    /// A socket of any family, named by its inode (the number that
    /// `/proc/net/*` tables and epoll's fdinfo use too).
    Socket { inode: u64 },
    /// An epoll instance; its registrations are in `/proc/PID/fdinfo/FD`.
    EventPoll,
    /// A pipe or FIFO.
    Pipe { inode: u64 },
    /// Anything else, with the link text as the kernel wrote it.
    Other(String),
}

/// Reads one `/proc/PID/fd/N` link text (`socket:[123]`,
/// `anon_inode:[eventpoll]`, `pipe:[9]`, `/dev/null`, …).
pub fn parse_fd_link(link: &str) -> FdTarget {
    let inode = |prefix: &str| {
        link.strip_prefix(prefix)?
            .strip_suffix(']')?
            .parse::<u64>()
            .ok()
    };
    if let Some(inode) = inode("socket:[") {
        FdTarget::Socket { inode }
    } else if let Some(inode) = inode("pipe:[") {
        FdTarget::Pipe { inode }
    } else if link == "anon_inode:[eventpoll]" {
        FdTarget::EventPoll
    } else {
        FdTarget::Other(link.to_owned())
    }
}

/// Every open file descriptor of a process and what it refers to, sorted by
/// fd. A descriptor closed while we read is left out.
pub fn fds(pid: i32) -> Result<Vec<(i32, FdTarget)>, ProcError> {
    let dir = pid_path(pid, "fd");
    let entries =
        std::fs::read_dir(&dir).map_err(|err| ProcError::from_io(pid, "open files", err))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| ProcError::from_io(pid, "open files", err))?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        match std::fs::read_link(entry.path()) {
            Ok(link) => found.push((fd, parse_fd_link(&link.to_string_lossy()))),
            // The fd was closed between the listing and the readlink. (If
            // the whole process is gone, the next read will say so.)
            Err(err) if is_gone(&err) => continue,
            Err(err) => return Err(ProcError::from_io(pid, "open files", err)),
        }
    }
    found.sort_unstable_by_key(|(fd, _)| *fd);
    Ok(found)
}

/// The socket descriptors of a process as `(fd, socket inode)` pairs,
/// sorted by fd.
pub fn socket_fds(pid: i32) -> Result<Vec<(i32, u64)>, ProcError> {
    Ok(fds(pid)?
        .into_iter()
        .filter_map(|(fd, target)| match target {
            FdTarget::Socket { inode } => Some((fd, inode)),
            _ => None,
        })
        .collect())
}

/// The fd of process `pid` that is the read end of the pipe `inode`: both ends of a pipe
/// show the same inode, so the open mode in `/proc/PID/fdinfo/FD` tells them apart.
pub fn pipe_read_end(pid: i32, inode: u64) -> Option<i32> {
    fds(pid).ok()?.into_iter().find_map(|(fd, target)| {
        let FdTarget::Pipe { inode: found } = target else {
            return None;
        };
        let info = std::fs::read_to_string(pid_path(pid, &format!("fdinfo/{fd}"))).ok()?;
        (found == inode && parse_fdinfo_flags(&info)? & libc::O_ACCMODE == libc::O_RDONLY)
            .then_some(fd)
    })
}

/// The `flags:` line of an fdinfo file (octal), the fd's open flags.
fn parse_fdinfo_flags(info: &str) -> Option<i32> {
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pipes_read_end_is_told_from_its_write_end() {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        use std::os::fd::AsRawFd;
        let inode = nix::sys::stat::fstat(&read).expect("fstat").st_ino;
        let me = std::process::id() as i32;
        assert_eq!(pipe_read_end(me, inode), Some(read.as_raw_fd()));
        drop(read);
        assert_eq!(pipe_read_end(me, inode), None, "{write:?} is the write end");
    }

    use super::*;

    #[test]
    fn fd_links_are_classified_by_their_kernel_prefix() {
        assert_eq!(
            parse_fd_link("socket:[15719]"),
            FdTarget::Socket { inode: 15719 }
        );
        assert_eq!(parse_fd_link("pipe:[42]"), FdTarget::Pipe { inode: 42 });
        assert_eq!(parse_fd_link("anon_inode:[eventpoll]"), FdTarget::EventPoll);
        assert_eq!(
            parse_fd_link("/dev/null"),
            FdTarget::Other("/dev/null".to_owned())
        );
        assert_eq!(
            parse_fd_link("socket:[oops]"),
            FdTarget::Other("socket:[oops]".to_owned())
        );
    }

    #[test]
    fn own_sockets_are_listed_with_their_inodes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        let sockets = socket_fds(pid).expect("own fds are readable");
        assert!(sockets.iter().any(|(found, _)| *found == fd));
    }
}
