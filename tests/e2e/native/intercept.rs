//! `intercept_binds`: programs that bind their own port, unmodified, under `zdctl run`.
//!
//! Each generation's `bind` to the service's listener gets the generation's own socket
//! (steered handoff), so restarts of `python3 -m http.server`, a Go server that calls
//! `ListenAndServe` and a Node server that calls `listen(PORT)` refuse no connection; the
//! Go and Node servers, which stop gracefully, lose no request at all. Binds to other
//! addresses go through untouched. A supervisor that cannot use seccomp user notification
//! refuses to start.
//!
//! Needs `python3`, `node` (Debian package `nodejs`), lighttpd and a Go toolchain
//! (`zd_tests::go`); a test whose peer is missing is ignored, or fails under
//! `ZD_REQUIRE_PEERS=1`.

use std::path::Path;

use zd_load::load::{ConnectionMode, FailureKind, LoadReport};

use crate::support::*;

const RESTARTS: usize = 20;
const CLIENTS: usize = 8;

use crate::drivers::{free_port, peer as on_path, skip};

/// The loads of [`restarts_under_load`]: clients that open a connection per request and
/// clients that keep theirs (and send a request again on a new connection when the
/// server closed the idle one, as HTTP clients do).
struct Reports {
    per_request: LoadReport,
    keep_alive: LoadReport,
}

