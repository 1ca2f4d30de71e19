//! hostilebench: the attacks of issue 17, each under `ab` load, with the figures that say
//! whether the service noticed: requests lost, restarts that went wrong, and the
//! supervisor's RSS and fd count before and after. Every attack is bounded in time and
//! count and talks only to 127.0.0.1 and the service's own sockets.
//!
//! Run as root (the attacker runs as `nobody`) after `cargo build --release --workspace`:
//! `cargo run --release -p zd-tests --bin hostilebench`. Needs `ab` (apache2-utils) and
//! python3.

mod attacks;
mod load;

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::flipbench::service::{Binaries, Service};

pub const USAGE: &str = "\
usage: hostilebench [--seconds N] [--only NAME]

Runs each attack against a fresh `zdctl run` of the fixture under `ab` load and prints one
row per attack: requests, failed requests, restarts completed / not, and the supervisor's
RSS and open fds before and after. Exits 1 if any request failed or any check did not hold.
Attacks: forged-notify, leftovers, idle-connections, pipelined-status, fifo-service-file,
nested-service-file.
";

/// What one attack measured.
#[derive(Debug, Default)]
pub struct Row {
    pub attack: &'static str,
    pub requests: u64,
    pub failed: u64,
    pub restarts_ok: u32,
    pub restarts_not: u32,
    pub rss_kib: (u64, u64),
    pub fds: (usize, usize),
    /// What else was seen, and whether the attack's own check held.
    pub note: String,
    pub held: bool,
}

impl Row {
    /// Counts a restart that had to complete; one that did not fails the attack's check.
    fn count_restart(&mut self, completed: bool) {
        if completed {
            self.restarts_ok += 1;
        } else {
            self.restarts_not += 1;
            self.held = false;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: u64,
    pub only: Option<String>,
}

pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>> {
    let mut options = Options {
        seconds: 8,
        only: None,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--seconds" => {
                options.seconds = args
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds needs a whole number of seconds")?;
                if !(2..=120).contains(&options.seconds) {
                    bail!("--seconds must be between 2 and 120");
                }
            }
            "--only" => options.only = Some(args.next().context("--only needs an attack name")?),
            other => bail!("unknown argument '{other}'; see --help"),
        }
    }
    Ok(Some(options))
}

/// Runs the attacks; true when no request failed and every check held.
pub fn run(options: &Options) -> Result<bool> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run hostilebench as root: the attacker runs as another uid");
    }
    which("ab").context("'ab' is missing: apt-get install apache2-utils")?;
    which("python3").context("'python3' is missing")?;
    let binaries = Binaries::next_to_this_program()?;
    let duration = Duration::from_secs(options.seconds);
    let mut rows = Vec::new();
    for (name, attack) in attacks::ALL {
        if options.only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        eprintln!("hostilebench: {name} ...");
        rows.push(attack(&binaries, duration).with_context(|| format!("attack '{name}'"))?);
    }
    print_table(&rows);
    Ok(rows.iter().all(|r| r.failed == 0 && r.held))
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<22} {:>9} {:>7} {:>9} {:>17} {:>11}  note",
        "attack", "requests", "failed", "restarts", "RSS KiB", "fds"
    );
    for r in rows {
        println!(
            "{:<22} {:>9} {:>7} {:>9} {:>17} {:>11}  {}{}",
            r.attack,
            r.requests,
            r.failed,
            format!("{}/{}", r.restarts_ok, r.restarts_ok + r.restarts_not),
            format!("{} -> {}", r.rss_kib.0, r.rss_kib.1),
            format!("{} -> {}", r.fds.0, r.fds.1),
            if r.held { "" } else { "CHECK FAILED: " },
            r.note,
        );
    }
}

fn which(program: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        bail!("not found in PATH")
    }
}

/// The supervisor's resident size (KiB) and open fds.
fn footprint(service: &Service) -> (u64, usize) {
    let Some(pid) = service.pid() else {
        return (0, 0);
    };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}
