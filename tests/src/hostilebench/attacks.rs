//! The attacks. Each starts its own supervisor, drives `ab` at it for the whole attack and
//! returns one [`Row`].

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::load::Ab;
use super::{Row, footprint};
use crate::flipbench::service::{Binaries, Service, service_path};

type Attack = fn(&Binaries, Duration) -> Result<Row>;

pub const ALL: &[(&str, Attack)] = &[
    ("forged-notify", forged_notify),
    ("leftovers", leftovers),
    ("idle-connections", idle_connections),
    ("pipelined-status", pipelined_status),
    ("fifo-service-file", fifo_service_file),
    ("nested-service-file", nested_service_file),
];

const NOBODY: u32 = 65534;

/// One attack's world: the supervisor, its address and the zdctl to drive it with.
struct Target {
    service: Service,
    zdctl: PathBuf,
    address: String,
    rt: tokio::runtime::Runtime,
}

impl Target {
    fn start(binaries: &Binaries, label: &str, yaml: &str) -> Result<Target> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut service = Service::start_file(binaries, label, false, yaml)?;
        let status = service.wait_active(&rt)?;
        let address = status
            .listeners
            .first()
            .map(|l| l.address.clone())
            .context("the service has no listener")?;
        Ok(Target {
            service,
            zdctl: binaries.zdctl.clone(),
            address,
            rt,
        })
    }

    fn run_dir(&self) -> PathBuf {
        self.service.dir().join("run")
    }

    fn service_file(&self) -> PathBuf {
        self.service.dir().join("services.d").join("bench.yaml")
    }

    fn zdctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.zdctl);
        cmd.args(args)
            .env("ZDCTL_RUNTIME_DIR", self.run_dir())
            .env("ZDCTL_CONFIG_DIR", self.service.dir().join("services.d"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn restart(&self) -> Result<bool> {
        Ok(self.zdctl(&["restart", "bench"]).status()?.success())
    }

    /// Whether `zdctl status` answers, successfully, within two seconds.
    fn status_answers(&self) -> bool {
        let Ok(mut child) = self.zdctl(&["status", "bench"]).spawn() else {
            return false;
        };
        let began = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if began.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    fn active_pid(&self) -> Option<i32> {
        let status = self
            .rt
            .block_on(crate::flipbench::service::status(self.service.socket()))?;
        let active = status.active_generation?;
        status
            .generations
            .iter()
            .find(|g| g.generation == active)
            .map(|g| g.pid)
    }

    /// Runs `attack` under `ab` load and fills in the load and footprint columns.
    fn under_load(
        mut self,
        name: &'static str,
        duration: Duration,
        attack: impl FnOnce(&Target, &mut Row) -> Result<()>,
    ) -> Result<Row> {
        let mut row = Row {
            attack: name,
            held: true,
            ..Row::default()
        };
        let before = footprint(&self.service);
        let ab = Ab::start(&self.address, duration)?;
        attack(&self, &mut row)?;
        let report = ab.finish()?;
        let after = footprint(&self.service);
        row.requests = report.complete;
        row.failed = report.failed;
        row.rss_kib = (before.0, after.0);
        row.fds = (before.1, after.1);
        self.service.stop()?;
        Ok(row)
    }
}

/// A helper process that is killed when dropped.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixture_yaml(fixture: &str, args: &[&str], extra: &str) -> String {
    let mut command = vec![serde_json::to_string(fixture).unwrap_or_default()];
    command.extend(args.iter().map(|a| format!("{a:?}")));
    format!(
        "command: [{}]\nlisten: [\"127.0.0.1:0\"]\ndrain_timeout: 5s\n{extra}",
        command.join(", ")
    )
}

/// Another uid sends READY=1 and ERRNO=13 to every notify socket, as fast as it can.
fn forged_notify(binaries: &Binaries, duration: Duration) -> Result<Row> {
    let fixture = service_path(&binaries.fixture)?;
    let notify = "ready:\n  checks: [notify]\n  timeout: 10s\n";
    let good = fixture_yaml(fixture, &["--notify"], notify);
    let target = Target::start(binaries, "notify", &good)?;
    let never = fixture_yaml(fixture, &[], "ready:\n  checks: [notify]\n  timeout: 2s\n");
    target.under_load("forged-notify", duration, |t, row| {
        let dir = t.run_dir();
        let script = format!(
            "import glob, socket, time\nend = time.time() + {secs}\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             while time.time() < end:\n    for p in glob.glob({dir:?} + '/*.notify'):\n        for m in (b'READY=1', b'ERRNO=13'):\n            try: s.sendto(m, p)\n            except OSError: pass\n",
            secs = duration.as_secs(),
            dir = dir.display().to_string(),
        );
        let _attacker = Helper(
            Command::new("python3")
                .args(["-c", &script])
                .uid(NOBODY)
                .gid(NOBODY)
                .stdin(Stdio::null())
                .spawn()
                .context("python3 as nobody")?,
        );
        let deadline = Instant::now() + duration.saturating_sub(Duration::from_secs(3));
        while Instant::now() < deadline {
            row.count_restart(t.restart()?);
        }
        // A generation that never notifies: only a forged READY=1 could promote it.
        std::fs::write(t.service_file(), &never)?;
        let promoted = t.restart()?;
        std::fs::write(t.service_file(), &good)?;
        if promoted {
            row.held = false;
        }
        row.note = format!(
            "a never-ready generation was {}",
            if promoted { "PROMOTED" } else { "rolled back" }
        );
        Ok(())
    })
}

/// Processes of the service's program `sleep 7777`, anywhere on the machine.
fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| {
                let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                std::fs::read(format!("/proc/{pid}/cmdline")).ok()
            })
            .filter(|c| c == b"sleep\x007777\x00")
            .count()
        })
        .unwrap_or(0)
}

