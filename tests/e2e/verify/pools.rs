//! `zdctl verify` of pools and bake windows: the capacity it samples, and `--bake`, which
//! reverts every restart during its window.

use super::verify_json;
use crate::support::*;

/// Waits until all `n` instances of the active generation serve.
fn wait_capacity(env: &TestEnv, name: &str, n: u32) {
    wait_for("every instance to serve", || {
        env.status(name).filter(|s| s.capacity == Some(n))
    });
}

#[test]
fn verify_with_bake_reverts_every_restart_and_loses_no_request() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "bake: 30s\n");
    let status = env.start("api", &["run", "api"]);
    let (generation, pid) = (status.active_generation, active_pid(&status));
    let url = format!("http://{}/", address_of(&status));
    let out = env.run_zdctl(&["verify", "api", "--url", &url, "--restarts", "3", "--bake"]);
    let text = stdout(&out);
    assert_code(&out, 0);
    assert!(text.contains("PASS"), "{text}");
    assert!(
        text.contains("3 restarts, 3 reverted during bake, 0 failed requests"),
        "{text}"
    );
    assert!(text.contains("flips      3/3 completed"), "{text}");
    // Every restart came back to the generation that served before the run.
    let after = env.status("api").expect("status");
    assert_eq!(after.active_generation, generation);
    assert_eq!(active_pid(&after), pid);
    assert!(after.bake.is_none());
    assert_eq!(
        (after.restarts.completed, after.restarts.rolled_back),
        (0, 3),
        "{:?}",
        after.restarts
    );
}

#[test]
fn verify_with_bake_reports_the_reverts_in_json() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "bake: 30s\n");
    let status = env.start("api", &["run", "api"]);
    let url = format!("http://{}/", address_of(&status));
    let (out, report) = verify_json(&env, &["api", "--url", &url, "--restarts", "2", "--bake"]);
    assert_code(&out, 0);
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["bake"]["restarts"], 2, "{report:#}");
    assert_eq!(report["bake"]["reverted"], 2, "{report:#}");
    assert_eq!(
        report["bake"]["generation"],
        status.active_generation.expect("generation"),
        "{report:#}"
    );
    assert_eq!(report["bake"]["pid"], active_pid(&status), "{report:#}");
    assert_eq!(report["passed"], true);
}

#[test]
fn verify_with_bake_of_a_service_without_a_bake_window_is_a_usage_error() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let url = format!("http://{}/", address_of(&status));
    let out = env.run_zdctl(&["verify", "api", "--url", &url, "--restarts", "1", "--bake"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("add 'bake:'"), "{}", stderr(&out));
    // Nothing was restarted.
    let after = env.status("api").expect("status");
    assert_eq!(after.active_generation, status.active_generation);
}

#[test]
fn verify_of_three_instances_sees_three_serving_throughout() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "instances: 3\n");
    let status = env.start("api", &["run", "api"]);
    wait_capacity(&env, "api", 3);
    let url = format!("http://{}/", address_of(&status));
    let (out, report) = verify_json(&env, &["api", "--url", &url, "--restarts", "3"]);
    assert_code(&out, 0);
    assert_eq!(report["failed"], 0, "{report:#}");
    let capacity = &report["capacity"];
    assert_eq!(capacity["instances"], 3, "{report:#}");
    assert_eq!(capacity["min"], 3, "{report:#}");
    assert!(capacity["max"].as_u64().unwrap_or(0) >= 3, "{report:#}");
    assert_eq!(capacity["below_samples"], 0, "{report:#}");
    assert!(capacity["samples"].as_u64().unwrap_or(0) > 5, "{report:#}");
}

#[test]
fn verify_of_one_instance_reports_its_capacity_in_text() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    wait_capacity(&env, "api", 1);
    let url = format!("http://{}/", address_of(&status));
    let out = env.run_zdctl(&["verify", "api", "--url", &url, "--restarts", "2"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("capacity   1 of 1 instances serving or more throughout"),
        "{text}"
    );
    assert!(!text.contains("warning"), "{text}");
}
