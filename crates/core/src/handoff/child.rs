//! The child side of a spawn: what runs between `clone` and `execve`, on the parent's memory.
//!
//! [`exec_child`] is the whole life of the child until the program takes over: it joins the
//! generation's cgroup, resets signals, sets its priority, changes directory, moves the
//! listeners to fds 3, 4, …, writes its own pid into `LISTEN_PID` and execs. It shares the
//! supervisor's memory (`CLONE_VM`), so it calls the kernel directly through [`raw`] rather
//! than libc, allocates nothing and only touches the buffers the parent prepared in
//! [`ChildContext`]. A failure before exec is sent to the parent as a [`Stage`] and an errno
//! (`fail`); the parent side, in `spawn.rs`, reads it.

use std::os::fd::RawFd;

use crate::sched::{SCHED_ATTR_SIZE, SchedAttr};

/// Room for the digits of any pid in the `LISTEN_PID` slot, which also holds the NUL after
/// them.
pub(super) const PID_DIGITS: usize = 20;

/// What the child needs, every pointer into memory the parent allocated before the clone
/// and keeps until the child has exec'd or exited (`ChildMemory` in `spawn.rs`).
pub(super) struct ChildContext {
    pub path: *const libc::c_char,
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
    pub listen_pid_slot: *mut u8,
    pub workdir: *const libc::c_char,
    pub listener_fds: *const RawFd,
    pub listener_count: usize,
    pub scratch_fds: *mut RawFd,
    pub err_pipe: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// The read ends of the stdout and stderr pipes (-1 without): the program holds them
    /// too, so that its output pipes never break while it lives (see [`KEEP_READ_ENDS`]).
    pub read_ends: [RawFd; 2],
    pub nice: Option<i32>,
    pub idle_start: bool,
    /// Room for `sched_getattr`'s answer, in the parent's `ChildMemory`.
    pub sched_attr: *mut SchedAttr,
    /// With `intercept_binds`: the child's end of the socket pair through which it sends
    /// the parent its seccomp listener (see [`install_bind_filter`]); -1 otherwise.
    pub intercept_channel: RawFd,
    /// With `intercept_binds` and a unix listener: intercept `unlink` too.
    pub intercept_unlink: bool,
}

/// The lowest fd number at which a generation holds the read ends of its own output pipes.
/// Held there, a pipe keeps a reader while the generation lives: when the supervisor dies
/// (`kill -9`), the program's writes to stdout and stderr go on filling the pipe instead of
/// failing with EPIPE (or killing it with SIGPIPE), and the supervisor that adopts it
/// takes the read end from it (`pidfd_getfd`) and reads on. The program never reads it.
pub(super) const KEEP_READ_ENDS: usize = 64;

/// The kernel's `struct sigaction` for rt_sigaction on x86_64 and aarch64 (both define
/// SA_RESTORER): handler, flags, restorer, then a 64-bit mask.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// What the child was doing when it failed; sent to the parent as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Stage {
    Chdir,
    Listeners,
    Output,
    Execve,
    Priority,
    NoNewPrivs,
    BindFilter,
    BindFilterHandover,
}

impl Stage {
    const ALL: [Stage; 8] = [
        Stage::Chdir,
        Stage::Listeners,
        Stage::Output,
        Stage::Execve,
        Stage::Priority,
        Stage::NoNewPrivs,
        Stage::BindFilter,
        Stage::BindFilterHandover,
    ];

    pub(super) fn from_byte(b: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == b)
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Stage::Chdir => "chdir",
            Stage::Listeners => "moving the listeners",
            Stage::Output => "redirecting output",
            Stage::Execve => "execve",
            Stage::Priority => "setting the priority",
            Stage::NoNewPrivs => "setting no_new_privs (for intercept_binds)",
            Stage::BindFilter => "installing the seccomp filter of intercept_binds",
            Stage::BindFilterHandover => "handing the seccomp listener to the supervisor",
        }
    }
}

