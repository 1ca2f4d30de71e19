//! `zdctl top` in a real terminal (tmux) against the supervised fixture under load, and
//! what the inspector behind it sees during a flip.

mod flip;
mod status_json;
mod stopped;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use zd_load::load::ConnectionMode;

use crate::support::*;

/// A tmux server of its own (`-L`), killed with everything in it when the test ends.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn new() -> Tmux {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Tmux {
            socket: format!(
                "zdtop-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux (install the Debian package 'tmux')")
    }

    /// The pane's text as a person sees it.
    pub(crate) fn screen(&self) -> String {
        stdout(&self.run(&["capture-pane", "-p", "-t", "top"]))
    }

    pub(crate) fn keys(&self, keys: &str) {
        assert_code(&self.run(&["send-keys", "-t", "top", keys]), 0);
    }

    /// Waits until the screen satisfies `check`, showing the last screen on failure.
    pub(crate) fn wait_screen(&self, what: &str, mut check: impl FnMut(&str) -> bool) -> String {
        let start = std::time::Instant::now();
        loop {
            let last = self.screen();
            if check(&last) {
                return last;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; the screen:\n{last}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Not `run`, which panics when tmux cannot be started: a panic while the test is
        // already failing for that reason would abort the whole test binary.
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// Sends `key` to top and waits until it has exited with status 0 (`start_top`'s
/// `exit_file`).
pub(crate) fn quit_top(tmux: &Tmux, key: &str, exit_file: &Path) {
    tmux.keys(key);
    let status = wait_for("top to exit", || {
        std::fs::read_to_string(exit_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(status.trim(), "EXIT=0");
}

/// `zdctl top ARGS` in a 120×40 tmux pane, then the exit status in `exit_file`, then a
/// marker line and a sleep so the pane outlives top for the last capture.
pub(crate) fn start_top(env: &TestEnv, tmux: &Tmux, args: &str, exit_file: &Path) {
    let command = format!(
        "env ZDCTL_RUNTIME_DIR='{}' ZDCTL_CONFIG_DIR='{}' '{}' top {args}; \
         echo EXIT=$? > '{}'; echo top-has-exited; sleep 60",
        env.runtime_dir.display(),
        env.config_dir.display(),
        zdctl_bin().display(),
        exit_file.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    assert_code(&out, 0);
}

/// The generations-table row of `generation` run by `pid`: its cells.
pub(crate) fn row(screen: &str, generation: u64, pid: i32) -> Option<Vec<&str>> {
    screen.lines().find_map(|line| {
        let cells: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|c| !c.is_empty())
            .collect();
        (cells.first() == Some(&generation.to_string().as_str())
            && cells.get(2) == Some(&pid.to_string().as_str()))
        .then_some(cells)
    })
}

/// The CONNS cell: the row's last.
fn connections(cells: &[&str]) -> usize {
    cells.last().and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The OUT cell (output lines kept): third from the end, before LSN and CONNS.
fn output_lines<'a>(cells: &[&'a str]) -> Option<&'a str> {
    cells.len().checked_sub(3).map(|i| cells[i])
}

#[test]
#[cfg_attr(not(has_tmux), ignore = "tmux not installed (Debian package tmux)")]
fn top_shows_generations_under_load_their_output_on_o_restarts_on_r_y_and_restores_the_terminal_on_q()
 {
    let mut env = TestEnv::new();
    // Each generation says hello before it runs the fixture, which prints nothing itself.
    let script = format!("echo hello-from-top; exec '{}'", fixture_bin().display());
    env.write_service(
        "api",
        &format!("command: [/bin/sh, -c, {script:?}]\nlisten:\n  - http=127.0.0.1:0\n"),
    );
    let status = env.start("api", &["run", "api"]);
    let old_pid = active_pid(&status);
    // Paced: 8 connections held open with requests in flight, without taking every CPU
    // from the `top` under test.
    let load = start_paced_load(
        &address_of(&status),
        8,
        ConnectionMode::KeepAlive,
        Some(400.0),
    );
    let tmux = Tmux::new();
    let exit_file = env.path("top.exit");
    start_top(&env, &tmux, "api --interval 500ms", &exit_file);

    let screen = tmux.wait_screen("generation 1 with connections", |s| {
        row(s, 1, old_pid).is_some_and(|cells| connections(&cells) > 0)
    });
    assert!(screen.contains("generations of 'api'"), "{screen}");
    assert!(screen.contains("in-flight connections"), "{screen}");
    // The supervisor keeps the one line generation 1 printed.
    tmux.wait_screen("generation 1 keeping one line", |s| {
        row(s, 1, old_pid).is_some_and(|cells| output_lines(&cells) == Some("1"))
    });

    // `o` shows it, `o` again closes the pane.
    tmux.keys("o");
    let screen = tmux.wait_screen("generation 1's output", |s| {
        s.contains("output of generation 1 of 'api'") && s.contains("hello-from-top")
    });
    assert!(screen.contains(" out hello-from-top"), "{screen}");
    tmux.keys("o");
    tmux.wait_screen("the main view again", |s| {
        !s.contains("output of generation") && s.contains("in-flight connections")
    });

    tmux.keys("r");
    tmux.wait_screen("the confirmation", |s| s.contains("restart 'api' now?"));
    tmux.keys("y");
    let screen = tmux.wait_screen("the restart's outcome", |s| {
        s.contains("restarted 'api': generation 1 → 2")
    });
    assert!(screen.contains("spawned generation 2"), "{screen}");
    let new_pid = active_pid(&env.status("api").expect("status after the restart"));
    assert_ne!(new_pid, old_pid);
    tmux.wait_screen("generation 2 with connections", |s| {
        row(s, 2, new_pid).is_some_and(|cells| connections(&cells) > 0)
    });

    crate::top::quit_top(&tmux, "q", &exit_file);
    // Back on the normal screen: the shell's line, none of top's frame.
    let screen = tmux.wait_screen("the shell", |s| s.contains("top-has-exited"));
    assert!(!screen.contains("generations of"), "{screen}");
    assert_no_failures(&load.finish());
}

#[test]
#[cfg_attr(not(has_tmux), ignore = "tmux not installed (Debian package tmux)")]
fn top_with_no_service_running_says_how_to_start_one_and_quits_on_escape() {
    let env = TestEnv::new();
    let tmux = Tmux::new();
    let exit_file = env.path("top.exit");
    start_top(&env, &tmux, "", &exit_file);
    tmux.wait_screen("the empty state", |s| s.contains("no service is running"));
    crate::top::quit_top(&tmux, "Escape", &exit_file);
}
