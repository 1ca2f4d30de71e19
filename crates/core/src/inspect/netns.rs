//! A `NETLINK_SOCK_DIAG` socket in the network namespace of the service.
//!
//! `sock_diag` answers about the namespace the netlink socket was created
//! in, so a service in its own namespace (a container, systemd's
//! `PrivateNetwork=`) needs a socket made inside it. The common case is
//! the namespace we are in already, told apart by comparing the inode of
//! `/proc/self/ns/net` with the target's; otherwise a short-lived thread
//! joins the target's namespace with `setns`, creates the socket and exits.
//! The socket keeps its namespace for life, and our own threads never
//! change theirs. The socket is kept between snapshots while the namespace
//! stays the same.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

use super::diag::{self, Progress, ReplyError, TcpRecord, UnixListenerRecord};
use crate::proc::pid_path;

/// The kernel fills at most 32 KiB per datagram of a dump; a larger buffer
/// guarantees nothing is cut.
const RECV_BUFFER: usize = 64 * 1024;

/// Upper bound on the datagrams of one dump, so a kernel that never sends
/// `NLMSG_DONE` cannot keep us here: 100k sockets fit in ~300 datagrams.
const MAX_DATAGRAMS: usize = 1 << 16;

/// The inode of a process's network namespace (`net:[4026531840]`).
pub(crate) fn namespace_of(pid: i32) -> io::Result<u64> {
    namespace_at(&pid_path(pid, "ns/net"))
}

fn namespace_at(path: &std::path::Path) -> io::Result<u64> {
    let link = std::fs::read_link(path)?;
    link.to_str()
        .and_then(|text| text.strip_prefix("net:["))
        .and_then(|text| text.strip_suffix(']'))
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected ns/net link"))
}

/// A `sock_diag` socket bound to one network namespace.
#[derive(Debug)]
pub(crate) struct DiagSocket {
    fd: OwnedFd,
    namespace: u64,
    seq: u32,
    buffer: Vec<u8>,
}

impl DiagSocket {
    /// A socket in the namespace of `pid`.
    pub(crate) fn open_for(pid: i32) -> io::Result<DiagSocket> {
        let namespace = namespace_of(pid)?;
        let fd = if namespace == namespace_at(std::path::Path::new("/proc/self/ns/net"))? {
            new_socket()?
        } else {
            open_in_namespace(pid)?
        };
        Ok(DiagSocket {
            fd,
            namespace,
            seq: 0,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    /// A socket in the caller's own namespace.
    pub(crate) fn open_here() -> io::Result<DiagSocket> {
        Ok(DiagSocket {
            fd: new_socket()?,
            namespace: namespace_at(std::path::Path::new("/proc/self/ns/net"))?,
            seq: 0,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    pub(crate) fn namespace(&self) -> u64 {
        self.namespace
    }

    /// TCP sockets of `families` in `states` whose local port is in
    /// `ports` (every port when empty), appended to `out`.
    pub(crate) fn tcp(
        &mut self,
        families: &[u8],
        states: u32,
        ports: &[u16],
        out: &mut Vec<TcpRecord>,
    ) -> io::Result<()> {
        for &family in families {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let request = diag::inet_request(seq, family, states, ports);
            self.dump(&request, |datagram| diag::parse_inet(datagram, seq, out))?;
        }
        Ok(())
    }

    /// [`Self::tcp`] with each connection's `tcp_info`, for
    /// [`TcpRecord::bytes_received`].
    pub(crate) fn tcp_with_info(
        &mut self,
        families: &[u8],
        states: u32,
        ports: &[u16],
        out: &mut Vec<TcpRecord>,
    ) -> io::Result<()> {
        for &family in families {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let request = diag::inet_info_request(seq, family, states, ports);
            self.dump(&request, |datagram| diag::parse_inet(datagram, seq, out))?;
        }
        Ok(())
    }

    /// Unconnected UDP sockets of `families` whose local port is in `ports`, appended to
    /// `out` (`rqueue`: the memory their queued datagrams hold).
    pub(crate) fn udp(
        &mut self,
        families: &[u8],
        ports: &[u16],
        out: &mut Vec<TcpRecord>,
    ) -> io::Result<()> {
        for &family in families {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let request = diag::udp_request(seq, family, diag::UDP_UNCONNECTED, ports);
            self.dump(&request, |datagram| diag::parse_inet(datagram, seq, out))?;
        }
        Ok(())
    }

    /// Listening unix stream sockets of the namespace.
    pub(crate) fn unix_listeners(&mut self, out: &mut Vec<UnixListenerRecord>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let request = diag::unix_request(seq, diag::LISTEN_STATES);
        self.dump(&request, |datagram| diag::parse_unix(datagram, seq, out))
    }

    /// Sends an inet `request` and returns every datagram of the reply,
    /// concatenated (they hold whole messages, so the result parses like
    /// one datagram). For tests that check what the kernel really sends.
    #[cfg(test)]
    pub(crate) fn raw_inet_dump(&mut self, request: &[u8], seq: u32) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        self.dump(request, |datagram| {
            all.extend_from_slice(datagram);
            diag::parse_inet(datagram, seq, &mut Vec::new())
        })?;
        Ok(all)
    }

    fn dump(
        &mut self,
        request: &[u8],
        mut parse: impl FnMut(&[u8]) -> Result<Progress, ReplyError>,
    ) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        sendto(fd, request, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        for _ in 0..MAX_DATAGRAMS {
            let len = recv(fd, &mut self.buffer, MsgFlags::empty())?;
            if len == 0 {
                break;
            }
            match parse(&self.buffer[..len]) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => return Ok(()),
                Err(ReplyError::Kernel(errno)) => return Err(io::Error::from_raw_os_error(errno)),
                Err(ReplyError::Malformed(what)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("malformed sock_diag reply: {what}"),
                    ));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag dump did not end",
        ))
    }
}

/// How long one read of a dump's reply may wait. A dump is answered as it is read, so a
/// longer wait means a reply that will not come; without a bound, `top`'s collector would
/// wait for it forever.
const REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn new_socket() -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(REPLY_WAIT.as_secs() as i64, 0),
    )?;
    Ok(fd)
}

/// Creates the socket on a thread that joins the namespace of `pid` first.
/// The thread ends right after, so no other work ever runs in the foreign
/// namespace. Needs `CAP_SYS_ADMIN` (in the target's user namespace).
fn open_in_namespace(pid: i32) -> io::Result<OwnedFd> {
    let namespace = std::fs::File::open(pid_path(pid, "ns/net"))?;
    std::thread::Builder::new()
        .name("zd-inspect-netns".to_owned())
        .spawn(move || -> io::Result<OwnedFd> {
            // SAFETY: `namespace` is an open file owned by this closure, so
            // the descriptor stays valid for the call; setns only changes
            // this thread's namespace, and the thread ends right after.
            let joined = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            if joined != 0 {
                return Err(io::Error::last_os_error());
            }
            new_socket()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}
