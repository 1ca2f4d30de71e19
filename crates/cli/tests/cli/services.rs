//! `status`, `list`, `stop` and `signal` against a fake supervisor, and every command's
//! answer when the service is not running.

use zd_core::proto::{
    EventKind, GenerationInfo, GenerationState, ListenerInfo, Op, ReplyResult, RestartCounters,
    Status,
};

use crate::fake::{Step, TestEnv, assert_code, stderr, stdout};

fn status(name: &str) -> Status {
    Status {
        bake: None,
        capacity: None,
        instances: None,
        service: name.into(),
        supervisor_pid: 4242,
        started_unix_ms: 1_800_000_000_000,
        config_path: None,
        active_generation: Some(2),
        restart_in_progress: None,
        generations: vec![GenerationInfo {
            instances: Vec::new(),
            generation: 2,
            pid: 4300,
            state: GenerationState::Active,
            started_unix_ms: 1_800_000_000_000,
            exit: None,
            intercept: None,
            output_lines: None,
        }],
        listeners: vec![ListenerInfo {
            name: "unknown".into(),
            address: "127.0.0.1:8080".into(),
            inode: 777,
            fd: 3,
        }],
        sockets: Vec::new(),
        restarts: RestartCounters::default(),
        last_restart: None,
        containment: None,
        intercept_binds: false,
        failing: None,
        supervisor: None,
        log_lines: None,
    }
}

fn answers_status(name: &'static str) -> impl Fn(&Op) -> Vec<Step> + Send + Sync + 'static {
    move |_| vec![Step::Result(ReplyResult::Status(Box::new(status(name))))]
}

#[test]
fn status_json_prints_the_supervisors_status_object() {
    let env = TestEnv::new();
    let _fake = env.fake("api", answers_status("api"));
    let out = env.zdctl(&["status", "api", "--json"]);
    assert_code(&out, 0);
    let got: Status = serde_json::from_str(&stdout(&out)).expect("a Status object");
    assert_eq!(got, status("api"));
}

#[test]
fn status_shows_generations_and_listeners() {
    let env = TestEnv::new();
    let _fake = env.fake("api", answers_status("api"));
    let out = env.zdctl(&["status", "api"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with("service 'api': supervisor pid 4242, up "),
        "{text}"
    );
    assert!(text.contains("  2    4300  active"), "{text}");
    assert!(text.contains("127.0.0.1:8080  3   777"), "{text}");
}

#[test]
fn status_without_a_name_shows_every_running_service_and_skips_stale_sockets() {
    let env = TestEnv::new();
    let _api = env.fake("api", answers_status("api"));
    let _web = env.fake("web", answers_status("web"));
    env.stale_socket("dead");
    let out = env.zdctl(&["status", "--json"]);
    assert_code(&out, 0);
    let got: Vec<Status> = serde_json::from_str(&stdout(&out)).expect("an array");
    assert_eq!(got, [status("api"), status("web")]);
}

#[test]
fn status_with_no_service_running_says_so_and_exits_0() {
    let env = TestEnv::new();
    env.stale_socket("dead");
    let out = env.zdctl(&["status"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with("no service is running"),
        "{}",
        stdout(&out)
    );
    let out = env.zdctl(&["status", "--json"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn a_name_without_a_file_or_supervisor_exits_3_naming_where_it_looked() {
    let env = TestEnv::new();
    for args in [
        &["restart", "nosuch"][..],
        &["status", "nosuch"],
        &["stop", "nosuch"],
        &["signal", "nosuch", "HUP"],
    ] {
        let out = env.zdctl(args);
        assert_code(&out, 3);
        let expected = format!(
            "error: no service named 'nosuch': looked in '{}' and '{}';",
            env.config_dir().display(),
            env.runtime_dir().display()
        );
        assert!(
            stderr(&out).starts_with(&expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_service_with_a_file_but_no_supervisor_is_not_running_exit_3() {
    let env = TestEnv::new();
    env.service_file("api", "command: [\"/bin/true\"]\n");
    env.stale_socket("api");
    let out = env.zdctl(&["restart", "api"]);
    assert_code(&out, 3);
    let expected = format!(
        "error: service 'api' is not running: no supervisor answers on '{}'",
        env.runtime_dir().join("api.sock").display()
    );
    assert!(stderr(&out).starts_with(&expected), "{}", stderr(&out));
}

#[test]
fn stop_exits_0_once_the_supervisor_confirms() {
    let env = TestEnv::new();
    let fake = env.fake("api", |_| {
        vec![
            Step::Event(EventKind::Stopping),
            Step::Result(ReplyResult::Done {
                message: "stopped".into(),
            }),
        ]
    });
    let out = env.zdctl(&["stop", "api"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "stopped 'api'\n");
    // `status` first: its supervisor pid is what `stop` waits on to exit.
    assert_eq!(fake.requests(), [Op::Status, Op::Stop]);
}

#[test]
fn signal_sends_the_canonical_name_and_reports_who_got_it() {
    let env = TestEnv::new();
    let fake = env.fake("api", |_| {
        vec![
            Step::Event(EventKind::Signalled {
                generation: 2,
                pid: 4300,
                signal: "SIGUSR1".into(),
            }),
            Step::Result(ReplyResult::Done {
                message: "sent".into(),
            }),
        ]
    });
    let out = env.zdctl(&["signal", "api", "usr1"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "sent SIGUSR1 to generation 2 of 'api' (pid 4300)\n"
    );
    assert_eq!(
        fake.requests(),
        [Op::Signal {
            signal: "SIGUSR1".into()
        }]
    );
}

#[test]
fn list_merges_service_files_running_supervisors_and_stale_sockets() {
    let env = TestEnv::new();
    env.service_file("api", "command: [\"/bin/true\"]\n");
    env.service_file("broken", "comand: [\"/bin/true\"]\n");
    let _api = env.fake("api", answers_status("api"));
    env.stale_socket("dead");
    let out = env.zdctl(&["list", "--json"]);
    assert_code(&out, 0);
    let got: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let rows = got.as_array().expect("an array");
    let by_name = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {got}"))
    };
    assert_eq!(by_name("api")["state"], "running");
    assert_eq!(by_name("api")["supervisor_pid"], 4242);
    assert_eq!(by_name("api")["active_generation"], 2);
    assert_eq!(by_name("broken")["state"], "stopped");
    assert!(by_name("broken")["error"].is_string(), "{got}");
    assert_eq!(by_name("dead")["state"], "stale");

    let out = env.zdctl(&["list"]);
    assert_code(&out, 0);
    assert!(stdout(&out).starts_with("NAME "), "{}", stdout(&out));
}
