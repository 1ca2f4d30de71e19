//! A Node.js server written the way Node documents it for an inherited socket
//! (`server.listen({fd: 3})`, `server.close()` on SIGTERM; `node/fd3.js`), restarted 20
//! times under clients that open a connection per request and clients that keep theirs:
//! no request fails (keep-alive clients send a request once more when their connection
//! closed before the answer, as HTTP clients do), under either handoff.
//!
//! Needs `node` on PATH (Debian package `nodejs`); without it the tests are ignored, or
//! fail under `ZD_REQUIRE_PEERS=1`.

use zd_load::load::ConnectionMode;

use crate::support::*;

const SCRIPT: &str = include_str!("node/fd3.js");
const RESTARTS: usize = 20;

fn restarts_lose_nothing(test: &str, handoff: &str) {
    let Some(node) = crate::drivers::peer(test, "node", "nodejs") else {
        return;
    };
    let mut env = TestEnv::new();
    let script = env.path("fd3.js");
    std::fs::write(&script, SCRIPT).expect("write the Node server");
    env.write_service(
        "api",
        &format!(
            "command: [{:?}, {:?}]\nlisten: 127.0.0.1:0\nhandoff: {handoff}\n",
            node.display().to_string(),
            script.display().to_string()
        ),
    );
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let per_request = start_load(&addr, 8, ConnectionMode::Close);
    let mut retrying = load_config(&addr, 8, ConnectionMode::KeepAlive);
    retrying.retry_idle_close = true;
    let keep_alive = start_configured_load(retrying);
    for _ in 0..RESTARTS {
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    }
    let (per_request, keep_alive) = (per_request.finish(), keep_alive.finish());
    eprintln!(
        "handoff: {handoff}: {RESTARTS} restarts of the Node server: {} of {} requests \
         failed with a connection each {:?}, {} of {} with keep-alive {:?} ({} retried)",
        per_request.failed(),
        per_request.total(),
        per_request.failures_by_kind(),
        keep_alive.failed(),
        keep_alive.total(),
        keep_alive.failures_by_kind(),
        keep_alive.retried(),
    );
    assert_no_failures(&per_request);
    assert_no_failures(&keep_alive);
}

#[test]
#[cfg_attr(not(has_node), ignore = "node not installed (Debian package nodejs)")]
fn a_node_server_on_its_inherited_fd_loses_no_request_across_steered_restarts() {
    restarts_lose_nothing(
        "a_node_server_on_its_inherited_fd_loses_no_request_across_steered_restarts",
        "steered",
    );
}

#[test]
#[cfg_attr(not(has_node), ignore = "node not installed (Debian package nodejs)")]
fn a_node_server_on_its_inherited_fd_loses_no_request_across_shared_restarts() {
    restarts_lose_nothing(
        "a_node_server_on_its_inherited_fd_loses_no_request_across_shared_restarts",
        "shared",
    );
}
