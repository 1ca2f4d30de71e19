//! A small harness for pidwatch's end-to-end tests: a temp dir per test, spawned processes
//! whose whole tree is killed on drop, waits with deadlines, and a dump of everything
//! involved when a test fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any single condition may take before the test fails. Generous: CI machines are
/// slow and shared; a passing test never waits for it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The pidwatch binary, built by `cargo build --workspace` next to this test binary.
pub fn pidwatch_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    // target/<profile>/deps/e2e-HASH → target/<profile>/pidwatch
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("pidwatch");
    assert!(
        bin.is_file(),
        "pidwatch is not built at '{}': run `cargo build -p pidwatch` (or `cargo build \
         --workspace`) with the same profile and target dir before these tests",
        bin.display()
    );
    bin
}

pub fn flipper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zd-flipper"))
}

/// Whether a test may skip when a peer program (nginx, daemontools, runit) is missing.
/// Returns `false` after printing a loud SKIPPED line; panics under `ZD_REQUIRE_PEERS=1`.
pub fn peers_available(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{test}: {} not installed (Debian packages: daemontools, runit, nginx-light, python3)",
        missing.join(", ")
    );
    assert!(
        std::env::var_os("ZD_REQUIRE_PEERS").is_none_or(|v| v != "1"),
        "ZD_REQUIRE_PEERS=1 but {message}"
    );
    crate::support::say_skipped(&message);
    false
}

/// A program on PATH or in /usr/sbin or /sbin, as the build script looks for it.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    zd_tests::peers::find_in(&zd_tests::peers::debian_dirs(&path), name, &[])
}

/// One test's private directory, and every process it started.
pub struct TestEnv {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    /// Processes outside the spawned trees, such as orphans re-parented to init.
    strays: Vec<Pid>,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pidwatch-e2e-")
            .tempdir()
            .expect("temp dir");
        Self {
            dir,
            procs: Vec::new(),
            strays: Vec::new(),
        }
    }

    /// Kills `pid` too when the test ends, should it still run.
    pub fn track(&mut self, pid: Pid) {
        if !self.strays.contains(&pid) {
            self.strays.push(pid);
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `cmd` in its own process group with stdout and stderr captured to files named
    /// after `name`; returns its index for [`TestEnv::proc`].
    pub fn spawn(&mut self, name: &str, cmd: &mut Command) -> usize {
        use std::os::unix::process::CommandExt;
        let stdout = self.path(&format!("{name}.stdout"));
        let stderr = self.path(&format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .process_group(0)
            .current_dir(self.dir.path())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.procs.push(Proc {
            name: name.to_owned(),
            command: format!("{cmd:?}"),
            child,
            stderr,
            status: None,
        });
        self.procs.len() - 1
    }

    pub fn proc(&mut self, index: usize) -> &mut Proc {
        &mut self.procs[index]
    }

    /// Reads a file of the test dir, empty when absent.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn dump(&mut self) {
        eprintln!("---- test dir {} ----", self.dir.path().display());
        for proc in &mut self.procs {
            let status = proc.status.or_else(|| proc.child.try_wait().ok().flatten());
            eprintln!("---- {}: {} (status {status:?})", proc.name, proc.command);
        }
        // Every small regular file: stdout and stderr of each process, logs, pid files.
        let mut entries: Vec<_> = fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries {
            let small_file = fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() < 65536);
            if small_file {
                let text = fs::read_to_string(&path).unwrap_or_default();
                eprintln!("---- {} ----\n{text}", path.display());
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        for pid in &self.strays {
            if is_alive(*pid) {
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
        // Kill whole trees, not just groups: daemonized services leave our process groups.
        for proc in &mut self.procs {
            let root = Pid::from_raw(proc.child.id() as i32);
            let mut tree = descendants(root);
            tree.push(root);
            for pid in tree {
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(-root.as_raw()), Signal::SIGKILL);
            let _ = proc.child.wait();
        }
    }
}

/// A process a test started.
pub struct Proc {
    name: String,
    command: String,
    child: Child,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("cannot signal {}: {e}", self.name));
    }

    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the process to exit, failing the test after [`DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let name = self.name.clone();
        let child = &mut self.child;
        let status = wait_for(&format!("{name} to exit"), || {
            child.try_wait().expect("try_wait")
        });
        self.status = Some(status);
        status
    }

    /// Waits for the exit and returns the exit code, failing on death by a signal.
    pub fn exit_code(&mut self) -> i32 {
        let status = self.wait_exit();
        status
            .code()
            .unwrap_or_else(|| panic!("{} died by a signal: {status:?}", self.name))
    }
}

/// Polls `probe` until it returns `Some`, failing the test after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(what, || condition().then_some(()));
}

/// The pid in a pid file, if it holds a clean one.
pub fn read_pid(path: &Path) -> Option<Pid> {
    let text = fs::read_to_string(path).ok()?;
    text.trim().parse().ok().map(Pid::from_raw)
}

pub fn is_alive(pid: Pid) -> bool {
    // A zombie still has a /proc entry but is not alive.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_field(&stat, 0).is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Field `n` after the command name of a /proc stat line (0 = state, 1 = ppid).
fn stat_field(stat: &str, n: usize) -> Option<String> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(n).map(str::to_owned)
}

/// (pid, ppid, state) of every process.
pub fn process_table() -> Vec<(Pid, Pid, String)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat_field(&stat, 0)?;
            let ppid = stat_field(&stat, 1)?.parse().ok()?;
            Some((Pid::from_raw(pid), Pid::from_raw(ppid), state))
        })
        .collect()
}

pub fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 1)?.parse().ok().map(Pid::from_raw)
}

/// Every descendant of `root`, children before grandchildren.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let table = process_table();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            table
                .iter()
                .filter(|(_, pp, _)| *pp == parent)
                .map(|(p, _, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Lines of a zd-flipper log, as (pid, event).
pub fn flipper_events(log: &str) -> Vec<(Pid, String)> {
    log.lines()
        .filter_map(|line| {
            let (pid, rest) = line.split_once(' ')?;
            let (_generation, event) = rest.split_once(' ')?;
            Some((Pid::from_raw(pid.parse().ok()?), event.to_owned()))
        })
        .collect()
}

/// Whether the flipper log shows `pid` received `signal` at least `count` times.
pub fn received(log: &str, pid: Pid, signal: &str, count: usize) -> bool {
    let wanted = format!("signal {signal}");
    flipper_events(log)
        .iter()
        .filter(|(p, e)| *p == pid && *e == wanted)
        .count()
        >= count
}
