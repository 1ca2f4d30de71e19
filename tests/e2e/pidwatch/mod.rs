//! pidwatch end-to-end tests: the real binary, the zd-flipper fixture, and real supervisors
//! and nginx from Debian packages where a test is about them.

mod child;
mod completions;
mod fallback;
mod flips;
mod harness;
mod nginx;
mod orphans;
mod pidfile;
mod status;
pub(crate) mod supervisors;

use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use harness::{TestEnv, flipper_bin, pidwatch_bin, read_pid, wait_for, wait_until};

/// pidwatch running a zd-flipper whose pid file is `app.pid` and log `app.log`.
struct Flipping {
    env: TestEnv,
    pidwatch: usize,
}

impl Flipping {
    /// Starts `pidwatch [pidwatch_args] --pidfile app.pid -- zd-flipper ... [flipper_args]`
    /// and waits until pidwatch follows the first generation.
    fn start(pidwatch_args: &[&str], flipper_args: &[&str]) -> Self {
        let mut this = Self::spawn(TestEnv::new(), pidwatch_args, flipper_args);
        this.followed();
        this
    }

    /// Starts pidwatch and the flipper in `env` without waiting for anything.
    fn spawn(mut env: TestEnv, pidwatch_args: &[&str], flipper_args: &[&str]) -> Self {
        let mut cmd = Command::new(pidwatch_bin());
        cmd.args(pidwatch_args)
            .arg("--pidfile")
            .arg(env.path("app.pid"))
            .arg("--")
            .arg(flipper_bin())
            .arg("--pidfile")
            .arg(env.path("app.pid"))
            .arg("--log")
            .arg(env.path("app.log"))
            .args(flipper_args);
        let pidwatch = env.spawn("pidwatch", &mut cmd);
        Self { env, pidwatch }
    }

    fn pidwatch_pid(&mut self) -> Pid {
        self.env.proc(self.pidwatch).pid()
    }

    fn signal_pidwatch(&mut self, signal: Signal) {
        self.env.proc(self.pidwatch).signal(signal);
    }

    fn log(&self) -> String {
        self.env.read("app.log")
    }

    /// Waits until pidwatch follows the pid in the pid file, and returns it.
    fn followed(&mut self) -> Pid {
        let pidfile = self.env.path("app.pid");
        let proc = self.env.proc(self.pidwatch);
        let pid = wait_for("pidwatch to follow the pid in the pid file", || {
            assert!(
                proc.is_running(),
                "pidwatch exited while it should follow the service"
            );
            let pid = read_pid(&pidfile)?;
            proc.stderr()
                .contains(&format!("following pid {pid}\n"))
                .then_some(pid)
        });
        self.env.track(pid);
        pid
    }

    /// Flips once by sending `signal` to pidwatch, which forwards it to the current process;
    /// waits until pidwatch follows the successor and the old process is gone.
    fn flip_with(&mut self, signal: Signal) -> Pid {
        let old = self.followed();
        self.signal_pidwatch(signal);
        let pidfile = self.env.path("app.pid");
        wait_until("the successor to write the pid file", || {
            read_pid(&pidfile).is_some_and(|p| p != old)
        });
        let new = self.followed();
        wait_until("the old generation to exit", || !harness::is_alive(old));
        new
    }

    fn count_received(&self, pid: Pid, signal: &str) -> usize {
        let wanted = format!("signal {signal}");
        harness::flipper_events(&self.log())
            .iter()
            .filter(|(p, e)| *p == pid && *e == wanted)
            .count()
    }

    /// Sends TERM to pidwatch and returns its exit code.
    fn stop(&mut self) -> i32 {
        self.signal_pidwatch(Signal::SIGTERM);
        self.env.proc(self.pidwatch).exit_code()
    }
}
