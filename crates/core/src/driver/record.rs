//! Generation numbers for foreign services. A foreign supervisor does not number its
//! generations (start_server aside), so the driver keeps a one-line record in the runtime
//! directory after each completed restart: `GENERATION PID START_TICKS`. The record counts
//! only for the process it names (same pid, same start time).

use std::path::PathBuf;

use crate::{paths, proc};

fn path(name: &str) -> PathBuf {
    paths::runtime_dir().join(format!("{name}.driver"))
}

/// The generation number of `pid`, when the record names it.
pub(super) fn generation_of(name: &str, pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(path(name)).ok()?;
    let mut words = text.split_whitespace();
    let generation: u64 = words.next()?.parse().ok()?;
    let recorded: i32 = words.next()?.parse().ok()?;
    let ticks: u64 = words.next()?.parse().ok()?;
    (recorded == pid && proc::start_time_ticks(pid).ok() == Some(ticks)).then_some(generation)
}

/// Records that `pid` is generation `generation`. Best effort: a runtime directory that
/// cannot be written only loses the numbering.
pub(super) fn write(name: &str, generation: u64, pid: i32) {
    let Ok(ticks) = proc::start_time_ticks(pid) else {
        return;
    };
    let dir = paths::runtime_dir();
    // Written by path: only in a directory nobody else can swap entries in.
    if let Err(error) = paths::ensure_runtime_dir(&dir) {
        tracing::warn!(%error, "cannot record the generation");
        return;
    }
    let tmp = dir.join(format!(".{name}.driver.{}", std::process::id()));
    let written = std::fs::write(&tmp, format!("{generation} {pid} {ticks}\n"))
        .and_then(|()| std::fs::rename(&tmp, path(name)));
    if let Err(error) = written {
        tracing::debug!(%error, "cannot record the generation");
        let _ = std::fs::remove_file(&tmp);
    }
}
