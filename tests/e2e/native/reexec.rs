//! `zdctl reexec` and SIGUSR2: the supervisor replaces its program in place, keeping its
//! pid, its listeners and its generations, under load and between restarts; a binary that
//! cannot take over leaves it as it was; a reexec asked for during a restart waits for it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zd_core::proto::{GenerationState, Status};
use zd_load::load::ConnectionMode;

use crate::support::*;

/// The version an unstamped build reports, and the tag of the second build.
const SECOND_TAG: &str = "second";

fn original_version() -> String {
    zd_core::version::version()
}

fn second_version() -> String {
    format!("{}+{SECOND_TAG}", original_version())
}

/// A second build of zdctl in the test's dir: a copy of the one under test with a build
/// tag stamped in, so that it reports `VERSION+second`.
fn second_build(env: &TestEnv) -> PathBuf {
    let mut bytes = std::fs::read(zdctl_bin()).expect("read zdctl");
    assert!(
        zd_core::version::stamp(&mut bytes, SECOND_TAG),
        "no empty stamp slot in zdctl"
    );
    let path = env.path("zdctl-second");
    write_file(&path, &bytes, 0o755);
    path
}

/// Writes a file with `mode`, closed before anything can exec it (an fd open for
/// writing makes exec fail with ETXTBSY).
fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn supervisor_of(status: &Status) -> &zd_core::proto::SupervisorInfo {
    status
        .supervisor
        .as_ref()
        .expect("status reports the supervisor")
}

fn inodes(status: &Status) -> Vec<u64> {
    status.listeners.iter().map(|l| l.inode).collect()
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `zdctl reexec api --binary BINARY --json`, which must succeed; its JSON line.
fn reexec_json(env: &TestEnv, binary: &Path) -> serde_json::Value {
    let out = env.run_zdctl(&["reexec", "api", "--binary", path_text(binary), "--json"]);
    assert_code(&out, 0);
    serde_json::from_str(stdout(&out).trim()).expect("one JSON line")
}

/// 10 reexecs alternating between two builds, each followed by a restart, under 32
/// clients: not one request fails, the supervisor keeps its pid, a reexec never changes a
/// listener (a shared one never changes at all), each reexec reports the binary it ran.
fn reexecs_and_restarts_under_load(mode: ConnectionMode, handoff: Handoff) {
    let mut env = TestEnv::new();
    let second = second_build(&env);
    let original = zdctl_bin();
    env.fixture_service(
        "api",
        &[],
        &format!("drain_timeout: 10s\n{}", handoff.key()),
    );
    let first = env.start("api", &["run", "api"]);
    let pid = env.supervisor("api").child.id() as i32;
    assert_eq!(first.supervisor_pid, pid);
    assert_eq!(supervisor_of(&first).version, original_version());
    assert_eq!(supervisor_of(&first).reexecs, 0);
    let addr = address_of(&first);
    let load = start_load(&addr, 32, mode);
    for i in 0..10u64 {
        let (binary, version) = if i % 2 == 0 {
            (&second, second_version())
        } else {
            (&original, original_version())
        };
        let before = env.status("api").expect("status before the reexec");
        let done = reexec_json(&env, binary);
        let after = env.status("api").expect("status after the reexec");
        assert_eq!(done["supervisor_pid"], pid, "reexec {i}: {done}");
        assert_eq!(done["to_version"], version.as_str(), "reexec {i}: {done}");
        assert_eq!(done["reexecs"], i + 1, "reexec {i}: {done}");
        assert_eq!(
            done["listener_inodes"],
            serde_json::json!(inodes(&before)),
            "reexec {i}: {done}"
        );
        assert_eq!(after.supervisor_pid, pid, "reexec {i}");
        assert_eq!(
            inodes(&after),
            inodes(&before),
            "reexec {i} changed a listener"
        );
        assert_eq!(
            after.active_generation, before.active_generation,
            "reexec {i} changed the active generation"
        );
        let me = supervisor_of(&after);
        assert_eq!(me.version, version, "reexec {i}");
        assert_eq!(me.reexecs, i + 1, "reexec {i}");
        let last = me.last_reexec.as_ref().expect("last reexec");
        assert_eq!(last.error, None, "reexec {i}: {last:?}");
        // The process that runs is the binary asked for.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the supervisor's exe");
        assert_eq!(
            exe.canonicalize().expect("exe"),
            binary.canonicalize().expect("binary"),
            "reexec {i}"
        );

        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
        let restarted = env.status("api").expect("status after the restart");
        assert_eq!(restarted.supervisor_pid, pid, "restart {i}");
        assert_eq!(restarted.active_generation, Some(i + 2), "restart {i}");
        assert_eq!(supervisor_of(&restarted).version, version, "restart {i}");
        if matches!(handoff, Handoff::Shared) {
            assert_eq!(inodes(&restarted), inodes(&first), "restart {i}");
        }
        let (code, body) = http_get(&addr, "/").expect("GET /");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(&format!("generation={}", i + 2)), "{body}");
    }
    let report = load.finish();
    assert_no_failures(&report);
    let status = env.status("api").expect("status");
    assert_eq!(status.restarts.completed, 10);
    assert_eq!(status.restarts.rolled_back + status.restarts.failed, 0);
    assert!(
        env.supervisor("api")
            .child
            .try_wait()
            .expect("try_wait")
            .is_none(),
        "the supervisor this test started has exited"
    );
}