/// The child side. Never returns.
///
/// # Safety
/// Only for the child that `clone_child` (in `spawn.rs`) starts. It runs on the parent's memory while the
/// parent's threads go on, so it must not allocate, must not call libc (which would write
/// `errno` into a running parent thread's storage) and must only touch `ctx`'s buffers:
/// everything here is a direct syscall on memory prepared before the clone. Its only writes
/// are to `scratch_fds`, the `LISTEN_PID` slot and `sched_attr`, which no thread of the
/// parent reads.
pub(super) unsafe fn exec_child(ctx: &ChildContext) -> ! {
    use raw::{Sys, call};
    // SAFETY (whole function): direct syscalls on pointers into buffers allocated before the
    // clone, which the parent keeps until we exec or exit.
    unsafe {
        // Our own process group, so a drain can signal and kill the generation's whole tree.
        call(Sys::Setpgid, [0, 0, 0, 0]);

        // A clean slate of signals: handlers back to default (exec would keep ignored ones
        // ignored: Rust ignores SIGPIPE, for one) and an empty mask, which also lifts the
        // block-everything mask we were born with. The signals glibc reserves (32 and 33)
        // are reset too. An all-zero kernel sigaction is SIG_DFL with no flags and an empty
        // mask.
        let dfl = KernelSigaction::default();
        for sig in 1..=64usize {
            if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
                let dfl_ptr = &dfl as *const KernelSigaction as usize;
                call(Sys::RtSigaction, [sig, dfl_ptr, 0, 8]);
            }
        }
        let empty: u64 = 0;
        call(
            Sys::RtSigprocmask,
            [
                libc::SIG_SETMASK as usize,
                &empty as *const u64 as usize,
                0,
                8,
            ],
        );

        // Back to the service's priority from the supervisor's weaker one. Whether this
        // is permitted was tried before the supervisor lowered itself.
        if let Some(nice) = ctx.nice {
            let rc = call(
                Sys::Setpriority,
                [libc::PRIO_PROCESS as usize, 0, nice as isize as usize, 0],
            );
            if rc < 0 {
                fail(ctx.err_pipe, Stage::Priority, rc);
            }
        }

        // The weakest priority until the supervisor sees the generation ready; only from
        // the normal policy, which the supervisor then gives back.
        if ctx.idle_start {
            let attr = ctx.sched_attr;
            if call(
                Sys::SchedGetattr,
                [0, attr as usize, SCHED_ATTR_SIZE as usize, 0],
            ) == 0
                && (*attr).is(libc::SCHED_OTHER)
            {
                *attr = (*attr).with_policy(libc::SCHED_IDLE);
                call(Sys::SchedSetattr, [0, attr as usize, 0, 0]);
            }
        }

        if !ctx.workdir.is_null() {
            let rc = call(Sys::Chdir, [ctx.workdir as usize, 0, 0, 0]);
            if rc < 0 {
                fail(ctx.err_pipe, Stage::Chdir, rc);
            }
        }

        // Move the listeners to 3, 4, …. A source fd may itself sit in that range (or the
        // error pipe may), so first lift every source above the target range, then place.
        let n = ctx.listener_count;
        let floor = 3 + n;
        let dup_above = |fd: RawFd| {
            call(
                Sys::Fcntl,
                [fd as usize, libc::F_DUPFD_CLOEXEC as usize, floor, 0],
            )
        };
        let err_pipe = dup_above(ctx.err_pipe);
        if err_pipe < 0 {
            fail(ctx.err_pipe, Stage::Listeners, err_pipe);
        }
        let err_pipe = err_pipe as RawFd;
        // The channel too, or placing a listener could close it.
        let mut channel = -1;
        if ctx.intercept_channel >= 0 {
            let lifted = dup_above(ctx.intercept_channel);
            if lifted < 0 {
                fail(err_pipe, Stage::Listeners, lifted);
            }
            channel = lifted as RawFd;
        }
        let mut read_ends = [-1; 2];
        for (slot, fd) in read_ends.iter_mut().zip(ctx.read_ends) {
            if fd >= 0 {
                // Best effort: without them the program still runs, as it did before.
                let lifted = dup_above(fd);
                *slot = if lifted < 0 { -1 } else { lifted as RawFd };
            }
        }
        for i in 0..n {
            let lifted = dup_above(*ctx.listener_fds.add(i));
            if lifted < 0 {
                fail(err_pipe, Stage::Listeners, lifted);
            }
            *ctx.scratch_fds.add(i) = lifted as RawFd;
        }
        // dup3 rather than dup2, which aarch64 lacks; the two fds always differ here (the
        // sources were lifted above the targets).
        let place = |from: RawFd, to: usize| call(Sys::Dup3, [from as usize, to, 0, 0]);
        for (fd, to) in [(ctx.stdout, 1), (ctx.stderr, 2)] {
            if fd >= 0 {
                let rc = place(fd, to);
                if rc < 0 {
                    fail(err_pipe, Stage::Output, rc);
                }
            }
        }
        for i in 0..n {
            // dup3 without flags leaves FD_CLOEXEC clear on the new fd: this is where each
            // listener is made to cross the exec, on purpose, at fd 3 + i.
            let rc = place(*ctx.scratch_fds.add(i), 3 + i);
            if rc < 0 {
                fail(err_pipe, Stage::Listeners, rc);
            }
        }
        // Nothing else of ours may leak into the app: mark every fd from the first one
        // after the listeners close-on-exec (the error pipe included: its closing at exec is
        // how the parent learns that exec succeeded).
        call(
            Sys::CloseRange,
            [
                floor,
                libc::c_uint::MAX as usize,
                libc::CLOSE_RANGE_CLOEXEC as usize,
                0,
            ],
        );
        // Except the read ends of its output pipes, on purpose, high up where no program
        // looks for its listeners (lower if its fd limit is lower).
        for fd in read_ends {
            if fd >= 0 {
                let dup = |floor: usize| {
                    call(Sys::Fcntl, [fd as usize, libc::F_DUPFD as usize, floor, 0])
                };
                if dup(KEEP_READ_ENDS) < 0 {
                    dup(floor);
                }
            }
        }

        // Last, so that nothing of ours runs under the filter but the exec.
        if channel >= 0 {
            install_bind_filter(err_pipe, channel, ctx.intercept_unlink);
        }

        if !ctx.listen_pid_slot.is_null() {
            write_pid(
                ctx.listen_pid_slot,
                call(Sys::Getpid, [0; 4]) as libc::pid_t,
            );
        }
        let rc = call(
            Sys::Execve,
            [ctx.path as usize, ctx.argv as usize, ctx.envp as usize, 0],
        );
        fail(err_pipe, Stage::Execve, rc)
    }
}

