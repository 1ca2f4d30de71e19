//! Opening real listeners on loopback and in temporary directories.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use zd_core::listen::{
    ListenAddr, ListenError, Listener, ListenerSpec, open_listeners, open_or_adopt_listeners,
    remove_socket_files,
};

fn spec(text: &str) -> ListenerSpec {
    text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
}

fn open_one(spec: ListenerSpec) -> Result<Listener, ListenError> {
    let mut listeners = open_listeners(&[spec])?;
    Ok(listeners.remove(0))
}

fn fd_flags(listener: &Listener) -> (i32, i32) {
    let fd = listener.as_raw_fd();
    // SAFETY: fcntl with F_GETFD/F_GETFL only reads flags of an fd the listener owns.
    unsafe {
        (
            libc::fcntl(fd, libc::F_GETFD),
            libc::fcntl(fd, libc::F_GETFL),
        )
    }
}

fn tcp_port(listener: &Listener) -> u16 {
    match listener.local_addr() {
        ListenAddr::Tcp(addr) => addr.port(),
        other => panic!("not tcp: {other}"),
    }
}

#[test]
fn a_loopback_listener_is_blocking_close_on_exec_and_accepts() -> Result<(), ListenError> {
    let listener = open_one(spec("127.0.0.1:0"))?;
    let port = tcp_port(&listener);
    assert_ne!(port, 0);
    assert_eq!(listener.local_display(), format!("127.0.0.1:{port}"));
    assert_eq!(listener.name(), "unknown");
    let (fd_flags, status_flags) = fd_flags(&listener);
    assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "close-on-exec");
    assert_eq!(status_flags & libc::O_NONBLOCK, 0, "blocking");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd()));
    assert_eq!(
        link.ok().map(|l| l.display().to_string()),
        Some(format!("socket:[{}]", listener.inode()))
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    Ok(())
}

#[test]
fn an_ipv6_loopback_listener_displays_in_brackets() -> Result<(), ListenError> {
    let listener = match open_one(spec("api=[::1]:0")) {
        Ok(listener) => listener,
        // No IPv6 on this machine: nothing to test.
        Err(ListenError::Io { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
            ) =>
        {
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let port = tcp_port(&listener);
    assert_eq!(listener.local_display(), format!("[::1]:{port}"));
    assert_eq!(listener.name(), "api");
    Ok(())
}

#[test]
fn an_any_address_listener_takes_ipv4_connections_and_displays_the_port() -> Result<(), ListenError>
{
    let listener = open_one(spec(":0"))?;
    let port = tcp_port(&listener);
    assert_eq!(listener.local_display(), port.to_string());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    Ok(())
}

#[test]
fn a_port_in_use_is_reported_with_the_address_and_an_ss_hint() -> Result<(), ListenError> {
    let first = open_one(spec("127.0.0.1:0"))?;
    let port = tcp_port(&first);
    let err = open_one(spec(&format!("127.0.0.1:{port}"))).expect_err("port in use");
    assert!(
        matches!(&err, ListenError::AddrInUse { addr, .. } if *addr == format!("127.0.0.1:{port}")),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "address '127.0.0.1:{port}' is already in use; stop whatever listens there \
             (ss -ltunp 'sport = :{port}') or choose another port"
        )
    );
    Ok(())
}

fn unix_spec(path: &Path, mode: Option<u32>) -> ListenerSpec {
    let mut spec = spec(&format!("unix:{}", path.display()));
    spec.mode = mode;
    spec
}

#[test]
fn a_unix_listener_gets_its_mode_and_its_file_is_removed_on_drop() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("api.sock");
    let listener = open_one(unix_spec(&path, Some(0o600))).map_err(std::io::Error::other)?;
    let meta = std::fs::symlink_metadata(&path)?;
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(listener.local_display(), path.display().to_string());
    assert_eq!(listener.unix_path(), Some(path.as_path()));
    UnixStream::connect(&path)?;
    let clone = listener.try_clone()?;
    drop(listener);
    assert!(path.exists(), "a clone still holds the socket");
    drop(clone);
    assert!(!path.exists(), "the last handle removes the file");
    Ok(())
}

#[test]
fn a_stale_unix_socket_file_is_replaced() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stale.sock");
    // A listener that dies without unlinking leaves a file nobody listens on.
    drop(UnixListener::bind(&path)?);
    assert!(path.exists());
    let listener = open_one(unix_spec(&path, None)).map_err(std::io::Error::other)?;
    UnixStream::connect(&path)?;
    drop(listener);
    Ok(())
}

