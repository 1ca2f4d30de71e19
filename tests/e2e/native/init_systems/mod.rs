//! `zdctl run` under runit's `runsv` and daemontools' `supervise`, from the run scripts
//! shipped in `contrib/`: restarts through `zdctl restart` and through the init system's
//! own reload (a HUP) under load, the init system's own stop, and a `kill -9` of the
//! supervisor that the init system answers with a new `zdctl run`, which adopts the
//! generation that was serving.

mod harness;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use zd_core::proto::Status;
use zd_load::load::ConnectionMode;

use crate::support::*;
use harness::{Init, NAME, Supervised};

/// How long a restart begun by a HUP may take before the test fails. The supervisor bounds
/// every phase itself (readiness timeout, the queue wait, `drain_timeout` of 10 s here) and
/// always ends the restart, but on a starved 2-core machine the sum can pass the 30 s of
/// [`DEADLINE`]; `zdctl restart` waits for as long, while the supervisor runs.
const RESTART_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until the `count`th restart has ended, and returns the status then.
fn wait_restart_ended(env: &TestEnv, count: u64) -> Status {
    let start = std::time::Instant::now();
    let mut last = None;
    loop {
        if let Some(status) = env.status(NAME) {
            let r = &status.restarts;
            if status.restart_in_progress.is_none()
                && r.completed + r.rolled_back + r.failed == count
            {
                return status;
            }
            last = Some(status);
        }
        assert!(
            start.elapsed() < RESTART_DEADLINE,
            "restart {count} did not end; last status: {last:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Restart `count` (from 1) through `zdctl restart` when odd, through the init system's
/// own reload when even; asserts that it completed and that only the new generation
/// answers.
fn restart(env: &TestEnv, supervised: &Supervised, count: u64, addr: &str) -> Status {
    if count % 2 == 1 {
        assert_code(&env.run_zdctl(&["restart", NAME]), 0);
    } else {
        supervised.control(supervised.init.reload());
    }
    let status = wait_restart_ended(env, count);
    assert_eq!(
        status.restarts.completed, count,
        "{:?}",
        status.last_restart
    );
    let generation = status.active_generation.expect("an active generation");
    let (code, body) = http_get(addr, "/").expect("GET /");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("generation={generation}")), "{body}");
    status
}

/// Ten restarts under 32 clients, every other one through the init system's reload: each
/// completes in the same supervisor, the init system never sees an exit, and not one
/// request fails.
fn restarts_under_load(init: Init, mode: ConnectionMode, test: &str) {
    let env = TestEnv::new();
    env.fixture_service(NAME, &[], "drain_timeout: 10s\n");
    let Some(mut supervised) = Supervised::start(&env, init, test, None) else {
        return;
    };
    let first = supervised.wait_serving(&env, None);
    let addr = address_of(&first);
    let load = start_load(&addr, 32, mode);
    for count in 1..=10u64 {
        let status = restart(&env, &supervised, count, &addr);
        assert_eq!(status.active_generation, Some(count + 1));
        assert_eq!(
            status.supervisor_pid, first.supervisor_pid,
            "the same zdctl run"
        );
    }
    let report = load.finish();
    assert_no_failures(&report);
    assert_eq!(
        supervised.service_pid(),
        Some(first.supervisor_pid),
        "the init system saw no exit"
    );
    supervised.exit();
}

/// After an upgrade of zdctl: `sv 2` (USR2) under runsv, `zdctl reexec` under supervise
/// (daemontools' `svc` cannot send USR2). The supervisor re-executes in place under load:
/// the same pid for the init system, the same generation, no failed request.
fn reexec_under(init: Init, mode: ConnectionMode, test: &str) {
    let env = TestEnv::new();
    env.fixture_service(NAME, &[], "drain_timeout: 10s\n");
    let Some(mut supervised) = Supervised::start(&env, init, test, None) else {
        return;
    };
    let first = supervised.wait_serving(&env, None);
    let addr = address_of(&first);
    let load = start_load(&addr, 32, mode);
    match init {
        Init::Runit => supervised.control(&["sv", "2"]),
        Init::Daemontools => assert_code(&env.run_zdctl(&["reexec", NAME]), 0),
    }
    let status = wait_for("the supervisor to re-execute", || {
        env.status(NAME)
            .filter(|s| s.supervisor.as_ref().is_some_and(|me| me.reexecs == 1))
    });
    let me = status.supervisor.as_ref().expect("supervisor info");
    let last = me.last_reexec.as_ref().expect("the last reexec");
    assert_eq!(last.error, None, "{last:?}");
    assert_eq!(status.supervisor_pid, first.supervisor_pid, "in place");
    assert_eq!(
        active_pid(&status),
        active_pid(&first),
        "the same generation"
    );
    // It restarts as before.
    let status = restart(&env, &supervised, 1, &addr);
    assert_eq!(status.active_generation, Some(2));
    let report = load.finish();
    assert_no_failures(&report);
    assert_eq!(
        supervised.service_pid(),
        Some(first.supervisor_pid),
        "the init system saw no exit"
    );
    supervised.exit();
}

/// Writes `./run`'s exit code and status byte, as runsv gives them to `./finish`.
fn finish_script(env: &TestEnv) -> String {
    format!(
        "#!/bin/sh\necho \"$1 $2\" >> '{}'\n",
        env.path("finish.log").display()
    )
}

/// The init system's stop sends TERM: zdctl run drains the generation, which answers the
/// request it was serving, and exits with nothing left behind; with 0, as runsv's
/// `./finish` sees.
fn stop_drains(init: Init, test: &str) {
    let env = TestEnv::new();
    env.fixture_service(NAME, &[], "drain_timeout: 10s\n");
    // daemontools 0.76 runs no finish script.
    let finish = matches!(init, Init::Runit).then(|| finish_script(&env));
    let Some(mut supervised) = Supervised::start(&env, init, test, finish.as_deref()) else {
        return;
    };
    let first = supervised.wait_serving(&env, None);
    let serving = active_pid(&first);
    // A keep-alive connection the generation has accepted (it answered once), then a
    // request that takes a while, in flight when the stop comes.
    let mut conn = std::net::TcpStream::connect(address_of(&first)).expect("connect");
    conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .expect("send");
    let mut first_answer = [0u8; 12];
    conn.read_exact(&mut first_answer).expect("first answer");
    assert_eq!(&first_answer[9..12], b"200");
    conn.write_all(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send the slow request");
    supervised.control(init.down());
    let mut rest = String::new();
    conn.read_to_string(&mut rest)
        .expect("the slow request's answer");
    assert!(rest.contains("slept ms=1500"), "{rest}");
    supervised.wait_down();
    assert!(!is_alive(serving), "the generation still runs");
    assert!(!env.socket(NAME).exists(), "the control socket is left");
    assert!(
        !env.runtime_dir.join(format!("{NAME}.state")).exists(),
        "a clean stop leaves no state file"
    );
    let log = supervised.log();
    assert!(log.contains("stopping signal=SIGTERM"), "{log}");
    assert!(log.contains(" stopped"), "{log}");
    if finish.is_some() {
        let finished = wait_for("runsv to run ./finish", || {
            Some(std::fs::read_to_string(env.path("finish.log")).unwrap_or_default())
                .filter(|f| !f.is_empty())
        });
        assert_eq!(finished, "0 0\n", "./run's exit code and status byte");
    }
    supervised.exit();
}

/// `kill -9` of zdctl run under load: the init system starts the run script again, the
/// new zdctl run adopts the generation that was serving, restarts go on through both
/// paths, and not one request fails.
fn kill_9_under(init: Init, mode: ConnectionMode, test: &str) {
    let env = TestEnv::new();
    env.fixture_service(NAME, &[], "drain_timeout: 10s\n");
    // daemontools 0.76 runs no finish script.
    let finish = matches!(init, Init::Runit).then(|| finish_script(&env));
    let Some(mut supervised) = Supervised::start(&env, init, test, finish.as_deref()) else {
        return;
    };
    let first = supervised.wait_serving(&env, None);
    let addr = address_of(&first);
    let serving = active_pid(&first);
    // Once its supervisor is dead, the generation is no longer in the init system's tree.
    supervised.track(serving);
    let inodes: Vec<u64> = first.listeners.iter().map(|l| l.inode).collect();
    let load = start_load(&addr, 32, mode);

    // SAFETY: kill(2) of the zdctl run this test's init system started, which is alive.
    unsafe { libc::kill(first.supervisor_pid, libc::SIGKILL) };
    let adopted = supervised.wait_serving(&env, Some(first.supervisor_pid));
    assert_eq!(
        active_pid(&adopted),
        serving,
        "the generation that was serving"
    );
    assert_eq!(adopted.active_generation, first.active_generation);
    let got: Vec<u64> = adopted.listeners.iter().map(|l| l.inode).collect();
    assert_eq!(got, inodes, "the same listening sockets");
    let out = env.run_zdctl(&["status", NAME, "--json"]);
    assert_code(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status json");
    let info = &json["supervisor"]["adopted"];
    assert_eq!(
        info["from_pid"].as_i64(),
        Some(i64::from(first.supervisor_pid)),
        "{json}"
    );
    assert_eq!(info["generations"], serde_json::json!([1]), "{json}");

    for count in 1..=2u64 {
        let status = restart(&env, &supervised, count, &addr);
        assert_eq!(status.active_generation, Some(count + 1));
        assert_eq!(status.supervisor_pid, adopted.supervisor_pid);
    }
    // The adopted generation was drained by the first restart.
    assert!(!is_alive(serving), "pid {serving} still runs");
    let report = load.finish();
    assert_no_failures(&report);

    supervised.control(init.down());
    supervised.wait_down();
    if finish.is_some() {
        let finished = wait_for("runsv to run ./finish after the stop", || {
            Some(std::fs::read_to_string(env.path("finish.log")).unwrap_or_default())
                .filter(|f| f.lines().count() == 2)
        });
        assert_eq!(
            finished, "-1 9\n0 0\n",
            "killed by SIGKILL, then a clean stop"
        );
    }
    supervised.exit();
}

#[test]
#[cfg_attr(not(has_runit), ignore = "runit not installed (Debian package runit)")]
fn runsv_restarts_through_zdctl_restart_and_sv_hup_fail_no_request_with_a_new_connection_per_request()
 {
    restarts_under_load(
        Init::Runit,
        ConnectionMode::Close,
        "runsv_restarts_through_zdctl_restart_and_sv_hup_fail_no_request_with_a_new_connection_per_request",
    );
}

#[test]
#[cfg_attr(not(has_runit), ignore = "runit not installed (Debian package runit)")]
fn runsv_restarts_through_zdctl_restart_and_sv_hup_fail_no_request_with_keepalive() {
    restarts_under_load(
        Init::Runit,
        ConnectionMode::KeepAlive,
        "runsv_restarts_through_zdctl_restart_and_sv_hup_fail_no_request_with_keepalive",
    );
}

#[test]
#[cfg_attr(
    not(has_daemontools),
    ignore = "daemontools not installed (Debian package daemontools)"
)]
fn supervise_restarts_through_zdctl_restart_and_svc_h_fail_no_request_with_a_new_connection_per_request()
 {
    restarts_under_load(
        Init::Daemontools,
        ConnectionMode::Close,
        "supervise_restarts_through_zdctl_restart_and_svc_h_fail_no_request_with_a_new_connection_per_request",
    );
}

#[test]
#[cfg_attr(
    not(has_daemontools),
    ignore = "daemontools not installed (Debian package daemontools)"
)]
fn supervise_restarts_through_zdctl_restart_and_svc_h_fail_no_request_with_keepalive() {
    restarts_under_load(
        Init::Daemontools,
        ConnectionMode::KeepAlive,
        "supervise_restarts_through_zdctl_restart_and_svc_h_fail_no_request_with_keepalive",
    );
}

