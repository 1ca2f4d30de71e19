//! The generation under test, `logbench print`: it waits for the go on a FIFO, prints its
//! lines on stdout, writes when it started and ended to a side file, then waits to be
//! stopped (a generation that exited would be respawned, and would print again).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The shortest line: the sequence number, the stamp, two spaces and the newline.
pub const MIN_LINE: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintOptions {
    pub lines: usize,
    /// Bytes per line, newline included.
    pub size: usize,
    /// Lines per `write(2)`.
    pub batch: usize,
    /// A pause before each line, which then carries the time it was written.
    pub spacing: Option<Duration>,
    /// The FIFO to read the go from.
    pub go: PathBuf,
    /// Where to write `START_NS END_NS` (CLOCK_MONOTONIC) once every line is written.
    pub marks: PathBuf,
}

impl PrintOptions {
    /// The arguments `logbench print` takes for these options.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "print".to_owned(),
            "--lines".to_owned(),
            self.lines.to_string(),
            "--size".to_owned(),
            self.size.to_string(),
            "--batch".to_owned(),
            self.batch.to_string(),
            "--go".to_owned(),
            self.go.display().to_string(),
            "--marks".to_owned(),
            self.marks.display().to_string(),
        ];
        if let Some(spacing) = self.spacing {
            args.push("--spacing-us".to_owned());
            args.push(spacing.as_micros().to_string());
        }
        args
    }

    /// Parses what [`PrintOptions::to_args`] wrote (after `print`).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<PrintOptions> {
        let mut options = PrintOptions {
            lines: 0,
            size: 80,
            batch: 1,
            spacing: None,
            go: PathBuf::new(),
            marks: PathBuf::new(),
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("print: '{flag}' needs a value"))?;
            let count = || -> Result<usize> {
                value
                    .parse()
                    .with_context(|| format!("print: {flag}: '{value}' is not a count"))
            };
            match flag.as_str() {
                "--lines" => options.lines = count()?,
                "--size" => options.size = count()?,
                "--batch" => options.batch = count()?,
                "--spacing-us" => {
                    options.spacing = Some(Duration::from_micros(count()? as u64));
                }
                "--go" => options.go = PathBuf::from(value),
                "--marks" => options.marks = PathBuf::from(value),
                _ => bail!("print: unknown flag '{flag}'"),
            }
        }
        if options.size < MIN_LINE || options.batch == 0 || options.go.as_os_str().is_empty() {
            bail!("print: needs --size >= {MIN_LINE}, --batch >= 1 and --go");
        }
        Ok(options)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine, so the
/// printer's stamps and logbench's readings can be subtracted.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or((0, 0), |t| (t.tv_sec(), t.tv_nsec()));
    now.0 as u64 * 1_000_000_000 + now.1 as u64
}

/// Line `seq` of `size` bytes carrying `stamp`: `SEQ STAMP xxx…x\n`.
pub fn format_line(out: &mut Vec<u8>, seq: usize, stamp: u64, size: usize) {
    let start = out.len();
    let _ = write!(out, "{seq:09} {stamp:020} ");
    out.resize(start + size - 1, b'x');
    out.push(b'\n');
}

/// The stamp of a line [`format_line`] made.
pub fn stamp_of(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// Runs the printer; returns only on an error.
pub fn print(options: &PrintOptions) -> Result<()> {
    // Blocks until logbench opens the FIFO to write, then until it writes the go.
    let mut go = std::fs::File::open(&options.go)
        .with_context(|| format!("cannot open '{}'", options.go.display()))?;
    let mut byte = [0u8; 1];
    go.read_exact(&mut byte).context("no go on the FIFO")?;
    drop(go);

    // A locked stdout is a LineWriter: a buffer that ends in a newline goes out in one
    // write(2).
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::with_capacity(options.size * options.batch);
    let start = monotonic_ns();
    let mut seq = 0;
    while seq < options.lines {
        buf.clear();
        if let Some(spacing) = options.spacing {
            std::thread::sleep(spacing);
            format_line(&mut buf, seq, monotonic_ns(), options.size);
            seq += 1;
        } else {
            let end = (seq + options.batch).min(options.lines);
            for s in seq..end {
                format_line(&mut buf, s, 0, options.size);
            }
            seq = end;
        }
        out.write_all(&buf).context("cannot write to stdout")?;
    }
    out.flush()?;
    let end = monotonic_ns();
    // Renamed into place: logbench never reads half of it.
    let partial = options.marks.with_extension("partial");
    std::fs::write(&partial, format!("{start} {end}\n"))?;
    std::fs::rename(&partial, &options.marks)?;
    // Serve nothing, until the supervisor's stop signal ends us.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_its_size_and_gives_back_its_stamp() {
        let mut buf = Vec::new();
        format_line(&mut buf, 7, 123_456_789, 80);
        format_line(&mut buf, 8, 5, MIN_LINE);
        assert_eq!(buf.len(), 80 + MIN_LINE);
        assert_eq!(buf[79], b'\n');
        assert_eq!(stamp_of(&buf[..79]), Some(123_456_789));
        assert_eq!(stamp_of(&buf[80..]), Some(5));
    }

    #[test]
    fn print_options_survive_the_command_line() {
        let options = PrintOptions {
            lines: 10,
            size: 200,
            batch: 4,
            spacing: Some(Duration::from_millis(2)),
            go: PathBuf::from("go"),
            marks: PathBuf::from("marks"),
        };
        let args = options.to_args();
        assert_eq!(args[0], "print");
        let back = PrintOptions::parse(args.into_iter().skip(1)).expect("parses");
        assert_eq!(back, options);
    }
}
