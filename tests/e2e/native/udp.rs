//! UDP listeners: a datagram socket handed to every generation, and the steered handoff
//! for it. `zd-udp-echo` answers each datagram with its payload and its generation, and
//! on SIGTERM exits at once, losing whatever still waits in its socket's queue.
//!
//! Under `handoff: steered` every generation has a socket of its own, which closes when
//! the generation is gone: every datagram sent across 20 restarts is answered only
//! because the old generation is stopped once its socket's queue is empty (without that
//! wait this test loses a few dozen), and none sent after a restart returned is answered
//! by an older generation than the one that restart promoted.
//!
//! Under `handoff: shared` the one socket outlives every generation, so what an old
//! generation leaves unread the next one reads: with this echo, which answers every
//! datagram it reads, nothing is lost either, and that is asserted. What differs is
//! printed: the old generation keeps reading from the shared socket until its stop signal,
//! so its answers interleave with the new one's (a server that drops what it reads after
//! its stop signal would lose those), while steered, a generation's datagrams are the
//! ones sent before its successor's promotion.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

const RESTARTS: u64 = 20;
/// Datagrams in flight at most: far below what a socket's receive buffer holds, so the
/// kernel never drops one for want of room.
const WINDOW: u64 = 32;
/// The pause after every 4 datagrams.
const PACE: Duration = Duration::from_micros(50);
/// The most datagrams one run sends, whatever happens.
const MAX_DATAGRAMS: u64 = 400_000;
/// How long the sender waits for room in the window before it sends anyway (a lost
/// datagram never makes room). Only reached when datagrams are lost.
const STALL: Duration = Duration::from_secs(2);
/// How long the receiver waits for more answers once the sender stopped, after the last
/// one came.
const SETTLE: Duration = Duration::from_secs(3);

fn echo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_zd-udp-echo")
}

/// What one run saw: per datagram, the generation that was active (promoted, as far as
/// the test knew) when it was sent, and the generation that answered it, if one did.
pub(super) struct Run {
    sent: Vec<u64>,
    answered: BTreeMap<u64, u64>,
}

impl Run {
    pub(super) fn sent(&self) -> usize {
        self.sent.len()
    }

    pub(super) fn lost(&self) -> Vec<u64> {
        (0..self.sent.len() as u64)
            .filter(|seq| !self.answered.contains_key(seq))
            .collect()
    }

    /// Datagrams answered by a generation older than the one promoted before they were
    /// sent: (sequence number, promoted, answered by).
    pub(super) fn answered_by_older(&self) -> Vec<(u64, u64, u64)> {
        self.answered
            .iter()
            .filter_map(|(&seq, &by)| {
                let promoted = self.sent[seq as usize];
                (by < promoted).then_some((seq, promoted, by))
            })
            .collect()
    }

    /// Datagrams answered by a generation although a later datagram was already
    /// answered by a newer one: the old generation still received datagrams after the
    /// new one did.
    fn interleaved(&self) -> usize {
        let mut first_of: BTreeMap<u64, u64> = BTreeMap::new();
        for (&seq, &by) in &self.answered {
            first_of.entry(by).or_insert(seq);
        }
        self.answered
            .iter()
            .filter(|&(&seq, &by)| first_of.range(by + 1..).any(|(_, &first)| first < seq))
            .count()
    }

    pub(super) fn by_generation(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for by in self.answered.values() {
            *counts.entry(*by).or_default() += 1;
        }
        counts
    }
}

/// The echo on a kernel-chosen loopback port. A long `handoff_wait`: the old generation
/// reads its few queued datagrams in microseconds, and a wait that ends early on a
/// starved machine would lose them, which is not what the test is about.
fn service_yaml(handoff: &str) -> String {
    format!(
        "command: ['{}']\nlisten:\n  - dns=udp://127.0.0.1:0\nready: notify\n\
         handoff: {handoff}\nhandoff_wait: 10s\n",
        echo_bin()
    )
}

/// Starts the echo service under `handoff`, restarts it [`RESTARTS`] times while a client
/// sends numbered datagrams, and collects the answers.
fn restarts_under_datagrams(handoff: &str) -> Run {
    restarts_of(&format!("handoff: {handoff}"), &service_yaml(handoff))
}

