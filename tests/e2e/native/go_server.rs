//! The steered handoff's reason to exist: a Go net/http server written the standard way
//! (Serve, then Shutdown on SIGTERM) drops the requests it reads after its stop signal.
//! Under `handoff: steered` it gets no new connection once the new generation is
//! promoted, and is asked to stop only once it has taken what was queued for it, so 50
//! restarts lose no request of the clients that open a connection per request; under
//! `handoff: shared` the same restarts lose some.
//!
//! Clients that keep their connection are loaded at the same time. `Shutdown` closes the
//! old generation's idle keep-alive connections, and a request the client sent just as
//! that close happened is never answered, in either mode: steering decides where new
//! connections go, it cannot move an established one. HTTP clients send such a request
//! again on a new connection (RFC 9112 9.3.1.1); these clients do too
//! (`retry_idle_close`), so under `steered` they lose nothing either. The retries are
//! printed.
//!
//! The server and the toolchain that builds it come from `zd_tests::go`.

use zd_load::load::ConnectionMode;

use crate::drivers::skip;
use crate::support::*;

const RESTARTS: usize = 50;

/// Runs the Go server under `handoff`, restarts it [`RESTARTS`] times under 16 clients
/// that open a connection per request and 16 that keep theirs (and retry a request whose
/// connection closed unanswered), and returns the failed requests of each load
/// (connection per request, keep-alive) and the total.
fn restarts_under_load(test: &str, handoff: &str) -> Option<(u64, u64, u64)> {
    let go = match zd_tests::go::toolchain() {
        Ok(go) => go,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let mut env = TestEnv::new();
    let bin = zd_tests::go::build_shutdown_server(&go, env.dir.path()).expect("the Go server");
    env.write_service(
        "api",
        &format!(
            "command: ['{}']\nlisten: 127.0.0.1:0\nhandoff: {handoff}\n",
            bin.display()
        ),
    );
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let per_request = start_load(&addr, 16, ConnectionMode::Close);
    let mut retrying = load_config(&addr, 16, ConnectionMode::KeepAlive);
    retrying.retry_idle_close = true;
    let keep_alive = start_configured_load(retrying);
    for _ in 0..RESTARTS {
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    }
    let (per_request, keep_alive) = (per_request.finish(), keep_alive.finish());
    let total = per_request.total() + keep_alive.total();
    eprintln!(
        "handoff: {handoff}: {RESTARTS} restarts, {total} requests, failed: {} with a \
         connection per request {:?}, {} with keep-alive {:?} ({} retried on a new \
         connection)",
        per_request.failed(),
        per_request.failures_by_kind(),
        keep_alive.failed(),
        keep_alive.failures_by_kind(),
        keep_alive.retried(),
    );
    assert!(per_request.total() > 0 && keep_alive.total() > 0);
    Some((per_request.failed(), keep_alive.failed(), total))
}

#[test]
#[cfg_attr(
    not(has_go),
    ignore = "go not built; run ../shared/peers/build.sh target/peers"
)]
fn go_net_http_loses_no_request_across_restarts_with_the_steered_handoff() {
    let test = "go_net_http_loses_no_request_across_restarts_with_the_steered_handoff";
    let Some((per_request, keep_alive, total)) = restarts_under_load(test, "steered") else {
        return;
    };
    assert_eq!(
        (per_request, keep_alive),
        (0, 0),
        "steered: requests failed (connection per request, keep-alive) of {total}"
    );
}

#[test]
#[cfg_attr(
    not(has_go),
    ignore = "go not built; run ../shared/peers/build.sh target/peers"
)]
fn go_net_http_loses_requests_across_restarts_with_the_shared_handoff() {
    let test = "go_net_http_loses_requests_across_restarts_with_the_shared_handoff";
    let Some((per_request, _keep_alive, total)) = restarts_under_load(test, "shared") else {
        return;
    };
    assert!(
        per_request > 0,
        "shared: no request with a connection each failed (of {total}), so this test no \
         longer shows what the steered handoff is for"
    );
}
