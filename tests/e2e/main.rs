//! End-to-end tests: the real binaries against real sockets.

mod pidwatch;
