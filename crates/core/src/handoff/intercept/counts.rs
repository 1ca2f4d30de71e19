//! What one generation's interception answered, counted for `status` and `top`.
//!
//! The interception's thread counts each answer; the supervisor reads a copy whenever a
//! client asks for the status. The counts are a fixed-size struct behind a mutex: one
//! entry per listener the generation received, made when the generation starts, and a
//! few totals. However often the program binds, they take no more memory (a counter
//! saturates rather than wraps).

use std::sync::Mutex;

use crate::listen::Listener;
use crate::proto::{InterceptInfo, InterceptedListener};

/// The counts of one generation's interception, shared by its thread and its process.
#[derive(Debug)]
pub struct InterceptCounts {
    counts: Mutex<Counts>,
}

#[derive(Debug, Clone)]
struct Counts {
    /// One per listener of the generation, in the order of its fds.
    listeners: Vec<InterceptedListener>,
    continued: u64,
    failed: u64,
    last_errno: Option<i32>,
}

impl InterceptCounts {
    /// Counts for a generation that received `listeners`, all at zero.
    pub(crate) fn new(listeners: &[Listener]) -> InterceptCounts {
        let listeners = listeners
            .iter()
            .map(|l| InterceptedListener {
                listener: l.name().to_owned(),
                address: l.local_display(),
                binds: 0,
                unlinks_skipped: 0,
                last_pid: None,
                last_fd: None,
            })
            .collect();
        InterceptCounts {
            counts: Mutex::new(Counts {
                listeners,
                continued: 0,
                failed: 0,
                last_errno: None,
            }),
        }
    }

    /// A bind of process `pid` got listener `listener` (its index) on fd `fd`.
    pub(crate) fn handed(&self, listener: usize, pid: i32, fd: i32) {
        let mut counts = self.lock();
        if let Some(l) = counts.listeners.get_mut(listener) {
            l.binds = l.binds.saturating_add(1);
            l.last_pid = Some(pid);
            l.last_fd = Some(fd);
        }
    }

    /// An unlink of listener `listener`'s socket file was skipped.
    pub(crate) fn unlink_skipped(&self, listener: usize) {
        let mut counts = self.lock();
        if let Some(l) = counts.listeners.get_mut(listener) {
            l.unlinks_skipped = l.unlinks_skipped.saturating_add(1);
        }
    }

    /// A bind of another address continued untouched.
    pub(crate) fn continued(&self) {
        let mut counts = self.lock();
        counts.continued = counts.continued.saturating_add(1);
    }

    /// A bind of a listener's address failed with `errno`.
    pub(crate) fn failed(&self, errno: i32) {
        let mut counts = self.lock();
        counts.failed = counts.failed.saturating_add(1);
        counts.last_errno = Some(errno);
    }

    /// The counts as `status` shows them.
    pub fn info(&self) -> InterceptInfo {
        let counts = self.lock().clone();
        InterceptInfo {
            listeners: counts.listeners,
            binds_continued: counts.continued,
            binds_failed: counts.failed,
            last_error: counts.last_errno.map(errno_name),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counters: a panic while one was held leaves nothing half-done.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `EMFILE`: the errno's name, or its number when nix does not know it.
fn errno_name(errno: i32) -> String {
    match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::UnknownErrno => format!("errno {errno}"),
        known => format!("{known:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{ListenAddr, ListenerSpec, open_listeners};

    #[test]
    fn counts_stay_one_entry_per_listener_however_often_the_program_binds() {
        let spec = ListenerSpec::new(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()));
        let listeners = open_listeners(&[spec]).unwrap();
        let counts = InterceptCounts::new(&listeners);
        for fd in 0..100_000 {
            counts.handed(0, 42, fd);
            counts.continued();
        }
        // An index past the listeners (never sent) is ignored, not grown into.
        counts.handed(7, 42, 3);
        counts.unlink_skipped(7);
        counts.failed(libc::EMFILE);
        let info = counts.info();
        assert_eq!(info.listeners.len(), 1);
        let l = &info.listeners[0];
        assert_eq!(l.address, listeners[0].local_display());
        assert_eq!(
            (l.binds, l.last_pid, l.last_fd, l.unlinks_skipped),
            (100_000, Some(42), Some(99_999), 0)
        );
        assert_eq!(info.binds_continued, 100_000);
        assert_eq!(info.binds_failed, 1);
        assert_eq!(info.last_error.as_deref(), Some("EMFILE"));
        assert_eq!(info.handed(), 100_000);
    }

    #[test]
    fn an_errno_nix_does_not_know_is_shown_by_number() {
        assert_eq!(errno_name(libc::EADDRINUSE), "EADDRINUSE");
        assert_eq!(errno_name(100_000), "errno 100000");
    }
}
