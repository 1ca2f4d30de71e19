//! `zdctl stop NAME`: the supervisor drains every generation, ends what they left behind,
//! answers, then exits. The command returns only once the supervisor process is gone, so
//! its listeners are closed and their socket files removed: `zdctl stop x; zdctl run x`
//! never meets "address in use".

use std::time::Duration;

use zd_core::proto::{Op, ReplyResult};

use crate::cli::StopArgs;
use crate::control;
use crate::exit::ExitError;
use crate::output;
use crate::progress::Progress;

/// How long the supervisor may take to exit once it answered: it has nothing left to do
/// but flush its reply and close its sockets.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

pub async fn stop(args: StopArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let mut client = control::connect(name).await?;
    // The supervisor's pid, held as a pidfd so that waiting for its exit cannot wait for a
    // stranger that reused the number.
    let supervisor = match client.call(Op::Status, |_| {}).await {
        Ok(reply) => match control::into_result(name, reply)? {
            ReplyResult::Status(status) => {
                zd_core::proc::pidfd(status.supervisor_pid).map(|fd| (status.supervisor_pid, fd))
            }
            _ => None,
        },
        Err(e) => return Err(control::client_error(name, e)),
    };
    let progress = Progress::new(args.json, &format!("stopping '{name}'"));
    let reply = client
        .call(Op::Stop, |event| progress.event(event))
        .await
        .map_err(|e| control::client_error(name, e))?;
    drop(client);
    let result = control::into_result(name, reply)?;
    if let Some((pid, pidfd)) = supervisor {
        let gone =
            tokio::task::spawn_blocking(move || zd_core::proc::wait_gone(&pidfd, EXIT_LIMIT))
                .await
                .unwrap_or(false);
        if !gone {
            progress.finish();
            return Err(ExitError::failure(format!(
                "the supervisor of '{name}' (pid {pid}) answered 'stopped' but did not exit \
                 within {}s; its listeners may still be open: check 'zdctl status {name}' and \
                 its log",
                EXIT_LIMIT.as_secs()
            )));
        }
    }
    progress.finish();
    match result {
        ReplyResult::Done { message } => {
            if args.json {
                output::json_line(&ReplyResult::Done { message })
            } else {
                output::line(&format!("stopped '{name}'"))
            }
        }
        other => Err(control::unexpected(name, &other)),
    }
}
