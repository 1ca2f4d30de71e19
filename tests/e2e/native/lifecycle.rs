use crate::support::*;

/// An old generation that ignores its stop signal is killed at `drain_timeout`.
fn ignored_sigterm_is_killed_at_the_deadline(handoff: Handoff) {
    let mut env = TestEnv::new();
    env.fixture_service(
        "api",
        &["--ignore-term"],
        &format!("{}drain_timeout: 1s\n", handoff.key()),
    );
    let status = env.start("api", &["run", "api"]);
    let old_pid = active_pid(&status);
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 0);
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let at = |kind: &str| {
        events
            .iter()
            .find(|e| e["event"] == kind && e["pid"] == old_pid)
            .and_then(|e| e["elapsed_ms"].as_u64())
            .unwrap_or_else(|| panic!("no '{kind}' event for pid {old_pid}: {events:?}"))
    };
    let waited = at("killed") - at("draining");
    // The kill comes at the deadline: not before it, and not long after it.
    assert!(
        (1000..6000).contains(&waited),
        "killed {waited} ms after the stop signal"
    );
    assert!(at("exited") >= at("killed"));
    assert!(!is_alive(old_pid), "old generation still alive");
}

#[test]
fn old_generation_that_ignores_sigterm_is_killed_at_the_drain_deadline_steered() {
    ignored_sigterm_is_killed_at_the_deadline(Handoff::Steered);
}

#[test]
fn old_generation_that_ignores_sigterm_is_killed_at_the_drain_deadline_shared() {
    ignored_sigterm_is_killed_at_the_deadline(Handoff::Shared);
}

#[test]
fn second_restart_while_one_runs_is_answered_busy() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    // The next generation takes a while to come up, so the first restart is still running.
    env.fixture_service("api", &["--start-delay", "2s"], "");
    let mut first = env
        .zdctl()
        .args(["restart", "api"])
        .spawn()
        .expect("first restart");
    wait_for("the first restart to start", || {
        env.status("api").and_then(|s| s.restart_in_progress)
    });
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("already running (restart #1)"),
        "{}",
        stderr(&out)
    );
    assert!(first.wait().expect("first").success());
}

#[test]
fn sighup_to_the_supervisor_restarts_the_service() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let pid = status.supervisor_pid;
    // SAFETY: signalling the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let s = wait_for("generation 2", || {
        env.status("api")
            .filter(|s| s.active_generation == Some(2) && s.restart_in_progress.is_none())
    });
    assert_eq!(s.restarts.completed, 1);
}

#[test]
fn sigterm_stops_the_supervisor_and_leaves_no_process_behind() {
    let mut env = TestEnv::new();
    let unix = env.path("api.sock");
    env.fixture_service(
        "api",
        &[],
        &format!(
            "  - unix:{}\npidfile: {}\n",
            unix.display(),
            env.path("api.pid").display()
        ),
    );
    let status = env.start("api", &["run", "api"]);
    let sup = status.supervisor_pid;
    let tree = descendants(sup);
    assert!(tree.len() >= 2, "a generation runs: {tree:?}");
    assert!(env.path("api.pid").exists());
    // SAFETY: signalling the supervisor this test started.
    unsafe { libc::kill(sup, libc::SIGTERM) };
    assert_eq!(env.wait_exit("api"), Some(0));
    for pid in tree {
        assert!(!is_alive(pid), "pid {pid} survived the stop");
    }
    assert!(!env.socket("api").exists(), "control socket left behind");
    assert!(!unix.exists(), "unix listener file left behind");
    assert!(!env.path("api.pid").exists(), "pidfile left behind");
}

#[test]
fn zdctl_stop_returns_after_every_generation_exited() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let gen_pid = active_pid(&status);
    assert_code(&env.run_zdctl(&["stop", "api"]), 0);
    assert!(!is_alive(gen_pid));
    assert_eq!(env.wait_exit("api"), Some(0));
}

/// A crashed active generation is respawned, and a client that connects meanwhile is
/// answered by the respawn.
fn crash_is_respawned_while_the_listener_stays_open(handoff: Handoff) {
    let mut env = TestEnv::new();
    env.fixture_service(
        "api",
        &[],
        &format!("{}restart:\n  backoff: 50ms\n", handoff.key()),
    );
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let pid = active_pid(&status);
    // SAFETY: killing the generation this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Wait for the supervisor to have reaped it, not just for its main thread to be a
    // zombie: until its last thread has exited, its accept thread can still take a
    // connection from the queue, and that connection is then reset when the thread dies.
    wait_for("the supervisor to count the crash", || {
        env.status("api").filter(|s| s.restarts.crashes >= 1)
    });
    assert!(!is_alive(pid));
    // A client that connects meanwhile waits in the backlog and is answered by the respawn.
    let (code, body) = http_get(&addr, "/").expect("GET / during the respawn");
    assert_eq!(code, 200);
    let s = wait_for("a respawned generation", || {
        env.status("api")
            .filter(|s| s.active_generation.is_some_and(|g| g >= 2))
    });
    assert_ne!(active_pid(&s), pid);
    assert_eq!(s.restarts.crashes, 1);
    assert!(body.contains("pid="), "{body}");
}

