//! Opening listeners: socket, bind, listen, and unix socket file housekeeping.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, SockAddr, Socket, Type};

use super::{ListenAddr, ListenError, ListenerSpec};

/// Used when `/proc/sys/net/core/somaxconn` cannot be read; the kernel's own default
/// since Linux 5.4.
const FALLBACK_BACKLOG: u32 = 4096;

/// An open listening socket (or a bound UDP socket), kept for the supervisor's whole life.
///
/// The socket is close-on-exec: the handoff clears the flag only on the duplicate it gives
/// a generation. It is blocking, as the apps that inherit it expect (the supervisor itself
/// never accepts). A unix socket file we created is removed when the last `Listener`
/// sharing it is dropped (or by [`remove_socket_files`]), and only if the file on disk is
/// still the one we bound.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    spec: ListenerSpec,
    local: ListenAddr,
    inode: u64,
    file: Option<Arc<SocketFile>>,
}

impl Listener {
    /// Wraps a bound, listening socket.
    pub(super) fn from_socket(
        socket: Socket,
        spec: ListenerSpec,
        file: Option<Arc<SocketFile>>,
    ) -> Result<Listener, ListenError> {
        let io_err = |about, source| ListenError::Io {
            about,
            addr: spec.addr.to_string(),
            source,
        };
        let local = local_addr_of(&socket).map_err(|e| io_err("read the address of", e))?;
        let stat = nix::sys::stat::fstat(&socket).map_err(|e| io_err("fstat", e.into()))?;
        Ok(Listener {
            socket,
            spec,
            local,
            inode: stat.st_ino,
            file,
        })
    }

    /// The socket itself, for options the steered handoff sets.
    pub(super) fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The socket, to duplicate into a generation.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The fd name handed to apps in `LISTEN_FDNAMES`: the spec's name, or `unknown` (what
    /// systemd passes for an unnamed fd) when it has none.
    pub fn name(&self) -> &str {
        self.spec.fd_name()
    }

    /// The spec this listener was opened from.
    pub fn spec(&self) -> &ListenerSpec {
        &self.spec
    }

    /// The address the socket is bound to: `Tcp` or `Udp` with the real port (even when
    /// the spec said port 0 or `:PORT`), or `Unix` with the path.
    pub fn local_addr(&self) -> &ListenAddr {
        &self.local
    }

    /// The address as Server::Starter writes it in `SERVER_STARTER_PORT`: `127.0.0.1:8080`,
    /// `[::1]:8080`, the bare port `8080` for a `:8080` (every address) spec, as
    /// start_server does for `--port=8080`, or the unix socket path. A UDP socket, which
    /// Server::Starter does not know, shows as `udp://127.0.0.1:5353` (`udp://:5353` for
    /// every address), so that no one takes it for a TCP listener.
    pub fn local_display(&self) -> String {
        match (&self.spec.addr, &self.local) {
            (ListenAddr::AnyPort(_), ListenAddr::Tcp(addr)) => addr.port().to_string(),
            (_, ListenAddr::Tcp(addr)) => addr.to_string(),
            (_, ListenAddr::AnyPort(port)) => port.to_string(),
            (_, ListenAddr::Unix(path)) => path.display().to_string(),
            (ListenAddr::UdpAnyPort(_), ListenAddr::Udp(addr)) => {
                ListenAddr::UdpAnyPort(addr.port()).to_string()
            }
            (_, local @ (ListenAddr::Udp(_) | ListenAddr::UdpAnyPort(_))) => local.to_string(),
        }
    }

    /// Whether this is a UDP socket: it receives datagrams and is never accepted on.
    pub fn is_udp(&self) -> bool {
        self.local.is_udp()
    }

