//! Starting each peer on a free loopback port, its restart, and cleaning it up.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use zd_load::load::ConnectionMode;
use zd_load::verify::Restarter;

/// How long a peer may take to start, reload or stop.
const DEADLINE: Duration = Duration::from_secs(10);

/// A shell function for restart commands: `gone PID` is true once the process has exited.
/// A zombie counts as gone: it has closed its sockets, and a process that was reparented
/// (a daemon, or a server started in the background by an exited shell) stays a zombie
/// until the init of the machine or container reaps it, which some do only every second
/// or two; `kill -0` would count that wait as part of the flip.
const GONE: &str = "gone() { s=$(cat /proc/$1/stat 2>/dev/null) || return 0; \
                    case \"${s##*) }\" in Z*) return 0;; esac; return 1; }; ";

pub struct Peer {
    pub tool: &'static str,
    pub mode: ConnectionMode,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Zdctl,
    /// `zdctl run` with a Go net/http server (Serve, then Shutdown on SIGTERM) instead of
    /// the fixture, under this handoff.
    Go(&'static str),
    Baseline,
    StartServer,
    Nginx,
    Haproxy,
    StopThenStart,
    ReusePort,
}

const fn peer(tool: &'static str, mode: ConnectionMode, kind: Kind) -> Peer {
    Peer { tool, mode, kind }
}

pub const ALL: &[Peer] = &[
    peer("zdctl run", ConnectionMode::KeepAlive, Kind::Zdctl),
    peer("zdctl run", ConnectionMode::Close, Kind::Zdctl),
    peer(
        "zdctl run, Go net/http, handoff: steered",
        ConnectionMode::Close,
        Kind::Go("steered"),
    ),
    peer(
        "zdctl run, Go net/http, handoff: shared",
        ConnectionMode::Close,
        Kind::Go("shared"),
    ),
    peer(
        "baseline: no restart, one fixture start",
        ConnectionMode::Close,
        Kind::Baseline,
    ),
    peer(
        "start_server (HUP)",
        ConnectionMode::Close,
        Kind::StartServer,
    ),
    peer("nginx binary upgrade", ConnectionMode::Close, Kind::Nginx),
    peer("haproxy -W reload", ConnectionMode::Close, Kind::Haproxy),
    peer(
        "naive stop-then-start",
        ConnectionMode::Close,
        Kind::StopThenStart,
    ),
    peer(
        "naive SO_REUSEPORT handover",
        ConnectionMode::Close,
        Kind::ReusePort,
    ),
];

/// Why a peer cannot be measured on this machine.
pub struct Unavailable(pub String);

impl From<anyhow::Error> for Unavailable {
    fn from(e: anyhow::Error) -> Self {
        Unavailable(format!("{e:#}"))
    }
}

/// A started peer; dropping it stops every process it made and removes its directory.
pub struct Running {
    pub address: String,
    pub restarter: Restarter,
    children: Vec<Child>,
    pidfiles: Vec<PathBuf>,
    /// Removed last, after the processes that use it are gone.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut pids: Vec<i32> = self
            .pidfiles
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
            .collect();
        pids.extend(
            self.children
                .iter()
                .filter_map(|c| i32::try_from(c.id()).ok()),
        );
        for &pid in &pids {
            // SAFETY: plain kill(2) of processes this harness started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let start = Instant::now();
        while start.elapsed() < DEADLINE && pids.iter().any(|&p| alive(p)) {
            for child in &mut self.children {
                let _ = child.try_wait();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for &pid in &pids {
            // SAFETY: as above; each child leads its own process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); read its state instead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

pub fn start(peer: &Peer) -> Result<Running, Unavailable> {
    let dir = tempfile::Builder::new()
        .prefix("zd-compare-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free port")?
        .port();
    let address = format!("127.0.0.1:{port}");
    let me = std::env::current_exe().context("cannot find this executable")?;
    let mut running = Running {
        address: address.clone(),
        restarter: Restarter::Command {
            command: "false".to_owned(),
        },
        children: Vec::new(),
        pidfiles: Vec::new(),
        dir: None,
    };
    let d = dir.path().to_path_buf();
    let q = |p: &Path| shell_quote(&p.display().to_string());
    match peer.kind {
        Kind::Zdctl | Kind::Baseline => {
            let zdctl = me.with_file_name("zdctl");
            if !zdctl.exists() {
                return Err(Unavailable(
                    "zdctl is not built next to this binary: cargo build --release -p zdctl".into(),
                ));
            }
            let name = format!("cmp-{}", std::process::id());
            let mut cmd = Command::new(&zdctl);
            cmd.args(["run", "--name", &name, "--listen", &address, "--"])
                .arg(&me)
                .arg("fixture")
                .env("ZDCTL_RUNTIME_DIR", &d);
            running.children.push(spawn(cmd, &d.join("zdctl.log"))?);
            running.restarter = if matches!(peer.kind, Kind::Baseline) {
                // No restart: a second copy of the program starts on a port of its own and
                // exits after 10 ms (status 4), about as long as a zdctl flip takes. What
                // the requests lose to that is what starting a process costs them here;
                // the shell that runs it is one more process start.
                command(format!(
                    "{} fixture --listen 127.0.0.1:0 --exit-after 10ms >/dev/null 2>&1; \
                     [ $? -eq 4 ]",
                    q(&me)
                ))
            } else {
                Restarter::Service {
                    socket: Some(d.join(format!("{name}.sock"))),
                    name,
                }
            };
        }
        Kind::Go(handoff) => {
            let zdctl = me.with_file_name("zdctl");
            if !zdctl.exists() {
                return Err(Unavailable(
                    "zdctl is not built next to this binary: cargo build --release -p zdctl".into(),
                ));
            }
            let go = crate::go::toolchain().map_err(Unavailable)?;
            let server = crate::go::build_shutdown_server(&go, &d)?;
            let name = format!("cmp-go-{}", std::process::id());
            let file = d.join(format!("{name}.yaml"));
            std::fs::write(
                &file,
                format!(
                    "command: [{}]\nlisten: {address}\nhandoff: {handoff}\n",
                    q(&server)
                ),
            )
            .context("the service file")?;
            let mut cmd = Command::new(&zdctl);
            cmd.arg("run")
                .arg("--config")
                .arg(&file)
                .env("ZDCTL_RUNTIME_DIR", &d);
            running.children.push(spawn(cmd, &d.join("zdctl.log"))?);
            running.restarter = Restarter::Service {
                socket: Some(d.join(format!("{name}.sock"))),
                name,
            };
        }
        Kind::StartServer => {
            let program = installed("start_server")?;
            let pid = d.join("start_server.pid");
            let mut cmd = Command::new(program);
            cmd.arg(format!("--port={address}"))
                .arg(format!("--pid-file={}", pid.display()))
                .arg("--interval=1")
                .arg("--")
                .arg(&me)
                .arg("fixture");
            running
                .children
                .push(spawn(cmd, &d.join("start_server.log"))?);
            // start_server stops the old worker --interval after starting the new one.
            running.restarter = command(format!("kill -HUP $(cat {}) && sleep 1.5", q(&pid)));
            wait_file(&pid)?;
        }
        Kind::Nginx => {
            let program = installed("nginx")?;
            let conf = d.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(&d, &address)).context("nginx.conf")?;
            let mut cmd = Command::new(&program);
            cmd.arg("-p")
                .arg(format!("{}/", d.display()))
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(d.join("error.log"));
            let status = cmd
                .stdin(Stdio::null())
                .status()
                .context("cannot run nginx")?;
            if !status.success() {
                return Err(Unavailable(format!(
                    "nginx did not start ({status}): {}",
                    std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
                )));
            }
            let pid = d.join("nginx.pid");
            running.pidfiles = vec![pid.clone(), d.join("nginx.pid.oldbin")];
            wait_file(&pid)?;
            running.restarter = command(format!(
                "{GONE}p={pid}; old=$(cat $p); kill -USR2 $old; i=0; \
                 until [ -s $p.oldbin ] && [ -s $p ] && [ \"$(cat $p)\" != \"$old\" ]; do \
                 sleep 0.01; i=$((i+1)); [ $i -gt 1000 ] && exit 1; done; \
                 sleep 0.1; kill -WINCH $old; sleep 0.1; kill -QUIT $old; \
                 until gone $old; do sleep 0.01; done",
                pid = q(&pid)
            ));
        }
        Kind::Haproxy => {
            let program = installed("haproxy")?;
            let cfg = d.join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_cfg(&address)).context("haproxy.cfg")?;
            let socket = d.join("master.sock");
            let mut cmd = Command::new(program);
            cmd.arg("-W").arg("-S").arg(&socket).arg("-f").arg(&cfg);
            running.children.push(spawn(cmd, &d.join("haproxy.log"))?);
            running.restarter = command(format!("{} haproxy-reload {}", q(&me), q(&socket)));
        }
        Kind::StopThenStart | Kind::ReusePort => {
            // Stop-then-start runs the fixture; the handover runs a server that stops the
            // way a simple one does (naive.rs), on a port both processes bind.
            let server = if matches!(peer.kind, Kind::ReusePort) {
                "naive-server"
            } else {
                "fixture"
            };
            let pid = d.join("server.pid");
            let start = format!(
                "{} {server} --listen {address} >/dev/null 2>&1 & echo $! > {}",
                q(&me),
                q(&pid)
            );
            let status = Command::new("/bin/sh")
                .args(["-c", &start])
                .status()
                .context("sh")?;
            if !status.success() {
                return Err(Unavailable(format!("cannot start the {server}")));
            }
            running.pidfiles.push(pid.clone());
            let wait_old = "until gone $old; do sleep 0.01; done";
            running.restarter = command(if matches!(peer.kind, Kind::StopThenStart) {
                // Stop, wait until it is gone, start the new one, give it time to bind.
                format!(
                    "{GONE}old=$(cat {p}); kill $old; {wait_old}; {start}; sleep 0.1",
                    p = q(&pid)
                )
            } else {
                // Start the new one on the same port, give it time to bind, then stop the
                // old one, which keeps its listener open until it exits.
                format!(
                    "{GONE}old=$(cat {p}); {start}; sleep 0.1; kill $old; {wait_old}",
                    p = q(&pid)
                )
            });
        }
    }
    wait_answer(&address)?;
    running.dir = Some(dir);
    Ok(running)
}

fn command(command: String) -> Restarter {
    Restarter::Command { command }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The full path of an installed program (nginx and haproxy re-exec themselves by it).
fn installed(program: &str) -> Result<PathBuf, Unavailable> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Unavailable(format!("'{program}' is not installed")))
}

/// Starts `cmd` in its own process group with its output in `log`.
fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).context("log file")?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().context("log file")?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > DEADLINE {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn wait_file(path: &Path) -> anyhow::Result<()> {
    wait_until(&format!("'{}'", path.display()), || {
        std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
    })
}

fn wait_answer(address: &str) -> anyhow::Result<()> {
    wait_until(&format!("an answer on {address}"), || {
        http_status(address).is_ok_and(|s| s == 200)
    })
}

fn http_status(address: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(address)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(buf.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0))
}

fn nginx_conf(dir: &Path, address: &str) -> String {
    format!(
        "pid {d}/nginx.pid;\nworker_processes 1;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  server {{\n    listen {address} backlog=4096;\n    \
         location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
        d = dir.display()
    )
}

fn haproxy_cfg(address: &str) -> String {
    format!(
        "global\n  maxconn 4096\n\ndefaults\n  mode http\n  timeout client 10s\n  \
         timeout server 10s\n  timeout connect 5s\n\n\
         frontend demo\n  bind {address}\n  \
         http-request return status 200 content-type text/plain string ok\n"
    )
}

/// One master CLI command; the master closes the connection after answering.
fn master_command(socket: &Path, command: &str) -> anyhow::Result<String> {
    // After a reload the master re-executes itself and its socket refuses for a moment.
    let started = Instant::now();
    let mut s = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(_) if started.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot reach the master socket '{}'", socket.display())
                });
            }
        }
    };
    // A reload re-executes the master, which may keep this connection open: read until
    // the master closes it or stays silent for a while.
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `reload` over the master socket (asynchronous in HAProxy 2.6), then waits until `show
/// proc` lists no old worker.
pub fn haproxy_reload(socket: &Path) -> anyhow::Result<()> {
    master_command(socket, "reload")?;
    // The master re-executes itself: its socket comes back when it is done.
    std::thread::sleep(Duration::from_millis(50));
    wait_until("the old haproxy workers to exit", || {
        master_command(socket, "show proc").is_ok_and(|out| {
            let mut old = false;
            let mut new_workers = 0;
            let mut old_workers = 0;
            for line in out.lines() {
                if line.starts_with('#') {
                    old = line.contains("old workers");
                    continue;
                }
                if line.contains("worker") {
                    if old {
                        old_workers += 1;
                    } else {
                        new_workers += 1;
                    }
                }
            }
            new_workers > 0 && old_workers == 0
        })
    })
}
