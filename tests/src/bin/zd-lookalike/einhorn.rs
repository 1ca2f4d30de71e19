//! einhorn (contribsys/einhorn), as its README and `einhorn --help` describe it:
//!
//! - The master binds the listener, writes its pidfile (`-e`), opens its command socket
//!   (`-d`) and keeps `-n` workers, each with the listener announced as `EINHORN_FD_COUNT`,
//!   `EINHORN_FD_0`, plus `EINHORN_MASTER_PID`, `EINHORN_SOCK_PATH`, `EINHORN_CHILD_INDEX`.
//! - A worker counts once it is acked; in einhorn's default ack mode (`-m SECONDS`, here
//!   `--ack-after`) that is when it has lived that long. A worker that dies unacked is
//!   started again after a growing delay.
//! - The command socket takes one request per line and answers one message per line, both
//!   YAML with `%` and newlines escaped as `%25` and `%0A`. An answer is
//!   `{message, request_id}`, with `wait: true` when more answers follow. `state` answers
//!   `YAML.dump({state: ...})` from Ruby: symbol keys (`:children:`), integer pids, Ruby
//!   tags. `upgrade` answers "Upgrading smoothly, as commanded", then starts new workers
//!   one at a time; as new ones ack it sends USR2 to as many old ones, and once enough new
//!   ones acked it says "Upgrade done" and sends USR2 to the rest. Old workers keep
//!   serving for as long as new ones fail.
//! - A line that is not a request is answered "Could not parse command".
//!
//! Not modelled: the master re-executing itself at the start of an upgrade (its pid stays
//! the same; a short-lived state-passing child appears), manual acks, other commands.
//!
//! Workers are `zd-lookalike einhorn-worker -- WORKER…`: einhorn stops a worker with USR2,
//! zd-fixture drains on TERM, and the shim between them translates.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpid};

use super::common::{self, Args, Signals, TICK, reap, say, spawn, write_pidfile};

/// The longest wait between starts of workers that keep dying before they ack.
const MAX_SPINUP: Duration = Duration::from_secs(5);

struct Worker {
    version: u64,
    index: usize,
    started: Instant,
    started_unix: std::time::SystemTime,
    acked: bool,
    signaled: bool,
}

struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    /// The request id of an `upgrade` that waits for "Upgrade done".
    upgrade: Option<serde_json::Value>,
}

struct Master<'a> {
    args: &'a Args,
    listener: std::os::fd::OwnedFd,
    workers: BTreeMap<Pid, Worker>,
    version: u64,
    upgrading: bool,
    next_index: usize,
    last_spinup: Instant,
    deaths_before_ack: u32,
    stopping: bool,
}

pub fn run(args: &Args) -> Result<i32> {
    let signals = Signals::new()?;
    let socket_path = args.socket.as_deref().context("--socket is required")?;
    let listener = common::listener(args)?;
    let _ = std::fs::remove_file(socket_path);
    let command_socket = UnixListener::bind(socket_path)
        .with_context(|| format!("cannot bind '{}'", socket_path.display()))?;
    command_socket.set_nonblocking(true)?;
    if let Some(pidfile) = &args.pidfile {
        write_pidfile(pidfile)?;
    }
    let mut master = Master {
        args,
        listener,
        workers: BTreeMap::new(),
        version: 1,
        upgrading: false,
        next_index: 0,
        last_spinup: Instant::now(),
        deaths_before_ack: 0,
        stopping: false,
    };
    for _ in 0..args.workers {
        master.spin_up()?;
    }
    let mut connections: Vec<Connection> = Vec::new();
    loop {
        for signal in signals.pending() {
            if matches!(signal, Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT) {
                master.stopping = true;
                let all: Vec<Pid> = master.workers.keys().copied().collect();
                master.stop(&all);
            }
        }
        while let Ok((stream, _)) = command_socket.accept() {
            stream.set_nonblocking(true)?;
            connections.push(Connection {
                stream,
                buf: Vec::new(),
                upgrade: None,
            });
        }
        connections.retain_mut(|c| master.serve(c));
        for (pid, _) in reap() {
            if let Some(worker) = master.workers.remove(&pid) {
                if !worker.acked {
                    master.deaths_before_ack += 1;
                    say(&format!("worker {pid} exited before it was acked"));
                }
            }
        }
        if master.stopping {
            if master.workers.is_empty() {
                let _ = std::fs::remove_file(socket_path);
                return Ok(0);
            }
        } else {
            master.ack_timers();
            if master.cull() {
                for c in &mut connections {
                    if let Some(id) = c.upgrade.take() {
                        let _ = c
                            .stream
                            .write_all(answer("Upgrade done", &id, true).as_bytes());
                    }
                }
            }
            master.replenish()?;
        }
        std::thread::sleep(TICK);
    }
}

