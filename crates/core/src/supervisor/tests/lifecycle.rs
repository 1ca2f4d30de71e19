//! Crashes and the respawn policy, signals, and the stop.

use super::*;
use GenerationState::{Active, Exited};

#[tokio::test(start_paused = true)]
async fn a_crashed_active_generation_is_respawned_with_a_growing_backoff() {
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, config());
    h.wait_for("ready 1").await;
    fake.child(1).exit(ExitInfo::Signal { signal: 11 });
    assert_eq!(
        h.wait_for("promoted 2").await,
        [
            "exited 1 139",
            "respawning 2 in 100ms",
            "spawned 2",
            "promoted 2"
        ]
    );
    h.wait_for("ready 2").await;
    fake.child(2).exit(ExitInfo::Code { code: 1 });
    assert_eq!(
        h.wait_for("promoted 3").await,
        [
            "exited 2 1",
            "respawning 3 in 200ms",
            "spawned 3",
            "promoted 3"
        ]
    );
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(3));
    assert_eq!(states(&status), [(1, Exited), (2, Exited), (3, Active)]);
    assert_eq!(status.restarts.crashes, 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_respawn_that_cannot_spawn_is_tried_again() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            spawn: Err("fork failed"),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    h.wait_for("ready 1").await;
    fake.child(1).exit(ExitInfo::Code { code: 1 });
    assert_eq!(
        h.wait_for("promoted 3").await,
        [
            "exited 1 1",
            "respawning 2 in 100ms",
            "respawning 3 in 200ms",
            "spawned 3",
            "promoted 3"
        ]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_clean_exit_is_not_respawned_under_on_failure() {
    let fake = FakeChildren::default();
    let mut c = config();
    c.restart.mode = RestartMode::OnFailure;
    let mut h = Harness::start(&fake, c);
    h.wait_for("ready 1").await;
    fake.child(1).exit(CODE_0);
    assert_eq!(h.wait_for("exited 1 0").await, ["exited 1 0"]);
    // Long past any backoff: still nothing.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.seen(), Vec::<String>::new());
    let status = h.status().await;
    assert_eq!(status.active_generation, None);
    assert_eq!(status.restarts.crashes, 1);
    assert_eq!(fake.spawned(), [1]);
    let (events, _) = h.stop().await;
    assert_eq!(events, ["stopping"]);
}

#[tokio::test(start_paused = true)]
async fn a_draining_generation_that_crashes_ends_its_drain_early() {
    let fake = FakeChildren::scripted(
        1,
        Script {
            on_term: None,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let restart = h.restart().await;
    h.wait_for("draining 1 SIGTERM").await;
    fake.child(1).exit(ExitInfo::Signal { signal: 11 });
    let (events, report) = restart.restart().await;
    assert_eq!(
        events[5..],
        ["draining 1 SIGTERM", "exited 1 139", "completed"]
    );
    assert_eq!(report.outcome, RestartOutcome::Completed);
    let status = h.status().await;
    // A draining generation's death is no crash: nothing respawns.
    assert_eq!(status.restarts.crashes, 0);
    assert_eq!(status.active_generation, Some(2));
    assert!(!fake.record().contains(&(1, Done::Killed)));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_active_generation_lost_during_a_restart_is_replaced_by_it() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::After(Duration::from_secs(1)),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let restart = h.restart().await;
    h.wait_for("waiting 2").await;
    fake.child(1).exit(ExitInfo::Code { code: 1 });
    let (events, report) = restart.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    // Gone before the drain: nothing to stop.
    assert_eq!(events[3..], ["ready 2", "promoted 2", "completed"]);
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(2));
    assert_eq!(status.restarts.crashes, 1);
    assert_eq!(fake.spawned(), [1, 2]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_active_generation_lost_during_a_rolled_back_restart_is_respawned_after_it() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::Never,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let restart = h.restart_within(Some(1000)).await;
    h.wait_for("waiting 2").await;
    fake.child(1).exit(ExitInfo::Code { code: 1 });
    // No respawn while the restart runs: it might have replaced the lost generation.
    assert_eq!(h.wait_for("exited 1 1").await, ["exited 1 1"]);
    let (_, report) = restart.restart().await;
    assert!(matches!(report.outcome, RestartOutcome::RolledBack { .. }));
    let after = h.wait_for("promoted 3").await;
    assert_eq!(
        after[after.len() - 4..],
        [
            "rolled back",
            "respawning 3 in 100ms",
            "spawned 3",
            "promoted 3"
        ]
    );
    assert_eq!(h.status().await.active_generation, Some(3));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_restart_rolls_it_back_and_drains_everything() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::Never,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let restart = h.restart().await;
    h.wait_for("waiting 2").await;
    let (events, fake) = h.stop().await;
    assert_eq!(
        events,
        [
            "stopping",
            "draining 2 SIGTERM",
            "exited 2 0",
            "rolled back",
            "draining 1 SIGTERM",
            "exited 1 0"
        ]
    );
    let (_, report) = restart.restart().await;
    assert_eq!(
        report.outcome,
        RestartOutcome::RolledBack {
            reason: "the supervisor is stopping".into()
        }
    );
    let mut ended: Vec<u64> = fake
        .record()
        .into_iter()
        .filter(|(_, d)| *d == Done::Ended)
        .map(|(g, _)| g)
        .collect();
    ended.sort();
    assert_eq!(ended, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn stop_waits_for_a_draining_generation_and_drains_the_active_one() {
    let fake = FakeChildren::scripted(
        1,
        Script {
            on_term: None,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let restart = h.restart().await;
    h.wait_for("draining 1 SIGTERM").await;
    let (events, fake) = h.stop().await;
    // The old generation is killed at its own deadline, then the new one drains.
    assert_eq!(
        events,
        [
            "stopping",
            "killed 1",
            "exited 1 137",
            "completed",
            "draining 2 SIGTERM",
            "exited 2 0"
        ]
    );
    let (_, report) = restart.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert!(fake.record().contains(&(1, Done::Ended)));
    assert!(fake.record().contains(&(2, Done::Ended)));
}

#[tokio::test(start_paused = true)]
async fn sigterm_stops_and_other_signals_reach_the_active_generation() {
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, config());
    h.wait_for("ready 1").await;
    h.signals.send(Signal::User1).unwrap();
    assert_eq!(h.wait_for("signalled 1 SIGUSR1").await.len(), 1);
    match h
        .send(Op::Signal {
            signal: "USR2".into(),
        })
        .await
        .replies()
        .await
        .1
    {
        Reply::Result { result, .. } => assert!(
            matches!(*result, ReplyResult::Done { ref message } if *message == format!("sent SIGUSR2 to pid {}", pid_of(1)))
        ),
        other => panic!("not sent: {other:?}"),
    }
    h.signals.send(Signal::Terminate).unwrap();
    let (events, fake) = h.finish(None).await;
    assert_eq!(
        events,
        [
            "signalled 1 SIGUSR2",
            "stopping",
            "draining 1 SIGTERM",
            "exited 1 0"
        ]
    );
    assert_eq!(
        fake.record(),
        [
            (1, Done::Signalled(Signal::User1)),
            (1, Done::Signalled(Signal::User2)),
            (1, Done::Signalled(Signal::Terminate)),
            (1, Done::Ended)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_signal_without_an_active_generation_is_refused() {
    let fake = FakeChildren::default();
    let mut c = config();
    c.restart.mode = RestartMode::Never;
    let mut h = Harness::start(&fake, c);
    fake.child(1).exit(ExitInfo::Code { code: 1 });
    h.wait_for("exited 1 1").await;
    match h
        .send(Op::Signal {
            signal: "USR1".into(),
        })
        .await
        .replies()
        .await
        .1
    {
        Reply::Error { error, .. } => assert_eq!(error.kind, ErrorKind::Invalid),
        other => panic!("not refused: {other:?}"),
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_must_kill_a_generation_at_its_deadline_reports_it() {
    let fake = FakeChildren::scripted(
        1,
        Script {
            on_term: None,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    h.wait_for("ready 1").await;
    let (events, _, killed) = h.stop_killing().await;
    assert_eq!(
        events,
        ["stopping", "draining 1 SIGTERM", "killed 1", "exited 1 137"]
    );
    assert_eq!(killed, [(1, pid_of(1))]);
}

#[tokio::test(start_paused = true)]
async fn a_kill_before_the_stop_does_not_make_the_stop_unclean() {
    let fake = FakeChildren::scripted(
        1,
        Script {
            on_term: None,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let (_, report) = h.restart().await.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    let (events, _, killed) = h.stop_killing().await;
    assert!(events.contains(&"exited 2 0".to_owned()), "{events:?}");
    assert_eq!(killed, []);
}