impl Reports {
    fn refused(&self) -> u64 {
        [&self.per_request, &self.keep_alive]
            .iter()
            .map(|r| {
                r.failures_by_kind()
                    .get(&FailureKind::Refused)
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Runs `command` (which binds `127.0.0.1:PORT` itself) as a service with `listen:
/// 127.0.0.1:PORT` and `intercept_binds: true`, restarts it [`RESTARTS`] times under
/// load, and returns the loads' reports. Every restart must complete, each generation
/// proven ready by `accepting`.
fn restarts_under_load(name: &str, command: &[String], port: u16) -> Reports {
    restarts_under_load_with(name, command, port, "")
}

/// [`restarts_under_load`] with `extra` added to the service file.
fn restarts_under_load_with(name: &str, command: &[String], port: u16, extra: &str) -> Reports {
    let mut env = TestEnv::new();
    let command: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
    env.write_service(
        "api",
        &format!(
            "command: [{}]\nlisten: 127.0.0.1:{port}\nintercept_binds: true\nready: accepting\n\
             {extra}",
            command.join(", ")
        ),
    );
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    let per_request = start_load(&addr, CLIENTS, ConnectionMode::Close);
    let mut retrying = load_config(&addr, CLIENTS, ConnectionMode::KeepAlive);
    retrying.retry_idle_close = true;
    let keep_alive = start_configured_load(retrying);
    for _ in 0..RESTARTS {
        let restart = env.run_zdctl(&["restart", "api"]);
        assert_code(&restart, 0);
        assert!(
            stdout(&restart).contains("restarted 'api'"),
            "{}",
            stdout(&restart)
        );
    }
    let reports = Reports {
        per_request: per_request.finish(),
        keep_alive: keep_alive.finish(),
    };
    let log = env.log("api");
    let bound = log.matches("the program's bind got the listener").count();
    assert!(
        bound > RESTARTS,
        "{bound} binds got the listener in {} generations:\n{log}",
        RESTARTS + 1
    );
    eprintln!(
        "{name}: {RESTARTS} restarts, failed: {} of {} with a connection per request {:?}, \
         {} of {} with keep-alive {:?} ({} retried on a new connection)",
        reports.per_request.failed(),
        reports.per_request.total(),
        reports.per_request.failures_by_kind(),
        reports.keep_alive.failed(),
        reports.keep_alive.total(),
        reports.keep_alive.failures_by_kind(),
        reports.keep_alive.retried(),
    );
    assert!(reports.per_request.total() > 0 && reports.keep_alive.total() > 0);
    reports
}

/// `python3 -m http.server` exits at once on SIGTERM and may lose the requests it had
/// accepted: those failures are printed, and any other kind fails the test.
#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn python_http_server_binding_its_own_port_is_never_refused_across_restarts() {
    let test = "python_http_server_binding_its_own_port_is_never_refused_across_restarts";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let port = free_port();
    let dir = tempfile::tempdir().expect("a directory to serve");
    std::fs::write(dir.path().join("index.html"), "hello\n").expect("write index.html");
    let command = [
        python.display().to_string(),
        "-m".to_owned(),
        "http.server".to_owned(),
        port.to_string(),
        "--bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--directory".to_owned(),
        dir.path().display().to_string(),
    ];
    let reports = restarts_under_load("python3 -m http.server", &command, port);
    assert_eq!(reports.refused(), 0, "connections were refused");
    // What it loses are requests it had accepted when its SIGTERM came (reset or cut
    // short), never one that waited in vain: http.server asks for a backlog of 5, which
    // would drop connections under this load (timeouts), and the listener keeps the
    // service's.
    for report in [&reports.per_request, &reports.keep_alive] {
        let kinds = report.failures_by_kind();
        assert!(
            kinds
                .keys()
                .all(|k| matches!(k, FailureKind::Reset | FailureKind::ShortRead)),
            "{kinds:?}"
        );
    }
}

#[test]
#[cfg_attr(
    not(has_go),
    ignore = "go not built; run ../shared/peers/build.sh target/peers"
)]
fn go_listen_and_serve_loses_no_request_across_restarts() {
    let test = "go_listen_and_serve_loses_no_request_across_restarts";
    let go = match zd_tests::go::toolchain() {
        Ok(go) => go,
        Err(why) => return skip(test, &why),
    };
    let dir = tempfile::tempdir().expect("a build directory");
    let bin = zd_tests::go::build_listen_and_serve_server(&go, dir.path()).expect("the Go server");
    let port = free_port();
    let command = [bin.display().to_string(), format!("127.0.0.1:{port}")];
    let reports = restarts_under_load("Go ListenAndServe", &command, port);
    assert_eq!(reports.per_request.failed(), 0, "connection per request");
    assert_eq!(reports.keep_alive.failed(), 0, "keep-alive");
}

/// lighttpd with a plain configuration of its own (`server.bind`, `server.port`), run in
/// the foreground; SIGINT is its graceful stop (it closes its listening socket and
/// finishes its requests), SIGTERM would drop them.
#[test]
#[cfg_attr(
    not(has_lighttpd),
    ignore = "lighttpd not installed (Debian package lighttpd)"
)]
fn lighttpd_with_its_own_port_loses_no_request_across_restarts() {
    let test = "lighttpd_with_its_own_port_loses_no_request_across_restarts";
    let Some(lighttpd) = on_path(test, "lighttpd", "lighttpd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory to serve");
    std::fs::write(dir.path().join("index.html"), "hello\n").expect("write index.html");
    let port = free_port();
    let config = dir.path().join("lighttpd.conf");
    std::fs::write(
        &config,
        format!(
            "server.document-root = \"{}\"\nserver.bind = \"127.0.0.1\"\n\
             server.port = {port}\nindex-file.names = (\"index.html\")\n",
            dir.path().display()
        ),
    )
    .expect("write the configuration");
    let command = [
        lighttpd.display().to_string(),
        "-D".to_owned(),
        "-f".to_owned(),
        config.display().to_string(),
    ];
    let reports = restarts_under_load_with("lighttpd", &command, port, "stop_signal: INT\n");
    assert_eq!(reports.per_request.failed(), 0, "connection per request");
    assert_eq!(reports.keep_alive.failed(), 0, "keep-alive");
}

const NODE_SERVER: &str = "\
const http = require('http');
const port = Number(process.argv[2]);
const generation = process.env.ZD_GENERATION;
const server = http.createServer((req, res) => res.end(`generation ${generation}\\n`));
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
";

#[test]
#[cfg_attr(not(has_node), ignore = "node not installed (Debian package nodejs)")]
fn node_listen_loses_no_request_across_restarts() {
    let test = "node_listen_loses_no_request_across_restarts";
    let Some(node) = on_path(test, "node", "nodejs") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory for the script");
    let script = dir.path().join("server.js");
    std::fs::write(&script, NODE_SERVER).expect("write the Node server");
    let port = free_port();
    let command = [
        node.display().to_string(),
        script.display().to_string(),
        port.to_string(),
    ];
    let reports = restarts_under_load("Node listen", &command, port);
    assert_eq!(reports.per_request.failed(), 0, "connection per request");
    assert_eq!(reports.keep_alive.failed(), 0, "keep-alive");
}

