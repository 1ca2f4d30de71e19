//! What a client can make the supervisor spend: connections are capped, a client that does
//! not read its replies stops being read, and the service is restarted and respawned
//! whatever the clients do.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::support::*;

/// The supervisor's connection cap (`zd_core::proto::Limits::DEFAULT`).
const CAP: usize = 64;

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Whether the server closed `conn` after telling it there are too many connections.
fn refused(conn: &mut UnixStream) -> bool {
    let mut buf = [0u8; 512];
    match conn.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).contains("too_many_connections"),
        Err(_) => false,
    }
}

#[test]
fn a_flood_of_connections_is_capped_and_the_service_still_restarts_and_respawns() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let pid = status.supervisor_pid;
    let fds_before = fd_count(pid);
    let socket = env.socket("api");

    // Five times the cap, all held open and idle.
    const FLOOD: usize = 5 * CAP;
    let mut flood: Vec<UnixStream> = (0..FLOOD)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    for conn in &flood {
        conn.set_nonblocking(true).expect("nonblocking");
    }
    // Every connection past the cap is told why and closed; the first CAP are served.
    let mut told = vec![false; FLOOD];
    wait_for("the connections over the cap to be refused", || {
        for (conn, told) in flood.iter_mut().zip(told.iter_mut()) {
            *told = *told || refused(conn);
        }
        (told.iter().filter(|t| **t).count() == FLOOD - CAP).then_some(())
    });
    let fds = fd_count(pid);
    assert!(
        fds <= fds_before + CAP + 2,
        "the supervisor holds {fds} fds with {FLOOD} connections open ({fds_before} before)"
    );
    // A fresh client is refused with a clear message while the slots are taken.
    let out = env.run_zdctl(&["status", "api"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("too many control connections"),
        "{}",
        stderr(&out)
    );

    // Free a few slots: the supervisor answers again, restarts, and respawns a crash.
    let mut served: Vec<UnixStream> = flood
        .drain(..)
        .zip(told)
        .filter(|(_, told)| !told)
        .map(|(conn, _)| conn)
        .collect();
    served.truncate(CAP - 4);
    wait_for("a fresh status to be answered", || {
        env.run_zdctl(&["status", "api"])
            .status
            .success()
            .then_some(())
    });
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    let before = env.status("api").expect("status");
    let old = active_pid(&before);
    // SAFETY: kill(2) on the service's own active generation, started by this test.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("the crashed generation to be respawned", || {
        let status = env.status("api")?;
        let pid = status
            .generations
            .iter()
            .find(|g| Some(g.generation) == status.active_generation)?
            .pid;
        (pid != old && is_alive(pid)).then_some(())
    });
    assert_eq!(served.len(), CAP - 4, "the held connections stayed open");
}

#[test]
fn a_client_that_pipelines_without_reading_leaves_the_supervisor_small_and_serving() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let pid = status.supervisor_pid;
    let rss_before = rss_kib(pid);

    // 200 000 status requests, never a reply read: the writes stop once the supervisor
    // stops reading, and the write timeout ends the attempt.
    let mut conn = UnixStream::connect(env.socket("api")).expect("connect");
    conn.set_write_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let line = b"{\"v\":1,\"id\":1,\"op\":\"status\"}\n";
    let batch: Vec<u8> = line.repeat(1000);
    let mut sent = 0;
    while sent < 200_000 {
        if conn.write_all(&batch).is_err() {
            break;
        }
        sent += 1000;
    }
    assert!(
        sent < 200_000,
        "the supervisor read all {sent} requests of a client that reads nothing"
    );
    let rss = rss_kib(pid);
    assert!(
        rss < rss_before + 20 * 1024,
        "the supervisor grew from {rss_before} KiB to {rss} KiB for {sent} unread requests"
    );
    // Others are served meanwhile.
    assert_code(&env.run_zdctl(&["status", "api"]), 0);
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    drop(conn);
}
