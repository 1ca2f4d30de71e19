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

/// The completion script for `shell`.
pub fn render_completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "zdctl", &mut out);
    complete_service_names(shell, &String::from_utf8_lossy(&out)).into_bytes()
}

/// The commands whose NAME arguments are services.
const TAKES_SERVICES: &str = "run restart revert status stop signal logs reexec top verify";

/// Teaches the bash, zsh and fish scripts to offer service names where a command takes
/// one: clap_complete's scripts are static, so the names come from `zdctl list --names`
/// (files and running supervisors, no supervisor asked) when the user presses TAB.
fn complete_service_names(shell: Shell, script: &str) -> String {
    match shell {
        Shell::Bash => {
            let wrapper = format!(
                r#"
# Service names where a command takes one (`zdctl list --names`), else the options.
_zdctl_with_services() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
    if [[ $COMP_CWORD -ge 2 && "$cur" != -* && " {TAKES_SERVICES} " == *" ${{COMP_WORDS[1]}} "* ]]; then
        local prev="${{COMP_WORDS[COMP_CWORD-1]}}"
        if [[ $COMP_CWORD -eq 2 || ( "${{COMP_WORDS[1]}}" == top && "$prev" != -* ) ]]; then
            COMPREPLY=( $(compgen -W "$(zdctl list --names 2>/dev/null)" -- "$cur") )
            return 0
        fi
    fi
    _zdctl "$@"
}}
"#
            );
            let script = script.replace("complete -F _zdctl ", "complete -F _zdctl_with_services ");
            match script.rfind("\nif [[ \"${BASH_VERSINFO") {
                Some(at) => format!("{}{wrapper}{}", &script[..at + 1], &script[at + 1..]),
                None => script + &wrapper,
            }
        }
        Shell::Zsh => {
            let mut out = String::with_capacity(script.len() + 256);
            for line in script.split_inclusive('\n') {
                let is_service = [
                    ":name -- ",
                    "::name -- ",
                    "*::names -- ",
                    ":service -- ",
                    "::service -- ",
                ]
                .iter()
                .any(|p| line.starts_with(&format!("'{p}")));
                if is_service {
                    out.push_str(&line.replacen(":_default'", ":_zdctl_services'", 1));
                } else {
                    out.push_str(line);
                }
            }
            let function = r#"(( $+functions[_zdctl_services] )) ||
_zdctl_services() {
    local -a services
    services=(${(f)"$(zdctl list --names 2>/dev/null)"})
    _describe -t services 'service' services
}

"#;
            match out.rfind("if [ \"$funcstack[1]\" = \"_zdctl\" ]") {
                Some(at) => format!("{}{function}{}", &out[..at], &out[at..]),
                None => out + function,
            }
        }
        Shell::Fish => {
            let single = TAKES_SERVICES.replace(" top", "");
            format!(
                "{script}complete -c zdctl -n \"__fish_seen_subcommand_from {single}; and test (count (commandline -opc)) -eq 2\" -f -a \"(zdctl list --names 2>/dev/null)\" -d 'service'\n\
                 complete -c zdctl -n \"__fish_seen_subcommand_from top\" -f -a \"(zdctl list --names 2>/dev/null)\" -d 'service'\n"
            )
        }
        _ => script.to_owned(),
    }
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

/// Every man page, root first: `zdctl.1` (the commands, exit status, environment, files,
/// examples) and `zdctl-COMMAND.1` for each command, as file name and roff.
pub fn render_man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = visible_command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    let root = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    root.render(&mut out)
        .context("cannot render the man page")?;
    out.extend_from_slice(EXIT_STATUS.as_bytes());
    out.extend_from_slice(ROOT_SECTIONS.as_bytes());
    let see_also: Vec<String> = cmd
        .get_subcommands()
        .map(|s| format!("\\fBzdctl-{}\\fR(1)", s.get_name()))
        .chain(std::iter::once("\\fBpidwatch\\fR(1)".to_owned()))
        .collect();
    out.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}\n", see_also.join(", ")).as_bytes());
    pages.push((root.get_filename(), plain_roff(&out)));
    for sub in cmd.get_subcommands() {
        let page = clap_mangen::Man::new(sub.clone());
        let mut out = Vec::new();
        page.render(&mut out).context("cannot render a man page")?;
        out.extend_from_slice(EXIT_STATUS.as_bytes());
        out.extend_from_slice(b".SH \"SEE ALSO\"\n\\fBzdctl\\fR(1)\n");
        pages.push((page.get_filename(), plain_roff(&out)));
    }
    Ok(pages)
}

