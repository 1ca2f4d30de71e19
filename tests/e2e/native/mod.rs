//! `zdctl run` and the commands that drive it, against the fixture service.

mod adopt;
mod control;
mod deadlines;
mod errors;
mod flips;
mod go_server;
mod handoff;
mod hostile;
mod init_systems;
mod intercept;
mod intercept_status;
mod lifecycle;
mod limits;
mod migrate_requests;
mod node_server;
mod pid1;
mod priority;
mod python_server;
mod ready;
mod rollback;
mod service_file;
mod start_limit;
mod start_priority;
mod systemd;
mod trust;
mod udp;
