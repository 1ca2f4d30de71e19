//! Matching and checking passed fds, with our own sockets standing in for systemd's.

use super::*;
use std::os::fd::AsFd;

fn spec(text: &str) -> ListenerSpec {
    text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
}

/// Stand-ins for systemd's fds: duplicates of sockets we open ourselves.
fn passed(listeners: &[Listener], names: &[&str]) -> Vec<PassedFd> {
    listeners
        .iter()
        .zip(names)
        .map(|(l, name)| PassedFd {
            fd: l
                .as_fd()
                .try_clone_to_owned()
                .unwrap_or_else(|e| panic!("dup: {e}")),
            name: (*name).to_owned(),
        })
        .collect()
}

fn inodes(listeners: &[Listener]) -> Vec<u64> {
    listeners.iter().map(Listener::inode).collect()
}

#[test]
fn named_specs_take_the_fd_with_their_name_whatever_the_order() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("127.0.0.1:0"), spec("127.0.0.1:0")])?;
    let specs = [spec("admin=127.0.0.1:0"), spec("http=127.0.0.1:0")];
    let adopted = adopt(&specs, passed(&open, &["http", "admin"]))?;
    assert_eq!(inodes(&adopted), [open[1].inode(), open[0].inode()]);
    assert_eq!(adopted[0].name(), "admin");
    Ok(())
}

#[test]
fn unnamed_fds_are_matched_in_order() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("127.0.0.1:0"), spec("127.0.0.1:0")])?;
    let specs = [spec("a=127.0.0.1:0"), spec("127.0.0.1:0")];
    let adopted = adopt(&specs, passed(&open, &["unknown", "unknown"]))?;
    assert_eq!(inodes(&adopted), inodes(&open));
    Ok(())
}

#[test]
fn adopted_fds_are_made_close_on_exec() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("127.0.0.1:0")])?;
    let fds = passed(&open, &["unknown"]);
    nix::fcntl::fcntl(
        &fds[0].fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| ListenError::Io {
        about: "fcntl",
        addr: String::new(),
        source: e.into(),
    })?;
    let adopted = adopt(&[spec("127.0.0.1:0")], fds)?;
    let flags = nix::fcntl::fcntl(&adopted[0], nix::fcntl::FcntlArg::F_GETFD).map_err(|e| {
        ListenError::Io {
            about: "fcntl",
            addr: String::new(),
            source: e.into(),
        }
    })?;
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
    Ok(())
}

#[test]
fn a_name_systemd_did_not_pass_is_an_error_listing_the_passed_names() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("127.0.0.1:0")])?;
    let err = adopt(&[spec("admin=127.0.0.1:0")], passed(&open, &["api.socket"]))
        .expect_err("no such name");
    assert!(
        matches!(err, ListenError::ActivationNameMissing { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("LISTEN_FDNAMES='api.socket'"),
        "{err}"
    );
    Ok(())
}

#[test]
fn fewer_fds_than_listeners_is_an_error() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("127.0.0.1:0")])?;
    let specs = [spec("127.0.0.1:0"), spec("127.0.0.1:0")];
    let err = adopt(&specs, passed(&open, &["unknown"])).expect_err("short");
    assert!(
        matches!(
            err,
            ListenError::ActivationCount {
                expected: 2,
                passed: 1
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_socket_of_another_family_is_refused() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("127.0.0.1:0")])?;
    let err = adopt(&[spec("unix:/run/x.sock")], passed(&open, &["unknown"]))
        .expect_err("tcp is not unix");
    assert!(
        err.to_string()
            .contains("it is an IPv4 socket, the listener is unix"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_socket_that_does_not_listen_is_refused() -> Result<(), ListenError> {
    let io = |e: std::io::Error| ListenError::Io {
        about: "test",
        addr: String::new(),
        source: e,
    };
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(io)?;
    let fd = PassedFd {
        fd: socket.into(),
        name: "unknown".to_owned(),
    };
    let err = adopt(&[spec("127.0.0.1:0")], vec![fd]).expect_err("not listening");
    assert!(err.to_string().contains("it is not listening"), "{err}");
    Ok(())
}

#[test]
fn without_configured_listeners_every_passed_socket_is_adopted_as_is() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("127.0.0.1:0"), spec("127.0.0.1:0")])?;
    let adopted = adopt(&[], passed(&open, &["web", "unknown"]))?;
    assert_eq!(inodes(&adopted), inodes(&open));
    assert_eq!(adopted[0].spec().name.as_deref(), Some("web"));
    assert_eq!(adopted[1].spec().name, None);
    assert_eq!(adopted[0].local_addr(), open[0].local_addr());
    Ok(())
}

#[test]
fn a_passed_udp_socket_is_adopted_for_a_udp_listener() -> Result<(), ListenError> {
    let open = open_listeners(&[spec("udp://127.0.0.1:0")])?;
    let adopted = adopt(&[spec("dns=udp://127.0.0.1:0")], passed(&open, &["dns"]))?;
    assert_eq!(inodes(&adopted), inodes(&open));
    assert!(adopted[0].is_udp());
    assert!(adopted[0].local_display().starts_with("udp://127.0.0.1:"));
    Ok(())
}

#[test]
fn a_udp_socket_passed_for_a_tcp_listener_is_refused_and_the_reverse() -> Result<(), ListenError> {
    let udp = open_listeners(&[spec("udp://127.0.0.1:0")])?;
    let err = adopt(&[spec("127.0.0.1:0")], passed(&udp, &["unknown"]))
        .expect_err("a datagram socket for a TCP listener");
    assert!(err.to_string().contains("udp://"), "{err}");
    let tcp = open_listeners(&[spec("127.0.0.1:0")])?;
    let err = adopt(&[spec("udp://127.0.0.1:0")], passed(&tcp, &["unknown"]))
        .expect_err("a stream socket for a UDP listener");
    assert!(err.to_string().contains("listener is UDP"), "{err}");
    Ok(())
}

#[test]
fn a_passed_udp_socket_is_adopted_as_it_is_without_configured_listeners() -> Result<(), ListenError>
{
    let open = open_listeners(&[spec("udp://127.0.0.1:0")])?;
    let adopted = adopt(&[], passed(&open, &["unknown"]))?;
    assert!(matches!(adopted[0].spec().addr, ListenAddr::Udp(_)));
    Ok(())
}
