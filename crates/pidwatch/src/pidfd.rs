//! A pidfd: a handle on one process that PID reuse cannot redirect to a stranger.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: Pid,
}

impl PidFd {
    /// Opens a pidfd for `pid` (close-on-exec, as every pidfd is).
    pub fn open(pid: Pid) -> io::Result<Self> {
        // SAFETY: pidfd_open(2) takes a pid and a flags word by value and returns a new file
        // descriptor or -1 with errno set; no memory is shared with the kernel.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = RawFd::try_from(ret).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, pid })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends signal number `signo` (standard or real-time) to exactly this process.
    pub fn send_signal(&self, signo: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal(2) with a null siginfo behaves like kill(2): the kernel
        // builds the siginfo itself and reads no memory of ours; the fd is owned by `self`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signo,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has exited: a pidfd polls readable from then on.
    pub fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
