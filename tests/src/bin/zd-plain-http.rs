//! zd-plain-http: the smallest HTTP server that huptime (amscanne/huptime) can restart, for
//! the huptime driver's end-to-end tests.
//!
//! huptime preloads itself into a program and wraps `bind`, `listen`, `accept`, `accept4`
//! and `close`: it makes the listener non-blocking, counts the connections it accepted,
//! and on HUP hands the listener to a fresh copy of the program. Its `accept4` wrapper is
//! exported as `accept4@GLIBC_2.2.5`, while programs link `accept4@GLIBC_2.10`, so a
//! program that accepts with `accept4` (Rust's std, Perl, Python, zd-fixture) bypasses it
//! and gets EAGAIN at once from the non-blocking listener. This program therefore opens
//! its listener with plain libc calls and accepts with `libc::accept` — never `accept4`,
//! which is the whole point of it. Its `accept` goes through huptime's wrapper, which waits
//! for a connection and tracks it until `close`.
//!
//! One thread per connection; every request is answered `Connection: close` and the
//! connection closed, so a copy told to stop by huptime is done once its answers are.
//!
//! ```text
//! zd-plain-http --listen HOST:PORT [--pidfile PATH] [--crash-if-exists PATH] [--hold DUR]
//! ```
//!
//! - `--pidfile PATH`: written once listening (temp file + rename, so a reader never sees
//!   it half written).
//! - `--crash-if-exists PATH`: exit 3 at start when PATH exists, before touching the
//!   listener (a new copy that dies at once).
//! - `--hold DUR`: hold each answer that long, so that a copy has requests in flight when
//!   it is told to stop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::socket::{SockaddrLike, SockaddrStorage};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/// The longest request head we read before answering anyway.
const HEAD_LIMIT: usize = 16 * 1024;

struct Args {
    listen: SocketAddr,
    pidfile: Option<PathBuf>,
    crash_if_exists: Option<PathBuf>,
    hold: Duration,
}

fn parse_args() -> Result<Args> {
    let mut listen = None;
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        pidfile: None,
        crash_if_exists: None,
        hold: Duration::ZERO,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .with_context(|| format!("'{value}' is not HOST:PORT"))?,
                );
            }
            "--pidfile" => args.pidfile = Some(value.into()),
            "--crash-if-exists" => args.crash_if_exists = Some(value.into()),
            "--hold" => {
                args.hold = humantime::parse_duration(&value)
                    .with_context(|| format!("'{value}' is not a duration"))?;
            }
            other => bail!("unknown flag '{other}'"),
        }
    }
    args.listen = listen.context("--listen HOST:PORT is required")?;
    Ok(args)
}

/// socket, bind and listen, each the plain libc call, so that huptime's wrappers see them
/// (on a restart its `bind` hands back the listener the old copy had).
fn open_listener(addr: SocketAddr) -> Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket takes plain integers and returns a new fd or -1.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: fd is a fresh socket that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let on: libc::c_int = 1;
    // SAFETY: the option value points at a c_int that outlives the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("SO_REUSEADDR");
    }
    let sockaddr = SockaddrStorage::from(addr);
    // SAFETY: the address pointer and length come from one live SockaddrStorage.
    if unsafe { libc::bind(fd, sockaddr.as_ptr(), sockaddr.len()) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("bind {addr}"));
    }
    // SAFETY: listen takes an fd we own and a backlog.
    if unsafe { libc::listen(fd, libc::SOMAXCONN) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("listen {addr}"));
    }
    Ok(socket)
}

/// Writes our pid to `path` through a temp file beside it and a rename.
fn write_pidfile(path: &Path) -> Result<()> {
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&temp, format!("{}\n", std::process::id()))
        .with_context(|| format!("write '{}'", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("rename to '{}'", path.display()))
}

/// Accepts connections for ever, one thread each.
fn serve(listener: &OwnedFd, hold: Duration) -> Result<()> {
    loop {
        // SAFETY: accept on our listener, without asking for the peer's address. It is
        // `accept`, not `accept4`: see the module docs.
        let fd = unsafe {
            libc::accept(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED) => continue,
                // EAGAIN here means a non-blocking listener that no wrapper waits on:
                // retrying would spin, so say so and stop.
                _ => return Err(err).context("accept"),
            }
        }
        // SAFETY: accept returned a new connected socket that only we own.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        std::thread::spawn(move || answer(stream, hold));
    }
}

/// Reads the request head, holds, answers and closes. The stream is dropped (closed) on
/// every path: huptime counts the connection until then.
fn answer(mut stream: TcpStream, hold: Duration) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_LIMIT {
        match stream.read(&mut buf) {
            // The peer went away, or huptime handed a stopping copy its dummy connection.
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    std::thread::sleep(hold);
    let _ = stream.write_all(ANSWER);
}

fn run() -> Result<i32> {
    let args = parse_args()?;
    if let Some(marker) = &args.crash_if_exists {
        if marker.exists() {
            eprintln!(
                "zd-plain-http: '{}' exists: exiting 3 as asked",
                marker.display()
            );
            return Ok(3);
        }
    }
    let listener = open_listener(args.listen)?;
    if let Some(pidfile) = &args.pidfile {
        write_pidfile(pidfile)?;
    }
    serve(&listener, args.hold)?;
    Ok(0)
}

fn main() {
    let code = run().unwrap_or_else(|e| {
        eprintln!("zd-plain-http: {e:#}");
        1
    });
    std::process::exit(code);
}
