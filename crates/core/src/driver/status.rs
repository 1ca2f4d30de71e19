//! The process view of a foreign service: its supervisor's pid (the root) and its
//! generations, read from /proc (the child subtrees of the root, or the root itself for
//! supervisors that replace their own process), in the shape of a native `status`, with
//! the numbers, counters and last restart of the driver record.

use std::time::{Duration, SystemTime};

use super::lock::{self, RestartLock};
use super::process::{listening_sockets, live_children, target_from_pidfile};
use super::record::Pending;
use super::{DriverConfig, DriverError, DriverKind, WatchMode, start_server};
use crate::proc;
use crate::proto::{GenerationInfo, GenerationState, ListenerInfo, Status, unix_ms};

/// The pid of the foreign service's supervisor (the root of its process tree), proven to
/// be the expected program: for `zdctl top` and `status`. systemd services: the unit's
/// main pid.
pub fn root_pid(config: &DriverConfig) -> Result<i32, DriverError> {
    if config.kind == DriverKind::Systemd {
        let unit = config.unit.as_deref().unwrap_or_default();
        let output = std::process::Command::new("systemctl")
            .args(["show", unit, "-p", "MainPID,ActiveState"])
            .output()
            .map_err(|e| DriverError::NotRunning {
                path: "systemctl".into(),
                reason: format!("cannot run systemctl ({e}); is this a systemd machine?"),
            })?;
        let state = super::parse_show(&String::from_utf8_lossy(&output.stdout));
        return match state {
            Some(s) if s.main_pid > 0 => Ok(s.main_pid),
            _ => Err(DriverError::NotRunning {
                path: unit.into(),
                reason: format!("unit '{unit}' has no main process"),
            }),
        };
    }
    let Some(pidfile) = config.pidfile.as_deref() else {
        return Err(DriverError::NotRunning {
            path: config.source.clone(),
            reason: format!(
                "'{}' names no `pidfile:`, so zdctl cannot find the supervisor's process; add \
                 the pidfile the supervisor writes",
                config.source.display()
            ),
        });
    };
    target_from_pidfile(pidfile, config.expect.as_deref()).map(|t| t.pid)
}

/// Whether each child of the root is a generation (rather than the root itself).
fn generations_are_children(config: &DriverConfig) -> bool {
    match config.kind {
        DriverKind::Signal => config.watch == WatchMode::Child,
        // HAProxy's master re-executes in place and replaces its worker: the workers are
        // the generations.
        DriverKind::Socketmaster
        | DriverKind::StartServer
        | DriverKind::Einhorn
        | DriverKind::Haproxy => true,
        _ => false,
    }
}

/// The status of a foreign service, as `zdctl status` shows a native one: the supervisor's
/// pid, its generations and their start times, and the restarts zdctl made.
///
/// When no restart runs, `status` takes the restart lock for a moment and records a
/// generation started outside zdctl (a process the record does not name), so that it keeps
/// its number; while a restart runs, it only reads.
pub fn status(config: &DriverConfig) -> Result<Status, DriverError> {
    // A runtime directory we may not use makes a status without a record, not an error.
    let lock = RestartLock::try_acquire(&config.name).ok().flatten();
    let mut record = match &lock {
        Some(lock) => lock.record(),
        None => lock::read(&config.name).unwrap_or_default(),
    };
    let root = match root_pid(config) {
        Ok(root) => root,
        // Mid-restart the pidfile may name nobody for a moment (huptime `--unlink`s it at
        // the HUP and the new copy writes it again): the old process the record names is
        // still the service.
        Err(err) => match record
            .pid
            .filter(|pid| lock.is_none() && record.in_progress.is_some() && record.names(*pid))
        {
            Some(old) => old,
            None => return Err(err),
        },
    };
    // The new generation of the restart that runs now, once it has a live process.
    let pending = record
        .pending
        .clone()
        .filter(|p| lock.is_none() && record.in_progress.is_some() && p.is_alive());
    let mut generations = Vec::new();
    // The process that is the current generation, when the record should learn it.
    let mut current = None;
    if generations_are_children(config) {
        let numbers = match (config.kind, &config.status_file) {
            (DriverKind::StartServer, Some(path)) => start_server::read_status(path)?,
            _ => Vec::new(),
        };
        let children = live_children(root);
        // While a restart runs, its new generation's processes are those that started with
        // or after the first one it saw; the others are the old generation's.
        let (new, old): (Vec<i32>, Vec<i32>) = match &pending {
            Some(p) => children.iter().partition(|pid| p.owns(**pid)),
            None => (Vec::new(), children.clone()),
        };
        // Each old child's number: from start_server's status file, else from the record
        // (which names one child of a pool: its siblings share its number; children it
        // does not name at all were started outside zdctl, and are the next number).
        let unnamed = record.number(&old);
        let mut numbered: Vec<(u64, i32)> = old
            .iter()
            .map(|&pid| {
                let generation = numbers
                    .iter()
                    .find(|(_, p)| *p == pid)
                    .map(|(g, _)| *g)
                    .unwrap_or(if record.names(pid) {
                        record.generation
                    } else {
                        unnamed
                    });
                (generation, pid)
            })
            .collect();
        if numbers.is_empty() && pending.is_none() {
            current = children.first().map(|pid| (unnamed, *pid));
        }
        if let Some(p) = &pending {
            numbered.extend(new.iter().map(|pid| (p.generation, *pid)));
        }
        generations = infos(numbered, &pending);
    } else if let Some(p) = &pending {
        // A supervisor that replaces its own process: the old process the record names
        // and the new one, whichever of them the pidfile names now.
        let mut numbered = Vec::new();
        if p.is_alive() {
            numbered.push((p.generation, p.pid));
        }
        if let Some(old) = record.pid.filter(|pid| record.names(*pid) && *pid != p.pid) {
            numbered.push((record.generation, old));
        }
        if !numbered.iter().any(|(_, pid)| *pid == root) {
            numbered.push((record.number(&[root]), root));
        }
        generations = infos(numbered, &pending);
    } else {
        let generation = record.number(&[root]);
        current = Some((generation, root));
        generations.push(info(generation, root, GenerationState::Active));
    }
    if let (Some(lock), Some((generation, pid))) = (&lock, current) {
        if !record.names(pid) && record.number(&[pid]) == generation && record.set(generation, pid)
        {
            lock.write(&record);
        }
    }
    let active = generations
        .iter()
        .find(|g| g.state == GenerationState::Active)
        .map(|g| g.generation);
    Ok(Status {
        service: config.name.clone(),
        supervisor_pid: root,
        started_unix_ms: started_unix_ms(root).unwrap_or(0),
        config_path: Some(config.source.display().to_string()),
        active_generation: active,
        restart_in_progress: record.in_progress.filter(|_| lock.is_none()),
        generations,
        listeners: listeners(config, root),
        sockets: Vec::new(),
        restarts: record.restarts,
        last_restart: record.last_restart,
        containment: None,
        intercept_binds: false,
        failing: None,
        supervisor: None,
        log_lines: None,
        instances: None,
        capacity: None,
        bake: None,
    })
}

