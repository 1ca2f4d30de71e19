//! Bad input gets a clear error, exit 2, and changes nothing.

use crate::support::*;

fn run_file_expect_usage_error(env: &TestEnv, file: &std::path::Path, wanted: &[&str]) {
    let out = env.run_zdctl(&["run", "-c", file.to_str().expect("utf-8")]);
    assert_code(&out, 2);
    let err = stderr(&out);
    for w in wanted {
        assert!(err.contains(w), "expected '{w}' in: {err}");
    }
    // Nothing was left running or bound.
    assert_eq!(
        std::fs::read_dir(&env.runtime_dir)
            .expect("runtime")
            .count(),
        0,
        "{err}"
    );
}

#[test]
fn invalid_yaml_is_a_usage_error_naming_file_line_and_column() {
    let env = TestEnv::new();
    let f = env.write_service("bad", "command: [a, b\nlisten: [127.0.0.1:0]\n");
    run_file_expect_usage_error(&env, &f, &[&format!("{}:", f.display())]);
}

#[test]
fn unknown_key_is_a_usage_error_with_a_did_you_mean_hint() {
    let env = TestEnv::new();
    let f = env.write_service(
        "bad",
        "command: [/bin/true]\nlisten:\n  - 127.0.0.1:0\ndrain_timout: 5s\n",
    );
    run_file_expect_usage_error(
        &env,
        &f,
        &[&format!("{}:4:1", f.display()), "drain_timeout"],
    );
}

#[test]
fn bad_address_is_a_usage_error_naming_its_line() {
    let env = TestEnv::new();
    let f = env.write_service(
        "bad",
        "command: [/bin/true]\nlisten:\n  - 127.0.0.1:99999\n",
    );
    run_file_expect_usage_error(
        &env,
        &f,
        &[&format!("{}:3:", f.display()), "127.0.0.1:99999"],
    );
}

#[test]
fn port_already_in_use_is_a_usage_error_and_starts_nothing() {
    let env = TestEnv::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let f = env.write_service(
        "bad",
        &format!(
            "command: [{:?}]\nlisten:\n  - {addr}\n",
            fixture_bin().display().to_string()
        ),
    );
    run_file_expect_usage_error(&env, &f, &[&addr, "in use"]);
}

#[test]
fn missing_command_is_a_usage_error() {
    let env = TestEnv::new();
    let f = env.write_service(
        "bad",
        "command: [/nonexistent/zd-server]\nlisten:\n  - 127.0.0.1:0\n",
    );
    run_file_expect_usage_error(
        &env,
        &f,
        &["/nonexistent/zd-server", &format!("{}:", f.display())],
    );
}

#[test]
fn non_executable_command_is_a_usage_error() {
    let env = TestEnv::new();
    let script = env.path("server.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
    let f = env.write_service(
        "bad",
        &format!(
            "command: [{:?}]\nlisten:\n  - 127.0.0.1:0\n",
            script.display().to_string()
        ),
    );
    run_file_expect_usage_error(&env, &f, &[&script.display().to_string(), "executable"]);
}

#[test]
fn unreadable_service_file_is_a_usage_error() {
    let env = TestEnv::new();
    let missing = env.path("nope.yaml");
    let out = env.run_zdctl(&["run", "-c", missing.to_str().expect("utf-8")]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn restart_of_an_unknown_service_exits_3_and_names_where_it_looked() {
    let env = TestEnv::new();
    let out = env.run_zdctl(&["restart", "ghost"]);
    assert_code(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("ghost"), "{err}");
    assert!(err.contains(&env.config_dir.display().to_string()), "{err}");
    assert!(
        err.contains(&env.runtime_dir.display().to_string()),
        "{err}"
    );
}
