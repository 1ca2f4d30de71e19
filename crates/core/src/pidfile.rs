//! pidfile
