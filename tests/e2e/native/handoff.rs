use crate::support::*;

#[test]
fn generation_receives_listeners_in_every_dialect_with_its_own_listen_pid() {
    let mut env = TestEnv::new();
    let unix = env.path("api.sock");
    env.fixture_service("api", &[], &format!("  - admin=unix:{}\n", unix.display()));
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let pid = active_pid(&status);
    let (code, body) = http_get(&addr, "/env").expect("GET /env");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["pid"], pid, "{v}");
    assert_eq!(
        v["listen_pid"].as_str().map(str::to_owned),
        Some(pid.to_string()),
        "{v}"
    );
    assert_eq!(v["listen_fds"], "2", "{v}");
    assert_eq!(v["listen_fdnames"], "http:admin", "{v}");
    assert_eq!(v["einhorn_fd_count"], "2", "{v}");
    assert_eq!(v["einhorn_fds"], "3 4", "{v}");
    assert_eq!(
        v["server_starter_port"].as_str().map(str::to_owned),
        Some(format!("{addr}=3;{}=4", unix.display())),
        "{v}"
    );
    assert_eq!(v["zd_service"], "api");
    assert_eq!(v["zd_generation"], "1");
    assert!(
        v["notify_socket"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    // Its own process group, a clean signal mask, nothing ignored.
    assert_eq!(v["pgid"], pid, "{v}");
    assert_eq!(v["blocked_signals"], serde_json::json!([]), "{v}");
    assert_eq!(v["ignored_signals"], serde_json::json!([]), "{v}");
    // fds 3 and 4 are the listeners, and nothing else of the supervisor leaked.
    let fds = v["fds"].as_array().expect("fds");
    let listening: Vec<i64> = fds
        .iter()
        .filter(|f| f["listening"] == true)
        .filter_map(|f| f["fd"].as_i64())
        .collect();
    assert_eq!(listening, vec![3, 4], "{v}");
    // The same socket inodes the supervisor holds.
    let inode = status.listeners[0].inode;
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("fd 3");
    assert_eq!(link.to_string_lossy(), format!("socket:[{inode}]"));
}

#[test]
fn flags_form_runs_a_service_without_a_file() {
    let mut env = TestEnv::new();
    let fixture = fixture_bin();
    let status = env.start(
        "adhoc",
        &[
            "run",
            "--name",
            "adhoc",
            "--listen",
            "web=127.0.0.1:0",
            "--ready",
            "accepting",
            "--",
            fixture.to_str().expect("utf-8 path"),
        ],
    );
    let (code, body) = http_get(&address_of(&status), "/").expect("GET /");
    assert_eq!(code, 200);
    assert!(body.contains("generation=1"), "{body}");
    let out = env.run_zdctl(&["restart", "adhoc"]);
    assert_code(&out, 0);
    let (_, body) = http_get(&address_of(&status), "/").expect("GET /");
    assert!(body.contains("generation=2"), "{body}");
}
