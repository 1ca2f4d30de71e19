//! Readiness: the evidence that a new generation can take over alone.

pub mod accepting;
pub mod check;