#[test]
fn ten_reexecs_between_restarts_with_a_new_connection_per_request_keep_the_pid_and_listeners() {
    reexecs_and_restarts_under_load(ConnectionMode::Close, Handoff::Steered);
}

#[test]
fn ten_reexecs_between_shared_restarts_with_keepalive_keep_the_pid_and_the_one_listener() {
    reexecs_and_restarts_under_load(ConnectionMode::KeepAlive, Handoff::Shared);
}

#[test]
fn a_reexec_to_a_binary_that_crashes_or_is_not_executable_leaves_the_supervisor_serving() {
    let mut env = TestEnv::new();
    // A program that dies of SIGSEGV at once, without leaving a core file behind.
    let crashes = env.path("crashes");
    write_file(&crashes, b"#!/bin/sh\nulimit -c 0\nkill -SEGV $$\n", 0o755);
    // A real zdctl, but without the execute bits.
    let not_executable = env.path("zdctl-not-executable");
    let bytes = std::fs::read(zdctl_bin()).expect("read zdctl");
    write_file(&not_executable, &bytes, 0o644);
    env.fixture_service("api", &[], "");
    let first = env.start("api", &["run", "api"]);
    let pid = first.supervisor_pid;
    let addr = address_of(&first);
    for (round, binary) in [&crashes, &not_executable].into_iter().enumerate() {
        let out = env.run_zdctl(&["reexec", "api", "--binary", path_text(binary)]);
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(err.contains("reexec of 'api' failed"), "{err}");
        assert!(err.contains("the supervisor runs on as before"), "{err}");
        assert!(err.contains(path_text(binary)), "{err}");

        let status = env.status("api").expect("status");
        assert_eq!(status.supervisor_pid, pid);
        let me = supervisor_of(&status);
        assert_eq!(me.version, original_version());
        assert_eq!(me.reexecs, 0);
        let last = me.last_reexec.as_ref().expect("the refused reexec");
        assert_eq!(last.binary, path_text(binary), "{last:?}");
        assert!(last.error.is_some(), "{last:?}");

        let (code, body) = http_get(&addr, "/").expect("GET / after the refused reexec");
        assert_eq!(code, 200, "{body}");
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
        let restarted = env.status("api").expect("status");
        let generation = round as u64 + 2;
        assert_eq!(restarted.active_generation, Some(generation));
        assert_eq!(supervisor_of(&restarted).version, original_version());
        let (code, body) = http_get(&addr, "/").expect("GET / after the restart");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(&format!("generation={generation}")), "{body}");
    }
    let log = env.log("api");
    assert!(log.contains("reexec refused"), "{log}");
}

