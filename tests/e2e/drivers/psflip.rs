//! The psflip driver against the real psflip (tableflip-based): a new psflip per upgrade,
//! the pidfile moved once its child passed the health check; a new child that dies leaves
//! the old psflip serving. psflip hands no socket to its child: it proxies its own
//! listener (passed on by tableflip) to the child's port, which alternates between two
//! ports from one generation to the next (`AB`), so old and new children never share one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zd_load::load::ConnectionMode;

use super::{
    Peer, assert_fast_rollback, assert_listener_held_by_active, built_peer, free_port,
    restart_json, restart_times,
};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, fixture_bin, http_get, is_alive, start_load, stderr,
    wait_for,
};

/// psflip whose health check is `healthy_after` of life, proxying to zd-fixture; once
/// `marker` exists, new children get the `later` flags. `None` when psflip is not built.
///
/// On an upgrade the old psflip stops accepting, then signals its child; a connection it
/// accepted just before still has to reach that child, so the child gets `shutdown.delay`
/// (300 ms) before its stop signal, as an operator of psflip should configure. Without it,
/// 3 of 28,873 requests over ten upgrades were reset: the old proxy dialled a child that
/// had already closed its listener.
fn start(
    env: &TestEnv,
    test: &str,
    later: Option<(&Path, &str)>,
    healthy_after: &str,
    fixture_flags: &str,
) -> Option<(Peer, String, PathBuf)> {
    let psflip = built_peer(test, "psflip", &[])?;
    let pidfile = env.path("psflip.pid");
    let addr = format!("127.0.0.1:{}", free_port());
    let port = format!("{{{{ AB \"{}\" \"{}\" }}}}", free_port(), free_port());
    let fixture = format!(
        "'{}' --listen 127.0.0.1:{port} {fixture_flags}",
        fixture_bin().display()
    );
    let script = match later {
        Some((marker, flags)) => format!(
            "if [ -e '{}' ]; then exec {fixture} {flags}; fi; exec {fixture}",
            marker.display()
        ),
        None => format!("exec {fixture}"),
    };
    let quote = |s: &str| serde_json::to_string(s).expect("a YAML string");
    let config = format!(
        "cmd: ['/bin/sh', '-c', {script}]\npidfile: {pidfile}\nhealthcheck:\n  alive:\n    \
         timeout: {healthy_after}\nshutdown:\n  delay: 300ms\nproxy:\n- listen: {listen}\n  \
         forward: {forward}\n",
        script = quote(&script),
        pidfile = quote(&pidfile.display().to_string()),
        listen = quote(&format!("tcp://{addr}")),
        forward = quote(&format!("tcp://127.0.0.1:{port}")),
    );
    std::fs::write(env.path("psflip.yml"), config).expect("psflip.yml");
    let mut cmd = Command::new(psflip);
    // psflip reads `-c` relative to its working directory only.
    cmd.current_dir(env.dir.path()).args(["-c", "psflip.yml"]);
    let peer = Peer::spawn(cmd, &env.path("psflip.log"));
    wait_for("psflip's pidfile", || zd_core::pidfile::read(&pidfile).ok());
    wait_for("psflip to answer", || http_get(&addr, "/").ok());
    env.write_service(
        "flip",
        &format!(
            "driver: psflip\npidfile: {}\nsettle: 200ms\ntimeout: {}\n",
            pidfile.display(),
            super::script::TIMEOUT
        ),
    );
    Some((peer, addr, pidfile))
}

