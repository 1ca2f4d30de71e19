//! logbench: what capturing a generation's output costs a program that prints a lot (see
//! `zd_tests::logbench` and `docs/benchmarks.md`).

use std::process::ExitCode;

use zd_tests::logbench::{self, Command};

fn main() -> ExitCode {
    let result = logbench::parse_args(std::env::args().skip(1)).and_then(|command| match command {
        Command::Help => {
            print!("{}", logbench::USAGE);
            Ok(true)
        }
        Command::Print(options) => logbench::printer::print(&options).map(|()| true),
        Command::Run(options) => logbench::run(&options),
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("logbench: {e:#}");
            ExitCode::from(2)
        }
    }
}
