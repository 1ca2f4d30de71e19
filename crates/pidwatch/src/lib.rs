#![doc = include_str!("../README.md")]

mod cli;
mod dirwatch;
mod error;
mod follow;
mod log;
mod pidfd;
pub mod pidfile;
mod proc;
mod reap;
mod signals;
mod spawn;
pub mod status;
mod watch;

use std::process::ExitCode;

use clap::Parser;

pub use cli::{Cli, command, generate};
pub use error::Error;
pub use watch::{Config, Outcome, run};

/// The whole program: parse the command line, watch the service, map the outcome to an exit
/// code in this one place.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = log::Log::new(cli.quiet);
    if let Some(dir) = &cli.generate {
        return match generate(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(source) => {
                let err = Error::Generate {
                    path: dir.clone(),
                    source,
                };
                log.error(&err);
                ExitCode::from(err.exit_code())
            }
        };
    }
    let zero = cli.zero;
    let config = Config {
        // Both are required by clap unless --generate was given, which returned above.
        pidfile: cli.pidfile.unwrap_or_default(),
        grace: cli.grace,
        startup_timeout: cli.startup_timeout,
        trust_owner: cli.trust_owner,
        quiet: cli.quiet,
        no_subreaper: cli.no_subreaper,
        command: cli.command,
    };
    match run(&config) {
        Ok(_) if zero => ExitCode::SUCCESS,
        Ok(Outcome::Ended(ending)) => ExitCode::from(ending.exit_code()),
        Ok(Outcome::StartupTimeout) => ExitCode::from(status::code::STARTUP_TIMEOUT),
        Err(err) => {
            log.error(&err);
            ExitCode::from(err.exit_code())
        }
    }
}
