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

/// Runs `script` in `shell` with this environment's directories and `zdctl` on PATH.
fn in_shell(env: &TestEnv, shell: &str, script: &str) -> Option<std::process::Output> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_zdctl"));
    let dir = bin.parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(shell)
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("ZDCTL_RUNTIME_DIR", env.runtime_dir())
        .env("ZDCTL_CONFIG_DIR", env.config_dir())
        .output()
        .ok()
}

#[test]
fn bash_offers_service_names_where_a_command_takes_one() {
    let env = TestEnv::new();
    env.service_file("pyapp", "command: [true]\n");
    env.service_file("api", "command: [true]\n");
    let script = committed("zdctl.bash");
    let complete = |words: &str, cword: usize| {
        let out = in_shell(
            &env,
            "bash",
            &format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
                 _zdctl_with_services zdctl \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 echo \"${{COMPREPLY[*]}}\"",
                script.display()
            ),
        )
        .expect("bash runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(complete("zdctl restart py", 2), "pyapp");
    assert_eq!(complete("zdctl status ''", 2), "api pyapp");
    assert_eq!(complete("zdctl top api ''", 3), "api pyapp");
    // Options still complete as before.
    assert!(complete("zdctl restart --tim", 2).contains("--timeout"));
    // Not where the argument is no service.
    assert!(!complete("zdctl signal api ''", 3).contains("pyapp"));
}

#[test]
fn the_zsh_and_fish_scripts_parse_and_offer_service_names() {
    let zsh = std::fs::read_to_string(committed("_zdctl")).expect("zsh script");
    assert!(zsh.contains(":name -- The service to restart:_zdctl_services'"));
    assert!(zsh.contains("_zdctl_services() {"));
    let fish = std::fs::read_to_string(committed("zdctl.fish")).expect("fish script");
    assert!(fish.contains("-a \"(zdctl list --names 2>/dev/null)\""));
    let env = TestEnv::new();
    env.service_file("pyapp", "command: [true]\n");
    let script = committed("zdctl.fish").display().to_string();
    for (shell, check) in [
        ("zsh", format!("zsh -n {}", committed("_zdctl").display())),
        (
            "fish",
            format!(
                "fish --no-execute {script} && fish -c \"source {script}; \
                 complete -C 'zdctl restart py'; complete -C 'zdctl signal pyapp '\" \
                 | grep -qx 'pyapp.service' && \
                 test $(fish -c \"source {script}; complete -C 'zdctl signal pyapp '\" \
                 | grep -c pyapp) = 0"
            ),
        ),
    ] {
        match in_shell(
            &env,
            "sh",
            &format!("command -v {shell} >/dev/null || exit 77; {check}"),
        ) {
            Some(out) if out.status.code() == Some(77) => {
                assert!(
                    std::env::var_os("ZD_REQUIRE_PEERS").is_none_or(|v| v != "1"),
                    "ZD_REQUIRE_PEERS=1 but {shell} is not installed (Debian package: {shell})"
                );
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("SKIPPED: {shell} is not installed (Debian package: {shell})\n")
                        .as_bytes(),
                );
            }
            Some(out) => assert!(
                out.status.success(),
                "{shell} refuses the script: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            None => panic!("cannot run sh"),
        }
    }
}

#[test]
fn list_names_prints_only_the_names() {
    let env = TestEnv::new();
    env.service_file("pyapp", "command: [true]\n");
    env.stale_socket("flags");
    let out = env.zdctl(&["list", "--names"]);
    assert_code(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "flags\npyapp\n",
        "sorted by name"
    );
}
