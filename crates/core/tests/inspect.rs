//! The inspector against real process trees: a root process (the
//! supervisor) and generations forked from it that share one listener and
//! each hold their own accepted loopback connections, the way a handoff
//! leaves them. Every test runs on both socket paths.

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use zd_core::inspect::{Inspector, Snapshot, SocketSource};
use zd_core::proc;
use zd_core::proto::{
    GenerationInfo, GenerationState, ListenerInfo, RestartCounters, Status, unix_ms,
};

/// Forked processes inherit every fd of this process, including the
/// sockets of a test running at the same time, which would then show up in
/// the wrong tree. So these tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const BOTH: [SocketSource; 2] = [SocketSource::Netlink, SocketSource::Procfs];

/// A root process and its children, all forked from the test and parked in
/// `pause()`. Killed (and the root reaped) on drop, however the test ends.
struct Family {
    root: i32,
    /// Child pids, in the order their fd sets were given.
    children: Vec<i32>,
}

impl Drop for Family {
    fn drop(&mut self) {
        for pid in self.children.iter().chain([&self.root]) {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        // The children are the root's: once it dies, init reaps them.
        let _ = waitpid(Pid::from_raw(self.root), None);
    }
}

/// Forks a root that forks one child per entry of `keep`. Every fd in
/// `closable` is closed in the root and in each child except the ones that
/// child keeps; everything else (the listener) stays open everywhere.
/// Returns once every process has closed what it must.
fn fork_family(closable: &[RawFd], keep: &[Vec<RawFd>]) -> Family {
    // Computed before forking: after fork only async-signal-safe calls are
    // allowed (other test threads may hold the allocator's lock).
    let to_close: Vec<Vec<RawFd>> = keep
        .iter()
        .map(|kept| {
            closable
                .iter()
                .copied()
                .filter(|fd| !kept.contains(fd))
                .collect()
        })
        .collect();
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only calls async-signal-safe functions (fork,
    // close, getpid, write, pause) on memory allocated before the fork, and
    // never returns: it waits in pause() until the test kills it.
    let root = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            for (index, fds) in to_close.iter().enumerate() {
                // SAFETY: as above.
                if let Ok(ForkResult::Child) = unsafe { fork() } {
                    park(fds, &writer, b'0' + index as u8);
                }
            }
            park(closable, &writer, b'r');
        }
        ForkResult::Parent { child } => child.as_raw(),
    };
    drop(writer);
    let mut family = Family {
        root,
        children: vec![0; keep.len()],
    };
    let mut reports = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reader = std::fs::File::from(reader);
    while reports < keep.len() + 1 {
        assert!(Instant::now() < deadline, "forked processes did not report");
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).expect("poll") == 0 {
            continue;
        }
        let mut message = [0u8; 5];
        reader.read_exact(&mut message).expect("report");
        let pid = i32::from_ne_bytes([message[1], message[2], message[3], message[4]]);
        if message[0] != b'r' {
            family.children[usize::from(message[0] - b'0')] = pid;
        }
        reports += 1;
    }
    family
}

/// In a forked process: closes `fds`, reports `tag` and the pid, and waits
/// to be killed.
fn park(fds: &[RawFd], report: &OwnedFd, tag: u8) -> ! {
    for &fd in fds {
        let _ = nix::unistd::close(fd);
    }
    let pid = nix::unistd::getpid().as_raw().to_ne_bytes();
    let message = [tag, pid[0], pid[1], pid[2], pid[3]];
    let _ = nix::unistd::write(report, &message);
    loop {
        nix::unistd::pause();
    }
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).expect("pid fits in i32")
}

fn inode_of(fd: RawFd) -> u64 {
    proc::socket_fds(own_pid())
        .expect("own fds")
        .into_iter()
        .find(|(found, _)| *found == fd)
        .map(|(_, inode)| inode)
        .expect("socket listed")
}

/// A listener with `count` accepted connections: (listener, its address,
/// the client ends, the accepted ends).
fn listener_with_connections(
    count: usize,
) -> (TcpListener, SocketAddr, Vec<TcpStream>, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let clients: Vec<TcpStream> = (0..count)
        .map(|_| TcpStream::connect(address).expect("connect"))
        .collect();
    let accepted = (0..count)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    (listener, address, clients, accepted)
}

