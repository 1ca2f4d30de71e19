//! `zdctl logs NAME [-g N] [-n LINES] [-f] [--json]`: the lines a service's generations
//! printed, as its supervisor keeps them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use zd_core::proto::{LogLine, LogsReport, Status};
use zd_core::service::Service;

use crate::cli::LogsArgs;
use crate::control;
use crate::output;

/// How often `--follow` asks for new lines.
const POLL: Duration = Duration::from_millis(250);

/// How long `--follow` tries again when the supervisor does not answer, before it says
/// the service stopped: a `reexec` takes a moment.
const GONE_AFTER: Duration = Duration::from_secs(5);

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let service = control::open(&args.name)?;
    // Only to label the lines: an answer of the status is not needed to show them.
    let pools = if args.json || service.driver().is_some() {
        Pools::default()
    } else {
        service
            .status()
            .await
            .map(|status| Pools::of(&status.status))
            .unwrap_or_default()
    };
    let first = service
        .logs(args.generation, None, None, Some(args.lines))
        .await
        .map_err(control::service_error)?;
    if first.keep_lines == 0 && first.generations.is_empty() && !args.json {
        eprintln!(
            "note: '{}' keeps no output (log.lines: 0): its generations write to its \
             supervisor's stdout and stderr directly",
            args.name
        );
    }
    let mut after = print(&first, args.json, &pools)?;
    let mut more = first.more;
    // Without --follow, the rest of what was asked for and no more: lines printed
    // meanwhile are not waited for.
    let until = (!args.follow).then_some(first.newest);
    let mut silent_since: Option<std::time::Instant> = None;
    loop {
        if !more {
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        // The rest of a long answer, or what was printed since.
        match next(&service, &args, after, until).await {
            Ok(report) => {
                silent_since = None;
                after = print(&report, args.json, &pools)?;
                more = report.more;
            }
            // The supervisor may be re-executing itself (the socket stays, a connection
            // may close unanswered): try again for a while.
            Err(e) if args.follow => {
                let since = *silent_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < GONE_AFTER {
                    more = false;
                } else if e.is_not_running() {
                    eprintln!("'{}' stopped: its supervisor is gone", args.name);
                    return Ok(());
                } else {
                    return Err(control::service_error(e));
                }
            }
            Err(e) => return Err(control::service_error(e)),
        }
    }
}

async fn next(
    service: &Service,
    args: &LogsArgs,
    after: u64,
    until: Option<u64>,
) -> Result<LogsReport, zd_core::service::ServiceError> {
    // Everything after the last line shown, page by page: no line is skipped however
    // many came.
    service
        .logs(args.generation, Some(after), until, None)
        .await
}

/// The generations that run several instances (`instances`), whose every line names the
/// instance that printed it: `gen 3.0`, `gen 3.1`.
#[derive(Debug, Default)]
pub struct Pools {
    several: HashSet<u64>,
    /// The generations the status listed: any other is newer, and runs `configured`.
    listed: HashSet<u64>,
    configured: u32,
}

impl Pools {
    pub fn of(status: &Status) -> Pools {
        Pools {
            several: status
                .generations
                .iter()
                .filter(|g| g.instances.len() > 1)
                .map(|g| g.generation)
                .collect(),
            listed: status.generations.iter().map(|g| g.generation).collect(),
            configured: status.instances.unwrap_or(1),
        }
    }

    /// Whether `line` is labelled with its instance: always when that is not 0.
    pub fn names_instance(&self, line: &LogLine) -> bool {
        line.instance > 0
            || self.several.contains(&line.generation)
            || (!self.listed.contains(&line.generation) && self.configured > 1)
    }
}

/// Prints the report's lines; returns the number to ask after next.
fn print(report: &LogsReport, json: bool, pools: &Pools) -> anyhow::Result<u64> {
    let mut text = String::new();
    for line in &report.lines {
        if json {
            text.push_str(&serde_json::to_string(line)?);
        } else {
            text.push_str(&render(line, pools.names_instance(line)));
        }
        text.push('\n');
    }
    if !text.is_empty() {
        output::text(&text)?;
    }
    Ok(report.last_seq)
}

/// `2026-12-07T17:05:01.123Z gen 3 err DATABASE_URL not set`; with `instance`, the
/// instance after the generation: `gen 3.1`.
pub fn render(line: &LogLine, instance: bool) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(line.unix_ms);
    let generation = if instance {
        format!("{}.{}", line.generation, line.instance)
    } else {
        line.generation.to_string()
    };
    format!(
        "{} gen {generation} {} {}",
        humantime::format_rfc3339_millis(at),
        line.stream.short(),
        visible(&line.text)
    )
}

/// `text` with its control characters (an escape sequence a client smuggled into a
/// logged request, say) shown as `\x1b` instead of reaching the terminal.
pub fn visible(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            shown.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use zd_core::proto::LogStream;

    #[test]
    fn a_line_shows_when_which_generation_and_stream_with_control_characters_escaped() {
        let line = LogLine {
            instance: 0,
            generation: 3,
            seq: 9,
            unix_ms: 1_796_666_301_123,
            stream: LogStream::Stderr,
            text: "GET /\u{1b}[2J\tdone".to_owned(),
        };
        assert_eq!(
            render(&line, false),
            "2026-12-07T17:58:21.123Z gen 3 err GET /\\x1b[2J\tdone"
        );
    }

    #[test]
    fn a_line_of_a_generation_of_several_instances_names_its_instance() {
        use zd_core::proto::{GenerationInfo, GenerationState, InstanceInfo};
        let line = |generation, instance| LogLine {
            instance,
            generation,
            seq: 9,
            unix_ms: 1_796_666_301_123,
            stream: LogStream::Stdout,
            text: "listening".to_owned(),
        };
        let instance = |instance| InstanceInfo {
            instance,
            pid: 800 + instance as i32,
            state: GenerationState::Active,
            started_unix_ms: 0,
            ready: true,
            respawns: 0,
            exit: None,
            output_lines: None,
        };
        let generation = |generation, instances: Vec<InstanceInfo>| GenerationInfo {
            generation,
            pid: 800,
            state: GenerationState::Active,
            started_unix_ms: 0,
            exit: None,
            intercept: None,
            output_lines: None,
            instances,
        };
        let status = Status {
            generations: vec![
                generation(3, vec![instance(0), instance(1)]),
                generation(2, vec![instance(0)]),
            ],
            instances: Some(2),
            ..crate::status::tests::fixed()
        };
        let pools = Pools::of(&status);
        let shown = |l: &LogLine| render(l, pools.names_instance(l));
        assert_eq!(
            shown(&line(3, 0)),
            "2026-12-07T17:58:21.123Z gen 3.0 out listening"
        );
        assert_eq!(
            shown(&line(3, 1)),
            "2026-12-07T17:58:21.123Z gen 3.1 out listening"
        );
        // A generation of one instance, and a newer generation (of the configured two).
        assert_eq!(
            shown(&line(2, 0)),
            "2026-12-07T17:58:21.123Z gen 2 out listening"
        );
        assert_eq!(
            shown(&line(4, 0)),
            "2026-12-07T17:58:21.123Z gen 4.0 out listening"
        );
        // Without a status (or from an older supervisor) only instances above 0 are named.
        let none = Pools::default();
        assert!(!none.names_instance(&line(3, 0)));
        assert!(none.names_instance(&line(3, 1)));
    }
}
