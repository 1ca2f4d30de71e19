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

/// A program on PATH (or in /usr/sbin), or `None` with a loud SKIPPED line; with
/// `ZD_REQUIRE_PEERS=1` a missing peer fails the test.
pub fn peer(test: &str, program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        missing(
            test,
            program,
            &format!("is not installed (Debian package {package})"),
        );
    }
    found
}

/// Where `build.sh` put the peers Debian does not package (psflip, socketmaster, huptime,
/// einhorn): `ZD_PEERS_DIR`, else `target/peers`, both relative to the workspace root.
pub fn peers_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    match std::env::var_os("ZD_PEERS_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target/peers"),
    }
}

/// A real peer that Debian does not package, from [`peers_dir`] or else PATH, with every
/// file in `also` beside it (huptime's preload library), or `None` with a loud SKIPPED
/// line; with `ZD_REQUIRE_PEERS=1` a missing peer fails the test.
pub fn built_peer(test: &str, program: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::iter::once(peers_dir())
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(program))
        .find(|p| {
            p.is_file()
                && also
                    .iter()
                    .all(|f| p.parent().is_some_and(|d| d.join(f).is_file()))
        });
    if found.is_none() {
        missing(
            test,
            program,
            &format!(
                "is not built in '{}' nor on PATH (build it with `../shared/peers/build.sh \
                 target/peers` from the workspace root, or set ZD_PEERS_DIR)",
                peers_dir().display()
            ),
        );
    }
    found
}

/// Fails the test under `ZD_REQUIRE_PEERS=1`, else says loudly that it is skipped.
fn missing(test: &str, program: &str, why: &str) {
    assert!(
        std::env::var_os("ZD_REQUIRE_PEERS").is_none_or(|v| v != "1"),
        "ZD_REQUIRE_PEERS=1 but {program} {why}"
    );
    eprintln!("SKIPPED: {test}: {program} {why}");
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

/// The active generation `zdctl status NAME --json` shows.
pub fn generation(env: &TestEnv, name: &str) -> u64 {
    let out = env.run_zdctl(&["status", name, "--json"]);
    assert_code(&out, 0);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status json");
    value["active_generation"].as_u64().expect("a generation")
}

/// Restarts `name` `times` times, each exiting 0 with a new generation in `status`.
pub fn restart_times(env: &TestEnv, name: &str, times: usize) {
    let mut last = generation(env, name);
    for _ in 0..times {
        let out = env.run_zdctl(&["restart", name]);
        assert_code(&out, 0);
        let now = generation(env, name);
        assert_ne!(now, last, "the generation did not change");
        last = now;
    }
}