/// Gen A holds the first three accepted connections, gen B the other five;
/// both (and the root) hold the listener.
fn shared_listener_family() -> (Family, TcpListener, u64, Vec<TcpStream>) {
    let (listener, _, clients, accepted) = listener_with_connections(8);
    let fds: Vec<RawFd> = accepted.iter().map(|s| s.as_raw_fd()).collect();
    let family = fork_family(&fds, &[fds[..3].to_vec(), fds[3..].to_vec()]);
    let inode = inode_of(listener.as_raw_fd());
    // Only the generations hold the accepted ends now.
    drop(accepted);
    (family, listener, inode, clients)
}

fn generation_of(snapshot: &Snapshot, main_pid: i32) -> &zd_core::inspect::GenerationView {
    snapshot
        .generations
        .iter()
        .find(|g| g.main_pid == main_pid)
        .unwrap_or_else(|| panic!("no generation of pid {main_pid} in {snapshot:#?}"))
}

#[test]
fn two_generations_share_the_listener_inode_and_each_shows_its_own_connections() {
    let _serial = serial();
    let (family, listener, inode, _clients) = shared_listener_family();
    let port = listener.local_addr().expect("address").port();
    for source in BOTH {
        let mut inspector = Inspector::new(source);
        let snapshot = inspector
            .snapshot_tree("shared", family.root)
            .expect("snapshot");
        assert_eq!(snapshot.source, source.as_str());
        assert_eq!(snapshot.generations.len(), 2, "{snapshot:#?}");
        let first = generation_of(&snapshot, family.children[0]);
        let second = generation_of(&snapshot, family.children[1]);
        assert_eq!(first.connection_count, 3, "{source:?}: {first:#?}");
        assert_eq!(second.connection_count, 5, "{source:?}: {second:#?}");
        assert_eq!(first.listener_inodes, vec![inode]);
        assert_eq!(second.listener_inodes, vec![inode]);
        assert!(first.generation < second.generation, "older first");
        assert_eq!(second.state, "active");
        assert!(
            second
                .connections
                .iter()
                .all(|c| c.state == "established" && c.local.ends_with(&format!(":{port}")))
        );
        let view = snapshot
            .listeners
            .iter()
            .find(|l| l.inode == inode)
            .expect("the shared listener");
        assert_eq!(view.held_by, vec![first.generation, second.generation]);
        assert_eq!(view.address, format!("127.0.0.1:{port}"));
        assert!(first.cpu_percent.is_none(), "no CPU % on a first snapshot");
        assert!(snapshot.kernel.overflows_delta.is_none());

        let again = inspector
            .snapshot_tree("shared", family.root)
            .expect("snapshot");
        let first = generation_of(&again, family.children[0]);
        assert!(
            first.cpu_percent.is_some(),
            "CPU % from the second snapshot on"
        );
        assert_eq!(first.connection_count, 3);
        assert!(again.kernel.overflows_delta.is_some());
    }
}

#[test]
fn a_native_status_names_the_generations_and_their_states() {
    let _serial = serial();
    let (family, listener, inode, _clients) = shared_listener_family();
    let address = listener.local_addr().expect("address").to_string();
    let started = unix_ms(std::time::SystemTime::now()) - 5_000;
    let generation = |number: u64, pid: i32, state| GenerationInfo {
        instances: Vec::new(),
        generation: number,
        pid,
        state,
        started_unix_ms: started,
        exit: None,
        intercept: None,
        output_lines: None,
    };
    let status = Status {
        bake: None,
        capacity: None,
        instances: None,
        service: "api".to_owned(),
        supervisor_pid: family.root,
        started_unix_ms: started,
        config_path: None,
        active_generation: Some(8),
        restart_in_progress: None,
        generations: vec![
            GenerationInfo {
                output_lines: Some(12),
                ..generation(8, family.children[1], GenerationState::Active)
            },
            generation(7, family.children[0], GenerationState::Draining),
        ],
        listeners: vec![ListenerInfo {
            name: "http".to_owned(),
            address: address.clone(),
            inode,
            fd: 3,
        }],
        sockets: Vec::new(),
        restarts: RestartCounters::default(),
        last_restart: None,
        containment: None,
        intercept_binds: false,
        failing: None,
        supervisor: None,
        log_lines: None,
    };
    for source in BOTH {
        let snapshot = Inspector::new(source)
            .snapshot_native(&status)
            .expect("snapshot");
        let numbers: Vec<u64> = snapshot.generations.iter().map(|g| g.generation).collect();
        assert_eq!(numbers, vec![7, 8], "oldest first");
        let (old, new) = (&snapshot.generations[0], &snapshot.generations[1]);
        assert_eq!((old.state.as_str(), old.connection_count), ("draining", 3));
        assert_eq!((new.state.as_str(), new.connection_count), ("active", 5));
        // What only the supervisor knows comes from its status.
        assert_eq!((old.output_lines, new.output_lines), (None, Some(12)));
        assert!(old.age_ms >= 5_000);
        assert!(old.fds > 3 && old.rss_bytes > 0);
        assert_eq!(snapshot.listeners.len(), 1, "{snapshot:#?}");
        assert_eq!(snapshot.listeners[0].address, address);
        assert_eq!(snapshot.listeners[0].held_by, vec![7, 8]);
    }
}

