//! The completion scripts and the man page under `completions/` are generated: regenerate
//! them and fail on any difference, so they never drift from the clap definition.

use std::path::PathBuf;

use crate::fake::{TestEnv, assert_code};

fn committed(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../completions")
        .join(file)
}

fn assert_same(args: &[&str], file: &str) {
    let out = TestEnv::new().zdctl(args);
    assert_code(&out, 0);
    let on_disk = std::fs::read(committed(file)).unwrap_or_default();
    assert!(
        on_disk == out.stdout,
        "completions drifted: run 'zdctl {} > completions/{file}' and commit the result",
        args.join(" ")
    );
}

#[test]
fn every_committed_completion_script_matches_the_generated_one() {
    for (shell, file) in zdctl::completions::SHELLS {
        assert_same(&["completions", &shell.to_string()], file);
    }
}

#[test]
fn every_committed_man_page_matches_the_generated_one() {
    let pages = zdctl::completions::render_man_pages().expect("man pages");
    assert!(pages.len() > 5, "one per command");
    for (file, _) in &pages {
        let page = file.trim_end_matches(".1");
        assert_same(&["man", page], file);
    }
}

#[test]
fn the_man_pages_have_exit_status_and_no_markdown() {
    for (file, roff) in zdctl::completions::render_man_pages().expect("man pages") {
        let text = String::from_utf8_lossy(&roff);
        assert!(text.contains(".SH \"EXIT STATUS\""), "{file}");
        assert!(text.contains(".SH \"SEE ALSO\""), "{file}");
        assert!(!text.contains('`'), "{file} shows Markdown backticks");
    }
}

#[test]
fn completions_do_not_offer_the_hidden_demo_server() {
    for (shell, _) in zdctl::completions::SHELLS {
        let script = zdctl::completions::render_completions(shell);
        assert!(
            !String::from_utf8_lossy(&script).contains("demo-server"),
            "{shell} completions offer demo-server"
        );
    }
}
