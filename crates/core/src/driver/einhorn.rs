//! einhorn: `upgrade` on its command socket, then `state` to judge.
//!
//! einhorn's command socket speaks one YAML document per line (JSON is YAML, which einhorn
//! reads; its framing escapes `%` and newlines as `%25` and `%0A`): the request
//! `{"id":N,"command":"upgrade","args":[]}` and replies `{"message":"...","request_id":N}`.
//! `state` returns the master's state as YAML in `message`, whose `children` map holds
//! each worker's pid with its `type` and `acked` flag.
//!
//! `upgrade` answers "Upgrading smoothly, as commanded" at once, then subscribes the
//! connection to the upgrade's log lines (`"wait": true` on each): `===> Launched PID`,
//! `===> Exited worker PID before it was ACKed`, `Sending USR2 to [PID, …]`, and
//! `Upgrade done` last. The driver keeps that connection open and reads them as they come,
//! so a worker that dies between two looks at `state` is still seen at once. To upgrade,
//! einhorn first re-executes itself (same pid, state passed on a pipe) after checking that
//! it can (`einhorn --upgrade-check`); when the check fails it logs "Can not initiate
//! einhorn master reload safely, aborting" and does nothing else, and the subscription
//! stays silent. The new master bumps `version` before it serves the socket again, so the
//! first `state` after the answer tells a refusal (same version, not upgrading) from an
//! upgrade under way.
//!
//! A completed upgrade: every worker is new and acked, the old workers gone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::control::{ask, connect, socket_of};
use super::run::{POLL, Run, failed, rolled_back};
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

/// The text of one reply line, unframed.
pub(super) fn parse_message(line: &str) -> Option<String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return None;
    }
    from_yaml::<Reply>(&unescape(line)).ok().map(|r| r.message)
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
    #[serde(rename = ":version", alias = "version", default)]
    version: Option<u64>,
    #[serde(rename = ":upgrading", alias = "upgrading", default)]
    upgrading: bool,
    #[serde(
        rename = ":consecutive_deaths_before_ack",
        alias = "consecutive_deaths_before_ack",
        default
    )]
    deaths_before_ack: u64,
}

#[derive(Deserialize)]
struct ChildSpec {
    #[serde(rename = ":type", alias = "type")]
    kind: String,
    #[serde(rename = ":acked", alias = "acked", default)]
    acked: bool,
}

/// What the driver reads of einhorn's state.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct State {
    /// Workers, by pid, with whether each acked (is ready).
    pub(super) workers: Vec<(i32, bool)>,
    /// The workers' version, bumped by each upgrade.
    pub(super) version: Option<u64>,
    /// An upgrade is under way.
    pub(super) upgrading: bool,
    /// Workers that died before they acked since the last upgrade began (einhorn counts
    /// them to slow its respawns down).
    pub(super) deaths_before_ack: u64,
}

/// einhorn's state from a `state` reply.
pub(super) fn parse_state(text: &str) -> Option<State> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let message = parse_message(line)?;
    let dump: Dump = from_yaml(&message).ok()?;
    let mut workers: Vec<(i32, bool)> = dump
        .state
        .children
        .iter()
        .filter(|(_, c)| c.kind.trim_start_matches(':') == "worker")
        .filter_map(|(pid, c)| Some((pid.parse().ok()?, c.acked)))
        .collect();
    workers.sort_unstable();
    Some(State {
        workers,
        version: dump.state.version,
        upgrading: dump.state.upgrading,
        deaths_before_ack: dump.state.deaths_before_ack,
    })
}

/// One line of the upgrade's log, as einhorn sends it to the `upgrade` connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// `===> Launched PID (index: N)`.
    Launched(i32),
    /// `===> Exited worker PID before it was ACKed`.
    DiedUnacked(i32),
    /// `Sending SIGNAL to [PID, …]`.
    Sending(String, Vec<i32>),
    /// `Upgrade done`.
    Done,
    /// Anything else (`Starting smooth upgrade…`, `ERROR: …`).
    Other(String),
}

