//! `zdctl top` with a supervisor that does not answer: the screen says why, and `q` quits.

use super::{Tmux, row, start_top};
use crate::support::*;

#[test]
#[cfg_attr(not(has_tmux), ignore = "tmux not installed (Debian package tmux)")]
fn top_shows_a_stopped_supervisor_as_not_answering_and_quits_on_q_while_it_stays_stopped() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let pid = status.supervisor_pid;
    let generation_pid = active_pid(&status);
    let tmux = Tmux::new();
    let exit_file = env.path("top.exit");
    start_top(&env, &tmux, "api --interval 500ms", &exit_file);
    tmux.wait_screen("generation 1", |s| row(s, 1, generation_pid).is_some());

    let _stopped = Stopped::new(pid);
    // The collector's request waits for its deadline meanwhile; the screen keeps being
    // drawn and then says why there is no snapshot.
    tmux.wait_screen("the supervisor reported as not answering", |s| {
        let text = words(s);
        text.contains(&format!("the supervisor (pid {pid}) did not answer"))
            && text.contains(&format!("it is stopped: resume it with 'kill -CONT {pid}'"))
    });
    // A refresh is due every 200 ms: the next one waits on the stopped supervisor now.
    crate::top::quit_top(&tmux, "q", &exit_file);
    let screen = tmux.wait_screen("the shell", |s| s.contains("top-has-exited"));
    assert!(!screen.contains("generations of"), "{screen}");
}

/// The screen's words in order, without borders or line breaks: a message may wrap anywhere.
fn words(screen: &str) -> String {
    screen
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