    /// The socket's inode (fstat `st_ino`): `socket:[INODE]` in `/proc/PID/fd`, and the
    /// inode column of `/proc/net/tcp` and `/proc/net/unix`.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The unix socket path, for unix listeners.
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.local {
            ListenAddr::Unix(path) => Some(path),
            _ => None,
        }
    }

    /// A second handle on the same socket (a close-on-exec duplicate). The socket file
    /// stays until the last handle is dropped.
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(Listener {
            socket: self.socket.try_clone()?,
            spec: self.spec.clone(),
            local: self.local.clone(),
            inode: self.inode,
            file: self.file.clone(),
        })
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The address a socket is bound to, as a [`ListenAddr`].
pub(super) fn local_addr_of(socket: &Socket) -> io::Result<ListenAddr> {
    let addr = socket.local_addr()?;
    if let Some(inet) = addr.as_socket() {
        return Ok(if socket.r#type()? == Type::DGRAM {
            ListenAddr::Udp(inet)
        } else {
            ListenAddr::Tcp(inet)
        });
    }
    match addr.as_pathname() {
        Some(path) => Ok(ListenAddr::Unix(path.to_owned())),
        None => Err(io::Error::other("unnamed or abstract unix socket")),
    }
}

/// Opens every listener in order. On failure the ones already opened are closed again
/// (and their socket files removed), so a failed start leaves nothing behind.
pub fn open_listeners(specs: &[ListenerSpec]) -> Result<Vec<Listener>, ListenError> {
    open_listeners_with(specs, TcpSharing::Alone)
}

/// Whether a TCP or UDP listener may share its port with more sockets of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpSharing {
    /// The only socket on its port.
    Alone,
    /// The first socket of an `SO_REUSEPORT` group, for the steered handoff
    /// ([`super::steer`]); unix listeners are opened as ever.
    ReusePort,
}

/// [`open_listeners`], with TCP and UDP listeners opened for `sharing`.
pub fn open_listeners_with(
    specs: &[ListenerSpec],
    sharing: TcpSharing,
) -> Result<Vec<Listener>, ListenError> {
    specs.iter().map(|s| open_listener(s, sharing)).collect()
}

/// Removes the unix socket files of these listeners now, each only if the file on disk is
/// still the one we bound. The sockets stay open. Dropping the last handle does the same.
pub fn remove_socket_files(listeners: &[Listener]) {
    for file in listeners.iter().filter_map(|l| l.file.as_ref()) {
        file.remove();
    }
}

fn open_listener(spec: &ListenerSpec, sharing: TcpSharing) -> Result<Listener, ListenError> {
    let backlog = backlog_for(spec);
    let reuse_port = sharing == TcpSharing::ReusePort;
    match &spec.addr {
        ListenAddr::Tcp(addr) => {
            let socket = bind_tcp(*addr, None, reuse_port)?;
            listen(&socket, backlog, &addr.to_string())?;
            Listener::from_socket(socket, spec.clone(), None)
        }
        ListenAddr::AnyPort(port) => {
            let socket = bind_any(*port, Type::STREAM, reuse_port)?;
            listen(&socket, backlog, &spec.addr.to_string())?;
            Listener::from_socket(socket, spec.clone(), None)
        }
        ListenAddr::Unix(path) => open_unix(spec, path, backlog),
        // A datagram socket has no listen() and no backlog: bound, it receives.
        ListenAddr::Udp(addr) => {
            let socket = bind_inet(*addr, Type::DGRAM, None, reuse_port)?;
            Listener::from_socket(socket, spec.clone(), None)
        }
        ListenAddr::UdpAnyPort(port) => {
            let socket = bind_any(*port, Type::DGRAM, reuse_port)?;
            Listener::from_socket(socket, spec.clone(), None)
        }
    }
}

pub(crate) fn backlog_for(spec: &ListenerSpec) -> i32 {
    let backlog = spec.backlog.unwrap_or_else(|| {
        fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(FALLBACK_BACKLOG)
    });
    i32::try_from(backlog).unwrap_or(i32::MAX)
}

pub(super) fn listen(socket: &Socket, backlog: i32, addr: &str) -> Result<(), ListenError> {
    socket.listen(backlog).map_err(|source| ListenError::Io {
        about: "listen on",
        addr: addr.to_owned(),
        source,
    })
}

