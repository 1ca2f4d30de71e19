//! systemd socket activation: adopting the listeners systemd opened for us.
//!
//! The protocol (sd_listen_fds(3)): when `LISTEN_PID` is our pid, fds `3..3+LISTEN_FDS`
//! are listening sockets, named in order by the `:`-separated `LISTEN_FDNAMES`.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

#[cfg(test)]
use super::open::open_listeners;
use super::open::{Listener, TcpSharing, local_addr_of, open_listeners_with};
use super::{DEFAULT_FD_NAME, ListenAddr, ListenError, ListenerSpec};

/// The first fd systemd passes (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// Set once the passed fds are owned, so a second call cannot own them twice.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// One fd passed by systemd, with its name from `LISTEN_FDNAMES`.
#[derive(Debug)]
pub(super) struct PassedFd {
    pub(super) fd: OwnedFd,
    pub(super) name: String,
}

/// Opens the listeners, or adopts them from systemd socket activation.
///
/// When `LISTEN_PID` is our pid and `LISTEN_FDS` is set, fds 3.. are adopted instead of
/// binding: each spec is matched to a passed fd by name when `LISTEN_FDNAMES` is set and
/// the spec has a name, the rest in order. Each adopted fd must be a listening stream
/// socket of the spec's family (a bound datagram socket for a UDP spec); it is made
/// close-on-exec. With no specs at all, every
/// passed socket is adopted as it is. Extra passed sockets are closed with a warning.
///
/// The `LISTEN_*` variables are then removed from our environment so they do not leak to
/// children (the handoff also filters them out of every generation's environment). Call
/// this early, before starting threads that call C code reading the environment.
pub fn open_or_adopt_listeners(specs: &[ListenerSpec]) -> Result<Vec<Listener>, ListenError> {
    open_or_adopt_listeners_with(specs, TcpSharing::Alone)
}

/// [`open_or_adopt_listeners`], with the TCP listeners it opens opened for `sharing`
/// (adopted ones are as systemd made them).
pub fn open_or_adopt_listeners_with(
    specs: &[ListenerSpec],
    sharing: TcpSharing,
) -> Result<Vec<Listener>, ListenError> {
    let Some(passed) = passed_fds()? else {
        return open_listeners_with(specs, sharing);
    };
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: remove_var is unsound only against a concurrent getenv(3) from another
        // thread that bypasses std's environment lock (C code such as the resolver or
        // localtime). The supervisor calls this during startup; its other threads are
        // tokio workers running our Rust code, which reads the environment through std
        // only. The documentation above states the requirement for other callers.
        unsafe { std::env::remove_var(var) };
    }
    adopt(specs, passed)
}

/// Whether the listeners were adopted from fds systemd passed (a socket unit's, or its fd
/// store's), which it then holds too.
pub fn adopted_from_systemd() -> bool {
    ADOPTED.load(Ordering::SeqCst)
}

/// The fds systemd passed to this process, or `None` when it passed none to us.
fn passed_fds() -> Result<Option<Vec<PassedFd>>, ListenError> {
    let Some(pid) = std::env::var_os("LISTEN_PID") else {
        return Ok(None);
    };
    let pid = pid.to_string_lossy().into_owned();
    let pid: u32 = pid.trim().parse().map_err(|_| ListenError::ActivationEnv {
        var: "LISTEN_PID",
        value: pid.clone(),
    })?;
    // Another pid means the variables were meant for an ancestor and leaked to us.
    if pid != std::process::id() {
        return Ok(None);
    }
    let Some(count) = std::env::var_os("LISTEN_FDS") else {
        return Ok(None);
    };
    let count = count.to_string_lossy().into_owned();
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=4096).contains(n))
        .ok_or_else(|| ListenError::ActivationEnv {
            var: "LISTEN_FDS",
            value: count.clone(),
        })?;
    if ADOPTED.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let mut names = names.as_deref().map(|n| n.split(':')).into_iter().flatten();
    let mut passed = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // A closed fd would make OwnedFd a lie, and so would an fd that is open but is not
        // the passed socket (our own runtime may already have reused the number when the
        // launcher forgot to pass it): take ownership only of an open socket.
        // SAFETY: fstat only fills in the stat buffer; on a closed fd it fails with EBADF.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let problem = if unsafe { libc::fstat(fd, &mut st) } == -1 {
            Some("the fd is not open")
        } else if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            Some("the fd is not a socket")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ListenError::ActivationMismatch {
                fd,
                name: String::new(),
                addr: String::new(),
                problem: problem.to_owned(),
            });
        }
        // SAFETY: sd_listen_fds(3) hands fds 3..3+LISTEN_FDS to the process LISTEN_PID
        // names, which is us; the fd is open (checked above), and ADOPTED guarantees that
        // this runs once, so nothing else in the process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_FD_NAME)
            .to_owned();
        passed.push(PassedFd { fd, name });
    }
    Ok(Some(passed))
}

