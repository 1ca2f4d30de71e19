use std::net::{TcpListener, TcpStream};

use super::*;
use crate::inspect::netns::DiagSocket;

/// Captured from Linux 6.18 (x86_64): a dump of every TCP state with local
/// port 40123: a listener on 127.0.0.1:40123 (backlog 17), the accepted end
/// of a connection holding 5 unread bytes, and the time-wait end of a
/// connection the server closed; sequence number 7.
const TCP4_DUMP: &[u8] = include_bytes!("../../../tests/fixtures/inspect/tcp4-dump.bin");
/// The same on [::1]:40124, sequence number 8.
const TCP6_DUMP: &[u8] = include_bytes!("../../../tests/fixtures/inspect/tcp6-dump.bin");

fn parse_all(bytes: &[u8], seq: u32) -> (Vec<TcpRecord>, Progress) {
    let mut out = Vec::new();
    let progress = parse_inet(bytes, seq, &mut out).expect("fixture parses");
    (out, progress)
}

fn states(records: &[TcpRecord]) -> Vec<&'static str> {
    let mut names: Vec<_> = records.iter().map(|r| state_name(r.state)).collect();
    names.sort_unstable();
    names
}

#[test]
fn a_captured_ipv4_dump_yields_listener_connection_and_time_wait() {
    let (records, progress) = parse_all(TCP4_DUMP, 7);
    assert_eq!(progress, Progress::Done);
    assert_eq!(states(&records), vec!["established", "listen", "time_wait"]);
    let listener = records
        .iter()
        .find(|r| r.state == TCP_LISTEN)
        .expect("listener");
    assert_eq!(listener.local, "127.0.0.1:40123".parse().expect("addr"));
    assert_eq!(listener.wqueue, 17, "backlog of listen(17)");
    assert_eq!(listener.rqueue, 0);
    assert_ne!(listener.inode, 0);
    let time_wait = records.iter().find(|r| r.state == 6).expect("time-wait");
    assert_eq!(time_wait.inode, 0, "no file refers to a time-wait socket");
    let server_side = records
        .iter()
        .find(|r| r.state == 1 && r.local.port() == 40123)
        .expect("accepted end");
    assert_eq!(server_side.rqueue, 5, "five unread bytes");
}

#[test]
fn a_captured_ipv6_dump_keeps_full_addresses() {
    let (records, progress) = parse_all(TCP6_DUMP, 8);
    assert_eq!(progress, Progress::Done);
    let listener = records
        .iter()
        .find(|r| r.state == TCP_LISTEN)
        .expect("listener");
    assert_eq!(listener.local, "[::1]:40124".parse().expect("addr"));
    assert!(records.iter().all(|r| r.local.is_ipv6()));
    assert!(records.iter().any(|r| r.state == 1));
}

#[test]
fn messages_of_another_sequence_are_skipped() {
    let (records, progress) = parse_all(TCP4_DUMP, 99);
    assert!(records.is_empty());
    assert_eq!(progress, Progress::More);
}

/// A netlink message of `kind` with `payload`, as the kernel frames it.
fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDRLEN + payload.len()).expect("small");
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
    out
}

#[test]
fn a_kernel_error_reply_carries_its_errno() {
    let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0; 16]); // the offending request's header
    let reply = message(NLMSG_ERROR, 3, &payload);
    let err = parse_inet(&reply, 3, &mut Vec::new()).expect_err("error reply");
    assert_eq!(err, ReplyError::Kernel(libc::EINVAL));
}

#[test]
fn a_message_longer_than_the_datagram_is_malformed() {
    let mut reply = message(SOCK_DIAG_BY_FAMILY, 1, &[0; INET_DIAG_MSG_LEN]);
    reply.truncate(40);
    let err = parse_inet(&reply, 1, &mut Vec::new()).expect_err("cut");
    assert!(matches!(err, ReplyError::Malformed(_)), "{err:?}");
}

