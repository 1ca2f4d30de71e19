//! `zdctl run` under systemd `Type=notify`, against a fake service manager: a unix datagram
//! socket the test binds and names in `NOTIFY_SOCKET`, which receives what systemd would
//! (readiness, reloads, status, the stop, and the listeners for the fd store). And the
//! shipped unit, checked by `systemd-analyze verify` when it is installed.

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::support::*;

/// What systemd's end of `NOTIFY_SOCKET` gets: each datagram's text and the fds it carried.
struct FakeManager {
    socket: UnixDatagram,
    path: PathBuf,
}

struct Message {
    text: String,
    fds: Vec<OwnedFd>,
}

impl FakeManager {
    fn new(env: &TestEnv) -> FakeManager {
        let path = env.path("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        FakeManager { socket, path }
    }

    /// The next message; fails the test after [`DEADLINE`] without one.
    fn recv(&self) -> Message {
        let mut buf = vec![0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 8]);
        // Close-on-exec: the stored sockets must reach only the zdctl this test hands them
        // to, not every command it runs.
        let msg = recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("a message on NOTIFY_SOCKET in time");
        let mut fds = Vec::new();
        for c in msg.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: SCM_RIGHTS gave these fds to this process; nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let len = msg.bytes;
        Message {
            text: String::from_utf8_lossy(&buf[..len]).into_owned(),
            fds,
        }
    }

