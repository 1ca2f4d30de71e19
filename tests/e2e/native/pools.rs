//! `instances: N` (a generation of N processes, rolled one by one) and `bake` (the old
//! generation kept through a window after the promotion, and reverted to), under load.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zd_core::proto::{GenerationState, InstanceInfo, Status};
use zd_load::load::ConnectionMode;

use crate::support::*;

/// The active generation's instances, as `status` lists them.
fn active_instances(status: &Status) -> Vec<InstanceInfo> {
    let generation = status.active_generation.expect("an active generation");
    status
        .generations
        .iter()
        .find(|g| g.generation == generation)
        .expect("the active generation is listed")
        .instances
        .clone()
}

/// Waits until the active generation has `n` live, ready instances; returns its status.
fn wait_ready_instances(env: &TestEnv, name: &str, n: usize) -> Status {
    wait_for("every instance to be ready", || {
        let s = env.status(name)?;
        let ready = active_instances(&s)
            .iter()
            .filter(|i| i.ready && i.state != GenerationState::Exited)
            .count();
        (ready == n).then_some(s)
    })
}

/// Whether process `pid` holds one of `inodes` among its fds.
fn holds_any(pid: i32, inodes: &BTreeSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|l| {
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// Samples, until stopped, how many instances serve: ready (as `status` says) and not
/// draining, with one of the service's listening sockets among their fds (as /proc says).
struct CapacitySampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, usize, String)>,
}

impl CapacitySampler {
    fn start(env: &TestEnv, name: &str) -> CapacitySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let socket = env.socket(name);
        let thread = std::thread::spawn(move || {
            let (mut min, mut samples, mut worst) = (usize::MAX, 0, String::new());
            let status_now = || status_at(&socket);
            // The instances that serve as `status` says, by pid.
            let serving_of = |status: &Status| -> Vec<i32> {
                status
                    .generations
                    .iter()
                    .flat_map(|g| g.instances.iter())
                    .filter(|i| {
                        i.ready
                            && matches!(
                                i.state,
                                GenerationState::Active | GenerationState::Starting
                            )
                    })
                    .map(|i| i.pid)
                    .collect()
            };
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let Some(before) = status_now() else { continue };
                // The supervisor's sockets of every seat: what an instance must hold.
                let inodes: BTreeSet<u64> = before.sockets.iter().map(|s| s.inode).collect();
                let holding: Vec<i32> = serving_of(&before)
                    .into_iter()
                    .filter(|pid| holds_any(*pid, &inodes))
                    .collect();
                // A sample counts only if nothing changed while /proc was read (on a
                // loaded machine that can take a while).
                let Some(after) = status_now() else { continue };
                if serving_of(&after) != serving_of(&before) {
                    continue;
                }
                if holding.len() < min {
                    min = holding.len();
                    worst = format!(
                        "{:?}\nlistening inodes {inodes:?}, holding {holding:?}",
                        before
                            .generations
                            .iter()
                            .map(|g| (g.generation, g.instances.clone()))
                            .collect::<Vec<_>>()
                    );
                }
                samples += 1;
            }
            (min, samples, worst)
        });
        CapacitySampler { stop, thread }
    }

    /// The fewest serving instances seen, how many samples were taken, and what the
    /// sample with the fewest saw.
    fn finish(self) -> (usize, usize, String) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