/// The man page called `name` (`zdctl`, or `zdctl-restart` or `restart`), in roff.
pub fn render_man(name: &str) -> anyhow::Result<Vec<u8>> {
    let wanted = if name == "zdctl" || name.starts_with("zdctl-") {
        format!("{name}.1")
    } else {
        format!("zdctl-{name}.1")
    };
    let pages = render_man_pages()?;
    let names: Vec<&str> = pages
        .iter()
        .map(|(file, _)| file.trim_end_matches(".1"))
        .collect();
    let list = names.join(", ");
    pages
        .iter()
        .find(|(file, _)| *file == wanted)
        .map(|(_, roff)| roff.clone())
        .ok_or_else(|| {
            crate::exit::ExitError::usage(format!("no man page '{name}'; the pages are {list}"))
        })
}

/// Doc comments write code in Markdown backticks; the man page shows it in bold.
fn plain_roff(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut parts = line.split('`');
        out.push_str(parts.next().unwrap_or_default());
        let rest: Vec<&str> = parts.collect();
        if rest.len() % 2 == 0 {
            // Pairs only (as many backticks as parts after the first): a lone one stays.
            for (i, part) in rest.iter().enumerate() {
                out.push_str(if i % 2 == 0 { "\\fB" } else { "\\fR" });
                out.push_str(part);
            }
        } else {
            for part in rest {
                out.push('`');
                out.push_str(part);
            }
        }
    }
    out.into_bytes()
}

/// What every page says of exit codes.
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
It worked: the restart completed, the revert left the old generation alone, the service
stopped cleanly, the answer is shown.
.TP
\fB1\fR
It ran and failed: the restart rolled back or failed (the reason is printed), a restart
was already running, no restart was baking to revert, a reexec's new binary could not
take over, verify saw downtime, or the supervisor answered with an error.
.TP
\fB2\fR
Usage or configuration error: the message names what to change (file:line:column for a
service file).
.TP
\fB3\fR
The service is not running, or there is no such service: the message says where zdctl
looked.
"#;

/// The root page's sections after the commands and [`EXIT_STATUS`].
const ROOT_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBZDCTL_CONFIG_DIR\fR
Where service files are looked for, instead of /etc/zdctl/services.d and
~/.config/zdctl/services.d.
.TP
\fBZDCTL_RUNTIME_DIR\fR
Where control sockets and state files live, instead of /run/zdctl (root) or
$XDG_RUNTIME_DIR/zdctl.
.TP
\fBZD_LOG\fR
Log filter of the supervisor and the commands (tracing's syntax: info, debug, zd_core=trace).
.TP
\fBZDCTL_CGROUPS\fR
off: find a generation's processes by process group instead of a cgroup per generation.
.TP
\fBNO_COLOR\fR, \fBCLICOLOR_FORCE\fR
Turn colour off, or force it when the output is not a terminal.
.TP
\fBNOTIFY_SOCKET\fR, \fBFDSTORE\fR, \fBLISTEN_FDS\fR
Under systemd: zdctl run reports readiness and reloads, keeps its listeners in the fd
store, and takes them back at its next start.
.SH FILES
.TP
\fB/etc/zdctl/services.d/NAME.yaml\fR, \fB~/.config/zdctl/services.d/NAME.yaml\fR
Service files: the command, its listeners, readiness, drain.
.TP
\fB/run/zdctl/NAME.sock\fR
The control socket of a running supervisor (mode 0600).
.TP
\fB/run/zdctl/NAME.state\fR
What a supervisor holds, so that a new one can adopt its generations after a crash.
.SH EXAMPLES
.nf
zdctl run api
zdctl restart api
zdctl status api \-\-json
zdctl reexec api
zdctl verify api \-\-url http://127.0.0.1:8080/ \-\-restarts 20
.fi
"#;

pub fn completions(shell: Shell) -> anyhow::Result<()> {
    output::text(&String::from_utf8_lossy(&render_completions(shell)))
}

pub fn man(page: Option<&str>) -> anyhow::Result<()> {
    output::text(&String::from_utf8_lossy(&render_man(
        page.unwrap_or("zdctl"),
    )?))
}
