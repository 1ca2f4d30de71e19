//! logbench: what the supervisor's output capture costs a program that prints a lot. For
//! `log.lines: 1000` (the default: the generation's stdout is a pipe the supervisor reads,
//! copies to its own stdout and keeps the last lines of) and `log.lines: 0` (the generation
//! writes to the supervisor's stdout directly) it runs the real `zdctl run` with a
//! generation that prints a fixed number of lines as fast as it can, and one that prints
//! lines spaced out, and prints the time, CPU and memory figures. `docs/benchmarks.md`
//! shows a run.
//!
//! # How it works
//!
//! The generation is this program itself (`logbench print`, [`printer`]); the supervisor's
//! stdout is a regular file in its temp dir, its stderr (its own log) another. Each run
//! gets a fresh supervisor, so that the memory after it is that run's. The printer waits
//! on a FIFO: logbench reads the supervisor's CPU time once the printer is waiting (the
//! supervisor's start is over), writes the go, and polls the output file's size every
//! millisecond until it holds every line. The printer notes the CLOCK_MONOTONIC time of
//! its first and last write in a side file. For the latency of one line, the printer
//! writes its clock into each line and logbench, woken by inotify when the output file
//! changes, subtracts it from its own clock.

mod measure;
pub mod printer;

use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use measure::run;

pub const USAGE: &str = "\
usage: logbench [--lines N] [--repetitions R] [--size BYTES[,BYTES...]] [--batch B]
                [--log-lines L[,L...]] [--latency-lines N] [--spacing DURATION]
                [--timeout DURATION] [--keep]

  --lines N           lines printed per run (default 200000)
  --repetitions R     runs per row; the table shows medians (default 5)
  --size BYTES        line sizes, newline included, at least 32 (default 80,200)
  --batch B           lines per write(2) of the printer (default 1)
  --log-lines L       the log.lines values to compare (default 1000,0)
  --latency-lines N   spaced-out lines for the latency of one line; 0 skips (default 1000)
  --spacing DURATION  the pause before each of those (default 2ms)
  --timeout DURATION  the longest one run may take (default 60s)
  --keep              keep each run's temp dir (service file, supervisor output and log)

Finds zdctl next to itself: run `cargo build --profile dist --workspace --bins` first.
Exit status: 0 when every run measured, 2 when one could not.
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub lines: usize,
    pub repetitions: usize,
    pub sizes: Vec<usize>,
    pub batch: usize,
    pub log_lines: Vec<u32>,
    pub latency_lines: usize,
    pub spacing: Duration,
    pub timeout: Duration,
    pub keep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lines: 200_000,
            repetitions: 5,
            sizes: vec![80, 200],
            batch: 1,
            log_lines: vec![1000, 0],
            latency_lines: 1000,
            spacing: Duration::from_millis(2),
            timeout: Duration::from_secs(60),
            keep: false,
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub enum Command {
    Run(Options),
    /// The generation under test (internal).
    Print(printer::PrintOptions),
    Help,
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let mut options = Options::default();
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "print") {
        args.next();
        return Ok(Command::Print(printer::PrintOptions::parse(args)?));
    }
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--keep" => {
                options.keep = true;
                continue;
            }
            _ => {}
        }
        let value = args
            .next()
            .with_context(|| format!("'{flag}' needs a value; see --help"))?;
        let count = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag}: '{value}' is not a count"))
        };
        let duration = || -> Result<Duration> {
            humantime::parse_duration(&value)
                .with_context(|| format!("{flag}: '{value}' is not a duration such as '2ms'"))
        };
        match flag.as_str() {
            "--lines" => options.lines = count()?,
            "--repetitions" => options.repetitions = count()?,
            "--batch" => options.batch = count()?,
            "--latency-lines" => options.latency_lines = count()?,
            "--spacing" => options.spacing = duration()?,
            "--timeout" => options.timeout = duration()?,
            "--size" => options.sizes = list(&flag, &value)?,
            "--log-lines" => options.log_lines = list(&flag, &value)?,
            _ => bail!("unknown flag '{flag}'; see --help"),
        }
    }
    if options.lines == 0 || options.repetitions == 0 || options.batch == 0 {
        bail!("--lines, --repetitions and --batch must be at least 1");
    }
    if let Some(small) = options.sizes.iter().find(|&&s| s < printer::MIN_LINE) {
        bail!(
            "--size: '{small}' is too short; a line holds at least {} bytes",
            printer::MIN_LINE
        );
    }
    Ok(Command::Run(options))
}

/// A comma-separated list of numbers.
fn list<T: std::str::FromStr>(flag: &str, value: &str) -> Result<Vec<T>> {
    let items: Option<Vec<T>> = value.split(',').map(|v| v.trim().parse().ok()).collect();
    match items {
        Some(items) if !items.is_empty() => Ok(items),
        _ => bail!("{flag}: '{value}' is not a list of numbers such as '80,200'"),
    }
}

/// The median; the mean of the two middle samples of an even count.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_override_the_defaults() {
        let Ok(Command::Run(o)) = parse(&[
            "--lines",
            "1000",
            "--size",
            "64,300",
            "--log-lines",
            "0",
            "--spacing",
            "5ms",
        ]) else {
            panic!("expected options");
        };
        assert_eq!(o.lines, 1000);
        assert_eq!(o.sizes, vec![64, 300]);
        assert_eq!(o.log_lines, vec![0]);
        assert_eq!(o.spacing, Duration::from_millis(5));
        assert_eq!((o.repetitions, o.batch, o.keep), (5, 1, false));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--size", "10"][..],
            &["--size", "80,"],
            &["--lines", "0"],
            &["--lines"],
            &["--spacing", "soon"],
            &["--bogus", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
        assert!(matches!(
            parse(&["print", "--go", "g", "--marks", "m", "--lines", "3"]),
            Ok(Command::Print(_))
        ));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_middle_mean() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
