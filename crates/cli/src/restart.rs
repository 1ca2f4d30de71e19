//! `zdctl restart NAME`: restarts a service, whoever runs it, and follows it phase by
//! phase.

use zd_core::proto::{Event, EventKind, RestartOutcome, RestartReport};
use zd_core::service::{RestartOptions, Restarted};

use crate::cli::{RestartArgs, Wait};
use crate::control;
use crate::exit::{ExitError, FAILURE};
use crate::output;
use crate::progress::Progress;

pub async fn restart(args: RestartArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let service = control::open(name)?;
    let title = match service.driver() {
        Some(driver) => format!("restarting '{name}' (driver {driver})"),
        None => format!("restarting '{name}'"),
    };
    let progress = Progress::new(args.json, &title);
    let options = RestartOptions {
        timeout: args.timeout,
        attach: args.attach,
        until_promoted: args.wait == Wait::Ready,
        no_bake: args.no_bake,
    };
    let mut write_error = None;
    let result = service
        .restart(options, |event| {
            if args.json && write_error.is_none() {
                write_error = output::json_line(event).err();
            }
            progress.event(event);
        })
        .await;
    progress.finish();
    if let Some(err) = write_error {
        return Err(err);
    }
    match result {
        Ok(Restarted::Finished(report)) => finished(name, &report, args.json),
        Ok(Restarted::Promoted(event)) => promoted(name, &event, args.json),
        // With --json, the error object is printed where every command's is (exit.rs).
        Err(err) => Err(control::service_error(err)),
    }
}

/// `--wait ready`: the new generation serves alone; the supervisor drains the old one
/// whether or not we stay connected.
fn promoted(name: &str, event: &Event, json: bool) -> anyhow::Result<()> {
    let EventKind::Promoted { generation, pid } = event.kind else {
        return Err(ExitError::failure(format!(
            "the restart of '{name}' ended on an event that is not 'promoted'"
        )));
    };
    if json {
        return Ok(());
    }
    let elapsed = event
        .elapsed_ms
        .map(|ms| format!(" in {}", output::millis(ms)))
        .unwrap_or_default();
    output::line(&format!(
        "restarted '{name}': generation {generation} (pid {pid}) promoted{elapsed}; \
         the old generation drains on its own"
    ))
}

pub(crate) fn finished(name: &str, report: &RestartReport, json: bool) -> anyhow::Result<()> {
    if json {
        output::json_line(report)?;
    }
    match &report.outcome {
        RestartOutcome::Completed => {
            if !json {
                output::line(&completed_line(name, report))?;
            }
            Ok(())
        }
        // The report line said it all in JSON.
        RestartOutcome::RolledBack { reason } => Err(ExitError::reported(
            FAILURE,
            "rolled_back",
            format!(
                "restart of '{name}' rolled back: {reason}{}",
                last_words(name, report)
            ),
        )),
        RestartOutcome::Failed { reason } => Err(ExitError::reported(
            FAILURE,
            "failed",
            format!(
                "restart of '{name}' failed: {reason}{}",
                last_words(name, report)
            ),
        )),
    }
}

/// The last lines the failed generation printed, indented under the error, and where to
/// read more; empty when it printed nothing (or its output is not kept).
fn last_words(name: &str, report: &RestartReport) -> String {
    let Some(generation) = report.output.first().map(|l| l.generation) else {
        return String::new();
    };
    let mut text = format!("\nthe last lines generation {generation} printed:");
    for line in &report.output {
        text.push_str(&format!(
            "\n  {} | {}",
            line.stream.short(),
            crate::logs::visible(&line.text)
        ));
    }
    text.push_str(&format!(
        "\n(all of it: zdctl logs {name} --generation {generation})"
    ));
    text
}

/// `restarted 'api': generation 7 → 8 (pid 1234) in 412ms`; with several instances, a
/// rolling restart or a bake: `… (pids 1234, 1235, 1236, 1237) in 6.4s: 4 steps, baked 5s`.
pub fn completed_line(name: &str, report: &RestartReport) -> String {
    let generations = match (report.old_generation, report.new_generation) {
        (Some(old), Some(new)) => format!("generation {old} → {new}"),
        (None, Some(new)) => format!("generation {new}"),
        (_, None) => "no new generation".to_owned(),
    };
    let pid = match (report.new_pids.as_slice(), report.new_pid) {
        ([], Some(pid)) | ([_], Some(pid)) => format!(" (pid {pid})"),
        ([], None) => String::new(),
        (pids, _) => format!(" (pids {})", pid_list(pids)),
    };
    let mut extra = Vec::new();
    if let Some(steps) = report.steps {
        extra.push(match steps {
            1 => "1 step".to_owned(),
            n => format!("{n} steps"),
        });
    }
    if let Some(bake_ms) = report.bake_ms {
        extra.push(format!("baked {}", output::millis(bake_ms)));
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(": {}", extra.join(", "))
    };
    format!(
        "restarted '{name}': {generations}{pid} in {}{extra}",
        output::millis(report.elapsed_ms)
    )
}

/// At most [`PIDS_SHOWN`] pids, then how many more: a generation may run 256.
fn pid_list(pids: &[i32]) -> String {
    let shown: Vec<String> = pids.iter().take(PIDS_SHOWN).map(i32::to_string).collect();
    match pids.len().saturating_sub(PIDS_SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

const PIDS_SHOWN: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_restart_names_both_generations_and_the_new_pid() {
        let report = RestartReport {
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
        };
        assert_eq!(
            completed_line("api", &report),
            "restarted 'api': generation 7 → 8 (pid 1234) in 412ms"
        );
    }

    #[test]
    fn a_rolling_restart_with_a_bake_names_every_new_pid_its_steps_and_the_bake() {
        let mut report = RestartReport {
            bake_ms: Some(5_000),
            new_pids: vec![1234, 1235, 1236, 1237],
            steps: Some(4),
            restart: 3,
            outcome: RestartOutcome::Completed,
            old_generation: Some(7),
            new_generation: Some(8),
            new_pid: Some(1234),
            elapsed_ms: 6_400,
            output: Vec::new(),
        };
        assert_eq!(
            completed_line("api", &report),
            "restarted 'api': generation 7 → 8 (pids 1234, 1235, 1236, 1237) in 6.4s: 4 \
             steps, baked 5s"
        );
        report.new_pids = (1000..1020).collect();
        report.steps = None;
        assert_eq!(
            completed_line("api", &report),
            "restarted 'api': generation 7 → 8 (pids 1000, 1001, 1002, 1003, 1004, 1005, \
             1006, 1007 and 12 more) in 6.4s: baked 5s"
        );
    }
}
