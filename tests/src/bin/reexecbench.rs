//! reexecbench: what `zdctl reexec` costs under load (see `zd_tests::reexecbench` and
//! `docs/benchmarks.md`).

use std::process::ExitCode;

use zd_tests::reexecbench::{self, Command};

fn main() -> ExitCode {
    let result =
        reexecbench::parse_args(std::env::args().skip(1)).and_then(|command| match command {
            Command::Help => {
                print!("{}", reexecbench::USAGE);
                Ok(true)
            }
            Command::Run(options) => reexecbench::run(&options),
        });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("reexecbench: {e:#}");
            ExitCode::from(2)
        }
    }
}
