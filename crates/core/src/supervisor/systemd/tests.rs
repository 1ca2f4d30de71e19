use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{ControlMessageOwned, recvmsg};

use super::*;
use crate::proto::{ExitInfo, RestartReport};

fn event(restart: Option<u64>, kind: EventKind) -> Event {
    Event {
        unix_ms: 0,
        restart,
        elapsed_ms: None,
        elapsed_us: None,
        kind,
    }
}

fn finished(restart: u64, outcome: RestartOutcome) -> Event {
    event(
        Some(restart),
        EventKind::Finished {
            report: RestartReport {
                restart,
                outcome,
                old_generation: None,
                new_generation: None,
                new_pid: None,
                elapsed_ms: 0,
                output: Vec::new(),
                new_pids: Vec::new(),
                steps: None,
                bake_ms: None,
            },
        },
    )
}

/// Feeds `events` to a view of a supervisor whose pid is 42 and collects the messages,
/// with `MONOTONIC_USEC` read as 777.
fn messages(view: &mut ServiceView, events: &[Event]) -> Vec<Option<String>> {
    events.iter().map(|e| view.message_for(e, || 777)).collect()
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[test]
fn the_first_readiness_says_ready_with_the_supervisor_as_main_pid() {
    let mut view = ServiceView::new(42);
    let got = messages(
        &mut view,
        &[
            event(
                None,
                EventKind::Spawned {
                    generation: 1,
                    pid: 100,
                },
            ),
            event(
                None,
                EventKind::Ready {
                    generation: 1,
                    evidence: "accepting".into(),
                },
            ),
        ],
    );
    assert_eq!(
        got,
        [
            some("STATUS=generation 1 (pid 100) starting"),
            some("READY=1\nMAINPID=42\nSTATUS=generation 1 (pid 100) active"),
        ]
    );
}

#[test]
fn a_restart_reloads_then_is_ready_again_naming_the_new_generation() {
    let mut view = ServiceView::new(42);
    messages(
        &mut view,
        &[
            event(
                None,
                EventKind::Spawned {
                    generation: 1,
                    pid: 100,
                },
            ),
            event(
                None,
                EventKind::Ready {
                    generation: 1,
                    evidence: String::new(),
                },
            ),
        ],
    );
    let got = messages(
        &mut view,
        &[
            event(Some(1), EventKind::RestartRequested),
            event(
                Some(1),
                EventKind::Spawned {
                    generation: 2,
                    pid: 200,
                },
            ),
            event(
                Some(1),
                EventKind::Ready {
                    generation: 2,
                    evidence: String::new(),
                },
            ),
            event(
                Some(1),
                EventKind::Promoted {
                    generation: 2,
                    pid: 200,
                },
            ),
            finished(1, RestartOutcome::Completed),
        ],
    );
    assert_eq!(
        got,
        [
            some(
                "RELOADING=1\nMONOTONIC_USEC=777\nSTATUS=restart #1: starting a new generation; \
                 generation 1 (pid 100) active"
            ),
            None,
            None,
            None,
            some(
                "READY=1\nMAINPID=42\nSTATUS=generation 2 (pid 200) active; last restart completed"
            ),
        ]
    );
}

#[test]
fn a_rolled_back_restart_is_ready_too_and_its_reason_stays_on_the_status_line() {
    let mut view = ServiceView::new(42);
    view.active = Some((1, 100));
    view.ready = true;
    let got = view.message_for(
        &finished(
            3,
            RestartOutcome::RolledBack {
                reason: "generation 2 exited\nREADY=1 before it was ready".into(),
            },
        ),
        || 0,
    );
    assert_eq!(
        got.as_deref(),
        Some(
            "READY=1\nMAINPID=42\nSTATUS=generation 1 (pid 100) active; last restart rolled \
             back: generation 2 exited READY=1 before it was ready"
        )
    );
}

#[test]
fn a_restart_that_rolls_back_before_the_service_was_ever_ready_does_not_say_ready() {
    let mut view = ServiceView::new(42);
    view.active = Some((1, 100));
    let got = messages(
        &mut view,
        &[
            event(Some(1), EventKind::RestartRequested),
            finished(
                1,
                RestartOutcome::RolledBack {
                    reason: "not ready".into(),
                },
            ),
            event(Some(2), EventKind::RestartRequested),
            finished(2, RestartOutcome::Completed),
        ],
    );
    assert_eq!(
        got[1],
        some("STATUS=generation 1 (pid 100) active; last restart rolled back: not ready")
    );
    assert_eq!(
        got[3],
        some("READY=1\nMAINPID=42\nSTATUS=generation 1 (pid 100) active; last restart completed")
    );
}

#[test]
fn a_respawn_changes_the_status_and_does_not_say_ready_again() {
    let mut view = ServiceView::new(42);
    view.active = Some((1, 100));
    view.ready = true;
    let got = messages(
        &mut view,
        &[
            event(
                None,
                EventKind::Exited {
                    generation: 1,
                    pid: 100,
                    status: ExitInfo::Code { code: 1 },
                },
            ),
            event(
                None,
                EventKind::Respawning {
                    generation: 2,
                    delay_ms: 100,
                },
            ),
            event(
                None,
                EventKind::Spawned {
                    generation: 2,
                    pid: 200,
                },
            ),
            event(
                None,
                EventKind::Promoted {
                    generation: 2,
                    pid: 200,
                },
            ),
            event(
                None,
                EventKind::Ready {
                    generation: 2,
                    evidence: String::new(),
                },
            ),
        ],
    );
    assert_eq!(
        got,
        [
            some("STATUS=no active generation: generation 1 exited (exit code 1)"),
            some("STATUS=no active generation: generation 2 starts in 100 ms"),
            some("STATUS=generation 2 (pid 200) starting"),
            None,
            some("STATUS=generation 2 (pid 200) active"),
        ]
    );
}

#[test]
fn after_stopping_nothing_says_ready() {
    let mut view = ServiceView::new(42);
    view.active = Some((1, 100));
    view.ready = true;
    let got = messages(
        &mut view,
        &[
            event(None, EventKind::Stopping),
            // A running restart rolls back when the stop begins.
            finished(
                1,
                RestartOutcome::RolledBack {
                    reason: "stopping".into(),
                },
            ),
        ],
    );
    assert_eq!(
        got,
        [
            some("STOPPING=1\nSTATUS=stopping: draining every generation"),
            None
        ]
    );
}

#[test]
fn notify_socket_is_a_path_or_an_abstract_name() {
    let path = parse_notify_socket(b"/run/systemd/notify").expect("a path");
    assert_eq!(
        path.path(),
        Some(std::path::Path::new("/run/systemd/notify"))
    );
    let abstract_ = parse_notify_socket(b"@/org/freedesktop/systemd1/notify").expect("abstract");
    assert_eq!(
        abstract_.as_abstract(),
        Some(&b"/org/freedesktop/systemd1/notify"[..])
    );
    for bad in [&b"run/notify"[..], b"@", b"vsock:2:1234"] {
        assert!(parse_notify_socket(bad).is_err(), "{bad:?}");
    }
    assert!(parse_notify_socket(format!("/{}", "x".repeat(200)).as_bytes()).is_err());
}

#[test]
fn fd_store_is_on_only_for_a_positive_number() {
    assert_eq!(fd_store_max(Some("16".into())), 16);
    assert_eq!(fd_store_max(Some("0".into())), 0);
    assert_eq!(fd_store_max(Some("lots".into())), 0);
    assert_eq!(fd_store_max(None), 0);
}

#[test]
fn fd_store_message_names_the_listener() {
    assert_eq!(fd_store_message("http"), "FDSTORE=1\nFDNAME=http");
}

#[test]
fn the_monotonic_clock_is_read_in_microseconds() {
    let (a, b) = (monotonic_usec(), monotonic_usec());
    assert!(a > 0 && b >= a);
}

#[test]
fn messages_reach_a_manager_on_a_path_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify");
    let receiver = UnixDatagram::bind(&path).expect("bind");
    let manager = Manager::new(parse_notify_socket(path.as_os_str().as_bytes()).expect("addr"))
        .expect("socket");
    manager.send("READY=1\nSTATUS=up").expect("send");
    let mut buf = [0u8; 256];
    let n = receiver.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
}