#[test]
fn a_live_unix_socket_is_left_alone() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("live.sock");
    let live = UnixListener::bind(&path)?;
    let err = open_one(unix_spec(&path, None)).expect_err("in use");
    assert!(matches!(err, ListenError::UnixInUse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is in use by a running process"),
        "{err}"
    );
    UnixStream::connect(&path)?;
    drop(live);
    Ok(())
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_deleted() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("data.sock");
    std::fs::write(&path, "precious")?;
    let err = open_one(unix_spec(&path, None)).expect_err("not a socket");
    assert!(matches!(err, ListenError::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path)?, "precious");
    Ok(())
}

#[test]
fn a_socket_file_replaced_by_someone_else_survives_our_shutdown() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shared.sock");
    let listeners = open_listeners(&[unix_spec(&path, None)]).map_err(std::io::Error::other)?;
    std::fs::remove_file(&path)?;
    let other = UnixListener::bind(&path)?;
    remove_socket_files(&listeners);
    drop(listeners);
    assert!(path.exists(), "the other process's socket file stays");
    drop(other);
    Ok(())
}

#[test]
fn remove_socket_files_unlinks_now_and_keeps_the_socket_open() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("now.sock");
    let listeners = open_listeners(&[unix_spec(&path, None)]).map_err(std::io::Error::other)?;
    remove_socket_files(&listeners);
    assert!(!path.exists());
    assert!(listeners[0].inode() > 0);
    Ok(())
}

#[test]
fn a_failed_open_closes_the_listeners_opened_before_it() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("first.sock");
    let busy = open_one(spec("127.0.0.1:0")).map_err(std::io::Error::other)?;
    let specs = [
        unix_spec(&path, None),
        spec(&format!("127.0.0.1:{}", tcp_port(&busy))),
    ];
    let err = open_listeners(&specs).expect_err("second is busy");
    assert!(matches!(err, ListenError::AddrInUse { .. }), "{err:?}");
    assert!(!path.exists(), "the first listener's file is gone");
    Ok(())
}

#[test]
fn a_unix_socket_gets_the_owner_and_group_given_by_id_or_name() -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // Root may give the socket away; anyone else may only keep it.
    let (owner, group, want) = if uid == 0 {
        ("65534".to_owned(), "root".to_owned(), (65534, 0))
    } else {
        (uid.to_string(), gid.to_string(), (uid, gid))
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("owned.sock");
    let mut spec = unix_spec(&path, Some(0o660));
    spec.owner = Some(owner);
    spec.group = Some(group);
    let _listener = open_one(spec).map_err(std::io::Error::other)?;
    let meta = std::fs::symlink_metadata(&path)?;
    assert_eq!((meta.uid(), meta.gid()), want);
    assert_eq!(meta.mode() & 0o7777, 0o660);
    Ok(())
}

#[test]
fn unknown_socket_owners_are_reported_with_the_path() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("owned.sock");
    let mut spec = unix_spec(&path, None);
    spec.owner = Some("no-such-user-zdctl".to_owned());
    let err = open_one(spec).expect_err("unknown user");
    assert!(
        matches!(err, ListenError::UnknownOwner { what: "user", .. }),
        "{err:?}"
    );
    assert!(!path.exists(), "nothing is left behind");
    Ok(())
}

#[test]
fn without_socket_activation_listeners_are_opened() -> Result<(), ListenError> {
    // LISTEN_PID is not ours in a test process, so this binds.
    let listeners = open_or_adopt_listeners(&[spec("127.0.0.1:0"), spec("b=127.0.0.1:0")])?;
    assert_eq!(listeners.len(), 2);
    assert_eq!(listeners[1].name(), "b");
    Ok(())
}

#[test]
fn missing_directories_surface_as_io_errors_naming_the_path() {
    let err = open_one(spec("unix:/nonexistent-zd-dir/x.sock")).expect_err("no dir");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent-zd-dir/x.sock"), "{msg}");
}

/// Set in the child processes of the socket-activation tests: `INODE:NAME`, the inode
/// of the socket passed as fd 3 and the listener name the child asks for.
const ACTIVATION_CHILD: &str = "ZD_TEST_ACTIVATION";

