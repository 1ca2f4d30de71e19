//! The steered handoff: which generation's socket gets new connections at each step of a
//! restart, a rollback and a crash, when the old generation is stopped, and when sockets
//! close. The sockets are real (a loopback `SO_REUSEPORT` group); the processes are fakes
//! that hold the sockets they received, as a real generation holds its fds.

use std::net::TcpStream;

use super::*;
use crate::listen::steer::{Sockets, kernel_support};
use crate::listen::{ListenerSpec, TcpSharing, open_listeners_with};

/// A steered group on a loopback port, and the port; `None` (and a note) where the kernel
/// refuses steered groups.
pub(super) fn steered() -> Option<(Sockets, u16)> {
    if let Err(e) = kernel_support() {
        eprintln!("skipped: {e}");
        return None;
    }
    let spec: ListenerSpec = "127.0.0.1:0".parse().expect("spec");
    let listeners = open_listeners_with(&[spec], TcpSharing::ReusePort).expect("open");
    let port = match listeners[0].local_addr() {
        crate::listen::ListenAddr::Tcp(a) => a.port(),
        other => panic!("not tcp: {other}"),
    };
    Some((Sockets::new(listeners).expect("steered group"), port))
}

/// Opens one connection and keeps it open.
fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("connect")
}

/// Listening sockets on `port` in this process's network namespace.
fn listening_on(port: u16) -> usize {
    crate::proc::tcp_sockets(std::process::id() as i32)
        .expect("tcp table")
        .iter()
        .filter(|s| s.state == crate::proc::TcpState::Listen && s.local.port() == port)
        .count()
}

/// Lets the owner and the restart take every step they can in (paused) `d`.
async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

/// A restart on `sockets` whose generation 2 is ready after 1 s, with a `handoff_wait` of
/// 30 s (only empty queues let the old generation go sooner), taken up to the moment
/// generation 2 waits for readiness on a socket of its own.
async fn restart_with_a_slow_second_generation(
    sockets: Sockets,
) -> (FakeChildren, Harness, Pending) {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::After(Duration::from_secs(1)),
            ..Script::default()
        },
    );
    let mut cfg = config();
    cfg.handoff_wait = Duration::from_secs(30);
    let mut h = Harness::start_on(&fake, cfg, sockets);
    let restart = h.restart().await;
    h.wait_for("waiting 2").await;
    assert_ne!(fake.received(1), fake.received(2), "a socket of its own");
    (fake, h, restart)
}

