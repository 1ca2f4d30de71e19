//! `yield_cpu`: the supervisor runs at a weaker CPU priority than the service, and every
//! generation starts at the priority the supervisor was given.

use std::os::unix::process::CommandExt as _;

use crate::support::*;

/// CAP_SYS_NICE's number (linux/capability.h).
const CAP_SYS_NICE: libc::c_ulong = 23;

/// The nice value of task `tid` of `pid` (field 19 of its `stat`).
fn nice_of(pid: i32, tid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).expect("stat");
    // The command name may hold spaces: count the fields after its closing parenthesis.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    after
        .split(' ')
        .nth(16)
        .expect("nice")
        .parse()
        .expect("number")
}

/// The supervisor's threads that the runtime started, with its main thread.
fn runtime_threads(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&tid: &i32| {
            let comm =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
            tid == pid || comm.trim() == "tokio-rt-worker"
        })
        .collect()
}

/// Asserts that the supervisor's main thread and runtime workers run at `nice`.
fn assert_supervisor_at(supervisor: i32, nice: i32) {
    for tid in runtime_threads(supervisor) {
        assert_eq!(nice_of(supervisor, tid), nice, "supervisor thread {tid}");
    }
}

/// Restarts `api` and returns the pid of the generation that replaced `old`.
fn restart(env: &mut TestEnv, old: i32) -> i32 {
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 0);
    let new = active_pid(&env.status("api").expect("status"));
    assert_ne!(new, old);
    new
}

/// `zdctl -v run api` started at nice 3, with CAP_SYS_NICE dropped when `drop_cap_sys_nice`.
fn start_at_nice_3(env: &mut TestEnv, drop_cap_sys_nice: bool) -> (i32, i32) {
    let mut cmd = env.zdctl();
    cmd.args(["-v", "run", "api"]);
    // SAFETY: setpriority and prctl are plain syscalls, safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpriority(libc::PRIO_PROCESS, 0, 3) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Out of the bounding set, a root process does not get it back at exec.
            if drop_cap_sys_nice && libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_NICE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = env.start_command("api", cmd);
    let supervisor = env.supervisor("api").child.id() as i32;
    (supervisor, active_pid(&status))
}

#[test]
fn the_supervisor_runs_below_its_generations_which_start_at_its_original_priority() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED: the_supervisor_runs_below_its_generations… needs CAP_SYS_NICE to start \
             generations back at a stronger priority"
        );
        return;
    }
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "yield_cpu: true\n");
    let (supervisor, first) = start_at_nice_3(&mut env, false);
    let threads = runtime_threads(supervisor);
    assert!(
        threads.len() >= 3,
        "main thread and two workers: {threads:?}"
    );
    assert_supervisor_at(supervisor, 13);
    assert_eq!(nice_of(first, first), 3, "first generation");

    // A generation started by a restart, from one of the runtime's weaker threads.
    let second = restart(&mut env, first);
    assert_eq!(nice_of(second, second), 3, "second generation");
    assert!(
        env.log("api").contains("weaker CPU priority"),
        "{}",
        env.log("api")
    );
}

#[test]
fn without_cap_sys_nice_the_supervisor_keeps_the_service_priority() {
    if !nix::unistd::geteuid().is_root() {
        say_skipped("without_cap_sys_nice… needs root to drop the capability");
        return;
    }
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "yield_cpu: true\n");
    let (supervisor, first) = start_at_nice_3(&mut env, true);
    assert_supervisor_at(supervisor, 3);
    assert_eq!(nice_of(first, first), 3, "first generation");
    let second = restart(&mut env, first);
    assert_eq!(nice_of(second, second), 3, "second generation");
    assert!(
        env.log("api").contains("without CAP_SYS_NICE"),
        "{}",
        env.log("api")
    );
}

#[test]
fn by_default_the_supervisor_keeps_the_service_priority() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let (supervisor, first) = start_at_nice_3(&mut env, false);
    assert_supervisor_at(supervisor, 3);
    assert_eq!(nice_of(first, first), 3, "first generation");
    assert!(
        !env.log("api").contains("CPU priority"),
        "{}",
        env.log("api")
    );
}
