//! The /proc parsers against captured text (see
//! `tests/fixtures/proc/README.md` for where each file comes from), and the
//! process-level readers against this test process itself.

use std::net::SocketAddr;
use std::path::Path;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/proc/", $name))
    };
}

fn syscall(text: &str) -> TaskSyscall {
    parse_syscall(text, Path::new("syscall")).expect("fixture parses")
}

fn wait_call(arch: Arch, text: &str) -> Option<(WaitCall, u64)> {
    match syscall(text) {
        TaskSyscall::In { number, args } => Some((WaitCall::from_number(arch, number)?, args[0])),
        _ => None,
    }
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).expect("pid fits in i32")
}

#[test]
fn x86_64_syscall_lines_name_the_waiting_call_and_its_first_argument() {
    let x86 = Arch::X86_64;
    let accept = fixture!("syscall-x86_64-accept4");
    assert_eq!(wait_call(x86, accept), Some((WaitCall::Accept4, 3)));
    let select = fixture!("syscall-x86_64-pselect6");
    assert_eq!(wait_call(x86, select), Some((WaitCall::Pselect6, 4)));
    let poll = fixture!("syscall-x86_64-poll");
    assert_eq!(
        wait_call(x86, poll),
        Some((WaitCall::Poll, 0x7fc8_bb4c_4780))
    );
    assert_eq!(wait_call(x86, fixture!("syscall-x86_64-kill")), None);
}

#[test]
fn aarch64_syscall_lines_use_the_generic_numbers() {
    let arm = Arch::Aarch64;
    let accept = fixture!("syscall-aarch64-accept4");
    assert_eq!(wait_call(arm, accept), Some((WaitCall::Accept4, 3)));
    let ppoll = fixture!("syscall-aarch64-ppoll");
    assert_eq!(
        wait_call(arm, ppoll),
        Some((WaitCall::Ppoll, 0xffff_7c6d_0780))
    );
    let select = fixture!("syscall-aarch64-pselect6");
    assert_eq!(wait_call(arm, select), Some((WaitCall::Pselect6, 4)));
    // 288 is accept4 on x86_64 but nothing we wait in on aarch64.
    let x86_accept = fixture!("syscall-x86_64-accept4");
    assert_eq!(wait_call(arm, x86_accept), None);
}

#[test]
fn syscall_lines_keep_all_six_arguments() {
    assert_eq!(
        syscall(fixture!("syscall-x86_64-poll")),
        TaskSyscall::In {
            number: 7,
            args: [0x7fc8_bb4c_4780, 1, 0xffff_ffff, 1, 0, 0],
        }
    );
}

#[test]
fn running_and_minus_one_lines_mean_not_in_a_syscall() {
    assert_eq!(syscall(fixture!("syscall-running")), TaskSyscall::Running);
    assert_eq!(
        syscall(fixture!("syscall-not-in-syscall")),
        TaskSyscall::NotInSyscall
    );
}

#[test]
fn malformed_syscall_lines_are_parse_errors_naming_the_file() {
    for text in ["", "288 0x3 0x0", "288 3 0 0 0 0 0 0 0", "x 0x0"] {
        let err = parse_syscall(text, Path::new("/proc/1/task/1/syscall"))
            .expect_err("malformed line is rejected");
        assert!(
            matches!(&err, ProcError::Parse { path, line: 1, .. } if path.ends_with("syscall")),
            "{text:?} gave {err:?}"
        );
    }
}

#[test]
fn epoll_fdinfo_lists_registered_fds_with_their_inodes() {
    let targets = parse_epoll_fdinfo(fixture!("fdinfo-epoll"), Path::new("fdinfo/5"))
        .expect("fixture parses");
    assert_eq!(
        targets,
        vec![
            EpollTarget {
                fd: 4,
                events: 0x8000_0019,
                inode: Some(0x7d63),
            },
            EpollTarget {
                fd: 3,
                events: 0x19,
                inode: Some(32098),
            },
        ]
    );
}

#[test]
fn epoll_fdinfo_of_old_kernels_has_fds_without_inodes() {
    let targets = parse_epoll_fdinfo(fixture!("fdinfo-epoll-old-kernel"), Path::new("fdinfo/5"))
        .expect("fixture parses");
    assert_eq!(
        targets,
        vec![EpollTarget {
            fd: 3,
            events: 0x19,
            inode: None,
        }]
    );
}

#[test]
fn epoll_fdinfo_with_a_broken_tfd_line_names_the_line() {
    let text = "pos:\t0\ntfd: three events: 19\n";
    let err = parse_epoll_fdinfo(text, Path::new("fdinfo/5")).expect_err("rejected");
    assert!(matches!(err, ProcError::Parse { line: 2, .. }), "{err:?}");
}

// The address columns are host-endian words; the fixtures were captured on
// a little-endian machine.
#[cfg(target_endian = "little")]
mod tcp {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn table(text: &str) -> Vec<TcpSocket> {
        parse_tcp_table(text, Path::new("net/tcp")).expect("fixture parses")
    }

