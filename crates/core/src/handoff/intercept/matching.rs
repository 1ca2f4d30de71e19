//! Which listener, if any, a program's `bind` asks for: the rule of `intercept_binds`.
//!
//! - An IP bind matches a TCP listener on the same port when it asks for the listener's
//!   exact address (same family), or for every address (`0.0.0.0` or `::`, either
//!   family): the program wants the port, and the service file decides which addresses
//!   serve it. The socket it gets then has the listener's family (what `getsockname` and
//!   `accept` report), so a program that binds `0.0.0.0` under a `:8080` listener (a
//!   dual-stack `[::]` socket) sees IPv4 clients as `::ffff:a.b.c.d`. A program that sizes
//!   its address buffers for IPv4 alone should be given a listener of its own family
//!   (`listen: 0.0.0.0:8080`).
//! - A bind to a specific address that is not the listener's (`127.0.0.1:8080` under
//!   `listen: 10.0.0.1:8080`), or to port 0, matches nothing.
//! - A unix bind matches a unix listener with the same path (a relative path is taken
//!   from the process's working directory); abstract and unnamed addresses match nothing.
//! - A stream socket matches TCP and unix listeners, a datagram socket UDP listeners, by the
//!   same address rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::listen::ListenAddr;

/// The address a program gave `bind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
    /// A family or form we never match: abstract unix names, netlink, packet…
    Other,
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Inet(addr) => addr.fmt(f),
            BindAddr::Unix(path) => path.display().fmt(f),
            BindAddr::Other => f.write_str("(another family)"),
        }
    }
}

/// Reads a `struct sockaddr` of `bytes.len()` bytes (the bind's `addrlen`).
pub(crate) fn parse_sockaddr(bytes: &[u8]) -> BindAddr {
    let Some(family) = bytes.get(..2) else {
        return BindAddr::Other;
    };
    let family = i32::from(u16::from_ne_bytes([family[0], family[1]]));
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET if bytes.len() >= 8 => {
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            BindAddr::Inet(SocketAddr::new(IpAddr::V4(ip), port(bytes)))
        }
        libc::AF_INET6 if bytes.len() >= 24 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[8..24]);
            BindAddr::Inet(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port(bytes),
            ))
        }
        libc::AF_UNIX => {
            let path = &bytes[2..];
            let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
            if end == 0 {
                return BindAddr::Other;
            }
            BindAddr::Unix(PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end])))
        }
        _ => BindAddr::Other,
    }
}

/// The type of the socket a program binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    Stream,
    Datagram,
}

/// The index of the first listener in `listeners` (their bound addresses, in config
/// order) that a bind of a `kind` socket to `asked` gets, `cwd` resolving a relative unix
/// path.
pub(crate) fn find_listener(
    listeners: &[&ListenAddr],
    asked: &BindAddr,
    kind: SocketKind,
    cwd: Option<&Path>,
) -> Option<usize> {
    use SocketKind::{Datagram, Stream};
    listeners
        .iter()
        .position(|listener| match (listener, asked, kind) {
            (ListenAddr::Tcp(have), BindAddr::Inet(want), Stream)
            | (ListenAddr::Udp(have), BindAddr::Inet(want), Datagram) => inet_matches(*have, *want),
            (ListenAddr::Unix(have), BindAddr::Unix(want), Stream) => {
                if want.is_absolute() {
                    have == want
                } else {
                    cwd.is_some_and(|cwd| *have == cwd.join(want))
                }
            }
            _ => false,
        })
}

