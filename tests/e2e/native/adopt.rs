//! Adoption after a crash: `kill -9` of `zdctl run`, then a new `zdctl run` of the same
//! service (as systemd or runit would start it) takes the listeners from the generation
//! that was serving and carries on, and no client is refused meanwhile.

use zd_load::load::ConnectionMode;

use crate::support::*;

fn kill9(pid: i32) {
    // SAFETY: kill(2) of the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn crash_then_adopt_under_load(mode: ConnectionMode) {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "drain_timeout: 10s\n");
    let first = env.start("api", &["run", "api"]);
    let addr = address_of(&first);
    let serving = active_pid(&first);
    let _generation = KillOnDrop::new(serving);
    let inodes: Vec<u64> = first.listeners.iter().map(|l| l.inode).collect();
    let load = start_load(&addr, 32, mode);

    kill9(first.supervisor_pid);
    assert_eq!(env.wait_exit("api"), None, "killed by a signal");
    // The generation serves on alone, and clients keep coming meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, body) = http_get(&addr, "/").expect("served while no supervisor runs");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("pid={serving}")), "{body}");

    let adopted = env.start("api", &["run", "api"]);
    assert_ne!(adopted.supervisor_pid, first.supervisor_pid);
    assert_eq!(
        active_pid(&adopted),
        serving,
        "the generation that was serving"
    );
    assert_eq!(adopted.active_generation, first.active_generation);
    let got: Vec<u64> = adopted.listeners.iter().map(|l| l.inode).collect();
    assert_eq!(got, inodes, "the same listening sockets");
    let me = adopted.supervisor.clone().expect("supervisor info");
    let info = me.adopted.expect("adopted");
    assert_eq!(info.from_pid, first.supervisor_pid);
    assert_eq!(info.generations, vec![1]);
    let text = stdout(&env.run_zdctl(&["status", "api"]));
    assert!(
        text.contains(&format!(
            "adopted: generation 1 from supervisor pid {}",
            first.supervisor_pid
        )),
        "{text}"
    );

    for i in 0..5u64 {
        let out = env.run_zdctl(&["restart", "api"]);
        assert_code(&out, 0);
        let status = env.status("api").expect("status");
        assert_eq!(status.active_generation, Some(i + 2));
    }
    // The adopted generation was drained by the first restart: it is gone.
    assert!(
        !is_alive(serving) || zd_core::proc::state(serving).is_ok_and(|s| s == 'Z'),
        "pid {serving} still runs"
    );
    let report = load.finish();
    assert_no_failures(&report);
    let status = env.status("api").expect("status");
    assert_eq!(status.restarts.completed, 5);
    let out = env.run_zdctl(&["stop", "api"]);
    assert_code(&out, 0);
    assert!(
        !env.runtime_dir.join("api.state").exists(),
        "a clean stop leaves nothing to adopt"
    );
}

#[test]
fn after_kill_9_of_the_supervisor_a_new_run_adopts_the_serving_generation_with_a_new_connection_per_request()
 {
    crash_then_adopt_under_load(ConnectionMode::Close);
}

#[test]
fn after_kill_9_of_the_supervisor_a_new_run_adopts_the_serving_generation_with_keepalive() {
    crash_then_adopt_under_load(ConnectionMode::KeepAlive);
}

#[test]
fn the_state_file_of_a_supervisor_that_still_runs_is_never_touched() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let first = env.start("api", &["run", "api"]);
    let state = env.runtime_dir.join("api.state");
    let before = std::fs::read(&state).expect("a state file");
    // Its control socket gone (removed by hand), the supervisor itself still runs.
    std::fs::remove_file(env.socket("api")).expect("remove the control socket");
    let out = env.run_zdctl(&["run", "api"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "its supervisor (pid {}) still runs",
            first.supervisor_pid
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).expect("the state file"), before);
    let (code, _) = http_get(&address_of(&first), "/").expect("still served");
    assert_eq!(code, 200);
}

#[test]
fn without_a_live_generation_a_new_run_starts_afresh() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let first = env.start("api", &["run", "api"]);
    let serving = active_pid(&first);
    kill9(first.supervisor_pid);
    kill9(serving);
    assert_eq!(env.wait_exit("api"), None);
    wait_for("the generation to be gone", || {
        (!is_alive(serving) || zd_core::proc::state(serving).is_ok_and(|s| s == 'Z')).then_some(())
    });
    let second = env.start("api", &["run", "api"]);
    assert_ne!(active_pid(&second), serving);
    assert!(
        second
            .supervisor
            .as_ref()
            .and_then(|s| s.adopted.as_ref())
            .is_none(),
        "nothing to adopt"
    );
    let (code, _) = http_get(&address_of(&second), "/").expect("served");
    assert_eq!(code, 200);
}
