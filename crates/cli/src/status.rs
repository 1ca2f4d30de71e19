//! `zdctl status [NAME]`: one service's generations, listeners and counters, or every
//! running service's.

use std::fmt::Write as _;
use std::time::SystemTime;

use zd_core::inspect::{InspectError, Inspector, Snapshot, SocketSource};
use zd_core::paths;
use zd_core::proto::{
    Client, ClientError, GenerationState, Op, ReplyResult, RestartOutcome, Status,
};

use crate::cli::StatusArgs;
use crate::control;
use crate::output::{self, age, exit_status, millis, table};

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    match &args.name {
        Some(name) => {
            control::check_name(name)?;
            if let Some(config) = crate::foreign::driver_for(name)? {
                let status = crate::foreign::status(&config)?;
                return if args.json {
                    // The driver's generations and listeners, like a native status: a
                    // supervisor that is its own generation (psflip, nginx) is its main pid.
                    let snapshot = Inspector::new(SocketSource::default()).snapshot_native(&status);
                    output::json_pretty(&with_snapshot(
                        crate::foreign::json(&config, &status)?,
                        snapshot,
                    ))
                } else {
                    output::text(&crate::foreign::render(&config, &status, SystemTime::now()))
                };
            }
            let mut client = control::connect(name).await?;
            let status = fetch(&mut client, name).await?;
            if args.json {
                let snapshot = Inspector::new(SocketSource::default()).snapshot_native(&status);
                output::json_pretty(&with_snapshot(serde_json::to_value(&status)?, snapshot))
            } else {
                output::text(&render(&status, SystemTime::now()))
            }
        }
        None => {
            let all = running().await?;
            let foreign = crate::foreign::running();
            if args.json {
                let mut values = Vec::new();
                for status in &all {
                    values.push(serde_json::to_value(status)?);
                }
                for (config, status) in &foreign {
                    values.push(crate::foreign::json(config, status)?);
                }
                return output::json_pretty(&values);
            }
            if all.is_empty() && foreign.is_empty() {
                return output::line(&format!(
                    "no service is running (no supervisor answers in '{}'); start one with \
                     'zdctl run'",
                    paths::runtime_dir().display()
                ));
            }
            let now = SystemTime::now();
            let mut blocks: Vec<String> = all.iter().map(|s| render(s, now)).collect();
            blocks.extend(
                foreign
                    .iter()
                    .map(|(config, s)| crate::foreign::render(config, s, now)),
            );
            output::text(&blocks.join("\n"))
        }
    }
}

/// `status NAME --json` carries what `zdctl top` shows of the service: the inspector's
/// snapshot under `"snapshot"`, or why it could not be taken under `"snapshot_error"` (the
/// status itself is still worth printing then).
fn with_snapshot(
    mut value: serde_json::Value,
    snapshot: Result<Snapshot, InspectError>,
) -> serde_json::Value {
    if let Some(map) = value.as_object_mut() {
        match snapshot {
            Ok(snapshot) => {
                map.insert(
                    "snapshot".into(),
                    serde_json::to_value(snapshot).unwrap_or_default(),
                );
            }
            Err(err) => {
                map.insert(
                    "snapshot_error".into(),
                    format!("{:#}", anyhow::Error::from(err)).into(),
                );
            }
        }
    }
    value
}

/// Asks a connected supervisor for its status.
pub(crate) async fn fetch(client: &mut Client, name: &str) -> anyhow::Result<Status> {
    let reply = client
        .call(Op::Status, |_| {})
        .await
        .map_err(|e| control::client_error(name, e))?;
    match control::into_result(name, reply)? {
        ReplyResult::Status(status) => Ok(*status),
        other => Err(control::unexpected(name, &other)),
    }
}

/// The status of every service whose supervisor answers; stale sockets are skipped.
async fn running() -> anyhow::Result<Vec<Status>> {
    let mut all = Vec::new();
    for name in paths::socket_services() {
        match Client::connect(&paths::control_socket(&name)).await {
            Ok(mut client) => all.push(fetch(&mut client, &name).await?),
            Err(ClientError::NotRunning { .. }) => {
                tracing::debug!(service = %name, "skipping a stale control socket");
            }
            Err(e) => return Err(control::client_error(&name, e)),
        }
    }
    Ok(all)
}

