//! Whole-config checks, key positions for their errors, and hints for serde's messages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::file::FileConfig;
use super::{ConfigError, Handoff, Location, MAX_INSTANCES, ServiceConfig, validate_name};
use crate::duration::format_duration;
use crate::handoff::HandoffError;
use crate::listen::validate_fd_name;
use crate::ready::check::ReadyCheck;
use crate::signal::Signal;

/// Checks `config`; `text` is its file's text, used only to point errors at a line. Every
/// problem is reported (see [`ConfigError::Many`]).
pub(super) fn validate(config: &ServiceConfig, text: Option<&str>) -> Result<(), ConfigError> {
    match ConfigError::from_list(problems(config, text, &[]), 0) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Every problem of `config`, in no particular order. `unread` names the keys of its file
/// whose values could not be read (they hold defaults): checks that depend on them are
/// skipped, since their error is already reported and theirs would be noise.
pub(super) fn problems(
    config: &ServiceConfig,
    text: Option<&str>,
    unread: &[String],
) -> Vec<ConfigError> {
    let at = |keys: &[&str]| {
        let (line, column) = text.map_or((1, 1), |t| locate(t, keys));
        Location::new(config.source.clone(), line, column)
    };
    let mut problems = Vec::new();
    let mut invalid = |keys: &[&str], message: String| {
        problems.push(ConfigError::invalid(at(keys), message));
    };
    // Whether the checks on these keys mean anything: each was read.
    let read = |keys: &[&str]| !keys.iter().any(|k| unread.iter().any(|u| u == k));

    if read(&["name"]) {
        if let Err(e) = validate_name(&config.name) {
            invalid(&["name"], e);
        }
    }
    let mut workdir_ok = read(&["workdir"]);
    if let Some(dir) = config.workdir.as_ref().filter(|d| !d.is_dir()) {
        workdir_ok = false;
        invalid(
            &["workdir"],
            format!(
                "workdir '{}' is not a directory; create it or fix the path",
                dir.display()
            ),
        );
    }

    let listeners_read = read(&["listen"]);
    let mut names = BTreeSet::new();
    for spec in &config.listeners {
        if let Some(name) = &spec.name {
            if let Err(e) = validate_fd_name(name) {
                invalid(&["listen"], e.to_string());
            }
            if !names.insert(name) {
                invalid(
                    &["listen"],
                    format!("two listeners are named '{name}'; give each a different name"),
                );
            }
        }
        if let Some(mode) = spec.mode {
            if let Err(e) = check_mode(mode, &format!("{mode:o}")) {
                invalid(&["listen"], e);
            }
        }
        let unix_only = spec.mode.is_some() || spec.owner.is_some() || spec.group.is_some();
        if unix_only && !spec.addr.is_unix() {
            invalid(
                &["listen"],
                format!(
                    "mode, owner and group apply to unix sockets only, not '{}'",
                    spec.addr
                ),
            );
        }
        if spec.backlog.is_some() && spec.addr.is_udp() {
            invalid(
                &["listen"],
                format!(
                    "backlog applies to TCP and unix listeners, not '{}': a datagram socket \
                     has no listen() queue; remove it",
                    spec.addr
                ),
            );
        }
    }

    if config.ready.checks.is_empty() {
        invalid(
            &["ready"],
            "no readiness check; name at least one, like 'accepting'".to_owned(),
        );
    }
    for check in &config.ready.checks {
        if let Err(e) = check_alive(check, &check.to_string()) {
            invalid(&["ready"], e);
        }
    }
    if listeners_read
        && read(&["ready"])
        && config.listeners.is_empty()
        && config.ready.checks.contains(&ReadyCheck::Accepting)
    {
        invalid(
            &["ready"],
            "the 'accepting' check needs a listener, and the service has none; add `listen:` \
             or use another check, like 'alive:1s' or 'notify'"
                .to_owned(),
        );
    }
    let durations = [
        (
            &["ready", "timeout"][..],
            "ready.timeout",
            config.ready.timeout,
        ),
        (
            &["drain_timeout"][..],
            "drain_timeout",
            config.drain_timeout,
        ),
        (&["handoff_wait"][..], "handoff_wait", config.handoff_wait),
        (
            &["restart", "backoff"][..],
            "restart.backoff",
            config.restart.backoff,
        ),
        (
            &["restart", "backoff_max"][..],
            "restart.backoff_max",
            config.restart.backoff_max,
        ),
    ];
    let bake_durations = config.bake.iter().flat_map(|bake| {
        [
            (&["bake"][..], "bake", bake.window),
            (
                &["bake_check_interval"][..],
                "bake_check_interval",
                bake.interval,
            ),
        ]
    });
    let mut zero = false;
    for (keys, key, value) in durations.into_iter().chain(bake_durations) {
        if value.is_zero() {
            zero = true;
            invalid(
                keys,
                format!("{key} is zero; use a positive duration like '1s'"),
            );
        }
    }
    // A zero backoff is already reported; comparing with it would only repeat it.
    if !zero && config.restart.backoff_max < config.restart.backoff {
        invalid(
            &["restart", "backoff_max"],
            "restart.backoff_max is shorter than restart.backoff; make it at least as long"
                .to_owned(),
        );
    }
    if config.restart.refuse_after.is_some() && config.restart.limit.is_none() {
        invalid(
            &["restart", "refuse_after"],
            "restart.refuse_after applies once restart.limit makes the service failing, and \
             'limit: off' never does; set a limit or remove refuse_after"
                .to_owned(),
        );
    }
    if let Err(e) = check_instances(i64::from(config.instances)) {
        invalid(&["instances"], e);
    }
    let rollout = config.rollout;
    if let Err(e) = check_surge(i64::from(rollout.surge)) {
        invalid(&["rollout", "surge"], e);
    } else if read(&["instances", "rollout"]) && rollout.surge > config.instances {
        invalid(
            &["rollout", "surge"],
            format!(
                "rollout.surge ({}) is larger than instances ({}); at most {}: 'surge: {}' \
                 already starts the whole new generation at once",
                rollout.surge, config.instances, config.instances, config.instances
            ),
        );
    }
    if let Err(e) = check_max_unavailable(i64::from(rollout.max_unavailable)) {
        invalid(&["rollout", "max_unavailable"], e);
    }
    if let Some(bake) = &config.bake {
        for check in &bake.checks {
            if let Err(e) = check_bake(check, &check.to_string()) {
                invalid(&["bake_checks"], e);
            }
        }
        // Without a check the interval paces nothing: the exit of a new instance reverts
        // whenever it happens, however short the window.
        if !bake.window.is_zero()
            && !bake.interval.is_zero()
            && bake.window < bake.interval
            && !bake.checks.is_empty()
            && read(&["bake_check_interval"])
        {
            invalid(
                &["bake"],
                format!(
                    "bake ({}) is shorter than bake_check_interval ({}): no bake check would \
                     run; lengthen bake or shorten the interval",
                    format_duration(bake.window),
                    format_duration(bake.interval)
                ),
            );
        }
    }
    if config.log_lines > super::MAX_LOG_LINES {
        invalid(
            &["log", "lines"],
            format!(
                "log.lines is {}, more than the {} lines a generation's log may keep; \
                 lower it (0 keeps none)",
                config.log_lines,
                super::MAX_LOG_LINES
            ),
        );
    }
    let inet = |spec: &crate::listen::ListenerSpec| !spec.addr.is_unix();
    if listeners_read
        && config.handoff == Some(Handoff::Steered)
        && !config.listeners.iter().any(inet)
    {
        invalid(
            &["handoff"],
            "'handoff: steered' applies to TCP and UDP listeners, and the service has none \
             (unix sockets are always shared); remove the key or add a TCP or UDP listener"
                .to_owned(),
        );
    }
    if listeners_read
        && read(&["handoff"])
        && config.migrate_requests == Some(true)
        && (config.handoff == Some(Handoff::Shared)
            || !config.listeners.iter().any(|l| l.addr.is_tcp()))
    {
        invalid(
            &["migrate_requests"],
            "'migrate_requests: true' applies to the steered handoff of TCP listeners, and \
             this service has none (it says 'handoff: shared' or has no TCP listener); \
             remove the key"
                .to_owned(),
        );
    }
    if listeners_read && config.intercept_binds && config.listeners.is_empty() {
        invalid(
            &["intercept_binds"],
            "'intercept_binds: true' hands the program's binds the service's listeners, and \
             this service has none; add a TCP, UDP or unix listener under 'listen:' or \
             remove the key"
                .to_owned(),
        );
    }
    if matches!(config.stop_signal, Signal::Stop) {
        invalid(
            &["stop_signal"],
            "SIGSTOP pauses a process instead of ending it; use TERM, INT, QUIT or the \
             signal your app drains on"
                .to_owned(),
        );
    }
    // Where the program is looked for depends on the working directory and on the PATH
    // of `env`: with either unknown, "not found" could be wrong.
    if workdir_ok && read(&["command", "env"]) {
        if let Err(err) = check_command(config, at(&["command"])) {
            problems.push(err);
        }
    }
    problems
}

/// Reads a unix socket's mode, written in octal with or without a leading `0` or `0o`.
pub(crate) fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8).map_err(|_| {
        format!("invalid mode '{text}'; write octal permissions as a string, like \"0660\"")
    })?;
    check_mode(mode, text)?;
    Ok(mode)
}

