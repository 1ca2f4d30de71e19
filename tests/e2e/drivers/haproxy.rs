//! Real HAProxy (Debian haproxy) in master-worker mode: the driver script, and ten reloads
//! under load. The master stays and each reload starts a new worker: the workers are the
//! generations, as einhorn's are. An old worker lives while it has connections; the
//! script's HAProxy holds a request or two open at every moment (see [`Holders`]), so that
//! the old worker outlives each reload by a second or so and `top` sees both generations.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zd_load::load::ConnectionMode;

use super::{Peer, free_port, peer, restart_times};
use crate::support::{TestEnv, assert_no_failures, start_load, wait_for};

/// How long a held request waits for its body.
const HOLD: Duration = Duration::from_millis(1500);

struct Haproxy {
    peer: Peer,
    addr: String,
    config: PathBuf,
}

/// HAProxy answering `ok` itself; `POST /hold` waits for its body (up to 10s) first.
fn start(env: &TestEnv, program: PathBuf, timeout: &str) -> Haproxy {
    let port = free_port();
    let config = env.path("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  \
             timeout client 10s\n  timeout server 10s\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
             http-request wait-for-body time 10s if {{ path /hold }}\n  \
             http-request return status 200 content-type text/plain string ok\n"
        ),
    )
    .expect("haproxy.cfg");
    let socket = env.path("master.sock");
    let pidfile = env.path("haproxy.pid");
    let mut cmd = Command::new(program);
    cmd.arg("-W")
        .arg("-S")
        .arg(&socket)
        .arg("-f")
        .arg(&config)
        .arg("-p")
        .arg(&pidfile);
    let peer = Peer::spawn(cmd, &env.path("haproxy.out"));
    let addr = format!("127.0.0.1:{port}");
    wait_for("haproxy to answer", || {
        crate::support::http_get(&addr, "/").ok()
    });
    // The socket file exists once bound, a moment before the master listens on it.
    wait_for("haproxy's master socket", || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    });
    env.write_service(
        "lb",
        &format!(
            "driver: haproxy\nsocket: {}\npidfile: {}\ntimeout: {timeout}\n",
            socket.display(),
            pidfile.display()
        ),
    );
    Haproxy { peer, addr, config }
}

/// Two clients that each hold a request open for [`HOLD`] (its body comes that late),
/// then send another, half a hold apart: whenever HAProxy reloads, its old worker has a
/// request in flight that ends half a hold to a hold later.
struct Holders {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Holders {
    fn start(addr: &str) -> Holders {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2u32)
            .map(|i| {
                let (stop, addr) = (stop.clone(), addr.to_owned());
                std::thread::spawn(move || {
                    std::thread::sleep(HOLD / 2 * i);
                    while !stop.load(Ordering::Relaxed) {
                        if hold_one(&addr).is_err() {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                })
            })
            .collect();
        Holders { stop, threads }
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One request whose one-byte body comes [`HOLD`] after its head; reads the answer.
fn hold_one(addr: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.write_all(
        b"POST /hold HTTP/1.1\r\nHost: zd\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
    )?;
    std::thread::sleep(HOLD);
    stream.write_all(b"x")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(())
}

#[test]
#[cfg_attr(
    not(has_haproxy),
    ignore = "haproxy not installed (Debian package haproxy)"
)]
#[cfg_attr(
    all(has_haproxy, not(has_tmux)),
    ignore = "tmux not installed (Debian package tmux)"
)]
fn haproxy_passes_the_driver_script() {
    let Some(program) = peer("haproxy_passes_the_driver_script", "haproxy", "haproxy") else {
        return;
    };
    let env = TestEnv::new();
    let haproxy = start(&env, program, super::script::TIMEOUT);
    let holders = Holders::start(&haproxy.addr);
    let config = haproxy.config.clone();
    super::script::run(
        &env,
        super::script::Case {
            name: "lb",
            driver: "haproxy",
            addr: haproxy.addr.clone(),
            // HAProxy closes idle keep-alive connections when an old worker stops.
            mode: ConnectionMode::Close,
            on_failure: super::script::OnFailure::RollsBack,
            break_next: Box::new(move || {
                std::fs::write(&config, "this is not haproxy syntax\n").expect("break the config");
            }),
            // The peer goes first: the holders' requests then end at once.
            guard: Box::new((haproxy.peer, holders)),
        },
    );
}

#[test]
#[cfg_attr(
    not(has_haproxy),
    ignore = "haproxy not installed (Debian package haproxy)"
)]
fn haproxy_reloads_ten_times_under_load_without_a_failed_request() {
    let Some(program) = peer("haproxy reload", "haproxy", "haproxy") else {
        return;
    };
    let env = TestEnv::new();
    let haproxy = start(&env, program, "20s");
    let load = start_load(&haproxy.addr, 16, ConnectionMode::Close);
    restart_times(&env, "lb", 10);
    assert_no_failures(&load.finish());
}
