//! Tests of the `zdctl` binary without the supervisor engine: usage errors, exit codes,
//! generated files, and every client command against a fake supervisor that answers with
//! canned replies.

mod fake;
mod generated;
mod restart;
mod revert;
mod services;
mod usage;
