//! Service files: every key, the defaults, and every error with its exact position.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zd_core::config::{
    Bake, ConfigError, DEFAULT_BAKE_CHECK_INTERVAL, Handoff, MAX_INSTANCES, ReadyConfig,
    RestartMode, Rollout, ServiceConfig, StartPriority, load_file, parse_str,
};
use zd_core::listen::{ListenAddr, ListenerSpec};
use zd_core::ready::check::ReadyCheck;
use zd_core::signal::Signal;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
    parse_str(text, Path::new("/srv/api/api.yaml"))
}

fn parsed(text: &str) -> ServiceConfig {
    parse(text).unwrap_or_else(|err| panic!("{err}"))
}

fn spec(text: &str) -> ListenerSpec {
    text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
}

#[test]
fn a_file_with_every_key_loads_with_each_value() -> Result<(), ConfigError> {
    let path = fixture("full.yaml");
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = load_file(&path)?;
    let mut admin = spec("admin=unix:/run/api.sock");
    admin.mode = Some(0o660);
    admin.owner = Some("www-data".into());
    admin.group = Some("33".into());
    admin.backlog = Some(1024);
    let mut local = ListenerSpec::new(ListenAddr::Unix(dir.join("api.sock")));
    local.name = Some("local".into());
    local.mode = Some(0o600);
    let want = ServiceConfig {
        instances: 1,
        rollout: zd_core::config::Rollout::default(),
        bake: None,
        name: "api".into(),
        source: Some(path.clone()),
        command: ["sh", "-c", "exec sleep 1000", "--port", "8080"]
            .map(String::from)
            .to_vec(),
        workdir: Some(dir.clone()),
        env: BTreeMap::from([
            ("PORT".into(), "8080".into()),
            ("RUST_LOG".into(), "info".into()),
        ]),
        listeners: vec![
            spec("127.0.0.1:8080"),
            spec("http6=[::1]:8080"),
            admin,
            local,
        ],
        ready: ReadyConfig {
            checks: vec![
                ReadyCheck::Accepting,
                "http:http://127.0.0.1:8080/health"
                    .parse()
                    .map_err(|e| panic!("{e}"))?,
                ReadyCheck::Notify,
            ],
            timeout: Duration::from_secs(45),
        },
        stop_signal: Signal::Quit,
        drain_timeout: Duration::from_secs(60),
        restart: zd_core::config::RestartPolicy {
            mode: RestartMode::OnFailure,
            backoff: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            limit: Some(zd_core::config::StartLimit {
                starts: 3,
                window: Duration::from_secs(30),
            }),
            refuse_after: Some(Duration::from_secs(120)),
        },
        pidfile: Some(dir.join("run/api.pid")),
        log_prefix: true,
        log_lines: zd_core::config::DEFAULT_LOG_LINES,
        yield_cpu: true,
        start_priority: StartPriority::Normal,
        handoff: Some(Handoff::Shared),
        handoff_wait: Duration::from_secs(5),
        migrate_requests: Some(false),
        intercept_binds: false,
    };
    assert_eq!(config, want);
    Ok(())
}

#[test]
fn a_minimal_file_gets_every_default() {
    let path = fixture("minimal.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let config = parse_str(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let mut want = ServiceConfig::defaults_for(
        "minimal",
        ["./server", "--name", "my app", "two words"]
            .map(String::from)
            .to_vec(),
    );
    want.source = Some(path);
    want.listeners = vec![spec(":8080")];
    want.ready = ReadyConfig::default_for(&want.listeners);
    assert_eq!(config, want);
    assert_eq!(config.ready.checks, [ReadyCheck::Accepting]);
    assert_eq!(config.ready.timeout, Duration::from_secs(30));
    assert_eq!(config.stop_signal, Signal::Terminate);
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.restart.mode, RestartMode::Always);
    assert_eq!(config.restart.backoff, Duration::from_millis(100));
    assert_eq!(config.restart.backoff_max, Duration::from_secs(30));
    assert_eq!(
        config.restart.limit,
        Some(zd_core::config::DEFAULT_START_LIMIT)
    );
    assert_eq!(
        config.restart.limit.map(|l| l.to_string()).as_deref(),
        Some("5 in 1m")
    );
    assert_eq!(config.restart.refuse_after, None, "accepting while failing");
    assert!(!config.log_prefix && config.pidfile.is_none() && config.env.is_empty());
    assert!(!config.yield_cpu);
    assert_eq!(config.start_priority, StartPriority::Idle);
    assert_eq!(config.handoff, None, "steered where the kernel allows it");
    assert_eq!(config.handoff_wait, Duration::from_secs(2));
    assert_eq!(config.migrate_requests, None, "tcp_migrate_req turned on");
    assert_eq!(config.instances, 1);
    assert_eq!(
        config.rollout,
        Rollout {
            surge: 1,
            max_unavailable: 0
        }
    );
    assert_eq!(
        config.bake, None,
        "the old generation goes at the promotion"
    );
}