    #[test]
    fn ipv4_table_gives_addresses_states_queues_and_inodes() {
        let sockets = table(fixture!("net-tcp"));
        assert_eq!(sockets.len(), 11);
        let listener = sockets[1];
        assert_eq!(listener.local, addr("127.0.0.1:50621"));
        assert_eq!(listener.remote, addr("0.0.0.0:0"));
        assert_eq!(listener.state, TcpState::Listen);
        assert_eq!((listener.rx_queue, listener.tx_queue), (1, 0));
        assert_eq!(listener.inode, 31337);
        let unread = sockets[10];
        assert_eq!(unread.state, TcpState::Established);
        assert_eq!(unread.remote, addr("127.0.0.1:46310"));
        assert_eq!((unread.rx_queue, unread.inode), (5, 31341));
    }

    #[test]
    fn closing_states_and_inodeless_sockets_are_kept() {
        let states: Vec<(TcpState, u64)> = table(fixture!("net-tcp"))
            .iter()
            .map(|socket| (socket.state, socket.inode))
            .collect();
        assert_eq!(states[3], (TcpState::CloseWait, 31343));
        assert_eq!(states[5], (TcpState::Established, 0), "still queued");
        assert_eq!(states[7], (TcpState::FinWait2, 0));
        assert_eq!(states[8], (TcpState::TimeWait, 0));
    }

    #[test]
    fn ipv6_table_keeps_ipv4_mapped_addresses() {
        let sockets = table(fixture!("net-tcp6"));
        assert_eq!(sockets.len(), 5);
        assert_eq!(sockets[0].local, addr("[::]:47845"));
        assert_eq!(sockets[1].local, addr("[::1]:40467"));
        assert_eq!(sockets[2].remote, addr("[::1]:45978"));
        let mapped = sockets[4];
        assert_eq!(mapped.local, addr("[::ffff:127.0.0.1]:47845"));
        assert_eq!(mapped.remote, addr("[::ffff:127.0.0.1]:32940"));
        assert_eq!((mapped.state, mapped.inode), (TcpState::Established, 31390));
    }

    #[test]
    fn unknown_states_are_kept_by_number() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0D 00000000:00000000 00:00000000 00000000     0        0 77 1 0\n";
        assert_eq!(table(text)[0].state, TcpState::Other(13));
    }

    #[test]
    fn truncated_tcp_lines_are_parse_errors() {
        let text = "  sl  local_address\n   0: 0100007F:1F90 00000000:0000 0A\n";
        let err = parse_tcp_table(text, Path::new("net/tcp")).expect_err("rejected");
        assert!(matches!(err, ProcError::Parse { line: 2, .. }), "{err:?}");
    }
}

#[test]
fn own_process_is_alive_with_a_start_time_and_threads() {
    let pid = own_pid();
    assert!(is_alive(pid));
    assert!(matches!(state(pid), Ok('R' | 'S')));
    assert!(start_time_ticks(pid).expect("own start time") > 0);
    assert!(fd_count(pid).expect("own fd count") >= 3);
    assert!(tasks(pid).expect("own threads").contains(&pid));
}

#[test]
fn a_pid_that_does_not_exist_is_gone() {
    // Above the largest pid_max Linux allows (2^22).
    let pid = 5_000_000;
    assert!(!is_alive(pid));
    assert!(matches!(
        state(pid),
        Err(ProcError::Gone { pid: 5_000_000 })
    ));
    assert!(matches!(socket_fds(pid), Err(ProcError::Gone { .. })));
    assert!(matches!(tcp_sockets(pid), Err(ProcError::Gone { .. })));
    assert!(matches!(
        task_syscall(pid, pid),
        Err(ProcError::Gone { .. })
    ));
    assert!(descendants(pid).is_empty());
    assert!(children(pid).is_empty());
}

#[test]
fn own_children_are_found_in_the_tree() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let child_pid = i32::try_from(child.id()).expect("pid fits in i32");
    let found = children(own_pid()).contains(&child_pid);
    let tree = descendants(own_pid());
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");
    assert!(found);
    assert_eq!(tree.first(), Some(&own_pid()));
    assert!(tree.contains(&child_pid));
}

#[test]
fn the_parent_scan_finds_children_like_the_children_files() {
    // The scan is the fallback for kernels without children files; run it
    // here too so it stays correct where those files exist.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let child_pid = i32::try_from(child.id()).expect("pid fits in i32");
    let scanned = parent_map().remove(&own_pid()).unwrap_or_default();
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");
    assert!(scanned.contains(&child_pid));
}

#[test]
fn own_tcp_listener_is_in_the_namespace_table() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let local = listener.local_addr().expect("local address");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let inode = socket_fds(own_pid())
        .expect("own fds")
        .into_iter()
        .find_map(|(found, inode)| (found == fd).then_some(inode))
        .expect("listener fd listed");
    let sockets = tcp_sockets(own_pid()).expect("own tcp table");
    let entry = sockets
        .iter()
        .find(|socket| socket.inode == inode)
        .expect("listener in table");
    assert_eq!((entry.local, entry.state), (local, TcpState::Listen));
}
