//! Reaching a running supervisor over its control socket, with the messages and exit codes
//! every command shares: not running (3), no such service (3), error replies (1).

use std::path::{Path, PathBuf};

use zd_core::config::{self, ConfigError};
use zd_core::paths;
use zd_core::proto::{Client, ClientError, ErrorKind, ErrorReply, Reply, ReplyResult};

use crate::exit::ExitError;

/// Connects to the supervisor of `name`.
pub async fn connect(name: &str) -> anyhow::Result<Client> {
    check_name(name)?;
    let socket = paths::control_socket(name);
    match Client::connect(&socket).await {
        Ok(client) => Ok(client),
        Err(ClientError::NotRunning { .. }) => Err(not_running(name, &socket)),
        Err(e) => Err(client_error(name, e)),
    }
}

/// Refuses a name that cannot name a control socket (exit 2).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if paths::valid_service_name(name) {
        Ok(())
    } else {
        Err(ExitError::usage(format!(
            "invalid service name '{name}'; use letters, digits, '-', '_', '.' or '@', like 'api'"
        )))
    }
}

/// Nothing answers for `name`: say whether the service exists at all.
fn not_running(name: &str, socket: &Path) -> anyhow::Error {
    match config::find_service(name) {
        Err(ConfigError::NotFound { searched, .. }) => {
            ExitError::not_running(no_such_service(name, &searched, &paths::runtime_dir()))
        }
        _ => ExitError::not_running(format!(
            "service '{name}' is not running: no supervisor answers on '{}'; start it with \
             'zdctl run {name}'",
            socket.display()
        )),
    }
}

/// The message for a name that has neither a service file nor a supervisor.
pub fn no_such_service(name: &str, searched: &[PathBuf], runtime: &Path) -> String {
    let dirs: Vec<String> = searched
        .iter()
        .map(|d| format!("'{}'", d.display()))
        .collect();
    let dirs = if dirs.is_empty() {
        "no service directory".to_owned()
    } else {
        dirs.join(", ")
    };
    format!(
        "no service named '{name}': looked in {dirs} and '{}'; check the name with \
         'zdctl list', or start it with 'zdctl run'",
        runtime.display()
    )
}

/// A failure while reaching or talking to a supervisor (exit 1).
pub fn client_error(name: &str, err: ClientError) -> anyhow::Error {
    match err {
        ClientError::Closed => ExitError::failure(format!(
            "the supervisor of '{name}' closed the connection before answering; check its log"
        )),
        // Whole sentences that name the socket and what to do.
        e @ (ClientError::PermissionDenied { .. }
        | ClientError::Untrusted { .. }
        | ClientError::NoAnswer { .. }
        | ClientError::NotAccepting { .. }) => {
            ExitError::failure(format!("cannot control '{name}': {e}"))
        }
        other => anyhow::Error::new(other)
            .context(format!("talking to the supervisor of '{name}' failed")),
    }
}

/// An error reply from the supervisor (exit 1).
pub fn reply_error(name: &str, error: &ErrorReply) -> anyhow::Error {
    match error.kind {
        ErrorKind::Busy => busy(name, error.restart),
        _ => ExitError::failure(format!(
            "the supervisor of '{name}' refused: {}",
            error.message
        )),
    }
}

/// Another restart of `name` runs (exit 1): native and foreign services say it alike.
pub fn busy(name: &str, restart: Option<u64>) -> anyhow::Error {
    let number = restart
        .map(|n| format!(" (restart #{n})"))
        .unwrap_or_default();
    ExitError::failure(format!(
        "a restart of '{name}' is already running{number}; wait for it, or follow it with \
         'zdctl restart {name} --attach'"
    ))
}

/// The final reply of a request that expects a result: the result, or the exit error.
pub fn into_result(name: &str, reply: Reply) -> anyhow::Result<ReplyResult> {
    match reply {
        Reply::Result { result, .. } => Ok(*result),
        Reply::Error { error, .. } => Err(reply_error(name, &error)),
        Reply::Event { .. } => Err(ExitError::failure(format!(
            "the supervisor of '{name}' sent an event where a result was expected"
        ))),
    }
}

/// A result of the wrong type for the request (a supervisor from another version).
pub fn unexpected(name: &str, result: &ReplyResult) -> anyhow::Error {
    ExitError::failure(format!(
        "the supervisor of '{name}' sent an unexpected answer: {result:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_such_service_message_names_every_place_looked() {
        let message = no_such_service(
            "nosuch",
            &[PathBuf::from("/etc/zdctl/services.d")],
            Path::new("/run/zdctl"),
        );
        assert_eq!(
            message,
            "no service named 'nosuch': looked in '/etc/zdctl/services.d' and '/run/zdctl'; \
             check the name with 'zdctl list', or start it with 'zdctl run'"
        );
    }

    #[test]
    fn busy_names_the_running_restart() {
        let err = reply_error(
            "api",
            &ErrorReply {
                kind: ErrorKind::Busy,
                message: "busy".into(),
                restart: Some(4),
            },
        );
        assert!(err.to_string().contains("restart #4"), "{err}");
    }
}
