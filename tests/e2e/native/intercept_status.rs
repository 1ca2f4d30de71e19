//! What `status`, `status --json`, `top` and the supervisor's log say of `intercept_binds`:
//! the service intercepts, and per generation which listener its binds got, how often and
//! on which pid and fd, the binds let through and the unlinks skipped. A service that does
//! not intercept shows none of it.
//!
//! Needs `python3` and, for the `top` test, tmux: without them the tests are ignored, or
//! fail under `ZD_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use zd_core::proto::{GenerationState, InterceptInfo, Status};

use crate::support::*;
use crate::top::{Tmux, row, start_top};

/// The program: binds the service's TCP port itself and another port (which goes through),
/// removes the unix listener's socket file and binds its path (the unlink is skipped, the
/// bind gets the listener), then answers each TCP connection with its generation.
const PROGRAM: &str = "\
import os, socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.bind(('127.0.0.1', port))
s.listen(16)
other = socket.socket()
other.bind(('127.0.0.1', 0))
try:
    os.unlink(path)
except FileNotFoundError:
    pass
u = socket.socket(socket.AF_UNIX)
u.bind(path)
u.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(('generation %s\\n' % os.environ['ZD_GENERATION']).encode())
    c.close()
";

/// The interpreter itself (not a pyenv or asdf shim, which would run a shell first), or
/// a loud skip.
fn python(test: &str) -> Option<PathBuf> {
    let found = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(stdout(&o).trim()));
    if found.is_none() {
        assert!(
            std::env::var_os("ZD_REQUIRE_PEERS").is_none_or(|v| v != "1"),
            "ZD_REQUIRE_PEERS=1 but there is no python3 on PATH (Debian package: python3)"
        );
        say_skipped(&format!(
            "{test}: no python3 on PATH (Debian package: python3)"
        ));
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes and starts `api`: [`PROGRAM`] with `intercept_binds`, a TCP listener on `port`
/// and a unix one at `path`.
fn start_intercepting(env: &mut TestEnv, python: &Path, port: u16, path: &Path) -> Status {
    let command = [
        python.display().to_string(),
        "-c".to_owned(),
        PROGRAM.to_owned(),
        port.to_string(),
        path.display().to_string(),
    ];
    let command: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
    env.write_service(
        "api",
        &format!(
            "command: [{}]\nlisten:\n  - http=127.0.0.1:{port}\n  - sock=unix:{}\n\
             intercept_binds: true\nready: accepting\n",
            command.join(", "),
            path.display()
        ),
    );
    env.start("api", &["run", "api"])
}

/// Waits until the first generation of [`PROGRAM`] has made its last intercepted call (the
/// unix bind): it is active from its start, before the program runs.
fn wait_program_bound(env: &TestEnv) {
    wait_for("the program's binds", || {
        let status = env.status("api")?;
        let info = status.generations.first()?.intercept.clone()?;
        (info.listeners.get(1)?.binds == 1).then_some(())
    });
}

/// `generation`'s counts in `status`.
fn counts(status: &Status, generation: u64) -> InterceptInfo {
    status
        .generations
        .iter()
        .find(|g| g.generation == generation)
        .and_then(|g| g.intercept.clone())
        .unwrap_or_else(|| panic!("no intercept counts for generation {generation}: {status:?}"))
}

/// Each generation of [`PROGRAM`]: its TCP bind got `http`, its unix bind `sock` after a
/// skipped unlink, its bind of port 0 went through; everything on process `pid`.
fn assert_one_program_run(info: &InterceptInfo, pid: i32) {
    assert_eq!(
        (info.binds_continued, info.binds_failed),
        (1, 0),
        "{info:?}"
    );
    assert_eq!(info.last_error, None);
    let [http, sock] = &info.listeners[..] else {
        panic!("two listeners: {info:?}");
    };
    assert_eq!(
        (http.listener.as_str(), http.binds),
        ("http", 1),
        "{info:?}"
    );
    assert_eq!(
        (sock.listener.as_str(), sock.binds, sock.unlinks_skipped),
        ("sock", 1, 1),
        "{info:?}"
    );
    assert_eq!(http.unlinks_skipped, 0);
    for l in [http, sock] {
        assert_eq!(l.last_pid, Some(pid), "{info:?}");
        // The program's own socket's fd: past 0-2 and the inherited listeners' 3 and 4.
        assert!(l.last_fd.is_some_and(|fd| fd > 4), "{info:?}");
    }
}

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn status_json_and_the_log_show_what_each_generations_binds_got_across_a_restart() {
    let test = "status_json_and_the_log_show_what_each_generations_binds_got_across_a_restart";
    let Some(python) = python(test) else {
        return;
    };
    let mut env = TestEnv::new();
    let port = free_port();
    let path = env.path("api.sock");
    let first = start_intercepting(&mut env, &python, port, &path);
    let old_pid = active_pid(&first);
    wait_program_bound(&env);
    let restart = env.run_zdctl(&["restart", "api"]);
    assert_code(&restart, 0);
    let status = env.status("api").expect("status");
    let new_pid = active_pid(&status);
    assert_eq!(status.active_generation, Some(2));
    // Clients reach the new generation through the socket its own bind got.
    let (code, body) = greeting(port);
    assert_eq!((code, body.as_str()), (0, "generation 2"));
    // The unlink was skipped: the listener's socket file is still there and connectable.
    std::os::unix::net::UnixStream::connect(&path).expect("the unix listener's file");

    // --json: the service intercepts, and each generation, the exited one too, has its
    // counts, in the documented field names.
    let out = env.run_zdctl(&["status", "api", "--json"]);
    assert_code(&out, 0);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(value["intercept_binds"], true, "{value}");
    let parsed: Status = serde_json::from_value(value.clone()).expect("a status");
    assert!(parsed.intercept_binds);
    assert_one_program_run(&counts(&parsed, 2), new_pid);
    assert_one_program_run(&counts(&parsed, 1), old_pid);
    let exited = parsed.generations.iter().find(|g| g.generation == 1);
    assert_eq!(exited.map(|g| g.state), Some(GenerationState::Exited));
    let active = value["generations"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["generation"] == 2))
        .expect("generation 2 in the JSON");
    let http = &active["intercept"]["listeners"][0];
    assert_eq!(http["listener"], "http", "{active}");
    assert_eq!(http["address"], format!("127.0.0.1:{port}"), "{active}");
    assert_eq!(http["binds"], 1, "{active}");
    assert_eq!(http["last_pid"], new_pid, "{active}");
    assert_eq!(active["intercept"]["binds_continued"], 1, "{active}");
    assert_eq!(active["intercept"]["binds_failed"], 0, "{active}");
    // What top shows: the snapshot carries the same.
    assert_eq!(value["snapshot"]["intercept_binds"], true, "{value}");
    assert_eq!(
        value["snapshot"]["generations"][0]["intercept"]["listeners"][0]["binds"], 1,
        "{value}"
    );

    // The text.
    let out = env.run_zdctl(&["status", "api"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(
            "  binds: intercepted; a bind of a listener's address gets the generation's socket\n"
        ),
        "{text}"
    );
    for (generation, pid) in [(2, new_pid), (1, old_pid)] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("  {generation}  ")) && l.contains(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row of generation {generation}:\n{text}"));
        assert!(
            line.ends_with("2 got a listener, 1 let through, 1 unlink skipped"),
            "{text}"
        );
    }
    // The listeners the binds got: GEN LISTENER ADDRESS BINDS LAST-PID (LAST-FD) UNLINKS.
    let handed: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.len() == 7 && matches!(c[1], "http" | "sock"))
        .map(|c| [c[0], c[1], c[2], c[3], c[4], c[6]].join(" "))
        .collect();
    let (tcp, unix) = (format!("127.0.0.1:{port}"), path.display());
    assert_eq!(
        handed,
        [
            format!("2 http {tcp} 1 {new_pid} 0"),
            format!("2 sock {unix} 1 {new_pid} 1"),
            format!("1 http {tcp} 1 {old_pid} 0"),
            format!("1 sock {unix} 1 {old_pid} 1"),
        ],
        "{text}"
    );
    assert!(
        text.contains("GEN  LISTENER  ADDRESS")
            && text.contains("LAST PID  LAST FD  UNLINKS SKIPPED"),
        "{text}"
    );

    // The supervisor's log: every answer that changed something, with its generation, and
    // each generation's totals when its interception ended.
    let log = env.log("api");
    for generation in [1, 2] {
        let tagged = |message: &str| {
            log.lines()
                .filter(|l| l.contains(message) && l.contains(&format!("generation={generation}")))
                .count()
        };
        assert_eq!(tagged("the program's bind got the listener"), 2, "{log}");
        assert_eq!(
            tagged("the program's unlink of the listener's socket file was skipped"),
            1,
            "{log}"
        );
    }
    let ended = log
        .lines()
        .find(|l| l.contains("bind interception ended") && l.contains("generation=1"))
        .unwrap_or_else(|| panic!("generation 1's interception did not say it ended:\n{log}"));
    for field in ["handed=2", "continued=1", "failed=0", "unlinks_skipped=1"] {
        assert!(ended.contains(field), "{field} in {ended}");
    }
}

