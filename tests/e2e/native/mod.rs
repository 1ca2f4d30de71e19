//! `zdctl run` and the commands that drive it, against the fixture service.

mod control;
mod deadlines;
mod errors;
mod flips;
mod go_server;
mod handoff;
mod hostile;
mod lifecycle;
mod limits;
mod migrate_requests;
mod priority;
mod python_server;
mod ready;
mod rollback;
mod service_file;
mod start_priority;
mod trust;

/// Fails under `ZD_REQUIRE_PEERS=1`, else says loudly that the test is skipped: for tests
/// that need a program from outside the workspace (a Go toolchain, python3).
fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("ZD_REQUIRE_PEERS").is_none_or(|v| v != "1"),
        "ZD_REQUIRE_PEERS=1 but {why}"
    );
    eprintln!("SKIPPED: {test}: {why}");
}
