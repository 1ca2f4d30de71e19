//! Real gunicorn (Debian gunicorn): the driver script (upgrade mode), HUP (new workers,
//! same arbiter) and the USR2 binary upgrade (a new arbiter, then TERM to the old one), each
//! ten times under load.
//!
//! The script runs in upgrade mode only. In HUP mode the arbiter's new workers load the
//! app; one that cannot makes the arbiter halt (gunicorn's "Worker failed to boot"), and
//! the old workers stop with it: no old generation is left to serve, which the script's
//! rollback step requires.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zd_load::load::ConnectionMode;

use super::{
    Peer, assert_fast_rollback, assert_listener_held_by_active, free_port, peer, restart_json,
    restart_times,
};
use crate::support::{
    TestEnv, assert_code, assert_no_failures, is_alive, start_load, stderr, wait_for,
};

/// After an upgrade the arbiter is no longer the peer's child, but it and its workers
/// stay in the peer's process group, which the peer's guard kills.
struct Gunicorn {
    _peer: Peer,
    addr: String,
    pidfile: PathBuf,
}

const APP: &str = "\
def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '3')])
    return [b'ok\\n']
";

/// An app that, once `first-arbiter` exists, only the workers of the arbiter it names can
/// load: a new arbiter's workers fail to boot, the old arbiter's respawned ones do not.
const APP_FOR_THE_FIRST_ARBITER: &str = "\
import os
marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'first-arbiter')
if os.path.exists(marker) and open(marker).read().strip() != str(os.getppid()):
    raise ImportError('this app is broken for every arbiter but the first')

def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '3')])
    return [b'ok\\n']
";

/// gunicorn's configuration: once `no-exec` exists, the child an arbiter forks to
/// execute the new one exits at once instead (`pre_exec` runs in it, before the exec), as
/// a failed exec does.
const CONFIG: &str = "\
import os
def pre_exec(server):
    if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'no-exec')):
        os._exit(1)
";

fn start(env: &TestEnv, program: &Path, mode: &str, app: &str) -> Gunicorn {
    let port = free_port();
    std::fs::write(env.path("app.py"), app).expect("app.py");
    std::fs::write(env.path("gunicorn.conf.py"), CONFIG).expect("gunicorn.conf.py");
    let pidfile = env.path("gunicorn.pid");
    let mut cmd = Command::new(program);
    cmd.arg("--config")
        .arg(env.path("gunicorn.conf.py"))
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--workers", "2", "--graceful-timeout", "10"])
        .arg("--pid")
        .arg(&pidfile)
        .arg("--chdir")
        .arg(env.dir.path())
        .arg("app:app");
    let peer = Peer::spawn(cmd, &env.path("gunicorn.out"));
    let addr = format!("127.0.0.1:{port}");
    wait_for("gunicorn to answer", || {
        crate::support::http_get(&addr, "/").ok()
    });
    wait_for("gunicorn's workers", || {
        let pid = zd_core::pidfile::read(&pidfile).ok()?;
        (crate::support::descendants(pid).len() >= 3).then_some(())
    });
    // settle is also how long the upgrade waits for the old arbiter to fork its new one
    // before it concludes the exec failed; a busy CI machine has taken more than 300 ms.
    env.write_service(
        "wsgi",
        &format!(
            "driver: gunicorn\npidfile: {}\ngunicorn: {{ mode: {mode} }}\nsettle: 1s\n\
             timeout: 30s\n",
            pidfile.display()
        ),
    );
    Gunicorn {
        _peer: peer,
        addr,
        pidfile,
    }
}

