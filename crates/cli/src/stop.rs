//! `zdctl stop NAME`: the supervisor drains every generation, ends what they left behind,
//! answers, then exits. The command returns only once the supervisor process is gone, so
//! its listeners are closed and their socket files removed: `zdctl stop x; zdctl run x`
//! never meets "address in use". A service a driver works is stopped by its own
//! supervisor; zdctl says so.

use std::time::Duration;

use zd_core::proto::ReplyResult;

use crate::cli::StopArgs;
use crate::control;
use crate::output;
use crate::progress::Progress;

/// How long the supervisor may take to exit once it answered: it has nothing left to do
/// but flush its reply and close its sockets.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

pub async fn stop(args: StopArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let service = control::open(name)?;
    let progress = Progress::new(args.json, &format!("stopping '{name}'"));
    let result = service
        .stop(EXIT_LIMIT, |event| progress.event(event))
        .await;
    progress.finish();
    let message = result.map_err(control::service_error)?;
    if args.json {
        output::json_line(&ReplyResult::Done { message })
    } else {
        output::line(&format!("stopped '{name}'"))
    }
}