/// A socket's mode holds permission bits only: the setuid, setgid and sticky bits mean
/// nothing on a socket, and a mode that sets them is more likely a typo than a wish.
fn check_mode(mode: u32, written: &str) -> Result<(), String> {
    if mode > 0o777 {
        return Err(format!(
            "invalid mode '{written}': the setuid, setgid and sticky bits (anything above \
             '0777') mean nothing on a socket; use permission bits only, like \"0660\""
        ));
    }
    Ok(())
}

/// `alive:0s` passes the instant the process exists, which every process does right after
/// its spawn: it would let the old generation go before the new one has done anything.
pub(crate) fn check_alive(check: &ReadyCheck, written: &str) -> Result<(), String> {
    match check {
        ReadyCheck::Alive(d) if d.is_zero() => Err(format!(
            "'{written}' proves nothing: every process is alive the instant it starts; give \
             it time to fail, like 'alive:1s', or use another check"
        )),
        _ => Ok(()),
    }
}

/// `instances`: each is a process of the command with every listener, so some limit
/// keeps a typo (`2000` for `20`) from forking thousands of processes.
pub(crate) fn check_instances(n: i64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(n @ 1..=MAX_INSTANCES) => Ok(n),
        _ if n < 1 => Err(format!(
            "instances must be at least 1, not {n}: a generation runs that many processes \
             of the command; remove the key for one"
        )),
        _ => Err(format!(
            "instances is {n}, more than the {MAX_INSTANCES} a generation may run; lower it \
             to at most {MAX_INSTANCES}"
        )),
    }
}

