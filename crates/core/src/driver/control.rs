//! Talking to a peer's own control socket (HAProxy's master CLI, einhorn's command socket):
//! connect, send one command, read the answer, all bounded in time and size.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{DriverConfig, DriverError};

/// The longest one question to a control socket may take.
const PER_CALL: Duration = Duration::from_secs(5);

/// The service's control socket (`socket:`) and how long one question to it may take;
/// `needs` says what the socket is, for the error when the file names none.
pub(super) fn socket_of<'a>(
    config: &'a DriverConfig,
    needs: &str,
) -> Result<(&'a Path, Duration), DriverError> {
    let socket = config
        .socket
        .as_deref()
        .ok_or_else(|| DriverError::NotRunning {
            path: config.source.clone(),
            reason: format!(
                "the {} driver needs `socket:` ({needs})",
                config.kind.name()
            ),
        })?;
    Ok((socket, config.timeout.min(PER_CALL)))
}

/// The most a peer's answer may hold.
const MAX_ANSWER: u64 = 1 << 20;

/// Connects to the peer's control socket; a refusal is [`DriverError::SocketRefused`].
pub(super) async fn connect(socket: &Path) -> Result<UnixStream, DriverError> {
    UnixStream::connect(socket)
        .await
        .map_err(|e| DriverError::SocketRefused {
            path: socket.to_owned(),
            reason: format!(
                "cannot connect to the control socket ({e}); is the service running, and is \
                 `socket:` its path?"
            ),
        })
}

/// Sends `command` and reads the answer until the peer closes the connection, or until
/// `until_line` returns true for the text read so far.
pub(super) async fn ask(
    socket: &Path,
    command: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<String, DriverError> {
    let work = async {
        let mut stream = connect(socket).await?;
        stream
            .write_all(command.as_bytes())
            .await
            .map_err(|e| DriverError::io(format!("send '{}'", command.trim()), e))?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| {
                DriverError::io(format!("read the answer to '{}'", command.trim()), e)
            })?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.len() as u64 > MAX_ANSWER {
                return Err(DriverError::Garbage {
                    path: socket.to_owned(),
                    reason: "the answer is longer than 1 MiB".to_owned(),
                });
            }
            if done(&String::from_utf8_lossy(&answer)) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DriverError::Garbage {
            path: socket.to_owned(),
            reason: format!(
                "no complete answer to '{}' within {}",
                command.trim(),
                crate::duration::format_duration(timeout)
            ),
        })?
}
