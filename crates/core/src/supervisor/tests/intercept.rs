//! `intercept_binds` in `status`: each generation's counts, kept after its exit, and
//! nothing at all for a service that does not intercept.

use super::*;
use crate::listen::steer::Sockets;
use crate::listen::{ListenerSpec, open_listeners};

fn one_listener() -> Sockets {
    let spec: ListenerSpec = "127.0.0.1:0".parse().expect("spec");
    Sockets::new(open_listeners(&[spec]).expect("open")).expect("sockets")
}

#[tokio::test(start_paused = true)]
async fn status_counts_each_generations_intercepted_binds_and_keeps_them_after_its_exit() {
    let fake = FakeChildren::default();
    let mut c = config();
    c.intercept_binds = true;
    let mut h = Harness::start_on(&fake, c, one_listener());
    let first = fake.child(1).intercept();
    first.handed(0, pid_of(1), 5);
    first.continued();
    let (_, report) = h.restart().await.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    let second = fake.child(2).intercept();
    second.handed(0, pid_of(2), 3);
    second.handed(0, pid_of(2) + 1, 4);
    second.failed(libc::EMFILE);

    let status = h.status().await;
    assert!(status.intercept_binds);
    let by_generation = |n: u64| {
        status
            .generations
            .iter()
            .find(|g| g.generation == n)
            .and_then(|g| g.intercept.clone())
            .expect("intercept counts")
    };
    let active = by_generation(2);
    assert_eq!(active.handed(), 2);
    assert_eq!(active.listeners[0].last_pid, Some(pid_of(2) + 1));
    assert_eq!(active.listeners[0].last_fd, Some(4));
    assert_eq!(active.binds_failed, 1);
    assert_eq!(active.last_error.as_deref(), Some("EMFILE"));
    // Generation 1 has exited and released its interception: its counts stay.
    let exited = by_generation(1);
    assert_eq!(
        (exited.handed(), exited.binds_continued, exited.binds_failed),
        (1, 1, 0)
    );
    assert_eq!(exited.listeners[0].last_fd, Some(5));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_service_without_intercept_binds_shows_no_interception() {
    let fake = FakeChildren::default();
    let mut h = Harness::start_on(&fake, config(), one_listener());
    let status = h.status().await;
    assert!(!status.intercept_binds);
    assert!(status.generations.iter().all(|g| g.intercept.is_none()));
    // Nor a word of it on the wire, so older clients see the shape they know.
    let json = serde_json::to_string(&status).expect("json");
    assert!(!json.contains("intercept"), "{json}");
    h.stop().await;
}
