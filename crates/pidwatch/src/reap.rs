//! The subreaper: adopting orphans and reaping every child that lands on us.

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::status::Ending;

/// Whether orphaned descendants are re-parented to pidwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subreaper {
    /// PR_SET_CHILD_SUBREAPER took effect.
    Enabled,
    /// pidwatch is PID 1 of its namespace, which adopts every orphan anyway.
    Init,
    /// The kernel refused (older than 3.4): orphans go elsewhere.
    Unsupported(Errno),
    /// `--no-subreaper`: behave as on such a kernel.
    Declined,
}

impl Subreaper {
    pub fn adopts_orphans(self) -> bool {
        matches!(self, Self::Enabled | Self::Init)
    }
}

/// Asks the kernel to re-parent orphaned descendants to us rather than to init.
pub fn become_subreaper() -> Subreaper {
    if Pid::this().as_raw() == 1 {
        return Subreaper::Init;
    }
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => Subreaper::Enabled,
        Err(errno) => Subreaper::Unsupported(errno),
    }
}

/// Whether pidwatch still has children after a reaping pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    Remain,
    None,
}

/// Reaps every child that has ended, calling `on_reaped` for each, without blocking.
///
/// `waitpid(-1)` is why pidwatch has no threads and no async runtime: it would steal the
/// statuses of anyone else's child handling.
pub fn reap_all(mut on_reaped: impl FnMut(Pid, Ending)) -> Children {
    loop {
        match wait_nohang(Pid::from_raw(-1)) {
            Ok(Some((pid, ending))) => on_reaped(pid, ending),
            Ok(None) => return Children::Remain,
            Err(Errno::ECHILD) => return Children::None,
            Err(Errno::EINTR) => continue,
            // No other error is documented for this call; stop the pass rather than spin.
            Err(_) => return Children::Remain,
        }
    }
}

/// Reaps `pid` if it is our child and has ended.
pub fn try_reap(pid: Pid) -> Option<Ending> {
    wait_nohang(pid).ok().flatten().map(|(_, ending)| ending)
}

/// waitpid(2) with WNOHANG, straight from libc: nix decodes the status into its `Signal`
/// enum, which fails for real-time signals after the child is already reaped.
fn wait_nohang(pid: Pid) -> Result<Option<(Pid, Ending)>, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable c_int for the duration of the call.
    let ret = unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::WNOHANG) };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        reaped => Ok(Ending::from_wait_status(status).map(|e| (Pid::from_raw(reaped), e))),
    }
}