impl Master<'_> {
    fn spin_up(&mut self) -> Result<()> {
        let index = self.next_index;
        self.next_index += 1;
        let exe = std::env::current_exe()?.into();
        let mut words: Vec<std::ffi::OsString> = vec!["einhorn-worker".into(), "--".into()];
        words.extend(self.args.worker.iter().cloned());
        let env = [
            ("EINHORN_FD_COUNT", "1".to_owned()),
            ("EINHORN_FD_0", "3".to_owned()),
            ("EINHORN_MASTER_PID", getpid().to_string()),
            (
                "EINHORN_SOCK_PATH",
                self.args
                    .socket
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("EINHORN_CHILD_INDEX", index.to_string()),
        ];
        let pid = spawn(&exe, &words, &self.listener, None, &env)?;
        say(&format!("launched worker {pid} (version {})", self.version));
        self.last_spinup = Instant::now();
        self.workers.insert(
            pid,
            Worker {
                version: self.version,
                index,
                started: Instant::now(),
                started_unix: std::time::SystemTime::now(),
                acked: false,
                signaled: false,
            },
        );
        Ok(())
    }

    fn stop(&mut self, pids: &[Pid]) {
        for pid in pids {
            if let Some(worker) = self.workers.get_mut(pid) {
                worker.signaled = true;
                common::signal(*pid, Signal::SIGUSR2);
            }
        }
    }

    fn ack_timers(&mut self) {
        for (pid, worker) in &mut self.workers {
            if !worker.acked && worker.started.elapsed() >= self.args.ack_after {
                worker.acked = true;
                self.deaths_before_ack = 0;
                say(&format!("worker {pid} acked"));
            }
        }
    }

    /// Starts a missing worker, one at a time and only once the last one acked, with a
    /// delay that grows while workers die before they ack.
    fn replenish(&mut self) -> Result<()> {
        let modern = |w: &&Worker| w.version == self.version && !w.signaled;
        let current = self.workers.values().filter(modern).count();
        let unacked = self.workers.values().filter(modern).any(|w| !w.acked);
        let interval = Duration::from_millis(200)
            .mul_f64(1.5_f64.powi(i32::try_from(self.deaths_before_ack).unwrap_or(i32::MAX)))
            .min(MAX_SPINUP);
        if current < self.args.workers && !unacked && self.last_spinup.elapsed() >= interval {
            self.spin_up()?;
        }
        Ok(())
    }

    /// einhorn's cull: ends the upgrade once enough new workers acked and stops old
    /// workers as new ones take their place. Returns whether the upgrade just ended.
    fn cull(&mut self) -> bool {
        let target = self.args.workers;
        let acked = self
            .workers
            .values()
            .filter(|w| w.version == self.version && w.acked && !w.signaled)
            .count();
        let mut done = false;
        if self.upgrading && acked >= target {
            self.upgrading = false;
            done = true;
            say(&format!(
                "upgraded successfully to version {}",
                self.version
            ));
        }
        let old: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| w.version < self.version && !w.signaled)
            .map(|(pid, _)| *pid)
            .collect();
        if !self.upgrading {
            self.stop(&old);
        } else {
            let excess = (old.len() + acked).saturating_sub(target);
            self.stop(&old[..excess.min(old.len())]);
        }
        done
    }

    /// Reads what the connection sent and answers each complete line; false once the
    /// peer has gone.
    fn serve(&mut self, c: &mut Connection) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        while let Some(end) = c.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = c.buf.drain(..=end).collect();
            let reply = self.command(&String::from_utf8_lossy(&line), c);
            if let Some(reply) = reply {
                if c.stream.write_all(reply.as_bytes()).is_err() {
                    return false;
                }
            }
        }
        true
    }

    fn command(&mut self, line: &str, c: &mut Connection) -> Option<String> {
        let text = line.trim_end().replace("%0A", "\n").replace("%25", "%");
        let Ok(serde_json::Value::Object(request)) = serde_json::from_str(&text) else {
            return Some(plain("Could not parse command"));
        };
        let id = request
            .get("id")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        match request.get("command").and_then(|c| c.as_str()) {
            Some("state") => Some(answer(&self.dump_state(), &id, true)),
            Some("upgrade") => {
                say("upgrading smoothly");
                self.version += 1;
                self.upgrading = true;
                c.upgrade = Some(id.clone());
                Some(answer("Upgrading smoothly, as commanded", &id, false))
            }
            Some(other) => Some(answer(
                &format!("Unrecognized command: {other:?}"),
                &id,
                true,
            )),
            None => Some(answer(
                "No \"command\" parameter provided; not sure what you want me to do.",
                &id,
                true,
            )),
        }
    }

    /// The master's state as Ruby's `YAML.dump({state: ...})` writes it.
    fn dump_state(&self) -> String {
        let mut out = String::from("---\n:state:\n  :children:\n");
        for (pid, w) in &self.workers {
            let since = w
                .started_unix
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            out.push_str(&format!(
                "    {pid}:\n      :type: :worker\n      :version: {}\n      :acked: {}\n      \
                 :signaled: !ruby/object:Set\n        hash: {}\n      :last_signaled_at:\n      \
                 :index: {}\n      :spinup_time: {}.{:09} +00:00\n",
                w.version,
                w.acked,
                if w.signaled {
                    "\n          USR2: true"
                } else {
                    "{}"
                },
                w.index,
                since.as_secs(),
                since.subsec_nanos(),
            ));
        }
        out.push_str(&format!(
            "  :version: {}\n  :upgrading: {}\n  :ack_mode:\n    :type: :timer\n    \
             :timeout: {}\n",
            self.version,
            self.upgrading,
            self.args.ack_after.as_secs_f64()
        ));
        out
    }
}

