//! bindbench: what `intercept_binds` costs (see `zd_tests::bindbench` and
//! `docs/benchmarks.md`).

use std::process::ExitCode;

use zd_tests::bindbench::{self, Command};

fn main() -> ExitCode {
    let result =
        bindbench::parse_args(std::env::args().skip(1)).and_then(|command| match command {
            Command::Help => {
                print!("{}", bindbench::USAGE);
                Ok(true)
            }
            Command::Binder(args) => bindbench::run_binder(&args).map(|()| true),
            Command::Run(options) => bindbench::run(&options),
        });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bindbench: {e:#}");
            ExitCode::from(2)
        }
    }
}
