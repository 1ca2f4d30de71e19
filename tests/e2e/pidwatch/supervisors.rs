//! Real supervisors run pidwatch over a flipping service and never see it exit.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::Pid;

use super::harness::{
    TestEnv, find_program, flipper_bin, is_alive, peers_available, pidwatch_bin, read_pid,
    wait_for, wait_until,
};

const FLIPS: usize = 20;

/// What a supervisor reports about its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Up { pid: Pid, seconds: u64 },
    Down,
}

/// Writes a service directory whose `run` script execs pidwatch over `service` (a shell
/// command line) following `pidfile`, with pidwatch's stderr in `pidwatch.stderr`.
pub(super) fn service_dir(env: &TestEnv, pidfile: &Path, service: &str) -> PathBuf {
    let dir = env.path("service");
    fs::create_dir_all(&dir).expect("service dir");
    let script = format!(
        "#!/bin/sh\nexec 2>>'{stderr}'\nexec '{pidwatch}' --pidfile '{pidfile}' -- {service}\n",
        stderr = env.path("pidwatch.stderr").display(),
        pidwatch = pidwatch_bin().display(),
        pidfile = pidfile.display(),
    );
    let run = dir.join("run");
    fs::write(&run, script).expect("run script");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod run");
    dir
}

fn flipper_service(env: &TestEnv) -> String {
    format!(
        "'{}' --pidfile '{}' --log '{}' --flip-on HUP",
        flipper_bin().display(),
        env.path("app.pid").display(),
        env.path("app.log").display()
    )
}

fn run_tool(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `DIR: up (pid 123) 4 seconds` / `DIR: down 2 seconds`
pub(crate) fn svstat(dir: &Path) -> Option<Status> {
    let out = run_tool("svstat", &[], dir);
    let rest = out.split_once(": ")?.1;
    if rest.starts_with("down") {
        return Some(Status::Down);
    }
    let pid = rest
        .split_once("(pid ")?
        .1
        .split_once(')')?
        .0
        .parse()
        .ok()?;
    let seconds = rest
        .split_once(") ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Status::Up {
        pid: Pid::from_raw(pid),
        seconds,
    })
}

/// `run: DIR: (pid 123) 5s; ...` / `down: DIR: 1s, normally up`
pub(crate) fn sv_status(dir: &Path) -> Option<Status> {
    let out = run_tool("sv", &["status"], dir);
    if out.starts_with("down:") {
        return Some(Status::Down);
    }
    if !out.starts_with("run:") {
        return None;
    }
    let rest = out.split_once("(pid ")?.1;
    let (pid, rest) = rest.split_once(')')?;
    let seconds = rest.trim_start().split_once('s')?.0.parse().ok()?;
    Some(Status::Up {
        pid: Pid::from_raw(pid.parse().ok()?),
        seconds,
    })
}

fn following(env: &TestEnv, pid: Pid) -> bool {
    env.read("pidwatch.stderr")
        .contains(&format!("following pid {pid}\n"))
}

/// Flips the service `FLIPS` times through the supervisor's HUP, checking that the
/// supervisor keeps reporting the same pid with an uptime that never goes back, then stops it
/// through the supervisor and checks that the whole tree is gone.
fn flip_under(env: &TestEnv, status: fn(&Path) -> Option<Status>, hup: &[&str], down: &[&str]) {
    let dir = env.path("service");
    let (pidwatch, first_uptime) =
        wait_for(
            "the supervisor to report the service up",
            || match status(&dir)? {
                Status::Up { pid, seconds } => Some((pid, seconds)),
                Status::Down => None,
            },
        );
    let pidfile = env.path("app.pid");
    let mut current = wait_for("pidwatch to follow the first generation", || {
        read_pid(&pidfile).filter(|p| following(env, *p))
    });
    let mut uptime = first_uptime;
    for round in 0..FLIPS {
        Command::new(hup[0])
            .args(&hup[1..])
            .arg(&dir)
            .status()
            .expect("send HUP through the supervisor");
        let old = current;
        current = wait_for(&format!("flip {round} to be followed"), || {
            read_pid(&pidfile).filter(|p| *p != old && following(env, *p))
        });
        wait_until("the old generation to exit", || !is_alive(old));
        match status(&dir) {
            Some(Status::Up { pid, seconds }) => {
                assert_eq!(
                    pid, pidwatch,
                    "the supervisor saw a restart at flip {round}"
                );
                assert!(seconds >= uptime, "uptime went back at flip {round}");
                uptime = seconds;
            }
            other => panic!("the supervisor reports {other:?} at flip {round}"),
        }
    }
    wait_until("the uptime to keep growing from the same start", || {
        matches!(status(&dir), Some(Status::Up { pid, seconds })
            if pid == pidwatch && seconds > first_uptime)
    });

    Command::new(down[0])
        .args(&down[1..])
        .arg(&dir)
        .status()
        .expect("stop through the supervisor");
    wait_until("the supervisor to report the service down", || {
        status(&dir) == Some(Status::Down)
    });
    assert!(!is_alive(pidwatch), "pidwatch still runs");
    assert!(!is_alive(current), "the service still runs");
    assert!(env.read("app.log").contains(&format!("{current} gen=")));
}

#[test]
#[cfg_attr(
    not(has_daemontools),
    ignore = "daemontools not installed (Debian package daemontools)"
)]
fn daemontools_supervise_never_sees_an_exit_across_twenty_flips() {
    let test = "daemontools_supervise_never_sees_an_exit_across_twenty_flips";
    if !peers_available(test, &["supervise", "svc", "svstat"]) {
        return;
    }
    let mut env = TestEnv::new();
    let dir = service_dir(&env, &env.path("app.pid"), &flipper_service(&env));
    let supervise = find_program("supervise").expect("checked above");
    let index = env.spawn("supervise", Command::new(supervise).arg(&dir));
    flip_under(&env, svstat, &["svc", "-h"], &["svc", "-d"]);
    Command::new("svc")
        .arg("-x")
        .arg(&dir)
        .status()
        .expect("svc -x");
    env.proc(index).wait_exit();
}

#[test]
#[cfg_attr(not(has_runit), ignore = "runit not installed (Debian package runit)")]
fn runit_runsv_never_sees_an_exit_across_twenty_flips() {
    let test = "runit_runsv_never_sees_an_exit_across_twenty_flips";
    if !peers_available(test, &["runsv", "sv"]) {
        return;
    }
    let mut env = TestEnv::new();
    let dir = service_dir(&env, &env.path("app.pid"), &flipper_service(&env));
    let runsv = find_program("runsv").expect("checked above");
    let index = env.spawn("runsv", Command::new(runsv).arg(&dir));
    flip_under(&env, sv_status, &["sv", "hup"], &["sv", "down"]);
    Command::new("sv")
        .arg("exit")
        .arg(&dir)
        .status()
        .expect("sv exit");
    env.proc(index).wait_exit();
}
