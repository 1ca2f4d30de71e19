//! The service file of a foreign service: `driver:` and its options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::yaml::{from_yaml, from_yaml_each};
use crate::config::{ConfigError, Location, MAX_LISTED, validate::explain, validate_name};
use crate::duration::serde_duration;
use crate::signal::Signal;

/// How long a restart may take, unless `timeout:` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new generation must live before it counts, unless `settle:` says otherwise.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);

/// Which foreign supervisor runs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DriverKind {
    Signal,
    Psflip,
    Socketmaster,
    Huptime,
    #[serde(alias = "start-server", alias = "server_starter")]
    StartServer,
    Einhorn,
    Nginx,
    Haproxy,
    Gunicorn,
    Systemd,
}

impl DriverKind {
    /// The name as written in `driver:`.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Signal => "signal",
            DriverKind::Psflip => "psflip",
            DriverKind::Socketmaster => "socketmaster",
            DriverKind::Huptime => "huptime",
            DriverKind::StartServer => "start_server",
            DriverKind::Einhorn => "einhorn",
            DriverKind::Nginx => "nginx",
            DriverKind::Haproxy => "haproxy",
            DriverKind::Gunicorn => "gunicorn",
            DriverKind::Systemd => "systemd",
        }
    }

    /// What the supervisor's command line must contain, unless `expect:` says otherwise.
    fn default_expect(self) -> Option<&'static str> {
        match self {
            DriverKind::Signal | DriverKind::Systemd => None,
            other => Some(other.name()),
        }
    }
}

/// Which process the `signal` driver watches for the new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// A new pid in the pidfile (the old process exits): psflip, nginx-like flippers.
    #[default]
    Pidfile,
    /// A new child of the pidfile's process (the old child exits): socketmaster-like.
    Child,
}

/// `nginx: { mode: … }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NginxMode {
    /// USR2, WINCH, QUIT: a new binary and a new master, with rollback.
    #[default]
    Upgrade,
    /// HUP: new workers with the new configuration, same master.
    Reload,
}

/// `gunicorn: { mode: … }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GunicornMode {
    /// HUP: new workers, old ones drained.
    #[default]
    Hup,
    /// USR2, WINCH, QUIT: a new arbiter, as nginx's binary upgrade.
    Upgrade,
}

/// `systemd: { action: … }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemdAction {
    #[default]
    Reload,
    Restart,
}

