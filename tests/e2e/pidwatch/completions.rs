//! The committed completions and man page match the clap definition.

use std::path::PathBuf;
use std::process::Command;

use super::harness::{TestEnv, pidwatch_bin};

const FILES: [&str; 6] = [
    "pidwatch.bash",
    "_pidwatch",
    "pidwatch.fish",
    "pidwatch.elv",
    "_pidwatch.ps1",
    "pidwatch.1",
];

#[test]
fn committed_completions_and_man_page_match_the_command_line() {
    let env = TestEnv::new();
    let fresh = env.path("generated");
    let status = Command::new(pidwatch_bin())
        .arg("--generate")
        .arg(&fresh)
        .status()
        .expect("run pidwatch --generate");
    assert!(status.success(), "pidwatch --generate failed: {status}");
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../completions");
    let stale: Vec<&str> = FILES
        .into_iter()
        .filter(|name| {
            let want = std::fs::read(fresh.join(name)).expect("generated file");
            std::fs::read(committed.join(name)).ok() != Some(want)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "completions/{} out of date with pidwatch's command line: regenerate them with \
         `cargo run -p pidwatch -- --generate completions` from the workspace root and commit \
         the result",
        stale.join(", completions/")
    );
}
