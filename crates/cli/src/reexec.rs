//! `zdctl reexec NAME [--binary PATH]`: the supervisor replaces its own program in place
//! (same pid, same listening sockets, same generations). Exits 0 only when the new binary
//! answers as the same supervisor with the same listeners; a binary that cannot take over
//! leaves the old one running, and the command exits 1 with the reason.

use crate::cli::ReexecArgs;
use crate::control;
use crate::output;

pub async fn reexec(args: ReexecArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let service = control::open(name)?;
    // Absolute, so the supervisor (whose working directory may differ) finds it.
    let binary = args
        .binary
        .map(|b| std::path::absolute(&b).unwrap_or(b))
        .map(|b| b.display().to_string());
    let done = service
        .reexec(binary, args.wait)
        .await
        .map_err(control::service_error)?;
    if args.json {
        output::json_line(&done)
    } else {
        output::line(&format!(
            "'{name}': supervisor (pid {}) re-executed {}: {} → {} in {} ms, listeners kept",
            done.supervisor_pid, done.binary, done.from_version, done.to_version, done.elapsed_ms
        ))
    }
}