#[test]
fn sigusr2_re_executes_the_installed_binary_in_place() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let first = env.start("api", &["run", "api"]);
    let pid = first.supervisor_pid;
    let generation = first.active_generation;
    // SAFETY: kill(2) on the supervisor this test started, which is running.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    let status = wait_for("the supervisor to have re-executed itself", || {
        env.status("api")
            .filter(|s| s.supervisor.as_ref().is_some_and(|me| me.reexecs == 1))
    });
    assert_eq!(status.supervisor_pid, pid);
    assert_eq!(status.active_generation, generation);
    assert_eq!(inodes(&status), inodes(&first));
    let me = supervisor_of(&status);
    assert_eq!(me.version, original_version());
    let last = me.last_reexec.as_ref().expect("last reexec");
    assert_eq!(last.error, None, "{last:?}");
    let (code, body) = http_get(&address_of(&status), "/").expect("GET /");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("generation=1"), "{body}");
    assert!(
        env.supervisor("api")
            .child
            .try_wait()
            .expect("try_wait")
            .is_none(),
        "the supervisor exited"
    );
}

#[test]
fn a_reexec_during_a_restart_is_busy_without_wait_and_done_after_it_with_wait() {
    let mut env = TestEnv::new();
    // Each generation sleeps a while before it takes its listeners: long enough to catch
    // the new one asleep and hold it there, so that the restart is sure to be running.
    env.fixture_service("api", &["--start-delay", "1s"], "");
    let first = env.start("api", &["run", "api"]);
    let pid = first.supervisor_pid;
    // The first generation serves (its own start delay is over) before the restart.
    let (code, body) = http_get(&address_of(&first), "/").expect("GET /");
    assert_eq!(code, 200, "{body}");
    let restart = env
        .zdctl()
        .args(["restart", "api"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zdctl restart");
    let new_pid = wait_for("the new generation to be spawned", || {
        let status = env.status("api")?;
        status
            .generations
            .iter()
            .find(|g| g.generation == 2 && g.pid > 0)
            .map(|g| g.pid)
    });
    let held = Stopped::new(new_pid);
    let status = env.status("api").expect("status");
    assert!(status.restart_in_progress.is_some(), "{status:?}");
    let starting = status.generations.iter().find(|g| g.generation == 2);
    assert!(
        starting.is_some_and(|g| g.state == GenerationState::Starting),
        "the new generation was caught before it was ready: {starting:?}"
    );

    // `--wait 0s`: one request, answered "busy".
    let out = env.run_zdctl(&["reexec", "api", "--wait", "0s"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("the supervisor of 'api' is busy"), "{err}");
    assert!(err.contains("restart"), "{err}");
    assert!(err.contains("run 'zdctl reexec api' again"), "{err}");
    let status = env.status("api").expect("status");
    assert_eq!(supervisor_of(&status).reexecs, 0);

    // With the default wait, it asks again until the restart has ended.
    let waiting = env
        .zdctl()
        .args(["reexec", "api", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zdctl reexec");
    // Not a condition to wait for: a moment for the client to ask at least once while
    // the restart is held. The test holds whichever way the moment falls.
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(held);
    assert_code(&restart.wait_with_output().expect("zdctl restart"), 0);
    let out = waiting.wait_with_output().expect("zdctl reexec");
    assert_code(&out, 0);
    let done: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(done["supervisor_pid"], pid, "{done}");
    assert_eq!(done["reexecs"], 1, "{done}");
    let status = env.status("api").expect("status");
    assert_eq!(status.supervisor_pid, pid);
    assert_eq!(status.active_generation, Some(2));
    assert_eq!(status.restarts.completed, 1);
    assert_eq!(supervisor_of(&status).reexecs, 1);
    let (code, body) = http_get(&address_of(&status), "/").expect("GET /");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("generation=2"), "{body}");
}
