//! The record a driver keeps of a foreign service in the runtime directory (`NAME.driver`):
//! which process is which generation, the restart counters and the last restart's report.
//! A foreign supervisor does not number its generations (start_server aside) nor count
//! restarts, so without the record `status` would start at generation 1 every time.
//!
//! The record is a small JSON document, written only by the holder of the service's
//! restart lock ([`RestartLock`](super::lock::RestartLock)), atomically (a new file, then
//! `rename`). It is read strictly: anything that is not a regular file of at most
//! [`MAX_SIZE`] bytes holding exactly this shape (or the one-line `GENERATION PID
//! START_TICKS` of older versions) counts as no record at all.
//!
//! The generation number counts only for the process it names (same pid, same start
//! time). A current process the record does not name is a generation started outside
//! zdctl (the supervisor was restarted by hand or by its init system): it is the next
//! number, so numbering never goes backwards.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::proc;
use crate::proto::{RestartCounters, RestartOutcome, RestartReport};

/// The largest record read: a report's reason is a sentence, so a few KiB is generous.
pub(super) const MAX_SIZE: u64 = 64 * 1024;

/// The version of the shape written.
const VERSION: u32 = 1;

/// What the driver knows of a foreign service across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Record {
    version: u32,
    /// The number of the current generation.
    pub(super) generation: u64,
    /// The process that is `generation` (the supervisor, or one of its children), when
    /// known, with its start time in clock ticks so that a recycled pid is not it.
    pub(super) pid: Option<i32>,
    pub(super) start_ticks: Option<u64>,
    /// Restarts made by zdctl (`crashes` stays 0: a driver does not watch between
    /// restarts).
    pub(super) restarts: RestartCounters,
    /// The restart that holds the lock; still set when the lock is free means its zdctl
    /// died before it reported.
    pub(super) in_progress: Option<u64>,
    pub(super) last_restart: Option<RestartReport>,
    /// The new generation of the restart in progress, once its first process was seen:
    /// what lets `status` (and so `top`) tell the new generation from the old one while
    /// both run. Written only while a restart holds the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pending: Option<Pending>,
}

/// A restart's new generation, as far as it has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pending {
    pub(super) generation: u64,
    /// Its first process, with its start time in clock ticks: a process of the service
    /// that started at or after it belongs to the new generation.
    pub(super) pid: i32,
    pub(super) start_ticks: u64,
    /// Whether it was promoted: the old generation is draining.
    pub(super) promoted: bool,
}

impl Pending {
    /// Whether process `pid` belongs to this new generation: it is its first process, or
    /// started no earlier.
    pub(super) fn owns(&self, pid: i32) -> bool {
        pid == self.pid || proc::start_time_ticks(pid).is_ok_and(|ticks| ticks >= self.start_ticks)
    }

    /// Whether its first process still runs (the same process: same start time).
    pub(super) fn is_alive(&self) -> bool {
        proc::is_alive(self.pid) && proc::start_time_ticks(self.pid).ok() == Some(self.start_ticks)
    }
}

impl Default for Record {
    fn default() -> Record {
        Record {
            version: VERSION,
            generation: 1,
            pid: None,
            start_ticks: None,
            restarts: RestartCounters::default(),
            in_progress: None,
            last_restart: None,
            pending: None,
        }
    }
}

impl Record {
    /// Whether the record names `pid` (the same process: same pid, same start time).
    pub(super) fn names(&self, pid: i32) -> bool {
        self.pid == Some(pid)
            && self.start_ticks.is_some()
            && proc::start_time_ticks(pid).ok() == self.start_ticks
    }

    /// The number of the generation whose processes are `pids`: the recorded one when the
    /// record names one of them (or names no process yet), else the next one (a generation
    /// started outside zdctl).
    pub(super) fn number(&self, pids: &[i32]) -> u64 {
        if self.pid.is_none() || pids.iter().any(|pid| self.names(*pid)) {
            self.generation
        } else {
            self.generation + 1
        }
    }

    /// Records that `pid` is generation `generation`; false when it already was.
    pub(super) fn set(&mut self, generation: u64, pid: i32) -> bool {
        let Ok(ticks) = proc::start_time_ticks(pid) else {
            return false;
        };
        let changed =
            (self.generation, self.pid, self.start_ticks) != (generation, Some(pid), Some(ticks));
        self.generation = generation;
        self.pid = Some(pid);
        self.start_ticks = Some(ticks);
        changed
    }