#[test]
fn crashed_active_generation_is_respawned_while_the_listener_stays_open_steered() {
    crash_is_respawned_while_the_listener_stays_open(Handoff::Steered);
}

#[test]
fn crashed_active_generation_is_respawned_while_the_listener_stays_open_shared() {
    crash_is_respawned_while_the_listener_stays_open(Handoff::Shared);
}

/// 200 restarts leave the supervisor with the fds and children it had before them.
fn restarts_leak_nothing(handoff: Handoff) {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], handoff.key());
    let status = env.start("api", &["run", "api"]);
    let sup = status.supervisor_pid;
    let fds = || {
        std::fs::read_dir(format!("/proc/{sup}/fd"))
            .expect("fds")
            .count()
    };
    let children = || descendants(sup).len() - 1;
    // One restart first, so that lazily created fds (runtime, pools) exist before counting.
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    let (fds_before, children_before) = (fds(), children());
    for _ in 0..200 {
        assert_code(&env.run_zdctl(&["restart", "api", "--wait", "drained"]), 0);
    }
    // A just-closed control connection or a generation's notify socket may take a moment to
    // go; a leak would leave 200 of them.
    wait_for("the supervisor's fds back to where they started", || {
        (fds() <= fds_before).then_some(())
    });
    wait_for(
        "the supervisor's children back to where they started",
        || (children() <= children_before).then_some(()),
    );
}

#[test]
fn two_hundred_restarts_leak_no_fd_and_no_child_steered() {
    restarts_leak_nothing(Handoff::Steered);
}

#[test]
fn two_hundred_restarts_leak_no_fd_and_no_child_shared() {
    restarts_leak_nothing(Handoff::Shared);
}

#[test]
fn fixture_drains_on_term_even_when_started_with_its_wake_signal_blocked() {
    use std::os::unix::process::CommandExt;
    let env = TestEnv::new();
    let log = env.path("fixture.log");
    let mut cmd = std::process::Command::new(fixture_bin());
    cmd.args(["--listen", "127.0.0.1:0", "--log"]).arg(&log);
    // SAFETY: only async-signal-safe calls between fork and exec: a new process group (so
    // the test can kill the whole fixture) and a mask with every signal blocked, as a
    // careless parent might leave it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut fixture = KillGroupOnDrop(cmd.spawn().expect("spawn zd-fixture"));
    let pid = fixture.0.id() as i32;
    wait_for("the fixture to listen", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("listening").then_some(())
    });
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = wait_for("the fixture to exit after TERM", || {
        fixture.0.try_wait().expect("wait")
    });
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("draining"), "{text}");
}

/// Kills the child's process group when the test ends, unless the child was already
/// reaped: its pid, and so the group id, may then belong to another process.
struct KillGroupOnDrop(std::process::Child);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: the group was created by the test for this child alone, and the
            // child is not reaped, so the id is still its own.
            unsafe { libc::killpg(self.0.id() as i32, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_supervisor_whose_stderr_nobody_reads_keeps_restarting() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    // A pipe nobody reads, made as small as the kernel allows so that it fills after a few
    // restarts' worth of trace-level log lines.
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    // SAFETY: fcntl on a pipe fd we own.
    let capacity = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(capacity > 0, "F_SETPIPE_SZ");
    let mut cmd = env.zdctl();
    cmd.args(["-vvv", "run", "api"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(write_end));
    // SAFETY: setpgid is async-signal-safe; the test kills the group at the end.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn zdctl run");
    drop(cmd);
    env.adopt("api", child);
    for restart in 1..=30 {
        let mut client = env.spawn_restart("api");
        let status = wait_for(&format!("restart {restart} to finish"), || {
            client.try_wait().expect("wait")
        });
        assert!(status.success(), "restart {restart}: {status:?}");
    }
    // The pipe really is full: the supervisor's log thread is the one waiting on it.
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes the byte count into the int we pass.
    unsafe { libc::ioctl(read_end.as_raw_fd(), libc::FIONREAD, &mut queued) };
    assert!(
        queued >= capacity - 1024,
        "only {queued} of {capacity} bytes waiting in the pipe"
    );
}

#[test]
fn a_drained_generation_is_reported_with_its_exit_status_then_reaped() {
    let mut env = TestEnv::new();
    // Many threads, each read by the `accepting` check: the case where reaping is slow
    // enough that the supervisor reports the exit before it reaps.
    env.fixture_service("api", &["--workers", "32"], "");
    let status = env.start("api", &["run", "api"]);
    let sup = status.supervisor_pid;
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 0);
    let exited: serde_json::Value = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .find(|e| e["event"] == "exited")
        .expect("an exited event");
    assert_eq!(exited["generation"], 1, "{exited}");
    assert_eq!(
        exited["status"],
        serde_json::json!({ "how": "code", "code": 0 }),
        "a drained fixture exits 0: {exited}"
    );
    let pid = i32::try_from(exited["pid"].as_i64().expect("pid")).expect("a pid");
    wait_for("the old generation reaped, not left a zombie", || {
        (parent_of(pid) != Some(sup)).then_some(())
    });
}
