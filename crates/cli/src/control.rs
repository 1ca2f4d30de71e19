//! Reaching a service through `zd_core::service`, with the exit codes every command
//! shares: usage (2), not running or no such service (3), any other failure (1).

use zd_core::service::{ErrorClass, Service, ServiceError};

use crate::exit::ExitError;

/// The service called `name`, whoever runs it.
pub fn open(name: &str) -> anyhow::Result<Service> {
    Service::open(name).map_err(service_error)
}

/// Refuses a name that cannot name a service (exit 2).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if zd_core::paths::valid_service_name(name) {
        Ok(())
    } else {
        Err(service_error(ServiceError::InvalidName {
            name: name.to_owned(),
        }))
    }
}

/// A service error as the exit error it deserves; the message carries its causes.
pub fn service_error(err: ServiceError) -> anyhow::Error {
    let class = err.class();
    let kind = kind_of(&err);
    let message = format!("{:#}", anyhow::Error::from(err));
    let code = match class {
        ErrorClass::Usage => crate::exit::USAGE,
        ErrorClass::NotRunning => crate::exit::NOT_RUNNING,
        ErrorClass::Failure => crate::exit::FAILURE,
    };
    ExitError::of_kind(code, kind, message)
}

/// The `--json` error kind of a service error (see `exit::report`).
fn kind_of(err: &ServiceError) -> &'static str {
    match err {
        ServiceError::InvalidName { .. } => "invalid_name",
        ServiceError::Config(_) => "invalid_config",
        ServiceError::NoSuchService { .. } => "no_such_service",
        ServiceError::NotRunning { .. } => "not_running",
        ServiceError::Busy { .. } | ServiceError::ReexecBusy { .. } => "busy",
        ServiceError::Unsupported { .. } => "unsupported",
        ServiceError::Refused { .. } => "refused",
        ServiceError::ReexecFailed { .. } | ServiceError::ReexecSilent { .. } => "reexec_failed",
        ServiceError::Driver { error, .. } if error.is_not_running() => "not_running",
        ServiceError::Driver { .. } => "driver",
        ServiceError::Closed { .. }
        | ServiceError::Unreachable { .. }
        | ServiceError::Client { .. }
        | ServiceError::StatusDeadline { .. } => "unreachable",
        ServiceError::StillRunning { .. } => "still_running",
        _ => match err.class() {
            ErrorClass::Usage => "usage",
            ErrorClass::NotRunning => "not_running",
            ErrorClass::Failure => "failed",
        },
    }
}
