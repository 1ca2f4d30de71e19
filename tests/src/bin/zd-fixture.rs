//! The zd-fixture HTTP service; see `zd_tests::fixture`.

fn main() {
    std::process::exit(zd_tests::fixture::run());
}