/// Matches specs to passed fds (by name, then in order) and checks each pair.
pub(super) fn adopt(
    specs: &[ListenerSpec],
    passed: Vec<PassedFd>,
) -> Result<Vec<Listener>, ListenError> {
    if specs.is_empty() {
        return passed.into_iter().map(adopt_unconfigured).collect();
    }
    let names = passed
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(":");
    let named = passed.iter().any(|p| p.name != DEFAULT_FD_NAME);
    let mut slots: Vec<Option<PassedFd>> = passed.into_iter().map(Some).collect();
    let mut chosen: Vec<Option<PassedFd>> = Vec::with_capacity(specs.len());
    for spec in specs {
        let by_name = match (&spec.name, named) {
            (Some(name), true) => {
                let slot = slots
                    .iter_mut()
                    .find(|s| s.as_ref().is_some_and(|p| &p.name == name))
                    .ok_or_else(|| ListenError::ActivationNameMissing {
                        name: name.clone(),
                        addr: spec.addr.to_string(),
                        passed: names.clone(),
                    })?;
                slot.take()
            }
            _ => None,
        };
        chosen.push(by_name);
    }
    let mut rest = slots.iter_mut().filter_map(Option::take);
    for slot in chosen.iter_mut().filter(|c| c.is_none()) {
        *slot = rest.next();
    }
    let extra: Vec<PassedFd> = rest.collect();
    if chosen.iter().any(Option::is_none) {
        return Err(ListenError::ActivationCount {
            expected: specs.len(),
            passed: chosen.iter().flatten().count() + extra.len(),
        });
    }
    for p in &extra {
        tracing::warn!(name = %p.name, "closing a socket-activation fd that no listener uses");
    }
    specs
        .iter()
        .zip(chosen.into_iter().flatten())
        .map(|(spec, p)| adopt_one(spec, p))
        .collect()
}

fn adopt_one(spec: &ListenerSpec, passed: PassedFd) -> Result<Listener, ListenError> {
    let PassedFd { fd, name } = passed;
    let raw = fd.as_raw_fd();
    let mismatch = |problem: String| ListenError::ActivationMismatch {
        fd: raw,
        name: name.clone(),
        addr: spec.addr.to_string(),
        problem,
    };
    let socket = checked_socket(fd).map_err(&mismatch)?;
    let domain = socket.domain().map_err(|e| mismatch(e.to_string()))?;
    let fits = match &spec.addr {
        ListenAddr::Unix(_) => domain == Domain::UNIX,
        ListenAddr::Tcp(addr) | ListenAddr::Udp(addr) => domain == Domain::for_address(*addr),
        ListenAddr::AnyPort(_) | ListenAddr::UdpAnyPort(_) => {
            domain == Domain::IPV4 || domain == Domain::IPV6
        }
    };
    if !fits {
        return Err(mismatch(format!(
            "it is {}, the listener is {}",
            family(domain),
            kind(&spec.addr)
        )));
    }
    let datagram = socket.r#type().map_err(|e| mismatch(e.to_string()))? == Type::DGRAM;
    if datagram != spec.addr.is_udp() {
        return Err(mismatch(if datagram {
            "it is a datagram (UDP) socket; write the listener as 'udp://ADDRESS'".to_owned()
        } else {
            "it is a stream socket, and the listener is UDP".to_owned()
        }));
    }
    let local = local_addr_of(&socket).map_err(|e| mismatch(e.to_string()))?;
    if !same_place(&spec.addr, &local) {
        tracing::warn!(fd = raw, configured = %spec.addr, actual = %local,
            "socket-activation fd is bound elsewhere than the config says; using it as passed");
    }
    Listener::from_socket(socket, spec.clone(), None)
}