/// `rollout.surge`, on its own: whether it fits `instances` is checked with the whole.
pub(crate) fn check_surge(n: i64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(n @ 1..=MAX_INSTANCES) => Ok(n),
        _ if n < 1 => Err(format!(
            "rollout.surge must be at least 1, not {n}: a restart starts that many new \
             instances before it drains old ones; remove the key for one at a time"
        )),
        _ => Err(format!(
            "rollout.surge is {n}, more than the {MAX_INSTANCES} instances a generation may \
             run; use at most 'instances'"
        )),
    }
}

/// `rollout.max_unavailable`: a restart that lets capacity drop is not implemented, and
/// taking the value silently would promise what does not happen.
pub(crate) fn check_max_unavailable(n: i64) -> Result<u32, String> {
    match n {
        0 => Ok(0),
        _ => Err(format!(
            "rollout.max_unavailable {n} is not supported: only 0 is, for now; a restart \
             never drops below 'instances' serving processes; remove the key, and raise \
             'rollout.surge' to go faster"
        )),
    }
}

/// A bake check must be able to fail after the promotion. `alive` has nothing left to
/// prove (an exit of a new instance reverts anyway), and `notify` was proven once and for
/// all: `READY=1` is sent before the promotion.
pub(crate) fn check_bake(check: &ReadyCheck, written: &str) -> Result<(), String> {
    let why = match check {
        ReadyCheck::Alive(_) => {
            "a bake already reverts when an instance of the new generation exits"
        }
        ReadyCheck::Notify => "READY=1 is sent once, before the promotion",
        _ => return Ok(()),
    };
    Err(format!(
        "'{written}' proves nothing during a bake: {why}; use a check that asks the \
         service, like 'http:http://127.0.0.1:8080/health', 'tcp:…' or 'exec:…', or remove \
         it"
    ))
}

