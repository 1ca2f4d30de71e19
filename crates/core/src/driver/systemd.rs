//! systemd: `systemctl reload UNIT` (or `restart`), judged from `MainPID`, `ActiveState`
//! and `ExecMainStatus` read with `systemctl show`.
//!
//! Only the parsing of `systemctl show` is tested (on fixture text): the test machines run
//! no systemd.

use std::time::{Duration, Instant};

use super::run::{Run, failed, tick};
use super::{DriverConfig, DriverError, SystemdAction};
use crate::duration::format_duration;
use crate::proto::{EventKind, RestartOutcome};

/// The properties the driver reads.
const PROPERTIES: &str = "MainPID,ActiveState,SubState,ExecMainStatus,Result";

/// A unit as `systemctl show` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UnitState {
    /// 0 when the unit has no main process.
    pub main_pid: i32,
    /// `active`, `reloading`, `activating`, `failed`, `inactive`, …
    pub active_state: String,
    pub sub_state: String,
    /// The main process's last exit status.
    pub exec_main_status: i32,
    /// `success`, `exit-code`, `signal`, `timeout`, …
    pub result: String,
}

/// Parses `systemctl show -p …` output: `Key=Value` lines; unknown keys are ignored.
pub fn parse_show(text: &str) -> Option<UnitState> {
    let mut state = UnitState::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "MainPID" => state.main_pid = value.parse().ok()?,
            "ActiveState" => state.active_state = value.to_owned(),
            "SubState" => state.sub_state = value.to_owned(),
            "ExecMainStatus" => state.exec_main_status = value.parse().ok()?,
            "Result" => state.result = value.to_owned(),
            _ => continue,
        }
        seen = true;
    }
    (seen && !state.active_state.is_empty()).then_some(state)
}

async fn systemctl(args: &[&str], timeout: Duration) -> Result<(bool, String), DriverError> {
    let run = tokio::process::Command::new("systemctl")
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| DriverError::Garbage {
            path: "systemctl".into(),
            reason: format!("'systemctl {}' did not finish in time", args.join(" ")),
        })?
        .map_err(|e| DriverError::NotRunning {
            path: "systemctl".into(),
            reason: format!("cannot run systemctl ({e}); is this a systemd machine?"),
        })?;
    let text = if output.status.success() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&output.stderr).trim().to_owned()
    };
    Ok((output.status.success(), text))
}

pub(super) async fn show(unit: &str, timeout: Duration) -> Result<UnitState, DriverError> {
    let (ok, text) = systemctl(&["show", unit, "-p", PROPERTIES], timeout).await?;
    if !ok {
        return Err(DriverError::NotRunning {
            path: unit.into(),
            reason: format!("systemctl show {unit} failed: {text}"),
        });
    }
    parse_show(&text).ok_or_else(|| DriverError::Garbage {
        path: unit.into(),
        reason: format!("'systemctl show' printed no unit state: {text:?}"),
    })
}

pub(super) async fn restart(
    config: &DriverConfig,
    run: &mut Run<'_>,
) -> Result<RestartOutcome, DriverError> {
    let Some(unit) = config.unit.as_deref() else {
        return Err(DriverError::NotRunning {
            path: config.source.clone(),
            reason: "the systemd driver needs `systemd: { unit: NAME }`".to_owned(),
        });
    };
    let per_call = config.timeout;
    let before = show(unit, per_call).await?;
    if before.active_state != "active" || before.main_pid <= 0 {
        return Err(DriverError::NotRunning {
            path: unit.into(),
            reason: format!(
                "unit '{unit}' is {} with no main process; start it with 'systemctl start {unit}'",
                before.active_state
            ),
        });
    }
    run.numbers_from_record(before.main_pid);
    let action = match config.systemd {
        SystemdAction::Reload => "reload",
        SystemdAction::Restart => "restart",
    };
    let (ok, text) = systemctl(&[action, unit], per_call).await?;
    run.emit(EventKind::Signalled {
        generation: run.old_generation.unwrap_or(0),
        pid: before.main_pid,
        signal: format!("systemctl {action}"),
    });
    if !ok {
        return Ok(failed(format!("systemctl {action} {unit} failed: {text}")));
    }
    let mut stable_since: Option<(i32, Instant)> = None;
    let mut drained = false;
    loop {
        let now = show(unit, per_call).await?;
        match now.active_state.as_str() {
            "failed" | "inactive" => {
                return Ok(failed(format!(
                    "unit '{unit}' is {} after {action} (result {}, main process status {})",
                    now.active_state, now.result, now.exec_main_status
                )));
            }
            "active" if now.main_pid > 0 => {
                let replaced = now.main_pid != before.main_pid;
                let wanted = config.systemd == SystemdAction::Reload || replaced;
                let since = match stable_since {
                    Some((pid, at)) if pid == now.main_pid => at,
                    _ => {
                        if replaced {
                            run.spawned(now.main_pid);
                            // `systemctl restart` stops the old main process itself
                            // (ExecStop, then KillSignal) before it starts the new one.
                            if !drained {
                                drained = true;
                                run.draining(before.main_pid, "(by systemd)");
                            }
                        }
                        let at = Instant::now();
                        stable_since = Some((now.main_pid, at));
                        at
                    }
                };
                if wanted && since.elapsed() >= config.settle {
                    run.new_pid = Some(now.main_pid);
                    run.ready(format!(
                        "unit active with main pid {} for {}",
                        now.main_pid,
                        format_duration(config.settle)
                    ));
                    run.promoted(now.main_pid);
                    return Ok(RestartOutcome::Completed);
                }
            }
            _ => stable_since = None,
        }
        if run.timed_out() {
            return Ok(failed(format!(
                "unit '{unit}' was not active again within {}",
                format_duration(run.timeout())
            )));
        }
        tick().await;
    }
}
