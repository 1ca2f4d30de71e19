//! One script for every driver, run against its real peer under load: `status` in text and
//! `--json` agreeing (with the snapshot `top` shows), `verify NAME --restarts 5`, two
//! restarts at once (one runs, one is `busy`), `top` in tmux showing both generations of a
//! flip and restarting on `r` + `y`, the counters and last restart after all that, and a
//! new generation that fails at once rolled back, long before the driver's timeout.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;
use zd_load::load::ConnectionMode;

use crate::support::{
    TestEnv, assert_code, assert_no_failures, http_get, start_paced_load, stderr, stdout,
};
use crate::top::{Tmux, row, start_top};

/// The `timeout:` of every scripted service: a rollback that took this long waited for the
/// timer instead of seeing the failure.
pub const TIMEOUT: &str = "20s";

/// How a supervisor meets a new generation that fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The old generation serves on: the restart is rolled back.
    RollsBack,
    /// The supervisor cannot go back (huptime's old process stopped accepting at the
    /// HUP): the restart fails at once and says the service is going down.
    GoesDown,
}

/// A foreign supervisor running, ready for the script.
pub struct Case {
    /// The service's name; its file names the driver.
    pub name: &'static str,
    pub driver: &'static str,
    /// Where it serves HTTP.
    pub addr: String,
    /// How the background load talks to it: keep-alive, or a connection per request for
    /// programs that close every connection (huptime's old copy lives as long as its
    /// connections do).
    pub mode: ConnectionMode,
    /// Makes every later generation fail at once (and so the next restart roll back).
    pub break_next: Box<dyn Fn()>,
    /// What a restart whose new generation fails at once ends in.
    pub on_failure: OnFailure,
    /// Keeps the peer alive while the script runs.
    pub guard: Box<dyn std::any::Any>,
}