#[test]
fn twenty_rolling_restarts_of_four_instances_keep_four_serving_and_lose_nothing() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "instances: 4\n");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let first = wait_ready_instances(&env, "api", 4);
    let pids: BTreeSet<i32> = active_instances(&first).iter().map(|i| i.pid).collect();
    assert_eq!(pids.len(), 4, "four processes: {pids:?}");
    // Each instance knows its number.
    let envs: BTreeSet<String> = (0..40)
        .filter_map(|_| http_get(&addr, "/env").ok())
        .filter_map(|(_, body)| {
            let at = body.find("\"zd_instance\":\"")?;
            Some(
                body[at + 15..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect(),
            )
        })
        .collect();
    assert!(!envs.is_empty(), "no instance said its ZD_INSTANCE");
    assert!(
        envs.iter()
            .all(|i| ["0", "1", "2", "3"].contains(&i.as_str())),
        "{envs:?}"
    );

    let sampler = CapacitySampler::start(&env, "api");
    let close = start_load(&addr, 16, ConnectionMode::Close);
    let keep = start_load(&addr, 16, ConnectionMode::KeepAlive);
    let mut seconds = Vec::new();
    for round in 0..20 {
        let started = Instant::now();
        let out = env.run_zdctl(&["restart", "api", "--json"]);
        assert_code(&out, 0);
        seconds.push(started.elapsed().as_secs_f64());
        let text = stdout(&out);
        let steps = text.matches("\"event\":\"step\"").count();
        assert_eq!(steps, 4, "round {round}: a step per instance:\n{text}");
        assert!(text.contains("\"steps\":4"), "{text}");
    }
    let (fewest, samples, worst) = sampler.finish();
    let close = close.finish();
    let keep = keep.finish();
    assert_no_failures(&close);
    assert_no_failures(&keep);
    assert!(samples > 20, "the sampler took only {samples} samples");
    assert!(
        fewest >= 4,
        "at one moment only {fewest} ready instances held the listener ({samples} samples): {worst}"
    );
    let last = env.status("api").expect("status");
    assert_eq!(last.restarts.completed, 20);
    assert_eq!(last.capacity, Some(4));
    assert_eq!(active_instances(&last).len(), 4);
    // Every old instance is gone: the live processes are the new generation's four.
    let live: Vec<_> = last
        .generations
        .iter()
        .filter(|g| g.state != GenerationState::Exited)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    for pid in pids {
        assert!(!is_alive(pid), "old instance {pid} still runs");
    }
    eprintln!(
        "rolling restarts of 4 instances: {} requests, {:.2}s per restart on average",
        close.total() + keep.total(),
        seconds.iter().sum::<f64>() / seconds.len() as f64
    );
}

#[test]
fn an_instance_that_never_becomes_ready_at_step_three_rolls_everything_back() {
    let mut env = TestEnv::new();
    let marker = env.path("break-instance-2");
    let script = format!(
        "if [ \"$ZD_INSTANCE\" = 2 ] && [ -e {marker} ]; then exec {fixture} --never-ready; fi; exec {fixture}",
        marker = marker.display(),
        fixture = fixture_bin().display(),
    );
    // A healthy instance can take over a second to wait on its listener on a loaded
    // 2-vCPU machine: the timeout leaves it room, and only instance 2 reaches it. At the
    // normal start priority: started through a shell, the fixture's threads can be born
    // after the idle start's last look for them, and starve at SCHED_IDLE under load.
    let yaml = |extra: &str| {
        format!(
            "command: [\"/bin/sh\", \"-c\", {script:?}]\nlisten:\n  - http=127.0.0.1:0\ninstances: 4\nstart_priority: normal\nready:\n  timeout: 5s\n{extra}"
        )
    };
    env.write_service("api", &yaml(""));
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let before = wait_ready_instances(&env, "api", 4);
    let old: Vec<InstanceInfo> = active_instances(&before);
    // Paced: a healthy instance that shares its sockets with a ready sibling is served
    // connections before it is ready, and a closed loop can keep every thread of it busy,
    // so that none is seen waiting in accept (its readiness) within the timeout.
    let load = start_paced_load(&addr, 32, ConnectionMode::Close, Some(2000.0));
    std::fs::write(&marker, "").expect("marker");
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("instance 2"), "{text}");
    assert!(text.contains("was not ready within 5s"), "{text}");
    assert!(
        text.contains("had been drained and were started again"),
        "the rollback says which old instances came back: {text}"
    );
    assert_eq!(text.matches("\"event\":\"step\"").count(), 2, "{text}");
    let after = wait_ready_instances(&env, "api", 4);
    assert_eq!(after.active_generation, before.active_generation);
    let now = active_instances(&after);
    let pids: Vec<i32> = now.iter().map(|i| i.pid).collect();
    eprintln!(
        "after the roll back, generation {:?} serves with pids {pids:?}",
        after.active_generation
    );
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(
        now.iter()
            .all(|i| i.ready && i.state == GenerationState::Active),
        "{now:?}"
    );
    // Instances 2 and 3 were never touched; 0 and 1 were drained and started again.
    for i in [2, 3] {
        assert_eq!(now[i].pid, old[i].pid, "instance {i} must be untouched");
    }
    for i in [0, 1] {
        assert_ne!(now[i].pid, old[i].pid, "instance {i} was started again");
        assert_eq!(now[i].respawns, 1);
    }
    assert_no_failures(&load.finish());
    assert_eq!(after.restarts.rolled_back, 1);
    // Nothing of the new generation is left.
    assert!(
        after
            .generations
            .iter()
            .filter(|g| g.generation != after.active_generation.expect("active"))
            .all(|g| g.state == GenerationState::Exited),
        "{:?}",
        after.generations
    );
}