#[test]
#[cfg_attr(
    not(has_gunicorn),
    ignore = "gunicorn not installed (Debian package gunicorn)"
)]
#[cfg_attr(
    all(has_gunicorn, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn gunicorn_passes_the_driver_script() {
    let Some(program) = peer("gunicorn_passes_the_driver_script", "gunicorn", "gunicorn") else {
        return;
    };
    let env = TestEnv::new();
    let gunicorn = start(&env, &program, "upgrade", APP_FOR_THE_FIRST_ARBITER);
    // `settle` (1s) is how long the new arbiter serves beside the old one: `top` sees both.
    env.write_service(
        "wsgi",
        &format!(
            "driver: gunicorn\npidfile: {}\ngunicorn: {{ mode: upgrade }}\nsettle: 1s\n\
             timeout: {}\n",
            gunicorn.pidfile.display(),
            super::script::TIMEOUT
        ),
    );
    let pidfile = gunicorn.pidfile.clone();
    let marker = env.path("first-arbiter");
    super::script::run(
        &env,
        super::script::Case {
            name: "wsgi",
            driver: "gunicorn",
            addr: gunicorn.addr.clone(),
            // gunicorn's sync workers close every connection.
            mode: ConnectionMode::Close,
            // From now on only the arbiter that serves can load the app.
            on_failure: super::script::OnFailure::RollsBack,
            break_next: Box::new(move || {
                let serving = zd_core::pidfile::read(&pidfile).expect("pid");
                std::fs::write(&marker, serving.to_string()).expect("first-arbiter");
            }),
            guard: Box::new(gunicorn),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_gunicorn),
    ignore = "gunicorn not installed (Debian package gunicorn)"
)]
fn gunicorn_replaces_its_workers_ten_times_under_load_without_a_failed_request() {
    let Some(program) = peer("gunicorn hup", "gunicorn", "gunicorn") else {
        return;
    };
    let env = TestEnv::new();
    let gunicorn = start(&env, &program, "hup", APP);
    let load = start_load(&gunicorn.addr, 16, ConnectionMode::Close);
    restart_times(&env, "wsgi", 10);
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_gunicorn),
    ignore = "gunicorn not installed (Debian package gunicorn)"
)]
fn gunicorn_upgrades_its_arbiter_ten_times_under_load_without_a_failed_request() {
    let Some(program) = peer("gunicorn upgrade", "gunicorn", "gunicorn") else {
        return;
    };
    let env = TestEnv::new();
    let gunicorn = start(&env, &program, "upgrade", APP);
    let first = zd_core::pidfile::read(&gunicorn.pidfile).expect("pid");
    let load = start_load(&gunicorn.addr, 16, ConnectionMode::Close);
    restart_times(&env, "wsgi", 10);
    assert_listener_held_by_active(&env, "wsgi", &gunicorn.addr);
    assert_no_failures(&load.finish());
    let last = zd_core::pidfile::read(&gunicorn.pidfile).expect("pid");
    assert_ne!(first, last, "the arbiter was not replaced");
    assert!(!is_alive(first), "the first arbiter still runs");
}

#[test]
#[cfg_attr(
    not(has_gunicorn),
    ignore = "gunicorn not installed (Debian package gunicorn)"
)]
fn gunicorn_whose_new_arbiter_cannot_load_the_app_rolls_back_to_the_old_one() {
    let Some(program) = peer("gunicorn upgrade rollback", "gunicorn", "gunicorn") else {
        return;
    };
    let env = TestEnv::new();
    let gunicorn = start(&env, &program, "upgrade", APP_FOR_THE_FIRST_ARBITER);
    let old = zd_core::pidfile::read(&gunicorn.pidfile).expect("pid");
    let load = start_load(&gunicorn.addr, 16, ConnectionMode::Close);
    std::fs::write(env.path("first-arbiter"), old.to_string()).expect("first-arbiter");
    let out = env.run_zdctl(&["restart", "wsgi"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(is_alive(old), "the old arbiter must keep serving");
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_gunicorn),
    ignore = "gunicorn not installed (Debian package gunicorn)"
)]
fn gunicorn_whose_new_arbiter_cannot_be_executed_rolls_back_at_once() {
    let Some(program) = peer("gunicorn upgrade exec", "gunicorn", "gunicorn") else {
        return;
    };
    let test = "gunicorn_whose_new_arbiter_cannot_be_executed_rolls_back_at_once";
    let env = TestEnv::new();
    let gunicorn = start(&env, &program, "upgrade", APP);
    // settle as long as the timeout: a failure told by a timer would take all of it.
    env.write_service(
        "wsgi",
        &format!(
            "driver: gunicorn\npidfile: {}\ngunicorn: {{ mode: upgrade }}\nsettle: 20s\n\
             timeout: 20s\n",
            gunicorn.pidfile.display()
        ),
    );
    let old = zd_core::pidfile::read(&gunicorn.pidfile).expect("pid");
    let tree = crate::support::descendants(old);
    std::fs::write(env.path("no-exec"), "").expect("no-exec");
    let load = start_load(&gunicorn.addr, 16, ConnectionMode::Close);
    let (out, events, elapsed) = restart_json(&env, "wsgi", &[]);
    assert_fast_rollback(test, &out, &events, elapsed, Duration::from_secs(20), &tree);
    // Seen alive before it exited ("the new master … exited before it was up") or only
    // once dead ("no new master appeared"): either way the old one serves on.
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the old master (pid {old}) keeps serving")),
        "{err}"
    );
    assert!(is_alive(old), "the old arbiter must keep serving");
    assert_eq!(zd_core::pidfile::read(&gunicorn.pidfile).expect("pid"), old);
    assert_no_failures(&load.finish());
}
