#![doc = include_str!("../README.md")]

pub mod config;
pub mod contain;
pub mod driver;
pub mod duration;
pub mod handoff;
pub mod inspect;
pub mod listen;
pub mod paths;
pub mod pidfile;
pub mod proc;
pub mod proto;
pub mod ready;
mod rt;
mod sched;
pub mod service;
pub mod signal;
mod stamp;
mod suggest;
pub mod supervisor;
pub mod version;