#[tokio::test(start_paused = true)]
async fn new_connections_go_to_the_new_generation_only_once_it_is_promoted() {
    let Some((sockets, port)) = steered() else {
        return;
    };
    let (fake, mut h, restart) = restart_with_a_slow_second_generation(sockets).await;
    let _early = [connect(port), connect(port)];
    assert_eq!(
        (fake.queued(1), fake.queued(2)),
        (2, 0),
        "starting: to gen 1"
    );
    h.wait_for("promoted 2").await;
    let _late = [connect(port), connect(port), connect(port)];
    assert_eq!(
        (fake.queued(1), fake.queued(2)),
        (2, 3),
        "promoted: to gen 2"
    );
    // Gen 1 still has two connections to take: it is not asked to stop.
    pass(Duration::from_secs(5)).await;
    assert!(
        !h.seen().iter().any(|e| e.starts_with("draining 1")),
        "stopped with connections in its queue"
    );
    fake.accept_all(1);
    h.wait_for("draining 1 SIGTERM").await;
    let (_, report) = restart.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert_eq!(fake.queued(2), 3, "nothing moved to gen 1 meanwhile");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unread_request_bytes_hold_the_stop_signal_until_they_are_read() {
    let Some((sockets, _port)) = steered() else {
        return;
    };
    let fake = FakeChildren::scripted(
        1,
        Script {
            unread: true,
            ..Script::default()
        },
    );
    let mut cfg = config();
    cfg.handoff_wait = Duration::from_secs(30);
    let mut h = Harness::start_on(&fake, cfg, sockets);
    let restart = h.restart().await;
    h.wait_for("promoted 2").await;
    pass(Duration::from_secs(5)).await;
    assert!(!h.seen().iter().any(|e| e.starts_with("draining 1")));
    fake.child(1).read_all();
    h.wait_for("draining 1 SIGTERM").await;
    assert_eq!(restart.restart().await.1.outcome, RestartOutcome::Completed);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_stop_signal_goes_after_handoff_wait_when_the_queue_is_not_taken() {
    let Some((sockets, port)) = steered() else {
        return;
    };
    let fake = FakeChildren::default();
    let mut cfg = config();
    cfg.handoff_wait = Duration::from_secs(2);
    let mut h = Harness::start_on(&fake, cfg, sockets);
    let _waiting = connect(port);
    let restart = h.restart().await;
    h.wait_for("promoted 2").await;
    let promoted = tokio::time::Instant::now();
    h.wait_for("draining 1 SIGTERM").await;
    assert!(promoted.elapsed() >= Duration::from_secs(2), "it waited");
    assert_eq!(restart.restart().await.1.outcome, RestartOutcome::Completed);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rolled_back_generation_never_gets_a_connection_and_its_socket_closes() {
    let Some((sockets, port)) = steered() else {
        return;
    };
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::After(Duration::from_secs(1)),
            exits_after: Some((Duration::from_millis(500), ExitInfo::Code { code: 1 })),
            ..Script::default()
        },
    );
    let mut h = Harness::start_on(&fake, config(), sockets);
    let restart = h.restart().await;
    h.wait_for("waiting 2").await;
    assert_eq!(listening_on(port), 2);
    let _clients: Vec<TcpStream> = (0..4).map(|_| connect(port)).collect();
    assert_eq!((fake.queued(1), fake.queued(2)), (4, 0));
    let (_, report) = restart.restart().await;
    assert!(matches!(report.outcome, RestartOutcome::RolledBack { .. }));
    assert_eq!(fake.received(1).len(), 1);
    let _after = connect(port);
    assert_eq!(fake.queued(1), 5, "gen 1 still gets every connection");
    // Gen 2 has ended: its socket is gone from the group.
    pass(Duration::from_millis(10)).await;
    assert_eq!(listening_on(port), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_active_generation_keeps_its_socket_and_the_respawn_gets_it() {
    let Some((sockets, port)) = steered() else {
        return;
    };
    let fake = FakeChildren::default();
    let mut h = Harness::start_on(&fake, config(), sockets);
    let first = fake.received(1);
    fake.child(1).exit(ExitInfo::Signal { signal: 9 });
    h.wait_for("respawning 2 in 100ms").await;
    // Nobody runs: the client waits in the queue of the socket that stays open.
    let _waiting = connect(port);
    assert_eq!(listening_on(port), 1);
    h.wait_for("promoted 2").await;
    assert_eq!(fake.received(2), first, "the respawn gets the same socket");
    assert_eq!(fake.queued(2), 1, "and the client that waited");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_many_flips_only_the_active_generations_socket_is_open() {
    let Some((sockets, port)) = steered() else {
        return;
    };
    let fake = FakeChildren::default();
    let mut h = Harness::start_on(&fake, config(), sockets);
    for generation in 2..=6u64 {
        let (_, report) = h.restart().await.restart().await;
        assert_eq!(report.outcome, RestartOutcome::Completed);
        // The old generation's socket closes once it has ended.
        for _ in 0..100 {
            if listening_on(port) == 1 {
                break;
            }
            pass(Duration::from_millis(1)).await;
        }
        assert_eq!(listening_on(port), 1, "after the flip to {generation}");
        let _c = connect(port);
        assert_eq!(fake.queued(generation), 1);
        fake.accept_all(generation);
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_no_generation_runs_uses_the_waiting_clients_socket() {
    let Some((sockets, port)) = steered() else {
        return;
    };
    let mut cfg = config();
    cfg.restart.mode = RestartMode::Never;
    let fake = FakeChildren::default();
    let mut h = Harness::start_on(&fake, cfg, sockets);
    fake.child(1).exit(ExitInfo::Code { code: 1 });
    h.wait_for("exited 1 1").await;
    let _waiting = connect(port);
    let (_, report) = h.restart().await.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert_eq!(fake.received(2), fake.received(1));
    assert_eq!(fake.queued(2), 1, "the client that waited is gen 2's");
    h.stop().await;
}

/// A steered UDP group on a loopback port, and the port; `None` (and a note) where the
/// kernel refuses steered UDP groups.
fn steered_udp() -> Option<(Sockets, u16)> {
    if let Err(e) = crate::listen::steer::kernel_support_udp() {
        eprintln!("skipped: {e}");
        return None;
    }
    let spec: ListenerSpec = "udp://127.0.0.1:0".parse().expect("spec");
    let listeners = open_listeners_with(&[spec], TcpSharing::ReusePort).expect("open");
    let port = match listeners[0].local_addr() {
        crate::listen::ListenAddr::Udp(a) => a.port(),
        other => panic!("not udp: {other}"),
    };
    Some((Sockets::new(listeners).expect("steered group"), port))
}

/// Sends `n` datagrams to `port`, one at a time, each once the previous one is queued on
/// generation `to`'s sockets (loopback may deliver after the send returned, so this waits
/// in real time, with a deadline): none is still in flight when this returns.
fn send_datagrams(fake: &FakeChildren, port: u16, n: usize, to: u64) {
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
    for _ in 0..n {
        let before = fake.queued(to);
        client.send_to(b"query", ("127.0.0.1", port)).expect("send");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fake.queued(to) == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the datagram never reached gen {to}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn datagrams_go_to_the_new_generation_once_promoted_and_the_old_ones_hold_its_stop() {
    let Some((sockets, port)) = steered_udp() else {
        return;
    };
    let (fake, mut h, restart) = restart_with_a_slow_second_generation(sockets).await;
    send_datagrams(&fake, port, 2, 1);
    assert_eq!(fake.queued(2), 0, "starting: every datagram to gen 1");
    h.wait_for("promoted 2").await;
    let old_queue = fake.queued(1);
    send_datagrams(&fake, port, 3, 2);
    assert_eq!(fake.queued(1), old_queue, "promoted: none to gen 1");
    // Gen 1 still has two datagrams to read: it is not asked to stop.
    pass(Duration::from_secs(5)).await;
    assert!(
        !h.seen().iter().any(|e| e.starts_with("draining 1")),
        "stopped with datagrams in its queue"
    );
    fake.read_datagrams(1);
    h.wait_for("draining 1 SIGTERM").await;
    let (_, report) = restart.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert!(fake.queued(2) > 0, "gen 2 keeps its datagrams");
    h.stop().await;
}
