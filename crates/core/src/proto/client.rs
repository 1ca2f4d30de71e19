//! The client side of the control socket, used by every `zdctl` command that talks to a
//! supervisor.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::codec::{LineError, LineReader};
use super::types::{Event, Op, Reply, Request};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket: the service is not running.
    #[error("no supervisor answers on '{}'", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the supervisor closed the connection before answering")]
    Closed,
    #[error("the supervisor sent an invalid line: {detail}")]
    Protocol { detail: String },
    #[error("talking to the supervisor failed")]
    Io(#[from] std::io::Error),
}

impl From<LineError> for ClientError {
    fn from(e: LineError) -> Self {
        match e {
            LineError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol {
                detail: other.to_string(),
            },
        }
    }
}

pub struct Client {
    reader: LineReader<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::NotRunning {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: LineReader::new(BufReader::new(read)),
            writer,
            next_id: 1,
        })
    }

    /// Sends a request and returns its id.
    pub async fn send(&mut self, op: Op) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            v: super::VERSION,
            id,
            op,
        };
        let mut line = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write(&line).await?;
        Ok(id)
    }

    /// Sends raw bytes: for tests of the supervisor's handling of bad input.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write(bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match self.writer.write_all(bytes).await {
            Ok(()) => Ok(()),
            // A supervisor that turned the connection away (too many connections, another
            // user) wrote why and closed: the next line read is that reason.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next line from the supervisor.
    pub async fn next_reply(&mut self) -> Result<Reply, ClientError> {
        let line = self.reader.next_line().await?.ok_or(ClientError::Closed)?;
        serde_json::from_slice(&line).map_err(|e| ClientError::Protocol {
            detail: format!("{e}: {}", String::from_utf8_lossy(&line)),
        })
    }

    /// Sends `op`, passes every event to `on_event`, and returns the final line.
    pub async fn call(
        &mut self,
        op: Op,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Reply, ClientError> {
        let id = self.send(op).await?;
        loop {
            let reply = self.next_reply().await?;
            match &reply {
                Reply::Event { id: rid, event, .. } if *rid == id => on_event(event),
                Reply::Event { .. } => {}
                // A connection-level error (id 0) also ends the call.
                Reply::Result { id: rid, .. } | Reply::Error { id: rid, .. }
                    if *rid == id || *rid == 0 =>
                {
                    return Ok(reply);
                }
                _ => {}
            }
        }
    }
}
