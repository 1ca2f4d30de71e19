//! Drivers against real foreign supervisors: start_server, nginx, HAProxy and gunicorn
//! from Debian, psflip, socketmaster, huptime and einhorn built by `shared/peers/build.sh`
//! (see [`built_peer`]); and zd-flipper. huptime runs zd-plain-http, because the built
//! huptime cannot serve our fixture (see `huptime.rs`). Each peer runs in its own process
//! group, killed by a guard when the test ends.

mod einhorn;
mod gunicorn;
mod haproxy;
mod huptime;
mod lock;
mod nginx;
mod psflip;
mod script;
mod signal;
mod socketmaster;
mod start_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use zd_tests::peers;

use crate::support::{TestEnv, assert_code, fixture_bin, stdout};

/// A foreign supervisor started by a test, in its own process group.
pub struct Peer {
    child: Child,
}

impl Peer {
    pub fn spawn(mut cmd: Command, log: &Path) -> Peer {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).expect("peer log");
        let err = out.try_clone().expect("peer log");
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        Peer {
            child: cmd.spawn().expect("spawn peer"),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The peer leads its group, but real peers may put their workers in groups of their
        // own (einhorn does): list the whole tree before anything dies and is re-parented.
        let pid = self.pid();
        let tree = crate::support::descendants(pid);
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        for p in tree.into_iter().filter(|p| *p != pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A program on PATH (or in /usr/sbin or /sbin), or `None` with a loud SKIPPED line; with
/// `ZD_REQUIRE_PEERS=1` a missing peer fails the test. The build script looks with the
/// same rules (`zd_tests::peers`), so this finds nothing only in a test that should have
/// been ignored, or when the program went away after the build.
pub fn peer(test: &str, program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = peers::find_in(&peers::debian_dirs(&path), program, &[]);
    if found.is_none() {
        missing(
            test,
            program,
            &format!("is not installed (Debian package {package})"),
        );
    }
    found
}

/// A real peer that Debian does not package, from the peers directory (`ZD_PEERS_DIR`,
/// else `target/peers`, relative to the workspace root) or else PATH, with every
/// file in `also` beside it (huptime's preload library), or `None` with a loud SKIPPED
/// line; with `ZD_REQUIRE_PEERS=1` a missing peer fails the test.
pub fn built_peer(test: &str, program: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = peers::find_in(&peers::built_dirs(&path, &peers::dir(), ""), program, also);
    if found.is_none() {
        missing(
            test,
            program,
            &format!(
                "is not built in '{}' nor on PATH (build it with `../shared/peers/build.sh \
                 target/peers` from the workspace root, or set ZD_PEERS_DIR)",
                peers::dir().display()
            ),
        );
    }
    found
}

/// Fails the test under `ZD_REQUIRE_PEERS=1`, else says loudly that it is skipped.
fn missing(test: &str, program: &str, why: &str) {
    skip(test, &format!("{program} {why}"));
}

/// Fails the test under `ZD_REQUIRE_PEERS=1` with `why` (what is missing), else says
/// loudly that it is skipped.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("ZD_REQUIRE_PEERS").is_none_or(|v| v != "1"),
        "ZD_REQUIRE_PEERS=1 but {why}"
    );
    crate::support::say_skipped(&format!("{test}: {why}"));
}

/// A worker command: zd-fixture, or, once `marker` exists, zd-fixture with `later`
/// flags (a new generation that crashes or gives up).
pub fn worker_until(marker: &Path, later: &str) -> Vec<String> {
    let fixture = fixture_bin().display().to_string();
    let script = format!(
        "if [ -e '{m}' ]; then exec '{fixture}' {later}; fi; exec '{fixture}'",
        m = marker.display()
    );
    vec!["/bin/sh".to_owned(), "-c".to_owned(), script]
}

/// The live children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    crate::support::descendants(pid)
        .into_iter()
        .filter(|p| crate::support::parent_of(*p) == Some(pid) && crate::support::is_alive(*p))
        .collect()
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The active generation `zdctl status NAME --json` shows, and the supervisor's pid.
fn status_of(env: &TestEnv, name: &str) -> (u64, i32) {
    let out = env.run_zdctl(&["status", name, "--json"]);
    assert_code(&out, 0);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status json");
    let generation = value["active_generation"].as_u64().expect("a generation");
    let root = value["supervisor_pid"].as_i64().expect("a supervisor pid");
    (generation, i32::try_from(root).expect("a pid"))
}

/// The active generation `zdctl status NAME --json` shows.
pub fn generation(env: &TestEnv, name: &str) -> u64 {
    status_of(env, name).0
}

/// `zdctl restart NAME --json ARGS`: its output, the events it printed (one JSON object
/// per line, the report last, without `"event"`) and how long it took.
pub fn restart_json(
    env: &TestEnv,
    name: &str,
    args: &[&str],
) -> (
    std::process::Output,
    Vec<serde_json::Value>,
    std::time::Duration,
) {
    let started = std::time::Instant::now();
    let out = env.run_zdctl(&[&["restart", name, "--json"], args].concat());
    let elapsed = started.elapsed();
    let events = stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    (out, events, elapsed)
}

/// The kinds of `events`, in order.
pub fn kinds(events: &[serde_json::Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["event"].as_str()).collect()
}

/// Every pid an event names is a real one (above 0).
pub fn assert_real_pids(events: &[serde_json::Value]) {
    for event in events.iter().filter(|e| e.get("event").is_some()) {
        if let Some(pid) = event.get("pid") {
            assert!(pid.as_i64().is_some_and(|p| p > 0), "pid 0 in {event}");
        }
    }
}

/// A completed restart's events: `spawned`, `ready`, `promoted`, `draining` and
/// `finished`, each with real pids; spawned before ready before promoted, draining after
/// spawned, finished last; every `draining` names a process of the service before the
/// restart (`old`), never the new generation's.
pub fn assert_flip_events(events: &[serde_json::Value], old: &[i32]) {
    let kinds = kinds(events);
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no '{kind}' event in {kinds:?}"))
    };
    assert!(at("spawned") < at("ready"), "{kinds:?}");
    assert!(at("ready") < at("promoted"), "{kinds:?}");
    assert!(at("spawned") < at("draining"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"finished"), "{kinds:?}");
    assert_real_pids(events);
    assert_drains_only(events, old);
}

