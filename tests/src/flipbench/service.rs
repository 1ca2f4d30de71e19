//! The supervisor under test: a temp dir with its own runtime and config directories, a
//! service file for the fixture, `zdctl run bench` in its own process group, and a guard
//! that stops it and every generation however the benchmark ends.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use zd_core::proto::{Client, Op, Reply, ReplyResult, Status};

/// The service's name: its file is `services.d/bench.yaml`, its socket `run/bench.sock`.
pub const NAME: &str = "bench";

/// How long the supervisor may take to answer with an active generation.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The service's drain timeout, and how long a stopping supervisor gets on top of it
/// before its whole tree is killed.
const DRAIN_TIMEOUT: &str = "10s";
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// The programs under test, which cargo puts next to this one.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub zdctl: PathBuf,
    pub fixture: PathBuf,
}

impl Binaries {
    pub fn next_to_this_program() -> Result<Binaries> {
        let exe = std::env::current_exe().context("cannot find this program's own path")?;
        let dir = exe
            .parent()
            .context("this program's path has no directory")?;
        let binaries = Binaries {
            zdctl: dir.join("zdctl"),
            fixture: dir.join("zd-fixture"),
        };
        for bin in [&binaries.zdctl, &binaries.fixture] {
            if !bin.is_file() {
                bail!(
                    "'{}' is missing next to this benchmark; run `cargo build --release \
                     --workspace` first (with the same CARGO_TARGET_DIR)",
                    bin.display()
                );
            }
        }
        Ok(binaries)
    }
}

/// One `zdctl run bench` and its temp dir. Dropping it kills whatever still runs and
/// removes the dir.
pub struct Service {
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// Where the supervisor's stdout goes: `log`, or a file of its own.
    stdout: PathBuf,
    child: Option<Child>,
    /// Leave the temp dir behind, for a look at the supervisor's log.
    keep: bool,
}

impl Service {
    /// Writes the service file for `program` (with `handoff:` when given) and starts the
    /// supervisor; `label` tells the temp dirs of the modes apart.
    pub fn start(
        binaries: &Binaries,
        program: &Path,
        handoff: Option<&str>,
        label: &str,
        keep: bool,
    ) -> Result<Service> {
        Self::start_with(binaries, program, handoff, "", label, keep)
    }

    /// Like [`Service::start`], with `extra` lines at the end of the service file.
    pub fn start_with(
        binaries: &Binaries,
        program: &Path,
        handoff: Option<&str>,
        extra: &str,
        label: &str,
        keep: bool,
    ) -> Result<Service> {
        // A JSON string is a valid YAML scalar, and quotes any path safely.
        let program = serde_json::to_string(&service_path(program)?)?;
        let mut yaml = format!(
            "command: [{program}]\nlisten: [\"127.0.0.1:0\"]\ndrain_timeout: {DRAIN_TIMEOUT}\n"
        );
        if let Some(handoff) = handoff {
            yaml += &format!("handoff: {handoff}\n");
        }
        yaml += extra;
        Self::start_file(binaries, label, keep, &yaml)
    }

    /// Like [`Service::start`] with a service file of the caller's.
    pub fn start_file(binaries: &Binaries, label: &str, keep: bool, yaml: &str) -> Result<Service> {
        Self::spawn(binaries, label, keep, yaml, false)
    }

    /// Like [`Service::start_file`], with the supervisor's stdout (where it copies its
    /// generations' stdout) in a file of its own, [`Service::stdout`], and its stderr (its
    /// log, and the generations' stderr) in the log.
    pub fn start_file_split(
        binaries: &Binaries,
        label: &str,
        keep: bool,
        yaml: &str,
    ) -> Result<Service> {
        Self::spawn(binaries, label, keep, yaml, true)
    }

