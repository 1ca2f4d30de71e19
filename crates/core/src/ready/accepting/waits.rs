//! Threads blocked in a syscall that waits on a listener: `accept`,
//! `poll`-like or `select`-like calls, and on a UDP listener a receive.

use crate::proc::{self, ProcError, WaitCall};

use super::AcceptingEvidence;

/// `sizeof(struct pollfd)`: `int fd; short events; short revents;`.
const POLLFD_SIZE: usize = 8;

/// At most this many pollfd entries are read: enough for any server that
/// polls its listener next to a few connections, and a bound on what one
/// check costs when a thread polls thousands of fds.
const MAX_POLLFDS: u64 = 4096;

/// `select`'s fd limit is `FD_SETSIZE` (1024) in glibc, but the kernel
/// accepts larger sets; read no more bits than this.
const MAX_SELECT_FDS: u64 = 65536;

/// The poll events that mean "a connection can be accepted".
const READABLE_EVENTS: i16 = libc::POLLIN | libc::POLLRDNORM;

/// Whether thread `tid` of `pid` is blocked waiting on one of
/// `listener_fds` (the process's fds that refer to a listener).
pub(super) fn blocked_on_listener(
    pid: i32,
    tid: i32,
    listener_fds: &[i32],
) -> Result<Option<AcceptingEvidence>, ProcError> {
    let syscall = proc::task_syscall(pid, tid)?;
    let Some((call, args)) = syscall.wait_call() else {
        return Ok(None);
    };
    let watched = match call {
        WaitCall::Accept | WaitCall::Accept4 => {
            // The fd argument is an int; the syscall file shows the whole
            // register.
            let fd = args[0] as i32;
            return Ok(listener_fds
                .contains(&fd)
                .then_some(AcceptingEvidence::BlockedInAccept { pid, tid, fd }));
        }
        WaitCall::Read | WaitCall::Recvfrom | WaitCall::Recvmsg | WaitCall::Recvmmsg => {
            // Only a datagram socket can be read from while it is a listener: a stream
            // listener's reads fail at once.
            let fd = args[0] as i32;
            return Ok(listener_fds
                .contains(&fd)
                .then_some(AcceptingEvidence::Receiving {
                    pid,
                    tid,
                    fd,
                    how: call.name(),
                }));
        }
        WaitCall::Poll | WaitCall::Ppoll => polled_listener(pid, args[0], args[1], listener_fds)?,
        WaitCall::Select | WaitCall::Pselect6 => {
            selected_listener(pid, args[0], args[1], listener_fds)?
        }
        // An epoll wait is seen through the epoll set's registrations.
        _ => return Ok(None),
    };
    let Some(fd) = watched else {
        return Ok(None);
    };
    // The fd list was read from memory after the syscall snapshot; if the
    // thread has left that call since, the memory may already hold
    // something else, so only a thread still in the same call counts.
    if proc::task_syscall(pid, tid)? != syscall {
        return Ok(None);
    }
    Ok(Some(AcceptingEvidence::Polling {
        pid,
        tid,
        fd,
        how: call.name(),
    }))
}

/// `poll(fds, nfds, …)`: the first listener fd watched for input.
fn polled_listener(
    pid: i32,
    address: u64,
    count: u64,
    listener_fds: &[i32],
) -> Result<Option<i32>, ProcError> {
    let count = count.min(MAX_POLLFDS);
    if address == 0 || count == 0 {
        return Ok(None);
    }
    // `count` is at most MAX_POLLFDS, so this cannot truncate.
    let len = count as usize * POLLFD_SIZE;
    let Some(bytes) = proc::read_memory(pid, address, len)? else {
        return Ok(None);
    };
    Ok(pollfds_reading(&bytes).find(|fd| listener_fds.contains(fd)))
}

/// The fds of a `struct pollfd` array that are watched for input.
fn pollfds_reading(bytes: &[u8]) -> impl Iterator<Item = i32> + '_ {
    bytes.chunks_exact(POLLFD_SIZE).filter_map(|entry| {
        let fd = i32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let events = i16::from_ne_bytes([entry[4], entry[5]]);
        (events & READABLE_EVENTS != 0).then_some(fd)
    })
}

/// `select(n, readfds, …)`: the first listener fd in the read set.
fn selected_listener(
    pid: i32,
    count: u64,
    address: u64,
    listener_fds: &[i32],
) -> Result<Option<i32>, ProcError> {
    let count = count.min(MAX_SELECT_FDS);
    if address == 0 || count == 0 {
        return Ok(None);
    }
    // An fd_set is an array of longs, with fd n at bit n % bits-per-long of
    // long n / bits-per-long; the kernel reads just enough longs for `n`.
    let long_bits = u64::from(libc::c_ulong::BITS);
    let len = (count.div_ceil(long_bits) * long_bits / 8) as usize;
    let Some(bytes) = proc::read_memory(pid, address, len)? else {
        return Ok(None);
    };
    Ok(listener_fds
        .iter()
        .copied()
        .find(|&fd| fd_set_contains(&bytes, fd)))
}

/// Whether `fd` is set in an `fd_set` read from memory.
fn fd_set_contains(bytes: &[u8], fd: i32) -> bool {
    const LONG: usize = std::mem::size_of::<libc::c_ulong>();
    let Ok(fd) = usize::try_from(fd) else {
        return false;
    };
    let start = fd / (LONG * 8) * LONG;
    let Some(word) = bytes.get(start..start + LONG) else {
        return false;
    };
    let mut raw = [0u8; LONG];
    raw.copy_from_slice(word);
    libc::c_ulong::from_ne_bytes(raw) & (1 << (fd % (LONG * 8))) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::TaskSyscall;

    fn pollfd(fd: i32, events: i16) -> Vec<u8> {
        let mut entry = fd.to_ne_bytes().to_vec();
        entry.extend(events.to_ne_bytes());
        entry.extend(0i16.to_ne_bytes());
        entry
    }

    #[test]
    fn pollfd_arrays_yield_only_fds_watched_for_input() {
        let mut bytes = pollfd(5, libc::POLLOUT);
        bytes.extend(pollfd(3, libc::POLLIN | libc::POLLPRI));
        bytes.extend(pollfd(-1, libc::POLLIN));
        bytes.extend(pollfd(4, libc::POLLRDNORM));
        let fds: Vec<i32> = pollfds_reading(&bytes).collect();
        assert_eq!(fds, vec![3, -1, 4]);
    }

    #[test]
    fn fd_sets_are_read_as_native_longs() {
        let mut set: [libc::c_ulong; 2] = [0; 2];
        set[0] |= 1 << 3;
        set[1] |= 1 << (70 - libc::c_ulong::BITS);
        let bytes: Vec<u8> = set.iter().flat_map(|long| long.to_ne_bytes()).collect();
        assert!(fd_set_contains(&bytes, 3));
        assert!(fd_set_contains(&bytes, 70));
        assert!(!fd_set_contains(&bytes, 4));
        assert!(!fd_set_contains(&bytes, 200), "beyond the set read");
        assert!(!fd_set_contains(&bytes, -1));
    }

    #[test]
    fn a_thread_not_in_a_syscall_waits_on_nothing() {
        assert_eq!(TaskSyscall::Running.wait_call(), None);
        assert_eq!(TaskSyscall::NotInSyscall.wait_call(), None);
    }
}
