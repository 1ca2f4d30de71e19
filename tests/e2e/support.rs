//! The harness of the native supervisor's end-to-end tests: a temp dir per test, the real
//! `zdctl` and `zd-fixture` binaries, a guard that kills every process a test started (the
//! supervisor and each generation's process group), and on failure a dump of what the
//! supervisor printed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use zd_core::proto::{Client, Op, Reply, ReplyResult, Status};

/// How long any condition in these tests may take before the test fails. Generous: CI
/// machines are shared and slow; the tests never assert on speed.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn zdctl_bin() -> PathBuf {
    sibling_bin("zdctl")
}

pub fn fixture_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zd-fixture"))
}

/// A binary of another workspace package: it sits next to this test's `deps/` directory.
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "'{}' is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// Polls `probe` until it returns `Some`, failing the test after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut delay = Duration::from_millis(2);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How a TCP listener reaches the generations, for tests that run under each.
#[derive(Debug, Clone, Copy)]
pub enum Handoff {
    Steered,
    Shared,
}

impl Handoff {
    /// The service file's line that chooses it.
    pub fn key(self) -> &'static str {
        match self {
            Handoff::Steered => "handoff: steered\n",
            Handoff::Shared => "handoff: shared\n",
        }
    }
}

/// One test's world: its own runtime and config directories and the processes it started.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub runtime_dir: PathBuf,
    pub config_dir: PathBuf,
    supervisors: Vec<Supervisor>,
}