    /// Every message up to and including the first that has `line`.
    fn until(&self, line: &str) -> Vec<Message> {
        let mut seen = Vec::new();
        loop {
            let m = self.recv();
            let done = has_line(&m.text, line);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// The value of `KEY=` in a message.
fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC` counts.
fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

/// Whether every thread of process `pid` has finished exiting. The state of the process
/// alone does not tell: its main thread is a zombie while the others still run their exit,
/// holding its fds, and one woken in `accept` by the client's connection can take it and
/// close it (a reset). A thread that has finished leaves `/proc/PID/task`.
fn all_threads_gone(pid: i32) -> bool {
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks.count() <= 1 && !is_alive(pid),
        Err(_) => true,
    }
}

fn inode(fd: BorrowedFd<'_>) -> u64 {
    nix::sys::stat::fstat(fd).expect("fstat").st_ino
}

#[test]
fn under_notify_socket_the_supervisor_reports_ready_reloads_completed_or_rolled_back_and_the_stop()
{
    let mut env = TestEnv::new();
    // The app reports its own readiness to the NOTIFY_SOCKET each generation gets from
    // zdctl: none of its messages may reach the service manager.
    let marker = env.path("crash");
    let marker_arg = marker.to_str().expect("utf-8 path");
    env.fixture_service(
        "api",
        &["--notify", "--crash-if-exists", marker_arg],
        "ready:\n  checks: [notify]\n",
    );
    let manager = FakeManager::new(&env);
    let mut cmd = env.zdctl();
    cmd.env("NOTIFY_SOCKET", &manager.path)
        .args(["-v", "run", "api"]);
    let status = env.start_command("api", cmd);
    let supervisor = status.supervisor_pid;

    let start = manager.until("READY=1");
    let ready = &start.last().expect("READY=1").text;
    assert_eq!(
        value(ready, "MAINPID"),
        Some(supervisor.to_string().as_str())
    );
    let first = active_pid(&status);
    assert_eq!(
        value(ready, "STATUS"),
        Some(format!("generation 1 (pid {first}) active").as_str()),
        "{:?}",
        texts(&start)
    );
    assert!(
        start.iter().all(|m| m.fds.is_empty()),
        "no fd store was offered (no FDSTORE), so nothing is stored: {:?}",
        texts(&start)
    );
    // The generation's NOTIFY_SOCKET is zdctl's own, not the manager's.
    let (code, body) = http_get(&address_of(&status), "/env").expect("GET /env");
    assert_eq!(code, 200);
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    let theirs = report["notify_socket"].as_str().expect("a NOTIFY_SOCKET");
    assert_ne!(Path::new(theirs), manager.path, "{report}");

    let before = monotonic_usec();
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 0);
    let restart = manager.until("READY=1");
    let reloading = restart
        .iter()
        .find(|m| has_line(&m.text, "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {:?}", texts(&restart)));
    let stamp: u64 = value(&reloading.text, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {:?}", reloading.text));
    assert!(
        (before..=monotonic_usec()).contains(&stamp),
        "MONOTONIC_USEC={stamp} is not on this machine's CLOCK_MONOTONIC during the restart"
    );
    let after = env.status("api").expect("status");
    assert_eq!(after.active_generation, Some(2));
    let ready = &restart.last().expect("READY=1").text;
    assert_eq!(
        value(ready, "STATUS"),
        Some(
            format!(
                "generation 2 (pid {}) active; last restart completed",
                active_pid(&after)
            )
            .as_str()
        )
    );
    assert_eq!(
        value(ready, "MAINPID"),
        Some(supervisor.to_string().as_str())
    );

    // A restart that rolls back leaves the service up: READY=1 again, and the status says
    // what happened.
    std::fs::write(&marker, "").expect("marker");
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    let rollback = manager.until("READY=1");
    assert!(
        rollback.iter().any(|m| has_line(&m.text, "RELOADING=1")),
        "{:?}",
        texts(&rollback)
    );
    let status = value(&rollback.last().expect("READY=1").text, "STATUS").unwrap_or_default();
    let prefix = format!(
        "generation 2 (pid {}) active; last restart rolled back: ",
        active_pid(&after)
    );
    assert!(status.starts_with(&prefix), "{status}");

    let out = env.run_zdctl(&["stop", "api"]);
    assert_code(&out, 0);
    let stop = manager.until("STOPPING=1");
    assert!(
        stop.iter().all(|m| !has_line(&m.text, "READY=1")),
        "{:?}",
        texts(&stop)
    );
    assert_eq!(env.wait_exit("api"), Some(0));
}

#[test]
fn the_fd_store_keeps_the_listener_across_a_crash_of_everything_and_a_new_supervisor_adopts_it() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let manager = FakeManager::new(&env);
    let mut cmd = env.zdctl();
    cmd.env("NOTIFY_SOCKET", &manager.path)
        .env("FDSTORE", "16")
        .args(["-v", "run", "api"]);
    let status = env.start_command("api", cmd);
    let addr = address_of(&status);

    let start = manager.until("READY=1");
    let mut stored: Vec<(String, OwnedFd)> = Vec::new();
    for m in start {
        if has_line(&m.text, "FDSTORE=1") {
            let name = value(&m.text, "FDNAME").expect("FDNAME").to_owned();
            assert_eq!(m.fds.len(), 1, "one fd per listener: {:?}", m.text);
            stored.extend(m.fds.into_iter().map(|fd| (name.clone(), fd)));
        }
    }
    assert_eq!(stored.len(), 1, "the one listener is stored once");
    let (name, fd) = stored.pop().expect("stored");
    assert_eq!(name, "http");
    let stored_inode = inode(fd.as_fd());
    assert_eq!(
        status.listeners[0].inode, stored_inode,
        "the listener itself"
    );

    // A crash of everything: the supervisor, then every process of every generation.
    let supervisor = status.supervisor_pid;
    let tree = descendants(supervisor);
    // SAFETY: kill(2) on processes this test started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    assert_eq!(env.wait_exit("api"), None, "killed by a signal");
    for p in tree.into_iter().filter(|p| *p != supervisor) {
        // SAFETY: as above; they have not been reaped by us, and the dead supervisor
        // cannot start new ones.
        unsafe { libc::kill(p, libc::SIGKILL) };
        wait_for("every thread of a generation's process to be gone", || {
            all_threads_gone(p).then_some(())
        });
    }

    // Only the fake manager holds the socket now: a client is queued, not refused.
    let mut client = std::net::TcpStream::connect(&addr).expect("connect while nothing runs");
    client
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    write!(
        client,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");

    // What systemd does on the restart: the stored fds at 3.., named in LISTEN_FDNAMES,
    // with LISTEN_PID naming the process that execs zdctl (the shell's $$ survives exec).
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" -v run api"])
        .arg(zdctl_bin())
        .env("ZDCTL_RUNTIME_DIR", &env.runtime_dir)
        .env("ZDCTL_CONFIG_DIR", &env.config_dir)
        .env_remove("ZD_LOG")
        .env("NOTIFY_SOCKET", &manager.path)
        .env("FDSTORE", "16")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", &name)
        .stdin(Stdio::null());
    // SAFETY: fcntl and dup2 are async-signal-safe. dup2 onto 3 clears close-on-exec: this
    // is where the stored socket crosses into zdctl.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set.
            let rc = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let again = env.start_command("api", cmd);

    let mut answer = String::new();
    client
        .read_to_string(&mut answer)
        .expect("the queued client is answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(address_of(&again), addr);
    assert_eq!(again.listeners[0].inode, stored_inode, "the same socket");
    // systemd holds it already: the new supervisor does not store it a second time.
    let restart = manager.until("READY=1");
    assert!(
        restart
            .iter()
            .all(|m| m.fds.is_empty() && !has_line(&m.text, "FDSTORE=1")),
        "{:?}",
        texts(&restart)
    );
}

/// The shipped unit, as `systemd-analyze verify` reads it. Its `/usr/bin/zdctl` does not
/// exist here, and verify checks that every command exists: the copy checked is the same
/// file with the built binary's path in its place, nothing else changed.
#[test]
#[cfg_attr(
    not(has_systemd_analyze),
    ignore = "systemd-analyze not installed (Debian package systemd)"
)]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    const TEST: &str = "the_shipped_unit_passes_systemd_analyze_verify";
    let Some(analyze) = crate::drivers::peer(TEST, "systemd-analyze", "systemd") else {
        return;
    };
    let env = TestEnv::new();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/zdctl@.service");
    let unit = std::fs::read_to_string(&shipped).expect("the shipped unit");
    assert!(unit.contains("/usr/bin/zdctl "), "{unit}");
    let zdctl = zdctl_bin();
    let local = unit.replace("/usr/bin/zdctl ", &format!("{} ", zdctl.display()));
    let dir = env.path("units");
    std::fs::create_dir_all(&dir).expect("units dir");
    // An instance of the template, as systemctl would load it.
    let path = dir.join("zdctl@api.service");
    std::fs::write(&path, local).expect("write the unit");
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A machine without a running systemd may get lines about itself; any line about our
    // unit (an unknown key, a bad value, a missing command) fails the test, whatever the
    // exit status.
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("zdctl@")).collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
