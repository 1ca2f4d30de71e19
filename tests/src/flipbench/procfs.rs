//! What the supervisor costs the machine, read from /proc: resident memory and wake-ups.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

/// A `Name:  value [kB]` field of a /proc status file.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn status_of(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read '{path}'"))
}

/// Resident memory of `pid` now and at its peak, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

pub fn memory(pid: i32) -> Result<Memory> {
    let status = status_of(&format!("/proc/{pid}/status"))?;
    Ok(Memory {
        rss_kib: field(&status, "VmRSS:").context("no VmRSS in the supervisor's status")?,
        peak_kib: field(&status, "VmHWM:").unwrap_or(0),
    })
}

/// Context switches of every thread of a process, by thread id. A voluntary switch is a
/// sleep that ended in a wake-up; an involuntary one is a preemption of a thread that was
/// awake anyway. Both cost a CPU a visit to the process, so both count.
#[derive(Debug, Clone, Default)]
pub struct ThreadSwitches {
    by_thread: BTreeMap<i32, u64>,
}

pub fn thread_switches(pid: i32) -> Result<ThreadSwitches> {
    let dir = format!("/proc/{pid}/task");
    let mut by_thread = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list '{dir}'"))? {
        let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread that exits between the listing and this read is simply not counted.
        let Ok(status) = std::fs::read_to_string(format!("{dir}/{tid}/status")) else {
            continue;
        };
        let switches = field(&status, "voluntary_ctxt_switches:").unwrap_or(0)
            + field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        by_thread.insert(tid, switches);
    }
    Ok(ThreadSwitches { by_thread })
}

impl ThreadSwitches {
    /// Wake-ups between `before` and `self`. Summing per-process totals would miss
    /// threads that come and go (tokio's blocking pool retires idle threads after a
    /// while), so each thread is compared with itself: a new thread counts all its
    /// switches, and a thread that vanished counts one (it had to wake up to exit).
    pub fn wakeups_since(&self, before: &ThreadSwitches) -> u64 {
        let mut total = 0;
        for (tid, now) in &self.by_thread {
            let then = before.by_thread.get(tid).copied().unwrap_or(0);
            total += now.saturating_sub(then);
        }
        let vanished = before
            .by_thread
            .keys()
            .filter(|tid| !self.by_thread.contains_key(tid))
            .count();
        total + vanished as u64
    }

    pub fn threads(&self) -> usize {
        self.by_thread.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switches(pairs: &[(i32, u64)]) -> ThreadSwitches {
        ThreadSwitches {
            by_thread: pairs.iter().copied().collect(),
        }
    }

    #[test]
    fn wakeups_count_new_and_vanished_threads() {
        let before = switches(&[(1, 10), (2, 5)]);
        let after = switches(&[(1, 12), (3, 4)]);
        // 2 on thread 1, 4 on the new thread 3, 1 for thread 2's exit.
        assert_eq!(after.wakeups_since(&before), 7);
        assert_eq!(before.wakeups_since(&before), 0);
    }

    #[test]
    fn status_fields_are_read_by_name() {
        let text = "Name:\tzdctl\nVmHWM:\t  4096 kB\nVmRSS:\t  3000 kB\n";
        assert_eq!(field(text, "VmRSS:"), Some(3000));
        assert_eq!(field(text, "VmHWM:"), Some(4096));
        assert_eq!(field(text, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_memory_and_threads() {
        let pid = std::process::id() as i32;
        assert!(memory(pid).expect("memory").rss_kib > 0);
        assert!(thread_switches(pid).expect("switches").threads() >= 1);
    }
}
