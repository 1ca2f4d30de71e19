//! `zdctl restart NAME`: asks the supervisor for a restart and follows it phase by phase.

use zd_core::proto::{Event, EventKind, Op, Reply, ReplyResult, RestartOutcome, RestartReport};

use crate::cli::{RestartArgs, Wait};
use crate::control;
use crate::exit::ExitError;
use crate::output;
use crate::progress::Progress;

pub async fn restart(args: RestartArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    control::check_name(name)?;
    if let Some(config) = crate::foreign::driver_for(name)? {
        return crate::foreign::restart(&config, &args).await;
    }
    let mut client = control::connect(name).await?;
    let op = Op::Restart {
        ready_timeout_ms: args
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        attach: args.attach,
    };
    let progress = Progress::new(args.json, &format!("restarting '{name}'"));
    let id = client
        .send(op)
        .await
        .map_err(|e| control::client_error(name, e))?;
    loop {
        let reply = client
            .next_reply()
            .await
            .map_err(|e| control::client_error(name, e))?;
        match reply {
            Reply::Event { id: rid, event, .. } if rid == id => {
                if args.json {
                    output::json_line(&event)?;
                }
                progress.event(&event);
                if args.wait == Wait::Ready
                    && let EventKind::Promoted { generation, pid } = event.kind
                {
                    progress.finish();
                    return promoted(name, &event, generation, pid, args.json);
                }
            }
            Reply::Event { .. } => {}
            Reply::Result {
                id: rid, result, ..
            } if rid == id || rid == 0 => {
                progress.finish();
                return match *result {
                    ReplyResult::Restart(report) => finished(name, &report, args.json),
                    other => Err(control::unexpected(name, &other)),
                };
            }
            Reply::Error { id: rid, error, .. } if rid == id || rid == 0 => {
                progress.finish();
                if args.json {
                    output::json_line(&serde_json::json!({ "error": error }))?;
                }
                return Err(control::reply_error(name, &error));
            }
            _ => {}
        }
    }
}

/// `--wait ready`: the new generation serves alone; the supervisor drains the old one
/// whether or not we stay connected.
fn promoted(
    name: &str,
    event: &Event,
    generation: u64,
    pid: i32,
    json: bool,
) -> anyhow::Result<()> {
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
        RestartOutcome::RolledBack { reason } => Err(ExitError::failure(format!(
            "restart of '{name}' rolled back: {reason}"
        ))),
        RestartOutcome::Failed { reason } => Err(ExitError::failure(format!(
            "restart of '{name}' failed: {reason}"
        ))),
    }
}

/// `restarted 'api': generation 7 → 8 (pid 1234) in 412ms`.
pub fn completed_line(name: &str, report: &RestartReport) -> String {
    let generations = match (report.old_generation, report.new_generation) {
        (Some(old), Some(new)) => format!("generation {old} → {new}"),
        (None, Some(new)) => format!("generation {new}"),
        (_, None) => "no new generation".to_owned(),
    };
    let pid = report
        .new_pid
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default();
    format!(
        "restarted '{name}': {generations}{pid} in {}",
        output::millis(report.elapsed_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_restart_names_both_generations_and_the_new_pid() {
        let report = RestartReport {
            restart: 3,
            outcome: RestartOutcome::Completed,
            old_generation: Some(7),
            new_generation: Some(8),
            new_pid: Some(1234),
            elapsed_ms: 412,
        };
        assert_eq!(
            completed_line("api", &report),
            "restarted 'api': generation 7 → 8 (pid 1234) in 412ms"
        );
    }
}
