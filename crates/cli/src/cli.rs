//! The command line, as clap sees it. Parsing only: every command's behaviour lives in its
//! own module.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use zd_core::config::StartPriority;
use zd_core::duration::parse_duration;
use zd_core::listen::ListenerSpec;
use zd_core::ready::check::ReadyCheck;
use zd_core::signal::Signal;

/// Zero-downtime restarts for Linux services.
///
/// `zdctl run` supervises a service: it opens the service's listening sockets once, keeps
/// them for its whole life and hands them to every generation of the program. `zdctl
/// restart` starts a new generation, waits until it is ready, then drains the old one, so
/// no connection is refused or reset.
#[derive(Debug, Parser)]
#[command(
    name = "zdctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise a service: hold its listeners and run its generations.
    Run(RunArgs),
    /// Start a new generation, wait until it is ready, then drain the old one.
    Restart(RestartArgs),
    /// During a restart's bake window: drain the new generation and keep the old one.
    ///
    /// During a restart's bake window (the service's `bake`), the new generation serves
    /// beside the old one, which stands by. `zdctl revert` ends the window early: the
    /// supervisor drains the new generation and keeps the old one, and the restart ends
    /// rolled back. It returns once the old generation is the only one left.
    ///
    /// Exits 0 when reverted, 1 when no restart of the service is baking, 2 for a service
    /// another supervisor runs (nginx, psflip, ...), which has no bake window.
    Revert(RevertArgs),
    /// Show running services: generations, listeners and restart counters.
    Status(StatusArgs),
    /// List every known service: service files and running supervisors.
    List(ListArgs),
    /// Stop a service run by `zdctl run`: drain every generation, then end its supervisor.
    Stop(StopArgs),
    /// Send a signal to the active generation of a service.
    Signal(SignalArgs),
    /// Show the last lines a service's generations printed, or follow them.
    Logs(LogsArgs),
    /// Replace a service's supervisor with the zdctl binary installed now, in place: same
    /// pid, same listeners, same generations.
    Reexec(ReexecArgs),
    /// Watch services live: generations, listeners, connections; restart with `r`.
    Top(TopArgs),
    /// Print a shell completion script to stdout.
    Completions(CompletionsArgs),
    /// Print a man page (roff) to stdout: zdctl(1), or a command's (`zdctl man restart`).
    Man(ManArgs),
    /// Restart a service N times under load and count every request that suffered.
    Verify(crate::verify::VerifyArgs),
    /// Try it: restart a built-in demo service ten times under load, then clean up.
    Demo(crate::demo::DemoArgs),
    /// The built-in demo service that `zdctl demo` supervises (zd-fixture's flags).
    #[command(hide = true)]
    DemoServer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// Either `-c FILE`, a service NAME (its file is looked up), or the flags form:
/// `--name NAME --listen ADDR ... -- CMD ARGS...`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zdctl run api\n  \
    zdctl run -c /etc/zdctl/services.d/api.yaml\n  \
    zdctl run --name api --listen 127.0.0.1:8080 -- ./server --port-from-env")]
pub struct RunArgs {
    /// The service whose file to run (looked up in ZDCTL_CONFIG_DIR, /etc/zdctl/services.d
    /// and ~/.config/zdctl/services.d).
    #[arg(value_name = "NAME", conflicts_with_all = FLAGS_FORM)]
    pub service: Option<String>,

    /// The service file to run.
    #[arg(short, long, value_name = "FILE", conflicts_with = "service", conflicts_with_all = FLAGS_FORM)]
    pub config: Option<PathBuf>,

    /// Flags form: the service name (names the control socket).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Flags form: a listener to open and keep, `[FDNAME=]ADDR` (`:8080`,
    /// `127.0.0.1:8080`, `http=[::1]:80`, `/run/api.sock`, `dns=udp://:5353`). Repeat for
    /// more.
    #[arg(long, value_name = "[FDNAME=]ADDR", value_parser = parse_listener)]
    pub listen: Vec<ListenerSpec>,

    /// Flags form: a readiness check (`accepting`, `notify`, `http:URL`, `tcp:HOST:PORT`,
    /// `exec:CMD`, `alive:DUR`). Repeat for more; default `accepting` with TCP or unix
    /// listeners, else `alive:1s`.
    #[arg(long, value_name = "CHECK", value_parser = parse_ready_check)]
    pub ready: Vec<ReadyCheck>,

    /// Flags form: how long the readiness checks may take (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ready_timeout: Option<Duration>,

