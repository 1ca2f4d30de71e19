//! `zdctl signal NAME SIGNAL`: forwards a signal to the active generation. The name was
//! checked by clap with [`zd_core::signal::Signal`], so a typo never reaches the supervisor.

use zd_core::proto::{EventKind, Op, ReplyResult};

use crate::cli::SignalArgs;
use crate::control;
use crate::output;

pub async fn signal(args: SignalArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let mut client = control::connect(name).await?;
    let mut delivered = None;
    let reply = client
        .call(
            Op::Signal {
                signal: args.signal.to_string(),
            },
            |event| {
                if let EventKind::Signalled {
                    generation, pid, ..
                } = &event.kind
                {
                    delivered = Some((*generation, *pid));
                }
            },
        )
        .await
        .map_err(|e| control::client_error(name, e))?;
    match control::into_result(name, reply)? {
        ReplyResult::Done { message } => {
            if args.json {
                return output::json_line(&ReplyResult::Done { message });
            }
            let whom = match delivered {
                Some((generation, pid)) => {
                    format!("generation {generation} of '{name}' (pid {pid})")
                }
                None => format!("the active generation of '{name}'"),
            };
            output::line(&format!("sent {} to {whom}", args.signal))
        }
        other => Err(control::unexpected(name, &other)),
    }
}
