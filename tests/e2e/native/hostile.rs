//! A hostile local user and faults: the runtime directory, the notify socket, recycled pids,
//! processes a generation leaves behind, and what `stop` leaves open. The other-user cases
//! run a helper as `nobody` and need root (as CI is); elsewhere they skip loudly.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Lets `nobody` traverse the test's directory (tempdirs are 0700).
fn open_to_others(env: &TestEnv) {
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod test dir");
}

/// Kills a helper process when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_runtime_dir_another_user_created_is_refused_with_what_to_do() {
    let env = TestEnv::new();
    env.fixture_service("api", &[], "");
    // World-writable, as a pre-created /tmp/zdctl-UID would be.
    std::fs::set_permissions(&env.runtime_dir, std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let out = env.run_zdctl(&["run", "api"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("writable by everyone"),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.socket("api").exists(),
        "a socket was bound in the hostile directory"
    );

    if !is_root() {
        say_skipped("the other-owner half of this test needs root to chown");
        return;
    }
    std::fs::set_permissions(&env.runtime_dir, std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    std::os::unix::fs::chown(&env.runtime_dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    let out = env.run_zdctl(&["run", "api"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(err.contains("ZDCTL_RUNTIME_DIR"), "{err}");
}

/// A loop, as `nobody`, that sends `message` to every notify socket in `dir` for at most
/// `limit`.
fn spam_notify(dir: &std::path::Path, message: &str, limit: Duration) -> Killed {
    let script = format!(
        r#"
import glob, socket, time
end = time.time() + {secs}
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
while time.time() < end:
    for p in glob.glob({dir:?} + "/*.notify"):
        try:
            s.sendto({message:?}.encode(), p)
        except OSError:
            pass
    time.sleep(0.005)
"#,
        secs = limit.as_secs_f64(),
        dir = dir.display().to_string(),
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 as nobody");
    Killed(child)
}

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn another_user_cannot_fake_readiness_or_fail_a_restart_through_the_notify_socket() {
    if !is_root() {
        say_skipped("needs root to run the attacker as another uid");
        return;
    }
    let mut env = TestEnv::new();
    open_to_others(&env);
    // A generation that never says READY=1: only a forged datagram could make it "ready".
    env.fixture_service("api", &[], "ready:\n  checks: [notify]\n  timeout: 3s\n");
    let status = env.start("api", &["run", "api"]);
    let old = active_pid(&status);
    let _attacker = spam_notify(&env.runtime_dir, "READY=1", Duration::from_secs(20));
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not ready within"),
        "{}",
        stderr(&out)
    );
    assert!(
        is_alive(old),
        "the old generation was drained on a forged READY=1"
    );
    assert!(
        env.log("api").contains("ignored a notify datagram"),
        "{}",
        env.log("api")
    );
}

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn another_users_errno_does_not_roll_back_a_generation_that_is_ready() {
    if !is_root() {
        say_skipped("needs root to run the attacker as another uid");
        return;
    }
    let mut env = TestEnv::new();
    open_to_others(&env);
    // The fixture takes a moment before it notifies: long enough for forged ERRNOs to land.
    env.fixture_service(
        "api",
        &["--notify", "--start-delay", "500ms"],
        "ready:\n  checks: [notify]\n  timeout: 20s\n",
    );
    env.start("api", &["run", "api"]);
    let _attacker = spam_notify(&env.runtime_dir, "ERRNO=13", Duration::from_secs(20));
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 0);
}

#[test]
fn notify_sockets_are_private_when_the_runtime_dir_is() {
    let mut env = TestEnv::new();
    std::fs::set_permissions(&env.runtime_dir, std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let notify = env.runtime_dir.join("api.1.notify");
    let mode = std::fs::metadata(&notify)
        .expect("notify socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "notify socket mode {mode:o}");
}

/// The processes of a generation, read from its pid's tree now.
fn tree_of(pid: i32) -> Vec<i32> {
    descendants(pid)
}

fn leftover_service(env: &TestEnv, name: &str, extra: &str) {
    // The app's shell starts a helper in a session of its own, then becomes the app: the
    // helper keeps fd 3 (the listener) open and belongs to no process group of ours.
    let yaml = format!(
        "command: [\"sh\", \"-c\", \"setsid sleep 1000 & exec {}\"]\nlisten:\n  - http=127.0.0.1:0\n{extra}",
        fixture_bin().display()
    );
    env.write_service(name, &yaml);
}

fn leftovers_end_with_their_generation(cgroups: bool) {
    let mut env = TestEnv::new();
    leftover_service(&env, "api", "");
    let mut cmd = env.zdctl();
    cmd.args(["-v", "run", "api"]);
    if !cgroups {
        cmd.env("ZDCTL_CGROUPS", "off");
    }
    let status = env.start_command("api", cmd);
    let containment = status.containment.clone().unwrap_or_default();
    if cgroups {
        assert!(containment.starts_with("cgroup:/"), "{containment}");
    } else {
        assert_eq!(containment, "process-group");
    }
    let first = active_pid(&status);
    let helpers = wait_for("the setsid helper", || {
        let t = tree_of(first);
        (t.len() >= 2).then_some(t)
    });
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 0);
    for pid in &helpers {
        wait_for(&format!("pid {pid} of generation 1 to be gone"), || {
            (!is_alive(*pid)).then_some(())
        });
    }
    let second = active_pid(&env.status("api").expect("status"));
    let helpers = wait_for("the second setsid helper", || {
        let t = tree_of(second);
        (t.len() >= 2).then_some(t)
    });
    assert_code(&env.run_zdctl(&["stop", "api"]), 0);
    for pid in &helpers {
        assert!(!is_alive(*pid), "pid {pid} outlived 'zdctl stop'");
    }
    // The port is free again: the same service starts at once.
    env.start("api", &["run", "api"]);
}

#[test]
fn processes_a_generation_left_behind_end_with_it_in_its_cgroup() {
    if !is_root() {
        say_skipped("cgroups are writable only for root here");
        return;
    }
    leftovers_end_with_their_generation(true);
}

#[test]
fn processes_a_generation_left_behind_end_with_it_without_cgroups() {
    leftovers_end_with_their_generation(false);
}

#[test]
fn stop_then_run_on_the_same_port_never_meets_address_in_use() {
    let mut env = TestEnv::new();
    let port = port_outside_the_ephemeral_range();
    let unix = env.path("api.sock");
    leftover_service(&env, "api", &format!("  - unix:{}\n", unix.display()));
    let yaml = std::fs::read_to_string(env.config_dir.join("api.yaml")).expect("yaml");
    env.write_service(
        "api",
        &yaml.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    for round in 0..5 {
        env.start("api", &["run", "api"]);
        let out = env.run_zdctl(&["stop", "api"]);
        assert_code(&out, 0);
        assert!(
            !unix.exists(),
            "round {round}: the unix listener's file is still there"
        );
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "round {round}: port {port} is still bound after 'zdctl stop' returned"
        );
    }
}

/// A free port below the kernel's ephemeral range: between the rounds of a test that
/// reuses one port, the load of the tests that run beside it must not take it as the
/// source port of a connection (with a connection per request they go through the whole
/// ephemeral range in seconds).
fn port_outside_the_ephemeral_range() -> u16 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(32768);
    let start = u16::try_from(std::process::id() % 5000).unwrap_or(0);
    (0..low.saturating_sub(11000))
        .map(|i| 10000 + (start + i) % low.saturating_sub(10000))
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// Starts `sleep` in a session of its own with pid `want`, by setting the kernel's last pid
/// just below it (root only). Other processes fork meanwhile, so it may take a few tries.
fn stranger_with_pid(want: i32) -> Option<Killed> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", want - 1)).ok()?;
        let mut cmd = Command::new("sleep");
        cmd.arg("60").stdin(Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().ok()?;
        if child.id() as i32 == want {
            return Some(Killed(child));
        }
        drop(Killed(child));
    }
    None
}

#[test]
fn stop_never_signals_a_process_that_reused_an_exited_generations_pid() {
    if !is_root() {
        say_skipped("needs root to choose the next pid");
        return;
    }
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let old = active_pid(&status);
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    wait_for("generation 1 to be reaped", || {
        (!std::path::Path::new(&format!("/proc/{old}")).exists()).then_some(())
    });
    let Some(mut stranger) = stranger_with_pid(old) else {
        say_skipped(&format!(
            "could not start a process with pid {old} (the machine forks too fast)"
        ));
        return;
    };
    // It leads a session and group of its own whose id is the exited generation's pid.
    assert_code(&env.run_zdctl(&["stop", "api"]), 0);
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        assert!(
            stranger.0.try_wait().expect("try_wait").is_none(),
            "'zdctl stop' killed pid {old}, which no longer belonged to the service"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_unwritable_pidfile_rolls_the_restart_back() {
    let mut env = TestEnv::new();
    let dir = env.path("piddir");
    std::fs::create_dir(&dir).expect("mkdir");
    let pidfile = dir.join("api.pid");
    env.fixture_service("api", &[], &format!("pidfile: {}\n", pidfile.display()));
    let status = env.start("api", &["run", "api"]);
    let old = active_pid(&status);
    // Even root cannot create a file in a directory that became a regular file.
    std::fs::remove_dir_all(&dir).expect("rm");
    std::fs::write(&dir, "not a directory").expect("file in its place");
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("pidfile"), "{err}");
    assert!(err.contains("old generation keeps serving"), "{err}");
    let s = env.status("api").expect("status");
    assert_eq!(active_pid(&s), old);
    assert!(is_alive(old));
}
