//! Service configuration: the YAML service file, or `zdctl run` flags, as one plain
//! [`ServiceConfig`].
//!
//! [`load_file`] reads, parses and validates a file; [`find_service`] and [`discover`]
//! look for files in [`config_dirs`]. Every error about a file starts with
//! `file:line:column:` (or the file's path) and says what to change; a file with several
//! problems gets them all at once, one per line ([`ConfigError::Many`]): each top-level key
//! is read on its own when the whole fails (`yaml::from_yaml_each`), and the checks of the
//! whole collect instead of stopping at the first. `docs/config.md` is the user's
//! reference.
//!
//! Whatever is at a service file's path is not trusted: only a regular file of at most
//! [`MAX_FILE_SIZE`] bytes is read, nesting at most [`MAX_DEPTH`] levels (see `read`).

mod cache;
mod discover;
mod error;
mod file;
mod nesting;
mod read;
pub(crate) mod validate;
pub(crate) mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cache::FileCache;
pub use discover::{DiscoveredService, config_dirs, discover, find_service};
pub use error::{ConfigError, Location, MAX_LISTED};
pub use nesting::MAX_DEPTH;
pub use read::{MAX_FILE_SIZE, READ_DEADLINE, read_service_file};

use crate::listen::{ListenAddr, ListenerSpec};
use crate::ready::check::ReadyCheck;
use crate::signal::Signal;

/// How long readiness checks may take together, unless `ready.timeout` says otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an old generation may take to stop, unless `drain_timeout` says otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The first delay before respawning a crashed generation.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between respawns.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How many failed starts within how long make the supervisor stop respawning, unless
/// `restart.limit` says otherwise.
pub const DEFAULT_START_LIMIT: StartLimit = StartLimit {
    starts: 5,
    window: Duration::from_secs(60),
};
/// A generation that stayed up this long was healthy: the respawn backoff starts over and
/// the failed starts counted against `restart.limit` are forgotten.
pub const HEALTHY_UPTIME: Duration = Duration::from_secs(10);
/// How long a promoted restart waits for the old generation to take what is queued on
/// its own socket before it is asked to stop, unless `handoff_wait` says otherwise.
pub const DEFAULT_HANDOFF_WAIT: Duration = Duration::from_secs(2);
/// How many output lines each generation's log keeps by default (`log.lines`). With
/// `log.lines: 0`, output is kept only after a failed start, the last ten lines.
pub const DEFAULT_LOG_LINES: u32 = 1000;
/// The most `log.lines` may be: with lines of up to 2 KiB (and about 100 bytes of
/// bookkeeping each), about 70 MiB per generation, six generations kept at most.
pub const MAX_LOG_LINES: u32 = 32_768;
/// The `alive` check used when a service has no listeners and names no check.
pub const DEFAULT_ALIVE: Duration = Duration::from_secs(1);

/// One service, ready for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The service name (`name:`, else the file stem).
    pub name: String,
    /// The file it came from; `None` for a service given by flags.
    pub source: Option<PathBuf>,
    /// The program and its arguments; never empty.
    pub command: Vec<String>,
    /// The working directory of every generation (already resolved against the file's
    /// directory); `None`: the supervisor's own.
    pub workdir: Option<PathBuf>,
    /// Variables added to the generation's environment.
    pub env: BTreeMap<String, String>,
    /// The listeners, in fd order (fd 3 first).
    pub listeners: Vec<ListenerSpec>,
    /// How a new generation proves it is ready.
    pub ready: ReadyConfig,
    /// The signal that asks a generation to stop (drain).
    pub stop_signal: Signal,
    /// How long a stopping generation gets before SIGKILL.
    pub drain_timeout: Duration,
    /// What happens when the active generation dies outside a restart.
    pub restart: RestartPolicy,
    /// Where the supervisor writes the active generation's pid.
    pub pidfile: Option<PathBuf>,
    /// Prefix each line of the child's output with `[name gen N] `.
    pub log_prefix: bool,
    /// How many of its last output lines each generation's log keeps (`log.lines`); 0:
    /// generations write to the supervisor's stdout and stderr directly and nothing is
    /// kept (but after a failed start, see [`DEFAULT_LOG_LINES`]).
    pub log_lines: u32,
    /// Run the supervisor's threads below the service's CPU priority (read at start only).
    pub yield_cpu: bool,
    /// The CPU priority a generation starts at, until it is ready.
    pub start_priority: StartPriority,
    /// How TCP and UDP listeners reach generations; `None`: steered where the kernel
    /// allows it, else shared (read at start only, like the listeners).
    pub handoff: Option<Handoff>,
    /// Steered handoff: the longest the old generation is given, after the promotion, to
    /// empty its socket's accept queue (or its UDP socket's datagrams) and read what its
    /// connections received, before its stop signal.
    pub handoff_wait: Duration,
    /// Steered handoff: turn `net.ipv4.tcp_migrate_req` on at start where permitted
    /// (`listen::migrate`), so that a closing generation's socket hands what is still
    /// queued or half open to another socket of the group; `None`: on (read at start
    /// only).
    pub migrate_requests: Option<bool>,
    /// Start each generation under a seccomp filter that hands its `bind` calls to the
    /// supervisor, so that a program that binds its own port gets the generation's
    /// listener instead (`handoff::intercept`; read at every spawn, like the command).
    pub intercept_binds: bool,
    /// How many processes of the command each generation runs (`instances`, at least 1).
    /// Each gets the listeners and `ZD_INSTANCE=0..N-1`.
    pub instances: u32,
    /// How a restart replaces a generation of several instances (`rollout`).
    pub rollout: Rollout,
    /// After a restart's promotion, how long the old generation is kept, serving beside
    /// the new one, while the new one is watched (`bake`, `bake_checks`); `None`: the old
    /// generation is drained as soon as the new one is ready.
    pub bake: Option<Bake>,
}

