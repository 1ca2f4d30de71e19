//! Which process holds which socket: the socket inodes of each process's fd
//! table, cached between snapshots.
//!
//! The only place that says who holds a socket is `/proc/PID/fd`, one
//! `readlink` per descriptor: about a microsecond each, so 100 ms a second
//! for a server with 100k connections if re-read at every refresh. A table
//! is re-read only when one of two cheap signals says it may have changed:
//!
//! 1. **The fd count.** `stat("/proc/PID/fd")` reports the number of open
//!    descriptors as the directory's size (Linux 6.2 and later; it costs a
//!    popcount of the fd bitmap, not a directory walk). A different count
//!    than at the last read means fds were opened or closed. (The
//!    directory's mtime would be cheaper still, but procfs does not update
//!    it when descriptors change.) On older kernels the size is 0 and only
//!    the second signal works.
//! 2. **An inode nobody is known to hold.** An accept and a close between
//!    two snapshots leave the count unchanged, but the new connection
//!    arrives from `sock_diag` with an inode no cached table knows. The
//!    caller then re-reads every table of the service not read in this
//!    snapshot. Inodes still unclaimed after that (a socket passed to a
//!    process outside the tree) are remembered, so they do not trigger a
//!    re-read at every refresh.
//!
//! Tables are keyed by pid and start time, so a reused pid is a new table.
//! Stale inodes of a socket closed since the last read are harmless: inodes
//! are not reused while the machine has not wrapped a 32-bit counter, and a
//! closed socket is not in the kernel's tables to be matched.

use super::fasthash::{IntMap, IntSet};
use super::stat::read_stat;
use crate::proc::{self, FdTarget, pid_path};

/// The pids holding one socket; almost always one, so no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holders {
    One(i32),
    Many(Vec<i32>),
}

impl Holders {
    pub(crate) fn pids(&self) -> &[i32] {
        match self {
            Holders::One(pid) => std::slice::from_ref(pid),
            Holders::Many(pids) => pids,
        }
    }
}

#[derive(Debug)]
struct FdTable {
    start_ticks: u64,
    /// The count signal when the table was read (0 when unavailable).
    signalled_count: u64,
    /// Descriptors found at the read.
    fd_count: usize,
    sockets: IntSet<u64>,
    /// The snapshot that last read this table.
    read_in: u64,
    /// Which read this was, counting every read of every table: a table
    /// with the same serial as before has not been re-read since.
    serial: u64,
}

/// Socket inodes per process, with an index from inode to holders.
#[derive(Debug, Default)]
pub(crate) struct OwnerCache {
    tables: IntMap<i32, FdTable>,
    holders: IntMap<u64, Holders>,
    /// Counts snapshots, so a table knows whether it was read in this one.
    snapshot: u64,
    /// Counts table reads.
    reads: u64,
}

/// `stat("/proc/PID/fd").st_size`: the number of open fds on Linux 6.2+,
/// 0 before (or when the process is gone).
fn fd_count_signal(pid: i32) -> u64 {
    std::fs::metadata(pid_path(pid, "fd")).map_or(0, |meta| meta.len())
}

impl OwnerCache {
    /// Starts a new snapshot.
    pub(crate) fn begin(&mut self) {
        self.snapshot += 1;
    }