/// Binds what the service does not listen on (another port, port 0), connects out, then
/// binds the service's port and waits in accept on it. Writes one line per check.
const OTHER_BINDS: &str = "\
import os, socket, sys
port, other, peer, report = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lines = []
a = socket.socket()
a.bind(('127.0.0.1', other))
lines.append('other port kept: %s' % (a.getsockname()[1] == other))
b = socket.socket()
b.bind(('127.0.0.1', 0))
lines.append('port 0 got a port of its own: %s' % (b.getsockname()[1] not in (0, port, other)))
c = socket.create_connection(('127.0.0.1', peer))
lines.append('connected out: %s' % (c.getpeername()[1] == peer))
s = socket.socket()
s.bind(('127.0.0.1', port))
handed = os.fstat(s.fileno()).st_ino == os.fstat(3).st_ino
separate = os.fstat(a.fileno()).st_ino != os.fstat(3).st_ino != os.fstat(b.fileno()).st_ino
lines.append('listener handed over: %s' % handed)
lines.append('other sockets separate: %s' % separate)
with open(report + '.tmp', 'w') as f:
    f.write('\\n'.join(lines) + '\\n')
os.rename(report + '.tmp', report)
s.listen()
s.accept()
";

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn binds_to_other_addresses_and_outgoing_connections_are_untouched() {
    let test = "binds_to_other_addresses_and_outgoing_connections_are_untouched";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let mut env = TestEnv::new();
    let script = env.path("other_binds.py");
    std::fs::write(&script, OTHER_BINDS).expect("write the script");
    let report = env.path("report");
    let peer = std::net::TcpListener::bind("127.0.0.1:0").expect("a peer to connect to");
    let peer_port = peer.local_addr().expect("peer address").port();
    let (port, other) = (free_port(), free_port());
    env.write_service(
        "binds",
        &format!(
            "command: [{:?}, {:?}, '{port}', '{other}', '{peer_port}', {:?}]\n\
             listen: 127.0.0.1:{port}\nintercept_binds: true\n",
            python.display().to_string(),
            script.display().to_string(),
            report.display().to_string(),
        ),
    );
    env.start("binds", &["run", "binds"]);
    let got = wait_for("the script's report", || read(&report));
    assert_eq!(
        got,
        "other port kept: True\n\
         port 0 got a port of its own: True\n\
         connected out: True\n\
         listener handed over: True\n\
         other sockets separate: True\n"
    );
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A python3 wrapper that makes seccomp(2) fail with EPERM (as a sandbox that denies it
/// would), then execs its arguments.
const DENY_SECCOMP: &str = "\
import ctypes, os, platform, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
arch, nr = {'x86_64': (0xC000003E, 317), 'aarch64': (0xC00000B7, 277)}[platform.machine()]
def stmt(code, k, jt=0, jf=0):
    return struct.pack('HBBI', code, jt, jf, k)
prog = b''.join([
    stmt(0x20, 4), stmt(0x15, arch, 0, 3),
    stmt(0x20, 0), stmt(0x15, nr, 0, 1),
    stmt(0x06, 0x00050000 | 1),
    stmt(0x06, 0x7fff0000),
])
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack('HxxxxxxQ', len(prog) // 8, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(nr, 1, 0, fbuf) != 0:
    sys.exit('cannot install the filter: %s' % os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
";

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_sandbox_without_seccomp_user_notification_fails_the_start_with_a_clear_error() {
    let test = "a_sandbox_without_seccomp_user_notification_fails_the_start_with_a_clear_error";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let env = TestEnv::new();
    let wrapper = env.path("deny_seccomp.py");
    std::fs::write(&wrapper, DENY_SECCOMP).expect("write the wrapper");
    let mut child = std::process::Command::new(python)
        .arg(&wrapper)
        .arg(zdctl_bin())
        .args(["run", "--name", "denied", "--listen", "127.0.0.1:0"])
        .args(["--intercept-binds", "--", "sleep", "60"])
        .env("ZDCTL_RUNTIME_DIR", env.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run zdctl under the wrapper");
    // A zdctl that started anyway would run until stopped: give it a deadline, then stop
    // it (SIGTERM: it stops its generation too).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait for zdctl").is_none() {
        if std::time::Instant::now() > deadline {
            // The wrapper exec'd zdctl, so the child's pid is zdctl's.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
            panic!("zdctl ran with intercept_binds where seccomp(2) fails");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("zdctl's output");
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("'intercept_binds'")
            && err.contains("seccomp user notification is not available"),
        "{err}"
    );
}

/// Removes a stale socket file at its path, binds it, writes whether it got the listener
/// and answers every connection with its generation.
const UNIX_SERVER: &str = "\
import os, socket, sys
path, report = sys.argv[1], sys.argv[2]
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
with open(report + '.tmp', 'w') as f:
    f.write('%s\\n' % (os.fstat(s.fileno()).st_ino == os.fstat(3).st_ino))
os.rename(report + '.tmp', report)
while True:
    c, _ = s.accept()
    c.sendall(('generation %s\\n' % os.environ['ZD_GENERATION']).encode())
    c.close()
";

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_program_that_unlinks_its_socket_path_before_binding_keeps_the_listener() {
    let test = "a_program_that_unlinks_its_socket_path_before_binding_keeps_the_listener";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let mut env = TestEnv::new();
    let script = env.path("unix_server.py");
    std::fs::write(&script, UNIX_SERVER).expect("write the script");
    let socket = env.path("app.sock");
    let report = env.path("report");
    env.write_service(
        "unix",
        &format!(
            "command: [{:?}, {:?}, {:?}, {:?}]\nlisten: {:?}\nintercept_binds: true\n",
            python.display().to_string(),
            script.display().to_string(),
            socket.display().to_string(),
            report.display().to_string(),
            socket.display().to_string(),
        ),
    );
    env.start("unix", &["run", "unix"]);
    let ask = || {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).expect("read the answer");
        answer
    };
    // The first generation is the service from its start: wait for its report.
    assert_eq!(wait_for("the first report", || read(&report)), "True\n");
    assert_eq!(ask(), "generation 1\n");
    std::fs::remove_file(&report).expect("remove the report");
    assert_code(&env.run_zdctl(&["restart", "unix"]), 0);
    assert_eq!(wait_for("the second report", || read(&report)), "True\n");
    assert_eq!(ask(), "generation 2\n");
    assert!(
        env.log("unix")
            .contains("unlink of the listener's socket file was skipped"),
        "{}",
        env.log("unix")
    );
}

/// `intercept_binds` turned on by a restart where seccomp(2) is refused: the new
/// generation cannot install its filter and is rolled back, saying why; the old one
/// still serves.
#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_restart_that_turns_interception_on_in_a_sandbox_without_seccomp_rolls_back() {
    let test = "a_restart_that_turns_interception_on_in_a_sandbox_without_seccomp_rolls_back";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let mut env = TestEnv::new();
    let wrapper = env.path("deny_seccomp.py");
    std::fs::write(&wrapper, DENY_SECCOMP).expect("write the wrapper");
    env.fixture_service("api", &[], "");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&wrapper)
        .arg(zdctl_bin())
        .args(["-v", "run", "api"])
        .env("ZDCTL_RUNTIME_DIR", &env.runtime_dir)
        .env("ZDCTL_CONFIG_DIR", &env.config_dir);
    let status = env.start_command("api", cmd);
    let addr = address_of(&status);
    env.fixture_service("api", &[], "intercept_binds: true\n");
    let restart = env.run_zdctl(&["restart", "api"]);
    assert_code(&restart, 1);
    let said = format!("{}{}", stdout(&restart), stderr(&restart));
    assert!(
        said.contains("installing the seccomp filter of intercept_binds failed"),
        "{said}"
    );
    let (code, body) = http_get(&addr, "/").expect("the old generation answers");
    assert_eq!(code, 200);
    assert!(body.contains("generation=1"), "{body}");
}

/// Binds a UDP socket to the service's port, writes whether it got the listener, and
/// answers every datagram with its generation.
const UDP_SERVER: &str = "\
import os, socket, sys
port, report = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', port))
with open(report + '.tmp', 'w') as f:
    f.write('%s\\n' % (os.fstat(s.fileno()).st_ino == os.fstat(3).st_ino))
os.rename(report + '.tmp', report)
while True:
    _, peer = s.recvfrom(512)
    s.sendto(('generation %s' % os.environ['ZD_GENERATION']).encode(), peer)
";

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_udp_bind_to_the_listener_gets_the_generations_socket() {
    let test = "a_udp_bind_to_the_listener_gets_the_generations_socket";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let mut env = TestEnv::new();
    let script = env.path("udp_server.py");
    std::fs::write(&script, UDP_SERVER).expect("write the script");
    let report = env.path("report");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    env.write_service(
        "dns",
        &format!(
            "command: [{:?}, {:?}, '{port}', {:?}]\nlisten: udp://127.0.0.1:{port}\n\
             intercept_binds: true\nready: alive:200ms\n",
            python.display().to_string(),
            script.display().to_string(),
            report.display().to_string(),
        ),
    );
    env.start("dns", &["run", "dns"]);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("a read timeout");
    let ask = || {
        client
            .send_to(b"which", ("127.0.0.1", port))
            .expect("send a datagram");
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).expect("an answer");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(wait_for("the first report", || read(&report)), "True\n");
    assert_eq!(ask(), "generation 1");
    std::fs::remove_file(&report).expect("remove the report");
    assert_code(&env.run_zdctl(&["restart", "dns"]), 0);
    assert_eq!(wait_for("the second report", || read(&report)), "True\n");
    assert_eq!(ask(), "generation 2");
}

/// An unmodified UDP echo that binds its own port and answers each datagram `SEQ` with
/// `SEQ GENERATION`; it exits at once on SIGTERM.
const UDP_ECHO: &str = "\
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', int(sys.argv[1])))
generation = os.environ['ZD_GENERATION'].encode()
while True:
    data, peer = s.recvfrom(64)
    s.sendto(data + b' ' + generation, peer)
";

/// The UDP echo restarted 20 times while a client sends numbered datagrams: every one is
/// answered, by the generation promoted when it was sent or a later one, and none is
/// refused (a refusal fails the receiver). Each generation is proven ready by `accepting`:
/// its process blocked in recvfrom on the socket its bind was given.
#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_udp_echo_binding_its_own_port_answers_every_datagram_across_restarts() {
    let test = "a_udp_echo_binding_its_own_port_answers_every_datagram_across_restarts";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory for the script");
    let script = dir.path().join("udp_echo.py");
    std::fs::write(&script, UDP_ECHO).expect("write the echo");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let yaml = format!(
        "command: [{:?}, {:?}, '{port}']\nlisten: udp://127.0.0.1:{port}\n\
         intercept_binds: true\nready: accepting\nhandoff_wait: 10s\n",
        python.display().to_string(),
        script.display().to_string(),
    );
    let run = super::udp::restarts_of("intercepted UDP echo", &yaml);
    let lost = run.lost();
    assert!(
        lost.is_empty(),
        "{} of {} datagrams got no answer, the first: {:?}",
        lost.len(),
        run.sent(),
        &lost[..lost.len().min(10)]
    );
    // The datagrams lasted through every restart: the last generation answered too.
    let by_generation = run.by_generation();
    assert!(by_generation.contains_key(&21), "{by_generation:?}");
    let older = run.answered_by_older();
    assert!(
        older.is_empty(),
        "answered by a generation older than the promoted one: {:?}",
        &older[..older.len().min(10)]
    );
}

/// Under `intercept_binds`, a program whose own port option names another port than the
/// listener's is not handed the listener: the readiness timeout says where it listens
/// and that its port must be a listener's.
#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_program_that_binds_another_port_is_rolled_back_with_where_it_listens() {
    let test = "a_program_that_binds_another_port_is_rolled_back_with_where_it_listens";
    let Some(python) = on_path(test, "python3", "python3") else {
        return;
    };
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let own = free_port();
    let script = format!(
        "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', {own}))\ns.listen()\n\
         s.accept()\n"
    );
    env.write_service(
        "api",
        &format!(
            "command: [{:?}, '-c', {script:?}]\nlisten: http=127.0.0.1:0\n\
             intercept_binds: true\nready: {{checks: [accepting], timeout: 3s}}\n",
            python.display().to_string(),
        ),
    );
    let restart = env.run_zdctl(&["restart", "api"]);
    assert_code(&restart, 1);
    let said = format!("{}{}", stdout(&restart), stderr(&restart));
    assert!(
        said.contains(&format!("listens on a socket of its own, 127.0.0.1:{own}"))
            && said.contains("intercept_binds hands over only a bind of a listener's address"),
        "{said}"
    );
}