#[test]
#[cfg_attr(not(has_runit), ignore = "runit not installed (Debian package runit)")]
fn sv_down_drains_the_request_in_flight_and_the_run_script_exits_0() {
    stop_drains(
        Init::Runit,
        "sv_down_drains_the_request_in_flight_and_the_run_script_exits_0",
    );
}

#[test]
#[cfg_attr(
    not(has_daemontools),
    ignore = "daemontools not installed (Debian package daemontools)"
)]
fn svc_d_drains_the_request_in_flight_and_leaves_nothing_behind() {
    stop_drains(
        Init::Daemontools,
        "svc_d_drains_the_request_in_flight_and_leaves_nothing_behind",
    );
}

#[test]
#[cfg_attr(not(has_runit), ignore = "runit not installed (Debian package runit)")]
fn after_kill_9_of_zdctl_run_runsv_starts_it_again_and_it_adopts_the_serving_generation_with_a_new_connection_per_request()
 {
    kill_9_under(
        Init::Runit,
        ConnectionMode::Close,
        "after_kill_9_of_zdctl_run_runsv_starts_it_again_and_it_adopts_the_serving_generation_with_a_new_connection_per_request",
    );
}

#[test]
#[cfg_attr(not(has_runit), ignore = "runit not installed (Debian package runit)")]
fn after_kill_9_of_zdctl_run_runsv_starts_it_again_and_it_adopts_the_serving_generation_with_keepalive()
 {
    kill_9_under(
        Init::Runit,
        ConnectionMode::KeepAlive,
        "after_kill_9_of_zdctl_run_runsv_starts_it_again_and_it_adopts_the_serving_generation_with_keepalive",
    );
}