/// Installs the seccomp filter of `intercept_binds` (`super::intercept::BIND_FILTER`, or
/// `BIND_UNLINK_FILTER` with `unlink`) and
/// sends its listener fd to the parent over `channel` (SCM_RIGHTS), then closes our copy:
/// the program must not hold the fd that answers its own binds.
///
/// A child with CAP_SYS_ADMIN (a supervisor run as root) installs the filter as it is;
/// without, the kernel refuses it (EACCES) unless `no_new_privs` is set, so the child sets
/// it and tries again. `no_new_privs` means that a setuid program run by the service
/// gains no privileges; the filter, and the flag when set, pass to every process the
/// program starts.
///
/// # Safety
/// Child side of `clone_child` only; `channel` is a connected unix socket.
unsafe fn install_bind_filter(err_pipe: RawFd, channel: RawFd, unlink: bool) {
    use raw::{Sys, call};
    let filter: &[libc::sock_filter] = if unlink {
        &super::intercept::BIND_UNLINK_FILTER
    } else {
        &super::intercept::BIND_FILTER
    };
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: direct syscalls on stack memory and a static filter, which the kernel
    // copies.
    unsafe {
        let install = || {
            call(
                Sys::Seccomp,
                [
                    libc::SECCOMP_SET_MODE_FILTER as usize,
                    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as usize,
                    &prog as *const libc::sock_fprog as usize,
                    0,
                ],
            )
        };
        let mut listener = install();
        if listener == -(libc::EACCES as isize) {
            let rc = call(Sys::Prctl, [libc::PR_SET_NO_NEW_PRIVS as usize, 1, 0, 0]);
            if rc < 0 {
                fail(err_pipe, Stage::NoNewPrivs, rc);
            }
            listener = install();
        }
        if listener < 0 {
            fail(err_pipe, Stage::BindFilter, listener);
        }
        // One byte of data (a stream or seqpacket socket sends no empty message) and one
        // SCM_RIGHTS control message: a cmsghdr (len, level, type) then the fd, in a
        // buffer of CMSG_SPACE(4) bytes, 8-byte aligned.
        let mut control = [0u64; 3];
        let header = control.as_mut_ptr().cast::<libc::cmsghdr>();
        (*header).cmsg_len = std::mem::size_of::<libc::cmsghdr>() + 4;
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        *control
            .as_mut_ptr()
            .cast::<u8>()
            .add(std::mem::size_of::<libc::cmsghdr>())
            .cast::<i32>() = listener as i32;
        let byte = [1u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_ptr().cast_mut().cast(),
            iov_len: 1,
        };
        // SAFETY: msghdr is plain data; every field that matters is set below.
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let rc = call(
            Sys::Sendmsg,
            [
                channel as usize,
                &msg as *const libc::msghdr as usize,
                libc::MSG_NOSIGNAL as usize,
                0,
            ],
        );
        if rc < 0 {
            fail(err_pipe, Stage::BindFilterHandover, rc);
        }
        call(Sys::Close, [listener as usize, 0, 0, 0]);
        call(Sys::Close, [channel as usize, 0, 0, 0]);
    }
}

