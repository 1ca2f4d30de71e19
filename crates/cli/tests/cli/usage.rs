//! Mistakes on the command line exit 2 with a message that says what to do, before any
//! supervisor is contacted.

use crate::fake::{TestEnv, assert_code, stderr};

#[test]
fn a_duration_without_a_unit_exits_2() {
    let out = TestEnv::new().zdctl(&["restart", "api", "--timeout", "5"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("duration '5' has no unit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_signal_exits_2_without_contacting_the_supervisor() {
    let out = TestEnv::new().zdctl(&["signal", "api", "SIGNOPE"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("unknown signal 'SIGNOPE'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_flags_form_without_a_command_exits_2() {
    let out = TestEnv::new().zdctl(&["run", "--name", "api", "--listen", "127.0.0.1:0"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("missing the command to run for 'api'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_without_a_service_exits_2() {
    let out = TestEnv::new().zdctl(&["run"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("say which service to run"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_config_file_mixed_with_listen_flags_exits_2() {
    let out = TestEnv::new().zdctl(&["run", "-c", "api.yaml", "--listen", ":8080"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_service_name_mixed_with_a_command_exits_2() {
    let out = TestEnv::new().zdctl(&["run", "api", "--", "/bin/true"]);
    assert_code(&out, 2);
}

#[test]
fn run_of_an_unknown_service_file_exits_2() {
    let env = TestEnv::new();
    let out = env.zdctl(&["run", "nosuch"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("no service named 'nosuch'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_service_file_exits_2_with_its_location() {
    let env = TestEnv::new();
    let path = env.service_file("api", "comand: [\"/bin/true\"]\n");
    let out = env.zdctl(&["run", "-c", &path.display().to_string()]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(&format!("{}:1:", path.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_service_name_exits_2() {
    let out = TestEnv::new().zdctl(&["restart", "../etc"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("invalid service name '../etc'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    // `zdctl completions bash | head -0`: stdout is closed before zdctl writes, so the
    // write fails with EPIPE (Rust ignores SIGPIPE); that must exit 0, not panic (101).
    let mut child = TestEnv::new()
        .command(&["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zdctl");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("zdctl output");
    assert_code(&out, 0);
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_zero_restart_timeout_exits_2_instead_of_rolling_back_every_time() {
    for zero in ["0s", "0ms", "0.0s"] {
        let out = TestEnv::new().zdctl(&["restart", "api", "--timeout", zero]);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains(&format!(
                "a duration of zero ('{zero}') is not allowed here"
            )),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn top_without_a_terminal_says_it_needs_one_and_what_to_use_instead() {
    let out = TestEnv::new().zdctl(&["top"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("draws on a terminal") && stderr(&out).contains("--json"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_unix_listener_in_a_missing_directory_says_to_create_it() {
    let out = TestEnv::new().zdctl(&[
        "run",
        "--name",
        "api",
        "--listen",
        "unix:/nonexistent/zdctl-test/x.sock",
        "--",
        "true",
    ]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("its directory does not exist; create it first"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_json_command_reports_its_error_as_one_json_object_on_stdout() {
    let env = TestEnv::new();
    for args in [
        &["status", "nosuch", "--json"][..],
        &["restart", "nosuch", "--json"][..],
        &["stop", "nosuch", "--json"][..],
        &["signal", "nosuch", "USR1", "--json"][..],
        &["reexec", "nosuch", "--json"][..],
    ] {
        let out = env.zdctl(args);
        assert_code(&out, 3);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stdout}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
        assert_eq!(v["error"]["kind"], "no_such_service", "{args:?}: {v}");
        assert_eq!(v["error"]["exit_code"], 3, "{args:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no service named 'nosuch'")),
            "{v}"
        );
        // People still read stderr.
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    }
    let out = env.zdctl(&["status", "bad/name", "--json"]);
    assert_code(&out, 2);
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("JSON");
    assert_eq!(v["error"]["kind"], "invalid_name", "{v}");
}
