//! Generations of a process tree we did not start: the root's child
//! subtrees.
//!
//! Foreign supervisors (socketmaster, einhorn, start_server, a `--pid` we are
//! pointed at) start one child per generation and keep the old one until
//! the new one is up, so the root's children, ordered by start time, are the
//! generations. Their numbers are kept between snapshots (keyed by pid and
//! start time, which together survive pid reuse), so generation 3 stays
//! generation 3 after generation 2 exits.

use std::collections::HashMap;

use super::InspectError;
use super::collect::Root;
use super::fasthash::{IntMap, IntSet};
use super::stat::{ProcStat, read_stat};
use crate::proc;

/// Above this many threads, counting the processes of the machine is worth
/// it before reading a `children` file per thread.
const MANY_THREADS: u64 = 64;

/// Every process's children, from one scan of `/proc/*/stat`, built only
/// when some process has more threads than the machine has processes.
#[derive(Default)]
struct ChildIndex {
    /// The pids of `/proc`, listed at the first process with many threads.
    pids: Option<Vec<i32>>,
    parents: Option<IntMap<i32, Vec<i32>>>,
}

impl ChildIndex {
    /// The direct children of the process `stat` describes.
    ///
    /// The kernel lists children per thread (`/proc/PID/task/TID/children`),
    /// so a thread-per-connection server with 10k connections costs 10k
    /// file reads at every snapshot; when the process has more threads than
    /// the machine has processes, reading every process's parent is cheaper.
    fn children(&mut self, stat: &ProcStat) -> Vec<i32> {
        if let Some(parents) = self.parents.as_mut() {
            return parents.remove(&stat.pid).unwrap_or_default();
        }
        if stat.threads > MANY_THREADS {
            let pids = self.pids.get_or_insert_with(all_pids);
            if stat.threads > pids.len() as u64 {
                let mut parents: IntMap<i32, Vec<i32>> = IntMap::default();
                // Not the process itself: reading its stat sums the CPU
                // time of every thread, which is what we are avoiding.
                for &pid in pids.iter().filter(|&&pid| pid != stat.pid) {
                    // Processes that exit during the scan are left out.
                    if let Ok(other) = read_stat(pid) {
                        parents.entry(other.ppid).or_default().push(pid);
                    }
                }
                let kids = parents.remove(&stat.pid).unwrap_or_default();
                self.parents = Some(parents);
                return kids;
            }
        }
        proc::children(stat.pid)
    }
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live processes of the tree under `root` (itself first, parents
/// before children), read once each. Processes that exit while the tree is
/// walked are left out.
pub(crate) fn tree_stats(root: i32) -> Vec<ProcStat> {
    let mut index = ChildIndex::default();
    let mut seen: IntSet<i32> = IntSet::default();
    seen.insert(root);
    let mut queue = vec![root];
    let mut stats = Vec::new();
    let mut next = 0;
    while let Some(&pid) = queue.get(next) {
        next += 1;
        let Ok(stat) = read_stat(pid) else {
            continue;
        };
        if stat.zombie {
            continue;
        }
        // `seen` guards against a reused pid making the walk loop.
        queue.extend(
            index
                .children(&stat)
                .into_iter()
                .filter(|kid| seen.insert(*kid)),
        );
        stats.push(stat);
    }
    stats
}

/// One process of a table: what grouping needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableEntry {
    pub pid: i32,
    pub ppid: i32,
    pub start_ticks: u64,
}

impl From<&ProcStat> for TableEntry {
    fn from(stat: &ProcStat) -> Self {
        TableEntry {
            pid: stat.pid,
            ppid: stat.ppid,
            start_ticks: stat.start_ticks,
        }
    }
}

/// A generation found in a table: its main process and the start time that
/// identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Child {
    pub pid: i32,
    pub start_ticks: u64,
}

/// The root's direct children, oldest first (ties broken by pid). With no
/// child the root itself is the only generation: a plain server given with
/// `--pid` is one generation of one process.
pub(crate) fn generation_roots(root: TableEntry, table: &[TableEntry]) -> Vec<Child> {
    let mut children: Vec<Child> = table
        .iter()
        .filter(|entry| entry.ppid == root.pid && entry.pid != root.pid)
        .map(|entry| Child {
            pid: entry.pid,
            start_ticks: entry.start_ticks,
        })
        .collect();
    if children.is_empty() {
        return vec![Child {
            pid: root.pid,
            start_ticks: root.start_ticks,
        }];
    }
    children.sort_unstable_by_key(|child| (child.start_ticks, child.pid));
    children
}

/// Stable generation numbers for the trees of foreign supervisors.
#[derive(Debug, Default)]
pub(crate) struct GenerationNumbers {
    /// Per root (pid, start time): each child's number, and the next one.
    by_root: HashMap<(i32, u64), Numbering>,
}

#[derive(Debug, Default)]
struct Numbering {
    numbers: HashMap<(i32, u64), u64>,
    next: u64,
}