#[test]
fn instances_rollout_and_bake_are_read_with_each_value() -> Result<(), ConfigError> {
    let config = parsed(
        "command: [x]\ninstances: 4\nrollout:\n  surge: 2\n  max_unavailable: 0\n\
         bake: 5m\nbake_checks: ['http:http://127.0.0.1:8080/health', 'exec:./smoke', \
         accepting]\nbake_check_interval: 2s\n",
    );
    assert_eq!(config.instances, 4);
    assert_eq!(
        config.rollout,
        Rollout {
            surge: 2,
            max_unavailable: 0
        }
    );
    let want = Bake {
        window: Duration::from_secs(300),
        checks: vec![
            "http:http://127.0.0.1:8080/health"
                .parse()
                .map_err(|e| panic!("{e}"))?,
            ReadyCheck::Exec {
                command: "./smoke".into(),
            },
            ReadyCheck::Accepting,
        ],
        interval: Duration::from_secs(2),
    };
    assert_eq!(config.bake, Some(want));
    Ok(())
}

#[test]
fn a_bake_alone_watches_for_exits_every_second_by_default() {
    let config = parsed("command: [x]\nbake: 30s\n");
    let want = Bake {
        window: Duration::from_secs(30),
        checks: Vec::new(),
        interval: DEFAULT_BAKE_CHECK_INTERVAL,
    };
    assert_eq!(config.bake, Some(want));
    assert_eq!(DEFAULT_BAKE_CHECK_INTERVAL, Duration::from_secs(1));
    // Nothing paces a bake without checks: a window shorter than the interval is fine.
    assert!(parsed("command: [x]\nbake: 500ms\n").bake.is_some());
    let one = parsed("command: [x]\nbake: 1m\nbake_checks: 'tcp:127.0.0.1:1'\n");
    assert_eq!(one.bake.map(|b| b.checks.len()), Some(1));
    let none = parsed("command: [x]\nbake: 1m\nbake_checks: []\n");
    assert_eq!(none.bake.map(|b| b.checks), Some(Vec::new()));
}

#[test]
fn a_rollout_takes_defaults_per_key_and_fits_a_single_instance() {
    let config = parsed("command: [x]\ninstances: 3\nrollout: { surge: 3 }\n");
    assert_eq!(
        config.rollout,
        Rollout {
            surge: 3,
            max_unavailable: 0
        }
    );
    let config = parsed("command: [x]\nrollout: { max_unavailable: 0 }\n");
    assert_eq!((config.instances, config.rollout), (1, Rollout::default()));
    let config = parsed(&format!("command: [x]\ninstances: {MAX_INSTANCES}\n"));
    assert_eq!(config.instances, 256);
}

#[test]
fn surge_above_instances_is_reported_at_surge() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "command: [sh]\ninstances: 4\nrollout:\n  surge: 5\n",
    );
    let err = load_file(&path).expect_err("surge 5").to_string();
    let want = format!(
        "{}:4:3: rollout.surge (5) is larger than instances (4); at most 4",
        path.display()
    );
    assert!(err.starts_with(&want), "{err}");
    let path = write_service(dir.path(), "command: [sh]\nrollout: { surge: 2 }\n");
    let err = load_file(&path).expect_err("one instance").to_string();
    assert!(
        err.contains("rollout.surge (2) is larger than instances (1)"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_bake_shorter_than_its_check_interval_is_reported_at_bake() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "command: [sh]\nbake: 500ms\nbake_checks: ['exec:true']\n",
    );
    let err = load_file(&path).expect_err("500ms < 1s").to_string();
    let want = format!(
        "{}:2:1: bake (500ms) is shorter than bake_check_interval (1s): no bake check would \
         run; lengthen bake or shorten the interval",
        path.display()
    );
    assert_eq!(err, want);
    let path = write_service(
        dir.path(),
        "command: [sh]\nbake: 500ms\nbake_checks: ['exec:true']\nbake_check_interval: 100ms\n",
    );
    assert!(load_file(&path).is_ok(), "{:?}", load_file(&path));
    Ok(())
}