    /// Flags form: where to write the active generation's pid.
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,

    /// Flags form: the signal that asks a generation to stop (default TERM).
    #[arg(long, value_name = "SIGNAL", value_parser = parse_signal)]
    pub stop_signal: Option<Signal>,

    /// Flags form: how long a stopping generation gets before SIGKILL (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,

    /// Flags form: prefix each line of the program's output with `[NAME gen N]`.
    #[arg(long)]
    pub log_prefix: bool,

    /// Flags form: run the supervisor ten nice levels below the service, so a restart's
    /// CPU work yields to the requests being served (needs CAP_SYS_NICE).
    #[arg(long)]
    pub yield_cpu: bool,

    /// Flags form: the CPU priority a generation starts at: `idle` (the default:
    /// SCHED_IDLE until it is ready, at most 10 ms, so its start gives way to the requests
    /// being served) or `normal` (the service's priority throughout).
    #[arg(long, value_name = "PRIORITY", value_parser = parse_start_priority())]
    pub start_priority: Option<StartPriority>,

    /// Flags form: how many processes each generation runs (told apart by `ZD_INSTANCE`,
    /// 0 to N-1), all on the same listeners (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub instances: Option<u32>,

    /// Flags form: hand the program's own binds the service's listeners: a bind(2) to a
    /// listener's address gets the generation's socket (seccomp user notification).
    #[arg(long)]
    pub intercept_binds: bool,

    /// Flags form: the program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The flags of the flags form: none of them may be mixed with `-c` or a NAME.
const FLAGS_FORM: [&str; 13] = [
    "name",
    "listen",
    "ready",
    "ready_timeout",
    "pidfile",
    "stop_signal",
    "drain_timeout",
    "log_prefix",
    "yield_cpu",
    "start_priority",
    "intercept_binds",
    "instances",
    "command",
];

impl RunArgs {
    /// Whether any flag of the flags form other than `--name` was given.
    pub fn has_flags_form(&self) -> bool {
        !self.listen.is_empty()
            || !self.ready.is_empty()
            || self.ready_timeout.is_some()
            || self.pidfile.is_some()
            || self.stop_signal.is_some()
            || self.drain_timeout.is_some()
            || self.log_prefix
            || self.yield_cpu
            || self.start_priority.is_some()
            || self.intercept_binds
            || self.instances.is_some()
            || !self.command.is_empty()
    }
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// The service to restart.
    pub name: String,

    /// When to return: once the new generation is ready and promoted, or once the old one
    /// has drained too.
    #[arg(long, value_enum, default_value_t = Wait::Drained)]
    pub wait: Wait,

    /// How long the new generation may take to be ready (overrides the service's
    /// ready.timeout for this restart).
    #[arg(long, value_name = "DURATION", value_parser = zd_core::duration::parse_positive_duration)]
    pub timeout: Option<Duration>,

    /// When a restart is already running, follow it instead of failing as busy.
    #[arg(long)]
    pub attach: bool,

    /// Skip the service's bake window: drain the old generation as soon as the new one is
    /// ready. A service another supervisor runs has no bake window; there it changes
    /// nothing.
    #[arg(long)]
    pub no_bake: bool,

    /// Print every event and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zdctl revert api\n  \
    zdctl status api   # shows 'baking: …' while a revert is possible")]
pub struct RevertArgs {
    /// The service whose baking restart to revert.
    pub name: String,

    /// Print the supervisor's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// Return once the new generation is ready and promoted; the old one drains on its own.
    Ready,
    /// Return once the old generation has exited.
    Drained,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The service; every running service when left out.
    pub name: Option<String>,

    /// Print the status as JSON (an array without NAME).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the list as a JSON array.
    #[arg(long)]
    pub json: bool,

    /// Print only the names, one per line, without asking any supervisor (what the shell
    /// completions call).
    #[arg(long, conflicts_with = "json")]
    pub names: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The service to stop.
    pub name: String,

    /// Print the supervisor's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The supervisor first runs the new binary to check that it can read \
    the service file and the state it is handed; a binary that cannot (it crashes, is not \
    executable, is too old or too new) leaves the supervisor as it was, and reexec exits 1. \
    SIGUSR2 to 'zdctl run' does the same with the installed binary.\n\n\
    Examples:\n  \
    zdctl reexec api\n  \
    zdctl reexec api --binary ./target/release/zdctl"
)]
pub struct ReexecArgs {
    /// The service whose supervisor is re-executed.
    pub name: String,