impl GenerationNumbers {
    /// Numbers the children in `children` (oldest first): ones seen before
    /// keep their number, new ones get the next. Children that are gone are
    /// forgotten.
    pub(crate) fn number(&mut self, root: TableEntry, children: &[Child]) -> Vec<u64> {
        let numbering = self
            .by_root
            .entry((root.pid, root.start_ticks))
            .or_insert_with(|| Numbering {
                numbers: HashMap::new(),
                next: 1,
            });
        numbering
            .numbers
            .retain(|key, _| children.iter().any(|c| (c.pid, c.start_ticks) == *key));
        children
            .iter()
            .map(|child| {
                *numbering
                    .numbers
                    .entry((child.pid, child.start_ticks))
                    .or_insert_with(|| {
                        numbering.next += 1;
                        numbering.next - 1
                    })
            })
            .collect()
    }

    /// Reads the root's children from `/proc` and numbers them. The newest
    /// generation is `active`, the others `old`.
    pub(crate) fn roots_of(&mut self, root_pid: i32) -> Result<Vec<Root>, InspectError> {
        let root = read_stat(root_pid).map_err(|err| InspectError::from_proc(root_pid, err))?;
        if root.zombie {
            return Err(InspectError::Gone { pid: root_pid });
        }
        // Only direct children matter; a child that exits while we read is
        // left out.
        let table: Vec<TableEntry> = ChildIndex::default()
            .children(&root)
            .into_iter()
            .filter_map(|pid| read_stat(pid).ok())
            .filter(|stat| !stat.zombie)
            .map(|stat| TableEntry::from(&stat))
            .collect();
        let root = TableEntry::from(&root);
        let children = generation_roots(root, &table);
        let numbers = self.number(root, &children);
        let newest = children.len().saturating_sub(1);
        Ok(children
            .iter()
            .zip(numbers)
            .enumerate()
            .map(|(index, (child, generation))| Root {
                generation,
                instance: None,
                pid: child.pid,
                state: if index == newest { "active" } else { "old" }.to_owned(),
                started_unix_ms: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child process parked in `sleep`, killed and reaped on drop.
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn own_stat() -> ProcStat {
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        read_stat(pid).expect("own stat")
    }

    #[test]
    fn a_tree_includes_a_child_with_either_way_of_finding_children() {
        let child = Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        );
        let kid = i32::try_from(child.0.id()).expect("pid fits in i32");
        let me = own_stat();
        let stats = tree_stats(me.pid);
        assert_eq!(stats.first().map(|s| s.pid), Some(me.pid), "root first");
        assert!(stats.iter().any(|s| s.pid == kid), "{stats:?}");
        // As if this process had more threads than the machine has
        // processes: its children come from the parent scan.
        let many = ProcStat {
            threads: u64::MAX,
            ..me
        };
        let mut index = ChildIndex::default();
        assert!(index.children(&many).contains(&kid));
        assert!(index.parents.is_some(), "the scan was used");
    }

    fn entry(pid: i32, ppid: i32, start_ticks: u64) -> TableEntry {
        TableEntry {
            pid,
            ppid,
            start_ticks,
        }
    }

    #[test]
    fn generations_are_the_roots_children_oldest_first() {
        let root = entry(100, 1, 10);
        let table = [
            entry(300, 100, 50), // gen started later, lower in the table
            entry(200, 100, 20),
            entry(201, 200, 21), // a worker of 200: not a generation
            entry(400, 1, 5),    // unrelated
        ];
        let roots = generation_roots(root, &table);
        assert_eq!(
            roots.iter().map(|c| c.pid).collect::<Vec<_>>(),
            vec![200, 300]
        );
    }

    #[test]
    fn a_root_without_children_is_its_own_generation() {
        let root = entry(100, 1, 10);
        let roots = generation_roots(root, &[entry(400, 1, 5)]);
        assert_eq!(
            roots,
            vec![Child {
                pid: 100,
                start_ticks: 10
            }]
        );
    }

    #[test]
    fn generation_numbers_survive_the_exit_of_an_older_generation() {
        let mut numbers = GenerationNumbers::default();
        let root = entry(100, 1, 10);
        let two = [
            Child {
                pid: 200,
                start_ticks: 20,
            },
            Child {
                pid: 300,
                start_ticks: 50,
            },
        ];
        assert_eq!(numbers.number(root, &two), vec![1, 2]);
        let flipped = [
            two[1],
            Child {
                pid: 400,
                start_ticks: 90,
            },
        ];
        assert_eq!(numbers.number(root, &flipped), vec![2, 3]);
    }

    #[test]
    fn a_reused_pid_is_a_new_generation() {
        let mut numbers = GenerationNumbers::default();
        let root = entry(100, 1, 10);
        let first = Child {
            pid: 200,
            start_ticks: 20,
        };
        let reused = Child {
            pid: 200,
            start_ticks: 70,
        };
        assert_eq!(numbers.number(root, &[first]), vec![1]);
        assert_eq!(numbers.number(root, &[reused]), vec![2]);
    }
}