/// Every `draining` event names one of `old`: a rollback never drains the new generation.
pub fn assert_drains_only(events: &[serde_json::Value], old: &[i32]) {
    for event in events.iter().filter(|e| e["event"] == "draining") {
        let pid = event["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
        assert!(
            pid.is_some_and(|p| old.contains(&p)),
            "{event} drains a process that is not of the old generation {old:?}"
        );
    }
}

/// Restarts `name` `times` times with `--json`, each exiting 0 with a new generation in
/// `status` and the full event sequence (see [`assert_flip_events`]).
pub fn restart_times(env: &TestEnv, name: &str, times: usize) {
    let (mut last, _) = status_of(env, name);
    for _ in 0..times {
        let (_, root) = status_of(env, name);
        let mut old = crate::support::descendants(root);
        old.push(root);
        let (out, events, _) = restart_json(env, name, &[]);
        assert_code(&out, 0);
        assert_flip_events(&events, &old);
        let now = generation(env, name);
        assert_ne!(now, last, "the generation did not change");
        last = now;
    }
}

/// Asserts a restart that rolled back quickly: exit 1 with "rolled back", finished
/// before `timeout` (the driver's own: it did not wait for a timer), no `draining` of
/// anything but `old`; prints how long it took.
pub fn assert_fast_rollback(
    test: &str,
    out: &std::process::Output,
    events: &[serde_json::Value],
    elapsed: std::time::Duration,
    timeout: std::time::Duration,
    old: &[i32],
) {
    eprintln!("ROLLBACK TIME: {test}: {elapsed:?}");
    assert_code(out, 1);
    let err = crate::support::stderr(out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(
        elapsed < timeout,
        "the rollback took {elapsed:?}, the driver's whole timeout {timeout:?}"
    );
    assert_real_pids(events);
    assert_drains_only(events, old);
}

/// `zdctl status NAME --json` shows the listener on `addr`, in the status and in its
/// snapshot, held by the active generation only, as a native service's is.
pub fn assert_listener_held_by_active(env: &TestEnv, name: &str, addr: &str) {
    let out = env.run_zdctl(&["status", name, "--json"]);
    assert_code(&out, 0);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status json");
    let active = value["active_generation"]
        .as_u64()
        .expect("active generation");
    let on_addr = |list: &serde_json::Value| {
        list.as_array()
            .and_then(|l| l.iter().find(|l| l["address"] == addr))
            .cloned()
    };
    assert!(
        on_addr(&value["listeners"]).is_some(),
        "status lists no listener on {addr}: {value:#}"
    );
    let listener = on_addr(&value["snapshot"]["listeners"])
        .unwrap_or_else(|| panic!("the snapshot lists no listener on {addr}: {value:#}"));
    // A pool (einhorn's workers) lists its generation once per worker.
    let held_by = listener["held_by"].as_array().cloned().unwrap_or_default();
    assert!(
        !held_by.is_empty() && held_by.iter().all(|g| g.as_u64() == Some(active)),
        "held by {held_by:?}, not by the active generation {active} alone: {value:#}"
    );
}
