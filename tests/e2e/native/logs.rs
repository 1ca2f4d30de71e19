//! `zdctl logs`: the supervisor keeps the last lines of each generation's stdout and
//! stderr, a rolled-back restart says what the failed generation printed, `--follow`
//! follows new generations, and a generation's output outlives a crash of its supervisor.

use std::process::Stdio;
use std::time::{Duration, Instant};

use zd_load::load::ConnectionMode;

use crate::support::*;

/// Writes `script` to `file` and the service `api` that runs it with `/bin/sh`, with one
/// loopback listener and the `extra` keys.
fn shell_service(env: &TestEnv, file: &str, script: &str, extra: &str) {
    let path = env.path(file);
    std::fs::write(&path, script).expect("script");
    env.write_service(
        "api",
        &format!(
            "command: [/bin/sh, {:?}]\nlisten:\n  - http=127.0.0.1:0\n{extra}",
            path.display().to_string()
        ),
    );
}

/// A service whose generations say hello on both streams, then run the fixture, or,
/// once `marker` exists, complain and exit 1 like an app missing its configuration.
fn chatty_service(env: &TestEnv, marker: &std::path::Path, extra: &str) {
    let script = format!(
        "echo \"hello from generation $ZD_GENERATION\"\n\
         echo \"warming up $ZD_GENERATION\" >&2\n\
         if [ -e '{}' ]; then echo 'DATABASE_URL not set' >&2; exit 1; fi\n\
         exec '{}'\n",
        marker.display(),
        fixture_bin().display()
    );
    shell_service(env, "chatty.sh", &script, extra);
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn logs_shows_each_generations_lines_and_a_rollback_says_what_it_printed() {
    let mut env = TestEnv::new();
    let marker = env.path("broken");
    chatty_service(&env, &marker, "");
    let status = env.start("api", &["run", "api"]);
    let addr = address_of(&status);
    let load = start_load(&addr, 8, ConnectionMode::KeepAlive);
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);

    // Both generations' lines, in order, each with its generation and stream.
    let out = env.run_zdctl(&["logs", "api"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    for want in [
        "gen 1 out hello from generation 1",
        "gen 1 err warming up 1",
        "gen 2 out hello from generation 2",
        "gen 2 err warming up 2",
    ] {
        assert!(text.contains(want), "'{want}' missing from:\n{text}");
    }
    let first = text.find("generation 1").expect("gen 1");
    let second = text.find("generation 2").expect("gen 2");
    assert!(first < second, "oldest first:\n{text}");

    // One generation; the last line only; JSON.
    let only_one = stdout(&env.run_zdctl(&["logs", "api", "--generation", "1"]));
    assert!(
        only_one.contains("generation 1") && !only_one.contains("generation 2"),
        "{only_one}"
    );
    let lines = json_lines(&env.run_zdctl(&["logs", "api", "-n", "1", "--json"]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["generation"], 2);
    assert!(lines[0]["stream"] == "stdout" || lines[0]["stream"] == "stderr");
    assert!(lines[0]["unix_ms"].as_u64().is_some_and(|ms| ms > 0));

    // A generation whose output is not kept (never was) is an error that lists the kept.
    let out = env.run_zdctl(&["logs", "api", "--generation", "99"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("generations 1, 2"),
        "{}",
        stderr(&out)
    );

    // A restart that rolls back says, in its own output, what the generation printed.
    std::fs::write(&marker, "").expect("marker");
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("the last lines generation 3 printed"), "{err}");
    assert!(err.contains("err | DATABASE_URL not set"), "{err}");
    assert!(err.contains("zdctl logs api --generation 3"), "{err}");
    let out = env.run_zdctl(&["restart", "api", "--json"]);
    assert_code(&out, 1);
    let report = json_lines(&out)
        .into_iter()
        .find(|v| v.get("outcome").is_some())
        .expect("the report line");
    assert_eq!(report["outcome"], "rolled_back");
    let printed: Vec<&str> = report["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert!(printed.contains(&"DATABASE_URL not set"), "{report}");
    std::fs::remove_file(&marker).expect("marker");

    // status knows about it.
    let s = env.status("api").expect("status");
    assert_eq!(s.log_lines, Some(zd_core::config::DEFAULT_LOG_LINES));
    let active = s.active_generation.expect("active");
    let kept = s
        .generations
        .iter()
        .find(|g| g.generation == active)
        .and_then(|g| g.output_lines);
    assert_eq!(kept, Some(2), "{s:?}");
    let text = stdout(&env.run_zdctl(&["status", "api"]));
    assert!(text.contains("'zdctl logs api' shows them"), "{text}");

    // --follow prints the lines of a generation that starts later, and ends when the
    // supervisor stops.
    let follow_out = env.path("follow.out");
    let mut follower = env
        .zdctl()
        .args(["logs", "api", "--follow", "-n", "1"])
        .stdout(std::fs::File::create(&follow_out).expect("follow.out"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("zdctl logs -f");
    let _follower = KillOnDrop::new(follower.id() as i32);
    // The newest line kept (the last rolled-back generation's) says the follower runs.
    wait_for("the follower to print the newest line", || {
        let seen = std::fs::read_to_string(&follow_out).unwrap_or_default();
        seen.contains("DATABASE_URL not set").then_some(())
    });
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    let next = env.status("api").and_then(|s| s.active_generation);
    let want = format!("hello from generation {}", next.expect("active"));
    wait_for("the follower to print the new generation's line", || {
        let seen = std::fs::read_to_string(&follow_out).unwrap_or_default();
        seen.contains(&want).then_some(())
    });
    let seen = std::fs::read_to_string(&follow_out).unwrap_or_default();
    assert!(
        !seen.contains("generation 1\n") && !seen.contains("generation 2\n"),
        "-n 1: one old line only\n{seen}"
    );
    // It follows on across a reexec of the supervisor (whose next binary numbers its
    // lines above the old one's) into the generation a restart starts after it.
    assert_code(&env.run_zdctl(&["reexec", "api"]), 0);
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    let after_reexec = env.status("api").and_then(|s| s.active_generation);
    let want = format!("hello from generation {}", after_reexec.expect("active"));
    wait_for("the follower to print a line read after the reexec", || {
        let seen = std::fs::read_to_string(&follow_out).unwrap_or_default();
        seen.contains(&want).then_some(())
    });
    assert_no_failures(&load.finish());
    assert_code(&env.run_zdctl(&["stop", "api"]), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = follower.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not end after the stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn with_log_lines_0_nothing_is_kept_and_logs_says_so() {
    let mut env = TestEnv::new();
    let marker = env.path("broken");
    chatty_service(&env, &marker, "log:\n  lines: 0\n");
    env.start("api", &["run", "api"]);
    let out = env.run_zdctl(&["logs", "api"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("keeps no output"), "{}", stderr(&out));
    // The generation wrote to the supervisor's output directly.
    assert!(
        env.log("api").contains("hello from generation 1"),
        "{}",
        env.log("api")
    );
    let s = env.status("api").expect("status");
    assert_eq!(s.log_lines, Some(0));
}

/// The last `tick N` number in `text`.
fn last_tick(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split("tick ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

/// A `kill -9` of the supervisor does not break the generation's output: what it prints
/// meanwhile waits in its pipe (the generation holds the read end too), and the supervisor
/// that adopts it reads on from there, without a gap. Without that, its next line would
/// kill it with SIGPIPE.
#[test]
fn output_printed_while_no_supervisor_runs_is_read_by_the_one_that_adopts() {
    let mut env = TestEnv::new();
    let ticker_pid = env.path("ticker.pid");
    let script = format!(
        "sh -c 'echo $$ > \"{}\"; i=0; while [ $i -lt 3000 ]; do echo \"tick $i\"; \
         i=$((i+1)); sleep 0.02; done' &\nexec '{}'\n",
        ticker_pid.display(),
        fixture_bin().display()
    );
    shell_service(&env, "ticker.sh", &script, "");
    let first = env.start("api", &["run", "api"]);
    let addr = address_of(&first);
    let serving = active_pid(&first);
    let _generation = KillOnDrop::new(serving);
    let ticker: i32 = wait_for("the ticker's pid", || {
        std::fs::read_to_string(&ticker_pid)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    let _ticker = KillOnDrop::new(ticker);
    wait_for("a few ticks", || {
        last_tick(&env.log("api")).filter(|n| *n >= 5)
    });

    // SAFETY: kill(2) of the supervisor this test started.
    unsafe { libc::kill(first.supervisor_pid, libc::SIGKILL) };
    assert_eq!(env.wait_exit("api"), None, "killed by a signal");
    // The supervisor's output ends with what it forwarded before it died.
    let before = last_tick(&env.log("api")).expect("ticks before the crash");
    std::thread::sleep(Duration::from_millis(600));
    assert!(is_alive(ticker), "the ticker died while no supervisor ran");

    let adopted = env.start("api", &["run", "api"]);
    assert_eq!(active_pid(&adopted), serving, "adopted");
    let (code, body) = http_get(&addr, "/").expect("served after the adoption");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("pid={serving}")), "{body}");
    let ticks = |out: &std::process::Output| -> Vec<u64> {
        json_lines(out)
            .iter()
            .filter_map(|l| l["text"].as_str())
            .filter_map(|t| t.strip_prefix("tick ")?.parse().ok())
            .collect()
    };
    let now = wait_for("ticks read by the new supervisor", || {
        let out = env.run_zdctl(&["logs", "api", "-n", "1000", "--json"]);
        let t = ticks(&out);
        (t.len() > 30).then_some(t)
    });
    // The first line the new supervisor read follows the last one the dead one forwarded
    // (one line may have been read by it and not yet written when it was killed).
    assert!(
        now[0] > before && now[0] <= before + 2,
        "the dead supervisor forwarded up to tick {before}; the new one read from tick {}",
        now[0]
    );
    assert!(now.windows(2).all(|w| w[1] == w[0] + 1), "a gap in {now:?}");
    // More than half a second of ticks waited in the pipe.
    assert!(now.len() > 25, "{now:?}");
    assert!(is_alive(serving) && is_alive(ticker));
    assert_code(&env.run_zdctl(&["stop", "api"]), 0);
}

/// When the active generation dies outside a restart, the supervisor's log reports it with
/// the last lines the generation printed.
#[test]
fn a_crash_is_reported_with_the_last_lines_the_generation_printed() {
    let mut env = TestEnv::new();
    let script = format!(
        "echo \"generation $ZD_GENERATION gives up soon\" >&2\n\
         exec '{}' --exit-after 300ms\n",
        fixture_bin().display()
    );
    shell_service(&env, "crashy.sh", &script, "restart: never\n");
    env.start("api", &["run", "api"]);
    let report = wait_for("the crash report", || {
        let log = env.log("api");
        log.contains("the last lines it printed").then_some(log)
    });
    let at = report.find("the last lines it printed").expect("report");
    assert!(
        report[at..].contains("generation 1 gives up soon"),
        "{report}"
    );
    let out = env.run_zdctl(&["logs", "api", "--generation", "1"]);
    assert!(
        stdout(&out).contains("gen 1 err generation 1 gives up soon"),
        "{}",
        stdout(&out)
    );
}

/// A program that points its stderr elsewhere closes our pipe long before it exits: a
/// reexec afterwards hands over only the pipe still open, and the output still comes.
#[test]
fn a_reexec_after_the_program_closed_its_stderr_pipe_still_works() {
    let mut env = TestEnv::new();
    let script = format!(
        "exec 2>>'{}'\necho \"generation $ZD_GENERATION writes to a file now\" >&2\n\
         echo \"generation $ZD_GENERATION still prints\"\nexec '{}'\n",
        env.path("errors.log").display(),
        fixture_bin().display()
    );
    shell_service(&env, "redirect.sh", &script, "");
    let first = env.start("api", &["run", "api"]);
    wait_for("its stdout line", || {
        let out = env.run_zdctl(&["logs", "api"]);
        stdout(&out)
            .contains("generation 1 still prints")
            .then_some(())
    });
    // Its stderr pipe's forwarder has seen the end by now (nothing else holds it).
    std::thread::sleep(Duration::from_millis(300));
    let out = env.run_zdctl(&["reexec", "api"]);
    assert_code(&out, 0);
    let after = env.status("api").expect("status");
    assert_eq!(after.supervisor_pid, first.supervisor_pid);
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
    wait_for("the next generation's line", || {
        let out = env.run_zdctl(&["logs", "api"]);
        stdout(&out)
            .contains("generation 2 still prints")
            .then_some(())
    });
    let errors = std::fs::read_to_string(env.path("errors.log")).unwrap_or_default();
    assert!(
        errors.contains("generation 2 writes to a file now"),
        "{errors}"
    );
}
