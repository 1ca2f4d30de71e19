//! `zdctl run`: builds the service configuration from a file, a service name or flags, and
//! runs the supervisor until it is stopped.

use std::path::PathBuf;

use anyhow::Context;
use zd_core::config::{self, ConfigError, ReadyConfig, ServiceConfig};
use zd_core::paths;
use zd_core::supervisor::{self, SupervisorOptions};

use crate::cli::RunArgs;
use crate::exit::{ExitError, FAILURE, USAGE};

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let (config, config_path) = service_config(args)?;
    let options = SupervisorOptions {
        control_socket: paths::control_socket(&config.name),
        config,
        config_path,
    };
    let to_exit = |err: supervisor::SupervisorError| {
        let code = if err.is_usage() { USAGE } else { FAILURE };
        ExitError::with_code(code, chain(&err))
    };
    // Started by a supervisor that is about to re-execute itself into this binary: say
    // whether this binary can take over, and touch nothing.
    if supervisor::is_reexec_check() {
        let line = supervisor::check_reexec(&options).map_err(to_exit)?;
        println!("{line}");
        return Ok(());
    }
    // Listeners first, before the runtime opens any fd: under socket activation the sockets
    // passed at fds 3.. must be adopted while nothing else can have taken those numbers.
    let prepared = supervisor::prepare(options).map_err(to_exit)?;
    // The engine spends its time waiting on children, sockets and timers: two workers keep
    // the control socket responsive while a readiness check runs.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(prepared.run()).map_err(to_exit)
}

/// The configuration and the file to read again before each restart (`None` for flags).
fn service_config(args: RunArgs) -> anyhow::Result<(ServiceConfig, Option<PathBuf>)> {
    if let Some(path) = args.config {
        let config = config::load_file(&path).map_err(config_error)?;
        return Ok((config, Some(path)));
    }
    if let Some(name) = args.service {
        let path = config::find_service(&name).map_err(config_error)?;
        let config = config::load_file(&path).map_err(config_error)?;
        return Ok((config, Some(path)));
    }
    let config = flags_config(args)?;
    Ok((config, None))
}

/// The flags form: `--name NAME --listen ADDR ... -- CMD ARGS...`.
fn flags_config(args: RunArgs) -> anyhow::Result<ServiceConfig> {
    let Some(name) = args.name else {
        return Err(ExitError::usage(
            "say which service to run: 'zdctl run NAME', 'zdctl run -c FILE', or \
             'zdctl run --name NAME --listen ADDR -- CMD ARGS...'",
        ));
    };
    config::validate_name(&name).map_err(ExitError::usage)?;
    if args.command.is_empty() {
        return Err(ExitError::usage(format!(
            "missing the command to run for '{name}'; put it after '--', like \
             'zdctl run --name {name} --listen :8080 -- ./server'"
        )));
    }
    let mut config = ServiceConfig::defaults_for(name, args.command);
    config.ready = ReadyConfig::default_for(&args.listen);
    config.listeners = args.listen;
    if !args.ready.is_empty() {
        config.ready.checks = args.ready;
    }
    if let Some(timeout) = args.ready_timeout {
        config.ready.timeout = timeout;
    }
    if let Some(signal) = args.stop_signal {
        config.stop_signal = signal;
    }
    if let Some(timeout) = args.drain_timeout {
        config.drain_timeout = timeout;
    }
    config.pidfile = args.pidfile;
    config.log_prefix = args.log_prefix;
    config.yield_cpu = args.yield_cpu;
    config.intercept_binds = args.intercept_binds;
    if let Some(instances) = args.instances {
        config.instances = instances;
    }
    if let Some(priority) = args.start_priority {
        config.start_priority = priority;
    }
    config.validate().map_err(config_error)?;
    Ok(config)
}

/// Every configuration problem is the user's to fix: exit 2.
fn config_error(err: ConfigError) -> anyhow::Error {
    // The supervisor that runs a reexec check keeps the last line its check printed: all
    // the problems go on that one line.
    if supervisor::is_reexec_check() {
        return ExitError::usage(one_line(&chain(&err)));
    }
    ExitError::usage(chain(&err))
}

/// Every line of `text` (one per problem) on one line, separated by `; `.
fn one_line(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join("; ")
}

/// An error and its causes on one line: `cannot bind '127.0.0.1:80': permission denied`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror messages often embed their source already.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::exit::classify;
    use clap::Parser;

    fn run_args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(argv).expect("valid command line");
        match cli.command {
            Command::Run(args) => args,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn a_reexec_check_gets_every_problem_on_one_line() {
        let text = "command: [x]\nhandoff: steerd\nfoo: 1\n";
        let err = config::parse_str(text, std::path::Path::new("api.yaml")).expect_err("two");
        let line = one_line(&chain(&err));
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.starts_with("api.yaml:2:10: unknown value `steerd`"),
            "{line}"
        );
        assert!(line.contains("; api.yaml:3:1: unknown key `foo`"), "{line}");
    }

    #[test]
    fn the_flags_form_without_a_command_is_a_usage_error() {
        let result = flags_config(run_args(&[
            "zdctl", "run", "--name", "api", "--listen", ":8080",
        ]))
        .map(drop);
        let (code, message) = classify(&result);
        assert_eq!(code, USAGE);
        assert!(message.contains("missing the command"), "{message}");
    }

    #[test]
    fn the_flags_form_keeps_the_default_ready_check_for_listeners() {
        let config = flags_config(run_args(&[
            "zdctl", "run", "--name", "api", "--listen", ":8080", "--", "/bin/sh",
        ]))
        .expect("valid flags");
        assert_eq!(
            config.ready.checks,
            [zd_core::ready::check::ReadyCheck::Accepting]
        );
        assert_eq!(config.command, ["/bin/sh"]);
        assert_eq!(config.instances, 1);
    }

    #[test]
    fn the_flags_form_runs_as_many_instances_as_asked_and_never_none() {
        let config = flags_config(run_args(&[
            "zdctl",
            "run",
            "--name",
            "api",
            "--listen",
            ":8080",
            "--instances",
            "4",
            "--",
            "/bin/sh",
        ]))
        .expect("valid flags");
        assert_eq!(config.instances, 4);
        for refused in ["0", "257"] {
            let err = Cli::try_parse_from([
                "zdctl",
                "run",
                "--name",
                "api",
                "--instances",
                refused,
                "--",
                "/bin/sh",
            ])
            .expect_err("out of range");
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        }
    }
}
