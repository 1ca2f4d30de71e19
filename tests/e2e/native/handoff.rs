use std::process::Command;

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

/// `zdctl run api` started as systemd starts it: the socket at `fd` passed as fd 3 with
/// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID naming the process that execs zdctl (the
/// shell's $$ survives its exec).
fn activated_run(env: &TestEnv, fd: i32) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" -v run api"])
        .arg(zdctl_bin())
        .env("ZDCTL_RUNTIME_DIR", &env.runtime_dir)
        .env("ZDCTL_CONFIG_DIR", &env.config_dir)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http");
    // SAFETY: dup2 and setpgid are async-signal-safe. dup2 onto 3 clears close-on-exec: this
    // is where the activated socket is made to cross into zdctl.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    cmd
}

#[test]
fn supervisor_started_by_socket_activation_adopts_the_passed_socket() {
    use std::os::fd::AsRawFd;
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    // What systemd does: bind, and pass the socket (see `activated_run`).
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr").to_string();
    let fd = socket.as_raw_fd();
    let cmd = activated_run(&env, fd);
    let status = env.start_command("api", cmd);
    assert_eq!(
        address_of(&status),
        addr,
        "the adopted socket, not a new one"
    );
    let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("inode");
    assert_eq!(status.listeners[0].inode, inode);
    let (code, body) = http_get(&addr, "/env").expect("GET /env");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["listen_fdnames"], "http", "{v}");
    // zdctl's own activation variables did not leak: the child got fresh ones.
    assert_eq!(
        v["listen_pid"].as_str().map(str::to_owned),
        Some(v["pid"].to_string())
    );
}

/// A socket unit with `ReusePort=yes` passes a socket with SO_REUSEPORT set, and systemd
/// keeps its own copy. Steering would count on the supervisor's close of that socket to
/// take it out of its SO_REUSEPORT group, but systemd's copy keeps it there, listening
/// with nobody accepting: after the first restart, new connections would go to it. So an
/// adopted socket is always shared.
#[test]
fn an_activated_socket_with_so_reuseport_is_shared_so_restarts_never_strand_connections() {
    use std::os::fd::AsRawFd;
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    // What systemd does with ReusePort=yes; this test plays systemd and keeps its copy.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    socket.listen(128).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet")
        .to_string();
    let cmd = activated_run(&env, socket.as_raw_fd());
    env.start_command("api", cmd);
    for round in 0..3 {
        assert_code(&env.run_zdctl(&["restart", "api"]), 0);
        for i in 0..20 {
            let (code, _) = http_get(&addr, "/")
                .unwrap_or_else(|e| panic!("request {i} after restart {round}: {e}"));
            assert_eq!(code, 200);
        }
    }
    let status = env.status("api").expect("status");
    assert!(
        status.sockets.iter().all(|s| s.generations.len() <= 1),
        "one shared socket: {:?}",
        status.sockets
    );
    drop(socket);
}
