//! A generation starts at the weakest CPU priority ([`StartPriority::Idle`]).
//!
//! A generation's start (exec, the dynamic loader, the program's initialisation) is a
//! millisecond or more of CPU, spent on the CPUs that answer requests. At the service's own
//! priority it runs without a break until the next scheduler tick: threads of the old
//! generation and of its clients that the kernel wakes on that CPU wait behind it, even
//! while the other CPU is idle, because they ran a moment ago and count as cache-hot
//! (docs/benchmarks.md has the trace). As `SCHED_IDLE`, the start gives way the moment any
//! of them wakes, and runs on what the service does not use.
//!
//! The child sets `SCHED_IDLE` on itself before exec (`handoff::spawn`), when it runs at
//! the normal policy (`SCHED_OTHER`); every process and thread the generation starts
//! inherits it.
//!
//! `IdleStart::end` gives every `SCHED_IDLE` thread of the generation's tree `SCHED_OTHER`
//! back, at its nice value, which `SCHED_IDLE` kept: when the generation is proven ready (a
//! generation that accepts connections must not serve them at the weakest priority, so
//! `accepting` is polled every `EAGER_POLL` meanwhile), and at the latest
//! [`IDLE_START_LIMIT`] after the spawn, so that on a saturated machine, where an idle task
//! gets almost no CPU, the start is delayed by that much at most. A thread the service
//! itself put at `SCHED_IDLE` in that time gets `SCHED_OTHER` too: nothing tells the two
//! apart.
//!
//! [`StartPriority::Idle`]: crate::config::StartPriority::Idle

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::proto::ExitInfo;
use crate::sched::{get, set};

pub use crate::sched::IDLE_START_LIMIT;

/// When threads born idle during the end of an idle start are looked for again, after it.
const STRAGGLER_PASSES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(200),
    Duration::from_secs(1),
];

/// A generation's idle start, ended once: by its readiness or by [`IDLE_START_LIMIT`],
/// whichever comes first. The default is a generation that started at its normal priority.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdleStart(Option<Arc<Started>>);

#[derive(Debug)]
struct Started {
    pid: i32,
    ended: AtomicBool,
}

impl IdleStart {
    /// For generation `pid`, just spawned idle: ends its idle start after
    /// [`IDLE_START_LIMIT`] unless something ended it before or the generation exited (its
    /// pid may then soon be someone else's).
    pub(crate) fn begin(pid: i32, mut exited: watch::Receiver<Option<ExitInfo>>) -> IdleStart {
        let idle = IdleStart(Some(Arc::new(Started {
            pid,
            ended: AtomicBool::new(false),
        })));
        let limit = idle.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(IDLE_START_LIMIT) => limit.end(),
                _ = exited.wait_for(|s| s.is_some()) => {}
            }
        });
        idle
    }

    /// Whether the generation started idle.
    pub(crate) fn began(&self) -> bool {
        self.0.is_some()
    }

    /// Gives the generation its normal priority back, the first time only.
    pub(crate) fn end(&self) {
        if let Some(started) = &self.0
            && !started.ended.swap(true, Ordering::AcqRel)
        {
            end_idle_start(started.pid);
            // A thread that an idle thread was cloning while the passes ran inherits the
            // idle policy and may show up in /proc only after the last pass: left alone, it
            // would stay at SCHED_IDLE for good and starve under load. Once no idle thread
            // is left none can be born, so a few later passes catch every straggler.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let pid = started.pid;
                rt.spawn(async move {
                    for delay in STRAGGLER_PASSES {
                        tokio::time::sleep(delay).await;
                        if tokio::task::spawn_blocking(move || end_idle_start(pid))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        }
    }
}

/// Gives `SCHED_OTHER` back to every `SCHED_IDLE` thread of `root`'s tree; returns how many
/// it changed. A thread started while a pass runs inherits from one that may not be done
/// yet, so passes repeat until one changes nothing (at most four).
fn end_idle_start(root: i32) -> usize {
    let mut changed = 0;
    for _ in 0..4 {
        let pass = end_pass(root);
        changed += pass;
        if pass == 0 {
            break;
        }
    }
    changed
}

fn end_pass(root: i32) -> usize {
    let mut changed = 0;
    for pid in crate::proc::descendants(root) {
        // A process that exited meanwhile has no threads left to change.
        for tid in crate::proc::tasks(pid).unwrap_or_default() {
            if let Some(attr) = get(tid).filter(|a| a.is(libc::SCHED_IDLE))
                && set(tid, &attr.with_policy(libc::SCHED_OTHER))
            {
                changed += 1;
            }
        }
    }
    changed
}

/// The scheduling policy of thread `tid` (0: the caller). For tests.
pub fn policy_of(tid: i32) -> Option<i32> {
    get(tid).map(|a| a.policy as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_threads_get_the_normal_policy_back_and_others_are_left_alone() {
        let me = std::process::id() as i32;
        let cases = [libc::SCHED_IDLE, libc::SCHED_BATCH, libc::SCHED_OTHER];
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
        let threads: Vec<_> = cases
            .into_iter()
            .map(|policy| {
                let (tx, stop_rx) = (tx.clone(), stop_rx.clone());
                std::thread::spawn(move || {
                    let attr = get(0).expect("own attributes").with_policy(policy);
                    assert!(set(0, &attr), "sched_setattr");
                    // SAFETY: gettid has no preconditions.
                    tx.send((policy, unsafe { libc::gettid() })).unwrap();
                    let _ = stop_rx.lock().unwrap().recv();
                })
            })
            .collect();
        let started: Vec<(i32, i32)> = (0..cases.len()).map(|_| rx.recv().unwrap()).collect();
        assert!(end_idle_start(me) >= 1);
        for (policy, tid) in started {
            let want = match policy {
                libc::SCHED_IDLE => libc::SCHED_OTHER,
                other => other,
            };
            assert_eq!(
                policy_of(tid),
                Some(want),
                "thread {tid} started as {policy}"
            );
        }
        drop(stop_tx);
        for t in threads {
            t.join().unwrap();
        }
    }
}