    /// A restart whose zdctl died before it reported (it left `in_progress` behind) counts
    /// as failed; true when there was one.
    pub(super) fn settle_abandoned(&mut self) -> bool {
        let Some(restart) = self.in_progress.take() else {
            return false;
        };
        self.pending = None;
        self.restarts.failed += 1;
        self.last_restart = Some(RestartReport {
            restart,
            outcome: RestartOutcome::Failed {
                reason: "the zdctl that ran it ended before it reported an outcome (was it \
                         killed?); check the service with 'zdctl status'"
                    .to_owned(),
            },
            old_generation: Some(self.generation),
            new_generation: None,
            new_pid: None,
            elapsed_ms: 0,
            output: Vec::new(),
            new_pids: Vec::new(),
            steps: None,
            bake_ms: None,
        });
        true
    }

    /// Counts a finished restart and keeps its report.
    pub(super) fn finished(&mut self, report: &RestartReport) {
        match report.outcome {
            RestartOutcome::Completed => self.restarts.completed += 1,
            RestartOutcome::RolledBack { .. } => self.restarts.rolled_back += 1,
            RestartOutcome::Failed { .. } => self.restarts.failed += 1,
        }
        if self.in_progress == Some(report.restart) {
            self.in_progress = None;
        }
        self.pending = None;
        self.last_restart = Some(report.clone());
    }
}

pub(super) fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.driver"))
}

/// The record of `name` in `dir`, or `None` when there is none or it is not one (a
/// symlink, not a regular file, too large, not this shape).
pub(super) fn read_in(dir: &Path, name: &str) -> Option<Record> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        // Not through a symlink, and no waiting on a FIFO planted in its place.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path_in(dir, name))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.size() > MAX_SIZE {
        return None;
    }
    let mut text = String::new();
    (&mut file)
        .take(MAX_SIZE + 1)
        .read_to_string(&mut text)
        .ok()?;
    if text.len() as u64 > MAX_SIZE {
        return None;
    }
    parse(&text)
}

