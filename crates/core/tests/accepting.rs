//! The `accepting` check against real servers: small Python programs that
//! receive a listener as fd 3, the way a generation does, and wait for
//! connections in each of the ways DESIGN §5 lists.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zd_core::proc;
use zd_core::ready::accepting::{AcceptingEvidence, find_accepting};

/// How long a server may take to start and reach its wait.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A Python server in its own process group, killed with its whole group
/// (workers included) when the test ends, however it ends.
struct Server {
    child: Child,
    /// Set once the test itself waited for the child: its pid (and group
    /// id) may then belong to someone else, so it must not be signalled.
    reaped: bool,
}

impl Server {
    /// Starts `python3 -c script` with `listener` as fd 3 and waits until
    /// the script prints its first line (it does so once it has set up and
    /// is about to wait).
    fn start(script: &str, listener: &impl AsRawFd) -> Server {
        let fd = listener.as_raw_fd();
        let mut command = Command::new("python3");
        command
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe calls are allowed; dup2, fcntl and setpgid
        // are, and it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // Our fds are all close-on-exec; the listener must cross
                // exec as fd 3, as the supervisor hands it over. dup2
                // clears close-on-exec on the copy, but is a no-op when the
                // fd already is 3, so clear the flag by hand then.
                let copied = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if copied == -1 || libc::setpgid(0, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("python3 starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let server = Server {
            child,
            reaped: false,
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        assert_eq!(line.trim(), "ready", "the server failed to start");
        server
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    /// Waits for a server that exits by itself.
    fn wait_for_exit(&mut self) {
        self.child.wait().expect("reap the server");
        self.reaped = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: kill has no memory-safety preconditions; the negative pid
        // names the process group the child created for itself.
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("stat own fd")
        .ino()
}

/// Polls the check until it finds evidence; panics after the deadline.
fn evidence(server: &Server, inodes: &[u64]) -> AcceptingEvidence {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match find_accepting(server.pid(), inodes) {
            Ok(Some(evidence)) => return evidence,
            Ok(None) => {}
            Err(err) => panic!("check failed: {err}"),
        }
        assert!(Instant::now() < deadline, "no evidence found in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tcp_listener() -> (TcpListener, Vec<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let inodes = vec![inode(&listener)];
    (listener, inodes)
}

const READY: &str = "import sys\nprint('ready', flush=True)\n";

fn script(setup: &str, wait: &str) -> String {
    format!("import socket, select, os, time\n{setup}\n{READY}{wait}\n")
}

#[test]
fn a_server_blocked_in_accept_is_accepting() {
    let (listener, inodes) = tcp_listener();
    let server = Server::start(
        &script("s = socket.socket(fileno=3)", "s.accept()"),
        &listener,
    );
    let found = evidence(&server, &inodes);
    let expected = AcceptingEvidence::BlockedInAccept {
        pid: server.pid(),
        tid: server.pid(),
        fd: 3,
    };
    assert_eq!(found, expected);
    assert_eq!(
        found.to_string(),
        format!("pid {} is blocked in accept on fd 3", server.pid())
    );
}

#[test]
fn a_server_selecting_on_the_listener_is_accepting() {
    let (listener, inodes) = tcp_listener();
    let wait = "select.select([s], [], [])";
    let server = Server::start(&script("s = socket.socket(fileno=3)", wait), &listener);
    match evidence(&server, &inodes) {
        AcceptingEvidence::Polling {
            pid, fd: 3, how, ..
        } if pid == server.pid() => {
            assert!(["select", "pselect6"].contains(&how), "{how}");
        }
        other => panic!("unexpected evidence: {other}"),
    }
}

#[test]
fn a_server_polling_the_listener_is_accepting() {
    let (listener, inodes) = tcp_listener();
    let setup = "s = socket.socket(fileno=3)\np = select.poll()\np.register(s, select.POLLIN)";
    let server = Server::start(&script(setup, "p.poll()"), &listener);
    match evidence(&server, &inodes) {
        AcceptingEvidence::Polling {
            pid, fd: 3, how, ..
        } if pid == server.pid() => {
            assert!(["poll", "ppoll"].contains(&how), "{how}");
        }
        other => panic!("unexpected evidence: {other}"),
    }
}

#[test]
fn a_server_with_the_listener_in_an_epoll_set_is_accepting() {
    let (listener, inodes) = tcp_listener();
    let setup = "e = select.epoll()\ne.register(3, select.EPOLLIN)";
    let server = Server::start(&script(setup, "e.poll()"), &listener);
    match evidence(&server, &inodes) {
        AcceptingEvidence::EpollRegistered { pid, fd: 3, .. } if pid == server.pid() => {}
        other => panic!("unexpected evidence: {other}"),
    }
}

#[test]
fn a_server_that_only_holds_the_listener_is_not_accepting() {
    let (listener, inodes) = tcp_listener();
    let server = Server::start(&script("", "time.sleep(600)"), &listener);
    // Holding the inherited fd proves nothing: look for a while, and every
    // look must come back empty.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let found = find_accepting(server.pid(), &inodes).expect("tree is readable");
        assert_eq!(found, None);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_worker_forked_by_the_main_process_counts_for_the_generation() {
    let (listener, inodes) = tcp_listener();
    // The main process hands the listener to a worker, closes its own copy
    // and only waits for the worker.
    let setup = "r, w = os.pipe()\npid = os.fork()\n\
        if pid == 0:\n    s = socket.socket(fileno=3)\n    os.close(r)\n    os.close(w)\n    s.accept()\n    os._exit(0)\n\
        os.close(3)\nos.close(w)";
    let server = Server::start(&script(setup, "os.waitpid(pid, 0)"), &listener);
    match evidence(&server, &inodes) {
        AcceptingEvidence::BlockedInAccept { pid, fd: 3, .. } => {
            assert_ne!(pid, server.pid(), "the main process closed its copy");
            assert!(proc::children(server.pid()).contains(&pid));
        }
        other => panic!("unexpected evidence: {other}"),
    }
}

#[test]
fn a_listener_moved_to_another_fd_is_recognised_by_inode() {
    let (listener, inodes) = tcp_listener();
    let setup = "os.dup2(3, 9)\nos.close(3)\ns = socket.socket(fileno=9)";
    let server = Server::start(&script(setup, "s.accept()"), &listener);
    match evidence(&server, &inodes) {
        AcceptingEvidence::BlockedInAccept { fd: 9, .. } => {}
        other => panic!("unexpected evidence: {other}"),
    }
}

#[test]
fn a_unix_listener_is_waited_on_the_same_ways() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = UnixListener::bind(dir.path().join("sock")).expect("bind unix socket");
    let inodes = vec![inode(&listener)];
    let accepting = Server::start(
        &script("s = socket.socket(fileno=3)", "s.accept()"),
        &listener,
    );
    assert!(matches!(
        evidence(&accepting, &inodes),
        AcceptingEvidence::BlockedInAccept { fd: 3, .. }
    ));
    let setup = "s = socket.socket(fileno=3)\np = select.poll()\np.register(s, select.POLLIN)";
    let polling = Server::start(&script(setup, "p.poll()"), &listener);
    assert!(matches!(
        evidence(&polling, &inodes),
        AcceptingEvidence::Polling { fd: 3, .. }
    ));
}

#[test]
fn a_server_that_already_accepted_a_connection_is_accepting() {
    let (listener, inodes) = tcp_listener();
    let local: SocketAddr = listener.local_addr().expect("listener address");
    // The server accepts one connection, then neither accepts nor polls
    // again: only the accepted socket can tell.
    let wait = "c, _ = s.accept()\ntime.sleep(600)";
    let server = Server::start(&script("s = socket.socket(fileno=3)", wait), &listener);
    let _client = TcpStream::connect(local).expect("connect");
    let deadline = Instant::now() + START_DEADLINE;
    let found = loop {
        // Until the server has accepted, it is (correctly) found blocked in
        // accept; wait for the later state.
        match find_accepting(server.pid(), &inodes).expect("tree is readable") {
            Some(found @ AcceptingEvidence::Accepted { .. }) => break found,
            _ => assert!(Instant::now() < deadline, "no accepted connection seen"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let expected = AcceptingEvidence::Accepted {
        pid: server.pid(),
        local,
    };
    assert_eq!(found, expected);
}

#[test]
fn a_generation_that_exited_is_gone() {
    let (listener, inodes) = tcp_listener();
    let mut server = Server::start(&script("", "pass"), &listener);
    server.wait_for_exit();
    let err = find_accepting(server.pid(), &inodes).expect_err("nothing to inspect");
    assert!(matches!(err, proc::ProcError::Gone { .. }), "{err:?}");
}
