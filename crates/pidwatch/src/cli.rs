//! The command line: the clap definition, and the generated completions and man page.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;

/// Stay in the foreground while a service's main PID flips.
///
/// pidwatch starts CMD, becomes a child subreaper so that a re-executed main process is
/// re-parented to it, follows the pid that the service writes to PIDFILE, forwards every
/// signal it receives to that process, and exits only when the service is really gone, with
/// the service's own exit status. Run it under daemontools, runit, s6 or supervise-daemon in
/// place of a service that upgrades itself by replacing its main process (psflip, nginx's
/// USR2 binary upgrade, unicorn, gunicorn).
#[derive(Debug, Parser)]
#[command(
    name = "pidwatch",
    version,
    after_help = "Exit status: the service's own exit code, or 128+N when it died by signal N; \
                  121 when the service ended but its status could not be known; 124 when no \
                  valid pid appeared within --startup-timeout; 125 when pidwatch itself failed; \
                  126 when CMD could not be executed; 127 when CMD was not found."
)]
pub struct Cli {
    /// The pid file the service writes its main process id to.
    #[arg(short, long, value_name = "PATH", required_unless_present = "generate")]
    pub pidfile: Option<PathBuf>,

    /// Only print errors, not the pids followed or ignored.
    #[arg(short, long)]
    pub quiet: bool,

    /// How long to wait for a new pid once the watched process is gone: a flip may write the
    /// new pid just after the old process exits.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub grace: Duration,

    /// How long the service may take to write a valid pid to the pid file for the first time.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub startup_timeout: Duration,

    /// Also accept a pid that is not pidwatch's descendant when the process belongs to the
    /// user that owns the pid file.
    #[arg(long)]
    pub trust_owner: bool,

    /// Always exit 0 when the service ends, whatever its status (psflip's behaviour).
    #[arg(long)]
    pub zero: bool,

    /// Behave as on a kernel without child subreapers (for tests of that fallback).
    #[arg(long, hide = true)]
    pub no_subreaper: bool,

    /// Write shell completions and the man page into DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    pub generate: Option<PathBuf>,

    /// The command that starts the service, and its arguments.
    #[arg(
        last = true,
        value_name = "CMD",
        required_unless_present = "generate",
        num_args = 1..,
        allow_hyphen_values = true
    )]
    pub command: Vec<std::ffi::OsString>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("'{text}' is not a duration: {err}"))
}

/// The clap definition, for completion and man page generators.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The completion scripts' file names, the same scheme as zdctl's: what each shell looks
/// for when the file is installed as is (zsh autoloads `_pidwatch`).
pub const COMPLETION_FILES: [(Shell, &str); 5] = [
    (Shell::Bash, "pidwatch.bash"),
    (Shell::Zsh, "_pidwatch"),
    (Shell::Fish, "pidwatch.fish"),
    (Shell::Elvish, "pidwatch.elv"),
    (Shell::PowerShell, "_pidwatch.ps1"),
];

/// Writes the completion scripts ([`COMPLETION_FILES`]) and the man page `pidwatch.1`
/// into `dir`.
pub fn generate(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = command();
    for (shell, file) in COMPLETION_FILES {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "pidwatch", &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    let mut man = Vec::new();
    clap_mangen::Man::new(command()).render(&mut man)?;
    std::fs::write(dir.join("pidwatch.1"), man)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn command_after_double_dash_keeps_its_own_flags() {
        let cli = Cli::try_parse_from(["pidwatch", "--pidfile", "/p", "--", "nginx", "-g", "x"])
            .expect("valid command line");
        assert_eq!(cli.command, ["nginx", "-g", "x"]);
        assert_eq!(cli.grace, Duration::from_secs(2));
    }

    #[test]
    fn pidfile_and_command_are_required() {
        assert!(Cli::try_parse_from(["pidwatch", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["pidwatch", "--pidfile", "/p"]).is_err());
    }
}