/// Starts the service of `yaml`, an echo that answers each datagram `SEQ` with `SEQ
/// GENERATION`, restarts it [`RESTARTS`] times while a client sends numbered datagrams
/// (a refusal fails the test), and collects the answers; `what` names the run in what it
/// prints.
pub(super) fn restarts_of(what: &str, yaml: &str) -> Run {
    let mut env = TestEnv::new();
    env.write_service("echo", yaml);
    let status = env.start("echo", &["run", "echo"]);
    let address = address_of(&status);
    let target: SocketAddr = address
        .strip_prefix("udp://")
        .unwrap_or_else(|| panic!("a UDP address in the status: '{address}'"))
        .parse()
        .expect("ADDRESS:PORT");
    let promoted = Arc::new(AtomicU64::new(status.active_generation.expect("active")));
    let stop = Arc::new(AtomicBool::new(false));
    let answered_count = Arc::new(AtomicU64::new(0));

    let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let receiver = {
        let socket = client.try_clone().expect("dup");
        let stop = stop.clone();
        let count = answered_count.clone();
        std::thread::spawn(move || receive(&socket, &stop, &count))
    };
    let sender = {
        let (promoted, stop, count) = (promoted.clone(), stop.clone(), answered_count.clone());
        std::thread::spawn(move || send(&client, target, &promoted, &stop, &count))
    };

    for _ in 0..RESTARTS {
        assert_code(&env.run_zdctl(&["restart", "echo"]), 0);
        let status = env.status("echo").expect("status");
        promoted.store(status.active_generation.expect("active"), Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().expect("sender");
    let answered = receiver.join().expect("receiver");
    let run = Run { sent, answered };
    eprintln!(
        "{what}: {RESTARTS} restarts, {} datagrams sent, {} lost, {} answered by \
         an older generation than the promoted one, {} answered by a generation after a \
         newer one had answered a datagram sent earlier; answers by generation: {:?}",
        run.sent.len(),
        run.lost().len(),
        run.answered_by_older().len(),
        run.interleaved(),
        run.by_generation()
    );
    let status = env.status("echo").expect("status");
    assert_eq!(status.restarts.completed, RESTARTS, "{status:?}");
    run
}

/// Sends numbered datagrams, at most [`WINDOW`] unanswered, until `stop`; returns, per
/// sequence number, the generation promoted when it was sent.
fn send(
    socket: &UdpSocket,
    target: SocketAddr,
    promoted: &AtomicU64,
    stop: &AtomicBool,
    answered: &AtomicU64,
) -> Vec<u64> {
    let mut sent = Vec::new();
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst)
        && (sent.len() as u64) < MAX_DATAGRAMS
        && started.elapsed() < DEADLINE * 4
    {
        let waiting_since = Instant::now();
        while sent.len() as u64 - answered.load(Ordering::SeqCst) >= WINDOW
            && waiting_since.elapsed() < STALL
            && !stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        let seq = sent.len() as u64;
        // Paced, so that the datagrams last through every restart however fast the echo.
        if seq % 4 == 0 {
            std::thread::sleep(PACE);
        }
        // Read before the send: the datagram leaves after this generation was promoted.
        let generation = promoted.load(Ordering::SeqCst);
        socket
            .send_to(seq.to_string().as_bytes(), target)
            .expect("send");
        sent.push(generation);
    }
    sent
}

/// Collects `SEQ GENERATION` answers until `stop` and then [`SETTLE`] without one.
fn receive(socket: &UdpSocket, stop: &AtomicBool, count: &AtomicU64) -> BTreeMap<u64, u64> {
    let mut answered = BTreeMap::new();
    let mut buf = [0u8; 256];
    let mut last = Instant::now();
    loop {
        match socket.recv_from(&mut buf) {
            Ok((len, _)) => {
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                let (seq, by) = text
                    .split_once(' ')
                    .and_then(|(s, g)| Some((s.parse::<u64>().ok()?, g.parse::<u64>().ok()?)))
                    .unwrap_or_else(|| panic!("a malformed answer: '{text}'"));
                assert!(
                    answered.insert(seq, by).is_none(),
                    "datagram {seq} was answered twice"
                );
                count.fetch_add(1, Ordering::SeqCst);
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
        if stop.load(Ordering::SeqCst) && last.elapsed() > SETTLE {
            return answered;
        }
    }
}

#[test]
fn no_datagram_is_lost_across_steered_restarts_and_the_new_generation_answers_after_each() {
    let run = restarts_under_datagrams("steered");
    assert!(!run.sent.is_empty());
    let lost = run.lost();
    assert!(
        lost.is_empty(),
        "{} of {} datagrams got no answer, the first: {:?}",
        lost.len(),
        run.sent.len(),
        &lost[..lost.len().min(10)]
    );
    let older = run.answered_by_older();
    assert!(
        older.is_empty(),
        "datagrams sent after a promotion were answered by an older generation \
         (seq, promoted, answered by): {:?}",
        &older[..older.len().min(10)]
    );
}

#[test]
fn shared_udp_handoff_loses_nothing_its_generations_read_and_answer() {
    let run = restarts_under_datagrams("shared");
    assert!(!run.sent.is_empty());
    let lost = run.lost();
    assert!(
        lost.is_empty(),
        "{} of {} datagrams got no answer from the shared socket, the first: {:?}",
        lost.len(),
        run.sent.len(),
        &lost[..lost.len().min(10)]
    );
    // 21 generations ran; whatever answered was one of them.
    let generations = run.by_generation();
    assert!(
        generations.keys().all(|g| (1..=RESTARTS + 1).contains(g)),
        "{generations:?}"
    );
}

#[test]
fn the_status_shows_a_udp_listener_with_its_scheme_and_the_generation_gets_it_on_fd_3() {
    let mut env = TestEnv::new();
    env.write_service("echo", &service_yaml("steered"));
    let status = env.start("echo", &["run", "echo"]);
    let listener = &status.listeners[0];
    assert!(
        listener.address.starts_with("udp://127.0.0.1:"),
        "{listener:?}"
    );
    assert_eq!((listener.name.as_str(), listener.fd), ("dns", 3));
    let pid = active_pid(&status);
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("fd 3");
    assert_eq!(
        link.to_string_lossy(),
        format!("socket:[{}]", listener.inode)
    );
    let out = env.run_zdctl(&["status", "echo"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains(&listener.address), "{}", stdout(&out));
    let out = env.run_zdctl(&["status", "echo", "--json"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains(&listener.address), "{}", stdout(&out));
}

/// `accepting`, the default, takes a UDP-only service: a process waiting for datagrams
/// on its socket, in poll (the echo) or blocked in recvfrom (Python), is the evidence.
#[test]
#[cfg_attr(
    not(has_python3),
    ignore = "python3 not installed (Debian package python3)"
)]
fn a_udp_only_service_is_proven_ready_by_a_process_that_reads_its_socket() {
    let mut env = TestEnv::new();
    env.write_service(
        "echo",
        &format!("command: ['{}']\nlisten: udp://127.0.0.1:0\n", echo_bin()),
    );
    env.start("echo", &["run", "echo"]);
    let evidence = super::ready::restart_evidence_of(&env, "echo");
    assert!(evidence.contains("waiting in poll on fd 3"), "{evidence}");

    let Some(python) = crate::drivers::peer(
        "a_udp_only_service_is_proven_ready_by_a_process_that_reads_its_socket",
        "python3",
        "python3",
    ) else {
        return;
    };
    let script = "import socket\ns = socket.socket(fileno=3)\nwhile True:\n    s.recvfrom(64)\n";
    env.write_service(
        "echo",
        &format!(
            "command: [{:?}, '-c', {script:?}]\nlisten: udp://127.0.0.1:0\n",
            python.display().to_string()
        ),
    );
    let evidence = super::ready::restart_evidence_of(&env, "echo");
    assert!(
        evidence.contains("blocked in recvfrom on fd 3"),
        "{evidence}"
    );
}
