//! Listeners: the sockets `zdctl run` opens once and keeps for its whole life.
//!
//! A [`ListenerSpec`] says what to open (`[FDNAME=]ADDR`), [`open_or_adopt_listeners`]
//! opens it (or adopts it from systemd socket activation), and a [`Listener`] owns the
//! socket. Every generation receives duplicates of these fds; the originals never close
//! while the supervisor lives, so the accept queue survives every restart.

mod activation;
mod error;
pub(crate) mod migrate;
mod open;
pub(crate) mod refuse;
pub(crate) mod steer;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

pub use activation::{adopted_from_systemd, open_or_adopt_listeners, open_or_adopt_listeners_with};
pub use error::{ListenError, ListenSpecError};
pub(crate) use open::backlog_for;
pub use open::{
    Listener, TcpSharing, open_listeners, open_listeners_with, remove_socket_files, resume_listener,
};

/// The name a listener gets when its spec names none: systemd passes `unknown` in
/// `LISTEN_FDNAMES` for an fd without a name, and apps that look names up expect it.
pub const DEFAULT_FD_NAME: &str = "unknown";

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address with an explicit IP: `127.0.0.1:8080`, `[::1]:8080`.
    Tcp(SocketAddr),
    /// `:8080`, every address: `[::]` dual-stack (IPV6_V6ONLY off) when the machine has
    /// IPv6, else `0.0.0.0`.
    AnyPort(u16),
    /// A unix stream socket at this path.
    Unix(PathBuf),
    /// A UDP socket with an explicit IP: `udp://127.0.0.1:5353`, `udp://[::1]:5353`.
    Udp(SocketAddr),
    /// `udp://:5353`, every address, chosen like [`ListenAddr::AnyPort`].
    UdpAnyPort(u16),
}

impl ListenAddr {
    /// Whether this is a UDP address: a datagram socket, never listened or accepted on.
    pub fn is_udp(&self) -> bool {
        matches!(self, ListenAddr::Udp(_) | ListenAddr::UdpAnyPort(_))
    }

    /// Whether this is a unix socket path.
    pub fn is_unix(&self) -> bool {
        matches!(self, ListenAddr::Unix(_))
    }

    /// Whether this is a TCP address (explicit or every address).
    pub fn is_tcp(&self) -> bool {
        matches!(self, ListenAddr::Tcp(_) | ListenAddr::AnyPort(_))
    }

    /// `TCP`, `UDP` or `unix`, for messages.
    pub fn kind(&self) -> &'static str {
        if self.is_udp() {
            "UDP"
        } else if self.is_unix() {
            "unix"
        } else {
            "TCP"
        }
    }
}

/// What to listen on, and how: one entry of `listen:` or one `--listen` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The fd name handed to the app (`LISTEN_FDNAMES`); `None` means [`DEFAULT_FD_NAME`].
    pub name: Option<String>,
    /// The address.
    pub addr: ListenAddr,
    /// The `listen(2)` backlog; `None` means the system's `net.core.somaxconn`.
    pub backlog: Option<u32>,
    /// Unix sockets: file mode set after bind, like `0o660`.
    pub mode: Option<u32>,
    /// Unix sockets: owner (user name or numeric uid) set after bind.
    pub owner: Option<String>,
    /// Unix sockets: group (group name or numeric gid) set after bind.
    pub group: Option<String>,
}

impl ListenerSpec {
    /// A spec for `addr` with no name and every option at its default.
    pub fn new(addr: ListenAddr) -> ListenerSpec {
        ListenerSpec {
            name: None,
            addr,
            backlog: None,
            mode: None,
            owner: None,
            group: None,
        }
    }

    /// The fd name: the given one or [`DEFAULT_FD_NAME`].
    pub fn fd_name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_FD_NAME)
    }
}

/// Checks an fd name: it travels in `LISTEN_FDNAMES` (`:`-separated) and
/// `SERVER_STARTER_PORT` (`=` and `;`), so only a safe set of characters is allowed.
pub fn validate_fd_name(name: &str) -> Result<(), ListenSpecError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ListenSpecError::InvalidName {
            name: name.to_owned(),
        })
    }
}

impl FromStr for ListenAddr {
    type Err = ListenSpecError;

