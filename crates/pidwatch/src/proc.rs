//! What /proc says about a process: its parent, its owner, our children.

use std::io;

use nix::unistd::Pid;

/// Reads the parent pid from `/proc/PID/stat`.
pub fn parent_of(pid: Pid) -> io::Result<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_ppid(&stat)
        .map(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc stat"))
}

/// The command name may contain spaces and parentheses, so fields are counted after the last
/// `)`: state, then ppid.
fn parse_stat_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is a strict descendant of `ancestor`, walking parents up to init.
///
/// The answer can only be trusted while the caller holds a pidfd for `pid` and checks after
/// the walk that the process is still alive: a pid cannot be reused while its process lives.
pub fn is_descendant(pid: Pid, ancestor: Pid) -> bool {
    let mut current = pid;
    // Bounded by the depth of the process tree; the cap only guards against a corrupt loop.
    for _ in 0..4096 {
        match parent_of(current) {
            Ok(parent) if parent == ancestor => return true,
            Ok(parent) if parent.as_raw() <= 1 || parent == current => return false,
            Ok(parent) => current = parent,
            Err(_) => return false,
        }
    }
    false
}

/// The real uid of a process, from the `Uid:` line of `/proc/PID/status`.
pub fn real_uid(pid: Pid) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_uid(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid line in /proc status"))
}

fn parse_status_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// pidwatch's direct children, from `/proc/self/task/TID/children` (pidwatch has one thread).
pub fn own_children() -> Vec<Pid> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/self/task/{me}/children"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|t| t.parse().ok())
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_found_after_a_command_name_with_parentheses() {
        let stat = "4242 (weird ) name) S 17 4242 4242 0 -1 4194560 0 0";
        assert_eq!(parse_stat_ppid(stat), Some(17));
    }

    #[test]
    fn real_uid_is_the_first_uid_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_uid(status), Some(1000));
    }

    #[test]
    fn our_own_child_is_our_descendant_and_we_are_not_our_own() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let me = Pid::this();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(is_descendant(pid, me));
        assert!(!is_descendant(me, me));
        assert!(!is_descendant(Pid::from_raw(1), me));
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
    }
}