/// The human form of one status, as of `now`.
pub fn render(status: &Status, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "service '{}': supervisor pid {}, up {}",
        status.service,
        status.supervisor_pid,
        age(status.started_unix_ms, now)
    );
    if let Some(path) = &status.config_path {
        let _ = writeln!(out, "  config: {path}");
    }
    if let Some(containment) = &status.containment {
        let how = match containment.strip_prefix("cgroup:") {
            Some(path) => format!("a cgroup per generation under '{path}'"),
            None => "process groups; the supervisor reaps and ends orphans".to_owned(),
        };
        let _ = writeln!(out, "  contained by: {how}");
    }
    let active = match status.active_generation {
        Some(generation) => format!("generation {generation}"),
        None => "none".to_owned(),
    };
    let _ = write!(out, "  active: {active}");
    if let Some(restart) = status.restart_in_progress {
        let _ = write!(out, " (restart #{restart} in progress)");
    }
    out.push_str("\n\n");

    let rows: Vec<Vec<String>> = status
        .generations
        .iter()
        .map(|g| {
            vec![
                g.generation.to_string(),
                g.pid.to_string(),
                state_name(g.state).to_owned(),
                format!("{} ago", age(g.started_unix_ms, now)),
                g.exit.map(exit_status).unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &["GEN", "PID", "STATE", "STARTED", "EXIT"],
        &rows,
    )));
    out.push('\n');

    if status.listeners.is_empty() {
        out.push_str("  no listeners\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .listeners
            .iter()
            .map(|l| {
                vec![
                    l.name.clone(),
                    l.address.clone(),
                    l.fd.to_string(),
                    l.inode.to_string(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["LISTENER", "ADDRESS", "FD", "INODE"],
            &rows,
        )));
    }
    out.push('\n');

    let r = &status.restarts;
    let _ = writeln!(
        out,
        "  restarts: {} requested, {} completed, {} rolled back, {} failed; {} crashes",
        r.requested, r.completed, r.rolled_back, r.failed, r.crashes
    );
    if let Some(last) = &status.last_restart {
        let outcome = match &last.outcome {
            RestartOutcome::Completed => "completed".to_owned(),
            RestartOutcome::RolledBack { reason } => format!("rolled back: {reason}"),
            RestartOutcome::Failed { reason } => format!("failed: {reason}"),
        };
        let generations = match (last.old_generation, last.new_generation) {
            (Some(old), Some(new)) => format!(", generation {old} → {new}"),
            (None, Some(new)) => format!(", generation {new}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  last restart: #{} {outcome}{generations} in {}",
            last.restart,
            millis(last.elapsed_ms)
        );
    }
    out
}

fn state_name(state: GenerationState) -> &'static str {
    match state {
        GenerationState::Starting => "starting",
        GenerationState::Active => "active",
        GenerationState::Draining => "draining",
        GenerationState::Exited => "exited",
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zd_core::proto::{ExitInfo, GenerationInfo, ListenerInfo, RestartCounters, RestartReport};

    const NOW_MS: u64 = 1_800_000_000_000;

    fn fixed() -> Status {
        Status {
            service: "api".into(),
            supervisor_pid: 1200,
            started_unix_ms: NOW_MS - 7_980_000,
            config_path: Some("/etc/zdctl/services.d/api.yaml".into()),
            active_generation: Some(8),
            restart_in_progress: None,
            generations: vec![
                GenerationInfo {
                    generation: 8,
                    pid: 1234,
                    state: GenerationState::Active,
                    started_unix_ms: NOW_MS - 300_000,
                    exit: None,
                },
                GenerationInfo {
                    generation: 7,
                    pid: 1100,
                    state: GenerationState::Exited,
                    started_unix_ms: NOW_MS - 7_900_000,
                    exit: Some(ExitInfo::Signal { signal: 9 }),
                },
            ],
            listeners: vec![ListenerInfo {
                name: "http".into(),
                address: "127.0.0.1:8080".into(),
                inode: 123_456,
                fd: 3,
            }],
            restarts: RestartCounters {
                requested: 3,
                completed: 2,
                rolled_back: 1,
                failed: 0,
                crashes: 0,
            },
            last_restart: Some(RestartReport {
                restart: 3,
                outcome: RestartOutcome::Completed,
                old_generation: Some(7),
                new_generation: Some(8),
                new_pid: Some(1234),
                elapsed_ms: 412,
            }),
            containment: Some("cgroup:/zdctl.api.1200".into()),
        }
    }

    #[test]
    fn the_human_status_shows_generations_listeners_and_counters() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let expected = "\
service 'api': supervisor pid 1200, up 2h13m
  config: /etc/zdctl/services.d/api.yaml
  contained by: a cgroup per generation under '/zdctl.api.1200'
  active: generation 8

  GEN  PID   STATE   STARTED       EXIT
  8    1234  active  5m ago        -
  7    1100  exited  2h11m40s ago  killed by SIGKILL (137)

  LISTENER  ADDRESS         FD  INODE
  http      127.0.0.1:8080  3   123456

  restarts: 3 requested, 2 completed, 1 rolled back, 0 failed; 0 crashes
  last restart: #3 completed, generation 7 → 8 in 412ms
";
        assert_eq!(render(&fixed(), now), expected);
    }
}
