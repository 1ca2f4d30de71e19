//! Restarts: promotion, every way to roll back or fail, drains, and concurrent requests.

use super::*;
use GenerationState::{Active, Exited};

#[tokio::test(start_paused = true)]
async fn the_first_generation_is_spawned_active() {
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, config());
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(1));
    assert_eq!(states(&status), [(1, Active)]);
    assert_eq!(status.containment.as_deref(), Some("fake"));
    // Its readiness is published too, with no restart's number: systemd's READY=1 waits
    // for it.
    assert_eq!(h.wait_for("ready 1").await, ["spawned 1", "ready 1"]);
    let (events, fake) = h.stop().await;
    assert_eq!(events, ["stopping", "draining 1 SIGTERM", "exited 1 0"]);
    assert_eq!(
        fake.record(),
        [(1, Done::Signalled(Signal::Terminate)), (1, Done::Ended)]
    );
}

#[tokio::test(start_paused = true)]
async fn restart_promotes_the_ready_generation_then_drains_the_old_one() {
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, config());
    let (events, report) = h.restart().await.restart().await;
    assert_eq!(
        events,
        [
            "requested",
            "spawned 2",
            "waiting 2",
            "ready 2",
            "promoted 2",
            "draining 1 SIGTERM",
            "exited 1 0",
            "completed"
        ]
    );
    assert_eq!(report.restart, 1);
    assert_eq!(report.old_generation, Some(1));
    assert_eq!(report.new_generation, Some(2));
    assert_eq!(report.new_pid, Some(pid_of(2)));
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(2));
    assert_eq!(status.restart_in_progress, None);
    assert_eq!(states(&status), [(1, Exited), (2, Active)]);
    assert_eq!(status.restarts.requested, 1);
    assert_eq!(status.restarts.completed, 1);
    assert_eq!(status.last_restart.map(|r| r.restart), Some(1));
    assert_eq!(
        fake.record(),
        [(1, Done::Signalled(Signal::Terminate)), (1, Done::Ended)]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_rolls_back_when_the_new_generation_fails_its_check() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::Fails("the app said ERRNO=5"),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let (events, report) = h.restart().await.restart().await;
    assert_eq!(
        events,
        [
            "requested",
            "spawned 2",
            "waiting 2",
            "draining 2 SIGTERM",
            "exited 2 0",
            "rolled back"
        ]
    );
    assert_eq!(
        reason(&report),
        format!(
            "generation 2 (pid {}) failed its readiness check: the app said ERRNO=5",
            pid_of(2)
        )
    );
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(1));
    assert_eq!(states(&status), [(1, Active), (2, Exited)]);
    assert_eq!(status.restarts.rolled_back, 1);
    // The old generation never noticed.
    assert!(fake.record().iter().all(|(g, _)| *g == 2));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_rolls_back_when_the_new_generation_exits_before_ready() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::Never,
            exits_after: Some((Duration::from_millis(50), ExitInfo::Code { code: 3 })),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let (events, report) = h.restart().await.restart().await;
    // Already gone: nothing to drain.
    assert_eq!(
        events,
        ["requested", "spawned 2", "waiting 2", "rolled back"]
    );
    assert_eq!(
        reason(&report),
        format!(
            "generation 2 (pid {}) exited with exit code 3 before it was ready",
            pid_of(2)
        )
    );
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(1));
    assert_eq!(states(&status), [(1, Active), (2, Exited)]);
    assert_eq!(fake.record(), [(2, Done::Ended)]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_rolls_back_with_the_reason_when_the_program_cannot_be_executed() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::Never,
            exits_after: Some((Duration::ZERO, ExitInfo::Code { code: 127 })),
            exec_failure: Some("cannot execute 'app': No such file or directory"),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let (_, report) = h.restart().await.restart().await;
    assert_eq!(
        report.outcome,
        RestartOutcome::RolledBack {
            reason: format!(
                "generation 2 (pid {}) could not start: cannot execute 'app': No such file or directory",
                pid_of(2)
            )
        }
    );
    assert_eq!(h.status().await.active_generation, Some(1));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_fails_when_the_new_generation_cannot_be_spawned() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            spawn: Err("out of file descriptors"),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let (events, report) = h.restart().await.restart().await;
    assert_eq!(events, ["requested", "failed"]);
    assert_eq!(
        report.outcome,
        RestartOutcome::Failed {
            reason: "cannot start the new generation: out of file descriptors".into()
        }
    );
    assert_eq!(report.new_generation, None);
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(1));
    assert_eq!(states(&status), [(1, Active)]);
    assert_eq!(status.restarts.failed, 1);
    assert_eq!(fake.spawned(), [1]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_rolls_back_when_the_readiness_timeout_passes() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::Never,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let (events, report) = h.restart_within(Some(200)).await.restart().await;
    assert_eq!(
        events,
        [
            "requested",
            "spawned 2",
            "waiting 2",
            "draining 2 SIGTERM",
            "exited 2 0",
            "rolled back"
        ]
    );
    let checks = config().ready.checks[0].to_string();
    assert_eq!(
        reason(&report),
        format!(
            "generation 2 (pid {}) was not ready within 200ms ({checks}); fake saw nothing",
            pid_of(2)
        )
    );
    assert_eq!(h.status().await.active_generation, Some(1));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_readiness_timeout_of_zero_is_refused() {
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, config());
    match h.restart_within(Some(0)).await.replies().await.1 {
        Reply::Error { error, .. } => assert_eq!(error.kind, ErrorKind::Invalid),
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(h.status().await.restarts.requested, 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn drain_kills_the_old_generation_when_its_deadline_passes() {
    let fake = FakeChildren::scripted(
        1,
        Script {
            on_term: None,
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let (events, report) = h.restart().await.restart().await;
    assert_eq!(
        events,
        [
            "requested",
            "spawned 2",
            "waiting 2",
            "ready 2",
            "promoted 2",
            "draining 1 SIGTERM",
            "killed 1",
            "exited 1 137",
            "completed"
        ]
    );
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert_eq!(
        fake.record(),
        [
            (1, Done::Signalled(Signal::Terminate)),
            (1, Done::Killed),
            (1, Done::Ended)
        ]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_restart_while_one_runs_is_busy_or_follows_it() {
    let fake = FakeChildren::scripted(
        2,
        Script {
            readiness: Readiness::After(Duration::from_secs(1)),
            ..Script::default()
        },
    );
    let mut h = Harness::start(&fake, config());
    let first = h.restart().await;
    h.wait_for("waiting 2").await;
    match h.restart().await.replies().await.1 {
        Reply::Error { error, .. } => {
            assert_eq!(error.kind, ErrorKind::Busy);
            assert_eq!(error.restart, Some(1));
        }
        other => panic!("not busy: {other:?}"),
    }
    // SIGHUP is ignored while busy.
    h.signals.send(Signal::Hangup).unwrap();
    let attached = h
        .send(Op::Restart {
            ready_timeout_ms: None,
            attach: true,
            no_bake: false,
        })
        .await;
    let (_, report) = first.restart().await;
    let (attached_events, attached_report) = attached.restart().await;
    assert_eq!(attached_report, report);
    assert_eq!(
        attached_events.last().map(String::as_str),
        Some("completed")
    );
    let status = h.status().await;
    assert_eq!(status.restarts.requested, 1);
    assert_eq!(fake.spawned(), [1, 2]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sighup_restarts() {
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, config());
    h.wait_for("ready 1").await;
    h.signals.send(Signal::Hangup).unwrap();
    let events = h.wait_for("completed").await;
    assert_eq!(events.first().map(String::as_str), Some("requested"));
    assert_eq!(h.status().await.active_generation, Some(2));
    h.stop().await;
}

fn pid_in(path: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(path).expect("the pidfile");
    text.trim().parse().expect("a pid")
}

#[tokio::test(start_paused = true)]
async fn the_pidfile_names_each_generation_that_becomes_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.pid");
    let mut c = config();
    c.pidfile = Some(path.clone());
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, c);
    assert_eq!(pid_in(&path), pid_of(1));
    let (_, report) = h.restart().await.restart().await;
    assert_eq!(report.outcome, RestartOutcome::Completed);
    assert_eq!(pid_in(&path), pid_of(2));
    h.stop().await;
    assert!(!path.exists(), "the stop removes the pidfile");
}

#[tokio::test(start_paused = true)]
async fn restart_rolls_back_when_the_pidfile_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.pid");
    let mut c = config();
    c.pidfile = Some(path.clone());
    let fake = FakeChildren::default();
    let mut h = Harness::start(&fake, c);
    // A directory where the pidfile goes: the rename that writes it fails.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let (events, report) = h.restart().await.restart().await;
    assert_eq!(
        events,
        [
            "requested",
            "spawned 2",
            "waiting 2",
            "ready 2",
            "draining 2 SIGTERM",
            "exited 2 0",
            "rolled back"
        ]
    );
    assert!(
        reason(&report).ends_with("; the old generation keeps serving"),
        "{report:?}"
    );
    let status = h.status().await;
    assert_eq!(status.active_generation, Some(1));
    assert_eq!(states(&status), [(1, Active), (2, Exited)]);
    h.stop().await;
}

/// The owner alone: a promotion makes the new generation active and the old one draining,
/// unless the stop has begun, when nothing changes and the restart is told who is active.
#[tokio::test(start_paused = true)]
async fn a_promotion_asked_for_while_stopping_changes_nothing() {
    use super::super::owner::{Msg, Owner, Promotion};
    let promote = |owner: &mut Owner| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        owner.on_msg(Msg::Promote {
            generation: 2,
            config: Box::new(config()),
            bake: false,
            reply,
        });
        answer
    };
    let fake = FakeChildren::default();
    let mut owner = Owner::new(config(), super::no_sockets(), None, Arc::new(fake.clone()));
    owner.start_active(false).unwrap();
    let started = owner.start_new(&config()).unwrap();
    assert_eq!(started.generation, 2);

    owner.st.stopping = true;
    let answer = promote(&mut owner).await.unwrap();
    assert!(
        matches!(answer, Promotion::Stopping { active_pid: Some(p) } if p == pid_of(1)),
        "{answer:?}"
    );
    assert_eq!(owner.st.active, Some(1));
    assert_eq!(owner.st.instances[&(1, 0)].state, Active);
    assert_eq!(owner.st.instances[&(2, 0)].state, GenerationState::Starting);

    owner.st.stopping = false;
    let answer = promote(&mut owner).await.unwrap();
    assert!(
        matches!(answer, Promotion::Promoted { old: Some(1) }),
        "{answer:?}"
    );
    assert_eq!(owner.st.active, Some(2));
    assert_eq!(owner.st.instances[&(1, 0)].state, GenerationState::Draining);
    assert_eq!(owner.st.instances[&(2, 0)].state, Active);
}
