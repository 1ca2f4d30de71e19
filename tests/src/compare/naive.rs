//! `compare naive-server --listen ADDR`: the old half of a naive SO_REUSEPORT handover.
//!
//! The handover: a new process binds the same port with `SO_REUSEPORT`, then the old one
//! is told to stop. From that moment the kernel splits new connections between the two
//! listening sockets by a hash of their addresses, and a connection it puts in the old
//! socket's accept queue is reset when the old process closes that socket with the
//! connection still queued.
//!
//! This server shuts down the way a simple server written without that in mind does: on
//! SIGTERM it stops accepting, waits for the requests it already accepted to be answered
//! (checking every 50 ms), and exits, which is when its listener closes. Nothing here
//! drops a connection it accepted; the connections lost are the ones the kernel queued on
//! its listener between "stop accepting" and "exit". The zd-fixture closes its listener
//! the moment it stops accepting, which shrinks that window to the few connections queued
//! at that instant, so a run at 16 connections usually loses nothing; that is why it is
//! not used here: it would make the handover look safe when it is only lucky.
//!
//! Each connection is answered once (`200 ok`, `Connection: close`) on its own thread.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal};
use socket2::{Domain, Socket, Type};

/// How often the stopping server checks whether its connections are done.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// The longest it waits for them.
const DRAIN_BOUND: Duration = Duration::from_secs(5);
const BACKLOG: i32 = 1024;
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/// Runs the server with `args` (`--listen HOST:PORT`); returns the exit code.
pub fn run(args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("naive-server: {e:#}");
            1
        }
    }
}

fn serve(mut args: impl Iterator<Item = std::ffi::OsString>) -> anyhow::Result<()> {
    let addr: SocketAddr = match (args.next(), args.next()) {
        (Some(flag), Some(value)) if flag == "--listen" => value
            .to_str()
            .context("--listen: not UTF-8")?
            .parse()
            .context("--listen: not HOST:PORT")?,
        _ => bail!("usage: compare naive-server --listen HOST:PORT"),
    };
    // Blocked before any thread starts, so that every thread inherits the mask and the
    // signals wait for the sigwait below.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("cannot block SIGTERM")?;

    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("cannot bind {addr}"))?;
    socket.listen(BACKLOG)?;
    let listener = Arc::new(TcpListener::from(socket));

    let stopping = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicUsize::new(0));
    {
        let (listener, stopping, active) = (
            Arc::clone(&listener),
            Arc::clone(&stopping),
            Arc::clone(&active),
        );
        std::thread::spawn(move || accept_loop(&listener, &stopping, &active));
    }
    signals.wait().context("cannot wait for SIGTERM")?;

    // Stop accepting; the listener stays open (in `listener`) until the process exits.
    stopping.store(true, Ordering::Release);
    let started = Instant::now();
    loop {
        std::thread::sleep(CHECK_EVERY);
        if active.load(Ordering::Acquire) == 0 || started.elapsed() > DRAIN_BOUND {
            break;
        }
    }
    Ok(())
}

/// Accepts until told to stop. A thread blocked in `accept` notices the flag only when
/// the next connection arrives: that connection is still served.
fn accept_loop(listener: &TcpListener, stopping: &AtomicBool, active: &Arc<AtomicUsize>) {
    while !stopping.load(Ordering::Acquire) {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        active.fetch_add(1, Ordering::AcqRel);
        let done = Arc::clone(active);
        let spawned = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                answer(stream);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    let mut filled = 0;
    while !buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        if filled == buf.len() {
            return;
        }
    }
    let _ = stream.write_all(RESPONSE);
}
