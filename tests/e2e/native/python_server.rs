//! A Python server written with the standard library alone (`python/stop_soon.py`:
//! ThreadingHTTPServer on the socket from `LISTEN_FDS`) that on SIGTERM refuses new
//! connections at once, stops its serving loop, and exits 100 ms later without serving
//! what is still queued for it. Its serving thread notices the stop a moment after the
//! signal and meanwhile closes, unanswered, every connection the kernel hands it. Under
//! `handoff: steered` that is none: it gets no new connection once the new generation is
//! promoted, and its stop signal waits until its socket's queue is empty and its
//! connections hold no unread bytes, so 50 restarts lose no request of 32 clients that
//! open a connection per request. Under `handoff: shared` it keeps taking its share of
//! the one queue until it stops, and the same restarts lose some.
//!
//! (A server that stops its loop before it refuses anything loses nothing in either mode
//! here: what it leaves queued stays in a socket that the supervisor keeps open for the
//! next generation. What the shared handoff cannot give is "no new connection after the
//! stop signal".)
//!
//! Needs `python3` on PATH (Debian package `python3`); without it the test is skipped
//! loudly, or fails under `ZD_REQUIRE_PEERS=1`.

use zd_load::load::ConnectionMode;

use crate::support::*;

const SCRIPT: &str = include_str!("python/stop_soon.py");
const RESTARTS: usize = 50;
const CLIENTS: usize = 32;

/// Runs the Python server under `handoff`, restarts it [`RESTARTS`] times under
/// [`CLIENTS`] clients that open a connection per request, and returns the failed requests
/// and the total.
fn restarts_under_load(test: &str, handoff: &str) -> Option<(u64, u64)> {
    let python = crate::drivers::peer(test, "python3", "python3")?;
    let mut env = TestEnv::new();
    let script = env.path("stop_soon.py");
    std::fs::write(&script, SCRIPT).expect("write the Python server");
    env.write_service(
        "api",
        &format!(
            "command: [{:?}, {:?}]\nlisten: 127.0.0.1:0\nhandoff: {handoff}\n",
            python.display().to_string(),
            script.display().to_string()
        ),
    );
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let load = start_load(&addr, CLIENTS, ConnectionMode::Close);
    for _ in 0..RESTARTS {
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    }
    let report = load.finish();
    eprintln!(
        "handoff: {handoff}: {RESTARTS} restarts of the Python server under {CLIENTS} \
         clients with a connection per request: {} of {} requests failed {:?}",
        report.failed(),
        report.total(),
        report.failures_by_kind(),
    );
    assert!(report.total() > 0, "the load sent no request");
    Some((report.failed(), report.total()))
}

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn python_server_that_stops_soon_loses_no_request_across_restarts_with_the_steered_handoff() {
    let test =
        "python_server_that_stops_soon_loses_no_request_across_restarts_with_the_steered_handoff";
    let Some((failed, total)) = restarts_under_load(test, "steered") else {
        return;
    };
    assert_eq!(failed, 0, "steered: requests failed (of {total})");
}

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn python_server_that_stops_soon_loses_requests_across_restarts_with_the_shared_handoff() {
    let test =
        "python_server_that_stops_soon_loses_requests_across_restarts_with_the_shared_handoff";
    let Some((failed, total)) = restarts_under_load(test, "shared") else {
        return;
    };
    assert!(
        failed > 0,
        "shared: no request failed (of {total}), so this test no longer shows what the \
         steered handoff is for"
    );
}
