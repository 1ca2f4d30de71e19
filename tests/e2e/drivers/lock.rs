//! One restart at a time for a driver, and the driver record behind `status`: against a
//! real start_server (Debian libserver-starter-perl) in front of zd-fixture.

use std::process::{Child, Command, Output, Stdio};

use super::{Peer, peer};
use crate::support::{TestEnv, assert_code, fixture_bin, stderr, stdout, wait_for};

/// start_server with `--interval=1`, so that each restart takes over a second: long
/// enough for a second zdctl to meet the first.
fn start_server(env: &TestEnv) -> Option<super::start_server::StartServer> {
    let program = peer("lock", "start_server", "libserver-starter-perl")?;
    let fixture = fixture_bin().display().to_string();
    Some(super::start_server::start(env, &program, &[&fixture]))
}

/// A zdctl started by the test: killed if the test ends before it does.
struct Running(Option<Child>);

impl Running {
    fn spawn(env: &TestEnv, args: &[&str]) -> Running {
        let child = env
            .zdctl()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zdctl");
        Running(Some(child))
    }

    fn finish(mut self) -> Output {
        self.0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait for zdctl")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn status_json(env: &TestEnv) -> serde_json::Value {
    let out = env.run_zdctl(&["status", "ss", "--json"]);
    assert_code(&out, 0);
    serde_json::from_str(&stdout(&out)).expect("status json")
}

#[test]
#[cfg_attr(
    not(has_start_server),
    ignore = "start_server not installed (Debian package libserver-starter-perl)"
)]
fn two_concurrent_restarts_of_a_driver_service_give_one_success_and_one_busy() {
    let env = TestEnv::new();
    let Some(_server) = start_server(&env) else {
        return;
    };
    let first = Running::spawn(&env, &["restart", "ss"]);
    let second = Running::spawn(&env, &["restart", "ss"]);
    let mut outs = [first.finish(), second.finish()];
    outs.sort_by_key(|o| o.status.code());
    assert_code(&outs[0], 0);
    assert_code(&outs[1], 1);
    let busy = stderr(&outs[1]);
    assert!(
        busy.contains("a restart of 'ss' is already running")
            && busy.contains("'zdctl restart ss --attach'"),
        "{busy}"
    );
    // The busy one was not counted: one restart requested, one completed.
    let status = status_json(&env);
    assert_eq!(status["restarts"]["requested"], 1, "{status}");
    assert_eq!(status["restarts"]["completed"], 1, "{status}");
}

#[test]
#[cfg_attr(
    not(has_start_server),
    ignore = "start_server not installed (Debian package libserver-starter-perl)"
)]
fn status_of_a_driver_service_counts_the_restarts_zdctl_made() {
    let env = TestEnv::new();
    let Some(_server) = start_server(&env) else {
        return;
    };
    let before = status_json(&env);
    assert_eq!(before["restarts"]["completed"], 0, "{before}");
    assert!(before["last_restart"].is_null(), "{before}");
    const N: u64 = 3;
    for _ in 0..N {
        assert_code(&env.run_zdctl(&["restart", "ss"]), 0);
    }
    let status = status_json(&env);
    assert_eq!(status["restarts"]["requested"], N, "{status}");
    assert_eq!(status["restarts"]["completed"], N, "{status}");
    assert_eq!(status["restarts"]["failed"], 0, "{status}");
    let last = &status["last_restart"];
    assert_eq!(last["restart"], N, "{status}");
    assert_eq!(last["outcome"], "completed", "{status}");
    assert_eq!(
        last["new_generation"], status["active_generation"],
        "{status}"
    );
    let text = stdout(&env.run_zdctl(&["status", "ss"]));
    assert!(
        text.contains("restarts: 3 requested, 3 completed, 0 rolled back, 0 failed\n"),
        "{text}"
    );
    assert!(text.contains("last restart: #3 completed"), "{text}");
    // The lock and the record are private files of the runtime directory.
    use std::os::unix::fs::MetadataExt;
    for file in ["ss.lock", "ss.driver"] {
        let meta = std::fs::symlink_metadata(env.runtime_dir.join(file)).expect(file);
        assert!(meta.is_file(), "{file}");
        assert_eq!(meta.mode() & 0o777, 0o600, "{file}");
    }
}

#[test]
#[cfg_attr(
    not(has_start_server),
    ignore = "start_server not installed (Debian package libserver-starter-perl)"
)]
fn restart_attach_follows_the_running_driver_restart_and_reports_its_outcome() {
    let env = TestEnv::new();
    let Some(_server) = start_server(&env) else {
        return;
    };
    let first = Running::spawn(&env, &["restart", "ss"]);
    wait_for("the first restart to hold the lock", || {
        status_json(&env)["restart_in_progress"].as_u64()
    });
    let attached = env.run_zdctl(&["restart", "ss", "--attach"]);
    assert_code(&first.finish(), 0);
    assert_code(&attached, 0);
    assert!(
        stdout(&attached).starts_with("restarted 'ss': generation "),
        "{}",
        stdout(&attached)
    );
    // It followed the running restart and started none of its own.
    let status = status_json(&env);
    assert_eq!(status["restarts"]["requested"], 1, "{status}");
    assert!(status["restart_in_progress"].is_null(), "{status}");
}

#[test]
fn a_process_started_outside_zdctl_is_the_next_generation_not_generation_one() {
    let env = TestEnv::new();
    let pidfile = env.path("svc.pid");
    env.write_service(
        "svc",
        &format!("driver: signal\npidfile: {}\n", pidfile.display()),
    );
    // A "supervisor" that is replaced by hand: one process, then another in the pidfile.
    let sleeper = |log: &str| {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        let peer = Peer::spawn(cmd, &env.path(log));
        std::fs::write(&pidfile, format!("{}\n", peer.pid())).expect("pidfile");
        peer
    };
    let generation = || {
        let out = env.run_zdctl(&["status", "svc", "--json"]);
        assert_code(&out, 0);
        let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        value["active_generation"].as_u64().expect("a generation")
    };
    let first = sleeper("first.log");
    assert_eq!(generation(), 1);
    assert_eq!(generation(), 1, "the same process keeps its number");
    drop(first);
    let _second = sleeper("second.log");
    assert_eq!(generation(), 2);
    assert_eq!(generation(), 2, "the same process keeps its number");
}
