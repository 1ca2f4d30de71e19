//! A real nginx, daemonizing as it does by default, upgraded three times the documented way
//! (USR2 to the old master, QUIT to it once the new master is up) under pidwatch.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::harness::{
    TestEnv, descendants, find_program, is_alive, parent_of, peers_available, pidwatch_bin,
    read_pid, wait_for, wait_until,
};
use super::supervisors::{Status, service_dir, svstat};

const UPGRADES: usize = 3;

/// nginx with its own prefix, pid file, logs and temp paths in the test dir, listening on
/// a free port of 127.0.0.1.
struct Nginx {
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    fn configure(env: &TestEnv) -> Self {
        let prefix = env.path("nginx");
        std::fs::create_dir_all(prefix.join("tmp")).expect("nginx prefix");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let p = prefix.display();
        // Workers run as root under a root test so that they can use the temp dir.
        let user = if nix::unistd::geteuid().is_root() {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {p}/tmp/body;\n\
             proxy_temp_path {p}/tmp/proxy;\n fastcgi_temp_path {p}/tmp/fastcgi;\n\
             uwsgi_temp_path {p}/tmp/uwsgi;\n scgi_temp_path {p}/tmp/scgi;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
        );
        std::fs::write(prefix.join("nginx.conf"), conf).expect("nginx.conf");
        Self { prefix, port }
    }

    fn pidfile(&self) -> PathBuf {
        self.prefix.join("nginx.pid")
    }

    /// The command line, with nginx's absolute path: the binary upgrade re-executes argv[0].
    fn args(&self) -> Vec<String> {
        let nginx = find_program("nginx").expect("nginx is installed");
        let p = self.prefix.display();
        vec![
            nginx.display().to_string(),
            "-p".into(),
            format!("{p}/"),
            "-c".into(),
            format!("{p}/nginx.conf"),
            "-e".into(),
            format!("{p}/error.log"),
        ]
    }

    /// One bounded request to our own port on 127.0.0.1.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reply = String::new();
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply.starts_with("HTTP/1.1 200")
    }

    /// The documented binary upgrade: USR2 to the old master, wait for the new master's pid
    /// file, QUIT to the old master. Returns the new master once pidwatch follows and has
    /// adopted it.
    fn upgrade(&self, pidwatch: Pid, following: impl Fn(Pid) -> bool) -> Pid {
        let old = read_pid(&self.pidfile()).expect("nginx.pid names the master");
        kill(old, Signal::SIGUSR2).expect("USR2 to the old master");
        let oldbin = self.prefix.join("nginx.pid.oldbin");
        let new = wait_for("the new master to write nginx.pid", || {
            read_pid(&self.pidfile()).filter(|p| *p != old && read_pid(&oldbin) == Some(old))
        });
        wait_until("pidwatch to follow the new master", || following(new));
        kill(old, Signal::SIGQUIT).expect("QUIT to the old master");
        wait_until("the old master to exit", || !is_alive(old));
        wait_until("pidwatch to adopt the new master", || {
            parent_of(new) == Some(pidwatch)
        });
        assert!(self.answers(), "nginx does not answer after an upgrade");
        new
    }
}

fn stderr_follows(stderr: &str, pid: Pid) -> bool {
    stderr.contains(&format!("following pid {pid}\n"))
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
fn nginx_survives_three_binary_upgrades_under_pidwatch_and_stops_on_term() {
    let test = "nginx_survives_three_binary_upgrades_under_pidwatch_and_stops_on_term";
    if !peers_available(test, &["nginx"]) {
        return;
    }
    let mut env = TestEnv::new();
    let nginx = Nginx::configure(&env);
    let mut cmd = Command::new(pidwatch_bin());
    cmd.arg("--pidfile")
        .arg(nginx.pidfile())
        .arg("--")
        .args(nginx.args());
    let index = env.spawn("pidwatch", &mut cmd);
    let pidwatch = env.proc(index).pid();
    let stderr_path = env.path("pidwatch.stderr");
    let following = |pid: Pid| {
        stderr_follows(
            &std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            pid,
        )
    };

    // The launcher exits at once; pidwatch stays and adopts the daemonized master.
    let master = wait_for("pidwatch to follow the daemonized master", || {
        read_pid(&nginx.pidfile()).filter(|p| following(*p))
    });
    wait_until("the master to be re-parented to pidwatch", || {
        parent_of(master) == Some(pidwatch)
    });
    wait_until("nginx to answer", || nginx.answers());
    let mut masters = vec![master];
    for _ in 0..UPGRADES {
        masters.push(nginx.upgrade(pidwatch, following));
        assert!(
            env.proc(index).is_running(),
            "pidwatch exited during an upgrade"
        );
    }
    let tree = descendants(pidwatch);
    env.proc(index).signal(Signal::SIGTERM);
    assert_eq!(
        env.proc(index).exit_code(),
        0,
        "nginx's own exit status on TERM"
    );
    for pid in tree.iter().chain(&masters) {
        assert!(!is_alive(*pid), "nginx process {pid} survived");
    }
}

#[test]
#[cfg_attr(
    not(has_nginx),
    ignore = "nginx not installed (Debian package nginx-light)"
)]
#[cfg_attr(
    all(has_nginx, not(has_daemontools)),
    ignore = "daemontools not installed (Debian package daemontools)"
)]
fn daemontools_supervise_never_sees_nginx_upgrades() {
    let test = "daemontools_supervise_never_sees_nginx_upgrades";
    if !peers_available(test, &["nginx", "supervise", "svc", "svstat"]) {
        return;
    }
    let mut env = TestEnv::new();
    let nginx = Nginx::configure(&env);
    let service: Vec<String> = nginx.args().iter().map(|a| format!("'{a}'")).collect();
    let dir = service_dir(&env, &nginx.pidfile(), &service.join(" "));
    let supervise = find_program("supervise").expect("checked above");
    let index = env.spawn("supervise", Command::new(supervise).arg(&dir));
    let stderr_path = env.path("pidwatch.stderr");
    let following = |pid: Pid| {
        stderr_follows(
            &std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            pid,
        )
    };

    let up = |dir: &Path| match svstat(dir) {
        Some(Status::Up { pid, seconds }) => Some((pid, seconds)),
        _ => None,
    };
    let (pidwatch, mut uptime) = wait_for("supervise to report pidwatch up", || up(&dir));
    wait_until("pidwatch to follow the master", || {
        read_pid(&nginx.pidfile()).is_some_and(&following)
    });
    wait_until("nginx to answer", || nginx.answers());
    for round in 0..UPGRADES {
        let master = nginx.upgrade(pidwatch, following);
        let (pid, seconds) = up(&dir).unwrap_or_else(|| panic!("down after upgrade {round}"));
        assert_eq!(pid, pidwatch, "supervise saw an exit at upgrade {round}");
        assert!(seconds >= uptime);
        uptime = seconds;
        assert!(is_alive(master));
    }
    let tree = descendants(pidwatch);
    Command::new("svc")
        .arg("-d")
        .arg(&dir)
        .status()
        .expect("svc -d");
    wait_until("supervise to report the service down", || {
        svstat(&dir) == Some(Status::Down)
    });
    for pid in &tree {
        assert!(!is_alive(*pid), "nginx process {pid} survived svc -d");
    }
    Command::new("svc")
        .arg("-x")
        .arg(&dir)
        .status()
        .expect("svc -x");
    env.proc(index).wait_exit();
}
