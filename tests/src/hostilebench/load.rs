//! `ab` as the load: keep-alive off, 8 clients, for a fixed time; `-r` so that a failed
//! receive is counted instead of ending the run.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

pub struct Ab {
    child: Child,
}

/// What `ab` counted.
#[derive(Debug, Default)]
pub struct AbReport {
    pub complete: u64,
    pub failed: u64,
}

impl Ab {
    pub fn start(address: &str, duration: Duration) -> Result<Ab> {
        let child = Command::new("ab")
            // -t before -n: -t alone caps the run at 50,000 requests.
            .args(["-r", "-q", "-c", "8", "-s", "10", "-t"])
            .arg(duration.as_secs().to_string())
            .args(["-n", "100000000"])
            .arg(format!("http://{address}/"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ab")?;
        Ok(Ab { child })
    }

    pub fn finish(self) -> Result<AbReport> {
        let out = self.child.wait_with_output().context("ab")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // ab counts a body whose length differs from the first one's as failed ("Length"):
        // the fixture's answer names its pid and generation, so that is no failure here.
        // Connect, Receive and Exceptions are.
        let breakdown = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("(Connect:"))
                .and_then(|l| {
                    let l = format!("Connect:{l}");
                    l.split(',')
                        .find_map(|part| part.trim().strip_prefix(name).map(str::to_owned))
                })
                .and_then(|v| v.trim_end_matches(')').trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(AbReport {
            complete: field("Complete requests:"),
            failed: breakdown("Connect:")
                + breakdown("Receive:")
                + breakdown("Exceptions:")
                + field("Non-2xx responses:"),
        })
    }
}
