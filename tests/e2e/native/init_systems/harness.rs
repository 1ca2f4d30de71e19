//! runsv or supervise over a service directory made from the run script shipped in
//! `contrib/`, started by a test and killed with everything under it when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use zd_core::proto::Status;

use crate::pidwatch::supervisors::{self as tools, Status as InitStatus};
use crate::support::*;

/// The service every test runs: `services.d/api.yaml`, in the service directory
/// `zdctl-api`, whose name the shipped run script turns into `zdctl run api`.
pub(super) const NAME: &str = "api";

#[derive(Debug, Clone, Copy)]
pub(super) enum Init {
    Runit,
    Daemontools,
}

impl Init {
    /// The process that supervises one service directory.
    fn supervisor(self) -> &'static str {
        match self {
            Init::Runit => "runsv",
            Init::Daemontools => "supervise",
        }
    }

    /// Every program a test runs, and the Debian package that has them.
    fn programs(self) -> (&'static [&'static str], &'static str) {
        match self {
            Init::Runit => (&["runsv", "sv"], "runit"),
            Init::Daemontools => (&["supervise", "svc", "svstat"], "daemontools"),
        }
    }

    /// The shipped run script.
    fn run_script(self) -> PathBuf {
        let dir = match self {
            Init::Runit => "runit",
            Init::Daemontools => "daemontools",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root")
            .join("contrib")
            .join(dir)
            .join("run")
    }

    /// The init system's own reload: a HUP to the supervised process.
    pub(super) fn reload(self) -> &'static [&'static str] {
        match self {
            Init::Runit => &["sv", "hup"],
            Init::Daemontools => &["svc", "-h"],
        }
    }

    /// The init system's own stop: TERM, then CONT, and no restart.
    pub(super) fn down(self) -> &'static [&'static str] {
        match self {
            Init::Runit => &["sv", "down"],
            Init::Daemontools => &["svc", "-d"],
        }
    }

    /// Down, and the init system's process exits once the service is.
    pub(super) fn exit(self) -> &'static [&'static str] {
        match self {
            Init::Runit => &["sv", "exit"],
            Init::Daemontools => &["svc", "-dx"],
        }
    }

    fn status(self, dir: &Path) -> Option<InitStatus> {
        match self {
            Init::Runit => tools::sv_status(dir),
            Init::Daemontools => tools::svstat(dir),
        }
    }
}

/// runsv or supervise over the service directory, started by the test in its own process
/// group with its output (and so the supervisor's) in a file. On drop, the whole tree is
/// frozen and killed, and so is every process the test named with [`Supervised::track`]
/// (a generation that outlived the supervisor that started it).
pub(super) struct Supervised {
    pub(super) init: Init,
    dir: PathBuf,
    child: Child,
    log: PathBuf,
    tracked: Vec<std::os::fd::OwnedFd>,
}

impl Supervised {
    /// Writes the service directory from the shipped run script (plus `finish`, when
    /// given: runsv runs it after each exit of `./run`) and starts the init system's
    /// supervisor over it; `None`, loudly, when the init system is not installed.
    pub(super) fn start(
        env: &TestEnv,
        init: Init,
        test: &str,
        finish: Option<&str>,
    ) -> Option<Supervised> {
        let (programs, package) = init.programs();
        let mut found = Vec::new();
        for program in programs {
            found.push(crate::drivers::peer(test, program, package)?);
        }
        let dir = env.path("zdctl-api");
        std::fs::create_dir_all(&dir).expect("service directory");
        // fs::copy keeps the mode: the script is executable in the repository.
        std::fs::copy(init.run_script(), dir.join("run")).expect("copy the run script");
        if let Some(finish) = finish {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join("finish");
            std::fs::write(&path, finish).expect("finish script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod finish");
        }
        let log = env.path(&format!("{}.log", init.supervisor()));
        let out = std::fs::File::create(&log).expect("log file");
        // The run script finds `zdctl` on PATH, as an installed one would be.
        let bin_dir = zdctl_bin().parent().expect("target dir").to_owned();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(&path)))
                .expect("PATH");
        let mut cmd = Command::new(&found[0]);
        cmd.arg(&dir)
            .env("PATH", path)
            .env("ZDCTL_RUNTIME_DIR", &env.runtime_dir)
            .env("ZDCTL_CONFIG_DIR", &env.config_dir)
            .env_remove("ZD_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("FDSTORE")
            .current_dir(env.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", init.supervisor()));
        Some(Supervised {
            init,
            dir,
            child,
            log,
            tracked: Vec::new(),
        })
    }

    /// Runs one of the init system's control commands (`sv hup`, `svc -d`…) on the
    /// service directory.
    pub(super) fn control(&self, command: &[&str]) {
        let out = Command::new(command[0])
            .args(&command[1..])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        assert_code(&out, 0);
    }

    /// The pid the init system runs the service as, once it says it is up.
    pub(super) fn service_pid(&self) -> Option<i32> {
        match self.init.status(&self.dir)? {
            InitStatus::Up { pid, .. } => Some(pid.as_raw()),
            InitStatus::Down => None,
        }
    }

    /// Waits until `zdctl run` answers with an active generation, as the very process the
    /// init system supervises (the run script exec'd it), and is not `not`.
    pub(super) fn wait_serving(&mut self, env: &TestEnv, not: Option<i32>) -> Status {
        wait_for("zdctl run, supervised, to serve", || {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("{} exited with {exit}", self.init.supervisor());
            }
            let pid = self.service_pid()?;
            let status = env.status(NAME)?;
            (status.active_generation.is_some() && status.supervisor_pid == pid && Some(pid) != not)
                .then_some(status)
        })
    }

    pub(super) fn wait_down(&self) {
        wait_for("the init system to report the service down", || {
            matches!(self.init.status(&self.dir), Some(InitStatus::Down)).then_some(())
        });
    }

    /// Stops the service through the init system and waits for its supervisor to exit.
    pub(super) fn exit(&mut self) {
        self.control(self.init.exit());
        let child = &mut self.child;
        wait_for("the init system's supervisor to exit", || {
            child.try_wait().expect("try_wait")
        });
    }

    /// Kills `pid` too when the test ends, through a pidfd taken now.
    pub(super) fn track(&mut self, pid: i32) {
        self.tracked
            .push(zd_core::proc::pidfd(pid).expect("a pidfd of a live process"));
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let root = i32::try_from(self.child.id()).expect("pid");
        if matches!(self.child.try_wait(), Ok(None)) {
            // Freeze the tree before killing any of it: a dead zdctl run would be started
            // again by the init system, a live one could start a generation meanwhile.
            let mut frozen: Vec<i32> = Vec::new();
            for _ in 0..10 {
                let new: Vec<i32> = descendants(root)
                    .into_iter()
                    .filter(|p| !frozen.contains(p))
                    .collect();
                if new.is_empty() {
                    break;
                }
                for pid in new {
                    // SAFETY: kill(2) on a process of the tree this test started, not
                    // reaped (its parent is frozen or is the test itself).
                    unsafe { libc::kill(pid, libc::SIGSTOP) };
                    frozen.push(pid);
                }
            }
            for pid in frozen {
                // SAFETY: as above; a frozen process keeps its pid and its group, and every
                // generation leads its own group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        for pidfd in &self.tracked {
            crate::support::kill_through(pidfd);
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} (zdctl run's output) ----\n{}",
                self.init.supervisor(),
                self.log()
            );
        }
    }
}
