//! `restart.limit`: a service whose starts fail too often is failing, respawns nothing, and
//! waits for a restart.

use super::*;
use crate::config::StartLimit;
use GenerationState::{Active, Exited};

const CODE_1: ExitInfo = ExitInfo::Code { code: 1 };

/// A program that prints two lines and exits 1 `after` its start.
fn crashes_after(after: Duration) -> Script {
    Script {
        exits_after: Some((after, CODE_1)),
        prints: &["starting", "error: cannot read /etc/app.conf"],
        ..Script::default()
    }
}

fn crashes() -> Script {
    crashes_after(Duration::ZERO)
}

/// Fake children whose generations `generations` follow `script`.
fn scripted(generations: std::ops::RangeInclusive<u64>, script: Script) -> FakeChildren {
    let fake = FakeChildren::default();
    for g in generations {
        fake.script(g, script.clone());
    }
    fake
}

fn limited(starts: u32, window: Duration) -> ServiceConfig {
    let mut c = config();
    c.restart.limit = Some(StartLimit { starts, window });
    c
}

#[tokio::test(start_paused = true)]
async fn a_service_whose_starts_fail_is_failing_at_the_limit_and_respawns_nothing() {
    let fake = scripted(1..=10, crashes());
    let mut h = Harness::start(&fake, limited(3, Duration::from_secs(10)));
    assert_eq!(
        h.wait_for("failing after 3 (3 failed starts)").await,
        [
            "spawned 1",
            "ready 1",
            "exited 1 1",
            "respawning 2 in 100ms",
            "spawned 2",
            "promoted 2",
            "ready 2",
            "exited 2 1",
            "respawning 3 in 200ms",
            "spawned 3",
            "promoted 3",
            "ready 3",
            "exited 3 1",
            "failing after 3 (3 failed starts)",
        ]
    );
    // Long past any backoff and the window: nothing more was started.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(h.seen(), Vec::<String>::new());
    assert_eq!(fake.spawned(), [1, 2, 3]);

    let status = h.status().await;
    assert_eq!(status.active_generation, None);
    assert_eq!(states(&status), [(1, Exited), (2, Exited), (3, Exited)]);
    let failing = status.failing.expect("failing");
    assert_eq!(
        (failing.failed_starts, failing.window_ms),
        (3, 10_000),
        "{failing:?}"
    );
    assert_eq!(failing.generation, Some(3));
    assert_eq!(failing.pid, Some(pid_of(3)));
    assert_eq!(failing.exit, Some(CODE_1));
    assert_eq!(
        failing.output,
        ["starting", "error: cannot read /etc/app.conf"]
    );
    // The first start's output goes straight to the supervisor's; once a start failed,
    // the next ones' is kept.
    assert!(!fake.kept_output(1));
    assert!(fake.kept_output(2) && fake.kept_output(3));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_a_fixed_program_brings_a_failing_service_back() {
    let fake = scripted(1..=3, crashes());
    let mut h = Harness::start(&fake, limited(3, Duration::from_secs(10)));
    h.wait_for("failing after 3 (3 failed starts)").await;
    let (events, report) = h.restart().await.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert_eq!(
        events,
        [
            "requested",
            "spawned 4",
            "waiting 4",
            "ready 4",
            "promoted 4",
            "completed"
        ]
    );
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(4));
    assert_eq!(status.failing, None);
    assert_eq!(states(&status)[3], (4, Active));

    // The count started over: failing again only after three more failed starts.
    for g in 4..=6 {
        fake.script(g + 1, crashes());
    }
    fake.child(4).exit(CODE_1);
    h.wait_for("failing after 6 (3 failed starts)").await;
    assert_eq!(fake.spawned(), [1, 2, 3, 4, 5, 6]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_fails_too_keeps_the_service_failing_with_its_exit() {
    let fake = scripted(1..=3, crashes());
    fake.script(
        4,
        Script {
            exits_after: Some((Duration::ZERO, ExitInfo::Code { code: 78 })),
            readiness: Readiness::Never,
            prints: &["still broken"],
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, limited(3, Duration::from_secs(10)));
    h.wait_for("failing after 3 (3 failed starts)").await;
    let (_, report) = h.restart().await.restart().await;
    assert!(
        matches!(report.outcome, RestartOutcome::RolledBack { .. }),
        "{report:?}"
    );
    assert!(reason(&report).contains("exit code 78"), "{report:?}");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(fake.spawned(), [1, 2, 3, 4], "nothing respawned");
    let status = h.status().await;
    assert_eq!(status.active_generation, None);
    let failing = status.failing.expect("still failing");
    assert_eq!(failing.generation, Some(4));
    assert_eq!(failing.exit, Some(ExitInfo::Code { code: 78 }));
    assert!(
        failing
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("exit code 78"),
        "{failing:?}"
    );
    assert_eq!(failing.output, ["still broken"]);

    // And a good program still brings it back.
    let (_, report) = h.restart().await.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert_eq!(h.status().await.failing, None);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_cannot_spawn_keeps_the_service_failing_with_its_reason() {
    let fake = scripted(1..=3, crashes());
    fake.script(
        4,
        Script {
            spawn: Err("no such program"),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, limited(3, Duration::from_secs(10)));
    h.wait_for("failing after 3 (3 failed starts)").await;
    let (_, report) = h.restart().await.restart().await;
    assert!(!report.outcome.is_success(), "{report:?}");
    let failing = h.status().await.failing.expect("still failing");
    assert!(
        failing
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("no such program"),
        "{failing:?}"
    );
    assert_eq!(fake.spawned(), [1, 2, 3]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failed_starts_that_leave_the_window_no_longer_count() {
    // Each generation lives 6s: never three failures within 10s.
    let fake = scripted(1..=8, crashes_after(Duration::from_secs(6)));
    let mut h = Harness::start(&fake, limited(3, Duration::from_secs(10)));
    h.wait_for("promoted 7").await;
    let status = h.status().await;
    assert_eq!(status.failing, None);
    assert_eq!(status.active_generation, Some(7));
    assert_eq!(status.restarts.crashes, 6);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_generation_that_lived_long_enough_starts_the_count_over() {
    let fake = scripted(1..=8, crashes());
    fake.script(3, crashes_after(crate::config::HEALTHY_UPTIME));
    let mut h = Harness::start(&fake, limited(3, Duration::from_secs(60)));
    let seen = h.wait_for("failing after 5 (3 failed starts)").await;
    assert!(!seen.iter().any(|e| e.starts_with("failing after 3")));
    assert_eq!(fake.spawned(), [1, 2, 3, 4, 5]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn respawns_that_cannot_start_reach_the_limit_with_their_reason() {
    let fake = FakeChildren::default();
    for g in 2..=4 {
        fake.script(
            g,
            Script {
                spawn: Err("fork failed"),
                ..Script::default()
            },
        );
    }
    let mut h = Harness::start(&fake, limited(3, Duration::from_secs(10)));
    fake.child(1).exit(CODE_1);
    h.wait_for("failing (3 failed starts)").await;
    let failing = h.status().await.failing.expect("failing");
    assert_eq!(failing.generation, None);
    assert_eq!(failing.reason.as_deref(), Some("fork failed"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_limit_a_crashing_service_is_respawned_forever() {
    let fake = scripted(1..=12, crashes());
    let mut c = config();
    c.restart.limit = None;
    let mut h = Harness::start(&fake, c);
    h.wait_for("promoted 12").await;
    assert_eq!(h.status().await.failing, None);
    h.stop().await;
}

/// `restart.refuse_after`, on a real loopback listener (steered: the hardest case, a
/// `SO_REUSEPORT` group whose program must steer again once it accepts again).
mod refuse_after {
    use std::io::ErrorKind;
    use std::net::TcpStream;

    use super::*;
    use crate::supervisor::tests::steer::steered;

    fn refused(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port))
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
    }

    fn refusing(after: Duration) -> ServiceConfig {
        let mut c = limited(2, Duration::from_secs(10));
        c.restart.refuse_after = Some(after);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn past_refuse_after_the_listeners_refuse_until_a_restart_brings_the_service_back() {
        let Some((sockets, port)) = steered() else {
            return;
        };
        let fake = scripted(1..=2, crashes());
        let mut h = Harness::start_on(&fake, refusing(Duration::from_secs(30)), sockets);
        h.wait_for("failing after 2 (2 failed starts)").await;
        let _waits = TcpStream::connect(("127.0.0.1", port)).expect("queued meanwhile");
        let status = h.status().await;
        let inode = status.sockets[0].inode;
        assert_eq!(
            status.failing.expect("failing").refusing_since_unix_ms,
            None
        );

        tokio::time::sleep(Duration::from_secs(31)).await;
        let status = h.status().await;
        let failing = status.failing.expect("failing");
        assert!(failing.refusing_since_unix_ms.is_some(), "{failing:?}");
        assert_eq!(status.sockets.len(), 1);
        assert_eq!(status.sockets[0].inode, inode, "the same socket");
        assert!(status.sockets[0].refusing);
        assert!(refused(port));

        let (_, report) = h.restart().await.restart().await;
        assert_eq!(report.outcome, RestartOutcome::Completed);
        let status = h.status().await;
        assert_eq!(status.failing, None);
        assert_eq!(status.sockets[0].inode, inode, "the same socket");
        assert!(!status.sockets[0].refusing);
        let _served = TcpStream::connect(("127.0.0.1", port)).expect("accepts again");
        assert_eq!(h.status().await.sockets[0].queue, Some(1), "steered to it");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_that_fails_while_refusing_leaves_the_listeners_refusing() {
        let Some((sockets, port)) = steered() else {
            return;
        };
        let fake = scripted(1..=2, crashes());
        fake.script(
            3,
            Script {
                readiness: Readiness::Never,
                ..crashes()
            },
        );
        let mut h = Harness::start_on(&fake, refusing(Duration::from_secs(5)), sockets);
        h.wait_for("failing after 2 (2 failed starts)").await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(refused(port));
        let (_, report) = h.restart().await.restart().await;
        assert!(
            matches!(report.outcome, RestartOutcome::RolledBack { .. }),
            "{report:?}"
        );
        let failing = h.status().await.failing.expect("still failing");
        assert!(failing.refusing_since_unix_ms.is_some(), "{failing:?}");
        assert!(refused(port));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_brought_back_before_refuse_after_never_refuses() {
        let Some((sockets, port)) = steered() else {
            return;
        };
        let fake = scripted(1..=2, crashes());
        let mut h = Harness::start_on(&fake, refusing(Duration::from_secs(30)), sockets);
        h.wait_for("failing after 2 (2 failed starts)").await;
        let (_, report) = h.restart().await.restart().await;
        assert_eq!(report.outcome, RestartOutcome::Completed);
        // The first failing state's timer finds no failing service.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let _c = TcpStream::connect(("127.0.0.1", port)).expect("accepting");
        assert_eq!(h.status().await.failing, None);
        h.stop().await;
    }
}