/// A record's text: the JSON shape, or the one-line record of older versions.
pub(super) fn parse(text: &str) -> Option<Record> {
    if text.trim_start().starts_with('{') {
        let record: Record = serde_json::from_str(text).ok()?;
        return (record.version == VERSION).then_some(record);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let [generation, pid, ticks] = words.as_slice() else {
        return None;
    };
    Some(Record {
        generation: generation.parse().ok()?,
        pid: Some(pid.parse().ok()?),
        start_ticks: Some(ticks.parse().ok()?),
        ..Record::default()
    })
}

/// Replaces the record of `name` in `dir`: a new file (created, never opened through a
/// symlink), renamed over the old one, so that a reader sees the old record or the new one
/// and never half of one. The caller holds the lock and has checked `dir`.
pub(super) fn write_in(dir: &Path, name: &str, record: &Record) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.driver.{}", std::process::id()));
    // A leftover of a dead zdctl that had this pid: ours to remove, as we hold the lock.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let mut text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        text.push(b'\n');
        file.write_all(&text)?;
        std::fs::rename(&tmp, path_in(dir, name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> i32 {
        i32::try_from(std::process::id()).expect("pid")
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut record = Record::default();
        assert!(record.set(4, me()));
        record.restarts.requested = 3;
        record.in_progress = Some(3);
        record.finished(&RestartReport {
            restart: 3,
            outcome: RestartOutcome::RolledBack {
                reason: "the new process exited".to_owned(),
            },
            old_generation: Some(4),
            new_generation: Some(5),
            new_pid: Some(77),
            elapsed_ms: 12,
            output: Vec::new(),
            new_pids: Vec::new(),
            steps: None,
            bake_ms: None,
        });
        write_in(dir.path(), "api", &record).expect("written");
        let read = read_in(dir.path(), "api").expect("a record");
        assert_eq!(read, record);
        assert_eq!(read.in_progress, None);
        assert_eq!(read.restarts.rolled_back, 1);
        assert!(read.names(me()));
        assert_eq!(read.number(&[me()]), 4);
        // Only the record remains: the temporary file was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("api.driver")]);
    }

    #[test]
    fn an_old_one_line_record_is_read_and_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ticks = proc::start_time_ticks(me()).expect("ticks");
        std::fs::write(path_in(dir.path(), "api"), format!("7 {} {ticks}\n", me())).expect("write");
        let record = read_in(dir.path(), "api").expect("a record");
        assert_eq!(record.generation, 7);
        assert!(record.names(me()));
        assert_eq!(record.restarts, RestartCounters::default());
        write_in(dir.path(), "api", &record).expect("migrated");
        let text = std::fs::read_to_string(path_in(dir.path(), "api")).expect("read");
        assert!(text.starts_with('{'), "{text}");
        assert_eq!(read_in(dir.path(), "api"), Some(record));
    }

    #[test]
    fn a_process_the_record_does_not_name_is_the_next_generation() {
        let mut record = Record::default();
        // No process named yet: the recorded number is the current one.
        assert_eq!(record.number(&[me()]), 1);
        record.set(3, me());
        // A pid that is not ours (pid 1 started long before this test).
        assert_eq!(record.number(&[1]), 4);
        assert_eq!(record.number(&[1, me()]), 3);
    }

    #[test]
    fn a_restarts_new_generation_owns_the_processes_that_started_with_it_or_later() {
        let ticks = proc::start_time_ticks(me()).expect("our start time");
        let pending = Pending {
            generation: 5,
            pid: me(),
            start_ticks: ticks,
            promoted: false,
        };
        assert!(pending.is_alive());
        assert!(pending.owns(me()));
        // pid 1 started before us: it belongs to the old generation.
        assert!(!pending.owns(1));
        let gone = Pending {
            start_ticks: ticks + 1,
            ..pending.clone()
        };
        assert!(
            !gone.is_alive(),
            "the same pid with another start time is not it"
        );
    }

    #[test]
    fn the_pending_generation_is_written_only_while_set_and_cleared_with_the_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut record = Record {
            in_progress: Some(3),
            pending: Some(Pending {
                generation: 4,
                pid: me(),
                start_ticks: 1,
                promoted: true,
            }),
            ..Record::default()
        };
        write_in(dir.path(), "api", &record).expect("write");
        assert_eq!(read_in(dir.path(), "api"), Some(record.clone()));
        assert!(record.settle_abandoned());
        assert_eq!(record.pending, None);
        write_in(dir.path(), "api", &record).expect("write");
        let text = std::fs::read_to_string(path_in(dir.path(), "api")).expect("read");
        assert!(!text.contains("pending"), "{text}");
    }

    #[test]
    fn an_abandoned_restart_counts_as_failed() {
        let mut record = Record {
            in_progress: Some(2),
            ..Record::default()
        };
        assert!(record.settle_abandoned());
        assert_eq!(record.restarts.failed, 1);
        let last = record.last_restart.as_ref().expect("a report");
        assert_eq!(last.restart, 2);
        assert!(!last.outcome.is_success());
        assert!(!record.settle_abandoned());
    }

    #[test]
    fn corrupt_oversized_symlinked_or_special_records_are_no_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_in(dir.path(), "api");
        for text in [
            "garbage",
            "1 2",
            "1 2 3 4",
            "{\"version\":1}",
            "{\"version\":2,\"generation\":1,\"pid\":null,\"start_ticks\":null,\"restarts\":\
             {\"requested\":0,\"completed\":0,\"rolled_back\":0,\"failed\":0,\"crashes\":0},\
             \"in_progress\":null,\"last_restart\":null}",
        ] {
            std::fs::write(&path, text).expect("write");
            assert_eq!(read_in(dir.path(), "api"), None, "{text}");
        }
        // An unknown field is refused too.
        let mut value = serde_json::to_value(Record::default()).expect("json");
        value["extra"] = 1.into();
        std::fs::write(&path, value.to_string()).expect("write");
        assert_eq!(read_in(dir.path(), "api"), None);

        let mut big = serde_json::to_string(&Record::default()).expect("json");
        big.push_str(&" ".repeat(usize::try_from(MAX_SIZE).expect("size")));
        std::fs::write(&path, big).expect("write");
        assert_eq!(read_in(dir.path(), "api"), None);

        std::fs::remove_file(&path).expect("rm");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(
            &elsewhere,
            format!(
                "{}\n",
                serde_json::to_string(&Record::default()).expect("json")
            ),
        )
        .expect("write");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("symlink");
        assert_eq!(read_in(dir.path(), "api"), None);

        std::fs::remove_file(&path).expect("rm");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        assert_eq!(read_in(dir.path(), "api"), None);
    }

    #[test]
    fn a_write_replaces_a_symlink_without_following_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "theirs").expect("write");
        std::os::unix::fs::symlink(&elsewhere, path_in(dir.path(), "api")).expect("symlink");
        write_in(dir.path(), "api", &Record::default()).expect("written");
        assert_eq!(std::fs::read_to_string(&elsewhere).expect("read"), "theirs");
        assert_eq!(read_in(dir.path(), "api"), Some(Record::default()));
    }
}
