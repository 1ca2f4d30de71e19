//! `zdctl completions SHELL` and `zdctl man`: generated from the clap definition. The
//! copies committed under `completions/` are checked against these by a test.

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::output;

/// Every shell we generate for, with the file its script is committed as.
pub const SHELLS: [(Shell, &str); 5] = [
    (Shell::Bash, "zdctl.bash"),
    (Shell::Zsh, "_zdctl"),
    (Shell::Fish, "zdctl.fish"),
    (Shell::Elvish, "zdctl.elv"),
    (Shell::PowerShell, "_zdctl.ps1"),
];

/// The file the man page is committed as.
pub const MAN_FILE: &str = "zdctl.1";

/// The completion script for `shell`.
pub fn render_completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "zdctl", &mut out);
    out
}

/// The command line without its hidden subcommands, for the completion scripts.
///
/// `--help` and the man page leave hidden subcommands out, but clap_complete's generators
/// list every subcommand, so they would offer `demo-server`: the service that `zdctl demo`
/// starts, not a command for people. clap cannot remove a subcommand, so the root is built
/// again with the definition's settings and arguments and its visible subcommands only.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut root = clap::Command::new("zdctl")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(full.is_propagate_version_set())
        .subcommand_required(full.is_subcommand_required_set())
        .arg_required_else_help(full.is_arg_required_else_help_set())
        .args(full.get_arguments().cloned())
        .subcommands(
            full.get_subcommands()
                .filter(|subcommand| !subcommand.is_hide_set())
                .cloned(),
        );
    if let Some(about) = full.get_about() {
        root = root.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        root = root.long_about(about.clone());
    }
    root
}

/// The man page, in roff.
pub fn render_man() -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("cannot render the man page")?;
    Ok(out)
}

pub fn completions(shell: Shell) -> anyhow::Result<()> {
    output::text(&String::from_utf8_lossy(&render_completions(shell)))
}

pub fn man() -> anyhow::Result<()> {
    output::text(&String::from_utf8_lossy(&render_man()?))
}
