//! flipbench: the restart benchmark (see `zd_tests::flipbench` and `docs/benchmarks.md`).

use std::process::ExitCode;

use zd_tests::flipbench::{self, Command};

fn main() -> ExitCode {
    let result =
        flipbench::parse_args(std::env::args().skip(1)).and_then(|command| match command {
            Command::Help => {
                print!("{}", flipbench::USAGE);
                Ok(true)
            }
            Command::Run(options) => flipbench::run(&options),
        });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("flipbench: {e:#}");
            ExitCode::from(2)
        }
    }
}
