//! A real nginx (Debian nginx-light): the driver script, binary upgrades under load,
//! rollback after a bad configuration, and the relative-argv[0] trap.
//!
//! The script runs in upgrade mode only. In reload mode (HUP) a configuration nginx
//! rejects shows nowhere but its error log: no process starts or ends. The driver tells
//! that rollback only at its timeout (no new worker, every old one still running), and the
//! script wants a rollback long before the timeout.

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

struct Nginx {
    _launcher: Peer,
    /// The process group of the daemonized master: upgraded masters and all workers stay
    /// in it (fork keeps the group), so killing it ends every nginx process of the test.
    group: i32,
    prefix: PathBuf,
    addr: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A group id stays taken while any process is in the group; once every nginx of
        // the test is gone it may be reused by another test's process (every generation
        // leads its own group). So kill the group only while an nginx is still in it.
        if nginx_in_group(self.group) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether some process named nginx has process group `group`.
fn nginx_in_group(group: i32) -> bool {
    procfs::process::all_processes().is_ok_and(|all| {
        all.flatten()
            .filter_map(|p| p.stat().ok())
            .any(|stat| stat.comm == "nginx" && stat.pgrp == group)
    })
}

fn config(prefix: &Path, port: u16, extra: &str) -> String {
    let p = prefix.display();
    let user = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    format!(
        "{user}\nworker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {p}/tmp/body;\n\
         proxy_temp_path {p}/tmp/proxy;\n fastcgi_temp_path {p}/tmp/fastcgi;\n\
         uwsgi_temp_path {p}/tmp/uwsgi;\n scgi_temp_path {p}/tmp/scgi;\n{extra}\n\
         server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
    )
}

/// nginx daemonized, as it runs by default (a master that still has its launcher as parent
/// ignores USR2), started as `argv0`.
fn start(env: &TestEnv, argv0: &str, program: &Path) -> Nginx {
    let prefix = env.path("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).expect("prefix");
    let port = free_port();
    std::fs::write(prefix.join("nginx.conf"), config(&prefix, port, "")).expect("conf");
    let mut cmd = Command::new(argv0);
    if let Some(dir) = program.parent() {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"));
    let launcher = Peer::spawn(cmd, &env.path("nginx.out"));
    let pidfile = prefix.join("nginx.pid");
    let master = wait_for("nginx's pidfile", || zd_core::pidfile::read(&pidfile).ok());
    // The daemon may write its pidfile before it calls setsid(): until then it is still
    // in the launcher's group, and a guard that kept that group would miss every nginx
    // process of the test.
    let group = wait_for("nginx's master to lead its own process group", || {
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(master))).ok()?;
        (group.as_raw() == master).then_some(master)
    });
    wait_for("the pidfile to name an nginx master", || {
        std::fs::read_to_string(format!("/proc/{master}/cmdline"))
            .is_ok_and(|c| c.starts_with("nginx: master process"))
            .then_some(())
    });
    let addr = format!("127.0.0.1:{port}");
    wait_for("nginx to answer", || {
        crate::support::http_get(&addr, "/").ok()
    });
    env.write_service(
        "web",
        &format!(
            "driver: nginx\npidfile: {}/nginx.pid\nnginx: {{ mode: upgrade }}\nsettle: 300ms\n\
             timeout: 20s\n",
            prefix.display()
        ),
    );
    Nginx {
        _launcher: launcher,
        group,
        prefix,
        addr,
    }
}

fn master(nginx: &Nginx) -> i32 {
    zd_core::pidfile::read(&nginx.prefix.join("nginx.pid")).expect("nginx pid")
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
#[cfg_attr(
    all(has_nginx, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn nginx_passes_the_driver_script() {
    let Some(program) = peer("nginx_passes_the_driver_script", "nginx", "nginx-light") else {
        return;
    };
    let env = TestEnv::new();
    let nginx = start(&env, &program.display().to_string(), &program);
    // The new master must be up for `settle` before the old one is told to go: a second
    // in which both generations run, long enough for `top` (200ms refresh) to show both.
    env.write_service(
        "web",
        &format!(
            "driver: nginx\npidfile: {}/nginx.pid\nnginx: {{ mode: upgrade }}\nsettle: 1s\n\
             timeout: {}\n",
            nginx.prefix.display(),
            super::script::TIMEOUT
        ),
    );
    let conf = nginx.prefix.join("nginx.conf");
    super::script::run(
        &env,
        super::script::Case {
            name: "web",
            driver: "nginx",
            addr: nginx.addr.clone(),
            // nginx closes idle keep-alive connections when its old workers stop.
            mode: ConnectionMode::Close,
            on_failure: super::script::OnFailure::RollsBack,
            break_next: Box::new(move || {
                std::fs::write(&conf, "this is not nginx syntax;\n").expect("break the config");
            }),
            guard: Box::new(nginx),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
fn nginx_upgrades_ten_times_under_load_without_a_failed_request() {
    let Some(program) = peer("nginx upgrade", "nginx", "nginx-light") else {
        return;
    };
    let env = TestEnv::new();
    let nginx = start(&env, &program.display().to_string(), &program);
    let load = start_load(&nginx.addr, 16, ConnectionMode::Close);
    restart_times(&env, "web", 10);
    assert_listener_held_by_active(&env, "web", &nginx.addr);
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
fn nginx_with_a_broken_new_configuration_rolls_back_to_the_old_master() {
    let Some(program) = peer("nginx rollback", "nginx", "nginx-light") else {
        return;
    };
    let env = TestEnv::new();
    let nginx = start(&env, &program.display().to_string(), &program);
    let old = master(&nginx);
    let load = start_load(&nginx.addr, 16, ConnectionMode::Close);
    std::fs::write(
        nginx.prefix.join("nginx.conf"),
        "this is not nginx syntax;\n",
    )
    .expect("break the config");
    let tree = crate::support::descendants(old);
    let (out, events, elapsed) = restart_json(&env, "web", &[]);
    let test = "nginx_with_a_broken_new_configuration_rolls_back_to_the_old_master";
    assert_fast_rollback(test, &out, &events, elapsed, Duration::from_secs(20), &tree);
    assert!(is_alive(old), "the old master must keep serving");
    assert_eq!(master(&nginx), old);
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
fn nginx_started_by_a_relative_name_is_left_serving_when_it_cannot_exec_itself() {
    let Some(program) = peer("nginx relative argv0", "nginx", "nginx-light") else {
        return;
    };
    let env = TestEnv::new();
    let nginx = start(&env, "nginx", &program);
    // settle as long as the timeout: a failure told by a timer would take all of it.
    env.write_service(
        "web",
        &format!(
            "driver: nginx\npidfile: {}/nginx.pid\nnginx: {{ mode: upgrade }}\nsettle: 20s\n\
             timeout: 20s\n",
            nginx.prefix.display()
        ),
    );
    let old = master(&nginx);
    let tree = crate::support::descendants(old);
    let load = start_load(&nginx.addr, 16, ConnectionMode::Close);
    let (out, events, elapsed) = restart_json(&env, "web", &[]);
    let test = "nginx_started_by_a_relative_name_is_left_serving_when_it_cannot_exec_itself";
    assert_fast_rollback(test, &out, &events, elapsed, Duration::from_secs(20), &tree);
    let err = stderr(&out);
    assert!(err.contains("relative argv[0]"), "{err}");
    assert!(is_alive(old), "the old master must keep serving");
    assert_no_failures(&load.finish());
}

/// nginx with a service file in HUP-reload mode (same master, new workers); its master;
/// the master with its workers, master first.
fn start_reloading(env: &TestEnv, program: &Path, timeout: &str) -> (Nginx, i32, Vec<i32>) {
    let nginx = start(env, &program.display().to_string(), program);
    env.write_service(
        "web",
        &format!(
            "driver: nginx\npidfile: {}/nginx.pid\nnginx: {{ mode: reload }}\nsettle: 300ms\n\
             timeout: {timeout}\n",
            nginx.prefix.display()
        ),
    );
    let old = master(&nginx);
    let workers = crate::support::descendants(old);
    (nginx, old, workers)
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
fn nginx_reloads_ten_times_under_load_without_a_failed_request() {
    let Some(program) = peer("nginx reload", "nginx", "nginx-light") else {
        return;
    };
    let env = TestEnv::new();
    let (nginx, old, first) = start_reloading(&env, &program, "20s");
    let load = start_load(&nginx.addr, 16, ConnectionMode::Close);
    restart_times(&env, "web", 10);
    assert_no_failures(&load.finish());
    assert_eq!(master(&nginx), old, "a reload keeps the master");
    let now = crate::support::descendants(old);
    assert!(
        now.iter().skip(1).all(|w| !first.contains(w)),
        "an old worker still runs: {first:?} → {now:?}"
    );
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
fn nginx_reload_with_a_broken_configuration_rolls_back_and_the_old_workers_keep_serving() {
    let Some(program) = peer("nginx reload rollback", "nginx", "nginx-light") else {
        return;
    };
    let env = TestEnv::new();
    let (nginx, _, workers) = start_reloading(&env, &program, "3s");
    let load = start_load(&nginx.addr, 16, ConnectionMode::Close);
    std::fs::write(
        nginx.prefix.join("nginx.conf"),
        "this is not nginx syntax;\n",
    )
    .expect("break the config");
    let out = env.run_zdctl(&["restart", "web"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("0 of 2 new workers"), "{err}");
    assert!(err.contains("old workers still running"), "{err}");
    assert!(
        workers.iter().all(|w| is_alive(*w)),
        "nginx stopped a worker"
    );
    assert_no_failures(&load.finish());
}