    fn spawn(
        binaries: &Binaries,
        label: &str,
        keep: bool,
        yaml: &str,
        split_stdout: bool,
    ) -> Result<Service> {
        // Named after the benchmark that runs it (flipbench, bindbench).
        let program = std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.file_name()?.to_str()?.to_owned()))
            .unwrap_or_else(|| "flipbench".to_owned());
        let dir = std::env::temp_dir().join(format!("{program}-{}-{label}", std::process::id()));
        // A leftover from an earlier run that had the same pid: start clean.
        let _ = std::fs::remove_dir_all(&dir);
        let mut service = Service {
            socket: dir.join("run").join(format!("{NAME}.sock")),
            log: dir.join("supervisor.log"),
            stdout: dir.join(if split_stdout {
                "stdout.log"
            } else {
                "supervisor.log"
            }),
            dir,
            child: None,
            keep,
        };
        let runtime_dir = service.dir.join("run");
        let config_dir = service.dir.join("services.d");
        for d in [&runtime_dir, &config_dir] {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create '{}'", d.display()))?;
        }
        std::fs::write(config_dir.join(format!("{NAME}.yaml")), yaml)?;
        let log = File::create(&service.log)?;
        let stdout = if split_stdout {
            File::create(&service.stdout)?
        } else {
            log.try_clone()?
        };
        let child = Command::new(&binaries.zdctl)
            .args(["run", NAME])
            .env("ZDCTL_RUNTIME_DIR", &runtime_dir)
            .env("ZDCTL_CONFIG_DIR", &config_dir)
            // The default log level, whatever the caller's environment says: verbose
            // logging would be part of what is measured.
            .env_remove("ZD_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            // Its own group, so that the guard can kill it without touching this program.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start '{}'", binaries.zdctl.display()))?;
        service.child = Some(child);
        Ok(service)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The service's temp dir (runtime dir `run/`, config dir `services.d/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The supervisor's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// Polls the control socket until the service has an active generation and a listener.
    pub fn wait_active(&mut self, rt: &tokio::runtime::Runtime) -> Result<Status> {
        let started = Instant::now();
        loop {
            if let Some(status) = rt.block_on(status(&self.socket))
                && status.active_generation.is_some()
                && !status.listeners.is_empty()
            {
                return Ok(status);
            }
            if let Some(exit) = self.try_wait()? {
                bail!("zdctl run exited with {exit}:\n{}", self.log_text());
            }
            if started.elapsed() > START_DEADLINE {
                bail!(
                    "the supervisor did not answer within {START_DEADLINE:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the supervisor has exited (and how).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// The file that holds the supervisor's stdout.
    pub fn stdout(&self) -> &Path {
        &self.stdout
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the supervisor as an operator would (SIGTERM: it drains its generation and
    /// exits). Returns whether it exited on its own within the deadline; if not, its whole
    /// tree is killed.
    pub fn stop(&mut self) -> Result<bool> {
        let Some(child) = &mut self.child else {
            return Ok(true);
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        if child.try_wait()?.is_none() {
            kill(pid, Signal::SIGTERM)?;
        }
        let started = Instant::now();
        while started.elapsed() < STOP_DEADLINE {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_all();
        Ok(false)
    }

    /// SIGKILL to the supervisor's group and to every descendant's group: each generation
    /// leads its own process group, so killing the supervisor's would miss them.
    fn kill_all(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pid) = i32::try_from(child.id()) else {
            return;
        };
        // Listed before anything dies: an orphan would be reparented and lost.
        for p in descendants(pid) {
            let _ = kill(Pid::from_raw(-p), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child
            && !matches!(child.try_wait(), Ok(Some(_)))
        {
            self.kill_all();
        }
        if self.keep {
            eprintln!("kept '{}'", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn service_path(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("'{}' is not valid UTF-8", path.display()))
}

/// The service's status over its control socket, if it answers.
pub async fn status(socket: &Path) -> Option<Status> {
    let mut client = Client::connect(socket).await.ok()?;
    match client.call(Op::Status, |_| {}).await.ok()? {
        Reply::Result { result, .. } => match *result {
            ReplyResult::Status(status) => Some(*status),
            _ => None,
        },
        _ => None,
    }
}

/// `pid` and all its descendants, from one scan of /proc.
fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| Some((p, parent_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&parent) = out.get(i) {
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(1)?.parse().ok()
}
