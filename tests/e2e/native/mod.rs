//! `zdctl run` and the commands that drive it, against the fixture service.

mod control;
mod errors;
mod flips;
mod handoff;
mod lifecycle;
mod priority;
mod ready;
mod rollback;
mod service_file;
mod start_priority;
