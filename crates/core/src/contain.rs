//! Containment: no process of a generation outlives it (DESIGN §10, security model).
//!
//! A generation is its main process and everything that process ever starts, including
//! children that call `setsid` or leave its process group. Two mechanisms find them:
//!
//! - **A cgroup per generation** where cgroup v2 is writable (root, or a delegated subtree
//!   under systemd's `Delegate=yes`). The supervisor moves the child into it right after the
//!   clone ([`GenerationCgroup::adopt`]), and nothing started from there on can leave; when
//!   the main process is gone, `cgroup.kill` ends the rest at once.
//! - **Otherwise the supervisor is a child subreaper** (`PR_SET_CHILD_SUBREAPER`): what a
//!   generation leaves behind is re-parented to the supervisor instead of init. A leftover
//!   still in the group of its generation is killed with the group; one that left it
//!   (`setsid`) shows up as a child of the supervisor outside every live generation's group,
//!   and is killed then. `ZDCTL_CGROUPS=off` chooses this mode deliberately.
//!
//! Either way the supervisor reaps what it inherits ([`reap_orphans`]), without ever waiting
//! on `-1`: processes it started itself (generations, `exec:` readiness checks) are listed in
//! [`OwnChildren`] and reaped by their own waiters.

use std::collections::HashSet;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// The cgroup directory of one supervisor, under the cgroup it was started in:
/// `zdctl.SERVICE.PID` (`zdctl.SERVICE.PID-NS` outside the initial pid namespace, see
/// [`supervisor_tag`]), with a `gen-N` child per generation. Removed on drop when empty.
#[derive(Debug)]
pub struct ServiceCgroups {
    dir: PathBuf,
    /// The same directory as `/proc/PID/cgroup` names it.
    rel: String,
}

impl ServiceCgroups {
    /// Creates the supervisor's cgroup directory, or says why generations will be found by
    /// process group and subreaping instead (`None`).
    pub fn create(service: &str) -> Option<ServiceCgroups> {
        if std::env::var("ZDCTL_CGROUPS").is_ok_and(|v| v == "off" || v == "0") {
            info!(
                "ZDCTL_CGROUPS=off: a generation's processes are found by process group and as orphans"
            );
            return None;
        }
        let (mount, own) = match own_cgroup() {
            Some(found) => found,
            None => {
                info!(
                    "no cgroup v2 hierarchy: a generation's processes are found by process group and as orphans"
                );
                return None;
            }
        };
        let name = format!("zdctl.{service}.{}", supervisor_tag());
        let parent = mount.join(own.trim_start_matches('/'));
        remove_stale(&parent, service);
        let dir = parent.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                info!(
                    error = %e,
                    path = %dir.display(),
                    "cannot create a cgroup (not root, or no delegated subtree): a generation's \
                     processes are found by process group and as orphans"
                );
                return None;
            }
        }
        let rel = format!("{}/{name}", own.trim_end_matches('/'));
        debug!(path = %dir.display(), "generations get their own cgroups");
        Some(ServiceCgroups { dir, rel })
    }

    /// The directory as `/proc/PID/cgroup` names it.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// Creates generation `generation`'s cgroup and opens its `cgroup.procs`.
    pub fn generation(&self, generation: u64) -> std::io::Result<GenerationCgroup> {
        self.instance(generation, 0, 0)
    }

    /// Creates the cgroup of one process of a generation: `gen-N` for its first instance,
    /// `gen-N.I.R` for instance `I` started for the `R`th time, so that a drain deadline's
    /// kill of one instance spares its siblings, and a respawn never shares the cgroup of
    /// the instance it replaces (which is removed once that one has ended).
    pub fn instance(
        &self,
        generation: u64,
        instance: u32,
        respawns: u32,
    ) -> std::io::Result<GenerationCgroup> {
        let name = if instance == 0 && respawns == 0 {
            format!("gen-{generation}")
        } else {
            format!("gen-{generation}.{instance}.{respawns}")
        };
        let dir = self.dir.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(GenerationCgroup {
            dir,
            rel: format!("{}/{name}", self.rel),
            procs: procs.into(),
        })
    }
}