#[test]
fn an_unknown_state_number_is_kept_and_named_unknown() {
    let mut msg = vec![0u8; INET_DIAG_MSG_LEN];
    msg[0] = AF_INET;
    msg[1] = 42;
    msg[4..6].copy_from_slice(&8080u16.to_be_bytes());
    msg[8..12].copy_from_slice(&[127, 0, 0, 1]);
    msg[68..72].copy_from_slice(&77u32.to_ne_bytes());
    let reply = message(SOCK_DIAG_BY_FAMILY, 1, &msg);
    let mut out = Vec::new();
    parse_inet(&reply, 1, &mut out).expect("parses");
    assert_eq!(out[0].state, 42);
    assert_eq!(state_name(out[0].state), "unknown");
    assert_eq!(out[0].local, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(out[0].inode, 77);
}

#[test]
fn a_unix_listener_reply_gives_path_and_queue_lengths() {
    let mut msg = vec![AF_UNIX, 1, TCP_LISTEN, 0];
    msg.extend_from_slice(&31001u32.to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // cookie
    let name = b"/run/app.sock";
    msg.extend_from_slice(&u16::try_from(4 + name.len()).expect("small").to_ne_bytes());
    msg.extend_from_slice(&UNIX_DIAG_NAME.to_ne_bytes());
    msg.extend_from_slice(name);
    msg.resize(align4(msg.len()), 0);
    msg.extend_from_slice(&12u16.to_ne_bytes());
    msg.extend_from_slice(&UNIX_DIAG_RQLEN.to_ne_bytes());
    msg.extend_from_slice(&3u32.to_ne_bytes());
    msg.extend_from_slice(&128u32.to_ne_bytes());
    let mut reply = message(SOCK_DIAG_BY_FAMILY, 5, &msg);
    // A connected socket in the same dump is skipped.
    let mut other = vec![AF_UNIX, 1, 1, 0];
    other.extend_from_slice(&31002u32.to_ne_bytes());
    other.extend_from_slice(&[0; 8]);
    reply.extend(message(SOCK_DIAG_BY_FAMILY, 5, &other));
    reply.extend(message(NLMSG_DONE, 5, &[0; 4]));
    let mut out = Vec::new();
    assert_eq!(parse_unix(&reply, 5, &mut out), Ok(Progress::Done));
    assert_eq!(
        out,
        vec![UnixListenerRecord {
            inode: 31001,
            path: "/run/app.sock".to_owned(),
            accept_queue: 3,
            backlog: 128,
        }]
    );
}

#[test]
fn abstract_unix_names_are_shown_with_an_at_sign() {
    assert_eq!(unix_path(b"\0hidden"), "@hidden");
    assert_eq!(unix_path(b"/run/a.sock\0"), "/run/a.sock");
}

#[test]
fn the_port_filter_has_one_twenty_byte_block_per_port() {
    let program = port_filter(&[80, 443]);
    assert_eq!(program.len(), 40);
    // First block: S_GE 80, fails to the next block.
    assert_eq!(&program[0..2], &[INET_DIAG_BC_S_GE, 8]);
    assert_eq!(u16::from_ne_bytes([program[2], program[3]]), 20);
    assert_eq!(u16::from_ne_bytes([program[6], program[7]]), 80);
    // Last block: failures jump 4 bytes past the end.
    assert_eq!(u16::from_ne_bytes([program[22], program[23]]), 24);
    assert_eq!(u16::from_ne_bytes([program[30], program[31]]), 20 - 8 + 4);
    // A match jumps exactly to the end.
    assert_eq!(program[36], INET_DIAG_BC_JMP);
    assert_eq!(u16::from_ne_bytes([program[38], program[39]]), 4);
}

/// Three listeners on three ports; the kernel must return only the
/// sockets of the two ports asked for, proving it accepted and ran the
/// bytecode.
#[test]
fn the_kernel_returns_only_sockets_on_the_filtered_ports() {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let _clients: Vec<TcpStream> = ports
        .iter()
        .map(|port| TcpStream::connect(("127.0.0.1", *port)).expect("connect"))
        .collect();
    let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
    let mut socket = DiagSocket::open_for(pid).expect("sock_diag");
    let mut out = Vec::new();
    let wanted = [ports[0], ports[2]];
    socket
        .tcp(
            &[AF_INET, AF_INET6],
            CONNECTION_STATES | LISTEN_STATES,
            &wanted,
            &mut out,
        )
        .expect("dump");
    assert!(!out.is_empty());
    assert!(
        out.iter().all(|r| wanted.contains(&r.local.port())),
        "{out:?}"
    );
    // Listener plus the queued, not yet accepted connection, per port.
    for port in wanted {
        assert!(
            out.iter()
                .any(|r| r.local.port() == port && r.state == TCP_LISTEN && r.rqueue == 1)
        );
    }
}

/// Writes the `TCP4_DUMP` and `TCP6_DUMP` fixtures. Run by hand when the
/// format needs new captures:
/// `cargo test -p zd-core capture_fixtures -- --ignored`.
#[test]
#[ignore = "rewrites the captured fixtures"]
fn capture_fixtures() {
    use std::io::{Read as _, Write as _};
    use std::path::Path;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inspect");
    let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
    let mut socket = DiagSocket::open_for(pid).expect("sock_diag");
    for (address, seq, file) in [
        ("127.0.0.1:40123", 7, "tcp4-dump.bin"),
        ("[::1]:40124", 8, "tcp6-dump.bin"),
    ] {
        let listener = socket2::Socket::new(
            if address.starts_with('[') {
                socket2::Domain::IPV6
            } else {
                socket2::Domain::IPV4
            },
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        let address: std::net::SocketAddr = address.parse().expect("addr");
        listener.set_reuse_address(true).expect("reuse");
        listener.bind(&address.into()).expect("bind");
        listener.listen(17).expect("listen");
        let listener: TcpListener = listener.into();
        // One connection closed by the server first: its end, on the
        // listener's port, goes to time-wait.
        let mut closing = TcpStream::connect(address).expect("connect");
        drop(listener.accept().expect("accept"));
        let _ = closing.read(&mut [0; 1]);
        drop(closing);
        let mut client = TcpStream::connect(address).expect("connect");
        let (_accepted, _) = listener.accept().expect("accept");
        client.write_all(b"hello").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let family = if address.is_ipv6() { AF_INET6 } else { AF_INET };
        let request = inet_request(seq, family, 0xfff, &[address.port()]);
        let bytes = socket.raw_inet_dump(&request, seq).expect("dump");
        std::fs::write(dir.join(file), bytes).expect("write fixture");
    }
}

#[test]
fn a_dump_with_tcp_info_tells_a_connection_that_received_nothing_from_one_that_did() {
    use std::io::{Read as _, Write as _};
    let Ok(mut diag) = DiagSocket::open_here() else {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"SKIPPED: no sock_diag here\n");
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut accepted, _) = listener.accept().expect("accept");
    let received = |diag: &mut DiagSocket| {
        let mut out = Vec::new();
        diag.tcp_with_info(&[AF_INET], 1 << 1, &[port], &mut out)
            .expect("dump");
        out.iter()
            .find(|r| r.local.port() == port && r.state == 1)
            .map(|r| r.bytes_received)
    };
    assert_eq!(received(&mut diag), Some(Some(0)), "nothing sent yet");
    client.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).expect("read");
    assert_eq!(received(&mut diag), Some(Some(5)));
    // Without the extension the figure is not known.
    let mut out = Vec::new();
    diag.tcp(&[AF_INET], 1 << 1, &[port], &mut out)
        .expect("dump");
    assert!(out.iter().all(|r| r.bytes_received.is_none()), "{out:?}");
}