#[test]
fn the_problems_of_instances_rollout_and_bake_come_together() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "command: [sh]\ninstances: 2\nrollout:\n  surge: 3\n  max_unavailable: 1\n\
         bake: 1s\nbake_checks: ['exec:true']\nbake_check_interval: 2s\n",
    );
    let err = load_file(&path).expect_err("three problems");
    let ConfigError::Many { errors, more: 0 } = &err else {
        panic!("one error for three problems: {err:?}");
    };
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let file = path.display();
    let want = [
        format!("{file}:5:20: rollout.max_unavailable 1 is not supported"),
        format!("{file}:6:1: bake (1s) is shorter than bake_check_interval (2s)"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (got, want) in got.iter().zip(&want) {
        assert!(got.starts_with(want), "{got}\n  want {want}…");
    }
    // `rollout` could not be read, so surge 3 against 2 instances is not judged.
    assert!(!err.to_string().contains("larger than instances"), "{err}");
    Ok(())
}

#[test]
fn bake_settings_beside_an_unreadable_bake_are_not_called_useless() {
    let err = parse("command: [x]\nbake: soon\nbake_checks: ['exec:true']\n")
        .expect_err("bake: soon")
        .to_string();
    assert!(err.starts_with("/srv/api/api.yaml:2:7: "), "{err}");
    assert!(!err.contains("no effect"), "{err}");
}

#[test]
fn flag_configs_validate_instances_rollout_and_bake() {
    let mut config = ServiceConfig::defaults_for("api", vec!["sh".into()]);
    assert!(config.validate().is_ok(), "{:?}", config.validate());
    config.instances = 0;
    let err = config.validate().expect_err("no instance").to_string();
    assert!(err.contains("instances must be at least 1"), "{err}");
    config.instances = 2;
    config.rollout.surge = 3;
    let err = config.validate().expect_err("surge").to_string();
    assert!(err.starts_with("command line: rollout.surge (3)"), "{err}");
    config.rollout = Rollout {
        surge: 2,
        max_unavailable: 1,
    };
    let err = config.validate().expect_err("unavailable").to_string();
    assert!(err.contains("rollout.max_unavailable 1"), "{err}");
    config.rollout.max_unavailable = 0;
    config.bake = Some(Bake {
        window: Duration::from_secs(60),
        checks: vec![ReadyCheck::Alive(Duration::from_secs(1))],
        interval: Duration::ZERO,
    });
    let err = config
        .validate()
        .expect_err("alive, zero interval")
        .to_string();
    assert!(
        err.contains("'alive:1s' proves nothing during a bake"),
        "{err}"
    );
    assert!(err.contains("bake_check_interval is zero"), "{err}");
    config.bake = config.bake.map(|bake| Bake {
        checks: vec![ReadyCheck::Accepting],
        interval: DEFAULT_BAKE_CHECK_INTERVAL,
        ..bake
    });
    assert!(config.validate().is_ok(), "{:?}", config.validate());
}

#[test]
fn handoff_takes_steered_or_shared_and_names_the_choices_otherwise() {
    let config = parsed("command: [x]\nlisten: ':0'\nhandoff: steered\nhandoff_wait: 300ms\n");
    assert_eq!(config.handoff, Some(Handoff::Steered));
    assert_eq!(config.handoff_wait, Duration::from_millis(300));
    let err = parse("command: [x]\nhandoff: split\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("steered") && err.contains("shared"), "{err}");
    let err = parse("command: [x]\nhandoff_wait: 0s\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("handoff_wait") || err.contains("above zero") || err.contains("positive"),
        "{err}"
    );
}

#[test]
fn steered_handoff_needs_a_tcp_or_udp_listener() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "command: [sh]\nlisten: unix:/tmp/zd-steer-test.sock\nhandoff: steered\n",
    );
    let err = load_file(&path).expect_err("no TCP listener").to_string();
    assert!(
        err.starts_with(&format!("{}:3:1: ", path.display())),
        "{err}"
    );
    assert!(err.contains("TCP and UDP listeners"), "{err}");
    let path = write_service(
        dir.path(),
        "command: [sh]\nlisten: udp://127.0.0.1:0\nready: notify\nhandoff: steered\n",
    );
    let config = load_file(&path).map_err(std::io::Error::other)?;
    assert_eq!(config.handoff, Some(Handoff::Steered));
    Ok(())
}