/// Binds the port in its first argument and writes `NoNewPrivs Seccomp GOT_LISTENER` of
/// its own `/proc/self/status` to the file in its second.
const PRIVS: &str = "\
import os, socket, sys
s = socket.socket()
s.bind(('127.0.0.1', int(sys.argv[1])))
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())
got = os.fstat(s.fileno()).st_ino == os.fstat(3).st_ino
with open(sys.argv[2] + '.tmp', 'w') as f:
    f.write('%s %s %s\\n' % (status['NoNewPrivs'].strip(), status['Seccomp'].strip(), got))
os.rename(sys.argv[2] + '.tmp', sys.argv[2])
s.listen()
s.accept()
";

/// Under a root supervisor (CAP_SYS_ADMIN) the filter needs no `no_new_privs`, so setuid
/// programs of the service keep working; under any other user the child sets it, and the
/// interception works the same.
#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn no_new_privs_is_set_only_where_the_kernel_requires_it() {
    let test = "no_new_privs_is_set_only_where_the_kernel_requires_it";
    // Debian's, which every user may run (a python3 first on root's PATH may live in a
    // home directory nobody cannot enter).
    let python = std::path::PathBuf::from("/usr/bin/python3");
    if !python.is_file() {
        return skip(test, "no /usr/bin/python3 (Debian package: python3)");
    }
    if !nix::unistd::geteuid().is_root() {
        return skip(test, "it needs root to run a supervisor as another user");
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let env = TestEnv::new();
    // Reachable by nobody: the script, and per user a directory of its own for the
    // report and its supervisor's runtime files.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open the test's directory");
    const NOBODY: u32 = 65534;
    let script = env.path("privs.py");
    std::fs::write(&script, PRIVS).expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let report_of = |uid: u32| {
        let port = free_port();
        let theirs = env.path(&format!("user-{uid}"));
        std::fs::create_dir(&theirs).expect("a directory for the user");
        nix::unistd::chown(&theirs, Some(uid.into()), Some(uid.into())).expect("chown");
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let report = theirs.join("report");
        let mut command = std::process::Command::new(zdctl_bin());
        command
            .args(["run", "--name", &format!("privs{uid}"), "--intercept-binds"])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--"])
            .arg(&python)
            .arg(&script)
            .arg(port.to_string())
            .arg(&report)
            .env("ZDCTL_RUNTIME_DIR", &theirs)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(env.path(&format!("stderr-{uid}"))).expect("a log"))
            .uid(uid)
            .gid(uid);
        let mut child = command.spawn().expect("zdctl run");
        let deadline = std::time::Instant::now() + DEADLINE;
        let got = loop {
            if let Some(got) = read(&report) {
                break got;
            }
            let ended = child.try_wait().expect("wait for zdctl").is_some();
            if ended || std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no report from the program as uid {uid}; zdctl said: {}",
                    read(&env.path(&format!("stderr-{uid}"))).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // TERM stops the supervisor and its generation.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = child.wait();
        got
    };
    // Seccomp 2: in filter mode.
    assert_eq!(report_of(0), "0 2 True\n", "as root");
    assert_eq!(report_of(NOBODY), "1 2 True\n", "as nobody");
}
