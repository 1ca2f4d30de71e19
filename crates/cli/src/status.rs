//! `zdctl status [NAME]`: one service's generations, listeners and counters, or every
//! running service's.

mod pool;

use std::fmt::Write as _;
use std::time::SystemTime;

use zd_core::inspect::{InspectError, Inspector, Snapshot, SocketSource};
use zd_core::paths;
use zd_core::proto::{FailingInfo, InterceptInfo, RestartOutcome};
use zd_core::service::{self, ServiceStatus};

use crate::cli::StatusArgs;
use crate::control;
use crate::output::{self, age, exit_status, millis, table};

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    match &args.name {
        Some(name) => {
            let service = control::open(name)?;
            let status = service.status().await.map_err(control::service_error)?;
            if args.json {
                let snapshot =
                    service.snapshot(&mut Inspector::new(SocketSource::default()), &status.status);
                output::json_pretty(&with_snapshot(serde_json::to_value(&status)?, snapshot))
            } else {
                output::text(&render(&status, SystemTime::now()))
            }
        }
        None => {
            let mut all = Vec::new();
            for (service, status) in service::running().await {
                match status {
                    Ok(status) => all.push(status),
                    Err(err) => {
                        tracing::warn!(service = %service.name(), "status failed: {err:#}");
                    }
                }
            }
            if args.json {
                return output::json_pretty(&all);
            }
            if all.is_empty() {
                return output::line(&format!(
                    "no service is running (no supervisor answers in '{}', and no driven \
                     service's supervisor runs); start one with 'zdctl run'",
                    paths::runtime_dir().display()
                ));
            }
            let now = SystemTime::now();
            let blocks: Vec<String> = all.iter().map(|s| render(s, now)).collect();
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

/// The human form of one status, as of `now`. A driven service names its driver and its
/// supervisor's program; its counters are the restarts zdctl made (a driver does not watch
/// the service between restarts, so it counts no crashes and does not say so).
pub fn render(service: &ServiceStatus, now: SystemTime) -> String {
    let status = &service.status;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "service '{}': {} pid {}, up {}",
        status.service,
        service.driver.as_deref().unwrap_or("supervisor"),
        status.supervisor_pid,
        age(status.started_unix_ms, now)
    );
    if let Some(driver) = &service.driver {
        let _ = writeln!(out, "  driver: {driver}");
    }
    if let Some(me) = &status.supervisor {
        out.push_str(&supervisor_line(me, now));
    }
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
    if status.intercept_binds {
        let _ = writeln!(
            out,
            "  binds: intercepted; a bind of a listener's address gets the generation's socket"
        );
    }
    let active = match status.active_generation {
        Some(generation) => format!("generation {generation}"),
        None => "none".to_owned(),
    };
    let _ = write!(out, "  active: {active}");
    if let Some(restart) = status.restart_in_progress {
        let _ = write!(out, " (restart #{restart} in progress)");
    }
    out.push('\n');
    if let Some(capacity) = pool::capacity_line(status) {
        out.push_str(&capacity);
    }
    if let Some(bake) = &status.bake {
        out.push_str(&pool::bake_line(&status.service, bake, now));
    }
    if let Some(failing) = &status.failing {
        out.push_str(&failing_block(&status.service, failing, now));
    }
    out.push('\n');

    // Only a service whose binds are (or were, for a generation still listed) intercepted
    // has the column.
    let intercepting =
        status.intercept_binds || status.generations.iter().any(|g| g.intercept.is_some());
    // Likewise the columns of a service whose generations run several instances; each
    // instance of such a generation gets a row under the generation's.
    let pools = pool::has_pools(status);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for g in &status.generations {
        let mut row = vec![
            g.generation.to_string(),
            g.pid.to_string(),
            g.state.name().to_owned(),
            format!("{} ago", age(g.started_unix_ms, now)),
            g.exit.map(exit_status).unwrap_or_else(|| "-".to_owned()),
        ];
        if pools {
            row.extend(pool::generation_cells(g));
        }
        if intercepting {
            row.push(match &g.intercept {
                Some(info) => binds_summary(info),
                None => "not intercepted".to_owned(),
            });
        }
        rows.push(row);
        if pool::several(g) {
            rows.extend(
                g.instances
                    .iter()
                    .map(|i| pool::instance_row(g.generation, i, now)),
            );
        }
    }
    let mut header = vec!["GEN", "PID", "STATE", "STARTED", "EXIT"];
    if pools {
        header.extend(["READY", "RESPAWNS"]);
    }
    if intercepting {
        header.push("BINDS");
    }
    out.push_str(&indent(&table(&header, &rows)));
    out.push('\n');
    if let Some(handed) = handed_table(status) {
        out.push_str(&handed);
        out.push('\n');
    }

    out.push_str(&listeners_table(status));
    out.push('\n');

    let r = &status.restarts;
    let _ = write!(
        out,
        "  restarts: {} requested, {} completed, {} rolled back, {} failed",
        r.requested, r.completed, r.rolled_back, r.failed
    );
    if service.driver.is_none() {
        let _ = write!(out, "; {} crashes", r.crashes);
    }
    out.push('\n');
    if let Some(last) = &status.last_restart {
        let outcome = match &last.outcome {
            RestartOutcome::Completed => "completed".to_owned(),
            RestartOutcome::RolledBack { reason } => format!(
                "{}: {reason}",
                crate::color::bad("rolled back", crate::color::Stream::Stdout)
            ),
            RestartOutcome::Failed { reason } => format!(
                "{}: {reason}",
                crate::color::bad("failed", crate::color::Stream::Stdout)
            ),
        };
        let completed = matches!(last.outcome, RestartOutcome::Completed);
        let generations = match (last.old_generation, last.new_generation) {
            (Some(old), Some(new)) if completed => format!(", generation {old} → {new}"),
            // Nothing changed: say which generation stayed, not an arrow.
            (Some(old), Some(new)) => format!(" (generation {new} stopped, {old} kept)"),
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
    match status.log_lines {
        Some(0) => out.push_str("  output: not kept (log.lines: 0)\n"),
        Some(n) => {
            let _ = writeln!(
                out,
                "  output: the last {n} lines of each generation; 'zdctl logs {}' shows them",
                status.service
            );
        }
        None => {}
    }
    out
}

/// `  zdctl: 0.4.0, re-executed 2 times (last 3s ago, from 0.3.9)`, and what it adopted.
fn supervisor_line(me: &zd_core::proto::SupervisorInfo, now: SystemTime) -> String {
    let mut out = format!("  zdctl: {}", me.version);
    let times = match me.reexecs {
        0 => "never".to_owned(),
        1 => "once".to_owned(),
        n => format!("{n} times"),
    };
    match &me.last_reexec {
        Some(last) if last.error.is_some() => {
            let _ = write!(
                out,
                ", re-executed {times}; the last reexec ({} ago, to {}) failed: {}",
                age(last.unix_ms, now),
                last.binary,
                last.error.as_deref().unwrap_or_default()
            );
        }
        Some(last) if me.reexecs > 0 => {
            let _ = write!(
                out,
                ", re-executed {times} (last {} ago, from {})",
                age(last.unix_ms, now),
                last.from_version
            );
        }
        _ => {}
    }
    out.push('\n');
    if let Some(adopted) = &me.adopted {
        let list: Vec<String> = adopted.generations.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "  adopted: generation {} from supervisor pid {}, which died ({} ago)",
            list.join(", "),
            adopted.from_pid,
            age(adopted.unix_ms, now)
        );
    }
    out
}

/// Why a failing service fails: the limit it reached, the last start that failed and
/// the last lines that start printed.
fn failing_block(service: &str, failing: &FailingInfo, now: SystemTime) -> String {
    let mut out = String::new();
    let clients = match failing.refusing_since_unix_ms {
        Some(since) => format!(
            "its TCP listeners refuse new connections (for {}: restart.refuse_after)",
            age(since, now)
        ),
        None => "clients wait in the listeners' queues".to_owned(),
    };
    let _ = writeln!(
        out,
        "  state: failing for {}: {} starts failed within {}; nothing is respawned until \
         'zdctl restart {service}', {clients}",
        age(failing.since_unix_ms, now),
        failing.failed_starts,
        millis(failing.window_ms)
    );
    let which = match (failing.generation, failing.pid) {
        (Some(generation), Some(pid)) => format!("generation {generation} (pid {pid})"),
        (Some(generation), None) => format!("generation {generation}"),
        _ => "a start".to_owned(),
    };
    let how = match (failing.exit, &failing.reason) {
        (_, Some(reason)) => reason.clone(),
        (Some(exit), None) => exit_status(exit),
        (None, None) => "failed".to_owned(),
    };
    let _ = writeln!(out, "  last failure: {which}: {how}");
    if !failing.output.is_empty() {
        let _ = writeln!(out, "  its last output:");
        for line in &failing.output {
            let _ = writeln!(out, "    | {line}");
        }
    }
    out
}

/// Every socket with the generations holding it, its queue and whether it gets new
/// connections, when the supervisor says (a zdctl supervisor does); else each listener.
fn listeners_table(status: &zd_core::proto::Status) -> String {
    if !status.sockets.is_empty() {
        let rows: Vec<Vec<String>> = status
            .sockets
            .iter()
            .map(|s| {
                let generations: Vec<String> = s.generations.iter().map(u64::to_string).collect();
                vec![
                    s.listener.clone(),
                    s.address.clone(),
                    s.fd.to_string(),
                    s.inode.to_string(),
                    if generations.is_empty() {
                        "-".to_owned()
                    } else {
                        generations.join(",")
                    },
                    match (s.queue, s.queued_bytes) {
                        (Some(connections), _) => connections.to_string(),
                        (None, Some(bytes)) => format!("{bytes} B"),
                        (None, None) => "-".to_owned(),
                    },
                    if s.refusing {
                        "refused"
                    } else if s.steered_to {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_owned(),
                ]
            })
            .collect();
        return indent(&table(
            &[
                "LISTENER",
                "ADDRESS",
                "FD",
                "INODE",
                "GEN",
                "QUEUE",
                "NEW CONNECTIONS",
            ],
            &rows,
        ));
    }
    if status.listeners.is_empty() {
        return "  no listeners\n".to_owned();
    }
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
    indent(&table(&["LISTENER", "ADDRESS", "FD", "INODE"], &rows))
}

/// `2 got a listener, 1 let through, 1 failed (EMFILE), 1 unlink skipped`: what a
/// generation's interception answered. Failures and unlinks only when there were some.
pub fn binds_summary(info: &InterceptInfo) -> String {
    let mut out = format!(
        "{} got a listener, {} let through",
        info.handed(),
        info.binds_continued
    );
    if info.binds_failed > 0 {
        let _ = write!(out, ", {} failed", info.binds_failed);
        if let Some(error) = &info.last_error {
            let _ = write!(out, " ({error})");
        }
    }
    match info.unlinks_skipped() {
        0 => {}
        1 => out.push_str(", 1 unlink skipped"),
        n => {
            let _ = write!(out, ", {n} unlinks skipped");
        }
    }
    out
}

/// Each listener that an intercepted bind got (or whose socket file an unlink spared), per
/// generation, with the process and fd it went to last; `None` when there is none.
fn handed_table(status: &zd_core::proto::Status) -> Option<String> {
    let listeners = || {
        status.generations.iter().flat_map(|g| {
            g.intercept
                .iter()
                .flat_map(|info| &info.listeners)
                .filter(|l| l.binds > 0 || l.unlinks_skipped > 0)
                .map(move |l| (g.generation, l))
        })
    };
    listeners().next()?;
    let unlinks = listeners().any(|(_, l)| l.unlinks_skipped > 0);
    let or_dash = |n: Option<i32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<Vec<String>> = listeners()
        .map(|(generation, l)| {
            let mut row = vec![
                generation.to_string(),
                l.listener.clone(),
                l.address.clone(),
                l.binds.to_string(),
                or_dash(l.last_pid),
                or_dash(l.last_fd),
            ];
            if unlinks {
                row.push(l.unlinks_skipped.to_string());
            }
            row
        })
        .collect();
    let mut header = vec!["GEN", "LISTENER", "ADDRESS", "BINDS", "LAST PID", "LAST FD"];
    if unlinks {
        header.push("UNLINKS SKIPPED");
    }
    Some(indent(&table(&header, &rows)))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;
    use zd_core::proto::{
        ExitInfo, FailingInfo, GenerationInfo, GenerationState, InterceptedListener, ListenerInfo,
        RestartCounters, RestartReport, SocketInfo, Status,
    };

    pub(crate) const NOW_MS: u64 = 1_800_000_000_000;

    pub(crate) fn fixed() -> Status {
        Status {
            bake: None,
            capacity: None,
            instances: None,
            service: "api".into(),
            supervisor_pid: 1200,
            started_unix_ms: NOW_MS - 7_980_000,
            config_path: Some("/etc/zdctl/services.d/api.yaml".into()),
            active_generation: Some(8),
            restart_in_progress: None,
            generations: vec![
                GenerationInfo {
                    instances: Vec::new(),
                    generation: 8,
                    pid: 1234,
                    state: GenerationState::Active,
                    started_unix_ms: NOW_MS - 300_000,
                    exit: None,
                    intercept: None,
                    output_lines: None,
                },
                GenerationInfo {
                    instances: Vec::new(),
                    generation: 7,
                    pid: 1100,
                    state: GenerationState::Exited,
                    started_unix_ms: NOW_MS - 7_900_000,
                    exit: Some(ExitInfo::Signal { signal: 9 }),
                    intercept: None,
                    output_lines: None,
                },
            ],
            listeners: vec![ListenerInfo {
                name: "http".into(),
                address: "127.0.0.1:8080".into(),
                inode: 123_456,
                fd: 3,
            }],
            sockets: Vec::new(),
            restarts: RestartCounters {
                requested: 3,
                completed: 2,
                rolled_back: 1,
                failed: 0,
                crashes: 0,
            },
            last_restart: Some(RestartReport {
                bake_ms: None,
                new_pids: Vec::new(),
                steps: None,
                restart: 3,
                outcome: RestartOutcome::Completed,
                old_generation: Some(7),
                new_generation: Some(8),
                new_pid: Some(1234),
                elapsed_ms: 412,
                output: Vec::new(),
            }),
            containment: Some("cgroup:/zdctl.api.1200".into()),
            intercept_binds: false,
            failing: None,
            supervisor: None,
            log_lines: None,
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
        let status = ServiceStatus {
            status: fixed(),
            driver: None,
        };
        assert_eq!(render(&status, now), expected);
    }

    #[test]
    fn the_supervisor_line_says_what_runs_it_what_was_reexecuted_and_adopted() {
        use zd_core::proto::{AdoptedInfo, ReexecInfo, SupervisorInfo};
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let mut status = fixed();
        status.supervisor = Some(SupervisorInfo {
            version: "0.2.0".into(),
            binary: "/usr/bin/zdctl".into(),
            reexecs: 2,
            last_reexec: Some(ReexecInfo {
                unix_ms: NOW_MS - 3_000,
                from_version: "0.1.0".into(),
                binary: "/usr/bin/zdctl".into(),
                error: None,
            }),
            adopted: Some(AdoptedInfo {
                unix_ms: NOW_MS - 60_000,
                from_pid: 812,
                generations: vec![7],
            }),
        });
        let text = render(
            &ServiceStatus {
                status: status.clone(),
                driver: None,
            },
            now,
        );
        assert!(
            text.contains("  zdctl: 0.2.0, re-executed 2 times (last 3s ago, from 0.1.0)\n"),
            "{text}"
        );
        assert!(
            text.contains("  adopted: generation 7 from supervisor pid 812, which died (1m ago)\n"),
            "{text}"
        );
        if let Some(me) = &mut status.supervisor {
            me.adopted = None;
            if let Some(last) = &mut me.last_reexec {
                last.error = Some("/tmp/x is not an executable file".into());
            }
        }
        let text = render(
            &ServiceStatus {
                status,
                driver: None,
            },
            now,
        );
        assert!(
            text.contains("the last reexec (3s ago, to /usr/bin/zdctl) failed: /tmp/x is not an executable file"),
            "{text}"
        );
        assert!(!text.contains("adopted"), "{text}");
    }

    #[test]
    fn a_failing_service_says_why_with_its_last_exit_and_output() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let mut status = fixed();
        status.active_generation = None;
        status.generations = vec![GenerationInfo {
            instances: Vec::new(),
            generation: 9,
            pid: 1300,
            state: GenerationState::Exited,
            started_unix_ms: NOW_MS - 40_000,
            exit: Some(ExitInfo::Code { code: 1 }),
            intercept: None,
            output_lines: None,
        }];
        status.failing = Some(FailingInfo {
            since_unix_ms: NOW_MS - 40_000,
            failed_starts: 5,
            window_ms: 60_000,
            refusing_since_unix_ms: None,
            generation: Some(9),
            pid: Some(1300),
            exit: Some(ExitInfo::Code { code: 1 }),
            reason: None,
            output: vec!["error: cannot read /etc/api.conf".into()],
        });
        let text = render(
            &ServiceStatus {
                status,
                driver: None,
            },
            now,
        );
        let want = "\
  active: none
  state: failing for 40s: 5 starts failed within 1m; nothing is respawned until 'zdctl restart api', clients wait in the listeners' queues
  last failure: generation 9 (pid 1300): exit code 1
  its last output:
    | error: cannot read /etc/api.conf

";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn a_failing_service_past_refuse_after_says_its_listeners_refuse() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let mut status = fixed();
        status.active_generation = None;
        status.failing = Some(FailingInfo {
            since_unix_ms: NOW_MS - 40_000,
            failed_starts: 5,
            window_ms: 60_000,
            refusing_since_unix_ms: Some(NOW_MS - 10_000),
            generation: None,
            pid: None,
            exit: None,
            reason: Some("cannot start the new generation: no such file".into()),
            output: Vec::new(),
        });
        let text = render(
            &ServiceStatus {
                status,
                driver: None,
            },
            now,
        );
        let want = "  state: failing for 40s: 5 starts failed within 1m; nothing is respawned \
                    until 'zdctl restart api', its TCP listeners refuse new connections (for \
                    10s: restart.refuse_after)\n";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn a_driven_service_names_its_driver_and_lists_its_listeners_without_crash_counts() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let mut status = fixed();
        status.containment = None;
        status.generations.truncate(1);
        let text = render(
            &ServiceStatus {
                status,
                driver: Some("psflip".into()),
            },
            now,
        );
        assert!(
            text.starts_with("service 'api': psflip pid 1200, up 2h13m\n  driver: psflip\n"),
            "{text}"
        );
        assert!(
            text.contains("  http      127.0.0.1:8080  3   123456\n"),
            "{text}"
        );
        assert!(
            text.contains("  restarts: 3 requested, 2 completed, 1 rolled back, 0 failed\n"),
            "{text}"
        );
        assert!(!text.contains("crashes"), "{text}");
    }

    #[test]
    fn an_intercepting_service_shows_what_each_generations_binds_got() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let mut status = fixed();
        status.intercept_binds = true;
        let listener = |binds, last: Option<(i32, i32)>| InterceptedListener {
            listener: "http".into(),
            address: "127.0.0.1:8080".into(),
            binds,
            unlinks_skipped: 0,
            last_pid: last.map(|(pid, _)| pid),
            last_fd: last.map(|(_, fd)| fd),
        };
        status.generations[0].intercept = Some(InterceptInfo {
            listeners: vec![listener(2, Some((1236, 5)))],
            binds_continued: 1,
            binds_failed: 1,
            last_error: Some("EMFILE".into()),
        });
        // Generation 7 ran before the service turned intercept_binds on.
        let text = render(
            &ServiceStatus {
                status,
                driver: None,
            },
            now,
        );
        let expected = "  contained by: a cgroup per generation under '/zdctl.api.1200'
  binds: intercepted; a bind of a listener's address gets the generation's socket
  active: generation 8

  GEN  PID   STATE   STARTED       EXIT                     BINDS
  8    1234  active  5m ago        -                        2 got a listener, 1 let through, 1 failed (EMFILE)
  7    1100  exited  2h11m40s ago  killed by SIGKILL (137)  not intercepted

  GEN  LISTENER  ADDRESS         BINDS  LAST PID  LAST FD
  8    http      127.0.0.1:8080  2      1236      5

  LISTENER  ADDRESS         FD  INODE
";
        assert!(text.contains(expected), "{text}");
    }

    #[test]
    fn skipped_unlinks_of_a_unix_listener_get_a_column() {
        let info = InterceptInfo {
            listeners: vec![InterceptedListener {
                listener: "sock".into(),
                address: "/run/api.sock".into(),
                binds: 1,
                unlinks_skipped: 2,
                last_pid: Some(1234),
                last_fd: Some(3),
            }],
            binds_continued: 0,
            binds_failed: 0,
            last_error: None,
        };
        assert_eq!(
            binds_summary(&info),
            "1 got a listener, 0 let through, 2 unlinks skipped"
        );
        let mut status = fixed();
        status.generations[0].intercept = Some(info);
        let table = handed_table(&status).expect("a table");
        assert_eq!(
            table,
            "  GEN  LISTENER  ADDRESS        BINDS  LAST PID  LAST FD  UNLINKS SKIPPED
  8    sock      /run/api.sock  1      1234      3        2
"
        );
    }

    #[test]
    fn a_steered_restart_shows_each_generations_socket_and_which_gets_new_connections() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let mut status = fixed();
        let socket = |inode, generations: &[u64], steered_to, queue| SocketInfo {
            listener: "http".into(),
            address: "127.0.0.1:8080".into(),
            inode,
            fd: 3,
            generations: generations.to_vec(),
            steered_to,
            refusing: false,
            queue,
            queued_bytes: None,
        };
        status.sockets = vec![
            socket(123_456, &[8], true, Some(0)),
            socket(123_001, &[7], false, Some(2)),
            socket(123_000, &[], false, None),
        ];
        let text = render(
            &ServiceStatus {
                status,
                driver: None,
            },
            now,
        );
        let expected = "\
  LISTENER  ADDRESS         FD  INODE   GEN  QUEUE  NEW CONNECTIONS
  http      127.0.0.1:8080  3   123456  8    0      yes
  http      127.0.0.1:8080  3   123001  7    2      no
  http      127.0.0.1:8080  3   123000  -    -      no
";
        assert!(text.contains(expected), "{text}");
    }
}