#[test]
fn udp_listeners_parse_in_every_form() {
    let config = parsed(
        "command: [x]\nready: notify\nlisten:\n  - dns=udp://127.0.0.1:5353\n  - udp://[::1]:5353\n  \
         - {name: any, address: 'udp://:5353'}\n",
    );
    assert_eq!(
        config
            .listeners
            .iter()
            .map(|l| l.addr.clone())
            .collect::<Vec<_>>(),
        [
            ListenAddr::Udp(([127, 0, 0, 1], 5353).into()),
            ListenAddr::Udp("[::1]:5353".parse().expect("addr")),
            ListenAddr::UdpAnyPort(5353),
        ]
    );
    assert_eq!(config.listeners[0].name.as_deref(), Some("dns"));
    assert_eq!(config.listeners[2].name.as_deref(), Some("any"));
}

#[test]
fn a_service_with_any_listener_defaults_to_accepting_and_one_without_to_alive() {
    let udp = parsed("command: [x]\nlisten: udp://127.0.0.1:53\n");
    assert_eq!(udp.ready.checks, [ReadyCheck::Accepting]);
    let mixed = parsed("command: [x]\nlisten: [udp://127.0.0.1:53, '127.0.0.1:80']\n");
    assert_eq!(mixed.ready.checks, [ReadyCheck::Accepting]);
    let listeners = [spec("udp://:53")];
    assert_eq!(
        ReadyConfig::default_for(&listeners).checks,
        [ReadyCheck::Accepting]
    );
    assert_eq!(
        ReadyConfig::default_for(&[]).checks,
        [ReadyCheck::Alive(Duration::from_secs(1))]
    );
}

#[test]
fn the_accepting_check_takes_a_udp_only_service() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "command: [sh]\nlisten: udp://127.0.0.1:0\nready: accepting\n",
    );
    assert!(load_file(&path).is_ok());
    Ok(())
}

#[test]
fn migrate_requests_is_a_boolean_for_the_steered_handoff() -> std::io::Result<()> {
    let config = parsed("command: [x]\nlisten: ':0'\nmigrate_requests: false\n");
    assert_eq!(config.migrate_requests, Some(false));
    let err = parse("command: [x]\nmigrate_requests: sometimes\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("migrate_requests") || err.contains("boolean"),
        "{err}"
    );
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "command: [sh]\nlisten: ':0'\nhandoff: shared\nmigrate_requests: true\n",
    );
    let err = load_file(&path).expect_err("shared").to_string();
    assert!(
        err.starts_with(&format!("{}:4:1: ", path.display())),
        "{err}"
    );
    assert!(err.contains("steered handoff"), "{err}");
    Ok(())
}

#[test]
fn flag_configs_refuse_a_backlog_on_a_udp_listener() {
    let mut config = ServiceConfig::defaults_for("api", vec!["sh".into()]);
    let mut socket = spec("udp://127.0.0.1:0");
    socket.backlog = Some(16);
    config.listeners = vec![socket];
    config.ready = ReadyConfig::default_for(&config.listeners);
    let err = config.validate().expect_err("backlog on UDP").to_string();
    assert!(
        err.contains("backlog applies to TCP and unix listeners"),
        "{err}"
    );
    config.listeners[0].backlog = None;
    assert!(config.validate().is_ok(), "{:?}", config.validate());
}

