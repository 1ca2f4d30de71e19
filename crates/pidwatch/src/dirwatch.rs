//! Noticing every change of the pid file without polling: directory notifications.
//!
//! Watching the directory rather than the file sees the file appear, be replaced by a rename
//! (the atomic writers), be deleted and recreated, and be rewritten in place (the non-atomic
//! ones: every write is a modification, so a half-written file is read again when its second
//! half lands).
//!
//! The notifications come from dnotify (`fcntl(F_NOTIFY)`), delivered as a real-time signal
//! through the signalfd pidwatch already reads, not from inotify. Both sit on fsnotify and report the
//! same directory events, but closing an inotify instance destroys its fsnotify group, which
//! waits for an SRCU grace period: 10 to 15 ms measured on Linux 6.18, paid by every pidwatch
//! exit since the kernel closes the descriptor before it reports the exit to the supervisor.
//! dnotify marks belong to one global group, so closing the directory costs microseconds.
//! Unlike inotify, dnotify does not name the file that changed, so any change in the
//! directory makes pidwatch read the pid file again: one open and one small read.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::Error;
use crate::signals::Received;

// From <linux/fcntl.h>; the libc crate does not export them for every target.
const F_SETSIG: libc::c_int = 10;
const DN_MODIFY: libc::c_int = 0x0000_0002;
const DN_CREATE: libc::c_int = 0x0000_0004;
const DN_DELETE: libc::c_int = 0x0000_0008;
const DN_RENAME: libc::c_int = 0x0000_0010;
const DN_ATTRIB: libc::c_int = 0x0000_0020;
/// Keep notifying after the first event.
const DN_MULTISHOT: libc::c_int = 0x8000_0000_u32 as libc::c_int;
/// `si_code` of a dnotify signal (<asm-generic/siginfo.h>). Another process cannot forge a
/// positive `si_code`: the kernel only accepts negative ones from rt_sigqueueinfo.
const POLL_MSG: i32 = 3;

#[derive(Debug)]
pub struct PidfileWatch {
    dir: File,
}

impl PidfileWatch {
    /// Starts notifications for the pid file's directory. Signals must already be blocked:
    /// the default action of the notice signal (and of SIGIO) would end pidwatch.
    pub fn new(path: &Path) -> Result<Self, Error> {
        let fail = |source: std::io::Error| Error::WatchPidfile {
            path: path.to_owned(),
            source,
        };
        if path.file_name().is_none() {
            return Err(fail(Errno::EISDIR.into()));
        }
        let dir_path = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        // std opens with O_CLOEXEC: the service must not inherit the watch.
        let dir = File::open(&dir_path).map_err(fail)?;
        if !dir.metadata().map_err(fail)?.is_dir() {
            return Err(fail(Errno::ENOTDIR.into()));
        }
        let fd = dir.as_raw_fd();
        // F_SETSIG makes the kernel fill si_code and si_fd, which is how `is_notice` tells a
        // notice from the same signal sent by someone, to be forwarded. A real-time signal
        // because those queue: a standard one pending from a sender would swallow a notice.
        fcntl_int(fd, F_SETSIG, notice_signal()).map_err(|e| fail(e.into()))?;
        let events = DN_MODIFY | DN_CREATE | DN_DELETE | DN_RENAME | DN_ATTRIB | DN_MULTISHOT;
        fcntl_int(fd, libc::F_NOTIFY, events).map_err(|e| fail(e.into()))?;
        Ok(Self { dir })
    }

    /// Whether `signal` is a change notice for the pid file's directory.
    pub fn is_notice(&self, signal: &Received) -> bool {
        let queued = signal.signo == notice_signal()
            && signal.code == POLL_MSG
            && signal.fd == self.dir.as_raw_fd();
        // When the real-time queue is full the kernel sends a plain SIGIO instead, with a
        // code no process can send.
        let overflowed = signal.signo == libc::SIGIO && signal.code == libc::SI_KERNEL;
        queued || overflowed
    }
}

/// The signal that carries notices: glibc's first free real-time signal.
fn notice_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

fn fcntl_int(fd: RawFd, cmd: libc::c_int, arg: libc::c_int) -> Result<(), Errno> {
    // SAFETY: F_SETSIG and F_NOTIFY take an int argument by value; `fd` is a descriptor we
    // own for the duration of the call.
    let ret = unsafe { libc::fcntl(fd, cmd, arg) };
    Errno::result(ret).map(drop)
}
