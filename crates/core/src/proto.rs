//! The control protocol between `zdctl` commands and a running supervisor.
//!
//! One unix stream socket per service, newline-delimited JSON. Every message carries
//! `"v":1`; a request has an `id`, and yields zero or more `event` lines followed by exactly
//! one final line: `result` on success or `error` on failure. Unknown fields are ignored so
//! that either side may grow; an unknown `op` is an error reply, never a dropped connection.

mod client;
mod codec;
mod connection;
mod server;
mod types;

pub use client::{Client, ClientError, Owner, REPLY_TIMEOUT};
pub use codec::{LineError, LineReader, MAX_LINE};
pub use server::{
    ClientGone, ControlServer, Limits, PeerPolicy, Replies, Request as ServerRequest, RequestQueue,
    RequestSender, ServerError, request_queue,
};
pub use types::*;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
