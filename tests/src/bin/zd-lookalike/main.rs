//! zd-lookalike: what the drivers' end-to-end tests still need beside the real peers: the
//! shim that runs each real einhorn's worker. Synchronous: signals are read from a
//! signalfd, children reaped with waitpid.
//!
//! ```text
//! zd-lookalike einhorn-worker -- WORKER…
//! ```
//!
//! Every process stays in the process group it was started in, so a test ends them all
//! with one killpg.

mod common;
mod einhorn;

use anyhow::{Result, bail};

fn run() -> Result<i32> {
    let mut words: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if words.is_empty() {
        bail!("usage: zd-lookalike einhorn-worker -- WORKER…");
    }
    let mode = words.remove(0).to_string_lossy().into_owned();
    match mode.as_str() {
        "einhorn-worker" => {
            let command: Vec<_> = words
                .into_iter()
                .skip_while(|w| w != "--")
                .skip(1)
                .collect();
            einhorn::worker(&command)
        }
        other => bail!("unknown mode '{other}'"),
    }
}

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            common::say(&format!("error: {e:#}"));
            1
        }
    };
    std::process::exit(code);
}