#[test]
fn pending_connections_show_in_the_accept_queue_of_a_listener_nobody_accepts() {
    let _serial = serial();
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind");
    socket.listen(16).expect("listen");
    let listener: TcpListener = socket.into();
    let address = listener.local_addr().expect("address");
    let inode = inode_of(listener.as_raw_fd());
    // A root without children is its own (only) generation.
    let family = fork_family(&[], &[]);
    let _pending: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(address).expect("connect"))
        .collect();
    for source in BOTH {
        let snapshot = Inspector::new(source)
            .snapshot_tree("queued", family.root)
            .expect("snapshot");
        let view = snapshot
            .listeners
            .iter()
            .find(|l| l.inode == inode)
            .expect("listener");
        assert_eq!(view.accept_queue, 4, "{source:?}");
        // /proc/net/tcp shows no backlog for a listener.
        let backlog = if source == SocketSource::Netlink {
            16
        } else {
            0
        };
        assert_eq!(view.backlog, backlog, "{source:?}");
        assert_eq!(snapshot.generations.len(), 1);
        assert_eq!(snapshot.generations[0].main_pid, family.root);
        assert_eq!(
            snapshot.generations[0].connection_count, 0,
            "queued connections belong to nobody yet"
        );
    }
}

#[test]
fn a_unix_listener_shows_its_path_and_on_netlink_its_queue() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let inode = inode_of(listener.as_raw_fd());
    let family = fork_family(&[], &[]);
    let _pending: Vec<_> = (0..2)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).expect("connect"))
        .collect();
    for source in BOTH {
        let snapshot = Inspector::new(source)
            .snapshot_tree("unix", family.root)
            .expect("snapshot");
        let view = snapshot
            .listeners
            .iter()
            .find(|l| l.inode == inode)
            .expect("listener");
        assert_eq!(view.address, path.to_string_lossy());
        assert_eq!(view.held_by, vec![snapshot.generations[0].generation]);
        if source == SocketSource::Netlink {
            assert_eq!(view.accept_queue, 2);
            assert!(view.backlog > 0);
        }
    }
}

#[test]
fn a_snapshot_of_a_process_that_is_gone_says_so() {
    let _serial = serial();
    let family = fork_family(&[], &[]);
    let pid = family.root;
    drop(family);
    let err = Inspector::default()
        .snapshot_tree("gone", pid)
        .expect_err("gone");
    assert!(
        matches!(err, zd_core::inspect::InspectError::Gone { pid: p } if p == pid),
        "{err:?}"
    );
}

#[test]
fn a_snapshot_round_trips_through_json() {
    let _serial = serial();
    let (family, _listener, _inode, _clients) = shared_listener_family();
    let snapshot = Inspector::default()
        .snapshot_tree("json", family.root)
        .expect("snapshot");
    let text = serde_json::to_string(&snapshot).expect("serialize");
    let back: Snapshot = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, snapshot);
}

