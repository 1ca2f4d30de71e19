//! Decides, when zd-tests is built, which peers of the end-to-end tests are present, and
//! sets `has_<peer>` for each one (`src/peers.rs` has the list and the rules). A test
//! whose peer is missing carries `#[cfg_attr(not(has_<peer>), ignore = "…")]`, so that
//! `cargo test` shows it as ignored with the reason. With `ZD_REQUIRE_PEERS=1` every
//! `has_<peer>` is set: no test is ignored, and one whose peer is missing fails.

use std::path::PathBuf;

// The same file is the library's `zd_tests::peers`, whose run-time lookups the build
// script does not use.
#[allow(dead_code)]
#[path = "src/peers.rs"]
mod peers;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/peers.rs");
    for var in ["PATH", "ZD_PEERS_DIR", "ZD_REQUIRE_PEERS"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let peers_dir = peers::dir();
    let require = peers::required(std::env::var_os("ZD_REQUIRE_PEERS").as_deref());
    for line in peers::cfg_lines(&path, &peers_dir, require) {
        println!("{line}");
    }
    if require {
        return;
    }
    // Cargo re-runs a build script on every build while a path it watches is missing, so
    // the peers directory is made here, empty, for build.sh to fill later (as `mkdir -p`
    // would): running build.sh then changes it and re-runs this script.
    if let Err(err) = std::fs::create_dir_all(&peers_dir) {
        println!(
            "cargo::warning=cannot create the peers directory '{}' ({err}): after building \
             the peers there, `touch tests/build.rs` so that their tests run",
            peers_dir.display()
        );
        return;
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    for path in peers::watched(&path, &peers_dir, &out_dir, peers::workspace_root()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}
