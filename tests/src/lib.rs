//! Shared pieces of the end-to-end tests and benchmarks: the fixture service.

pub mod fixture;
pub mod flipbench;
