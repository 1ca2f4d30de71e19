//! What the `accepting` check saw, for the message of a readiness timeout: an
//! operator whose restart rolled back wants to know whether the app never got
//! to its accept loop, closed the listener, or waits somewhere else.

use crate::proc::{self, FdTarget, TaskSyscall};

/// One line describing the tree rooted at `root` as the check sees it now; `intercepting`
/// when the generation runs under `intercept_binds`.
pub fn describe(root: i32, listener_inodes: &[u64], intercepting: bool) -> String {
    let tree = proc::descendants(root);
    if tree.is_empty() {
        return format!("pid {root} is gone");
    }
    let mut holders = Vec::new();
    let mut threads = ThreadTally::default();
    let mut unreadable = None;
    for &pid in &tree {
        let fds = match proc::fds(pid) {
            Ok(fds) => fds,
            Err(err) => {
                unreadable.get_or_insert(err.to_string());
                continue;
            }
        };
        let listener_fds: Vec<i32> = fds
            .iter()
            .filter_map(|(fd, target)| match target {
                FdTarget::Socket { inode } if listener_inodes.contains(inode) => Some(*fd),
                _ => None,
            })
            .collect();
        if listener_fds.is_empty() {
            continue;
        }
        holders.push((pid, listener_fds));
        for tid in proc::tasks(pid).unwrap_or_default() {
            match proc::task_syscall(pid, tid) {
                Ok(syscall) => threads.count(&syscall),
                Err(err) => {
                    unreadable.get_or_insert(err.to_string());
                }
            }
        }
    }
    let processes = match tree.len() {
        1 => format!("1 process (pid {root})"),
        n => format!("{n} processes (pid {root} and its descendants)"),
    };
    let mut line = if holders.is_empty() {
        format!("{processes}, none of which holds a listener any more")
    } else {
        let held: Vec<String> = holders
            .iter()
            .map(|(pid, fds)| {
                let fds: Vec<String> = fds.iter().map(i32::to_string).collect();
                format!("pid {pid} fd {}", fds.join(","))
            })
            .collect();
        format!(
            "{processes}; listeners held by {}, whose {} waits on them (no accept, receive, poll or select on a listener, no epoll registration for input, no accepted connection)",
            held.join(", "),
            threads.summary(),
        )
    };
    for (pid, fd, address) in own_listeners(root, &tree, listener_inodes) {
        let what_to_do = if intercepting {
            "intercept_binds hands over only a bind of a listener's address and port (see \
             docs/config.md): make the program's own address or port option name a listener's"
        } else {
            "Make it take the listeners it is given (LISTEN_FDS, its own option for an \
             inherited fd: see docs/apps.md), or set 'intercept_binds: true' so that its bind \
             gets them"
        };
        line.push_str(&format!(
            "; pid {pid} listens on a socket of its own, {address} (fd {fd}), not on one \
             zdctl handed over: the program binds its port itself. {what_to_do}"
        ));
    }
    if let Some(err) = unreadable {
        line.push_str(&format!("; part of the tree could not be read: {err}"));
    }
    line
}

/// The listening TCP sockets and bound UDP sockets the processes of `tree` hold that are
/// none of `ours`: (pid, fd, address). The socket tables are those of `root`'s network
/// namespace.
fn own_listeners(root: i32, tree: &[i32], ours: &[u64]) -> Vec<(i32, i32, String)> {
    let mut theirs: Vec<(u64, String)> = proc::tcp_sockets(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state == proc::TcpState::Listen && s.inode != 0)
        .map(|s| (s.inode, s.local.to_string()))
        .collect();
    theirs.extend(
        proc::udp_sockets(root)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.inode != 0 && s.local.port() != 0 && s.remote.port() == 0)
            .map(|s| (s.inode, format!("udp://{}", s.local))),
    );
    theirs.retain(|(inode, _)| !ours.contains(inode));
    if theirs.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for &pid in tree {
        for (fd, inode) in proc::socket_fds(pid).unwrap_or_default() {
            if let Some((_, address)) = theirs.iter().find(|(i, _)| *i == inode) {
                found.push((pid, fd, address.clone()));
            }
        }
    }
    found
}

/// What the threads of the listener holders were doing.
#[derive(Default)]
struct ThreadTally {
    running: usize,
    /// Blocked in a call that waits on fds, but not on a listener.
    waiting_elsewhere: usize,
    /// Blocked in any other syscall (sleep, futex, read, …).
    other: usize,
}

impl ThreadTally {
    fn count(&mut self, syscall: &TaskSyscall) {
        match syscall {
            TaskSyscall::Running => self.running += 1,
            TaskSyscall::In { .. } if syscall.wait_call().is_some() => {
                self.waiting_elsewhere += 1;
            }
            _ => self.other += 1,
        }
    }

    fn summary(&self) -> String {
        let total = self.running + self.waiting_elsewhere + self.other;
        let mut parts = Vec::new();
        if self.running > 0 {
            parts.push(format!("{} running", self.running));
        }
        if self.waiting_elsewhere > 0 {
            parts.push(format!("{} waiting on other fds", self.waiting_elsewhere));
        }
        if self.other > 0 {
            parts.push(format!("{} in other syscalls", self.other));
        }
        let noun = if total == 1 { "thread" } else { "threads" };
        if parts.is_empty() {
            format!("{total} {noun}: none")
        } else {
            format!("{total} {noun} ({}): none", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_the_tree_opened_itself_is_named_with_what_to_do() {
        let ours = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let theirs = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = |l: &std::net::TcpListener| {
            use std::os::fd::AsRawFd;
            let fd = l.as_raw_fd();
            proc::socket_fds(std::process::id() as i32)
                .expect("fds")
                .into_iter()
                .find(|(f, _)| *f == fd)
                .map(|(_, inode)| inode)
                .expect("inode")
        };
        let me = std::process::id() as i32;
        let found = own_listeners(me, &[me], &[inode(&ours)]);
        let address = theirs.local_addr().expect("address").to_string();
        assert!(
            found.iter().any(|(pid, _, a)| *pid == me && *a == address),
            "{found:?}"
        );
        assert!(
            !found
                .iter()
                .any(|(_, _, a)| *a == ours.local_addr().expect("address").to_string()),
            "{found:?}"
        );
    }

    #[test]
    fn a_vanished_root_is_named() {
        assert_eq!(
            describe(i32::MAX, &[1], false),
            format!("pid {} is gone", i32::MAX)
        );
    }

    #[test]
    fn the_tally_names_what_the_threads_do() {
        let mut tally = ThreadTally::default();
        tally.count(&TaskSyscall::Running);
        tally.count(&TaskSyscall::NotInSyscall);
        assert_eq!(
            tally.summary(),
            "2 threads (1 running, 1 in other syscalls): none"
        );
    }
}
