//! One restart of the service under test, whoever runs it (`zd_core::service`),
//! or by a shell command.

use std::time::Instant;

use zd_core::proto::RestartOutcome;
use zd_core::service::{RestartOptions, Restarted, Service};

use super::VerifyError;

/// How the service is restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restarter {
    /// The service's restart, as `zdctl restart NAME` does it: over our supervisor's
    /// control socket, or through the driver of a foreign supervisor.
    /// `socket` reaches a supervisor whose control socket is not where the name puts it
    /// (a private runtime directory, as `zdctl demo` uses).
    Service {
        name: String,
        socket: Option<std::path::PathBuf>,
    },
    /// `sh -c COMMAND`; exit status 0 means the flip is done. This is how other
    /// supervisors and naive restarts are measured.
    Command { command: String },
}

/// How one flip ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlipResult {
    pub requested: Instant,
    pub finished: Instant,
    /// `None` when the flip completed; the reason otherwise.
    pub problem: Option<String>,
}

impl Restarter {
    /// The service name, or the restart command: what the report names.
    pub fn label(&self) -> String {
        match self {
            Restarter::Service { name, .. } => name.clone(),
            Restarter::Command { command } => command.clone(),
        }
    }

    /// Restarts once and waits until the flip is over. An error is returned only
    /// when the restarter cannot be used at all (the supervisor is not running,
    /// the shell cannot start); a rolled-back restart or a failing command is a
    /// [`FlipResult`] with a problem.
    pub(crate) async fn flip(&self) -> Result<FlipResult, VerifyError> {
        let requested = Instant::now();
        let problem = match self {
            Restarter::Service { name, socket } => {
                let service = match socket {
                    Some(socket) => Service::supervised_at(name, socket),
                    None => Service::open(name)?,
                };
                match service.restart(RestartOptions::default(), |_| {}).await {
                    Ok(Restarted::Finished(report)) => match report.outcome {
                        RestartOutcome::Completed => None,
                        RestartOutcome::RolledBack { reason } => {
                            Some(format!("rolled back: {reason}"))
                        }
                        RestartOutcome::Failed { reason } => Some(format!("failed: {reason}")),
                    },
                    Ok(Restarted::Promoted(_)) => None,
                    // Not running, no such service: verifying cannot go on.
                    Err(err) if err.is_not_running() => return Err(err.into()),
                    Err(err) => Some(format!("refused: {err}")),
                }
            }
            Restarter::Command { command } => {
                let status = tokio::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(command)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .map_err(|source| VerifyError::Command {
                        command: command.clone(),
                        source,
                    })?;
                (!status.success()).then(|| format!("the restart command ended with {status}"))
            }
        };
        Ok(FlipResult {
            requested,
            finished: Instant::now(),
            problem,
        })
    }
}