#[test]
fn a_crashed_instance_is_respawned_alone_and_its_siblings_keep_serving() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "instances: 3\nrestart:\n  backoff: 100ms\n");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let before = wait_ready_instances(&env, "api", 3);
    let old = active_instances(&before);
    let load = start_load(&addr, 16, ConnectionMode::Close);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old[1].pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill instance 1");
    let after = wait_for("instance 1 to come back", || {
        let s = env.status("api")?;
        let now = active_instances(&s);
        (now.len() == 3 && now[1].pid != old[1].pid && now[1].ready).then_some(s)
    });
    let report = load.finish();
    let now = active_instances(&after);
    assert_eq!(
        after.active_generation, before.active_generation,
        "same generation"
    );
    assert_eq!(now[0].pid, old[0].pid);
    assert_eq!(now[2].pid, old[2].pid);
    assert_eq!(now[1].respawns, 1);
    assert_eq!(after.restarts.crashes, 1);
    // The killed instance's accepted connections died with it; nothing else may fail.
    assert!(
        report.failed() <= 16,
        "{} failed: {:?}",
        report.failed(),
        report.failures_by_kind()
    );
}

/// A restart into a generation that goes bad during the bake window: `restart` exits 1
/// with `reverted during bake`, the old generation (same pid) serves again, no request
/// fails.
fn assert_reverts(env: &mut TestEnv, addr: &str, expect: &str) {
    let before = env.status("api").expect("status");
    let old_pid = active_pid(&before);
    let load = start_load(addr, 32, ConnectionMode::Close);
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("reverted during bake"), "{text}");
    assert!(text.contains(expect), "expected '{expect}' in {text}");
    assert!(text.contains("\"event\":\"baking\""), "{text}");
    assert!(text.contains("\"event\":\"reverted\""), "{text}");
    let after = env.status("api").expect("status");
    assert_eq!(
        active_pid(&after),
        old_pid,
        "the old generation serves again"
    );
    assert_eq!(after.active_generation, before.active_generation);
    assert!(after.bake.is_none());
    let (code, body) = http_get(addr, "/").expect("GET /");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("pid={old_pid}")), "{body}");
    assert_no_failures(&load.finish());
}

#[test]
fn a_new_generation_that_exits_during_the_bake_window_is_reverted() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "bake: 5s\n");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    env.fixture_service("api", &["--exit-after", "2s"], "bake: 5s\n");
    assert_reverts(&mut env, &addr, "exited with exit code 4");
}

#[test]
fn a_failing_http_bake_check_reverts() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "bake: 5s\n");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let checks =
        format!("bake: 5s\nbake_checks: [\"http://{addr}/healthz\"]\nbake_check_interval: 300ms\n");
    env.fixture_service("api", &["--unhealthy-after", "1500ms"], &checks);
    assert_reverts(&mut env, &addr, "bake check 'http:");
}

#[test]
fn a_healthy_bake_completes_and_drains_the_old_generation_after_the_window() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "bake: 2s\n");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let old_pid = active_pid(&status);
    let load = start_load(&addr, 16, ConnectionMode::KeepAlive);
    let started = Instant::now();
    let mut restart = env.spawn_restart("api");
    let baking = wait_for("the bake window", || {
        env.status("api").filter(|s| s.bake.is_some())
    });
    let bake = baking.bake.clone().expect("bake");
    assert_eq!(
        bake.old_generation,
        status.active_generation.expect("active")
    );
    assert!(
        is_alive(old_pid),
        "the old generation stands by during the window"
    );
    let old = baking
        .generations
        .iter()
        .find(|g| g.generation == bake.old_generation)
        .expect("old listed");
    assert_eq!(old.state, GenerationState::Standby);
    let code = restart.wait().expect("restart").code();
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the window lasted 2s"
    );
    let after = env.status("api").expect("status");
    assert_ne!(active_pid(&after), old_pid);
    assert!(
        !is_alive(old_pid),
        "the old generation was drained after the window"
    );
    assert!(after.last_restart.expect("report").bake_ms.unwrap_or(0) >= 2000);
    // --no-bake skips the window.
    let out = env.run_zdctl(&["restart", "api", "--no-bake", "--json"]);
    assert_code(&out, 0);
    assert!(
        !stdout(&out).contains("\"event\":\"baking\""),
        "{}",
        stdout(&out)
    );
    let last = env
        .status("api")
        .expect("status")
        .last_restart
        .expect("report");
    assert_eq!(last.bake_ms, None, "no window with --no-bake");
    assert_no_failures(&load.finish());
}

