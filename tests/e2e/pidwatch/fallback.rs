//! Without a subreaper (old kernels, or `--no-subreaper`), pidwatch follows the pid file's
//! processes that belong to its owner, and says so once.

use nix::sys::signal::Signal;

use super::Flipping;
use super::harness::{is_alive, parent_of, received};

#[test]
fn without_a_subreaper_pidwatch_follows_flips_of_the_pid_file_owner_and_says_so_once() {
    let mut service = Flipping::start(&["--no-subreaper", "--grace", "100ms"], &[]);
    let pidwatch = service.pidwatch_pid();
    let first = service.followed();
    let second = service.flip_with(Signal::SIGUSR2);
    let third = service.flip_with(Signal::SIGUSR2);
    assert!(!is_alive(first));
    // Orphans are no longer pidwatch's: the successors went to another reaper.
    assert_ne!(parent_of(third), Some(pidwatch));
    service.signal_pidwatch(Signal::SIGHUP);
    super::harness::wait_until("HUP to reach the third generation", || {
        received(&service.log(), third, "SIGHUP", 1)
    });
    assert!(!received(&service.log(), second, "SIGHUP", 1));
    // pidwatch saw the last process end through its pidfd but could not reap it.
    assert_eq!(service.stop(), 121);
    let stderr = service.env.proc(service.pidwatch).stderr();
    assert_eq!(
        stderr.matches("--no-subreaper: falling back").count(),
        1,
        "{stderr}"
    );
}
