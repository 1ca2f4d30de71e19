//! `intercept_binds`: handoff for programs that bind their own port.
//!
//! How it works. Before exec, the child sets `no_new_privs` and installs [`BIND_FILTER`], a
//! seccomp filter that turns every `bind(2)` of the program (and of every process it
//! starts: the filter is inherited) into a user notification, and sends the filter's
//! listener fd to the supervisor over a socket pair ([`channel`], `child.rs`). The
//! supervisor reads the notifications on a thread per generation ([`Interception`]): a
//! bind that asks for a listener's address (the rule is in `matching.rs`) gets the
//! generation's own listening socket put on the program's fd
//! (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SETFD`) and returns 0; every
//! other bind continues untouched (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). A `listen(2)` on
//! a listener it was given sets the listener's backlog to the larger of the program's and
//! the service's, done by the supervisor on its own copy: a program's small backlog
//! (Python's socketserver asks for 5) would otherwise drop connections a restart's burst
//! brings. The notification handling is in `notify.rs`; what it answered is counted in
//! [`InterceptCounts`] (`counts.rs`), which `status` and `top` show.

mod counts;
mod matching;
mod notify;

pub use counts::InterceptCounts;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use tracing::warn;

use crate::listen::Listener;

/// The architecture the filter lets through to the bind check (`AUDIT_ARCH_*` of
/// include/uapi/linux/audit.h: the ELF machine, 64-bit, little-endian). A process that
/// makes a syscall in another ABI (x86's 32-bit `int 0x80`) is not intercepted: its
/// binds continue untouched.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Offsets in `struct seccomp_data`: the syscall number, then the architecture.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump_eq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The filter: our architecture's `bind` and `listen` go to the supervisor, everything
/// else is allowed. A static, so the child reads it without the parent allocating
/// anything.
pub(super) static BIND_FILTER: [libc::sock_filter; 7] = [
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_ARCH),
    jump_eq(AUDIT_ARCH, 0, 3),
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_NR),
    jump_eq(libc::SYS_bind as u32, 2, 0),
    jump_eq(libc::SYS_listen as u32, 1, 0),
    stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF),
];

/// `unlink`, which aarch64 does not have (it only has `unlinkat`, checked twice there).
#[cfg(target_arch = "x86_64")]
pub(super) const SYS_UNLINK: libc::c_long = libc::SYS_unlink;
#[cfg(target_arch = "aarch64")]
pub(super) const SYS_UNLINK: libc::c_long = libc::SYS_unlinkat;

/// The filter for a service with a unix listener: `bind`, `listen`, `unlink` and
/// `unlinkat` go to the supervisor, so that a program that removes its socket's path
/// before binding it does not remove the listener's socket file.
pub(super) static BIND_UNLINK_FILTER: [libc::sock_filter; 9] = [
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_ARCH),
    jump_eq(AUDIT_ARCH, 0, 5),
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_NR),
    jump_eq(libc::SYS_bind as u32, 4, 0),
    jump_eq(libc::SYS_listen as u32, 3, 0),
    jump_eq(libc::SYS_unlinkat as u32, 2, 0),
    jump_eq(SYS_UNLINK as u32, 1, 0),
    stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF),
];

/// Checks that the kernel (and whatever sandbox the supervisor runs in) lets a child
/// hand its binds to us: seccomp user notification with `ADDFD` (Linux 5.9+). The error
/// says what is missing.
pub fn kernel_support() -> Result<(), String> {
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: seccomp(SECCOMP_GET_ACTION_AVAIL) reads one u32 from the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if rc != 0 {
        return Err(format!(
            "seccomp user notification is not available ({}); intercept_binds needs Linux 5.9 \
             or later and a sandbox (container runtime, systemd's SystemCallFilter) that \
             permits seccomp(2); remove 'intercept_binds' and use the handoff (LISTEN_FDS) \
             instead",
            io::Error::last_os_error()
        ));
    }
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: seccomp(SECCOMP_GET_NOTIF_SIZES) writes the three sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot ask the kernel for the seccomp notification sizes ({})",
            io::Error::last_os_error()
        ));
    }
    // The kernel checks that what we pass it is at least as large as its own structs:
    // a newer kernel with larger ones would refuse our ioctls.
    if usize::from(sizes.seccomp_notif) > std::mem::size_of::<libc::seccomp_notif>()
        || usize::from(sizes.seccomp_notif_resp) > std::mem::size_of::<libc::seccomp_notif_resp>()
    {
        return Err(format!(
            "this kernel's seccomp notifications ({} and {} bytes) are larger than zdctl \
             knows; intercept_binds cannot be used with it",
            sizes.seccomp_notif, sizes.seccomp_notif_resp
        ));
    }
    Ok(())
}

/// The socket pair that carries the seccomp listener from the child: ours, then the
/// child's end. Both close-on-exec; seqpacket, so the one message arrives whole.
pub(super) fn channel() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two fds into the array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds that only we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The interception of one generation's binds: a thread that answers its notifications
/// until the generation is gone (the listener hangs up) or this handle is dropped. Dropping
/// it waits for the thread, so the duplicates of the generation's sockets it holds are
/// closed when the drop returns.
#[derive(Debug)]
pub struct Interception {
    /// Closed on drop: the thread sees the hang-up and ends.
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the thread answered; they outlive it.
    counts: Arc<InterceptCounts>,
    /// The seccomp listener's fd number once the thread has it (-1 before), for a
    /// `reexec` to keep across `execve`. The thread owns the fd.
    seccomp: Arc<std::sync::atomic::AtomicI32>,
}

