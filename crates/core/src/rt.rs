//! Helpers for code that runs on the tokio runtime.

/// Runs blocking work (syscalls that wait, /proc scans) from async code without stalling
/// the runtime's worker threads: on a multi-thread runtime the worker hands its other tasks
/// to another thread while `f` runs; elsewhere `f` simply runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