#[test]
#[cfg_attr(
    not(has_daemontools),
    ignore = "daemontools not installed (Debian package daemontools)"
)]
fn after_kill_9_of_zdctl_run_supervise_starts_it_again_and_it_adopts_the_serving_generation() {
    kill_9_under(
        Init::Daemontools,
        ConnectionMode::Close,
        "after_kill_9_of_zdctl_run_supervise_starts_it_again_and_it_adopts_the_serving_generation",
    );
}

#[test]
#[cfg_attr(not(has_runit), ignore = "runit not installed (Debian package runit)")]
fn sv_2_reexecs_zdctl_run_in_place_under_load_without_a_failed_request() {
    reexec_under(
        Init::Runit,
        ConnectionMode::Close,
        "sv_2_reexecs_zdctl_run_in_place_under_load_without_a_failed_request",
    );
}

#[test]
#[cfg_attr(
    not(has_daemontools),
    ignore = "daemontools not installed (Debian package daemontools)"
)]
fn zdctl_reexec_under_supervise_keeps_the_supervised_pid_without_a_failed_request() {
    reexec_under(
        Init::Daemontools,
        ConnectionMode::KeepAlive,
        "zdctl_reexec_under_supervise_keeps_the_supervised_pid_without_a_failed_request",
    );
}

/// Every shell script in `contrib/` for runit, daemontools and OpenRC is executable and
/// parses as POSIX sh (`sh -n`; OpenRC's own `openrc-run` cannot run here, see
/// `contrib/openrc/README.md`).
#[test]
fn the_shipped_init_scripts_are_executable_and_parse_as_posix_sh() {
    use std::os::unix::fs::PermissionsExt;
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("contrib");
    for script in [
        "runit/run",
        "runit/log-run",
        "daemontools/run",
        "daemontools/log-run",
        "openrc/zdctl",
    ] {
        let path = contrib.join(script);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable: {mode:o}");
        let out = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("run sh -n");
        assert_code(&out, 0);
    }
}
