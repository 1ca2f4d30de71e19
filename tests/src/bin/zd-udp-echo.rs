//! zd-udp-echo: a UDP echo service for the end-to-end tests of UDP listeners.
//!
//! It takes its socket the way an app written for systemd does: fd 3, when `LISTEN_FDS`
//! is at least 1 and `LISTEN_PID` is its own pid. Each datagram is answered to its sender
//! with the same payload, then a space, then the generation that answered
//! (`ZD_GENERATION`, which the supervisor sets; `?` without it): `hello 3`. Once the
//! socket is checked it sends `READY=1` to `$NOTIFY_SOCKET` when one is set.
//!
//! On SIGTERM it reads nothing more and exits at once. A datagram it has read is answered
//! first (as any server finishes the request in hand), but whatever still waits in the
//! socket's queue is lost with the socket: that is what the steered handoff must protect,
//! by asking it to stop only once its queue is empty. SIGTERM is blocked and read from a
//! signalfd that is polled with the socket, so a signal that comes between two reads is
//! seen at once rather than after the next datagram.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

use anyhow::{Context, Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The first fd systemd passes (SD_LISTEN_FDS_START).
const FIRST_FD: i32 = 3;

/// Large enough for any UDP payload.
const MAX_DATAGRAM: usize = 65_536;

fn main() -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("block SIGTERM")?;
    let term = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let socket = passed_socket()?;
    let generation = std::env::var("ZD_GENERATION").unwrap_or_else(|_| "?".to_owned());
    if let Some(path) = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|p| !p.is_empty())
    {
        notify_ready(&path)?;
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let mut fds = [
            PollFd::new(term.as_fd(), PollFlags::POLLIN),
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[0]) {
            // Stop reading: what is still queued goes with the socket.
            return Ok(());
        }
        if !ready(&fds[1]) {
            continue;
        }
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("recv"),
        };
        let mut answer = buf[..len].to_vec();
        answer.push(b' ');
        answer.extend_from_slice(generation.as_bytes());
        // A client that went away makes the send fail; the next one is still answered.
        let _ = socket.send_to(&answer, peer);
    }
}

/// fd 3 as a UDP socket, checked: passed to us (`LISTEN_PID`, `LISTEN_FDS`) and a
/// datagram socket.
fn passed_socket() -> Result<std::net::UdpSocket> {
    let pid: u32 = std::env::var("LISTEN_PID")
        .context("LISTEN_PID is not set: run me under zdctl or systemd")?
        .parse()
        .context("LISTEN_PID is not a number")?;
    if pid != std::process::id() {
        bail!("LISTEN_PID is {pid}, not my pid: the fds were meant for another process");
    }
    let count: u32 = std::env::var("LISTEN_FDS")
        .context("LISTEN_FDS is not set")?
        .parse()
        .context("LISTEN_FDS is not a number")?;
    if count < 1 {
        bail!("LISTEN_FDS is 0: no socket was passed");
    }
    // SAFETY: fstat only fills in the stat buffer; on a closed fd it fails with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(FIRST_FD, &mut st) } == -1
        || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
    {
        bail!("fd {FIRST_FD} is not an open socket");
    }
    // SAFETY: sd_listen_fds(3): fd 3 was passed to this process (checked above: LISTEN_PID
    // names us, and it is an open socket), and nothing else in it owns the fd.
    let fd = unsafe { OwnedFd::from_raw_fd(FIRST_FD) };
    let socket = socket2::Socket::from(fd);
    if socket.r#type().context("socket type")? != socket2::Type::DGRAM {
        bail!("fd {FIRST_FD} is not a datagram socket: listen on 'udp://ADDRESS'");
    }
    // Keep it from the programs we would start (we start none, but a passed fd is
    // inheritable).
    socket.set_cloexec(true).context("close-on-exec")?;
    Ok(socket.into())
}

/// Sends `READY=1` like sd_notify(3): a datagram to `$NOTIFY_SOCKET`, an abstract name
/// when it starts with '@'.
fn notify_ready(path: &str) -> Result<()> {
    use std::os::linux::net::SocketAddrExt as _;
    let sender = UnixDatagram::unbound().context("notify socket")?;
    match path.strip_prefix('@') {
        Some(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sender.send_to_addr(b"READY=1", &addr)
        }
        None => sender.send_to(b"READY=1", path),
    }
    .with_context(|| format!("send READY=1 to '{path}'"))?;
    Ok(())
}
