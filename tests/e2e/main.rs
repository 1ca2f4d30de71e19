//! End-to-end tests: the real binaries against real sockets.

mod cli;
mod native;
mod pidwatch;
mod support;
