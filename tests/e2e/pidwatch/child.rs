//! What the command inherits from pidwatch: no blocked signal, no ignored signal and no
//! descriptor that pidwatch opened for itself. pidwatch blocks every signal to read them from
//! a signalfd; a command that inherited that mask would never act on the TERM pidwatch
//! forwards. Go and nginx reset their mask at startup, most programs (coreutils, Python, a
//! shell's children) do not, so these tests use the latter.

use std::fs;
use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::harness::{
    TestEnv, descendants, is_alive, peers_available, pidwatch_bin, wait_for, wait_until,
};

/// `sh -c` that starts its arguments with HUP, INT and QUIT ignored, as `nohup` and a
/// non-interactive shell's background jobs do.
const IGNORING: &str = "trap '' HUP INT QUIT; exec \"$@\"";

/// The `SigBlk` and `SigIgn` lines a program printed from its `/proc/self/status`.
fn signal_state(report: &str) -> (String, String) {
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} line in {report:?}"))
            .trim()
            .to_owned()
    };
    (field("SigBlk:"), field("SigIgn:"))
}

fn all_zero(mask: &str) -> bool {
    !mask.is_empty() && mask.chars().all(|c| c == '0')
}

const REPORT_SIGNALS: [&str; 4] = ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"];

#[test]
fn the_command_starts_with_no_signal_blocked_or_ignored() {
    let mut env = TestEnv::new();
    // The wrapper does what it claims: a program it starts directly has signals ignored, so
    // pidwatch below starts with them ignored too.
    let mut direct = Command::new("sh");
    direct.args(["-c", IGNORING, "sh"]).args(REPORT_SIGNALS);
    let index = env.spawn("direct", &mut direct);
    assert_eq!(env.proc(index).exit_code(), 0);
    let (_, ignored) = signal_state(&env.read("direct.stdout"));
    assert!(
        !all_zero(&ignored),
        "the wrapper ignored nothing: {ignored}"
    );

    let mut cmd = Command::new("sh");
    cmd.args(["-c", IGNORING, "sh"])
        .arg(pidwatch_bin())
        .arg("--pidfile")
        .arg(env.path("app.pid"))
        .arg("--")
        .args(REPORT_SIGNALS);
    let index = env.spawn("pidwatch", &mut cmd);
    // The command exits 0 without writing a pid: pidwatch relays that.
    assert_eq!(env.proc(index).exit_code(), 0);
    let (blocked, ignored) = signal_state(&env.read("pidwatch.stdout"));
    assert!(
        all_zero(&blocked),
        "the command started with SigBlk {blocked}"
    );
    assert!(
        all_zero(&ignored),
        "the command started with SigIgn {ignored}"
    );
}

/// The pid of pidwatch's child once it has executed `program` (before exec it still has
/// pidwatch's name).
fn command_pid(pidwatch: Pid, program: &str) -> Pid {
    wait_for(&format!("pidwatch to start {program}"), || {
        descendants(pidwatch).into_iter().find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == program)
        })
    })
}

/// pidwatch over `sleep 600`, following the sleep once the test has written its pid to the
/// pid file (sleep cannot write one itself). Returns the index of pidwatch and the sleep's
/// pid.
fn pidwatch_over_sleep(env: &mut TestEnv) -> (usize, Pid) {
    let pidfile = env.path("app.pid");
    let mut cmd = Command::new(pidwatch_bin());
    cmd.arg("--pidfile")
        .arg(&pidfile)
        .arg("--")
        .args(["sleep", "600"]);
    let index = env.spawn("pidwatch", &mut cmd);
    let pidwatch = env.proc(index).pid();
    let sleep = command_pid(pidwatch, "sleep");
    env.track(sleep);
    fs::write(&pidfile, format!("{sleep}\n")).expect("write the pid file");
    wait_until("pidwatch to follow the sleep", || {
        let proc = env.proc(index);
        assert!(proc.is_running(), "pidwatch exited while following");
        proc.stderr().contains(&format!("following pid {sleep}\n"))
    });
    (index, sleep)
}

#[test]
fn term_to_pidwatch_stops_a_command_that_keeps_the_default_action_of_term() {
    let mut env = TestEnv::new();
    let (index, sleep) = pidwatch_over_sleep(&mut env);
    env.proc(index).signal(Signal::SIGTERM);
    // The sleep died of the TERM pidwatch forwarded, and pidwatch relays that as 128+15.
    assert_eq!(
        env.proc(index).exit_code(),
        128 + Signal::SIGTERM as i32,
        "{}",
        env.proc(index).stderr()
    );
    assert!(!is_alive(sleep));
}

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn term_to_pidwatch_stops_a_python_service() {
    if !peers_available("term_to_pidwatch_stops_a_python_service", &["python3"]) {
        return;
    }
    let mut env = TestEnv::new();
    let pidfile = env.path("app.pid");
    // The service of the bug report: writes its pid file, then sleeps with Python's default
    // handling of TERM.
    let service = "import os, sys, time\n\
                   with open(sys.argv[1], 'w') as f:\n    f.write('%d\\n' % os.getpid())\n\
                   time.sleep(600)\n";
    let mut cmd = Command::new(pidwatch_bin());
    cmd.arg("--pidfile")
        .arg(&pidfile)
        .arg("--")
        .args(["python3", "-c", service])
        .arg(&pidfile);
    let index = env.spawn("pidwatch", &mut cmd);
    let python = wait_for("pidwatch to follow the python service", || {
        let proc = env.proc(index);
        assert!(proc.is_running(), "pidwatch exited before following");
        let stderr = proc.stderr();
        let line = stderr.lines().find(|l| l.contains("following pid "))?;
        line.rsplit(' ').next()?.parse().ok().map(Pid::from_raw)
    });
    env.track(python);
    env.proc(index).signal(Signal::SIGTERM);
    assert_eq!(
        env.proc(index).exit_code(),
        128 + Signal::SIGTERM as i32,
        "{}",
        env.proc(index).stderr()
    );
    assert!(!is_alive(python));
}

/// What each descriptor of `pid` refers to, as `/proc/PID/fd` links show it.
fn fd_targets(pid: Pid) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_command_inherits_no_descriptor_that_pidwatch_opened_for_itself() {
    let mut env = TestEnv::new();
    let (index, sleep) = pidwatch_over_sleep(&mut env);
    let pidwatch = env.proc(index).pid();
    let dir = env.path("app.pid");
    let dir = dir.parent().map(Path::display).map(|d| d.to_string());
    // pidwatch's own: the signalfd, the followed process's pidfd, the pid file's directory
    // (dnotify), and an inotify instance should it ever use one. (`anon_inode:[pidfd]` today;
    // matched loosely in case a kernel names them differently.)
    let its_own = |target: &str| {
        ["signalfd", "pidfd", "inotify"]
            .iter()
            .any(|kind| target.contains(kind))
            || Some(target) == dir.as_deref()
    };
    let held = fd_targets(pidwatch);
    assert!(
        held.iter().filter(|t| its_own(t)).count() >= 3,
        "pidwatch does not hold the descriptors this test looks for: {held:?}"
    );
    let leaked: Vec<String> = fd_targets(sleep)
        .into_iter()
        .filter(|t| its_own(t))
        .collect();
    assert!(leaked.is_empty(), "the command inherited {leaked:?}");
}