/// Runs the whole script on `case`.
pub fn run(env: &TestEnv, case: Case) {
    let name = case.name;
    let load = start_paced_load(&case.addr, 4, case.mode, Some(200.0));
    let first = status_agrees(env, &case);
    let first_generation = active_generation(&first);

    // Listed among every running service, by `list` and by `status` with no name.
    let out = env.run_zdctl(&["list", "--json"]);
    assert_code(&out, 0);
    let list: Value = serde_json::from_str(&stdout(&out)).expect("list --json");
    let entry = list
        .as_array()
        .and_then(|all| all.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("'{name}' is not listed: {list:#}"));
    assert_eq!(entry["state"], "running", "{entry:#}");
    assert_eq!(entry["driver"], case.driver, "{entry:#}");
    let out = env.run_zdctl(&["status"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains(&format!("service '{name}': {} pid", case.driver)),
        "{}",
        stdout(&out)
    );

    // `signal` reaches the active generation's main process; `stop` says who stops it.
    let out = env.run_zdctl(&["signal", name, "CONT"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains(&format!(
            "generation {first_generation} of '{name}' (pid {})",
            active_pid(&first)
        )),
        "{}",
        stdout(&out)
    );
    let out = env.run_zdctl(&["stop", name]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(&format!("stop it with {}", case.driver)),
        "{}",
        stderr(&out)
    );

    let out = env.run_zdctl(&[
        "verify",
        name,
        "--url",
        &format!("http://{}/", case.addr),
        "--restarts",
        "5",
        "--interval",
        "300ms",
        "--concurrency",
        "4",
        "--rate",
        "400",
        if case.mode == ConnectionMode::Close {
            "--close"
        } else {
            "--keepalive"
        },
    ]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("5/5 completed"), "{}", stdout(&out));

    two_restarts_at_once(env, name);
    top_restarts_and_shows_both_generations(env, &case);

    let after = status_agrees(env, &case);
    let restarts = &after["restarts"];
    assert_eq!(restarts["requested"], 7, "{after:#}");
    assert_eq!(restarts["completed"], 7, "{after:#}");
    assert_eq!(restarts["rolled_back"], 0, "{after:#}");
    assert_eq!(restarts["failed"], 0, "{after:#}");
    assert_eq!(after["last_restart"]["outcome"], "completed", "{after:#}");
    assert_eq!(
        active_generation(&after),
        first_generation + 7,
        "seven restarts, seven generations: {after:#}"
    );

    // A supervisor that cannot go back loses the service at the failure: the load ends,
    // without a failed request, before it.
    let load = match case.on_failure {
        OnFailure::RollsBack => Some(load),
        OnFailure::GoesDown => {
            assert_no_failures(&load.finish());
            None
        }
    };
    (case.break_next)();
    let started = Instant::now();
    let out = env.run_zdctl(&["restart", name]);
    let took = started.elapsed();
    assert_code(&out, 1);
    assert!(
        took < zd_core::duration::parse_duration(TIMEOUT).expect("timeout"),
        "the restart waited for the driver's timeout"
    );
    match case.on_failure {
        OnFailure::RollsBack => {
            eprintln!(
                "{}: a new generation that failed at once was rolled back in {took:?}",
                case.driver
            );
            assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
            let rolled = status_agrees(env, &case);
            assert_eq!(
                active_generation(&rolled),
                first_generation + 7,
                "{rolled:#}"
            );
            assert_eq!(rolled["restarts"]["rolled_back"], 1, "{rolled:#}");
            http_get(&case.addr, "/").expect("the old generation still serves");
            if let Some(load) = load {
                assert_no_failures(&load.finish());
            }
        }
        OnFailure::GoesDown => {
            eprintln!(
                "{}: a new generation that failed at once was reported in {took:?}",
                case.driver
            );
            assert!(stderr(&out).contains("going down"), "{}", stderr(&out));
        }
    }
    drop(case.guard);
}

/// `status NAME` and `status NAME --json` say the same: the driver, the supervisor's pid,
/// each live generation's number, pid and state, the listeners; the snapshot numbers the
/// generations as the status does. Returns the JSON.
fn status_agrees(env: &TestEnv, case: &Case) -> Value {
    let out = env.run_zdctl(&["status", case.name, "--json"]);
    assert_code(&out, 0);
    let json: Value = serde_json::from_str(&stdout(&out)).expect("status --json");
    let out = env.run_zdctl(&["status", case.name]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(json["driver"], case.driver, "{json:#}");
    assert!(
        text.contains(&format!("  driver: {}\n", case.driver)),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {},", json["supervisor_pid"])),
        "{text}\n{json:#}"
    );
    let generations = json["generations"].as_array().expect("generations");
    assert!(!generations.is_empty(), "{json:#}");
    for g in generations {
        let line = format!(
            "{} {} {}",
            g["generation"],
            g["pid"],
            g["state"].as_str().expect("state")
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ") == line),
            "text status lacks generation row '{line}':\n{text}"
        );
    }
    assert!(
        text.contains(&format!("active: generation {}", json["active_generation"])),
        "{text}"
    );
    let listeners = json["listeners"].as_array().expect("listeners");
    assert!(!listeners.is_empty(), "no listener: {json:#}");
    for l in listeners {
        let address = l["address"].as_str().expect("address");
        assert!(
            text.contains(address),
            "text lacks listener {address}:\n{text}"
        );
    }
    let live: Vec<(u64, i64)> = generations
        .iter()
        .filter(|g| g["state"] != "exited")
        .map(|g| {
            (
                g["generation"].as_u64().expect("n"),
                g["pid"].as_i64().expect("pid"),
            )
        })
        .collect();
    let snapshot = &json["snapshot"];
    let seen: Vec<(u64, i64)> = snapshot["generations"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshot: {json:#}"))
        .iter()
        .map(|g| {
            (
                g["generation"].as_u64().expect("n"),
                g["main_pid"].as_i64().expect("pid"),
            )
        })
        .collect();
    for g in &live {
        assert!(
            seen.contains(g),
            "the snapshot lacks generation {g:?}: {json:#}"
        );
    }
    for l in snapshot["listeners"]
        .as_array()
        .expect("snapshot listeners")
    {
        assert!(
            !l["held_by"].as_array().expect("held_by").is_empty(),
            "a listener nobody holds: {json:#}"
        );
    }
    json
}

fn active_generation(json: &Value) -> u64 {
    json["active_generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no active generation: {json:#}"))
}

fn active_pid(json: &Value) -> i32 {
    let active = json["active_generation"].clone();
    json["generations"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["generation"] == active))
        .and_then(|g| g["pid"].as_i64())
        .and_then(|pid| i32::try_from(pid).ok())
        .unwrap_or_else(|| panic!("no active pid: {json:#}"))
}

/// Two restarts started together: one runs, the other is told `busy` (exit 1) at once.
fn two_restarts_at_once(env: &TestEnv, name: &str) {
    let spawn = || {
        env.zdctl()
            .args(["restart", name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn zdctl restart")
    };
    let (a, b) = (spawn(), spawn());
    let a = a.wait_with_output().expect("restart a");
    let b = b.wait_with_output().expect("restart b");
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort_unstable();
    assert_eq!(
        codes,
        [Some(0), Some(1)],
        "a: {}\nb: {}",
        stderr(&a),
        stderr(&b)
    );
    let busy = if a.status.code() == Some(1) { &a } else { &b };
    assert!(
        stderr(busy).contains("is already running"),
        "{}",
        stderr(busy)
    );
}

/// `zdctl top NAME`: the active generation's row with its pid; `r` then `y` restarts
/// through the driver with its phases; both generations are on screen during the flip.
fn top_restarts_and_shows_both_generations(env: &TestEnv, case: &Case) {
    let name = case.name;
    let before = status_json(env, name);
    let (old_generation, old_pid) = (active_generation(&before), active_pid(&before));
    let tmux = Tmux::new();
    let exit_file = env.path("top.exit");
    start_top(env, &tmux, &format!("{name} --interval 200ms"), &exit_file);
    let screen = tmux.wait_screen("the active generation's row", |s| {
        row(s, old_generation, old_pid).is_some()
    });
    assert!(
        screen.contains(&format!("generations of '{name}'")),
        "{screen}"
    );

    tmux.keys("r");
    tmux.wait_screen("the confirmation", |s| {
        s.contains(&format!("restart '{name}' now?"))
    });
    tmux.keys("y");
    let new_generation = old_generation + 1;
    // Both rows at once: the old generation drains while the new one serves.
    tmux.wait_screen("both generations during the flip", |s| {
        row(s, old_generation, old_pid).is_some()
            && s.lines().any(|l| {
                l.split(|c: char| c.is_whitespace() || c == '│')
                    .find(|c| !c.is_empty())
                    == Some(new_generation.to_string().as_str())
            })
    });
    let screen = tmux.wait_screen("the restart's outcome", |s| {
        s.contains(&format!(
            "restarted '{name}': generation {old_generation} → {new_generation}"
        ))
    });
    assert!(
        screen.contains(&format!("generation {new_generation}")),
        "{screen}"
    );
    let after = status_json(env, name);
    let new_pid = active_pid(&after);
    tmux.wait_screen("the new generation's row", |s| {
        row(s, new_generation, new_pid).is_some()
    });
    crate::top::quit_top(&tmux, "q", &exit_file);
}

fn status_json(env: &TestEnv, name: &str) -> Value {
    let out = env.run_zdctl(&["status", name, "--json"]);
    assert_code(&out, 0);
    serde_json::from_str(&stdout(&out)).expect("status --json")
}

/// The worker command for a peer that starts one: zd-fixture (through `env`, which execs
/// it, so the peer's child is the fixture) that closes its keep-alive connections over three
/// seconds when it drains, so that `top` sees both generations of a flip; and exits at
/// start once `marker` exists. The marker's path is returned for [`Case::break_next`].
pub fn worker(env: &TestEnv) -> (Vec<String>, PathBuf) {
    let marker = env.path("broken");
    let command = vec![
        "env".to_owned(),
        "ZD_FIXTURE_DRAIN_SPREAD=3s".to_owned(),
        format!("ZD_FIXTURE_CRASH_IF_EXISTS={}", marker.display()),
        crate::support::fixture_bin().display().to_string(),
    ];
    (command, marker)
}

/// [`Case::break_next`] for a [`worker`]: creates its marker.
pub fn touch(marker: PathBuf) -> Box<dyn Fn()> {
    Box::new(move || std::fs::write(&marker, b"").expect("create the marker"))
}
