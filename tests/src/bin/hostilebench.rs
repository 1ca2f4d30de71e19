//! hostilebench: issue 17's attacks under load (see `zd_tests::hostilebench` and
//! `docs/benchmarks.md`).

use std::process::ExitCode;

use zd_tests::hostilebench;

fn main() -> ExitCode {
    let result =
        hostilebench::parse_args(std::env::args().skip(1)).and_then(|options| match options {
            None => {
                print!("{}", hostilebench::USAGE);
                Ok(true)
            }
            Some(options) => hostilebench::run(&options),
        });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hostilebench: {e:#}");
            ExitCode::from(2)
        }
    }
}