/// `bake_checks` and `bake_check_interval` tune a bake, and do nothing without `bake`. A
/// [`ServiceConfig`] has no place for them then, so this looks at the file's keys; `text`
/// is the file's, to point at them. A `bake` that could not be read (in `unread`) is not
/// missing.
pub(super) fn bake_settings_without_bake(
    raw: &FileConfig,
    text: &str,
    source: &Path,
    unread: &[String],
) -> Vec<ConfigError> {
    if raw.bake.is_some() || unread.iter().any(|k| k == "bake") {
        return Vec::new();
    }
    let given = [
        ("bake_checks", raw.bake_checks.is_some()),
        ("bake_check_interval", raw.bake_check_interval.is_some()),
    ];
    given
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(key, _)| {
            let (line, column) = locate(text, &[key]);
            ConfigError::invalid(
                Location::new(Some(source.to_owned()), line, column),
                format!(
                    "{key} has no effect without 'bake: DURATION': the checks run during a \
                     bake window only; add bake (like 'bake: 5m') or remove {key}"
                ),
            )
        })
        .collect()
}

/// The program must exist and be executable: with a '/', as a path (relative to the
/// working directory); without one, somewhere on the PATH the generation will get.
fn check_command(config: &ServiceConfig, at: Location) -> Result<(), ConfigError> {
    let Some(program) = config.command.first().filter(|p| !p.is_empty()) else {
        return Err(ConfigError::invalid(
            at,
            "the command is empty; name the program to run, like [\"./server\", \"--port\", \"8080\"]",
        ));
    };
    // The generation's PATH: the service's env may set its own.
    let search = config
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    // The same lookup the handoff does just before it forks, so that what passes here is
    // what will start.
    match crate::handoff::resolve_program(program, config.workdir.as_deref(), Some(&search)) {
        Ok(_) => Ok(()),
        Err(HandoffError::NotExecutable { program }) => {
            Err(ConfigError::CommandNotExecutable { at, program })
        }
        Err(_) if program.contains('/') => Err(ConfigError::CommandNotFound {
            at,
            program: program.clone(),
            searched: format!(
                "no file at '{}'",
                config
                    .workdir
                    .as_deref()
                    .map_or_else(|| PathBuf::from(program), |d| d.join(program))
                    .display()
            ),
        }),
        Err(_) => Err(ConfigError::CommandNotFound {
            at,
            program: program.clone(),
            searched: format!("searched PATH={search}"),
        }),
    }
}

/// The 1-based line and column of a key: `keys[0]` at the top level, each next key
/// somewhere indented below the previous. Falls back to the deepest key found, then 1:1.
/// A text scan, not a parse: good enough to point at `command:` in a file that parsed.
pub(super) fn locate(text: &str, keys: &[&str]) -> (usize, usize) {
    let mut found = (1, 1);
    let mut lines = text.lines().enumerate().peekable();
    let mut parent_indent: Option<usize> = None;
    for key in keys {
        let mut hit = None;
        for (number, line) in lines.by_ref() {
            let indent = line.len() - line.trim_start().len();
            let body = line.trim_start().trim_start_matches("- ");
            if let Some(parent) = parent_indent {
                // Left the parent's block without finding the key.
                if !body.is_empty() && !body.starts_with('#') && indent <= parent {
                    break;
                }
            } else if indent != 0 {
                continue;
            }
            let is_key = body
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'));
            if is_key {
                let column = line.len() - body.len() + 1;
                hit = Some((number + 1, column, indent));
                break;
            }
        }
        match hit {
            Some((line, column, indent)) => {
                found = (line, column);
                parent_indent = Some(indent);
            }
            None => break,
        }
    }
    found
}