/// One foreign service, ready for [`super::restart`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// The service name (`name:`, else the file stem).
    pub name: String,
    /// The file it came from.
    pub source: PathBuf,
    pub kind: DriverKind,
    /// The supervisor's pidfile.
    pub pidfile: Option<PathBuf>,
    /// What the pidfile's process must have in its command line.
    pub expect: Option<String>,
    /// The signal that asks for a restart (`signal`, `psflip`, `socketmaster`, `huptime`).
    pub signal: Signal,
    /// `signal` driver: where the new generation shows.
    pub watch: WatchMode,
    /// How long the whole restart may take.
    pub timeout: Duration,
    /// How long a new generation must live to count.
    pub settle: Duration,
    /// start_server's `--status-file`.
    pub status_file: Option<PathBuf>,
    /// einhorn's command socket, HAProxy's master CLI socket.
    pub socket: Option<PathBuf>,
    pub nginx: NginxMode,
    pub gunicorn: GunicornMode,
    /// systemd unit.
    pub unit: Option<String>,
    pub systemd: SystemdAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverFile {
    name: Option<String>,
    driver: DriverKind,
    pidfile: Option<PathBuf>,
    expect: Option<String>,
    signal: Option<Signal>,
    watch: Option<WatchMode>,
    #[serde(default, deserialize_with = "positive")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "positive")]
    settle: Option<Duration>,
    status_file: Option<PathBuf>,
    socket: Option<PathBuf>,
    nginx: Option<ModeSection<NginxMode>>,
    gunicorn: Option<ModeSection<GunicornMode>>,
    systemd: Option<SystemdSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeSection<M> {
    mode: M,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemdSection {
    unit: String,
    action: Option<SystemdAction>,
}

fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    serde_duration::deserialize_positive(d).map(Some)
}

/// Only the `driver:` key: whether a file is a foreign service.
#[derive(Deserialize)]
struct Probe {
    driver: Option<serde::de::IgnoredAny>,
}

/// Whether service file text names a driver (then it is not a `zdctl run` service).
pub fn names_driver(text: &str) -> bool {
    from_yaml::<Probe>(text).is_ok_and(|p| p.driver.is_some())
}

/// Reads and parses a driver service file.
pub fn load_file(path: &Path) -> Result<DriverConfig, ConfigError> {
    // The same rules as a native service file: a regular file, size and nesting capped.
    let text = crate::config::read_service_file(path)?;
    parse_str(&text, path)
}

/// Parses driver service file text; `source` names the file in errors and is the base of
/// relative paths.
pub fn parse_str(text: &str, source: &Path) -> Result<DriverConfig, ConfigError> {
    let at = |line, column| Location::new(Some(source.to_owned()), line, column);
    // Every key that cannot be read is reported, like in a native service file.
    let raw: DriverFile = from_yaml_each(text, MAX_LISTED).map_err(|failed| {
        let errors = failed.errors.into_iter().map(|e| {
            let message = explain(&e.message).replace("struct DriverFile", "a map of keys");
            ConfigError::Invalid {
                at: at(e.line, e.column),
                message,
            }
        });
        ConfigError::from_list(errors.collect(), failed.more)
            .unwrap_or_else(|| ConfigError::invalid(at(1, 1), "the service file could not be read"))
    })?;
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        at: locate(text, key).map_or_else(|| at(1, 1), |(l, c)| at(l, c)),
        message,
    };
    let name = match raw.name {
        Some(name) => name,
        None => source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    validate_name(&name).map_err(|e| invalid("name", e))?;
    let base = source.parent().unwrap_or(Path::new(""));
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let kind = raw.driver;
    let (unit, systemd) = match raw.systemd {
        Some(s) => (Some(s.unit), s.action.unwrap_or_default()),
        None => (None, SystemdAction::default()),
    };
    let config = DriverConfig {
        name,
        source: source.to_owned(),
        kind,
        pidfile: raw.pidfile.map(resolve),
        expect: raw
            .expect
            .or_else(|| kind.default_expect().map(str::to_owned)),
        signal: raw.signal.unwrap_or(Signal::Hangup),
        watch: raw.watch.unwrap_or_default(),
        timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
        settle: raw.settle.unwrap_or(DEFAULT_SETTLE),
        status_file: raw.status_file.map(resolve),
        socket: raw.socket.map(resolve),
        nginx: raw.nginx.map(|s| s.mode).unwrap_or_default(),
        gunicorn: raw.gunicorn.map(|s| s.mode).unwrap_or_default(),
        unit,
        systemd,
    };
    let section = |key: &str, present: bool, owner: DriverKind| {
        if present && kind != owner {
            Err(invalid(
                key,
                format!(
                    "`{key}:` applies to `driver: {}` only, and this service uses `driver: {}`; \
                     remove it",
                    owner.name(),
                    kind.name()
                ),
            ))
        } else {
            Ok(())
        }
    };
    section("nginx", text_has(text, "nginx"), DriverKind::Nginx)?;
    section("gunicorn", text_has(text, "gunicorn"), DriverKind::Gunicorn)?;
    section("systemd", config.unit.is_some(), DriverKind::Systemd)?;
    section(
        "status_file",
        config.status_file.is_some(),
        DriverKind::StartServer,
    )?;
    let needs = |key: &str, present: bool, example: &str| {
        if present {
            Ok(())
        } else {
            Err(invalid(
                "driver",
                format!("`driver: {}` needs `{key}:`, like {example}", kind.name()),
            ))
        }
    };
    match kind {
        DriverKind::Systemd => needs(
            "systemd",
            config.unit.is_some(),
            "systemd: { unit: nginx.service }",
        ),
        DriverKind::Einhorn | DriverKind::Haproxy => {
            needs("socket", config.socket.is_some(), "socket: /run/app.sock")
        }
        DriverKind::StartServer => {
            needs("pidfile", config.pidfile.is_some(), "pidfile: /run/app.pid")?;
            needs(
                "status_file",
                config.status_file.is_some(),
                "status_file: /run/app.status",
            )
        }
        _ => needs("pidfile", config.pidfile.is_some(), "pidfile: /run/app.pid"),
    }?;
    Ok(config)
}

/// Whether `key:` is a top-level key of the text (a line scan, for section checks).
fn text_has(text: &str, key: &str) -> bool {
    locate(text, key).is_some()
}

/// The line and column of a top-level `key:`.
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    text.lines()
        .position(|line| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| (i + 1, 1))
}
