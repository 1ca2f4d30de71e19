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
    let message = format!("{:#}", anyhow::Error::from(err));
    match class {
        ErrorClass::Usage => ExitError::usage(message),
        ErrorClass::NotRunning => ExitError::not_running(message),
        ErrorClass::Failure => ExitError::failure(message),
    }
}