#[test]
fn messages_reach_a_manager_on_an_abstract_socket() {
    let name = format!("zd-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let receiver = UnixDatagram::bind_addr(&addr).expect("bind");
    let manager = Manager::new(parse_notify_socket(format!("@{name}").as_bytes()).expect("addr"))
        .expect("socket");
    manager.send("STOPPING=1").expect("send");
    let mut buf = [0u8; 64];
    let n = receiver.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn a_stored_fd_arrives_as_the_same_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify");
    let receiver = UnixDatagram::bind(&path).expect("bind");
    let manager = Manager::new(parse_notify_socket(path.as_os_str().as_bytes()).expect("addr"))
        .expect("socket");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    manager
        .send_fd(&fd_store_message("http"), listener.as_raw_fd())
        .expect("send");

    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        receiver.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    let fds: Vec<OwnedFd> = msg
        .cmsgs()
        .expect("cmsgs")
        .flat_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds,
            _ => Vec::new(),
        })
        // SAFETY: SCM_RIGHTS gave us these fds; nothing else owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let text = msg.iovs().next().map(<[u8]>::to_vec).unwrap_or_default();
    assert_eq!(text, b"FDSTORE=1\nFDNAME=http");
    assert_eq!(fds.len(), 1);
    let inode = |fd: std::os::fd::BorrowedFd<'_>| nix::sys::stat::fstat(fd).expect("fstat").st_ino;
    assert_eq!(inode(fds[0].as_fd()), inode(listener.as_fd()));
}

fn sockets(specs: &[&str], sharing: crate::listen::TcpSharing) -> Sockets {
    let specs: Vec<crate::listen::ListenerSpec> =
        specs.iter().map(|s| s.parse().expect("spec")).collect();
    let listeners = crate::listen::open_listeners_with(&specs, sharing).expect("listen");
    Sockets::new(listeners).expect("sockets")
}

#[test]
fn shared_listeners_are_stored_when_at_most_one_is_unnamed() {
    use crate::listen::TcpSharing::Alone;
    assert_eq!(why_not_storable(&sockets(&["127.0.0.1:0"], Alone)), None);
    assert_eq!(
        why_not_storable(&sockets(
            &["a=127.0.0.1:0", "b=127.0.0.1:0", "127.0.0.1:0"],
            Alone
        )),
        None
    );
}

#[test]
fn no_listener_is_stored_when_two_are_unnamed_or_one_is_steered() {
    use crate::listen::TcpSharing::{Alone, ReusePort};
    let unnamed = why_not_storable(&sockets(
        &["127.0.0.1:0", "a=127.0.0.1:0", "127.0.0.1:0"],
        Alone,
    ));
    assert!(
        unnamed.is_some_and(|r| r.contains("name each one")),
        "{unnamed:?}"
    );
    if crate::listen::steer::kernel_support().is_err() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: this kernel refuses steered groups\n",
        );
        return;
    }
    let steered = why_not_storable(&sockets(&["a=127.0.0.1:0"], ReusePort));
    assert!(
        steered.is_some_and(|r| r.contains("handoff: shared")),
        "{steered:?}"
    );
}