/// The generations of `(number, pid)` pairs, newest first, each in its state.
fn infos(numbered: Vec<(u64, i32)>, pending: &Option<Pending>) -> Vec<GenerationInfo> {
    let newest = numbered.iter().map(|(g, _)| *g).max();
    let mut generations: Vec<GenerationInfo> = numbered
        .into_iter()
        .map(|(generation, pid)| info(generation, pid, state_of(generation, newest, pending)))
        .collect();
    generations.sort_by_key(|g| std::cmp::Reverse(g.generation));
    generations
}

/// A generation's state: the newest is active, older ones draining; while a restart runs,
/// its new generation is starting until it is promoted, and the old one active until then.
fn state_of(generation: u64, newest: Option<u64>, pending: &Option<Pending>) -> GenerationState {
    match pending {
        Some(p) if generation == p.generation && !p.promoted => GenerationState::Starting,
        Some(p) if !p.promoted => GenerationState::Active,
        _ if Some(generation) == newest => GenerationState::Active,
        _ => GenerationState::Draining,
    }
}

fn info(generation: u64, pid: i32, state: GenerationState) -> GenerationInfo {
    GenerationInfo {
        generation,
        pid,
        state,
        started_unix_ms: started_unix_ms(pid).unwrap_or(0),
        exit: None,
        intercept: None,
        output_lines: None,
        instances: Vec::new(),
    }
}

/// When a process started, from its start ticks and the boot time.
fn started_unix_ms(pid: i32) -> Option<u64> {
    let ticks = proc::start_time_ticks(pid).ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz.unsigned_abs(),
        _ => 100,
    };
    let since_boot = Duration::from_millis(ticks.saturating_mul(1000) / hz.max(1));
    let boot = SystemTime::UNIX_EPOCH + Duration::from_secs(btime);
    Some(unix_ms(boot + since_boot))
}

/// The service's listeners: the listening sockets its supervisor holds (which every foreign
/// supervisor here opens itself and hands on, or proxies, as psflip does), without the
/// supervisor's own control socket (`socket:`). Named by address, with the fd the
/// supervisor holds them on. (HAProxy's master holds only its CLI socket: its workers
/// hold the listeners, which the service then finds in the generations.)
fn listeners(config: &DriverConfig, root: i32) -> Vec<ListenerInfo> {
    let control = config.socket.as_deref().map(|p| p.display().to_string());
    listening_sockets(root)
        .into_iter()
        .filter(|l| {
            !control
                .as_deref()
                .is_some_and(|c| is_control(&l.address, c))
        })
        .map(|l| ListenerInfo {
            name: l.address.clone(),
            address: l.address,
            inode: l.inode,
            fd: l.fd,
        })
        .collect()
}

/// Whether a listener bound at `address` is the control socket at `control`. HAProxy binds
/// a unix socket as `PATH.PID.tmp` and renames it to `PATH`; the socket keeps the name it
/// was bound to.
fn is_control(address: &str, control: &str) -> bool {
    address == control
        || address
            .strip_prefix(control)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxys_master_socket_is_its_control_socket_under_the_name_it_was_bound_to() {
        let control = "/run/haproxy-master.sock";
        assert!(is_control(control, control));
        assert!(is_control("/run/haproxy-master.sock.4242.tmp", control));
        assert!(!is_control("/run/haproxy-master.sock.x.tmp", control));
        assert!(!is_control("/run/haproxy-master.sock2", control));
        assert!(!is_control("127.0.0.1:8080", control));
    }

    #[test]
    fn haproxys_workers_are_its_generations() {
        let config = super::super::parse_str(
            "driver: haproxy\nsocket: /run/haproxy-master.sock\npidfile: /run/haproxy.pid\n",
            std::path::Path::new("/etc/zdctl/services.d/lb.yaml"),
        )
        .expect("valid");
        assert!(generations_are_children(&config));
    }
}