    /// Makes sure the tables of `processes` (pid, start time) are current by
    /// the fd-count signal, and forgets the tables of processes that exited
    /// (one inspector may watch several services, so a table that is merely
    /// not listed this time is kept).
    pub(crate) fn refresh(&mut self, processes: &[(i32, u64)]) {
        let listed: IntMap<i32, u64> = processes.iter().copied().collect();
        let gone: Vec<i32> = self
            .tables
            .iter()
            .filter(|(pid, table)| match listed.get(pid) {
                Some(start) => *start != table.start_ticks,
                None => read_stat(**pid).map_or(true, |stat| {
                    stat.zombie || stat.start_ticks != table.start_ticks
                }),
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            self.drop_table(pid);
        }
        for &(pid, start_ticks) in processes {
            let signal = fd_count_signal(pid);
            let current = self.tables.get(&pid).is_some_and(|table| {
                table.start_ticks == start_ticks && (signal == 0 || table.signalled_count == signal)
            });
            if !current {
                self.read(pid, start_ticks, signal);
            }
        }
    }

    /// Re-reads every table of `processes` not read in this snapshot.
    /// Returns whether any was.
    pub(crate) fn reread_stale(&mut self, processes: &[(i32, u64)]) -> bool {
        let mut any = false;
        for &(pid, start_ticks) in processes {
            if self
                .tables
                .get(&pid)
                .is_none_or(|table| table.read_in != self.snapshot)
            {
                self.read(pid, start_ticks, fd_count_signal(pid));
                any = true;
            }
        }
        any
    }

    fn read(&mut self, pid: i32, start_ticks: u64, signalled_count: u64) {
        self.drop_table(pid);
        // A process that exits while we read has no fds to report; the
        // caller notices it is gone from its stat.
        let fds = proc::fds(pid).unwrap_or_default();
        let sockets: IntSet<u64> = fds
            .iter()
            .filter_map(|(_, target)| match target {
                FdTarget::Socket { inode } => Some(*inode),
                _ => None,
            })
            .collect();
        for &inode in &sockets {
            match self.holders.entry(inode) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Holders::One(pid));
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    let holders = slot.get_mut();
                    match holders {
                        Holders::One(other) => *holders = Holders::Many(vec![*other, pid]),
                        Holders::Many(pids) => pids.push(pid),
                    }
                }
            }
        }
        self.reads += 1;
        self.tables.insert(
            pid,
            FdTable {
                start_ticks,
                signalled_count,
                fd_count: fds.len(),
                sockets,
                read_in: self.snapshot,
                serial: self.reads,
            },
        );
    }

    fn drop_table(&mut self, pid: i32) {
        let Some(table) = self.tables.remove(&pid) else {
            return;
        };
        for inode in table.sockets {
            let std::collections::hash_map::Entry::Occupied(mut slot) = self.holders.entry(inode)
            else {
                continue;
            };
            match slot.get_mut() {
                Holders::One(_) => {
                    slot.remove();
                }
                Holders::Many(pids) => {
                    pids.retain(|holder| *holder != pid);
                    if let [only] = pids[..] {
                        *slot.get_mut() = Holders::One(only);
                    }
                }
            }
        }
    }

    /// Each of `processes` (pid, start time) with the read of its table
    /// that is current (0 when it has none): equal fingerprints mean the
    /// same processes, none of whose tables was read again in between.
    pub(crate) fn fingerprint(&self, processes: &[(i32, u64)]) -> Vec<(i32, u64, u64)> {
        processes
            .iter()
            .map(|&(pid, start)| {
                let serial = self.tables.get(&pid).map_or(0, |table| table.serial);
                (pid, start, serial)
            })
            .collect()
    }

    /// The pids known to hold socket `inode`.
    pub(crate) fn holders(&self, inode: u64) -> Option<&Holders> {
        self.holders.get(&inode)
    }

    /// Whether `pid` holds socket `inode`.
    pub(crate) fn holds(&self, pid: i32, inode: u64) -> bool {
        self.tables
            .get(&pid)
            .is_some_and(|table| table.sockets.contains(&inode))
    }

    /// How many fds `pid` has open, as of its last read.
    pub(crate) fn fd_count(&self, pid: i32) -> usize {
        self.tables.get(&pid).map_or(0, |table| {
            usize::try_from(table.signalled_count)
                .ok()
                .filter(|count| *count > 0)
                .unwrap_or(table.fd_count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> (i32, u64) {
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        let start = super::super::stat::read_stat(pid)
            .expect("own stat")
            .start_ticks;
        (pid, start)
    }

    #[test]
    fn a_socket_opened_since_the_last_read_is_found_after_a_refresh() {
        let mut cache = OwnerCache::default();
        let me = own();
        cache.begin();
        cache.refresh(&[me]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = socket_inode(&listener);
        cache.begin();
        cache.refresh(&[me]);
        if !cache.holds(me.0, inode) {
            // Before Linux 6.2 the count signal is missing (or other test
            // threads changed the count back): the unknown-inode signal
            // covers it.
            assert!(cache.reread_stale(&[me]));
        }
        assert!(cache.holds(me.0, inode));
        assert_eq!(cache.holders(inode), Some(&Holders::One(me.0)));
    }

    #[test]
    fn a_reused_pid_replaces_the_old_table_in_the_index() {
        let mut cache = OwnerCache::default();
        let me = own();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = socket_inode(&listener);
        cache.begin();
        cache.refresh(&[me]);
        assert!(cache.holders(inode).is_some());
        // Pretend the table was read from an earlier process with our pid.
        if let Some(table) = cache.tables.get_mut(&me.0) {
            table.start_ticks += 1;
        }
        cache.begin();
        cache.refresh(&[me]);
        assert_eq!(cache.holders(inode), Some(&Holders::One(me.0)));
        assert_eq!(cache.tables[&me.0].start_ticks, me.1);
    }

    #[test]
    fn tables_of_unlisted_live_processes_are_kept() {
        let mut cache = OwnerCache::default();
        let me = own();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = socket_inode(&listener);
        cache.begin();
        cache.refresh(&[me]);
        cache.begin();
        cache.refresh(&[]);
        assert!(cache.holders(inode).is_some(), "another service's table");
    }

    fn socket_inode(socket: &impl std::os::fd::AsRawFd) -> u64 {
        let fd = socket.as_raw_fd();
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        proc::socket_fds(pid)
            .expect("own fds")
            .into_iter()
            .find(|(found, _)| *found == fd)
            .map(|(_, inode)| inode)
            .expect("socket listed")
    }
}