pub struct Supervisor {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime_dir = dir.path().join("run");
        let config_dir = dir.path().join("services.d");
        std::fs::create_dir_all(&runtime_dir).expect("runtime dir");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        TestEnv {
            dir,
            runtime_dir,
            config_dir,
            supervisors: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `zdctl` with this test's directories.
    pub fn zdctl(&self) -> Command {
        let mut cmd = Command::new(zdctl_bin());
        cmd.env("ZDCTL_RUNTIME_DIR", &self.runtime_dir)
            .env("ZDCTL_CONFIG_DIR", &self.config_dir)
            .env_remove("ZD_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `zdctl ARGS` to completion.
    pub fn run_zdctl(&self, args: &[&str]) -> Output {
        self.zdctl().args(args).output().expect("run zdctl")
    }

    /// Starts `zdctl restart NAME` without waiting for it, its output discarded.
    pub fn spawn_restart(&self, name: &str) -> Child {
        self.zdctl()
            .args(["restart", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn zdctl restart")
    }

    /// Writes `services.d/NAME.yaml`.
    pub fn write_service(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.config_dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write service file");
        path
    }

    /// A service file for the fixture on a kernel-chosen loopback port.
    pub fn fixture_service(&self, name: &str, fixture_args: &[&str], extra: &str) -> PathBuf {
        let mut command = vec![format!("{:?}", fixture_bin().display().to_string())];
        command.extend(fixture_args.iter().map(|a| format!("{a:?}")));
        let yaml = format!(
            "command: [{}]\nlisten:\n  - http=127.0.0.1:0\n{extra}",
            command.join(", ")
        );
        self.write_service(name, &yaml)
    }

    /// Starts `zdctl run ARGS` in its own process group and waits until its control
    /// socket answers with an active generation.
    pub fn start(&mut self, name: &str, args: &[&str]) -> Status {
        let mut cmd = self.zdctl();
        cmd.arg("-v").args(args);
        self.start_command(name, cmd)
    }

    /// Like [`TestEnv::start`] for a command that ends up exec'ing `zdctl run`.
    pub fn start_command(&mut self, name: &str, cmd: Command) -> Status {
        self.spawn_command(name, cmd);
        self.wait_active(name)
    }

    /// Starts `zdctl run ARGS` like [`TestEnv::start`], without waiting for anything.
    pub fn spawn_supervisor(&mut self, name: &str, args: &[&str]) {
        let mut cmd = self.zdctl();
        cmd.arg("-v").args(args);
        self.spawn_command(name, cmd);
    }

    fn spawn_command(&mut self, name: &str, mut cmd: Command) {
        let log = self.path(&format!("{name}.supervisor.log"));
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(file.try_clone().expect("dup")).stderr(file);
        // SAFETY: setpgid is async-signal-safe; the guard kills the group by its id.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn zdctl run");
        self.supervisors.push(Supervisor {
            name: name.to_owned(),
            child,
            log,
        });
    }

    /// Takes charge of a supervisor the test started itself (with its own stdio): it is
    /// killed with its process group when the test ends, like the ones `start` makes.
    pub fn adopt(&mut self, name: &str, child: Child) -> Status {
        self.supervisors.push(Supervisor {
            name: name.to_owned(),
            child,
            log: self.path(&format!("{name}.supervisor.log")),
        });
        self.wait_active(name)
    }

    pub fn supervisor(&mut self, name: &str) -> &mut Supervisor {
        // The newest of that name: a test may stop a service and start it again.
        self.supervisors
            .iter_mut()
            .rev()
            .find(|s| s.name == name)
            .expect("no such supervisor")
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.runtime_dir.join(format!("{name}.sock"))
    }

    /// The supervisor's status over the control socket, if it answers.
    pub fn status(&self, name: &str) -> Option<Status> {
        status_at(&self.socket(name))
    }

    /// Waits until the service answers with a live active generation.
    pub fn wait_active(&mut self, name: &str) -> Status {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status(name) {
                if s.active_generation.is_some() {
                    return s;
                }
            }
            if let Some(status) = self.supervisor(name).child.try_wait().expect("try_wait") {
                panic!("zdctl run exited with {status}:\n{}", self.log(name));
            }
            assert!(
                start.elapsed() < DEADLINE,
                "supervisor never answered:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&mut self, name: &str) -> String {
        let log = self.supervisor(name).log.clone();
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// Waits for `zdctl run` to exit and returns its exit code.
    pub fn wait_exit(&mut self, name: &str) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.supervisor(name).child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(start.elapsed() < DEADLINE, "zdctl run did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for s in &mut self.supervisors {
            let pid = s.child.id() as i32;
            // Once reaped, the pid may already belong to someone else (pids wrap within
            // seconds under these tests' thread counts): kill only a supervisor not yet
            // reaped, whose pid and group are still its own.
            let reaped = !matches!(s.child.try_wait(), Ok(None));
            if !reaped {
                // Frozen first, so that it cannot start a generation (a restart it was
                // still carrying out) between the scan below and its own death.
                // SAFETY: kill(2) on the supervisor this test started and has not reaped.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
            // Every generation leads its own process group: kill them all, then the
            // supervisor's group.
            for p in descendants(pid).into_iter().filter(|_| !reaped) {
                // SAFETY: plain kill(2) calls on processes this test started.
                unsafe {
                    libc::kill(-p, libc::SIGKILL);
                    libc::kill(p, libc::SIGKILL);
                }
            }
            if !reaped {
                // SAFETY: as above.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = s.child.wait();
            if failing {
                eprintln!(
                    "---- zdctl run ({}) output ----\n{}",
                    s.name,
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                );
            }
        }
    }
}

/// `pid` and all its descendants, from a scan of /proc.
pub fn descendants(pid: i32) -> Vec<i32> {
    let table: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| Some((p, parent_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            table
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|state| state != 'Z'),
        Err(_) => false,
    }
}

/// Stops a process with SIGSTOP and resumes it with SIGCONT when dropped. Declare it after
/// the [`TestEnv`], so that it is dropped first: the process is resumed, then killed.
pub struct Stopped(pub i32);

impl Stopped {
    pub fn new(pid: i32) -> Stopped {
        // SAFETY: kill(2) on a process the test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        wait_for("the process to be stopped", || {
            zd_core::proc::state(pid).ok().filter(|s| *s == 'T')
        });
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A blocking HTTP GET on loopback; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The listener address of a running service, from its status.
pub fn address_of(status: &Status) -> String {
    status
        .listeners
        .first()
        .expect("a listener")
        .address
        .clone()
}

pub fn active_pid(status: &Status) -> i32 {
    let generation = status.active_generation.expect("active generation");
    status
        .generations
        .iter()
        .find(|g| g.generation == generation)
        .expect("active listed")
        .pid
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts an exact exit code, showing the output on mismatch.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "unexpected exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Load running in the background against a service, until [`Load::finish`].
pub struct Load {
    stop: zd_load::load::StopSignal,
    thread: std::thread::JoinHandle<zd_load::load::LoadReport>,
    pub live: std::sync::Arc<zd_load::load::LiveCounters>,
}

/// Starts `concurrency` closed-loop clients against `http://ADDR/`. Bounded: it stops by
/// itself after two minutes or five million requests, whichever comes first.
pub fn start_load(addr: &str, concurrency: usize, mode: zd_load::load::ConnectionMode) -> Load {
    start_paced_load(addr, concurrency, mode, None)
}

/// Like [`start_load`], at most `rate` requests a second in all when given: a load that
/// leaves CPU to what the test watches (a closed loop saturates both cores of a small
/// machine, and a debug build of `zdctl top` then answers a key in seconds).
pub fn start_paced_load(
    addr: &str,
    concurrency: usize,
    mode: zd_load::load::ConnectionMode,
    rate: Option<f64>,
) -> Load {
    let mut config = load_config(addr, concurrency, mode);
    config.rate = rate;
    start_configured_load(config)
}

/// The settings [`start_load`] uses: bounded to 120 s and 5 million requests, 10 s per
/// request; change what a test needs and start it with [`start_configured_load`].
pub fn load_config(
    addr: &str,
    concurrency: usize,
    mode: zd_load::load::ConnectionMode,
) -> zd_load::load::LoadConfig {
    let target: zd_load::load::Target = format!("http://{addr}/").parse().expect("target");
    let mut config = zd_load::load::LoadConfig::new(target);
    config.concurrency = concurrency;
    config.mode = mode;
    config.duration = Some(Duration::from_secs(120));
    config.max_requests = Some(5_000_000);
    config.request_timeout = Duration::from_secs(10);
    config
}

/// Starts a load on its own thread; stop it with [`Load::finish`].
pub fn start_configured_load(config: zd_load::load::LoadConfig) -> Load {
    let concurrency = config.concurrency;
    let stop = zd_load::load::StopSignal::new();
    let live = std::sync::Arc::new(zd_load::load::LiveCounters::default());
    let counters = live.clone();
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        runtime()
            .block_on(zd_load::load::run_with_counters(config, stopped, counters))
            .expect("load run")
    });
    let load = Load { stop, thread, live };
    // Wait for the first answers so that the load really runs before the test acts.
    wait_for("the load to start", || {
        (load.live.requests() >= concurrency as u64).then_some(())
    });
    load
}

impl Load {
    pub fn finish(self) -> zd_load::load::LoadReport {
        self.stop.stop();
        self.thread.join().expect("load thread")
    }
}

/// Asserts that not one request failed, listing the failures by kind otherwise.
pub fn assert_no_failures(report: &zd_load::load::LoadReport) {
    assert!(report.total() > 0, "the load sent no request");
    assert_eq!(
        report.failed(),
        0,
        "{} of {} requests failed: {:?}",
        report.failed(),
        report.total(),
        report.failures_by_kind()
    );
}

/// Says loudly that a test skipped part or all of what it checks, on the test process's
/// real stderr: libtest hides what `eprintln!` prints in a test that passes, so a skipped
/// test would look like a pass. Every skip also lands in `ZD_SKIPPED_LOG` when set.
pub fn say_skipped(message: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {message}\n");
    // A direct write, not `eprint!`: the test harness captures only the macros.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("ZD_SKIPPED_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// SIGKILL through a pidfd, which cannot reach a recycled pid.
pub fn kill_through(pidfd: &std::os::fd::OwnedFd) {
    // SAFETY: pidfd_send_signal with a pidfd we hold and no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(pidfd),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Kills a process this test saw when dropped, through a pidfd taken when it was seen (so
/// never a process that got its pid later): one that no supervisor of the environment
/// stops, like a generation adopted from a supervisor the test killed.
pub struct KillOnDrop(Option<std::os::fd::OwnedFd>);

impl KillOnDrop {
    pub fn new(pid: i32) -> KillOnDrop {
        KillOnDrop(zd_core::proc::pidfd(pid))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pidfd) = &self.0 {
            kill_through(pidfd);
        }
    }
}

/// The status of the supervisor whose control socket is `socket`, from any thread.
pub fn status_at(socket: &std::path::Path) -> Option<Status> {
    runtime().block_on(async move {
        let mut client = Client::connect(socket).await.ok()?;
        match client.call(Op::Status, |_| {}).await.ok()? {
            Reply::Result { result, .. } => match *result {
                ReplyResult::Status(s) => Some(*s),
                _ => None,
            },
            _ => None,
        }
    })
}