    /// The zdctl binary to execute, instead of the one installed where the supervisor was
    /// started from.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// How long to wait while the supervisor is busy (a restart running) before giving up.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub wait: std::time::Duration,

    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Show the last lines a service's generations printed on stdout and stderr, \
    oldest first, each with when the supervisor read it, its generation and its stream.\n\n\
    The supervisor of 'zdctl run' reads every generation's output (and still copies it to \
    its own stdout and stderr) and keeps the last lines of each, as many as the service's \
    log.lines (1000 by default), for the running generations and the last five that \
    exited. A generation's output is kept across 'zdctl reexec' only from then on, and a \
    supervisor that adopts generations after a crash reads on from where the dead one \
    stopped (what was printed in between waits in the pipe). Services run by another \
    supervisor (nginx, psflip, ...) print to that supervisor's output instead.",
    after_help = "Examples:\n  \
    zdctl logs api\n  \
    zdctl logs api -n 20 --generation 7\n  \
    zdctl logs api -f\n  \
    zdctl logs api --json | jq -r 'select(.stream == \"stderr\") | .text'"
)]
pub struct LogsArgs {
    /// The service whose output to show.
    pub name: String,

    /// Only this generation's lines (see 'zdctl status' for the numbers).
    #[arg(short, long, value_name = "N")]
    pub generation: Option<u64>,

    /// How many of the last lines to show first.
    #[arg(short = 'n', long, value_name = "LINES", default_value_t = zd_core::supervisor::logs::DEFAULT_LINES)]
    pub lines: u32,

    /// Keep printing new lines as the generations print them, including those of
    /// generations that start later, until the supervisor stops or Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,

    /// One JSON object per line: generation, seq, unix_ms, stream, text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (`restart`, `run`, …); zdctl(1) without one.
    pub command: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The service whose active generation gets the signal.
    pub name: String,

    /// A signal name or number: `USR1`, `SIGHUP`, `15`.
    #[arg(value_parser = parse_signal)]
    pub signal: Signal,

    /// Print the supervisor's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A live view in the terminal; `?` inside lists the keys.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    zdctl top\n  \
    zdctl top api web --interval 500ms\n  \
    zdctl top --pid 812")]
pub struct TopArgs {
    /// The services to watch, whoever runs them; every running service when left out (and
    /// no --pid).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Also watch the process tree of PID (any supervisor): its children are generations.
    #[arg(long, value_name = "PID")]
    pub pid: Option<i32>,

    /// How often to take a new snapshot.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

fn parse_listener(s: &str) -> Result<ListenerSpec, String> {
    s.parse()
        .map_err(|e: zd_core::listen::ListenSpecError| e.to_string())
}

fn parse_ready_check(s: &str) -> Result<ReadyCheck, String> {
    s.parse()
        .map_err(|e: zd_core::ready::check::ReadyCheckError| e.to_string())
}

/// `idle` or `normal`; clap lists them in the help and the completions.
fn parse_start_priority() -> impl clap::builder::TypedValueParser<Value = StartPriority> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["idle", "normal"]).map(|s| match s.as_str() {
        "normal" => StartPriority::Normal,
        _ => StartPriority::Idle,
    })
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    s.parse()
        .map_err(|e: zd_core::signal::SignalError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_form_parses_every_flag() {
        let cli = Cli::try_parse_from([
            "zdctl",
            "run",
            "--name",
            "api",
            "--listen",
            "http=127.0.0.1:8080",
            "--ready",
            "alive:2s",
            "--ready-timeout",
            "5s",
            "--stop-signal",
            "INT",
            "--drain-timeout",
            "1m",
            "--log-prefix",
            "--",
            "./server",
            "--flag",
        ])
        .expect("valid command line");
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.name.as_deref(), Some("api"));
        assert_eq!(run.listen.len(), 1);
        assert_eq!(run.ready_timeout, Some(Duration::from_secs(5)));
        assert_eq!(run.drain_timeout, Some(Duration::from_secs(60)));
        assert_eq!(run.command, ["./server", "--flag"]);
    }

    #[test]
    fn config_file_cannot_be_mixed_with_listen_flags() {
        let err = Cli::try_parse_from(["zdctl", "run", "-c", "a.yaml", "--listen", ":80"])
            .expect_err("conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn a_duration_without_a_unit_is_refused() {
        let err = Cli::try_parse_from(["zdctl", "restart", "api", "--timeout", "5"])
            .expect_err("no unit");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