/// A TCP socket bound to `addr`. `dual_stack` sets IPV6_V6ONLY off explicitly; otherwise
/// the system default (`net.ipv6.bindv6only`) applies, as the user wrote an exact address.
/// `reuse_port` makes it the first of an `SO_REUSEPORT` group (the steered handoff).
pub(super) fn bind_tcp(
    addr: SocketAddr,
    dual_stack: Option<bool>,
    reuse_port: bool,
) -> Result<Socket, ListenError> {
    bind_inet(addr, Type::STREAM, dual_stack, reuse_port)
}

/// A TCP (`Type::STREAM`) or UDP (`Type::DGRAM`) socket bound to `addr`; see [`bind_tcp`].
pub(super) fn bind_inet(
    addr: SocketAddr,
    kind: Type,
    dual_stack: Option<bool>,
    reuse_port: bool,
) -> Result<Socket, ListenError> {
    let udp = kind == Type::DGRAM;
    let text = if udp {
        ListenAddr::Udp(addr).to_string()
    } else {
        addr.to_string()
    };
    let io_err = |about, source| ListenError::Io {
        about,
        addr: text.clone(),
        source,
    };
    // socket2 creates the socket with SOCK_CLOEXEC, and blocking: both as documented on
    // `Listener`.
    let socket = Socket::new(Domain::for_address(addr), kind, None)
        .map_err(|e| io_err("create a socket for", e))?;
    // SO_REUSEADDR lets a restarted supervisor bind while old connections sit in
    // TIME_WAIT. UDP has no TIME_WAIT, and there SO_REUSEADDR would let any other socket
    // with the option bind the same port and take datagrams: never for UDP.
    // SO_REUSEPORT only for the steered handoff, where the supervisor holds every socket
    // of the group and a BPF program picks the one that gets each new connection (or
    // datagram): without that program a second socket on the port would split the
    // queue, which is the failure this project exists to avoid.
    if !udp {
        socket
            .set_reuse_address(true)
            .map_err(|e| io_err("set SO_REUSEADDR on", e))?;
    }
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| io_err("set SO_REUSEPORT on", e))?;
    }
    if let Some(dual) = dual_stack {
        socket
            .set_only_v6(!dual)
            .map_err(|e| io_err("set IPV6_V6ONLY on", e))?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| ListenError::bind(text.clone(), Some(addr.port()), e))?;
    Ok(socket)
}

/// `:PORT`: `[::]` dual-stack when the machine has IPv6, else `0.0.0.0`.
fn bind_any(port: u16, kind: Type, reuse_port: bool) -> Result<Socket, ListenError> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match bind_inet(v6, kind, Some(true), reuse_port) {
        Ok(socket) => Ok(socket),
        Err(ListenError::Io { source, .. }) if no_ipv6(&source) => bind_inet(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            kind,
            None,
            reuse_port,
        ),
        Err(err) => Err(err),
    }
}

/// IPv6 compiled out (EAFNOSUPPORT) or disabled (EADDRNOTAVAIL on bind).
fn no_ipv6(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

fn open_unix(spec: &ListenerSpec, path: &Path, backlog: i32) -> Result<Listener, ListenError> {
    let shown = path.display().to_string();
    let io_err = |about, source| ListenError::Io {
        about,
        addr: shown.clone(),
        source,
    };
    clear_stale_socket(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| io_err("create a socket for", e))?;
    let addr = SockAddr::unix(path).map_err(|e| io_err("use the socket path", e))?;
    socket.bind(&addr).map_err(|e| match e.kind() {
        // Another process bound it between our probe and our bind.
        io::ErrorKind::AddrInUse => ListenError::UnixInUse {
            path: path.to_owned(),
        },
        _ => ListenError::bind(shown.clone(), None, e),
    })?;
    // Take ownership of the file right away, so any failure below removes it again.
    let meta = fs::symlink_metadata(path).map_err(|e| io_err("stat", e))?;
    if !meta.file_type().is_socket() {
        // Replaced between bind and stat: chmod would act on someone else's file.
        return Err(ListenError::NotASocket {
            path: path.to_owned(),
        });
    }
    let file = Arc::new(SocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        removed: AtomicBool::new(false),
    });
    // Mode and owner are set before listen(): until then a connect() is refused, so no
    // client can get in through the umask's wider default permissions.
    if let Some(mode) = spec.mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("chmod", e))?;
    }
    chown_socket(spec, path)?;
    listen(&socket, backlog, &shown)?;
    Listener::from_socket(socket, spec.clone(), Some(file))
}

