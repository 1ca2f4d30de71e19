//! The comparison harness: the same `zdctl verify` workload against zdctl and its peers.
//! See `zd_tests::compare`.

fn main() -> std::process::ExitCode {
    zd_tests::compare::main()
}
