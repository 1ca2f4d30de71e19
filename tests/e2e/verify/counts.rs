//! verify's numbers against workloads whose failures are known in advance.

use std::net::TcpListener;

use super::verify_json;
use crate::support::*;

/// Every K-th request answered 500 by the one generation: verify counts exactly those.
#[test]
fn verify_counts_exactly_the_requests_a_fixture_fails_on_purpose() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &["--fail-every", "7"], "");
    let status = env.start("api", &["run", "api"]);
    let url = format!("http://{}/", address_of(&status));
    let (out, report) = verify_json(
        &env,
        &[
            "api",
            "--url",
            &url,
            "--restarts",
            "0",
            "--duration",
            "1s",
            "--concurrency",
            "4",
        ],
    );
    assert_code(&out, 1);
    let requests = report["requests"].as_u64().expect("requests");
    assert!(requests >= 7, "{report:#}");
    assert_eq!(report["failures"]["non_2xx"], requests / 7, "{report:#}");
    assert_eq!(report["failed"], requests / 7, "{report:#}");
    for other in ["refused", "reset", "timeout", "short_read", "other"] {
        assert_eq!(report["failures"][other], 0, "{other}: {report:#}");
    }
    assert_eq!(report["passed"], false);
}

/// Kills what a naive restart left running when the test ends, passing or not.
struct PidFileGuard(std::path::PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: a plain kill(2) of the fixture this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Stop-then-start through `--restart-cmd`: the port is closed between the two processes,
/// so connections are refused and verify must exit 1 and count them.
#[test]
fn verify_counts_the_refused_connections_of_a_stop_then_start_restart() {
    let env = TestEnv::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let pidfile = env.path("fixture.pid");
    let _guard = PidFileGuard(pidfile.clone());
    let start = format!(
        "{:?} --listen {addr} >/dev/null 2>&1 & echo $! > {:?}",
        fixture_bin().display().to_string(),
        pidfile.display().to_string()
    );
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", &start])
        .status()
        .expect("sh");
    assert!(status.success());
    wait_for("the fixture to answer", || http_get(&addr, "/").ok());
    // Stop, wait until it is gone, leave the port closed a moment, start a new one.
    let restart = format!(
        "old=$(cat {pid}); kill $old; while kill -0 $old 2>/dev/null; do sleep 0.01; done; \
         sleep 0.1; {start}; sleep 0.2",
        pid = format_args!("{:?}", pidfile.display().to_string()),
    );
    let url = format!("http://{addr}/");
    let (out, report) = verify_json(
        &env,
        &[
            "--restart-cmd",
            &restart,
            "--url",
            &url,
            "--restarts",
            "3",
            "--interval",
            "100ms",
            "--concurrency",
            "4",
            "--close",
        ],
    );
    assert_code(&out, 1);
    assert!(
        report["failures"]["refused"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    assert_eq!(report["flips"]["completed"], 3, "{report:#}");
    assert_eq!(report["passed"], false);
    assert!(stderr(&out).contains("requests failed"), "{}", stderr(&out));
}

/// A keep-alive server that reads every third request of a connection and closes the
/// connection without answering, as a server closing an idle connection does when a
/// request crosses the close. Serves until the test process ends.
fn hang_up_every_third_request() -> String {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                for n in 1.. {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    buf.drain(..end);
                    if n % 3 == 0 {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                    if stream.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/")
}

/// `--retry-idle-close` sends such a request again on a new connection and counts it as
/// retried; without it, each is a reset.
#[test]
fn verify_retries_a_request_whose_kept_alive_connection_closed_unanswered_only_when_asked() {
    let env = TestEnv::new();
    let url = hang_up_every_third_request();
    let args = |retry: bool| {
        let mut args = vec![
            "--restart-cmd",
            "true",
            "--url",
            &url,
            "--restarts",
            "0",
            "--duration",
            "1s",
            "--concurrency",
            "2",
        ];
        if retry {
            args.push("--retry-idle-close");
        }
        verify_json(&env, &args)
    };
    let (out, strict) = args(false);
    assert_code(&out, 1);
    let requests = strict["requests"].as_u64().expect("requests");
    assert!(
        strict["failures"]["reset"].as_u64() >= Some(requests / 4),
        "{strict:#}"
    );
    assert_eq!(strict["retried"], 0, "{strict:#}");

    let (out, retrying) = args(true);
    assert_code(&out, 0);
    assert_eq!(retrying["failed"], 0, "{retrying:#}");
    let requests = retrying["requests"].as_u64().expect("requests");
    assert!(
        retrying["retried"].as_u64() >= Some(requests / 3),
        "{retrying:#}"
    );
    assert_eq!(retrying["passed"], true, "{retrying:#}");

    let out = env.run_zdctl(&[
        "verify",
        "--restart-cmd",
        "true",
        "--url",
        &url,
        "--close",
        "--retry-idle-close",
    ]);
    assert_code(&out, 2);
}