#[test]
fn a_service_without_intercept_binds_shows_nothing_of_it() {
    let mut env = TestEnv::new();
    env.fixture_service("plain", &[], "");
    env.start("plain", &["run", "plain"]);
    assert_code(&env.run_zdctl(&["restart", "plain"]), 0);
    let out = env.run_zdctl(&["status", "plain"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(!text.contains("BINDS") && !text.contains("binds"), "{text}");
    let out = env.run_zdctl(&["status", "plain", "--json"]);
    assert_code(&out, 0);
    let json = stdout(&out);
    assert!(!json.contains("intercept"), "{json}");
}

#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
#[cfg_attr(
    all(has_python3, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn top_says_the_service_intercepts_binds_and_counts_them_per_generation() {
    let test = "top_says_the_service_intercepts_binds_and_counts_them_per_generation";
    let Some(python) = python(test) else {
        return;
    };
    let mut env = TestEnv::new();
    let port = free_port();
    let path = env.path("api.sock");
    let status = start_intercepting(&mut env, &python, port, &path);
    let pid = active_pid(&status);
    let tmux = Tmux::new();
    let exit_file = env.path("top.exit");
    start_top(&env, &tmux, "api --interval 500ms", &exit_file);

    // The last cell of the row: the binds that got a listener, both once the program has
    // made them (the first generation is active from its start).
    let screen = tmux.wait_screen("generation 1's two binds", |s| {
        row(s, 1, pid).is_some_and(|cells| cells.last() == Some(&"2"))
    });
    assert!(screen.contains("· binds intercepted"), "{screen}");
    assert!(screen.contains(" BINDS "), "{screen}");

    tmux.keys("Enter");
    let screen = tmux.wait_screen("the generation's detail", |s| {
        s.contains("binds: 2 got a listener, 1 let through, 1 unlink skipped")
    });
    assert!(
        screen.contains(&format!(
            "http 127.0.0.1:{port}: 1 bind, last to pid {pid} fd "
        )),
        "{screen}"
    );
    crate::top::quit_top(&tmux, "q", &exit_file);
}

/// Connects to `127.0.0.1:port` and reads the one line [`PROGRAM`] writes: `(0, line)`,
/// or the error's errno and message.
fn greeting(port: u16) -> (i32, String) {
    use std::io::Read;
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(mut stream) => {
            let mut text = String::new();
            match stream.read_to_string(&mut text) {
                Ok(_) => (0, text.trim().to_owned()),
                Err(e) => (e.raw_os_error().unwrap_or(-1), e.to_string()),
            }
        }
        Err(e) => (e.raw_os_error().unwrap_or(-1), e.to_string()),
    }
}
