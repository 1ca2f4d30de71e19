//! Shared pieces of the end-to-end tests and benchmarks: the fixture service, and the peers
//! the tests drive.

/// The fixture service lives in the `zd-demo` crate, which ships inside zdctl.
pub use zd_demo as fixture;
pub mod bindbench;
pub mod compare;
pub mod flipbench;
pub mod go;
pub mod hostilebench;
pub mod logbench;
pub mod peers;
pub mod reexecbench;