/// A socket file left by a dead process is replaced; one that a live process listens on,
/// or anything that is not a socket, is left alone and reported.
fn clear_stale_socket(path: &Path) -> Result<(), ListenError> {
    let io_err = |about, source| ListenError::Io {
        about,
        addr: path.display().to_string(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket {
            path: path.to_owned(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ListenError::UnixInUse {
            path: path.to_owned(),
        }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_err("remove the stale socket", e))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(io_err("probe the existing socket", e)),
    }
}

fn chown_socket(spec: &ListenerSpec, path: &Path) -> Result<(), ListenError> {
    use nix::unistd::{Gid, Group, Uid, User};
    if spec.owner.is_none() && spec.group.is_none() {
        return Ok(());
    }
    let unknown = |what, name: &str| ListenError::UnknownOwner {
        what,
        name: name.to_owned(),
        path: path.to_owned(),
    };
    let uid = match spec.owner.as_deref() {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(id) => Uid::from_raw(id),
            Err(_) => match User::from_name(name) {
                Ok(Some(user)) => user.uid,
                _ => return Err(unknown("user", name)),
            },
        }),
    };
    let gid = match spec.group.as_deref() {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(id) => Gid::from_raw(id),
            Err(_) => match Group::from_name(name) {
                Ok(Some(group)) => group.gid,
                _ => return Err(unknown("group", name)),
            },
        }),
    };
    // lchown: never follow a symlink someone may have put in place of our socket.
    std::os::unix::fs::lchown(path, uid.map(Uid::as_raw), gid.map(Gid::as_raw)).map_err(|source| {
        ListenError::Io {
            about: "chown",
            addr: path.display().to_string(),
            source,
        }
    })
}

/// A socket file we bound, removed once: by [`remove_socket_files`] or when the last
/// listener handle drops.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    removed: AtomicBool,
}

impl SocketFile {
    /// Unlinks the file if it is still ours: another supervisor may have replaced it (after
    /// finding ours stale), and its file must survive our shutdown.
    fn remove(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if ours {
            if let Err(err) = fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), %err, "cannot remove socket file");
            }
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A listener this supervisor held before it re-executed itself, or that a dead
/// supervisor's generation still holds: `fd` must be the socket whose inode was recorded
/// (`inode`), so a recycled fd number or a swapped socket is refused. A unix listener's
/// file is removed at the stop again, if it is still that socket's.
pub fn resume_listener(
    spec: &ListenerSpec,
    fd: std::os::fd::OwnedFd,
    inode: u64,
) -> Result<Listener, ListenError> {
    let mismatch = |source: io::Error| ListenError::Io {
        about: "take back",
        addr: spec.addr.to_string(),
        source,
    };
    let stat = nix::sys::stat::fstat(&fd).map_err(|e| mismatch(e.into()))?;
    if stat.st_ino != inode || stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(mismatch(io::Error::other(format!(
            "the socket handed over is not the one recorded (inode {} instead of {inode})",
            stat.st_ino
        ))));
    }
    let socket = Socket::from(fd);
    socket.set_cloexec(true).map_err(mismatch)?;
    let file = match &spec.addr {
        ListenAddr::Unix(path) if !path.as_os_str().as_encoded_bytes().starts_with(b"@") => {
            fs::symlink_metadata(path).ok().map(|meta| {
                Arc::new(SocketFile {
                    path: path.clone(),
                    dev: meta.dev(),
                    ino: meta.ino(),
                    removed: AtomicBool::new(false),
                })
            })
        }
        _ => None,
    };
    Listener::from_socket(socket, spec.clone(), file)
}
