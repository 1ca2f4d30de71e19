//! einhorn: `upgrade` on its command socket, then `state` to judge.
//!
//! einhorn's command socket speaks one JSON object per line: the request
//! `{"id":N,"command":"upgrade","args":[]}` (JSON is YAML, which einhorn reads; its framing
//! escapes `%` and newlines as `%25` and `%0A`) and replies `{"id":N,"message":"..."}`.
//! `state` returns the master's state as YAML in `message`, whose `children` map holds
//! each worker's pid with its `type` and `acked` flag.
//! A completed upgrade: every worker is new and acked, the old workers gone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::control::{ask, socket_of};
use super::run::{Run, failed, rolled_back, tick};
use super::{DriverConfig, DriverError};
use crate::config::yaml::from_yaml;
use crate::duration::format_duration;
use crate::proto::{EventKind, RestartOutcome};

/// einhorn's framing: one YAML document per line, with `%` and newlines escaped.
fn unescape(line: &str) -> String {
    line.replace("%0A", "\n").replace("%25", "%")
}

/// einhorn's reply: `message` holds the text, here the master's state as a YAML document.
#[derive(Deserialize)]
struct Reply {
    message: String,
}

/// The part of `YAML.dump({state: ...})` the driver reads. einhorn is Ruby: its keys are
/// symbols (`:state:`, `:children:`, `:type: :worker`), its pids integers, and other fields
/// carry Ruby tags (`!ruby/object:Set`); unknown fields are skipped, so only these need
/// to parse. The plain spellings are accepted too.
#[derive(Deserialize)]
struct Dump {
    #[serde(rename = ":state", alias = "state")]
    state: MasterState,
}

#[derive(Deserialize)]
struct MasterState {
    #[serde(rename = ":children", alias = "children")]
    children: BTreeMap<String, ChildSpec>,
}

#[derive(Deserialize)]
struct ChildSpec {
    #[serde(rename = ":type", alias = "type")]
    kind: String,
    #[serde(rename = ":acked", alias = "acked", default)]
    acked: bool,
}

/// Workers from a `state` reply: pid and whether it acked (is ready).
pub(super) fn parse_state(text: &str) -> Option<Vec<(i32, bool)>> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let reply: Reply = from_yaml(&unescape(line)).ok()?;
    let dump: Dump = from_yaml(&reply.message).ok()?;
    let mut workers: Vec<(i32, bool)> = dump
        .state
        .children
        .iter()
        .filter(|(_, c)| c.kind.trim_start_matches(':') == "worker")
        .filter_map(|(pid, c)| Some((pid.parse().ok()?, c.acked)))
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
    let (socket, per_call) = socket_of(config, "its command socket")?;
    let before = state(socket, per_call).await?;
    let old: BTreeSet<i32> = before.iter().map(|(pid, _)| *pid).collect();
    run.numbers_from_pool(&old);
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
    // New workers as last seen, with their ack: one that leaves the list unacked died.
    let mut seen: BTreeMap<i32, bool> = BTreeMap::new();
    loop {
        if let Ok(now) = state(socket, per_call).await {
            for (pid, acked) in now.iter().filter(|(p, _)| !old.contains(p)) {
                if seen.insert(*pid, *acked).is_none() {
                    run.spawned(*pid);
                }
            }
            let died = seen
                .iter()
                .find(|(pid, acked)| !**acked && !now.iter().any(|(p, _)| p == *pid));
            if let Some((pid, _)) = died {
                return Ok(rolled_back(format!(
                    "einhorn's new worker (pid {pid}) exited before it acked; the old workers \
                     keep serving, and einhorn keeps spawning new ones: see its log"
                )));
            }
            let new_acked: Vec<i32> = now
                .iter()
                .filter(|(p, acked)| *acked && !old.contains(p))
                .map(|(p, _)| *p)
                .collect();
            let old_left = now.iter().any(|(p, _)| old.contains(p));
            if let Some(&pid) = new_acked.last().filter(|_| !old_left) {
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
