//! `pidwatch`: stay in the foreground while a service's main PID flips.
//!
//! Everything lives in the library so that tests can reach it; see `lib.rs`.

fn main() -> std::process::ExitCode {
    pidwatch::main()
}
