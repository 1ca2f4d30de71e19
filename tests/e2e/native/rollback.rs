use zd_load::load::ConnectionMode;

use crate::support::*;

/// Restarts into a broken new generation under load: `zdctl restart` exits 1 with `reason`,
/// the old generation (same pid) keeps serving and no request fails.
fn assert_rolls_back(env: &mut TestEnv, addr: &str, expect_reason: &str) {
    let before = env.status("api").expect("status");
    let old_pid = active_pid(&before);
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(
        err.contains(expect_reason),
        "expected '{expect_reason}' in: {err}"
    );
    let after = env.status("api").expect("status");
    assert_eq!(
        active_pid(&after),
        old_pid,
        "the old generation must keep serving"
    );
    assert_eq!(after.active_generation, before.active_generation);
    let (code, body) = http_get(addr, "/").expect("GET /");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("pid={old_pid}")), "{body}");
}

/// A new generation that exits at once is rolled back under load that loses nothing.
fn crash_at_start_is_rolled_back(handoff: Handoff) {
    let mut env = TestEnv::new();
    let marker = env.path("crash-next");
    let marker_s = marker.display().to_string();
    env.fixture_service("api", &["--crash-if-exists", &marker_s], handoff.key());
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let load = start_load(&addr, 32, ConnectionMode::Close);
    std::fs::write(&marker, "").expect("marker");
    assert_rolls_back(
        &mut env,
        &addr,
        "exited with exit code 3 before it was ready",
    );
    std::fs::remove_file(&marker).expect("marker");
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    assert_no_failures(&load.finish());
    let s = env.status("api").expect("status");
    assert_eq!((s.restarts.rolled_back, s.restarts.completed), (1, 1));
}

#[test]
fn new_generation_that_crashes_at_start_is_rolled_back_and_no_request_fails_steered() {
    crash_at_start_is_rolled_back(Handoff::Steered);
}

#[test]
fn new_generation_that_crashes_at_start_is_rolled_back_and_no_request_fails_shared() {
    crash_at_start_is_rolled_back(Handoff::Shared);
}

/// A new generation that never waits on its listener is rolled back at the readiness
/// timeout (the file's, or `--timeout`'s) under load that loses nothing.
fn never_ready_is_rolled_back(handoff: Handoff) {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], handoff.key());
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let load = start_load(&addr, 32, ConnectionMode::KeepAlive);
    env.fixture_service(
        "api",
        &["--never-ready"],
        &format!("{}ready:\n  timeout: 1s\n", handoff.key()),
    );
    assert_rolls_back(&mut env, &addr, "was not ready within 1s");
    // The reason says what the accepting check saw: the app holds the listener and no
    // thread of it waits on it.
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("accepting saw 1 process (pid "), "{err}");
    assert!(err.contains("listeners held by pid "), "{err}");
    assert!(err.contains("): none waits on them"), "{err}");
    // --timeout on the command line overrides the file's readiness timeout.
    let started = std::time::Instant::now();
    let out = env.run_zdctl(&["restart", "api", "--timeout", "300ms"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("was not ready within 300ms"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    env.fixture_service("api", &[], handoff.key());
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    assert_no_failures(&load.finish());
}

#[test]
fn new_generation_that_never_becomes_ready_is_rolled_back_at_the_timeout_steered() {
    never_ready_is_rolled_back(Handoff::Steered);
}

#[test]
fn new_generation_that_never_becomes_ready_is_rolled_back_at_the_timeout_shared() {
    never_ready_is_rolled_back(Handoff::Shared);
}

/// A new generation that exits while `alive:2s` runs is rolled back under load that
/// loses nothing.
fn early_exit_is_rolled_back(handoff: Handoff) {
    let mut env = TestEnv::new();
    let extra = format!("{}ready: [accepting, 'alive:2s']\n", handoff.key());
    env.fixture_service("api", &[], &extra);
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let load = start_load(&addr, 32, ConnectionMode::Close);
    env.fixture_service("api", &["--exit-after", "200ms"], &extra);
    assert_rolls_back(
        &mut env,
        &addr,
        "exited with exit code 4 before it was ready",
    );
    assert_no_failures(&load.finish());
}

#[test]
fn new_generation_that_exits_soon_after_start_is_rolled_back_steered() {
    early_exit_is_rolled_back(Handoff::Steered);
}

#[test]
fn new_generation_that_exits_soon_after_start_is_rolled_back_shared() {
    early_exit_is_rolled_back(Handoff::Shared);
}

#[test]
fn invalid_service_file_at_restart_fails_and_leaves_the_old_generation_alone() {
    let mut env = TestEnv::new();
    let file = env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let old_pid = active_pid(&status);
    let good = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, format!("{good}stop_signl: TERM\n")).expect("write");
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("stop_signl"), "{err}");
    assert!(err.contains("stop_signal"), "a did-you-mean hint: {err}");
    assert_eq!(active_pid(&env.status("api").expect("status")), old_pid);
}

/// A new program the kernel refuses to execute is rolled back with the exec error under
/// load that loses nothing.
fn exec_failure_is_rolled_back(handoff: Handoff) {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], handoff.key());
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let load = start_load(&addr, 32, ConnectionMode::Close);
    // Executable and found on the path, so nothing can tell before the fork that the
    // kernel will refuse it: the spawn is reported at once and the exec failure arrives
    // as the child's early exit.
    let broken = env.path("broken-server");
    std::fs::write(&broken, b"\x7fnot a program\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    env.write_service(
        "api",
        &format!(
            "command: [{:?}]\nlisten:\n  - http=127.0.0.1:0\n{}",
            broken.display().to_string(),
            handoff.key()
        ),
    );
    assert_rolls_back(&mut env, &addr, "execve failed: Exec format error");
    let out = env.run_zdctl(&["status", "api"]);
    assert_code(&out, 0);
    env.fixture_service("api", &[], handoff.key());
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    assert_no_failures(&load.finish());
}

#[test]
fn new_program_that_cannot_be_executed_is_rolled_back_with_the_exec_error_steered() {
    exec_failure_is_rolled_back(Handoff::Steered);
}

#[test]
fn new_program_that_cannot_be_executed_is_rolled_back_with_the_exec_error_shared() {
    exec_failure_is_rolled_back(Handoff::Shared);
}

/// A new program that listens on a socket of its own instead of the one it is handed is
/// rolled back at the readiness timeout with the socket, its pid and what to do.
#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_new_program_that_binds_its_own_port_is_rolled_back_with_the_socket_and_what_to_do() {
    let mut env = TestEnv::new();
    let path = env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let own_port = "import socket, time\n\
                    s = socket.socket()\n\
                    s.bind(('127.0.0.1', 0))\n\
                    s.listen()\n\
                    time.sleep(60)\n";
    std::fs::write(
        &path,
        format!(
            "command: [python3, -c, {own_port:?}]\nlisten:\n  - http=127.0.0.1:0\n\
             ready: {{checks: [accepting], timeout: 2s}}\n"
        ),
    )
    .expect("rewrite the service file");
    assert_rolls_back(
        &mut env,
        &addr,
        "listens on a socket of its own, 127.0.0.1:",
    );
    let out = env.run_zdctl(&["status", "api", "--json"]);
    let reason = stdout(&out);
    eprintln!("{reason}");
    for wanted in [
        "binds its port itself",
        "LISTEN_FDS",
        "intercept_binds: true",
    ] {
        assert!(reason.contains(wanted), "{wanted}: {reason}");
    }
}
