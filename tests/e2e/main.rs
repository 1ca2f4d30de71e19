//! End-to-end tests: the real binaries against real sockets.

mod cli;
mod drivers;
mod native;
mod pidwatch;
mod support;
mod top;
mod verify;
