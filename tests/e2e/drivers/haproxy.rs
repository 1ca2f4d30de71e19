//! Real HAProxy (Debian haproxy) in master-worker mode, reloaded ten times under load.

use std::process::Command;

use zd_load::load::ConnectionMode;

use super::{Peer, free_port, peer, restart_times};
use crate::support::{TestEnv, assert_no_failures, start_load, wait_for};

#[test]
fn haproxy_reloads_ten_times_under_load_without_a_failed_request() {
    let Some(program) = peer("haproxy reload", "haproxy", "haproxy") else {
        return;
    };
    let env = TestEnv::new();
    let port = free_port();
    let config = env.path("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  \
             timeout client 10s\n  timeout server 10s\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
             http-request return status 200 content-type text/plain string ok\n"
        ),
    )
    .expect("haproxy.cfg");
    let socket = env.path("master.sock");
    let pidfile = env.path("haproxy.pid");
    let mut cmd = Command::new(program);
    cmd.arg("-W")
        .arg("-S")
        .arg(&socket)
        .arg("-f")
        .arg(&config)
        .arg("-p")
        .arg(&pidfile);
    let _peer = Peer::spawn(cmd, &env.path("haproxy.out"));
    let addr = format!("127.0.0.1:{port}");
    wait_for("haproxy to answer", || {
        crate::support::http_get(&addr, "/").ok()
    });
    // The socket file exists once bound, a moment before the master listens on it.
    wait_for("haproxy's master socket", || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    });
    env.write_service(
        "lb",
        &format!(
            "driver: haproxy\nsocket: {}\npidfile: {}\ntimeout: 20s\n",
            socket.display(),
            pidfile.display()
        ),
    );
    let load = start_load(&addr, 16, ConnectionMode::Close);
    restart_times(&env, "lb", 10);
    assert_no_failures(&load.finish());
}
