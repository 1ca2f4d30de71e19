//! einhorn: `upgrade` on its command socket, then `state` to judge.
//!
//! einhorn's command socket speaks one JSON object per line: the request
//! `{"id":N,"command":"upgrade","args":[]}` (JSON is YAML, which einhorn reads; its framing
//! escapes `%` and newlines as `%25` and `%0A`) and replies `{"id":N,"message":"..."}`.
//! `state` returns the master's state as YAML in `message`, whose `children` map holds
//! each worker's pid with its `type` and `acked` flag.
//! A completed upgrade: every worker is new and acked, the old workers gone.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::control::ask;
use super::run::{Run, failed, tick};
use super::{DriverConfig, DriverError};
use crate::config::yaml::from_yaml;
use crate::duration::format_duration;
use crate::proto::{EventKind, RestartOutcome};

/// einhorn's framing: one YAML document per line, with `%` and newlines escaped.
fn unescape(line: &str) -> String {
    line.replace("%0A", "\n").replace("%25", "%")
}

/// Workers from a `state` reply: pid and whether it acked (is ready).
pub(super) fn parse_state(text: &str) -> Option<Vec<(i32, bool)>> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let reply: serde_json::Value = from_yaml(&unescape(line)).ok()?;
    // The state is a YAML document inside `message`.
    let state: serde_json::Value = match reply.get("message")? {
        serde_json::Value::String(s) => from_yaml(s).ok()?,
        other => other.clone(),
    };
    let children = state.get("state").unwrap_or(&state).get("children")?;
    let map = children.as_object()?;
    let mut workers: Vec<(i32, bool)> = map
        .iter()
        .filter(|(_, c)| {
            c.get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.trim_start_matches(':') == "worker")
        })
        .filter_map(|(pid, c)| {
            let acked = c
                .get("acked")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            Some((pid.parse().ok()?, acked))
        })
        .collect();
    workers.sort_unstable();
    Some(workers)
}

async fn state(socket: &Path, timeout: Duration) -> Result<Vec<(i32, bool)>, DriverError> {
    let answer = ask(
        socket,
        "{\"id\":1,\"command\":\"state\",\"args\":[]}\n",
        timeout,
        |t| t.contains('\n'),
    )
    .await?;
    parse_state(&answer).ok_or_else(|| DriverError::Garbage {
        path: socket.to_owned(),
        reason: format!(
            "the answer to 'state' is not einhorn's state (found {:?}); is `socket:` einhorn's \
             command socket (-d)?",
            answer.chars().take(60).collect::<String>()
        ),
    })
}

pub(super) async fn restart(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let Some(socket) = config.socket.as_deref() else {
        return Err(DriverError::NotRunning {
            path: config.source.clone(),
            reason: "the einhorn driver needs `socket:` (its command socket)".to_owned(),
        });
    };
    let per_call = config.timeout.min(Duration::from_secs(5));
    let before = state(socket, per_call).await?;
    let old: BTreeSet<i32> = before.iter().map(|(pid, _)| *pid).collect();
    run.numbers_from_record(old.iter().next_back().copied().unwrap_or(0));
    ask(
        socket,
        "{\"id\":2,\"command\":\"upgrade\",\"args\":[]}\n",
        per_call,
        |t| t.contains('\n'),
    )
    .await?;
    run.emit(EventKind::Signalled {
        generation: run.old_generation.unwrap_or(0),
        pid: 0,
        signal: "upgrade (command socket)".to_owned(),
    });
    let mut announced = BTreeSet::new();
    loop {
        if let Ok(now) = state(socket, per_call).await {
            for (pid, _) in now.iter().filter(|(p, _)| !old.contains(p)) {
                if announced.insert(*pid) {
                    run.spawned(*pid);
                }
            }
            let new_acked: Vec<i32> = now
                .iter()
                .filter(|(p, acked)| *acked && !old.contains(p))
                .map(|(p, _)| *p)
                .collect();
            let old_left = now.iter().any(|(p, _)| old.contains(p));
            if !new_acked.is_empty() && !old_left {
                let pid = new_acked[new_acked.len() - 1];
                run.ready(format!(
                    "einhorn reports {} acked new workers",
                    new_acked.len()
                ));
                run.new_pid = Some(pid);
                run.promoted(pid);
                return Ok(RestartOutcome::Completed);
            }
        }
        if run.timed_out() {
            return Ok(failed(format!(
                "einhorn did not replace every worker with an acked new one within {}",
                format_duration(run.timeout())
            )));
        }
        tick().await;
    }
}