/// Every generation leaves a `setsid` helper behind that holds the listener.
fn leftovers(binaries: &Binaries, duration: Duration) -> Result<Row> {
    let fixture = service_path(&binaries.fixture)?;
    let yaml = format!(
        "command: [\"sh\", \"-c\", {}]\nlisten: [\"127.0.0.1:0\"]\ndrain_timeout: 5s\n",
        serde_json::to_string(&format!("setsid sleep 7777 & exec {fixture}"))?
    );
    let target = Target::start(binaries, "leftovers", &yaml)?;
    let mut row = target.under_load("leftovers", duration, |t, row| {
        let deadline = Instant::now() + duration.saturating_sub(Duration::from_secs(2));
        let mut most = 0;
        while Instant::now() < deadline {
            row.count_restart(t.restart()?);
            most = most.max(sleepers());
        }
        row.note = format!("at most {most} helper(s) alive after a restart");
        Ok(())
    })?;
    let left = sleepers();
    row.note.push_str(&format!("; {left} left after the stop"));
    row.held &= left == 0;
    Ok(row)
}

/// Raises this process's open-files limit to its hard limit.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The children of `pid` that have not exited.
fn live_children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
                == Some(false)
        })
        .collect()
}

fn nofile_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    }
}

/// 21,000 idle connections to the control socket while the active generation crashes and
/// the service is restarted by SIGHUP.
fn idle_connections(binaries: &Binaries, duration: Duration) -> Result<Row> {
    raise_nofile();
    let fixture = service_path(&binaries.fixture)?;
    let target = Target::start(
        binaries,
        "idle",
        &fixture_yaml(
            fixture,
            &[],
            "restart:\n  policy: always\n  backoff: 50ms\n",
        ),
    )?;
    target.under_load("idle-connections", duration, |t, row| {
        let socket = t.service.socket().to_path_buf();
        let crashed = t.active_pid().context("no active generation")?;
        let supervisor = t.service.pid().context("supervisor gone")?;
        // Our own control connection, opened before the attacker's fill the socket: the
        // restarts below are followed through it to their end.
        let mut control =
            t.rt.block_on(zd_core::proto::Client::connect(&socket))
                .context("the control socket")?;
        let restart_running = |control: &mut zd_core::proto::Client| {
            let reply =
                t.rt.block_on(control.call(zd_core::proto::Op::Status, |_| {}));
            match reply {
                Ok(zd_core::proto::Reply::Result { result, .. }) => match *result {
                    zd_core::proto::ReplyResult::Status(s) => s.restart_in_progress.is_some(),
                    _ => false,
                },
                _ => false,
            }
        };
        let mut held = Vec::new();
        let open_until = Instant::now() + duration / 3;
        // Keep a few hundred fds of our own for the status calls and /proc reads below.
        let budget = nofile_limit().saturating_sub(300).min(21_000);
        while held.len() < budget && Instant::now() < open_until {
            match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(s) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        let during = footprint(&t.service);
        // The generation exits (gracefully, so that no request in flight is lost to the
        // exit itself) and the supervisor must respawn it with what fds it has left.
        // SAFETY: SIGTERM to the generation this benchmark started.
        unsafe { libc::kill(crashed, libc::SIGTERM) };
        // The control socket may well be full of the attacker's connections: the respawn is
        // seen in /proc, as a new live child of the supervisor.
        let began = Instant::now();
        let mut respawned = None;
        while began.elapsed() < Duration::from_secs(10) {
            if live_children(supervisor).iter().any(|p| *p != crashed) {
                respawned = Some(began.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Restarts by SIGHUP, each seen through: a new child, and the old one gone.
        for _ in 0..3 {
            let old = live_children(supervisor);
            // SAFETY: SIGHUP to the supervisor this benchmark started.
            unsafe { libc::kill(supervisor, libc::SIGHUP) };
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(10) {
                let now = live_children(supervisor);
                // A new child, the old one gone, and the restart over: a SIGHUP while one
                // runs is answered "busy" and ignored.
                if !now.is_empty()
                    && now.iter().all(|p| !old.contains(p))
                    && !restart_running(&mut control)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let count = held.len();
        drop(held);
        let restarts =
            t.rt.block_on(crate::flipbench::service::status(t.service.socket()))
                .map(|s| s.restarts.completed)
                .unwrap_or(0);
        row.restarts_ok = restarts as u32;
        row.restarts_not = 3u32.saturating_sub(restarts as u32);
        row.held = respawned.is_some() && restarts == 3;
        row.note = format!(
            "{count} connections held ({} fds, {} KiB during); respawn after the exit took {}",
            during.1,
            during.0,
            respawned.map_or("FOREVER".to_owned(), |d| format!("{} ms", d.as_millis()))
        );
        Ok(())
    })
}

/// Two million `status` requests on one connection, never read.
fn pipelined_status(binaries: &Binaries, duration: Duration) -> Result<Row> {
    let fixture = service_path(&binaries.fixture)?;
    let target = Target::start(binaries, "pipelined", &fixture_yaml(fixture, &[], ""))?;
    target.under_load("pipelined-status", duration, |t, row| {
        let before = footprint(&t.service).0;
        let mut stream = std::os::unix::net::UnixStream::connect(t.service.socket())?;
        stream.set_write_timeout(Some(Duration::from_millis(200)))?;
        let line = b"{\"v\":1,\"id\":1,\"op\":\"status\"}\n";
        let batch: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 1000)
            .collect();
        let until = Instant::now() + duration / 2;
        let mut sent = 0u64;
        let mut peak = before;
        while sent < 2_000_000 && Instant::now() < until {
            if stream.write_all(&batch).is_ok() {
                sent += 1000;
            }
            peak = peak.max(footprint(&t.service).0);
        }
        let restarted = t.restart()?;
        drop(stream);
        std::thread::sleep(Duration::from_secs(1));
        let after = footprint(&t.service).0;
        if restarted {
            row.restarts_ok = 1;
        } else {
            row.restarts_not = 1;
        }
        row.held = restarted && peak < before + 64 * 1024 && after < before + 16 * 1024;
        row.note = format!("{sent} requests written, never read; peak RSS {peak} KiB");
        Ok(())
    })
}

/// Runs a restart with a hostile service file in place: it must fail, while `status`
/// keeps answering and a crash is still respawned; then the file is restored.
fn hostile_file(
    t: &Target,
    row: &mut Row,
    plant: impl FnOnce(&std::path::Path) -> Result<()>,
) -> Result<()> {
    let file = t.service_file();
    let good = std::fs::read(&file)?;
    std::fs::remove_file(&file)?;
    plant(&file)?;
    let began = Instant::now();
    let mut restart = t
        .zdctl(&["restart", "bench"])
        .spawn()
        .context("zdctl restart")?;
    let mut answered = 0;
    let mut silent = 0;
    let code = loop {
        if let Some(status) = restart.try_wait()? {
            break status.code();
        }
        if began.elapsed() > Duration::from_secs(30) {
            let _ = restart.kill();
            let _ = restart.wait();
            break None;
        }
        if t.status_answers() {
            answered += 1;
        } else {
            silent += 1;
        }
    };
    let took = began.elapsed();
    std::fs::remove_file(&file)?;
    std::fs::write(&file, good)?;
    let after = t.restart()?;
    row.restarts_ok = u32::from(after);
    row.restarts_not = 1;
    row.held = code == Some(1) && silent == 0 && after;
    row.note = format!(
        "restart with it failed with {} after {} ms; status answered {answered}x, silent {silent}x",
        code.map_or("no exit".to_owned(), |c| format!("exit {c}")),
        took.as_millis()
    );
    Ok(())
}

fn fifo_service_file(binaries: &Binaries, duration: Duration) -> Result<Row> {
    let fixture = service_path(&binaries.fixture)?;
    let target = Target::start(binaries, "fifo", &fixture_yaml(fixture, &[], ""))?;
    target.under_load("fifo-service-file", duration, |t, row| {
        hostile_file(t, row, |path| {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644))
                .context("mkfifo")
        })
    })
}

fn nested_service_file(binaries: &Binaries, duration: Duration) -> Result<Row> {
    let fixture = service_path(&binaries.fixture)?;
    let target = Target::start(binaries, "nested", &fixture_yaml(fixture, &[], ""))?;
    target.under_load("nested-service-file", duration, |t, row| {
        hostile_file(t, row, |path| {
            let depth = 50_000;
            let text = format!("command: {}{}\n", "[".repeat(depth), "]".repeat(depth));
            Ok(std::fs::write(path, text)?)
        })
    })
}