/// Adds what to change to serde's messages: a "did you mean" for unknown keys and values,
/// an example for missing keys.
pub(crate) fn explain(message: &str) -> String {
    one_line(&hint(message))
}

/// Each problem is one line of [`ConfigError::Many`], but a key or value quoted from the
/// file may hold a line break (`? "a\nb"` is a key): it is shown escaped.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn hint(message: &str) -> String {
    let message: &str = &message
        .replace(
            "struct FileConfig",
            "a map of keys, like `command: [\"./server\"]`",
        )
        .replace("struct LogSection", "a map like `prefix: true`")
        .replace("struct RolloutSection", "a map like `surge: 2`");
    // The YAML reader puts the key's path before the message of a value's own check; a
    // message that already starts with that key does not need it twice.
    if let Some((path, rest)) = message.split_once(": ") {
        let names_its_key = rest
            .strip_prefix(path)
            .is_some_and(|after| after.starts_with([' ', ':']));
        if !path.contains(' ') && names_its_key {
            return hint(rest);
        }
    }
    if message.contains("while parsing") || message.contains("while scanning") {
        return format!(
            "{message}; check the indentation (spaces, not tabs) and quoting here or on the \
             line above"
        );
    }
    if message.contains("more than one document") {
        return "a service file holds one YAML document; remove the second `---` and what \
                follows, or put each service in its own file"
            .to_owned();
    }
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (context, body) = match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (format!(" in `{path}`"), rest),
        _ => (String::new(), message),
    };
    let guess = |wrong: &str, choices: &[&str]| {
        choices
            .iter()
            .map(|c| (strsim::jaro_winkler(wrong, c), *c))
            .filter(|(score, _)| *score >= 0.75)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c.to_owned())
    };
    if body.starts_with("unknown field") {
        if let Some((wrong, choices)) = quoted.split_first() {
            let hint = match guess(wrong, choices) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("valid keys here: {}", choices.join(", ")),
            };
            return format!("unknown key `{wrong}`{context}; {hint}");
        }
    }
    if body.starts_with("unknown variant") {
        if let Some((wrong, choices)) = quoted.split_first() {
            let hint = match guess(wrong, choices) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("use one of {}", choices.join(", ")),
            };
            return format!("unknown value `{wrong}`{context}; {hint}");
        }
    }
    let not_boolean = body
        .strip_prefix("invalid type: string \"")
        .and_then(|rest| rest.strip_suffix("\", expected a boolean"));
    if let Some(wrong) = not_boolean {
        let hint = match wrong.to_ascii_lowercase().as_str() {
            "yes" | "y" | "on" => "write `true`: only true and false are booleans here".to_owned(),
            "no" | "n" | "off" => "write `false`: only true and false are booleans here".to_owned(),
            _ => match crate::suggest::closest(wrong, ["true", "false"]) {
                Some(best) => format!("did you mean `{best}`?"),
                None => "use true or false".to_owned(),
            },
        };
        return format!("unknown value `{wrong}`{context}; {hint}");
    }
    if body.starts_with("duplicate field") {
        if let Some(field) = quoted.first() {
            return format!("key `{field}` appears twice{context}; keep one of them");
        }
    }
    if body.starts_with("missing field") {
        if let Some(field) = quoted.first() {
            let example = match *field {
                "command" => "command: [\"./server\", \"--port\", \"8080\"]",
                "address" => "address: 127.0.0.1:8080",
                _ => "",
            };
            let hint = if example.is_empty() {
                format!("add `{field}:`")
            } else {
                format!("add it, like {example}")
            };
            return format!("missing key `{field}`{context}; {hint}");
        }
    }
    message.to_owned()
}