/// Writes `pid` in decimal at `slot` followed by a NUL, without allocating.
///
/// # Safety
/// `slot` must point to at least `PID_DIGITS + 1` writable bytes.
unsafe fn write_pid(slot: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = pid as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: len <= PID_DIGITS and the caller guarantees the room.
        unsafe { *slot.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above; the NUL ends the variable right after the digits.
    unsafe { *slot.add(len) = 0 };
}

/// Reports the failed stage and the errno in `rc` (a syscall's negative return) to the
/// parent and exits.
///
/// # Safety
/// Child side of `clone_child` only.
unsafe fn fail(pipe: RawFd, stage: Stage, rc: isize) -> ! {
    use raw::{Sys, call};
    let errno = (-rc) as i32;
    let mut msg = [0u8; 5];
    msg[0] = stage as u8;
    msg[1..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: a write from a stack buffer, then exit_group; both direct syscalls.
    unsafe {
        call(
            Sys::Write,
            [pipe as usize, msg.as_ptr() as usize, msg.len(), 0],
        );
        call(Sys::ExitGroup, [127, 0, 0, 0]);
    }
    unreachable!("exit_group returned")
}

/// Direct syscalls for the child of `clone_child`: they return `-errno` instead of
/// writing the thread-local `errno`, which in that child belongs to a running parent thread.
mod raw {
    /// The syscalls the child makes.
    #[derive(Clone, Copy)]
    pub enum Sys {
        Setpgid,
        RtSigaction,
        RtSigprocmask,
        Chdir,
        Fcntl,
        Dup3,
        CloseRange,
        Getpid,
        Execve,
        Write,
        ExitGroup,
        Setpriority,
        SchedGetattr,
        SchedSetattr,
        Prctl,
        Seccomp,
        Sendmsg,
        Close,
    }

    impl Sys {
        fn number(self) -> libc::c_long {
            match self {
                Sys::Setpgid => libc::SYS_setpgid,
                Sys::RtSigaction => libc::SYS_rt_sigaction,
                Sys::RtSigprocmask => libc::SYS_rt_sigprocmask,
                Sys::Chdir => libc::SYS_chdir,
                Sys::Fcntl => libc::SYS_fcntl,
                Sys::Dup3 => libc::SYS_dup3,
                Sys::CloseRange => libc::SYS_close_range,
                Sys::Getpid => libc::SYS_getpid,
                Sys::Execve => libc::SYS_execve,
                Sys::Write => libc::SYS_write,
                Sys::ExitGroup => libc::SYS_exit_group,
                Sys::Setpriority => libc::SYS_setpriority,
                Sys::SchedGetattr => libc::SYS_sched_getattr,
                Sys::SchedSetattr => libc::SYS_sched_setattr,
                Sys::Prctl => libc::SYS_prctl,
                Sys::Seccomp => libc::SYS_seccomp,
                Sys::Sendmsg => libc::SYS_sendmsg,
                Sys::Close => libc::SYS_close,
            }
        }
    }

    /// Makes syscall `sys` with up to four arguments; returns its result, negative errno
    /// on failure.
    ///
    /// # Safety
    /// The arguments must be what the syscall expects (valid pointers included).
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn call(sys: Sys, args: [usize; 4]) -> isize {
        let ret: isize;
        // SAFETY: the x86_64 syscall convention: number in rax, arguments in rdi, rsi, rdx,
        // r10; the kernel clobbers rcx and r11.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") sys.number() as isize => ret,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                // The fifth argument, always 0: prctl(PR_SET_NO_NEW_PRIVS) insists that
                // its unused arguments are.
                in("r8") 0usize,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// See the x86_64 version.
    ///
    /// # Safety
    /// The arguments must be what the syscall expects (valid pointers included).
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn call(sys: Sys, args: [usize; 4]) -> isize {
        let ret: isize;
        // SAFETY: the aarch64 syscall convention: number in x8, arguments in x0..x3, the
        // result in x0.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") sys.number(),
                inlateout("x0") args[0] as isize => ret,
                in("x1") args[1],
                in("x2") args[2],
                in("x3") args[3],
                // The fifth argument, always 0 (see the x86_64 version).
                in("x4") 0usize,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    compile_error!("starting generations is implemented for x86_64 and aarch64 Linux only");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_survives_the_trip_through_the_pipe() {
        for stage in Stage::ALL {
            assert_eq!(Stage::from_byte(stage as u8), Some(stage));
        }
        assert_eq!(Stage::from_byte(200), None);
    }

    #[test]
    fn write_pid_writes_digits_and_terminates() {
        let mut buf = [b'x'; PID_DIGITS + 1];
        // SAFETY: the buffer has PID_DIGITS + 1 bytes.
        unsafe { write_pid(buf.as_mut_ptr(), 4_194_303) };
        assert_eq!(&buf[..8], b"4194303\0");
        unsafe { write_pid(buf.as_mut_ptr(), 7) };
        assert_eq!(&buf[..2], b"7\0");
    }
}