    /// `127.0.0.1:8080`, `[::1]:8080`, `:8080`, `tcp://…`, `udp://…` (the same forms
    /// after the scheme), `unix:/path`, `unix:///path`, or an absolute path.
    fn from_str(s: &str) -> Result<ListenAddr, ListenSpecError> {
        let text = s.trim();
        let invalid = |problem: &str| ListenSpecError::InvalidAddress {
            input: text.to_owned(),
            problem: problem.to_owned(),
        };
        let named = text
            .split_once('=')
            .is_some_and(|(name, _)| !name.contains([':', '/', '[']));
        if named {
            return Err(invalid(
                "a name is not part of the address; set it with `name:`",
            ));
        }
        if let Some(rest) = text.strip_prefix("unix:") {
            // `unix:///run/x.sock` is the URL form; `unix:/run/x.sock` the short one.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(invalid("the unix socket path is empty"));
            }
            if path.contains('\0') {
                return Err(invalid("the path contains a NUL byte"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(text)));
        }
        // UDP is never implied: a datagram socket handed to a program that expects a
        // stream listener fails in confusing ways, so it takes the scheme.
        let (inet, udp) = match text.strip_prefix("udp://") {
            Some(rest) => (rest, true),
            None => (text.strip_prefix("tcp://").unwrap_or(text), false),
        };
        let any_port = inet.strip_prefix(':').or_else(|| inet.strip_prefix("*:"));
        // `::1:8080` also starts with ':' but is an unbracketed IPv6 address.
        if let Some(port) = any_port.filter(|p| !p.contains(':')) {
            return port
                .parse::<u16>()
                .map(|port| {
                    if udp {
                        ListenAddr::UdpAnyPort(port)
                    } else {
                        ListenAddr::AnyPort(port)
                    }
                })
                .map_err(|_| invalid("the port must be a number from 0 to 65535"));
        }
        if let Ok(addr) = inet.parse::<SocketAddr>() {
            return Ok(if udp {
                ListenAddr::Udp(addr)
            } else {
                ListenAddr::Tcp(addr)
            });
        }
        // A misspelled scheme (`tpc://…`, `unx:/run/x.sock`) would otherwise read as a
        // host name.
        let scheme = inet
            .split_once(':')
            .map(|(word, _)| word)
            .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphabetic()));
        if let Some(scheme) = scheme {
            let known = ["tcp://", "udp://", "unix:"];
            let close =
                crate::suggest::closest(scheme, known.map(|k| k.trim_end_matches([':', '/'])));
            if let Some(close) = close.and_then(|c| known.iter().find(|k| k.starts_with(c))) {
                let written = if inet[scheme.len()..].starts_with("://") {
                    &inet[..scheme.len() + 3]
                } else {
                    &inet[..=scheme.len()]
                };
                return Err(invalid(&format!(
                    "unknown scheme '{written}'{}; use 'tcp://', 'udp://' or 'unix:', or none \
                     for TCP",
                    crate::suggest::did_you_mean(Some(close))
                )));
            }
        }
        if inet.contains("://") {
            return Err(invalid(
                "unknown scheme: use 'tcp://', 'udp://' or 'unix:', or none for TCP",
            ));
        }
        // Say which half is wrong: a host name, a bad port, or a bare port.
        if inet.parse::<u16>().is_ok() {
            return Err(invalid(
                "a bare port needs a colon: write ':PORT' for every address",
            ));
        }
        match inet.rsplit_once(':') {
            None => Err(invalid("no port")),
            Some((host, port)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.parse::<IpAddr>().is_err() {
                    Err(invalid("the host must be an IP address, not a name"))
                } else if port.parse::<u16>().is_err() {
                    Err(invalid("the port must be a number from 0 to 65535"))
                } else {
                    Err(invalid("IPv6 addresses need brackets, like '[::1]:8080'"))
                }
            }
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::AnyPort(port) => write!(f, ":{port}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddr::Udp(addr) => write!(f, "udp://{addr}"),
            ListenAddr::UdpAnyPort(port) => write!(f, "udp://:{port}"),
        }
    }
}

impl FromStr for ListenerSpec {
    type Err = ListenSpecError;

    /// `[FDNAME=]ADDR`, like `http=127.0.0.1:8080` or `admin=unix:/run/api.sock`.
    fn from_str(s: &str) -> Result<ListenerSpec, ListenSpecError> {
        let text = s.trim();
        // A name never contains ':' or '/', and every address does before any '='
        // (`unix:/a=b` is a path with '=' in it, not a name).
        let (name, addr) = match text.split_once('=') {
            Some((name, addr)) if !name.contains([':', '/', '[']) => (Some(name.trim()), addr),
            _ => (None, text),
        };
        if let Some(name) = name {
            validate_fd_name(name)?;
        }
        let addr = addr.parse()?;
        Ok(ListenerSpec {
            name: name.map(str::to_owned),
            ..ListenerSpec::new(addr)
        })
    }
}

