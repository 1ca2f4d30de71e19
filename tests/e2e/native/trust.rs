//! Who may answer, and who may ask: clients refuse a control socket that another user
//! serves, and a user the socket is closed to is told so.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// `nobody` on Debian: a user that is neither root nor the tests' own.
const NOBODY: u32 = 65534;

fn running_as_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        say_skipped(&format!(
            "{test} needs root to run processes as another user"
        ));
    }
    root
}

/// Lets other users reach `path` and everything under it: the directories of this test's
/// own temp dir (never above it) become searchable and readable, and `path` itself mode
/// `mode`.
fn open_up(env: &TestEnv, path: &Path, mode: u32) {
    for dir in path.ancestors().skip(1) {
        if !dir.starts_with(env.dir.path()) {
            break;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The fake control server, run as `nobody`; killed when the test ends.
struct Fake(Child);

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn clients_refuse_a_control_socket_served_by_another_user_before_sending_anything() {
    if !running_as_root("clients_refuse_a_control_socket_served_by_another_user") {
        return;
    }
    let env = TestEnv::new();
    env.fixture_service("api", &[], "");
    open_up(&env, &env.config_dir, 0o755);
    // A runtime directory that another user can write to: the mistake the check is for.
    open_up(&env, &env.runtime_dir, 0o777);
    let socket = env.socket("api");
    let log = env.runtime_dir.join("fake.log");
    let mut fake = Fake(
        Command::new(env!("CARGO_BIN_EXE_zd-fake-control"))
            .arg(&socket)
            .arg(&log)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the fake server"),
    );
    let mut ready = String::new();
    std::io::BufReader::new(fake.0.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("read");
    assert_eq!(ready.trim(), "ready", "the fake server did not start");

    for command in [
        &["status", "api"][..],
        &["restart", "api"],
        &["stop", "api"],
    ] {
        let out = env.run_zdctl(command);
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "cannot control 'api': refusing the control socket '{}': it is served by uid \
                 65534",
                socket.display()
            )),
            "{command:?}: {err}"
        );
        assert!(
            err.contains(
                "check who owns that directory and that only root or uid 0 can write to it"
            ),
            "{command:?}: {err}"
        );
        assert!(!stdout(&out).contains("restarted"), "{}", stdout(&out));
    }
    // Refused before a request was sent: the fake heard nothing.
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "");
}

#[test]
fn a_user_the_socket_is_closed_to_is_told_permission_denied_and_who_owns_it() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    if !running_as_root("a_user_the_socket_is_closed_to_is_told_permission_denied") {
        return;
    }
    // Everything is reachable but the socket itself, which stays 0600 as the supervisor
    // made it.
    open_up(&env, &env.config_dir.join("api.yaml"), 0o644);
    let socket = env.socket("api");
    open_up(&env, &socket, 0o600);
    let out = env
        .zdctl()
        .args(["status", "api"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("zdctl as nobody");
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "permission denied on the control socket '{}', which belongs to uid 0 (root): \
             only root may control this service; run the command as root",
            socket.display()
        )),
        "{err}"
    );
    assert!(!err.contains("no service named"), "{err}");
}
