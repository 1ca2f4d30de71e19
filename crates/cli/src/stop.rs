//! `zdctl stop NAME`: the supervisor drains every generation, answers, then exits.

use zd_core::proto::{Op, ReplyResult};

use crate::cli::StopArgs;
use crate::control;
use crate::output;
use crate::progress::Progress;

pub async fn stop(args: StopArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let mut client = control::connect(name).await?;
    let progress = Progress::new(args.json, &format!("stopping '{name}'"));
    let reply = client
        .call(Op::Stop, |event| progress.event(event))
        .await
        .map_err(|e| control::client_error(name, e))?;
    progress.finish();
    match control::into_result(name, reply)? {
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