#[test]
#[cfg_attr(
    not(has_psflip),
    ignore = "psflip not built; run ../shared/peers/build.sh target/peers"
)]
#[cfg_attr(
    all(has_psflip, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn psflip_passes_the_driver_script() {
    let env = TestEnv::new();
    let marker = env.path("broken");
    let later = Some((marker.as_path(), "--crash-at-start"));
    // The old child closes its keep-alive connections over three seconds when it drains,
    // so that `top` sees both generations.
    let Some((peer, addr, _pidfile)) = start(
        &env,
        "psflip_passes_the_driver_script",
        later,
        "300ms",
        "--drain-spread 3s",
    ) else {
        return;
    };
    super::script::run(
        &env,
        super::script::Case {
            name: "flip",
            driver: "psflip",
            addr,
            mode: ConnectionMode::KeepAlive,
            break_next: super::script::touch(marker.clone()),
            on_failure: super::script::OnFailure::RollsBack,
            guard: Box::new(peer),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_psflip),
    ignore = "psflip not built; run ../shared/peers/build.sh target/peers"
)]
fn psflip_upgrades_ten_times_under_load_without_a_failed_request() {
    let env = TestEnv::new();
    let test = "psflip_upgrades_ten_times_under_load_without_a_failed_request";
    let Some((_peer, addr, pidfile)) = start(&env, test, None, "300ms", "") else {
        return;
    };
    let first = zd_core::pidfile::read(&pidfile).expect("pid");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    restart_times(&env, "flip", 10);
    assert_listener_held_by_active(&env, "flip", &addr);
    assert_no_failures(&load.finish());
    let last = zd_core::pidfile::read(&pidfile).expect("pid");
    assert_ne!(first, last);
    assert!(!is_alive(first), "the first psflip still runs");
}

#[test]
#[cfg_attr(
    not(has_psflip),
    ignore = "psflip not built; run ../shared/peers/build.sh target/peers"
)]
fn psflip_keeps_the_old_process_when_the_new_child_dies_before_it_is_healthy() {
    let env = TestEnv::new();
    let test = "psflip_keeps_the_old_process_when_the_new_child_dies_before_it_is_healthy";
    let marker = env.path("broken");
    // New children live 300ms, far short of the 3s health check even on a busy machine.
    let later = Some((marker.as_path(), "--exit-after 300ms"));
    let Some((_peer, addr, pidfile)) = start(&env, test, later, "3s", "") else {
        return;
    };
    let old = zd_core::pidfile::read(&pidfile).expect("pid");
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    let out = env.run_zdctl(&["restart", "flip"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("exited before it took over"), "{err}");
    assert!(is_alive(old), "the old psflip must keep running");
    assert_eq!(zd_core::pidfile::read(&pidfile).expect("pid"), old);
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_psflip),
    ignore = "psflip not built; run ../shared/peers/build.sh target/peers"
)]
fn psflip_rolls_back_at_once_when_the_new_child_dies_at_start() {
    let env = TestEnv::new();
    let test = "psflip_rolls_back_at_once_when_the_new_child_dies_at_start";
    let marker = env.path("broken");
    // A new child that crashes at once: the new psflip gives up and exits within moments,
    // often between two looks of the driver.
    let later = Some((marker.as_path(), "--crash-at-start"));
    let Some((_peer, addr, pidfile)) = start(&env, test, later, "3s", "") else {
        return;
    };
    let old = zd_core::pidfile::read(&pidfile).expect("pid");
    let mut tree = crate::support::descendants(old);
    tree.push(old);
    std::fs::write(&marker, "").expect("marker");
    let load = start_load(&addr, 16, ConnectionMode::Close);
    let (out, events, elapsed) = restart_json(&env, "flip", &[]);
    assert_fast_rollback(test, &out, &events, elapsed, Duration::from_secs(20), &tree);
    assert!(is_alive(old), "the old psflip must keep running");
    assert_eq!(zd_core::pidfile::read(&pidfile).expect("pid"), old);
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_psflip),
    ignore = "psflip not built; run ../shared/peers/build.sh target/peers"
)]
fn psflip_status_shows_psflip_as_the_main_pid_and_its_public_listener_held_by_it() {
    let env = TestEnv::new();
    let test = "psflip_status_shows_psflip_as_the_main_pid_and_its_public_listener_held_by_it";
    let Some((_peer, addr, pidfile)) = start(&env, test, None, "300ms", "") else {
        return;
    };
    let psflip = i64::from(zd_core::pidfile::read(&pidfile).expect("pid"));
    // Its programs print to psflip's output, which zdctl does not read: logs says so.
    let out = env.run_zdctl(&["logs", "flip"]);
    assert_code(&out, 2);
    assert!(
        crate::support::stderr(&out).contains("print to psflip's own output"),
        "{}",
        crate::support::stderr(&out)
    );
    let out = env.run_zdctl(&["status", "flip", "--json"]);
    assert_code(&out, 0);
    let value: serde_json::Value =
        serde_json::from_str(&crate::support::stdout(&out)).expect("status json");
    let active = value["active_generation"]
        .as_u64()
        .expect("active generation");
    assert!(
        value["listeners"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["address"] == addr.as_str())),
        "status lists no listener on {addr}: {value:#}"
    );
    let snapshot = &value["snapshot"];
    let generation = snapshot["generations"]
        .as_array()
        .and_then(|gens| gens.iter().find(|g| g["generation"] == active))
        .unwrap_or_else(|| panic!("no active generation in the snapshot: {value:#}"));
    assert_eq!(generation["main_pid"].as_i64(), Some(psflip), "{value:#}");
    let listener = snapshot["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["address"] == addr.as_str()))
        .unwrap_or_else(|| panic!("the snapshot lists no listener on {addr}: {value:#}"));
    assert_eq!(
        listener["held_by"],
        serde_json::json!([active]),
        "{value:#}"
    );
}
