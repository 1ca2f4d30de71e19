//! `zdctl list`: every service we know of, from service files and from control sockets.

use std::collections::BTreeMap;

use serde::Serialize;
use zd_core::config;
use zd_core::paths;
use zd_core::service::{self, Service, ServiceError, ServiceStatus};

use crate::cli::ListArgs;
use crate::output::{self, table};

/// One row of `zdctl list`; also its `--json` shape (an array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    pub name: String,
    pub state: ServiceState,
    /// The supervisor's pid, when running.
    pub supervisor_pid: Option<i32>,
    /// The active generation, when running.
    pub active_generation: Option<u64>,
    /// The service file, when there is one.
    pub source: Option<String>,
    /// Why the service file cannot be used, when it cannot.
    pub error: Option<String>,
    /// The driver of a service run by a foreign supervisor (`driver:` in its file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// A supervisor answers on the control socket.
    Running,
    /// A supervisor answers, but the service's starts failed too often
    /// (`restart.limit`): it respawns nothing until `zdctl restart`.
    Failing,
    /// No control socket: only a service file.
    Stopped,
    /// A control socket that nothing answers on (a supervisor died without cleaning up).
    Stale,
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let found = service::discover();
    if args.names {
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        return output::text(&names.iter().map(|n| format!("{n}\n")).collect::<String>());
    }
    let services: Vec<Service> = found.iter().filter_map(|f| f.service.clone()).collect();
    let mut statuses: BTreeMap<String, Result<ServiceStatus, ServiceError>> =
        service::statuses(services)
            .await
            .into_iter()
            .map(|(service, status)| (service.name().to_owned(), status))
            .collect();
    let mut entries: BTreeMap<String, ServiceEntry> = BTreeMap::new();
    for f in found {
        let mut entry = ServiceEntry {
            name: f.name.clone(),
            state: ServiceState::Stopped,
            supervisor_pid: None,
            active_generation: None,
            source: f.file.as_ref().map(|p| p.display().to_string()),
            error: f.error.clone(),
            driver: f
                .service
                .as_ref()
                .and_then(Service::driver)
                .map(str::to_owned),
        };
        match statuses.remove(&f.name) {
            Some(Ok(status)) => {
                entry.state = if status.status.failing.is_some() {
                    ServiceState::Failing
                } else {
                    ServiceState::Running
                };
                entry.supervisor_pid = Some(status.status.supervisor_pid);
                entry.active_generation = status.status.active_generation;
                if entry.source.is_none() {
                    entry.source = status.status.config_path;
                }
            }
            // A control socket nothing answers on: a supervisor died without cleaning up.
            Some(Err(ServiceError::NoSuchService { .. } | ServiceError::NotRunning { .. }))
                if paths::control_socket(&f.name).exists() && entry.driver.is_none() =>
            {
                entry.state = ServiceState::Stale;
            }
            Some(Err(err)) if !err.is_not_running() => {
                entry.state = ServiceState::Running;
                tracing::warn!(service = %f.name, "status failed: {err:#}");
            }
            _ => {}
        }
        entries.insert(f.name, entry);
    }
    let entries: Vec<ServiceEntry> = entries.into_values().collect();
    if args.json {
        return output::json_pretty(&entries);
    }
    if entries.is_empty() {
        let dirs: Vec<String> = config::config_dirs()
            .iter()
            .map(|d| format!("'{}'", d.display()))
            .collect();
        return output::line(&format!(
            "no services: no service file in {} and no supervisor in '{}'",
            dirs.join(", "),
            paths::runtime_dir().display()
        ));
    }
    output::text(&render(&entries))
}

/// The table, then one line per service file that cannot be used.
pub fn render(entries: &[ServiceEntry]) -> String {
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                state_name(e.state).to_owned(),
                e.supervisor_pid.map_or_else(dash, |p| p.to_string()),
                e.active_generation.map_or_else(dash, |g| g.to_string()),
                match &e.driver {
                    Some(driver) => format!(
                        "{} (driver {driver})",
                        e.source.clone().unwrap_or_else(dash)
                    ),
                    None => e.source.clone().unwrap_or_else(dash),
                },
            ]
        })
        .collect();
    let mut out = table(&["NAME", "STATE", "PID", "GEN", "SOURCE"], &rows);
    for e in entries {
        if let Some(error) = &e.error {
            out.push_str(&format!("{}: {}\n", e.name, first_problem(error)));
        }
    }
    out
}

fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Running => "running",
        ServiceState::Failing => "failing",
        ServiceState::Stopped => "stopped",
        ServiceState::Stale => "stale",
    }
}

/// The first line of a file's error, and how many more problems follow it: a file with
/// several lists one per line, the last line perhaps `and N more problems`.
fn first_problem(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or(text);
    let more: usize = lines
        .map(|line| {
            line.strip_prefix("and ")
                .and_then(|rest| rest.split_once(" more problem"))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or(1)
        })
        .sum();
    match more {
        0 => first.to_owned(),
        n => format!("{first} (and {n} more)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_state_pid_generation_source_and_file_errors() {
        let entries = [
            ServiceEntry {
                name: "api".into(),
                state: ServiceState::Running,
                supervisor_pid: Some(1200),
                active_generation: Some(8),
                source: Some("/etc/zdctl/services.d/api.yaml".into()),
                error: None,
                driver: None,
            },
            ServiceEntry {
                name: "web".into(),
                state: ServiceState::Stopped,
                supervisor_pid: None,
                active_generation: None,
                source: Some("/etc/zdctl/services.d/web.yaml".into()),
                error: Some("web.yaml:3:1: unknown key 'comand'\nweb.yaml:4:1: more".into()),
                driver: None,
            },
        ];
        assert_eq!(
            render(&entries),
            "\
NAME  STATE    PID   GEN  SOURCE
api   running  1200  8    /etc/zdctl/services.d/api.yaml
web   stopped  -     -    /etc/zdctl/services.d/web.yaml
web: web.yaml:3:1: unknown key 'comand' (and 1 more)
"
        );
    }

    #[test]
    fn a_file_error_shows_its_first_problem_and_counts_the_rest() {
        assert_eq!(first_problem("a.yaml:1:1: x"), "a.yaml:1:1: x");
        assert_eq!(
            first_problem("a.yaml:1:1: x\na.yaml:2:1: y\nand 5 more problems"),
            "a.yaml:1:1: x (and 6 more)"
        );
    }
}
