//! The kernel's scheduling attributes (`sched_getattr`/`sched_setattr`), and how long a
//! generation's start at the idle priority may last.
//!
//! The spawner sets the idle policy in the child before exec, readiness polls eagerly
//! while it lasts, and the supervisor ends it: the constants and the kernel's struct live
//! here, below all three.

use std::time::Duration;

/// How long a generation may stay at the idle priority, ready or not.
pub const IDLE_START_LIMIT: Duration = Duration::from_millis(10);

/// How often `accepting` is checked while a generation starts at the idle priority: every
/// tick of tokio's timer, instead of backing off from 0.5 ms to 20 ms.
pub(crate) const EAGER_POLL: Duration = Duration::from_millis(1);

/// The kernel's `struct sched_attr`, as of `SCHED_ATTR_SIZE_VER1`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

/// The size the kernel is told, and fills.
pub(crate) const SCHED_ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

/// The one flag worth carrying over from `sched_getattr` to `sched_setattr`.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

impl SchedAttr {
    /// The same attributes under `policy`, with the kernel's default slice, ready for
    /// `sched_setattr`; the nice value stays as read.
    pub(crate) fn with_policy(mut self, policy: libc::c_int) -> SchedAttr {
        self.size = SCHED_ATTR_SIZE;
        self.policy = policy as u32;
        self.flags &= SCHED_FLAG_RESET_ON_FORK;
        self.priority = 0;
        self.runtime = 0;
        self
    }

    pub(crate) fn is(&self, policy: libc::c_int) -> bool {
        self.policy == policy as u32
    }
}

/// The attributes of thread `tid` (0: the caller), `None` when it is gone.
pub(crate) fn get(tid: i32) -> Option<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: the kernel writes at most SCHED_ATTR_SIZE bytes into `attr`, which has them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut SchedAttr,
            SCHED_ATTR_SIZE,
            0,
        )
    };
    (rc == 0).then_some(attr)
}

/// Sets the attributes of thread `tid` (0: the caller); false when the kernel refused.
pub(crate) fn set(tid: i32, attr: &SchedAttr) -> bool {
    // SAFETY: the kernel reads `attr.size` bytes of `attr`.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, attr as *const SchedAttr, 0) };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attribute_struct_has_the_kernels_size() {
        assert_eq!(SCHED_ATTR_SIZE, 56);
    }
}