fn inet_matches(have: SocketAddr, want: SocketAddr) -> bool {
    want.port() != 0
        && want.port() == have.port()
        && (want.ip().is_unspecified() || want.ip() == have.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    fn sockaddr_in6(ip: Ipv6Addr, port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 28];
        b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[8..24].copy_from_slice(&ip.octets());
        b
    }

    fn sockaddr_un(path: &[u8]) -> Vec<u8> {
        let mut b = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        b.extend_from_slice(path);
        b.push(0);
        b
    }

    fn tcp(text: &str) -> ListenAddr {
        ListenAddr::Tcp(text.parse().unwrap())
    }

    #[test]
    fn sockaddrs_of_every_family_are_read() {
        assert_eq!(
            parse_sockaddr(&sockaddr_in([127, 0, 0, 1], 8080)),
            BindAddr::Inet("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_sockaddr(&sockaddr_in6(Ipv6Addr::LOCALHOST, 443)),
            BindAddr::Inet("[::1]:443".parse().unwrap())
        );
        assert_eq!(
            parse_sockaddr(&sockaddr_un(b"/run/app.sock")),
            BindAddr::Unix("/run/app.sock".into())
        );
        assert_eq!(parse_sockaddr(&sockaddr_un(b"\0abstract")), BindAddr::Other);
        assert_eq!(parse_sockaddr(&[1]), BindAddr::Other);
        assert_eq!(
            parse_sockaddr(&sockaddr_in([1, 2, 3, 4], 1)[..6]),
            BindAddr::Other
        );
        let netlink = (libc::AF_NETLINK as u16).to_ne_bytes();
        assert_eq!(parse_sockaddr(&netlink), BindAddr::Other);
    }

    #[test]
    fn a_bind_gets_the_listener_with_its_port_and_address_or_for_every_address() {
        let loopback = tcp("127.0.0.1:8080");
        let every = tcp("[::]:9090");
        let listeners = [&loopback, &every];
        let find = |asked: &str| {
            find_listener(
                &listeners,
                &BindAddr::Inet(asked.parse().unwrap()),
                SocketKind::Stream,
                None,
            )
        };
        assert_eq!(find("127.0.0.1:8080"), Some(0));
        assert_eq!(find("0.0.0.0:8080"), Some(0));
        assert_eq!(find("[::]:8080"), Some(0));
        assert_eq!(find("[::]:9090"), Some(1));
        assert_eq!(find("0.0.0.0:9090"), Some(1), "every address, other family");
        assert_eq!(find("10.0.0.1:8080"), None, "another address");
        assert_eq!(find("[::1]:9090"), None, "narrower than the listener");
        assert_eq!(find("127.0.0.1:8081"), None, "another port");
        assert_eq!(find("0.0.0.0:0"), None, "port 0");
    }

    #[test]
    fn datagram_binds_get_udp_listeners_and_stream_binds_tcp_ones() {
        let stream = tcp("127.0.0.1:8080");
        let datagram = ListenAddr::Udp("127.0.0.1:8080".parse().unwrap());
        let listeners = [&stream, &datagram];
        let asked = BindAddr::Inet("127.0.0.1:8080".parse().unwrap());
        let every = BindAddr::Inet("0.0.0.0:8080".parse().unwrap());
        let find = |asked: &BindAddr, kind| find_listener(&listeners, asked, kind, None);
        assert_eq!(find(&asked, SocketKind::Stream), Some(0));
        assert_eq!(find(&asked, SocketKind::Datagram), Some(1));
        assert_eq!(find(&every, SocketKind::Datagram), Some(1));
        assert_eq!(find(&BindAddr::Other, SocketKind::Stream), None);
        assert_eq!(
            find_listener(&[&stream], &asked, SocketKind::Datagram, None),
            None
        );
    }

    #[test]
    fn unix_binds_match_by_path_relative_to_the_working_directory() {
        let socket = ListenAddr::Unix("/run/app/app.sock".into());
        let listeners = [&socket];
        let unix = |p: &str| BindAddr::Unix(p.into());
        assert_eq!(
            find_listener(
                &listeners,
                &unix("/run/app/app.sock"),
                SocketKind::Stream,
                None
            ),
            Some(0)
        );
        assert_eq!(
            find_listener(
                &listeners,
                &unix("app.sock"),
                SocketKind::Stream,
                Some(Path::new("/run/app"))
            ),
            Some(0)
        );
        assert_eq!(
            find_listener(
                &listeners,
                &unix("app.sock"),
                SocketKind::Stream,
                Some(Path::new("/tmp"))
            ),
            None
        );
        assert_eq!(
            find_listener(&listeners, &unix("/tmp/x"), SocketKind::Stream, None),
            None
        );
    }
}
