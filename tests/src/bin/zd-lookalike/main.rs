//! zd-lookalike: stand-ins for the foreign supervisors that Debian does not package
//! (psflip, socketmaster, einhorn), for the drivers' end-to-end tests. Each one
//! follows its tool's documented behaviour where a driver can see it: the signals it takes,
//! the pidfile it writes, how its process tree changes during a restart, and einhorn's
//! command-socket messages. Each serves HTTP through zd-fixture workers that get the
//! listener on fd 3, so the tests can run load through restarts. Synchronous: signals
//! are read from a signalfd, children reaped with waitpid.
//!
//! ```text
//! zd-lookalike psflip       --pidfile P --listen ADDR [--healthy-after DUR] -- WORKER…
//! zd-lookalike socketmaster --listen ADDR [--start DUR] -- WORKER…
//! zd-lookalike einhorn      --socket P [--pidfile P] --listen ADDR [--workers N]
//!                           [--ack-after DUR] -- WORKER…
//! ```
//!
//! Every process stays in the process group it was started in, so a test ends them all
//! with one killpg.

mod common;
mod einhorn;
mod psflip;
mod socketmaster;

use anyhow::{Result, bail};

fn run() -> Result<i32> {
    let mut words: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if words.is_empty() {
        bail!("usage: zd-lookalike psflip|socketmaster|einhorn FLAGS -- WORKER…");
    }
    let mode = words.remove(0).to_string_lossy().into_owned();
    if mode == "einhorn-worker" {
        let command: Vec<_> = words
            .into_iter()
            .skip_while(|w| w != "--")
            .skip(1)
            .collect();
        return einhorn::worker(&command);
    }
    let args = common::parse_args(words)?;
    match mode.as_str() {
        "psflip" => psflip::run(&args),
        "socketmaster" => socketmaster::run(&args),
        "einhorn" => einhorn::run(&args),
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
