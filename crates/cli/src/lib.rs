#![doc = include_str!("../README.md")]

pub mod cli;
mod color;
pub mod completions;
mod control;
pub mod demo;
pub mod exit;
mod list;
mod logging;
mod logs;
mod output;
pub mod progress;
mod reexec;
mod restart;
mod revert;
mod run;
mod signal;
pub mod status;
mod stop;
mod top;
pub mod verify;

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command};

/// Parses the command line, runs the command and returns the exit code (see the README's
/// "Exit codes").
pub fn main_exit() -> ExitCode {
    // The demo service is started once per generation of every `zdctl demo` and benchmark
    // flip: its start is on the clock of every restart, so it skips building the whole
    // command line parser (about a tenth of its start) when it is asked for directly.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|first| first == "demo-server") {
        return exit::report(demo::server(args.collect()), false);
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with 0; real usage errors to stderr with 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(exit::USAGE));
        }
    };
    // The supervisor logs its lifecycle by default; client commands only warnings.
    let base = u8::from(matches!(cli.command, Command::Run(_)));
    // `top` draws on the terminal: a log line there would tear the screen.
    if !matches!(cli.command, Command::Top(_)) {
        // The supervisor must never wait for whoever reads its stderr.
        let lossy = matches!(cli.command, Command::Run(_));
        logging::init(base, cli.verbose, lossy);
    }
    let json = wants_json(&cli.command);
    let code = exit::report(dispatch(cli), json);
    logging::flush();
    code
}

/// The command line, with `--version` saying the version this binary reports everywhere
/// (`zd_core::version`: a build tag stamped into the binary shows there too).
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let version: &'static str = Box::leak(zd_core::version::version().into_boxed_str());
    let matches = Cli::command().version(version).try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

/// Whether the command was asked for `--json`: its errors are then JSON too.
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Restart(a) => a.json,
        Command::Revert(a) => a.json,
        Command::Status(a) => a.json,
        Command::List(a) => a.json,
        Command::Stop(a) => a.json,
        Command::Signal(a) => a.json,
        Command::Logs(a) => a.json,
        Command::Reexec(a) => a.json,
        Command::Verify(a) => a.json,
        _ => false,
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Restart(args) => block_on(restart::restart(args)),
        Command::Revert(args) => block_on(revert::revert(args)),
        Command::Status(args) => block_on(status::status(args)),
        Command::List(args) => block_on(list::list(args)),
        Command::Stop(args) => block_on(stop::stop(args)),
        Command::Signal(args) => block_on(signal::signal(args)),
        Command::Logs(args) => block_on(logs::logs(args)),
        Command::Reexec(args) => block_on(reexec::reexec(args)),
        Command::Top(args) => top::run(args),
        Command::Completions(args) => completions::completions(args.shell),
        Command::Man(args) => completions::man(args.command.as_deref()),
        Command::Verify(args) => verify::verify(args),
        Command::Demo(args) => demo::demo(args),
        Command::DemoServer { args } => demo::server(args),
    }
}

/// Client commands do one conversation at a time: a single-threaded runtime is enough.
fn block_on<F: Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}