impl Drop for ServiceCgroups {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// One generation's cgroup.
#[derive(Debug)]
pub struct GenerationCgroup {
    dir: PathBuf,
    rel: String,
    procs: OwnedFd,
}

impl GenerationCgroup {
    /// The cgroup of a generation another supervisor of `service` started (`rel`, as
    /// `/proc/PID/cgroup` names it: `…/zdctl.SERVICE.TAG/gen-N`), to end what that
    /// generation leaves when it exits. Anything else is refused.
    pub fn open_existing(service: &str, rel: &str) -> std::io::Result<GenerationCgroup> {
        let refuse = || std::io::Error::other(format!("'{rel}' is not a generation's cgroup"));
        let (parent, name) = rel.rsplit_once('/').ok_or_else(refuse)?;
        let supervisor = parent.rsplit('/').next().unwrap_or_default();
        let ours = supervisor.starts_with(&format!("zdctl.{service}."))
            && name
                .strip_prefix("gen-")
                .is_some_and(|n| n.split('.').all(|part| part.parse::<u64>().is_ok()))
            && !rel.contains("..");
        if !ours {
            return Err(refuse());
        }
        let (mount, _) =
            own_cgroup().ok_or_else(|| std::io::Error::other("no cgroup v2 hierarchy"))?;
        let dir = mount.join(rel.trim_start_matches('/'));
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join("cgroup.procs"))?;
        Ok(GenerationCgroup {
            dir,
            rel: rel.to_owned(),
            procs: procs.into(),
        })
    }

    /// Moves the generation's main process `pid` into the cgroup, then whatever it started
    /// before that move took effect. Returns how many processes were moved.
    ///
    /// The parent does this right after the clone, on a thread of its own, rather than the
    /// child before its exec: a migration waits for an RCU grace period
    /// (`cgroup_threadgroup_rwsem`), 1 ms typically and over 20 ms on a loaded 2-vCPU
    /// machine, which the child would spend before it even reaches the program. A fork
    /// during that wait still lands in the old cgroup, so the tree is walked again after
    /// the move, until a walk finds nobody left outside. A process that in that same
    /// window also left the tree (forked, then orphaned) is the only one it can miss; the
    /// process-group kill and the subreaper still see most of those.
    pub fn adopt(&self, pid: i32) -> usize {
        let mut moved = usize::from(self.admit(pid));
        for _ in 0..8 {
            let outside: Vec<i32> = crate::proc::descendants(pid)
                .into_iter()
                .filter(|p| cgroup_of(*p).is_some_and(|c| c != self.rel))
                .collect();
            if outside.is_empty() {
                break;
            }
            moved += outside.into_iter().filter(|p| self.admit(*p)).count();
        }
        moved
    }

    fn admit(&self, pid: i32) -> bool {
        use std::os::fd::AsFd;
        nix::unistd::write(self.procs.as_fd(), pid.to_string().as_bytes()).is_ok()
    }

