//! End-to-end tests: the real binaries against real sockets.

mod native;
mod pidwatch;
mod support;
