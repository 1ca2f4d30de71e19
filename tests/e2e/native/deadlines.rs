//! A supervisor that does not answer (here: stopped with SIGSTOP) makes commands fail with
//! a message, never hang.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Runs `zdctl ARGS`, failing the test if it has not exited after a generous deadline
/// (the test checks that it exits, not how fast).
fn run_bounded(env: &TestEnv, args: &[&str]) -> Output {
    let mut child = env
        .zdctl()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zdctl");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > 3 * DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("zdctl {args:?} still waits on a stopped supervisor");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn status_and_restart_of_a_stopped_supervisor_fail_with_a_message_instead_of_hanging() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let pid = env.start("api", &["run", "api"]).supervisor_pid;
    let stopped = Stopped::new(pid);
    for args in [&["status", "api"][..], &["restart", "api"]] {
        let out = run_bounded(&env, args);
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "cannot control 'api': the supervisor (pid {pid}) did not answer on '{}' \
                 within 10s; it is stopped: resume it with 'kill -CONT {pid}'",
                env.socket("api").display()
            )),
            "{args:?}: {err}"
        );
    }
    drop(stopped);
    // Resumed, it answers again, and carries out the restart that was asked while it was
    // stopped (a restart goes on when its client leaves).
    wait_for("the restart asked meanwhile to complete", || {
        env.status("api")
            .filter(|s| s.restarts.completed == 1 && s.restart_in_progress.is_none())
    });
}
