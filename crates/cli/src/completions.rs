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
    clap_complete::generate(shell, &mut Cli::command(), "zdctl", &mut out);
    out
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