fn family(domain: Domain) -> &'static str {
    if domain == Domain::UNIX {
        "a unix socket"
    } else if domain == Domain::IPV4 {
        "an IPv4 socket"
    } else if domain == Domain::IPV6 {
        "an IPv6 socket"
    } else {
        "a socket of another family"
    }
}

fn kind(addr: &ListenAddr) -> &'static str {
    match addr {
        ListenAddr::Unix(_) => "unix",
        ListenAddr::Tcp(SocketAddr::V4(_)) | ListenAddr::Udp(SocketAddr::V4(_)) => "IPv4",
        ListenAddr::Tcp(SocketAddr::V6(_)) | ListenAddr::Udp(SocketAddr::V6(_)) => "IPv6",
        ListenAddr::AnyPort(_) => "TCP",
        ListenAddr::UdpAnyPort(_) => "UDP",
    }
}

/// With no configured listeners, a passed socket is adopted with its own address.
fn adopt_unconfigured(passed: PassedFd) -> Result<Listener, ListenError> {
    let PassedFd { fd, name } = passed;
    let raw = fd.as_raw_fd();
    let mismatch = |problem: String| ListenError::ActivationMismatch {
        fd: raw,
        name: name.clone(),
        addr: "(any)".to_owned(),
        problem,
    };
    let socket = checked_socket(fd).map_err(&mismatch)?;
    let addr = local_addr_of(&socket).map_err(|e| mismatch(e.to_string()))?;
    let mut spec = ListenerSpec::new(addr);
    spec.name = (name != DEFAULT_FD_NAME).then_some(name);
    Listener::from_socket(socket, spec, None)
}

/// A listening stream socket or a bound UDP socket, made close-on-exec (systemd passes
/// them inheritable).
fn checked_socket(fd: OwnedFd) -> Result<Socket, String> {
    let socket = Socket::from(fd);
    match socket.r#type() {
        Ok(Type::STREAM) => {
            if !socket.is_listener().map_err(|e| e.to_string())? {
                return Err("it is not listening".to_owned());
            }
        }
        Ok(Type::DGRAM) => {
            let domain = socket.domain().map_err(|e| e.to_string())?;
            if domain != Domain::IPV4 && domain != Domain::IPV6 {
                return Err("it is a datagram socket that is not UDP".to_owned());
            }
        }
        Ok(other) => return Err(format!("it is not a stream or UDP socket ({other:?})")),
        Err(e) => return Err(format!("it is not a socket ({e})")),
    }
    socket.set_cloexec(true).map_err(|e| e.to_string())?;
    Ok(socket)
}

fn same_place(configured: &ListenAddr, actual: &ListenAddr) -> bool {
    match (configured, actual) {
        (ListenAddr::Tcp(want), ListenAddr::Tcp(got)) => {
            want.port() == 0 || (want.port() == got.port() && want.ip() == got.ip())
        }
        (ListenAddr::AnyPort(port), ListenAddr::Tcp(got)) => {
            *port == 0 || (*port == got.port() && got.ip().is_unspecified())
        }
        (ListenAddr::Udp(want), ListenAddr::Udp(got)) => {
            want.port() == 0 || (want.port() == got.port() && want.ip() == got.ip())
        }
        (ListenAddr::UdpAnyPort(port), ListenAddr::Udp(got)) => {
            *port == 0 || (*port == got.port() && got.ip().is_unspecified())
        }
        (ListenAddr::Unix(want), ListenAddr::Unix(got)) => want == got,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
