//! Services run by a foreign supervisor (`driver:` in the service file): `restart`,
//! `status` and `list` go through `zd_core::driver` instead of a control socket.

use std::path::Path;

use zd_core::config::{self, ConfigError};
use zd_core::driver::{self, DriverConfig, DriverError};
use zd_core::proto::Status;

use crate::cli::RestartArgs;
use crate::exit::ExitError;
use crate::output;
use crate::progress::Progress;

/// The driver config of service `name`, when its file names a driver.
pub fn driver_for(name: &str) -> anyhow::Result<Option<DriverConfig>> {
    match config::find_service(name) {
        Ok(path) => load(&path),
        Err(_) => Ok(None),
    }
}

/// The driver config in `path`, when the file names a driver; a bad file exits 2.
pub fn load(path: &Path) -> anyhow::Result<Option<DriverConfig>> {
    // A file that cannot be read safely (a FIFO, too large) is not a driver file; the
    // native reading that follows reports why.
    let text = config::read_service_file(path).unwrap_or_default();
    if !driver::names_driver(&text) {
        return Ok(None);
    }
    driver::parse_str(&text, path)
        .map(Some)
        .map_err(|e: ConfigError| ExitError::usage(e.to_string()))
}

/// A driver error as an exit error: not running (3), or a failure (1).
fn driver_error(name: &str, err: &DriverError) -> anyhow::Error {
    if let DriverError::Busy { restart } = err {
        return crate::control::busy(name, *restart);
    }
    let message = format!("'{name}': {err}");
    if err.is_not_running() {
        ExitError::not_running(message)
    } else {
        ExitError::failure(message)
    }
}

/// `zdctl restart NAME` for a foreign service: the driver runs in this process.
pub async fn restart(config: &DriverConfig, args: &RestartArgs) -> anyhow::Result<()> {
    let name = config.name.as_str();
    let timeout = args.timeout.unwrap_or(config.timeout);
    let progress = Progress::new(
        args.json,
        &format!("restarting '{name}' (driver {})", config.kind.name()),
    );
    let mut write_error = None;
    let result = driver::restart(config, timeout, |event| {
        if args.json && write_error.is_none() {
            write_error = output::json_line(&event).err();
        }
        progress.event(&event);
    })
    .await;
    progress.finish();
    if let Some(err) = write_error {
        return Err(err);
    }
    match result {
        Ok(report) => crate::restart::finished(name, &report, args.json),
        Err(DriverError::Busy { restart }) if args.attach => {
            // The other zdctl runs the restart and sees its events; this one waits for
            // its lock and reports its outcome from the record.
            let report = driver::follow(config, restart, timeout)
                .await
                .map_err(|e| driver_error(name, &e))?;
            crate::restart::finished(name, &report, args.json)
        }
        Err(err) => Err(driver_error(name, &err)),
    }
}

/// The status of a foreign service, from /proc.
pub fn status(config: &DriverConfig) -> anyhow::Result<Status> {
    driver::status(config).map_err(|e| driver_error(&config.name, &e))
}

/// The human status: the native layout, with the driver named under the first line.
pub fn render(config: &DriverConfig, status: &Status, now: std::time::SystemTime) -> String {
    // The counters are the driver record's: restarts made by zdctl. A driver does not
    // watch the service between restarts, so it counts no crashes and does not say so.
    let text: String = crate::status::render(status, now)
        .lines()
        .map(|line| match line.split_once("; ") {
            Some((counters, _)) if line.starts_with("  restarts: ") => format!("{counters}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    let text = text.replacen("supervisor pid", &format!("{} pid", config.kind.name()), 1);
    match text.split_once('\n') {
        Some((first, rest)) => {
            format!("{first}\n  driver: {}\n{rest}", config.kind.name())
        }
        None => text,
    }
}

/// `--json`: the native status shape plus `"driver"`.
pub fn json(config: &DriverConfig, status: &Status) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(status)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("driver".into(), config.kind.name().into());
    }
    Ok(value)
}

/// Every foreign service of the config directories whose supervisor runs.
pub fn running() -> Vec<(DriverConfig, Status)> {
    config::discover()
        .into_iter()
        .filter(|found| found.error.is_none())
        .filter_map(|found| load(&found.path).ok().flatten())
        .filter_map(|config| {
            let status = driver::status(&config).ok()?;
            Some((config, status))
        })
        .collect()
}
