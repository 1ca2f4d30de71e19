//! A real start_server (Debian libserver-starter-perl) in front of zd-fixture.

use std::process::Command;
use std::time::Duration;

use zd_load::load::ConnectionMode;

use super::{
    Peer, assert_fast_rollback, assert_listener_held_by_active, free_port, peer, restart_json,
    restart_times,
};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, fixture_bin, start_load, stderr, wait_for,
};

pub(super) struct StartServer {
    _peer: Peer,
    pub(super) addr: String,
}

pub(super) fn start(env: &TestEnv, program: &std::path::Path, worker: &[&str]) -> StartServer {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(program);
    cmd.arg(format!("--port={addr}"))
        .arg(format!("--pid-file={}", env.path("ss.pid").display()))
        .arg(format!("--status-file={}", env.path("ss.status").display()))
        .arg("--interval=1")
        .arg("--")
        .args(worker);
    let peer = Peer::spawn(cmd, &env.path("start_server.log"));
    wait_for("start_server's first worker", || {
        let text = std::fs::read_to_string(env.path("ss.status")).ok()?;
        (!text.trim().is_empty()).then_some(())
    });
    wait_for("the worker to answer", || {
        crate::support::http_get(&addr, "/").ok()
    });
    env.write_service(
        "ss",
        &format!(
            "driver: start_server\npidfile: {}\nstatus_file: {}\ntimeout: {}\n",
            env.path("ss.pid").display(),
            env.path("ss.status").display(),
            super::script::TIMEOUT
        ),
    );
    StartServer { _peer: peer, addr }
}

#[test]
#[cfg_attr(
    not(has_start_server),
    ignore = "start_server not installed (Debian package libserver-starter-perl)"
)]
#[cfg_attr(
    all(has_start_server, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn start_server_passes_the_driver_script() {
    let Some(program) = peer("start_server", "start_server", "libserver-starter-perl") else {
        return;
    };
    let env = TestEnv::new();
    let (worker, marker) = super::script::worker(&env);
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let server = start(&env, &program, &worker);
    super::script::run(
        &env,
        super::script::Case {
            name: "ss",
            driver: "start_server",
            addr: server.addr.clone(),
            mode: ConnectionMode::KeepAlive,
            break_next: super::script::touch(marker),
            on_failure: super::script::OnFailure::RollsBack,
            guard: Box::new(server),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_start_server),
    ignore = "start_server not installed (Debian package libserver-starter-perl)"
)]
fn start_server_restarts_ten_times_under_load_without_a_failed_request() {
    let Some(program) = peer("start_server", "start_server", "libserver-starter-perl") else {
        return;
    };
    let env = TestEnv::new();
    let fixture = fixture_bin().display().to_string();
    let server = start(&env, &program, &[&fixture]);
    let load = start_load(&server.addr, 16, ConnectionMode::Close);
    restart_times(&env, "ss", 10);
    assert_listener_held_by_active(&env, "ss", &server.addr);
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_start_server),
    ignore = "start_server not installed (Debian package libserver-starter-perl)"
)]
fn start_server_with_a_new_worker_that_dies_fails_with_the_reason() {
    let Some(program) = peer("start_server", "start_server", "libserver-starter-perl") else {
        return;
    };
    let env = TestEnv::new();
    // The first worker serves; every later one exits at once (a marker file says which).
    let marker = env.path("started");
    let fixture = fixture_bin().display().to_string();
    let script = format!(
        "if [ -e {m} ]; then exit 7; fi; touch {m}; exec {fixture}",
        m = marker.display()
    );
    let server = start(&env, &program, &["sh", "-c", &script]);
    let old = crate::support::descendants(server._peer.pid());
    let load = start_load(&server.addr, 16, ConnectionMode::Close);
    let (out, events, elapsed) = restart_json(&env, "ss", &[]);
    let test = "start_server_with_a_new_worker_that_dies_fails_with_the_reason";
    assert_fast_rollback(test, &out, &events, elapsed, Duration::from_secs(20), &old);
    assert!(
        stderr(&out).contains("exited within start_server's --interval"),
        "{}",
        stderr(&out)
    );
    assert_no_failures(&load.finish());
}

#[test]
fn a_start_server_status_file_holding_garbage_is_an_error_and_nothing_is_signalled() {
    let env = TestEnv::new();
    // A process whose command line names start_server, so the pidfile check passes; HUP
    // would end it.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 1000; :", "start_server"]);
    let fake = Peer::spawn(cmd, &env.path("fake.out"));
    std::fs::write(env.path("ss.pid"), format!("{}\n", fake.pid())).expect("pidfile");
    std::fs::write(env.path("ss.status"), "<html>not a status file</html>\n").expect("status");
    env.write_service(
        "ss",
        &format!(
            "driver: start_server\npidfile: {}\nstatus_file: {}\ntimeout: 5s\n",
            env.path("ss.pid").display(),
            env.path("ss.status").display()
        ),
    );
    let out = env.run_zdctl(&["restart", "ss"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("holds no 'generation:pid' line"),
        "{}",
        stderr(&out)
    );
    assert!(
        crate::support::is_alive(fake.pid()),
        "the process was signalled"
    );
}