impl fmt::Display for ListenerSpec {
    /// The canonical `[FDNAME=]ADDR` form (backlog, mode and ownership are not part of it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name}=")?;
        }
        write!(f, "{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ListenerSpec {
        match text.parse() {
            Ok(spec) => spec,
            Err(err) => panic!("{text}: {err}"),
        }
    }

    #[test]
    fn every_address_form_parses_to_its_canonical_display() {
        let table = [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:8080", "[::1]:8080"),
            (":8080", ":8080"),
            ("*:8080", ":8080"),
            ("tcp://127.0.0.1:8080", "127.0.0.1:8080"),
            ("tcp://[::1]:8080", "[::1]:8080"),
            ("tcp://:80", ":80"),
            ("unix:/run/api.sock", "unix:/run/api.sock"),
            ("unix:///run/api.sock", "unix:/run/api.sock"),
            ("/run/api.sock", "unix:/run/api.sock"),
            ("unix:rel.sock", "unix:rel.sock"),
            ("http=127.0.0.1:8080", "http=127.0.0.1:8080"),
            ("admin=unix:/run/a=b.sock", "admin=unix:/run/a=b.sock"),
            ("unix:/run/a=b.sock", "unix:/run/a=b.sock"),
            (" web.v2 = :0 ", "web.v2=:0"),
            ("udp://127.0.0.1:5353", "udp://127.0.0.1:5353"),
            ("udp://[::1]:5353", "udp://[::1]:5353"),
            ("udp://:5353", "udp://:5353"),
            ("udp://*:5353", "udp://:5353"),
            ("dns=udp://127.0.0.1:53", "dns=udp://127.0.0.1:53"),
        ];
        for (text, canonical) in table {
            let parsed = spec(text);
            assert_eq!(parsed.to_string(), canonical, "{text}");
            assert_eq!(spec(canonical), parsed, "{text}");
        }
    }

    #[test]
    fn parsed_specs_carry_the_expected_variants() {
        assert_eq!(spec(":8080").addr, ListenAddr::AnyPort(8080));
        assert_eq!(
            spec("unix:///x.sock").addr,
            ListenAddr::Unix(PathBuf::from("/x.sock"))
        );
        let named = spec("admin=[::1]:9");
        assert_eq!(named.name.as_deref(), Some("admin"));
        assert_eq!(named.fd_name(), "admin");
        assert_eq!(spec(":1").fd_name(), DEFAULT_FD_NAME);
        assert_eq!(
            spec("udp://127.0.0.1:53").addr,
            ListenAddr::Udp(([127, 0, 0, 1], 53).into())
        );
        assert_eq!(spec("udp://:53").addr, ListenAddr::UdpAnyPort(53));
        assert!(spec("udp://[::1]:53").addr.is_udp());
        assert!(spec("tcp://[::1]:53").addr.is_tcp());
        assert_eq!(spec("udp://:53").addr.kind(), "UDP");
    }

    #[test]
    fn bad_addresses_say_what_form_is_expected() {
        let table = [
            ("localhost:8080", "IP address"),
            ("8080", "':PORT'"),
            ("127.0.0.1:99999", "0 to 65535"),
            ("127.0.0.1", "no port"),
            ("::1:8080", "brackets"),
            (":http", "0 to 65535"),
            ("unix:", "empty"),
            ("", "no port"),
            ("udp://localhost:53", "IP address"),
            ("udp://5353", "':PORT'"),
            ("udp://::1:53", "brackets"),
            ("udp://127.0.0.1:70000", "0 to 65535"),
            ("sctp://127.0.0.1:53", "unknown scheme"),
            ("tpc://127.0.0.1:80", "(did you mean 'tcp://'?)"),
            ("unx:/run/x.sock", "(did you mean 'unix:'?)"),
        ];
        for (text, needle) in table {
            let err = text.parse::<ListenerSpec>().expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("'127.0.0.1:8080'"), "{text}: {err}");
        }
    }

    #[test]
    fn bad_fd_names_are_refused() {
        for text in ["a b=:80", "=:80", "x;y=:80"] {
            let err = text.parse::<ListenerSpec>().expect_err(text);
            assert!(matches!(err, ListenSpecError::InvalidName { .. }), "{text}");
        }
    }
}