pub(super) fn parse_progress(message: &str) -> Progress {
    let text = message.trim();
    let pid_after = |prefix: &str| -> Option<i32> {
        text.strip_prefix(prefix)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    if let Some(pid) = pid_after("===> Launched ") {
        return Progress::Launched(pid);
    }
    if text.ends_with("before it was ACKed") {
        if let Some(pid) = pid_after("===> Exited worker ") {
            return Progress::DiedUnacked(pid);
        }
    }
    if let Some((signal, list)) = text
        .strip_prefix("Sending ")
        .and_then(|rest| rest.split_once(" to ["))
    {
        let pids = list
            .trim_end_matches(']')
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        return Progress::Sending(signal.to_owned(), pids);
    }
    if text == "Upgrade done" {
        return Progress::Done;
    }
    Progress::Other(text.to_owned())
}

async fn state(socket: &Path, timeout: Duration) -> Result<State, DriverError> {
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

/// The longest line of the upgrade's log the driver reads.
const MAX_LINE: u64 = 64 * 1024;

/// The `upgrade` connection: einhorn's master (the socket's peer) and the upgrade's log.
struct Upgrade {
    master: i32,
    lines: BufReader<UnixStream>,
    /// The connection ended (einhorn closes it only with the last message, or on exit).
    closed: bool,
}

impl Upgrade {
    /// Connects, sends `upgrade` and reads einhorn's first answer.
    async fn start(socket: &Path, timeout: Duration) -> Result<(Upgrade, String), DriverError> {
        let work = async {
            let mut stream = connect(socket).await?;
            // The process at the other end is the one that listens on the socket: einhorn's
            // master, which keeps its pid when it re-executes itself to upgrade.
            let master = stream
                .peer_cred()
                .ok()
                .and_then(|cred| cred.pid())
                .unwrap_or(0);
            stream
                .write_all(b"{\"id\":2,\"command\":\"upgrade\",\"args\":[]}\n")
                .await
                .map_err(|e| DriverError::io("send 'upgrade'", e))?;
            let mut upgrade = Upgrade {
                master,
                lines: BufReader::new(stream),
                closed: false,
            };
            let first = upgrade.next_line().await?;
            Ok::<_, DriverError>((upgrade, first))
        };
        let (upgrade, first) =
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| DriverError::Garbage {
                    path: socket.to_owned(),
                    reason: format!(
                        "no complete answer to 'upgrade' within {}",
                        format_duration(timeout)
                    ),
                })??;
        match first.as_deref().and_then(parse_message) {
            Some(message) => Ok((upgrade, message)),
            None => Err(DriverError::Garbage {
                path: socket.to_owned(),
                reason: format!(
                    "the answer to 'upgrade' is not einhorn's (found {:?})",
                    first
                        .unwrap_or_default()
                        .chars()
                        .take(60)
                        .collect::<String>()
                ),
            }),
        }
    }

    /// The next line, or `None` once einhorn closed the connection.
    async fn next_line(&mut self) -> Result<Option<String>, DriverError> {
        let mut line = String::new();
        let n = (&mut self.lines)
            .take(MAX_LINE)
            .read_line(&mut line)
            .await
            .map_err(|e| DriverError::io("read einhorn's upgrade log", e))?;
        if n == 0 {
            self.closed = true;
            return Ok(None);
        }
        Ok(Some(line))
    }

    /// The upgrade's log lines that arrive within `wait` (none once the connection closed).
    async fn progress(&mut self, wait: Duration) -> Vec<Progress> {
        let mut out = Vec::new();
        if self.closed {
            tokio::time::sleep(wait).await;
            return out;
        }
        let until = tokio::time::Instant::now() + wait;
        while let Ok(line) = tokio::time::timeout_at(until, self.next_line()).await {
            match line {
                Ok(Some(line)) => out.extend(parse_message(&line).map(|m| parse_progress(&m))),
                Ok(None) | Err(_) => {
                    self.closed = true;
                    break;
                }
            }
            if !out.is_empty() {
                break;
            }
        }
        out
    }
}

pub(super) async fn restart(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let (socket, per_call) = socket_of(config, "its command socket")?;
    let before = state(socket, per_call).await?;
    let old: BTreeSet<i32> = before.workers.iter().map(|(pid, _)| *pid).collect();
    run.numbers_from_pool(&old);
    let (mut upgrade, answer) = Upgrade::start(socket, per_call).await?;
    run.emit(EventKind::Signalled {
        generation: run.old_generation.unwrap_or(0),
        pid: upgrade.master,
        signal: "upgrade (command socket)".to_owned(),
    });
    tracing::debug!(%answer, "einhorn answered upgrade");
    // einhorn answers this only once it has re-executed itself for the upgrade, or given
    // up on that.
    let after = loop {
        // einhorn may take a while to re-execute itself (Ruby loads again): the upgrade was
        // asked for, so from here on a silent socket is the restart's failure, not an error
        // that says nothing was tried.
        match state(socket, per_call).await {
            Ok(after) => break after,
            Err(err) if run.timed_out() => {
                return Ok(failed(format!(
                    "einhorn (pid {}) did not answer 'state' after the upgrade within {}: {err}",
                    upgrade.master,
                    format_duration(run.timeout())
                )));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    if before.version.is_some() && after.version == before.version && !after.upgrading {
        return Ok(failed(format!(
            "einhorn (pid {}) refused to upgrade: it answered {answer:?} but did not start the \
             upgrade (its log says \"Can not initiate einhorn master reload safely, aborting\" \
             when it cannot re-execute itself: check `--reexec-as` and that einhorn and its \
             Ruby libraries are where they were when it started); the old workers keep \
             serving",
            upgrade.master
        )));
    }
    let mut draining: BTreeSet<i32> = BTreeSet::new();
    let mut announced: BTreeSet<i32> = BTreeSet::new();
    // New workers as `state` last listed them, with their ack: one that leaves the list
    // unacked died. (Only the state's own listings: a worker the log announced may be
    // missing from a state read just before.)
    let mut seen: BTreeMap<i32, bool> = BTreeMap::new();
    let mut now = Some(after);
    loop {
        for step in upgrade.progress(POLL).await {
            tracing::debug!(?step, "einhorn upgrade log");
            match step {
                Progress::Launched(pid) if !old.contains(&pid) && announced.insert(pid) => {
                    run.spawned(pid);
                }
                Progress::DiedUnacked(pid) if !old.contains(&pid) => {
                    return Ok(died_unacked(Some(pid)));
                }
                Progress::Sending(signal, pids) => {
                    for pid in pids.into_iter().filter(|p| old.contains(p)) {
                        if draining.insert(pid) {
                            run.draining(pid, &format!("{signal} (by einhorn)"));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(now) = now.take() {
            tracing::debug!(workers = ?now.workers, deaths = now.deaths_before_ack, "einhorn state");
            for (pid, acked) in now.workers.iter().filter(|(p, _)| !old.contains(p)) {
                seen.insert(*pid, *acked);
                if announced.insert(*pid) {
                    run.spawned(*pid);
                }
            }
            let died = seen
                .iter()
                .find(|(pid, acked)| !**acked && !now.workers.iter().any(|(p, _)| p == *pid));
            if let Some((pid, _)) = died {
                return Ok(died_unacked(Some(*pid)));
            }
            // einhorn counts the deaths it reaped, so a worker that lived and died between
            // two looks is not missed.
            if now.deaths_before_ack > 0 {
                return Ok(died_unacked(None));
            }
            let new_acked: Vec<i32> = now
                .workers
                .iter()
                .filter(|(p, acked)| *acked && !old.contains(p))
                .map(|(p, _)| *p)
                .collect();
            let old_left: Vec<i32> = now
                .workers
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| old.contains(p))
                .collect();
            if !new_acked.is_empty() && new_acked.len() >= old.len() {
                // einhorn stops the old workers once enough new ones acked; announce them
                // even when the log line was not seen (an older einhorn).
                for pid in &old {
                    if draining.insert(*pid) {
                        run.draining(*pid, "USR2 (by einhorn)");
                    }
                }
            }
            if let Some(&pid) = new_acked.last().filter(|_| old_left.is_empty()) {
                run.ready(format!(
                    "einhorn reports {} acked new workers",
                    new_acked.len()
                ));
                run.new_pid = Some(pid);
                run.promoted(pid);
                for pid in &old {
                    if draining.insert(*pid) {
                        run.draining(*pid, "USR2 (by einhorn)");
                    }
                }
                return Ok(RestartOutcome::Completed);
            }
        }
        if run.timed_out() {
            return Ok(failed(format!(
                "einhorn did not replace every worker with an acked new one within {}",
                format_duration(run.timeout())
            )));
        }
        now = state(socket, per_call).await.ok();
    }
}

fn died_unacked(pid: Option<i32>) -> RestartOutcome {
    let which = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    rolled_back(format!(
        "einhorn's new worker{which} exited before it acked; the old workers keep serving, \
         and einhorn keeps spawning new ones: see its log"
    ))
}