impl Interception {
    /// Starts answering the binds of generation `generation` (main pid `pid`), whose
    /// seccomp listener arrives on `channel`, with `listeners` (the generation's sockets).
    pub fn start(
        generation: u64,
        pid: i32,
        channel: OwnedFd,
        listeners: &[Listener],
    ) -> io::Result<Interception> {
        let seccomp = Arc::new(std::sync::atomic::AtomicI32::new(-1));
        let known = Arc::clone(&seccomp);
        Interception::serve_on(generation, pid, listeners, seccomp, move |stop| {
            let notify = receive_listener(&channel, stop)?;
            drop(channel);
            known.store(notify.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
            Some(notify)
        })
    }

    /// Goes on answering the binds of generation `generation` (main pid `pid`) on
    /// `notify`, the seccomp listener a previous binary of this supervisor received and
    /// kept open across `execve`.
    pub fn resume(
        generation: u64,
        pid: i32,
        notify: OwnedFd,
        listeners: &[Listener],
    ) -> io::Result<Interception> {
        let seccomp = Arc::new(std::sync::atomic::AtomicI32::new(notify.as_raw_fd()));
        Interception::serve_on(generation, pid, listeners, seccomp, move |_| Some(notify))
    }

    fn serve_on(
        generation: u64,
        pid: i32,
        listeners: &[Listener],
        seccomp: Arc<std::sync::atomic::AtomicI32>,
        listener: impl FnOnce(&OwnedFd) -> Option<OwnedFd> + Send + 'static,
    ) -> io::Result<Interception> {
        let targets = listeners
            .iter()
            .map(Listener::try_clone)
            .collect::<io::Result<Vec<_>>>()?;
        let counts = Arc::new(InterceptCounts::new(listeners));
        let counted = Arc::clone(&counts);
        let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name(format!("intercept-{generation}"))
            .spawn(move || {
                let Some(notify) = listener(&stop_read) else {
                    return;
                };
                notify::serve(generation, pid, &notify, &stop_read, &targets, &counted);
            })?;
        Ok(Interception {
            stop: Some(stop_write),
            thread: Some(thread),
            counts,
            seccomp,
        })
    }

    /// The seccomp listener's fd, once received.
    pub fn seccomp_fd(&self) -> Option<i32> {
        Some(self.seccomp.load(std::sync::atomic::Ordering::SeqCst)).filter(|fd| *fd >= 0)
    }

    /// What the interception answered so far, counted; the counts stay readable once it
    /// has ended.
    pub fn counts(&self) -> Arc<InterceptCounts> {
        Arc::clone(&self.counts)
    }
}

impl Drop for Interception {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            // The thread only waits in poll, which the closed pipe ends, or in an ioctl
            // that answers at once.
            let _ = thread.join();
        }
    }
}

/// Waits for the child's seccomp listener on `channel`; `None` when the child ended (or
/// exec'd) without sending it, which its exec report explains, or when `stop` hung up.
fn receive_listener(channel: &OwnedFd, stop: &OwnedFd) -> Option<OwnedFd> {
    if !notify::wait_readable(channel, stop) {
        return None;
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; the fields that matter are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg into the buffers above; the received fd is close-on-exec.
    let n = unsafe { libc::recvmsg(channel.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return None;
    }
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<i32>());
                return Some(OwnedFd::from_raw_fd(fd));
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    warn!("the generation's child sent no seccomp listener; its binds are not intercepted");
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::fd::AsFd;

    use super::*;
    use crate::handoff::{SpawnSpec, spawn_generation};
    use crate::listen::{ListenAddr, ListenerSpec, open_listeners};

    /// A python3 child binds the listener's port (non-blocking) and port 0, and writes
    /// what it got: its socket's inode, whether it is inheritable, and whether the second
    /// socket's port is its own.
    #[test]
    fn a_bind_to_the_listener_gets_its_socket_and_other_binds_continue() {
        if let Err(reason) = kernel_support() {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: {reason}\n").as_bytes(),
            );
            return;
        }
        let spec = ListenerSpec::new(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()));
        let listeners = open_listeners(&[spec]).unwrap();
        let ListenAddr::Tcp(addr) = listeners[0].local_addr().clone() else {
            panic!("not TCP");
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "import os, socket\n\
             s = socket.socket()\n\
             s.setblocking(False)\n\
             s.bind(('127.0.0.1', {port}))\n\
             o = socket.socket()\n\
             o.bind(('127.0.0.1', 0))\n\
             open('{out}', 'w').write('%d %s %s' % (os.fstat(s.fileno()).st_ino, \
             os.get_inheritable(s.fileno()), o.getsockname()[1] != {port}))\n",
            port = addr.port(),
            out = out.display(),
        );
        let command = vec!["python3".to_owned(), "-c".to_owned(), script];
        let env = BTreeMap::new();
        let spawned = spawn_generation(&SpawnSpec {
            service: "unit",
            generation: 1,
            instance: 0,
            command: &command,
            workdir: None,
            env: &env,
            listeners: &listeners,
            notify_socket: None,
            capture_output: false,
            nice: None,
            idle_start: false,
            intercept_binds: true,
        })
        .unwrap();
        let channel = spawned.intercept.expect("a channel");
        let interception = Interception::start(1, spawned.pid, channel, &listeners).unwrap();
        let counts = interception.counts();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(spawned.pid, &mut status, 0) };
        drop(interception);
        let info = counts.info();
        assert_eq!(
            (info.handed(), info.binds_continued, info.binds_failed),
            (1, 1, 0),
            "{info:?}"
        );
        assert_eq!(info.listeners[0].last_pid, Some(spawned.pid));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, format!("{} False True", listeners[0].inode()));
        let flags =
            nix::fcntl::fcntl(listeners[0].fd().as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_ne!(
            flags & libc::O_NONBLOCK,
            0,
            "O_NONBLOCK follows the program's socket"
        );
    }
}
