//! `yield_cpu`: the supervisor gives way to the service on the CPU.
//!
//! A restart costs the supervisor CPU at the moment the service is busiest: the clone,
//! the readiness scans of `/proc`, the events. None of it is on a request's path, but on
//! a machine with few cores it takes the CPU from the threads that answer requests: with
//! a connection per request at 4000 requests/s on 2 CPUs, the p99 of the requests inside
//! flips fell from 3.4–3.9 ms to 2.0–2.7 ms with the supervisor ten nice levels below the
//! service. The price is the restart's own speed on a saturated machine: flipbench's
//! request → spawned p99 rose from 2.5–2.9 to 12 ms. Hence a choice, off by default
//! (docs/benchmarks.md).
//!
//! When asked, [`give_way`], called before the runtime starts any thread, lowers the main thread by
//! [`NICE_STEP`]; every thread started from it inherits that value. A generation is started
//! back at the supervisor's original value ([`generation_nice`]), by its child before exec,
//! so the service runs exactly as it would without us.
//!
//! Lowering a priority is always allowed; raising it back is not (CAP_SYS_NICE, or an
//! RLIMIT_NICE that allows the value). [`give_way`] therefore first tries both on a
//! scratch thread and gives way only when the child will be able to return to the
//! original value. Otherwise the supervisor keeps the service's priority.

use std::io;
use std::sync::OnceLock;

/// How many nice levels the supervisor runs below its original value.
pub const NICE_STEP: i32 = 10;

/// The weakest nice value Linux has.
const NICE_MAX: i32 = 19;

/// What [`give_way`] did, once.
static GAVE_WAY: OnceLock<GiveWay> = OnceLock::new();

/// What [`give_way`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveWay {
    /// The supervisor's threads run at `lowered`; generations start at `original`.
    Lowered { original: i32, lowered: i32 },
    /// Already at the weakest priority: nothing to give.
    AtLowest,
    /// A child could not return to the original value, so nothing was lowered.
    NotPermitted,
}

/// Lowers the calling thread, and so every thread it starts afterwards, when the
/// generations can be started back at its current priority. Call it once, before any
/// other thread exists; later calls return what the first one did.
pub fn give_way() -> GiveWay {
    *GAVE_WAY.get_or_init(decide)
}

/// The nice value a new generation must start at, when the supervisor gave way.
pub(crate) fn generation_nice() -> Option<i32> {
    match GAVE_WAY.get() {
        Some(GiveWay::Lowered { original, .. }) => Some(*original),
        _ => None,
    }
}

fn decide() -> GiveWay {
    let Ok(original) = thread_nice() else {
        return GiveWay::NotPermitted;
    };
    let lowered = lowered_from(original);
    if lowered == original {
        return GiveWay::AtLowest;
    }
    // The same round trip a generation's child makes, on a thread that ends with it.
    let can_return = std::thread::spawn(move || {
        set_thread_nice(lowered).is_ok() && set_thread_nice(original).is_ok()
    })
    .join()
    .unwrap_or(false);
    if !can_return || set_thread_nice(lowered).is_err() {
        return GiveWay::NotPermitted;
    }
    GiveWay::Lowered { original, lowered }
}

fn lowered_from(original: i32) -> i32 {
    (original + NICE_STEP).min(NICE_MAX)
}

/// The calling thread's nice value (Linux keeps one per thread).
fn thread_nice() -> io::Result<i32> {
    // -1 is a valid nice value as well as the error return: errno tells them apart.
    // SAFETY: errno is this thread's; getpriority only reads.
    let value = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, gettid())
    };
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(0) | None => Ok(value),
        Some(_) => Err(error),
    }
}

fn set_thread_nice(value: i32) -> io::Result<()> {
    // SAFETY: plain syscall on the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, gettid(), value) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn gettid() -> libc::id_t {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() as libc::id_t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_stops_at_the_weakest_priority() {
        assert_eq!(lowered_from(0), 10);
        assert_eq!(lowered_from(-5), 5);
        assert_eq!(lowered_from(15), 19);
        assert_eq!(lowered_from(19), 19);
    }

    #[test]
    fn a_thread_reads_back_the_nice_value_it_set() {
        // On a thread of its own: the value stays with the thread, which then ends.
        std::thread::spawn(|| {
            let start = thread_nice().expect("getpriority");
            let lowered = lowered_from(start);
            set_thread_nice(lowered).expect("lowering is always allowed");
            assert_eq!(thread_nice().expect("getpriority"), lowered);
        })
        .join()
        .expect("thread");
    }
}
