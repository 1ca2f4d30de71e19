//! A service file that cannot be read safely (a FIFO swapped in at its path, a file nested
//! thousands deep) fails the restart with a reason; the supervisor keeps answering and the
//! old generation keeps serving.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use crate::support::*;

/// Runs `zdctl restart api` and waits for it with the harness deadline (a restart that
/// hangs fails the test instead of hanging it); returns its exit code and stderr.
fn restart_within_deadline(env: &TestEnv) -> (Option<i32>, String) {
    let stderr_path = env.path("restart.stderr");
    let file = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = env
        .zdctl()
        .args(["restart", "api"])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn zdctl restart");
    let started = Instant::now();
    let status = wait_for("zdctl restart to end", || {
        child.try_wait().expect("try_wait")
    });
    eprintln!("zdctl restart ended after {:?}", started.elapsed());
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (status.code(), err)
}

/// The supervisor still answers, with the same active generation, and that generation
/// still serves.
fn assert_old_generation_serves(env: &TestEnv, old_pid: i32, addr: &str) {
    let after = env.status("api").expect("the supervisor answers status");
    assert_eq!(
        active_pid(&after),
        old_pid,
        "the old generation must keep serving"
    );
    assert_eq!(after.restarts.failed, 1, "{after:?}");
    let (code, body) = http_get(addr, "/").expect("GET /");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("pid={old_pid}")), "{body}");
}

fn swap_in_fifo(path: &Path) {
    std::fs::remove_file(path).expect("remove the service file");
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

#[test]
fn a_fifo_swapped_in_at_the_service_file_path_fails_the_restart_and_the_old_generation_serves() {
    let mut env = TestEnv::new();
    let file = env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let old_pid = active_pid(&status);
    let addr = address_of(&status);
    swap_in_fifo(&file);

    let (code, err) = restart_within_deadline(&env);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("restart of 'api' failed"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("named pipe"), "{err}");
    assert!(err.contains("regular file"), "{err}");
    assert_old_generation_serves(&env, old_pid, &addr);

    // Put a regular file back: the next restart works.
    std::fs::remove_file(&file).expect("remove the FIFO");
    env.fixture_service("api", &[], "");
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
}

#[test]
fn a_service_file_nested_50_thousand_deep_fails_the_restart_at_once_and_the_old_generation_serves()
{
    let mut env = TestEnv::new();
    let file = env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let old_pid = active_pid(&status);
    let addr = address_of(&status);
    // 100 KB: before the nesting cap the YAML parser spent 17 s on it, and the supervisor
    // answered nothing meanwhile.
    let good = std::fs::read_to_string(&file).expect("read");
    let deep = 50_000;
    std::fs::write(
        &file,
        format!("{good}env: {}x{}\n", "[".repeat(deep), "]".repeat(deep)),
    )
    .expect("write");

    let (code, err) = restart_within_deadline(&env);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("restart of 'api' failed"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("nests deeper than 64 levels"), "{err}");
    assert_old_generation_serves(&env, old_pid, &addr);
}
