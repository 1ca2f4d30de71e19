//! One restart of the service under test, by the supervisor's control socket
//! or by a shell command.

use std::path::PathBuf;
use std::time::Instant;

use zd_core::proto::{Client, ClientError, Op, Reply, ReplyResult, RestartOutcome};

use super::VerifyError;

/// How the service is restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restarter {
    /// `restart` over the control socket of our supervisor, as `zdctl restart` does.
    Control { name: String, socket: PathBuf },
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
            Restarter::Control { name, .. } => name.clone(),
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
            Restarter::Control { name, socket } => {
                let mut client =
                    Client::connect(socket)
                        .await
                        .map_err(|source| VerifyError::Control {
                            name: name.clone(),
                            source,
                        })?;
                let op = Op::Restart {
                    ready_timeout_ms: None,
                    attach: false,
                };
                let reply =
                    client
                        .call(op, |_| {})
                        .await
                        .map_err(|source| VerifyError::Control {
                            name: name.clone(),
                            source,
                        })?;
                control_problem(name, reply)?
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

fn control_problem(name: &str, reply: Reply) -> Result<Option<String>, VerifyError> {
    match reply {
        Reply::Result { result, .. } => match *result {
            ReplyResult::Restart(report) => Ok(match report.outcome {
                RestartOutcome::Completed => None,
                RestartOutcome::RolledBack { reason } => Some(format!("rolled back: {reason}")),
                RestartOutcome::Failed { reason } => Some(format!("failed: {reason}")),
            }),
            other => Err(VerifyError::Control {
                name: name.to_owned(),
                source: ClientError::Protocol {
                    detail: format!("unexpected answer to restart: {other:?}"),
                },
            }),
        },
        Reply::Error { error, .. } => Ok(Some(format!("refused: {}", error.message))),
        Reply::Event { .. } => Ok(Some("an event where a result was expected".to_owned())),
    }
}
