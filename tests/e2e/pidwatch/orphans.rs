//! Orphans re-parented to pidwatch are reaped: no zombie accumulates.

use super::Flipping;
use super::harness::{process_table, wait_until};

#[test]
fn a_thousand_orphans_leave_no_zombie() {
    let mut service = Flipping::start(&[], &["--orphans", "1000"]);
    let main = service.followed();
    wait_until("the flipper to make its orphans", || {
        service.log().contains("orphans 1000")
    });
    let pidwatch = service.pidwatch_pid();
    // Each orphan exits at once; pidwatch must reap all of them. The only child it may keep
    // is the service itself.
    wait_until("pidwatch to reap every orphan", || {
        let children: Vec<_> = process_table()
            .into_iter()
            .filter(|(_, ppid, _)| *ppid == pidwatch)
            .collect();
        children.len() == 1 && children[0].0 == main && children[0].2 != "Z"
    });
    assert!(service.env.proc(service.pidwatch).is_running());
    assert_eq!(service.stop(), 0);
}