#[test]
fn connections_accepted_or_closed_after_a_snapshot_show_in_the_next_one() {
    let _serial = serial();
    // This process, without children, is its own only generation.
    let (listener, address, mut clients, mut accepted) = listener_with_connections(3);
    for source in BOTH {
        let mut inspector = Inspector::new(source);
        let mut count = || {
            let snapshot = inspector
                .snapshot_tree("self", own_pid())
                .expect("snapshot");
            assert_eq!(snapshot.generations.len(), 1, "{snapshot:#?}");
            snapshot.generations[0].connection_count
        };
        let before = accepted.len();
        assert_eq!(count(), before, "{source:?}");
        assert_eq!(count(), before, "{source:?}: nothing changed");

        clients.push(TcpStream::connect(address).expect("connect"));
        accepted.push(listener.accept().expect("accept").0);
        assert_eq!(count(), before + 1, "{source:?}: one more accepted");

        // Close one and open a file in its place: the fd count stays the
        // same, the namespace's TCP counters tell the change.
        drop(accepted.pop());
        let _file = std::fs::File::open("/proc/self/stat").expect("open a file");
        assert_eq!(count(), before, "{source:?}: one closed");
    }
}

#[test]
fn each_generations_udp_socket_shows_with_its_scheme_holder_and_queued_bytes() {
    let _serial = serial();
    // Two sockets of one SO_REUSEPORT group, as the steered handoff makes them: the old
    // generation's and the new one's.
    let udp = |addr: SocketAddr| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        socket.set_reuse_port(true).expect("SO_REUSEPORT");
        socket.bind(&addr.into()).expect("bind");
        std::net::UdpSocket::from(socket)
    };
    let old = udp("127.0.0.1:0".parse().expect("address"));
    let address = old.local_addr().expect("address");
    let new = udp(address);
    let (old_inode, new_inode) = (inode_of(old.as_raw_fd()), inode_of(new.as_raw_fd()));
    let family = fork_family(
        &[old.as_raw_fd(), new.as_raw_fd()],
        &[vec![old.as_raw_fd()], vec![new.as_raw_fd()]],
    );
    // Datagrams from several ports: the group spreads them by hash, and nobody reads.
    let clients: Vec<std::net::UdpSocket> = (0..8)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("client"))
        .collect();
    for client in &clients {
        client.send_to(b"queued", address).expect("send");
    }
    let shown = format!("udp://{address}");
    let started = unix_ms(std::time::SystemTime::now());
    let generation = |number: u64, pid: i32, state| GenerationInfo {
        instances: Vec::new(),
        generation: number,
        pid,
        state,
        started_unix_ms: started,
        exit: None,
        intercept: None,
        output_lines: None,
    };
    let status = Status {
        bake: None,
        capacity: None,
        instances: None,
        service: "dns".to_owned(),
        supervisor_pid: family.root,
        started_unix_ms: started,
        config_path: None,
        active_generation: Some(2),
        restart_in_progress: None,
        generations: vec![
            generation(2, family.children[1], GenerationState::Active),
            generation(1, family.children[0], GenerationState::Draining),
        ],
        listeners: vec![ListenerInfo {
            name: "dns".to_owned(),
            address: shown.clone(),
            inode: new_inode,
            fd: 3,
        }],
        sockets: Vec::new(),
        restarts: RestartCounters::default(),
        last_restart: None,
        containment: None,
        intercept_binds: false,
        failing: None,
        supervisor: None,
        log_lines: None,
    };
    for source in BOTH {
        let deadline = Instant::now() + Duration::from_secs(10);
        let snapshot = loop {
            // Loopback may deliver a datagram after its send returned.
            let snapshot = Inspector::new(source)
                .snapshot_native(&status)
                .expect("snapshot");
            let queued: u64 = snapshot
                .listeners
                .iter()
                .map(|l| u64::from(l.accept_queue))
                .sum();
            if queued > 0 || Instant::now() > deadline {
                break snapshot;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let view = |inode| {
            snapshot
                .listeners
                .iter()
                .find(|l| l.inode == inode)
                .unwrap_or_else(|| panic!("{source:?}: {inode} not listed: {snapshot:#?}"))
        };
        let (old_view, new_view) = (view(old_inode), view(new_inode));
        assert_eq!(old_view.address, shown, "{source:?}");
        assert_eq!(new_view.address, shown, "{source:?}");
        assert_eq!(old_view.held_by, vec![1], "{source:?}");
        assert_eq!(new_view.held_by, vec![2], "{source:?}");
        assert!(new_view.new_connections && !old_view.new_connections);
        assert_eq!((old_view.backlog, new_view.backlog), (0, 0));
        assert!(
            old_view.accept_queue + new_view.accept_queue > 0,
            "{source:?}: the queued datagrams show: {snapshot:#?}"
        );
    }
}