/// `rollout`: how many new instances a restart starts ahead of the old ones it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// How many new instances may run beyond `instances` (1 to `instances`): 1 replaces
    /// them one by one, `instances` starts the whole new generation at once.
    pub surge: u32,
    /// How many instances may be missing from the serving capacity during a restart;
    /// only 0 is supported.
    pub max_unavailable: u32,
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            surge: 1,
            max_unavailable: 0,
        }
    }
}

/// `bake`: the window after a promotion during which the old generation stays, and what
/// reverts to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bake {
    /// How long the window lasts.
    pub window: Duration,
    /// Checks run every `interval` during the window (same forms as readiness checks);
    /// one that fails reverts. An instance of the new generation that exits reverts too.
    pub checks: Vec<ReadyCheck>,
    /// How often the checks run (`bake_check_interval`).
    pub interval: Duration,
}

/// The most `instances` may be.
pub const MAX_INSTANCES: u32 = 256;

/// The default `bake_check_interval`.
pub const DEFAULT_BAKE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How a TCP or UDP listener reaches the generations (`supervisor`, `listen::steer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handoff {
    /// One socket per generation in an `SO_REUSEPORT` group; the supervisor steers new
    /// connections (and datagrams) to the active generation's socket only.
    Steered,
    /// One socket that every generation accepts from.
    Shared,
}

impl std::fmt::Display for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handoff::Steered => "steered",
            Handoff::Shared => "shared",
        })
    }
}

/// The CPU priority a generation starts at (`supervisor::start_priority`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum StartPriority {
    /// `SCHED_IDLE`, set by the child before exec, until the generation is ready or 10 ms
    /// have passed; then every thread of its tree gets the normal priority back. Its start
    /// then gives way to the requests being served.
    #[default]
    Idle,
    /// The service's priority throughout.
    Normal,
}

/// Readiness: every check must pass, all within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyConfig {
    /// The checks, never empty.
    pub checks: Vec<ReadyCheck>,
    /// The deadline for all of them.
    pub timeout: Duration,
}

impl ReadyConfig {
    /// The default: `accepting` when there is a TCP or unix listener, else `alive:1s`;
    /// 30s timeout.
    pub fn default_for(listeners: &[ListenerSpec]) -> ReadyConfig {
        ReadyConfig {
            checks: default_checks(listeners),
            timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

/// `accepting` needs a listener to watch: a service without one gets `alive:1s`.
fn default_checks(listeners: &[ListenerSpec]) -> Vec<ReadyCheck> {
    if !listeners.is_empty() {
        vec![ReadyCheck::Accepting]
    } else {
        vec![ReadyCheck::Alive(DEFAULT_ALIVE)]
    }
}

/// Respawning the active generation after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// When to respawn.
    pub mode: RestartMode,
    /// The first delay; doubled for each crash in a row, reset after 10s of uptime.
    pub backoff: Duration,
    /// The longest delay.
    pub backoff_max: Duration,
    /// After this many failed starts, the supervisor stops respawning and the service is
    /// `failing` until the next restart request; `None` (`limit: off`): respawn forever.
    pub limit: Option<StartLimit>,
    /// How long a failing service keeps its listeners accepting into their queues before
    /// they refuse new connections (until a restart brings it back); `None` (`off`, the
    /// default): they accept, and clients wait, as long as the supervisor lives.
    pub refuse_after: Option<Duration>,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            mode: RestartMode::Always,
            backoff: DEFAULT_BACKOFF,
            backoff_max: DEFAULT_BACKOFF_MAX,
            limit: Some(DEFAULT_START_LIMIT),
            refuse_after: None,
        }
    }
}

/// `restart.limit`: `starts` failed starts within `window` (`5 in 60s`).
///
/// A failed start is the end of an active generation that the restart policy would
/// respawn, and that lived less than [`HEALTHY_UPTIME`] (one that lived longer forgets
/// the earlier ones), or a respawn that could not start at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    /// At least 1.
    pub starts: u32,
    /// Above zero.
    pub window: Duration,
}

impl StartLimit {
    /// Parses `N in DURATION`, or `off` (`Ok(None)`).
    pub fn parse(text: &str) -> Result<Option<StartLimit>, String> {
        let text = text.trim();
        if text == "off" {
            return Ok(None);
        }
        let shape = || {
            format!(
                "restart.limit '{text}' is not 'N in DURATION'{}; write it like '5 in 60s', \
                 or 'off' to respawn forever",
                crate::suggest::did_you_mean(crate::suggest::closest(text, ["off"]))
            )
        };
        let (count, window) = text.split_once(" in ").ok_or_else(shape)?;
        let starts: u32 = count.trim().parse().map_err(|_| shape())?;
        if starts == 0 {
            return Err(format!(
                "restart.limit '{text}' counts 0 starts; use at least 1, or 'off' to respawn \
                 forever"
            ));
        }
        let window = crate::duration::parse_positive_duration(window.trim())
            .map_err(|e| format!("restart.limit '{text}': {e}"))?;
        Ok(Some(StartLimit { starts, window }))
    }
}

impl std::fmt::Display for StartLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {}",
            self.starts,
            crate::duration::format_duration(self.window)
        )
    }
}

/// When the active generation is respawned after dying outside a restart.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Whatever the exit status.
    #[default]
    Always,
    /// Only after a non-zero exit or a death by signal.
    #[serde(alias = "on_failure")]
    OnFailure,
    /// Never: the service stays without a generation until the next restart request.
    Never,
}

impl ServiceConfig {
    /// A service with every default: for `zdctl run --name N -- CMD`. Set `listeners`
    /// and then `ready = ReadyConfig::default_for(&listeners)` to keep the default checks
    /// right.
    pub fn defaults_for(name: impl Into<String>, command: Vec<String>) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            source: None,
            command,
            workdir: None,
            env: BTreeMap::new(),
            listeners: Vec::new(),
            ready: ReadyConfig::default_for(&[]),
            stop_signal: Signal::Terminate,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            restart: RestartPolicy::default(),
            pidfile: None,
            log_prefix: false,
            log_lines: DEFAULT_LOG_LINES,
            yield_cpu: false,
            start_priority: StartPriority::Idle,
            handoff: None,
            handoff_wait: DEFAULT_HANDOFF_WAIT,
            migrate_requests: None,
            intercept_binds: false,
            instances: 1,
            rollout: Rollout::default(),
            bake: None,
        }
    }

    /// Checks what parsing alone cannot: the program exists and is executable, the
    /// working directory exists, names are unique, durations are positive. Errors point
    /// at the key in `source` when there is one (it is re-read to find the line); several
    /// problems come back together as [`ConfigError::Many`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let text = self
            .source
            .as_deref()
            .and_then(|p| read_service_file(p).ok());
        validate::validate(self, text.as_deref())
    }
}

/// Checks a service name: it names sockets and files, so 1 to 64 letters, digits, `_`,
/// `-` or `.`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid service name '{name}'; use 1 to 64 letters, digits, '_', '-' or '.', \
             not starting with '.' or '-', like 'api'"
        ))
    }
}

/// What a service file describes: a service `zdctl run` supervises, or one a foreign
/// supervisor runs and zdctl drives (`driver:`).
#[derive(Debug)]
pub enum ServiceFile {
    Native(Box<ServiceConfig>),
    /// A file for `zdctl run` that cannot be used as it is: a running supervisor keeps its
    /// last good configuration, and says why at the next restart.
    BrokenNative(ConfigError),
    Driver(Box<crate::driver::DriverConfig>),
}

impl ServiceFile {
    /// The service's name, when the file can be used.
    pub fn name(&self) -> Option<&str> {
        match self {
            ServiceFile::Native(config) => Some(&config.name),
            ServiceFile::Driver(config) => Some(&config.name),
            ServiceFile::BrokenNative(_) => None,
        }
    }
}

/// Reads a service file and tells what it describes; a native service is validated (see
/// [`ServiceConfig::validate`]). An error means the file cannot be read, or names a driver
/// but is invalid; a native file that is invalid is [`ServiceFile::BrokenNative`].
pub fn load_any(path: &Path) -> Result<ServiceFile, ConfigError> {
    let text = read_service_file(path)?;
    read_any(&text, path, Checks::All)
}

/// Parses service file text, checking every value but not the filesystem.
pub fn parse_any(text: &str, source: &Path) -> Result<ServiceFile, ConfigError> {
    read_any(text, source, Checks::Values)
}

/// What is checked of a native service file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Each value on its own.
    Values,
    /// The values, then the whole with [`validate`] (the filesystem included).
    All,
}

/// This is the one place that looks for `driver:`.
fn read_any(text: &str, source: &Path, checks: Checks) -> Result<ServiceFile, ConfigError> {
    if crate::driver::names_driver(text) {
        return crate::driver::parse_str(text, source).map(|c| ServiceFile::Driver(Box::new(c)));
    }
    Ok(match parse_native(text, source, checks) {
        Ok(config) => ServiceFile::Native(Box::new(config)),
        Err(err) => ServiceFile::BrokenNative(err),
    })
}

/// Reads, parses and validates a service file for `zdctl run`: a regular file (symlinks
/// are followed) of at most [`MAX_FILE_SIZE`] bytes; see [`read_service_file`].
pub fn load_file(path: &Path) -> Result<ServiceConfig, ConfigError> {
    native(load_any(path)?, path)
}

/// The native config of a file, or why `zdctl run` cannot use it.
fn native(file: ServiceFile, source: &Path) -> Result<ServiceConfig, ConfigError> {
    match file {
        ServiceFile::Native(config) => Ok(*config),
        ServiceFile::BrokenNative(err) => Err(err),
        ServiceFile::Driver(_) => Err(ConfigError::invalid(
            Location::new(Some(source.to_owned()), 1, 1),
            "this service names a `driver:`: its own supervisor runs it, not 'zdctl run'; use \
             'zdctl restart', 'zdctl status' and 'zdctl top' on it (see docs/drivers.md)",
        )),
    }
}

/// Parses service file text for `zdctl run`; `source` names the file in errors, gives the
/// default name (its stem) and the directory relative paths resolve against. Checks every
/// value, but not the filesystem: see [`ServiceConfig::validate`]. A file that names a
/// `driver:` is refused with what to use instead.
pub fn parse_str(text: &str, source: &Path) -> Result<ServiceConfig, ConfigError> {
    native(parse_any(text, source)?, source)
}

/// Reads a native service file and reports every problem found (see
/// [`ConfigError::Many`]): each key whose value cannot be read, then, with
/// [`Checks::All`], what [`validate`] finds in the rest (checks that depend on a key that
/// could not be read are left out).
fn parse_native(text: &str, source: &Path, checks: Checks) -> Result<ServiceConfig, ConfigError> {
    let at = |line, column| Location::new(Some(source.to_owned()), line, column);
    if text.trim().is_empty() {
        return Err(ConfigError::invalid(
            at(1, 1),
            "the service file is empty; it needs at least `command:`, \
             like command: [\"./server\", \"--port\", \"8080\"]",
        ));
    }
    let mut errors = Vec::new();
    let (raw, unread, more) = match yaml::from_yaml_each::<file::FileConfig>(text, MAX_LISTED) {
        Ok(raw) => (Some(raw), Vec::new(), 0),
        Err(failed) => {
            errors.extend(failed.errors.into_iter().map(|e| {
                ConfigError::invalid(at(e.line, e.column), validate::explain(&e.message))
            }));
            (failed.partial, failed.failed_keys, failed.more)
        }
    };
    let config = raw.map(|raw| {
        errors.extend(validate::bake_settings_without_bake(
            &raw, text, source, &unread,
        ));
        from_file(raw, source, &unread, &mut errors)
    });
    if let Some(config) = config.as_ref().filter(|_| checks == Checks::All) {
        errors.extend(validate::problems(config, Some(text), &unread));
    }
    if let Some(err) = ConfigError::from_list(errors, more) {
        return Err(err);
    }
    config.ok_or_else(|| {
        ConfigError::invalid(
            at(1, 1),
            "the service file could not be read; check its syntax",
        )
    })
}

/// The service a file describes; the problems of the name go to `errors`. `unread` are
/// the keys whose values could not be read.
fn from_file(
    raw: file::FileConfig,
    source: &Path,
    unread: &[String],
    errors: &mut Vec<ConfigError>,
) -> ServiceConfig {
    let name = match raw.name {
        Some(name) => name.0,
        None => {
            let stem = source
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            // With a `name:` that could not be read, the stem is only a stand-in.
            if !unread.iter().any(|k| k == "name") {
                if let Err(e) = validate_name(&stem) {
                    errors.push(ConfigError::invalid(
                        Location::new(Some(source.to_owned()), 1, 1),
                        format!(
                            "{e}; the name comes from the file name: rename the file or set \
                             `name:`"
                        ),
                    ));
                }
            }
            stem
        }
    };
    let base = source.parent().unwrap_or(Path::new(""));
    // `components()` drops the `.` in `workdir: .`, so errors and logs show a clean path.
    let resolve = |p: PathBuf| -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            base.join(p).components().collect()
        }
    };
    let listeners: Vec<ListenerSpec> = raw
        .listen
        .0
        .into_iter()
        .map(|mut spec| {
            if let ListenAddr::Unix(path) = spec.addr {
                spec.addr = ListenAddr::Unix(resolve(path));
            }
            spec
        })
        .collect();
    let ready = raw.ready.unwrap_or_default();
    let restart = raw.restart.unwrap_or_default();
    let defaults = RestartPolicy::default();
    let rollout = raw.rollout.unwrap_or_default();
    let default_rollout = Rollout::default();
    ServiceConfig {
        name,
        source: Some(source.to_owned()),
        command: raw.command.0,
        workdir: raw.workdir.map(resolve),
        env: raw.env.0,
        ready: ReadyConfig {
            checks: ready.checks.unwrap_or_else(|| default_checks(&listeners)),
            timeout: ready.timeout.unwrap_or(DEFAULT_READY_TIMEOUT),
        },
        listeners,
        stop_signal: raw.stop_signal.unwrap_or(Signal::Terminate),
        drain_timeout: raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
        restart: RestartPolicy {
            mode: restart.policy.unwrap_or(defaults.mode),
            backoff: restart.backoff.unwrap_or(defaults.backoff),
            backoff_max: restart.backoff_max.unwrap_or(
                defaults
                    .backoff_max
                    .max(restart.backoff.unwrap_or_default()),
            ),
            limit: restart.limit.unwrap_or(defaults.limit),
            refuse_after: restart.refuse_after.unwrap_or(defaults.refuse_after),
        },
        pidfile: raw.pidfile.map(resolve),
        log_prefix: raw.log.as_ref().and_then(|l| l.prefix).unwrap_or(false),
        log_lines: raw.log.and_then(|l| l.lines).unwrap_or(DEFAULT_LOG_LINES),
        yield_cpu: raw.yield_cpu.unwrap_or(false),
        start_priority: raw.start_priority.unwrap_or_default(),
        handoff: raw.handoff,
        handoff_wait: raw.handoff_wait.map_or(DEFAULT_HANDOFF_WAIT, |d| d.0),
        migrate_requests: raw.migrate_requests,
        intercept_binds: raw.intercept_binds.unwrap_or(false),
        instances: raw.instances.map_or(1, |n| n.0),
        rollout: Rollout {
            surge: rollout.surge.map_or(default_rollout.surge, |s| s.0),
            max_unavailable: rollout
                .max_unavailable
                .map_or(default_rollout.max_unavailable, |m| m.0),
        },
        bake: raw.bake.map(|window| Bake {
            window: window.0,
            checks: raw.bake_checks.map(|c| c.0).unwrap_or_default(),
            interval: raw
                .bake_check_interval
                .map_or(DEFAULT_BAKE_CHECK_INTERVAL, |i| i.0),
        }),
    }
}
