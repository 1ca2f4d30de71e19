//! Errors of listener parsing, opening and adoption. Each names the address or path.

use std::io;
use std::path::PathBuf;

/// A `[FDNAME=]ADDR` that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenSpecError {
    /// The address part is not one of the accepted forms.
    #[error(
        "invalid listen address '{input}': {problem}; expected '127.0.0.1:8080', '[::1]:8080', \
         ':8080' (every address), 'tcp://127.0.0.1:8080', 'udp://127.0.0.1:5353' or \
         'unix:/run/app.sock', optionally prefixed by a name like 'http=127.0.0.1:8080'"
    )]
    InvalidAddress {
        /// The address as given.
        input: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The fd name has characters that the handoff variables cannot carry.
    #[error(
        "invalid listener name '{name}': use 1 to 255 letters, digits, '_', '-' or '.', \
         like 'http=127.0.0.1:8080'"
    )]
    InvalidName {
        /// The name as given.
        name: String,
    },
}

/// A listener that could not be opened or adopted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Another socket holds the TCP address.
    #[error(
        "address '{addr}' is already in use; stop whatever listens there \
         (ss -ltunp 'sport = :{port}') or choose another port"
    )]
    AddrInUse {
        /// The address, as `127.0.0.1:8080`.
        addr: String,
        /// Its port, for the `ss` hint.
        port: u16,
    },
    /// The kernel refused the bind: a privileged port, or a directory we may not write.
    #[error("permission denied listening on '{addr}'; {hint}")]
    PermissionDenied {
        /// The address or socket path.
        addr: String,
        /// What usually causes it here.
        hint: &'static str,
    },
    /// A live process already listens on the unix socket path.
    #[error(
        "unix socket '{path}' is in use by a running process; stop it or choose another path",
        path = path.display()
    )]
    UnixInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The unix socket path exists and is not a socket; it is never deleted for you.
    #[error(
        "'{path}' exists and is not a socket; remove it yourself or choose another path",
        path = path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The owner or group of a unix socket names no user or group on this system.
    #[error(
        "unknown {what} '{name}' for unix socket '{path}'; use an existing name or a numeric id",
        path = path.display()
    )]
    UnknownOwner {
        /// `user` or `group`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// The socket path.
        path: PathBuf,
    },
    /// A unix socket's directory does not exist.
    #[error(
        "cannot bind '{addr}': its directory does not exist; create it first (mkdir -p), or \
         choose a path in an existing directory"
    )]
    NoDirectory {
        /// The address.
        addr: String,
    },
    /// Any other system call failure.
    #[error("cannot {about} '{addr}': {source}")]
    Io {
        /// What we were doing: `bind`, `listen on`, `chmod`, ….
        about: &'static str,
        /// The address or path.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// systemd passed a different number of sockets than the config lists.
    #[error(
        "systemd passed {passed} socket(s) (LISTEN_FDS) but the service lists {expected} \
         listener(s); make the .socket unit and the 'listen' list agree, or name them \
         with FileDescriptorName= and 'name:'"
    )]
    ActivationCount {
        /// How many listeners the service declares.
        expected: usize,
        /// How many fds systemd passed.
        passed: usize,
    },
    /// No passed socket has the name a listener asks for.
    #[error(
        "listener '{name}' ({addr}) was not among the sockets systemd passed \
         (LISTEN_FDNAMES='{passed}'); set FileDescriptorName={name} in the .socket unit"
    )]
    ActivationNameMissing {
        /// The listener name.
        name: String,
        /// Its configured address.
        addr: String,
        /// The names systemd passed, `:`-separated.
        passed: String,
    },
    /// A passed fd is not a listening stream socket of the configured kind.
    #[error("socket activation fd {fd} ('{name}') does not fit listener '{addr}': {problem}")]
    ActivationMismatch {
        /// The fd number.
        fd: i32,
        /// Its name in LISTEN_FDNAMES.
        name: String,
        /// The configured address.
        addr: String,
        /// What does not fit.
        problem: String,
    },
    /// LISTEN_FDS or LISTEN_PID holds something other than a number.
    #[error("invalid socket activation variable {var}='{value}': expected a number")]
    ActivationEnv {
        /// The variable name.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

impl ListenError {
    /// Maps a bind failure to the precise variant, keeping the address.
    pub(crate) fn bind(addr: String, port: Option<u16>, source: io::Error) -> ListenError {
        match (source.kind(), port) {
            (io::ErrorKind::AddrInUse, Some(port)) => ListenError::AddrInUse { addr, port },
            (io::ErrorKind::PermissionDenied, Some(port)) if port < 1024 => {
                ListenError::PermissionDenied {
                    addr,
                    hint: "ports below 1024 need root or CAP_NET_BIND_SERVICE \
                           (or a lower sysctl net.ipv4.ip_unprivileged_port_start)",
                }
            }
            (io::ErrorKind::PermissionDenied, None) => ListenError::PermissionDenied {
                addr,
                hint: "check that this user may write to the socket's directory",
            },
            (io::ErrorKind::NotFound, None) => ListenError::NoDirectory { addr },
            _ => ListenError::Io {
                about: "bind",
                addr,
                source,
            },
        }
    }
}