/// One answer line: `{message, request_id[, wait]}` as YAML, framed.
fn answer(message: &str, id: &serde_json::Value, last: bool) -> String {
    let mut doc = String::from("---\nmessage: |-\n");
    for line in message.lines() {
        doc.push_str("  ");
        doc.push_str(line);
        doc.push('\n');
    }
    doc.push_str(&format!("request_id: {id}\n"));
    if !last {
        doc.push_str("wait: true\n");
    }
    frame(&doc)
}

/// An answer to a line that carried no request id.
fn plain(message: &str) -> String {
    frame(&format!("---\nmessage: {message}\n"))
}

fn frame(doc: &str) -> String {
    doc.replace('%', "%25").replace('\n', "%0A") + "\n"
}

/// The worker shim: runs the worker, turns einhorn's USR2 into the TERM zd-fixture drains
/// on, passes INT, TERM and QUIT on, and exits with the worker's code.
pub fn worker(args: &[std::ffi::OsString]) -> Result<i32> {
    let signals = Signals::new()?;
    let (program, rest) = args
        .split_first()
        .context("einhorn-worker needs a command")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    common::clean_signal_mask(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    let child = Pid::from_raw(i32::try_from(child.id())?);
    loop {
        for signal in signals.pending() {
            match signal {
                Signal::SIGUSR2 => common::signal(child, Signal::SIGTERM),
                Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT => {
                    common::signal(child, signal);
                }
                _ => {}
            }
        }
        if let Some((_, code)) = reap().into_iter().find(|(pid, _)| *pid == child) {
            return Ok(code);
        }
        std::thread::sleep(TICK);
    }
}
