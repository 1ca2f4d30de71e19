//! `zdctl signal NAME SIGNAL`: sends a signal to the active generation's main process,
//! whoever runs the service. The name was checked by clap with
//! [`zd_core::signal::Signal`], so a typo never reaches a process.

use zd_core::proto::ReplyResult;

use crate::cli::SignalArgs;
use crate::control;
use crate::output;

pub async fn signal(args: SignalArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let service = control::open(name)?;
    let delivered = service
        .signal(args.signal)
        .await
        .map_err(control::service_error)?;
    let whom = match (delivered.generation, delivered.pid) {
        (Some(generation), Some(pid)) => {
            format!("generation {generation} of '{name}' (pid {pid})")
        }
        _ => format!("the active generation of '{name}'"),
    };
    let message = format!("sent {} to {whom}", args.signal);
    if args.json {
        output::json_line(&ReplyResult::Done { message })
    } else {
        output::line(&message)
    }
}
