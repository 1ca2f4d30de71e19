//! Refusing new connections without closing the listener (`restart.refuse_after`).
//!
//! A failing service keeps its listeners, so clients wait in their queues. Past
//! `refuse_after` they should be refused instead, yet the supervisor must keep every socket:
//! the same socket, with the same inode, has to accept again when a restart brings the
//! service back. On Linux, `shutdown(SHUT_RD)` on a listening TCP socket does exactly that.
//! The kernel disconnects it (`tcp_disconnect`): it leaves the LISTEN state, the
//! connections in its accept queue are reset, and a new SYN is answered with a RST
//! (`ECONNREFUSED` at the client). The socket itself stays open, and a later `listen()` on
//! it puts it back in LISTEN.
//!
//! What the socket keeps meanwhile depends on how it was bound. One bound to an explicit
//! port (`SOCK_BINDPORT_LOCK`) stays bound to it. One bound to port 0 (the kernel chose
//! the port) loses the port on the disconnect, and a `listen()` would pick another one; it
//! is bound again at once to the port it had. Either way, while it does not listen, another
//! socket with `SO_REUSEADDR` may bind the address *and listen on it*: the kernel only
//! forbids that next to a listening socket. The supervisor then cannot listen again
//! (`EADDRINUSE`), and says so.
//!
//! Unix stream sockets cannot be refused this way: `shutdown(SHUT_RD)` on a listening one
//! makes the kernel refuse new connections, but a later `listen()` does not undo it, so the
//! socket would refuse for the rest of its life. They keep accepting. A UDP socket has no
//! connection to refuse.

use std::io;
use std::net::Shutdown;

use super::ListenAddr;
use super::open::Listener;

/// What [`stop_accepting`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It listened and does not any more; `backlog` is the one to listen with again.
    Refusing { backlog: i32 },
    /// It did not listen (already refusing).
    AlreadyRefusing,
    /// Not a TCP listener: left as it is (see the module's comment).
    NotRefusable,
}

/// Stops a TCP listener accepting: the connections in its queue are reset and new ones are
/// refused, while the socket stays open and bound to its address.
pub(crate) fn stop_accepting(listener: &Listener) -> io::Result<Stopped> {
    let ListenAddr::Tcp(addr) = listener.local_addr() else {
        return Ok(Stopped::NotRefusable);
    };
    let socket = listener.socket();
    if !socket.is_listener()? {
        return Ok(Stopped::AlreadyRefusing);
    }
    // `listen()` again takes a backlog: the one the socket has now (for a listener,
    // `tcpi_sacked` is its maximum queue length), which may be systemd's `Backlog=` for an
    // adopted socket.
    let backlog = i32::try_from(super::steer::tcp_info(listener)?.tcpi_sacked).unwrap_or(i32::MAX);
    socket.shutdown(Shutdown::Read)?;
    keep_bound(listener, addr)?;
    Ok(Stopped::Refusing { backlog })
}

/// Puts a listener that [`stop_accepting`] stopped back in LISTEN, on the same socket.
pub(crate) fn accept_again(listener: &Listener, backlog: i32) -> io::Result<()> {
    let ListenAddr::Tcp(addr) = listener.local_addr() else {
        return Ok(());
    };
    if listener.socket().is_listener()? {
        return Ok(());
    }
    // Bound again if binding failed when it stopped: `listen()` on a socket without a port
    // would pick a random one.
    keep_bound(listener, addr)?;
    listener.socket().listen(backlog)
}

/// Binds a disconnected socket to `addr` again if the disconnect released its port (it was
/// bound to port 0). A socket that kept its port answers `EINVAL`: nothing to do.
fn keep_bound(listener: &Listener, addr: &std::net::SocketAddr) -> io::Result<()> {
    match listener.socket().bind(&(*addr).into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{ListenerSpec, TcpSharing, open_listeners_with};
    use std::io::{ErrorKind, Read};
    use std::net::TcpStream;

    fn port_of(l: &Listener) -> u16 {
        match l.local_addr() {
            ListenAddr::Tcp(a) => a.port(),
            other => panic!("not tcp: {other}"),
        }
    }

    fn refused(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port))
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
    }

    /// A listener opened on port 0 (the kernel picks the port) is the case that loses its
    /// port on the disconnect; it must get the same one back.
    #[test]
    fn a_refusing_listener_keeps_its_socket_and_port_and_accepts_again() {
        let spec: ListenerSpec = "127.0.0.1:0".parse().expect("spec");
        let l = open_listeners_with(&[spec], TcpSharing::Alone)
            .expect("open")
            .remove(0);
        let (port, inode) = (port_of(&l), l.inode());
        let mut queued = TcpStream::connect(("127.0.0.1", port)).expect("queued");
        let backlog = match stop_accepting(&l).expect("stop") {
            Stopped::Refusing { backlog } => backlog,
            other => panic!("{other:?}"),
        };
        assert_eq!(stop_accepting(&l).expect("again"), Stopped::AlreadyRefusing);
        assert!(refused(port), "a new connection is refused");
        let mut buf = [0u8; 1];
        assert_eq!(
            queued.read(&mut buf).map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionReset),
            "a queued one is reset"
        );
        // Still holds the port: a socket without SO_REUSEADDR cannot bind it (std's
        // `TcpListener::bind` sets the option).
        let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert!(other.bind(&addr.into()).is_err());
        accept_again(&l, backlog).expect("listen again");
        accept_again(&l, backlog).expect("idempotent");
        assert_eq!(port_of(&l), port);
        let _c = TcpStream::connect(("127.0.0.1", port)).expect("accepts again");
        assert_eq!(super::super::steer::accept_queue(&l).expect("queue"), 1);
        let fd_inode = nix::sys::stat::fstat(&l).expect("fstat").st_ino;
        assert_eq!(fd_inode, inode, "the same socket");
    }

    #[test]
    fn unix_and_udp_listeners_are_left_as_they_are() {
        let dir = tempfile::tempdir().expect("dir");
        let unix: ListenerSpec = format!("unix:{}/s.sock", dir.path().display())
            .parse()
            .expect("spec");
        let udp: ListenerSpec = "udp://127.0.0.1:0".parse().expect("spec");
        for l in open_listeners_with(&[unix, udp], TcpSharing::Alone).expect("open") {
            assert_eq!(stop_accepting(&l).expect("stop"), Stopped::NotRefusable);
        }
    }
}