/// Runs test `name` again in a child process that gets `listener` as fd 3 and the systemd
/// variables (LISTEN_PID is set by the child itself: only it knows its pid).
fn run_activated_child(name: &str, listener: &Listener, wanted: &str) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;

    let source = listener.as_raw_fd();
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child
        .args(["--exact", name, "--test-threads=1"])
        .env(ACTIVATION_CHILD, format!("{}:{wanted}", listener.inode()))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web");
    // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe. The
    // listener's fd becomes fd 3 of the child with close-on-exec cleared, so it survives
    // exec, as systemd passes it.
    unsafe {
        child.pre_exec(move || {
            if source != 3 && libc::dup2(source, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = child.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The child side. Returns false in the parent process.
fn activation_child() -> std::io::Result<bool> {
    let Some(var) = std::env::var_os(ACTIVATION_CHILD) else {
        return Ok(false);
    };
    let var = var.to_string_lossy().into_owned();
    let (inode, wanted) = var.split_once(':').unwrap_or_default();
    // SAFETY: this process runs one test on one thread (--test-threads=1); nothing else
    // reads the environment concurrently.
    unsafe { std::env::set_var("LISTEN_PID", std::process::id().to_string()) };
    let result = open_or_adopt_listeners(&[spec(&format!("{wanted}=127.0.0.1:0"))]);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        assert!(std::env::var_os(var).is_none(), "{var} is cleared");
    }
    match wanted {
        "web" => {
            let listeners = result.map_err(std::io::Error::other)?;
            assert_eq!(listeners[0].inode().to_string(), inode, "fd 3 is adopted");
            assert_eq!(listeners[0].name(), "web");
            let (fd_flags, _) = fd_flags(&listeners[0]);
            assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "made close-on-exec");
        }
        _ => {
            let err = result.expect_err("systemd passed no such name");
            assert!(
                matches!(err, ListenError::ActivationNameMissing { .. }),
                "{err:?}"
            );
        }
    }
    Ok(true)
}

#[test]
fn systemd_activation_adopts_the_passed_fd_with_the_listener_name() -> std::io::Result<()> {
    if activation_child()? {
        return Ok(());
    }
    let listener = open_one(spec("127.0.0.1:0")).map_err(std::io::Error::other)?;
    run_activated_child(
        "systemd_activation_adopts_the_passed_fd_with_the_listener_name",
        &listener,
        "web",
    )
}

#[test]
fn systemd_activation_without_the_wanted_name_fails_and_clears_the_variables() -> std::io::Result<()>
{
    if activation_child()? {
        return Ok(());
    }
    let listener = open_one(spec("127.0.0.1:0")).map_err(std::io::Error::other)?;
    run_activated_child(
        "systemd_activation_without_the_wanted_name_fails_and_clears_the_variables",
        &listener,
        "other",
    )
}

fn udp_port(listener: &Listener) -> u16 {
    match listener.local_addr() {
        ListenAddr::Udp(addr) => addr.port(),
        other => panic!("not udp: {other}"),
    }
}

#[test]
fn a_udp_listener_is_a_bound_blocking_datagram_socket_without_reuseaddr() -> Result<(), ListenError>
{
    let listener = open_one(spec("dns=udp://127.0.0.1:0"))?;
    let port = udp_port(&listener);
    assert_ne!(port, 0);
    assert!(listener.is_udp());
    assert_eq!(listener.local_display(), format!("udp://127.0.0.1:{port}"));
    assert_eq!(listener.name(), "dns");
    let (fd_flags, status_flags) = fd_flags(&listener);
    assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "close-on-exec");
    assert_eq!(status_flags & libc::O_NONBLOCK, 0, "blocking");
    let socket = socket2::SockRef::from(&listener);
    assert_eq!(socket.r#type().ok(), Some(socket2::Type::DGRAM));
    assert_eq!(
        socket.reuse_address().ok(),
        Some(false),
        "no SO_REUSEADDR on UDP"
    );
    // It receives what is sent to its port.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
    client.send_to(b"ping", ("127.0.0.1", port)).expect("send");
    let reader: std::net::UdpSocket = socket.try_clone().expect("dup").into();
    let mut buf = [0u8; 8];
    let (len, _) = reader.recv_from(&mut buf).expect("recv");
    assert_eq!(&buf[..len], b"ping");
    Ok(())
}

#[test]
fn every_address_udp_shows_as_udp_port_and_a_taken_udp_port_is_named() -> Result<(), ListenError> {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = open_one(spec(&format!("udp://127.0.0.1:{port}"))).expect_err("port in use");
    assert!(
        matches!(&err, ListenError::AddrInUse { addr, .. } if *addr == format!("udp://127.0.0.1:{port}")),
        "{err:?}"
    );
    let any = open_one(spec("udp://:0"))?;
    let port = udp_port(&any);
    assert_eq!(any.local_display(), format!("udp://:{port}"));
    Ok(())
}