#[test]
fn an_unknown_start_priority_names_the_choices() {
    let err = parse("command: [x]\nstart_priority: low\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("idle") && err.contains("normal"), "{err}");
}

#[test]
fn a_service_without_listeners_defaults_to_the_alive_check() {
    let path = fixture("worker.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let config = parse_str(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.name, "worker");
    assert_eq!(config.command, ["python3", "worker.py"]);
    assert_eq!(
        config.ready.checks,
        [ReadyCheck::Alive(Duration::from_secs(1))]
    );
    assert_eq!(config.ready.timeout, Duration::from_secs(5));
    assert_eq!(config.restart.mode, RestartMode::Never);
}

#[test]
fn ready_takes_one_check_a_list_or_a_map() {
    let one = parsed("command: [x]\nready: notify\n");
    assert_eq!(one.ready.checks, [ReadyCheck::Notify]);
    let list = parsed("command: [x]\nready: [notify, 'alive:2s']\n");
    assert_eq!(
        list.ready.checks,
        [
            ReadyCheck::Notify,
            ReadyCheck::Alive(Duration::from_secs(2))
        ]
    );
    let map = parsed("command: [x]\nready: { checks: 'tcp:127.0.0.1:1' }\n");
    assert_eq!(map.ready.checks.len(), 1);
    assert_eq!(map.ready.timeout, Duration::from_secs(30));
}

#[test]
fn a_start_limit_reads_as_n_in_a_duration_or_off() {
    let config = parsed("command: [x]\nrestart: { limit: 3 in 10s }\n");
    assert_eq!(
        config.restart.limit,
        Some(zd_core::config::StartLimit {
            starts: 3,
            window: Duration::from_secs(10),
        })
    );
    assert_eq!(
        parsed("command: [x]\nrestart: { limit: off }\n")
            .restart
            .limit,
        None
    );
}

#[test]
fn refuse_after_reads_as_a_duration_or_off_and_needs_a_limit() -> std::io::Result<()> {
    let config = parsed("command: [x]\nrestart: { refuse_after: 30s }\n");
    assert_eq!(config.restart.refuse_after, Some(Duration::from_secs(30)));
    let off = parsed("command: [x]\nrestart: { refuse_after: off }\n");
    assert_eq!(off.restart.refuse_after, None);
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "command: [sh]\nrestart:\n  limit: off\n  refuse_after: 30s\n",
    );
    let err = load_file(&path).expect_err("no limit").to_string();
    assert!(
        err.starts_with(&format!("{}:4:3: ", path.display())),
        "{err}"
    );
    assert!(err.contains("set a limit or remove refuse_after"), "{err}");
    Ok(())
}

#[test]
fn a_large_backoff_without_a_maximum_raises_the_maximum() {
    let config = parsed("command: [x]\nrestart: { backoff: 1m }\n");
    assert_eq!(config.restart.backoff_max, Duration::from_secs(60));
}

/// Every parse error, with the exact `file:line:column:` prefix it must start with and a
/// piece of what it must say.
const ERRORS: &[(&str, &str, &str)] = &[
    ("", "1:1", "the service file is empty"),
    (
        "name: api\n",
        "1:1",
        "missing key `command`; add it, like command:",
    ),
    (
        "command: [x]\ncomand: y\n",
        "2:1",
        "unknown key `comand`; did you mean `command`?",
    ),
    (
        "command: [x]\nlisten:\n  - name: admin\n    adress: unix:/a.sock\n",
        "4:5",
        "unknown key `adress` in `listen[0]`; did you mean `address`?",
    ),
    (
        "command: [x]\nready:\n  timout: 3s\n",
        "3:3",
        "did you mean `timeout`?",
    ),
    (
        "command: [x]\nrestart: on-falure\n",
        "2:10",
        "did you mean `on-failure`?",
    ),
    (
        "command: [x]\nrestart:\n  policy: sometimes\n",
        "3:11",
        "unknown value `sometimes`",
    ),
    (
        "command: [x]\nbogus_key: 1\n",
        "2:1",
        "valid keys here: name, command",
    ),
    (
        "command: [x]\nlisten:\n  - 127.0.0.1:8080\n  - localhost:80\n",
        "4:5",
        "invalid listen address 'localhost:80': the host must be an IP address",
    ),
    (
        "command: [x]\ndrain_timeout: 30\n",
        "2:16",
        "duration '30' has no unit; add one",
    ),
    (
        "command: [x]\ndrain_timeout: 0s\n",
        "2:16",
        "a duration of zero ('0s')",
    ),
    (
        "command: [x]\nready:\n  timeout: soon\n",
        "3:12",
        "invalid duration 'soon'",
    ),
    (
        "command: [x]\nstop_signal: BOGUS\n",
        "2:14",
        "unknown signal 'BOGUS'",
    ),
    (
        "command: [x]\nready:\n  checks: [acepting]\n",
        "3:12",
        "invalid readiness check",
    ),
    (
        "command: [x]\nready: []\n",
        "2:8",
        "the list of readiness checks is empty",
    ),
    ("command: []\n", "1:10", "the command is empty"),
    ("command: \"./a 'b\"\n", "1:10", "unclosed quote"),
    (
        "command: [x]\nlisten: [a=:1, a=:2]\n",
        "2:9",
        "two listeners are named 'a'",
    ),
    (
        "command: [x]\nlisten:\n  - address: 127.0.0.1:1\n    mode: \"0660\"\n",
        "3:5",
        "mode, owner and group apply to unix sockets only",
    ),
    (
        "command: [x]\nlisten:\n  - address: unix:/x\n    mode: \"999\"\n",
        "4:11",
        "invalid mode '999'",
    ),
    (
        "command: [x]\nlisten:\n  - address: unix:/x\n    name: a:b\n",
        "4:11",
        "invalid listener name 'a:b'",
    ),
    (
        "command: [x]\nlisten:\n  - name: x\n",
        "3:5",
        "missing key `address`",
    ),
    (
        "command: [x]\n  bad: indent\n",
        "2:3",
        "check the indentation",
    ),
    ("command: [x\n", "2:1", "did not find expected"),
    (
        "command: [x]\nenv: [a]\n",
        "2:6",
        "expected a map of variable names",
    ),
    (
        "- a\n- b\n",
        "1:1",
        "expected a map of keys, like `command:",
    ),
    (
        "command: [x]\nlog:\n  prefix: yes please\n",
        "3:11",
        "unknown value `yes please` in `log.prefix`; use true or false",
    ),
    (
        "command: [x]\nrestart:\n  backoff: 10s\n  backoff_max: 1s\n",
        "3:3",
        "backoff_max is shorter than backoff",
    ),
    (
        "command: [x]\nrestart:\n  limit: 5 per 60s\n",
        "3:10",
        "restart.limit '5 per 60s' is not 'N in DURATION'; write it like '5 in 60s'",
    ),
    (
        "command: [x]\nrestart:\n  limit: 0 in 60s\n",
        "3:10",
        "restart.limit '0 in 60s' counts 0 starts; use at least 1",
    ),
    (
        "command: [x]\nrestart:\n  limit: 5 in 0s\n",
        "3:10",
        "restart.limit '5 in 0s':",
    ),
    (
        "command: [x]\nrestart:\n  refuse_after: 0s\n",
        "3:17",
        "restart.refuse_after '0s': a duration of zero",
    ),
    (
        "command: [x]\nrestart:\n  refuse_after: soon\n",
        "3:17",
        "restart.refuse_after 'soon':",
    ),
    (
        "name: 'my api'\ncommand: [x]\n",
        "1:7",
        "invalid service name 'my api'",
    ),
    (
        "command: [x]\ncommand: [y]\n",
        "2:1",
        "key `command` appears twice; keep one",
    ),
    ("command: [x]\n\tlisten: []\n", "2:1", "spaces, not tabs"),
    (
        "command: [x]\n---\ncommand: [y]\n",
        "1:1",
        "one YAML document",
    ),
    (
        "command: [x]\nlisten:\n  - address: admin=unix:/x\n",
        "3:14",
        "a name is not part of the address; set it with `name:`",
    ),
    (
        "command: [x]\nlisten:\n  - {address: ':80', backlog: -1}\n",
        "3:31",
        "backlog",
    ),
    (
        "command: [x]\nlisten:\n  - address: udp://127.0.0.1:53\n    backlog: 64\n",
        "3:5",
        "backlog applies to TCP and unix listeners, and 'udp://127.0.0.1:53' is UDP",
    ),
    (
        "command: [x]\nlisten:\n  - address: udp://:53\n    mode: \"0660\"\n",
        "3:5",
        "mode, owner and group apply to unix sockets only, and 'udp://:53' is UDP",
    ),
    (
        "command: [x]\nlisten: udp://localhost:53\n",
        "2:9",
        "the host must be an IP address",
    ),
    (
        "command: [x]\nlisten: sctp://127.0.0.1:53\n",
        "2:9",
        "unknown scheme",
    ),
    ("command: [x]\nenv:\n  A: [1]\n", "3:6", "env.A"),
    ("command: {a: b}\n", "1:10", "expected a command"),
    (
        "command: [x]\nlisten:\n  - address: unix:/x\n    mode: '7777'\n",
        "4:11",
        "invalid mode '7777': the setuid, setgid and sticky bits",
    ),
    (
        "command: [x]\nlisten:\n  - address: unix:/x\n    mode: 1660\n",
        "4:11",
        "above '0777'",
    ),
    (
        "command: [x]\nlisten:\n  - address: unix:/x\n    mode: 0x1b6\n",
        "4:11",
        "invalid mode '0x1b6'",
    ),
    (
        "command: [x]\nready:\n  timeout: 0s\n",
        "3:12",
        "a duration of zero ('0s') is not allowed here",
    ),
    (
        "command: [x]\nready: 'alive:0s'\n",
        "2:8",
        "'alive:0s' proves nothing",
    ),
    (
        "command: [x]\nready: {checks: [notify, 'alive:0ms']}\n",
        "2:26",
        "'alive:0ms' proves nothing",
    ),
    (
        "command: [x]\ninstances: 0\n",
        "2:12",
        "instances must be at least 1, not 0",
    ),
    (
        "command: [x]\ninstances: 1000\n",
        "2:12",
        "instances is 1000, more than the 256 a generation may run; lower it to at most 256",
    ),
    (
        "command: [x]\ninstances: four\n",
        "2:12",
        "expected a whole number, like 4",
    ),
    (
        "command: [x]\nrollout:\n  surge: 0\n",
        "3:10",
        "rollout.surge must be at least 1, not 0",
    ),
    (
        "command: [x]\nrollout:\n  max_unavailable: 1\n",
        "3:20",
        "rollout.max_unavailable 1 is not supported: only 0 is, for now",
    ),
    (
        "command: [x]\nrollout:\n  surg: 2\n",
        "3:3",
        "unknown key `surg` in `rollout`; did you mean `surge`?",
    ),
    (
        "command: [x]\nrollout: 2\n",
        "2:10",
        "expected a map like `surge: 2`",
    ),
    (
        "command: [x]\nbake: 0s\n",
        "2:7",
        "a duration of zero ('0s')",
    ),
    (
        "command: [x]\nbake: 1m\nbake_check_interval: 10\n",
        "3:22",
        "duration '10' has no unit",
    ),
    (
        "command: [x]\nbake: 1m\nbake_checks: ['tcp:127.0.0.1:1', acepting]\n",
        "3:34",
        "bake_checks[1]: invalid readiness check 'acepting'",
    ),
    (
        "command: [x]\nbake: 1m\nbake_checks: 'alive:5s'\n",
        "3:14",
        "'alive:5s' proves nothing during a bake",
    ),
    (
        "command: [x]\nbake: 1m\nbake_checks: [notify]\n",
        "3:15",
        "'notify' proves nothing during a bake: READY=1 is sent once",
    ),
    (
        "command: [x]\nbake_checks: ['tcp:127.0.0.1:1']\n",
        "2:1",
        "bake_checks has no effect without 'bake: DURATION'",
    ),
    (
        "command: [x]\n\nbake_check_interval: 5s\n",
        "3:1",
        "bake_check_interval has no effect without 'bake: DURATION'",
    ),
];

#[test]
fn a_mode_is_read_as_octal_however_it_is_written() {
    for (written, want) in [
        ("'0660'", 0o660),
        ("\"0o640\"", 0o640),
        ("0660", 0o660),
        ("660", 0o660),
        // YAML reads 0o600 as the integer 384; the mode is what was written.
        ("0o600", 0o600),
        ("0777", 0o777),
    ] {
        let text = format!("command: [x]\nlisten:\n  - address: unix:/x\n    mode: {written}\n");
        let config = parsed(&text);
        assert_eq!(config.listeners[0].mode, Some(want), "{written}");
    }
}

#[test]
fn flag_configs_refuse_special_mode_bits_and_zero_alive_checks() {
    let mut config = ServiceConfig::defaults_for("api", vec!["sh".into()]);
    let mut socket = spec("unix:/tmp/zd-api.sock");
    socket.mode = Some(0o4755);
    config.listeners = vec![socket];
    let err = config.validate().expect_err("setuid bit");
    assert!(err.to_string().contains("invalid mode '4755'"), "{err}");
    config.listeners[0].mode = Some(0o660);
    config.ready.checks = vec![ReadyCheck::Alive(Duration::ZERO)];
    let err = config.validate().expect_err("alive:0s");
    assert!(
        err.to_string().contains("'alive:0s' proves nothing"),
        "{err}"
    );
}

#[test]
fn every_error_starts_with_file_line_column_and_says_what_to_change() {
    let mut failures = Vec::new();
    for (text, position, needle) in ERRORS {
        let message = match parse(text) {
            Ok(_) => "parsed fine".to_owned(),
            Err(err) => err.to_string(),
        };
        let prefix = format!("/srv/api/api.yaml:{position}: ");
        if !message.starts_with(&prefix) || !message.contains(needle) {
            failures.push(format!(
                "{text:?}\n  want {prefix}…{needle}\n  got  {message}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_message_that_names_its_key_does_not_repeat_it() {
    let err = parse("command: [x]\nrestart:\n  limit: 0 in 60s\n")
        .expect_err("0 starts")
        .to_string();
    let want = "/srv/api/api.yaml:3:10: restart.limit '0 in 60s' counts 0 starts";
    assert!(err.starts_with(want), "{err}");
}

#[test]
fn a_key_with_a_line_break_is_shown_on_one_line() {
    let err = parse("? ---\n\n  command").expect_err("a key '---\\ncommand'");
    for problem in err.problems() {
        assert_eq!(problem.to_string().lines().count(), 1, "{problem}");
    }
    assert!(
        err.to_string().contains("unknown key `---\\ncommand`"),
        "{err}"
    );
}

#[test]
fn an_unreadable_file_names_the_file_and_the_os_error() {
    let err = load_file(Path::new("/nonexistent/zd/api.yaml")).expect_err("missing file");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("/nonexistent/zd/api.yaml: cannot read"),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");
}

fn write_service(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("svc.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn a_missing_program_names_the_command_and_the_line_of_command() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(
        dir.path(),
        "# svc\n\ncommand: [no-such-program-zdctl, -v]\n",
    );
    let err = load_file(&path).expect_err("no program");
    let msg = err.to_string();
    let prefix = format!(
        "{}:3:1: command 'no-such-program-zdctl' not found",
        path.display()
    );
    assert!(msg.starts_with(&prefix), "{msg}");
    Ok(())
}

#[test]
fn the_program_is_searched_on_the_path_the_service_sets() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = "env:\n  PATH: /nonexistent-zd\ncommand: sh -c true\n";
    let err = load_file(&write_service(dir.path(), text)).expect_err("not on that PATH");
    assert!(
        err.to_string().contains("searched PATH=/nonexistent-zd"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_program_without_execute_permission_is_refused() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = dir.path().join("server");
    std::fs::write(&server, "#!/bin/sh\n")?;
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o644))?;
    let path = write_service(dir.path(), "workdir: .\ncommand: ./server\n");
    let err = load_file(&path).expect_err("not executable");
    assert!(
        matches!(err, ConfigError::CommandNotExecutable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:1: ", path.display())),
        "{err}"
    );
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755))?;
    load_file(&path).map_err(std::io::Error::other)?;
    Ok(())
}

#[test]
fn a_missing_workdir_is_reported_at_its_line() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(dir.path(), "command: [sh]\nworkdir: nowhere\n");
    let err = load_file(&path).expect_err("no workdir");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:1: workdir", path.display())),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_accepting_check_needs_a_listener() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_service(dir.path(), "command: [sh]\nready: accepting\n");
    let err = load_file(&path).expect_err("no listener");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:1: ", path.display())),
        "{err}"
    );
    assert!(err.to_string().contains("needs a listener"), "{err}");
    Ok(())
}

#[test]
fn flag_configs_validate_with_command_line_as_the_location() {
    let mut config = ServiceConfig::defaults_for("api", vec!["no-such-program-zdctl".into()]);
    let err = config.validate().expect_err("no program");
    assert!(
        err.to_string()
            .starts_with("command line: command 'no-such"),
        "{err}"
    );
    config.command = vec!["sh".into()];
    config.listeners = vec![spec("a=:0"), spec("a=:1")];
    let err = config.validate().expect_err("duplicate names");
    assert!(
        err.to_string().contains("two listeners are named 'a'"),
        "{err}"
    );
    config.listeners.pop();
    config.drain_timeout = Duration::ZERO;
    assert!(config.validate().is_err());
    config.drain_timeout = Duration::from_secs(1);
    assert!(config.validate().is_ok(), "{:?}", config.validate());
}

#[test]
fn an_invalid_file_stem_needs_a_name_key() {
    let err = parse_str("command: [x]\n", Path::new("/etc/my service.yaml")).expect_err("stem");
    assert!(
        err.to_string().starts_with("/etc/my service.yaml:1:1: "),
        "{err}"
    );
    assert!(err.to_string().contains("set `name:`"), "{err}");
    let named = parse_str(
        "name: api\ncommand: [x]\n",
        Path::new("/etc/my service.yaml"),
    );
    assert_eq!(named.map(|c| c.name).ok().as_deref(), Some("api"));
}

#[test]
fn intercept_binds_is_a_boolean_that_needs_a_listener() -> std::io::Result<()> {
    assert!(!parsed("command: [x]\nlisten: ':0'\n").intercept_binds);
    let config = parsed("command: [x]\nlisten: ':0'\nintercept_binds: true\n");
    assert!(config.intercept_binds);
    let err = parse("command: [x]\nintercept_binds: often\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("intercept_binds") || err.contains("boolean"),
        "{err}"
    );
    let dir = tempfile::tempdir()?;
    let path = write_service(dir.path(), "command: [sh]\nintercept_binds: true\n");
    let err = load_file(&path).expect_err("no listener").to_string();
    assert!(
        err.starts_with(&format!("{}:2:1: ", path.display())),
        "{err}"
    );
    assert!(err.contains("has none"), "{err}");
    let path = write_service(
        dir.path(),
        "command: [sh]\nlisten: /tmp/zd-intercept.sock\nintercept_binds: true\n",
    );
    assert!(load_file(&path).is_ok());
    Ok(())
}