#[test]
fn zdctl_revert_during_the_bake_window_brings_the_old_generation_back() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "bake: 60s\n");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let old_pid = active_pid(&status);
    // Nothing bakes yet: nothing to revert.
    let out = env.run_zdctl(&["revert", "api"]);
    assert_code(&out, 1);
    let load = start_load(&addr, 16, ConnectionMode::Close);
    let restart = env
        .zdctl()
        .args(["restart", "api"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("restart");
    wait_for("the bake window", || {
        env.status("api").filter(|s| s.bake.is_some())
    });
    let out = env.run_zdctl(&["revert", "api"]);
    assert_code(&out, 0);
    let restarted = restart.wait_with_output().expect("restart output");
    assert_code(&restarted, 1);
    assert!(
        stderr(&restarted).contains("reverted during bake: 'zdctl revert' asked for it"),
        "{}",
        stderr(&restarted)
    );
    let after = env.status("api").expect("status");
    assert_eq!(active_pid(&after), old_pid);
    assert!(
        after
            .generations
            .iter()
            .filter(|g| g.state != GenerationState::Exited)
            .count()
            == 1,
        "only the old generation is left: {:?}",
        after.generations
    );
    assert_no_failures(&load.finish());
}

#[test]
fn pool_and_bake_mistakes_in_the_service_file_are_errors_with_their_position() {
    let env = TestEnv::new();
    for (extra, expect) in [
        ("instances: 0\n", "instances"),
        ("instances: 2\nrollout:\n  surge: 3\n", "surge"),
        (
            "bake: 500ms\nbake_checks: [\"tcp:127.0.0.1:1\"]\nbake_check_interval: 1s\n",
            "bake",
        ),
    ] {
        let path = env.fixture_service("api", &[], extra);
        let out = env.run_zdctl(&["run", "api"]);
        assert_code(&out, 2);
        let err = stderr(&out);
        let file = path.display().to_string();
        assert!(err.contains(&format!("{file}:")), "{extra}: {err}");
        assert!(err.contains(expect), "{extra}: {err}");
        // file:line:column
        let at = err.find(&format!("{file}:")).expect("position") + file.len() + 1;
        let position: String = err[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ':')
            .collect();
        let position = position.trim_end_matches(':');
        assert_eq!(
            position.matches(':').count(),
            1,
            "{extra}: line:column in {err}"
        );
    }
}

/// The pids of the active generation's instances, by instance.
fn instance_pids(status: &Status) -> Vec<i32> {
    active_instances(status).iter().map(|i| i.pid).collect()
}

#[test]
fn a_pool_survives_a_reexec_and_a_crash_of_its_supervisor_and_rolls_on_after() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "instances: 3\ndrain_timeout: 10s\n");
    let first = env.start("api", &["run", "api"]);
    let addr = address_of(&first);
    let pids = instance_pids(&wait_ready_instances(&env, "api", 3));
    let _kept: Vec<KillOnDrop> = pids.iter().map(|p| KillOnDrop::new(*p)).collect();
    let load = start_load(&addr, 16, ConnectionMode::Close);

    // A reexec keeps every instance, as the same processes.
    assert_code(&env.run_zdctl(&["reexec", "api"]), 0);
    let after = wait_ready_instances(&env, "api", 3);
    assert_eq!(after.supervisor_pid, first.supervisor_pid);
    assert_eq!(instance_pids(&after), pids, "the same three processes");

    // A kill -9 of the supervisor: the next one adopts all three.
    // SAFETY: kill(2) of the supervisor this test started.
    unsafe { libc::kill(first.supervisor_pid, libc::SIGKILL) };
    assert_eq!(env.wait_exit("api"), None, "killed by a signal");
    let adopted = env.start("api", &["run", "api"]);
    assert_ne!(adopted.supervisor_pid, first.supervisor_pid);
    let after = wait_for("the adopted pool", || {
        let s = env.status("api")?;
        (instance_pids(&s) == pids).then_some(s)
    });
    assert_eq!(after.active_generation, first.active_generation);

    // And it rolls on: the adopted instances are drained one by one.
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out).matches("\"event\":\"step\"").count(), 3);
    let rolled = wait_ready_instances(&env, "api", 3);
    for pid in &pids {
        assert!(!instance_pids(&rolled).contains(pid));
    }
    assert_no_failures(&load.finish());
}
