//! The few fields of `/proc/PID/stat` a snapshot needs, read with one
//! syscall per process and a parser that allocates nothing.
//!
//! The `procfs` crate parses all 52 fields into a struct; for a tree of a few
//! hundred workers refreshed every second that is measurable, and we need
//! six fields.

use std::path::Path;

use crate::proc::{ProcError, pid_path};

/// What one process contributes to its generation's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Clock ticks after boot when the process started: with the pid it
    /// names one process even across pid reuse.
    pub start_ticks: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
    pub threads: u64,
    pub zombie: bool,
}

/// Parses one `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(pid: i32, text: &str, path: &Path) -> Result<ProcStat, ProcError> {
    let bad = |what: &str| ProcError::parse(path, 1, what);
    let rest = text
        .rfind(')')
        .and_then(|end| text.get(end + 1..))
        .ok_or_else(|| bad("no ')' after the command name"))?;
    // After the name: state is field 3, so field N is at index N - 3.
    let mut fields = rest.split_ascii_whitespace();
    let mut field = |index_after_previous: usize| fields.nth(index_after_previous);
    let state = field(0).ok_or_else(|| bad("no state"))?;
    let number = |value: Option<&str>, what: &str| -> Result<u64, ProcError> {
        value.and_then(|v| v.parse().ok()).ok_or_else(|| bad(what))
    };
    let ppid = field(0)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("bad ppid"))?;
    let utime = number(field(9), "bad utime")?; // field 14
    let stime = number(field(0), "bad stime")?; // field 15
    let threads = number(field(4), "bad num_threads")?; // field 20
    let start_ticks = number(field(1), "bad starttime")?; // field 22
    let _vsize = field(0); // field 23
    let rss_pages = number(field(0), "bad rss")?; // field 24
    Ok(ProcStat {
        pid,
        ppid,
        cpu_ticks: utime + stime,
        start_ticks,
        rss_pages,
        threads,
        zombie: state == "Z" || state == "X",
    })
}

/// Reads and parses `/proc/PID/stat`.
pub(crate) fn read_stat(pid: i32) -> Result<ProcStat, ProcError> {
    let path = pid_path(pid, "stat");
    let text =
        std::fs::read_to_string(&path).map_err(|err| ProcError::from_io(pid, "stat", err))?;
    parse_stat(pid, &text, &path)
}

/// Clock ticks per second (`USER_HZ`), for turning tick deltas into time.
pub(crate) fn ticks_per_second() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks.unsigned_abs(),
        // Every Linux architecture has used 100 for decades.
        _ => 100,
    }
}

/// The page size, for turning RSS pages into bytes.
pub(crate) fn page_size() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size.unsigned_abs(),
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "4242 (my (odd) name) S 4200 4242 4242 0 -1 4194560 1033 0 0 0 \
                        17 5 0 0 20 0 3 0 123456 25214976 1398 18446744073709551615 1 1 0 0 0 0 0 \
                        4096 17475 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = parse_stat(4242, LINE, Path::new("stat")).expect("parses");
        assert_eq!(
            stat,
            ProcStat {
                pid: 4242,
                ppid: 4200,
                cpu_ticks: 22,
                start_ticks: 123456,
                rss_pages: 1398,
                threads: 3,
                zombie: false,
            }
        );
    }

    #[test]
    fn a_zombie_is_recognised_by_its_state_letter() {
        let line = LINE.replace(") S ", ") Z ");
        let stat = parse_stat(4242, &line, Path::new("stat")).expect("parses");
        assert!(stat.zombie);
    }

    #[test]
    fn a_truncated_stat_line_is_a_parse_error() {
        let err = parse_stat(1, "1 (init) S 0 1 1", Path::new("stat")).expect_err("too short");
        assert!(matches!(err, ProcError::Parse { .. }), "{err:?}");
    }

    #[test]
    fn own_stat_is_readable() {
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        let stat = read_stat(pid).expect("own stat");
        assert_eq!(stat.pid, pid);
        assert!(stat.rss_pages > 0);
    }
}