    /// The cgroup as `/proc/PID/cgroup` names it.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// SIGKILLs every process in the cgroup (`cgroup.kill`, Linux 5.14+; one by one on older
    /// kernels, until the cgroup is empty) and waits up to `limit` for them to be gone.
    /// Returns how many processes were still there.
    pub fn kill_all(&self, limit: Duration) -> usize {
        let left = self.pids().len();
        if left == 0 && !self.populated() {
            return 0;
        }
        let killed = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
            .and_then(|mut f| f.write_all(b"1"));
        let deadline = Instant::now() + limit;
        while self.populated() && Instant::now() < deadline {
            if killed.is_err() {
                for pid in self.pids() {
                    // A member may exit and be reaped after the listing: pin it first.
                    kill_pinned(pid, |p| cgroup_of(p).is_some_and(|c| c == self.rel));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.populated() {
            warn!(path = %self.dir.display(), "processes of an ended generation are still in its cgroup");
        }
        left
    }
}

impl Drop for GenerationCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            debug!(error = %e, path = %self.dir.display(), "cannot remove a generation's cgroup");
        }
    }
}

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`, fixed by the kernel).
const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// What tells this supervisor's cgroup from every other's: its pid, and outside the
/// initial pid namespace also the namespace's inode (`PID-NS`).
///
/// A pid is unique only within its namespace: every container's supervisor may be PID 1,
/// and containers that share a cgroup hierarchy (`unshare --pid` without a cgroup
/// namespace) would otherwise share `zdctl.SERVICE.1`, and one's `cgroup.kill` would end
/// the other's generations.
fn supervisor_tag() -> String {
    let pid = std::process::id();
    match pid_namespace() {
        Some(ns) if ns != INITIAL_PID_NAMESPACE => format!("{pid}-{ns}"),
        _ => pid.to_string(),
    }
}

/// The inode of this process's pid namespace.
fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// The supervisor a cgroup directory's tag names (`PID` or `PID-NS`), when it is one this
/// process can check: in the initial pid namespace, or in this process's own.
fn tagged_pid(tag: &str, own_namespace: Option<u64>) -> Option<i32> {
    let (pid, ns) = match tag.split_once('-') {
        Some((pid, ns)) => (pid, Some(ns.parse::<u64>().ok()?)),
        None => (tag, None),
    };
    let ours = own_namespace.unwrap_or(INITIAL_PID_NAMESPACE);
    if ns.unwrap_or(INITIAL_PID_NAMESPACE) != ours {
        return None;
    }
    pid.parse().ok()
}

/// Removes the empty cgroups that supervisors of `service` which died without cleaning up
/// left in `parent` (`zdctl.SERVICE.PID` whose PID is gone). Ones that still hold processes
/// stay: those processes are not ours to end. So do those of another pid namespace, whose
/// pids mean nothing here.
fn remove_stale(parent: &std::path::Path, service: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("zdctl.{service}.");
    let own_namespace = pid_namespace();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|tag| tagged_pid(tag, own_namespace))
        else {
            continue;
        };
        if crate::proc::is_alive(pid) {
            continue;
        }
        let dir = entry.path();
        if let Ok(gens) = std::fs::read_dir(&dir) {
            for g in gens.flatten().filter(|g| g.path().is_dir()) {
                let _ = std::fs::remove_dir(g.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// The cgroup v2 mount point and this process's cgroup in it.
fn own_cgroup() -> Option<(PathBuf, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        // Only a mount of the hierarchy's root maps /proc/self/cgroup paths one to one.
        if fields.get(3) != Some(&"/") {
            return None;
        }
        fields.get(4).map(PathBuf::from)
    })?;
    let own = cgroup_of(std::process::id() as i32)?;
    Some((mount, own))
}

/// The cgroup v2 path of process `pid` (the `0::` line of `/proc/PID/cgroup`).
pub fn cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Makes this process a child subreaper: orphans of its descendants become its children.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with an integer option and argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The children this process started itself and reaps through their own waiters (a pidfd,
/// tokio's child handle). [`reap_orphans`] leaves them alone.
pub struct OwnChildren(Mutex<HashSet<i32>>);

impl OwnChildren {
    /// The process-wide list.
    pub fn get() -> &'static OwnChildren {
        static LIST: OnceLock<OwnChildren> = OnceLock::new();
        LIST.get_or_init(|| OwnChildren(Mutex::new(HashSet::new())))
    }

    /// Holds the list while a child is started, so that a sweep cannot see the child before
    /// it is listed.
    pub fn lock(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn forget(&self, pid: i32) {
        self.lock().remove(&pid);
    }
}

/// Removes a pid from [`OwnChildren`] when dropped.
#[derive(Debug)]
pub struct Listed(pub i32);

impl Drop for Listed {
    fn drop(&mut self) {
        OwnChildren::get().forget(self.0);
    }
}

/// This process's children that it did not start itself: `(pid, pgid, zombie)`.
fn inherited_children() -> Vec<(i32, i32, bool)> {
    let me = std::process::id() as i32;
    let own = OwnChildren::get().lock().clone();
    crate::proc::children(me)
        .into_iter()
        .filter(|pid| !own.contains(pid))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, _ppid, pgid) = parse_stat_tail(&stat)?;
            Some((pid, pgid, state == 'Z'))
        })
        .collect()
}

/// State, parent and process group from a `/proc/PID/stat` line (the fields after the
/// command, which may itself contain spaces and parentheses).
fn parse_stat_tail(stat: &str) -> Option<(char, i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, ppid, pgid))
}

/// Kills the inherited children that belong to no live generation: outside this
/// process's own group (the `exec:` checks' leftovers are the operator's) and outside every
/// group in `live_groups`. Returns their pids. Used when there are no cgroups.
pub fn kill_strays(live_groups: &[i32]) -> Vec<i32> {
    // SAFETY: getpgrp has no arguments and cannot fail.
    let own_group = unsafe { libc::getpgrp() };
    let mut killed = Vec::new();
    for (pid, pgid, zombie) in inherited_children() {
        if zombie || pgid == own_group || live_groups.contains(&pgid) {
            continue;
        }
        // The orphan reaper may reap it between the listing and now: kill through a pidfd
        // that is taken while it is still our child, never by a pid that may be reused.
        let me = std::process::id() as i32;
        if kill_pinned(pid, |p| crate::proc::parent(p).ok() == Some(me)) {
            killed.push(pid);
        }
    }
    if !killed.is_empty() {
        info!(pids = ?killed, "killed processes left behind by an ended generation");
    }
    killed
}

/// Ends every process re-parented to the supervisor that it did not start itself, and
/// reaps it: at the supervisor's stop nothing of the service may outlive it. Each
/// generation's leftovers were ended with it; this catches a process that escaped its
/// generation's cgroup (forked during the move into it, then orphaned before the walk after
/// the move found it) and so kept a listener open. Waits at most `limit` for them to go;
/// returns how many were killed.
pub fn end_all_strays(limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut killed = 0;
    loop {
        killed += kill_strays(&[]).len();
        reap_orphans();
        if inherited_children().is_empty() || Instant::now() >= deadline {
            return killed;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs process `pid` if `still_it` holds once a pidfd pins it: the check runs after
/// the pidfd is open, so a pid reused in between fails the check, or the signal goes to the
/// pinned (gone) process and does nothing. True when the signal was sent.
fn kill_pinned(pid: i32, still_it: impl Fn(i32) -> bool) -> bool {
    let Some(pidfd) = crate::proc::pidfd(pid) else {
        return false;
    };
    if !still_it(pid) {
        return false;
    }
    // SAFETY: pidfd_send_signal with our pidfd, a signal number, no siginfo and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// Reaps every inherited child that has exited; returns how many.
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    for (pid, _, zombie) in inherited_children() {
        if !zombie {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one specific child of ours, without blocking.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped += 1;
        }
    }
    reaped
}

/// Ends what a generation left behind once its main process `leader` has exited (and is
/// not reaped yet, so its process group id cannot have been reused): the process group,
/// the cgroup, and, without a cgroup, the strays it re-parented to us. Then reaps the
/// strays. Waits at most `limit` for the cgroup to empty.
pub fn end_leftovers(
    leader: i32,
    cgroup: Option<&GenerationCgroup>,
    live_groups: &[i32],
    limit: Duration,
) {
    // SAFETY: killpg of the group our unreaped child leads: the id is still reserved for it.
    unsafe { libc::killpg(leader, libc::SIGKILL) };
    match cgroup {
        Some(cg) => {
            cg.kill_all(limit);
        }
        None => {
            // Killing a stray re-parents its own children to us: a few rounds catch them.
            let deadline = Instant::now() + limit;
            while !kill_strays(live_groups).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    reap_orphans();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_tag_names_a_supervisor_only_in_a_pid_namespace_we_can_check() {
        let ns = 4_026_532_999;
        assert_eq!(tagged_pid("812", None), Some(812));
        assert_eq!(tagged_pid("812", Some(INITIAL_PID_NAMESPACE)), Some(812));
        // A supervisor in another namespace: its pid is not ours to look up.
        assert_eq!(tagged_pid("1-4026532999", None), None);
        assert_eq!(tagged_pid("1-4026532999", Some(4_026_533_000)), None);
        // From inside a namespace, untagged names belong to the initial one.
        assert_eq!(tagged_pid("812", Some(ns)), None);
        assert_eq!(tagged_pid("1-4026532999", Some(ns)), Some(1));
        assert_eq!(tagged_pid("1-x", Some(ns)), None);
        assert_eq!(tagged_pid("api.3", None), None);
    }

    #[test]
    fn stat_tail_survives_parentheses_in_the_command() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560";
        assert_eq!(parse_stat_tail(line), Some(('S', 1, 1234)));
        assert_eq!(parse_stat_tail("garbage"), None);
    }
}
