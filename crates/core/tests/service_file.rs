//! Reading a service file safely: only regular files (symlinks to them included), at most
//! 1 MiB, nesting at most 64 levels, and never a read that blocks its caller for good.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use zd_core::config::{ConfigError, load_file, parse_str};

/// Runs `f` on its own thread and fails the test if it has not returned within 20 s: a read
/// that blocks must fail the test, not hang it.
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return: it blocked"))
}

fn load_in_thread(path: &Path) -> Result<zd_core::config::ServiceConfig, ConfigError> {
    let path = path.to_owned();
    returns("load_file", move || load_file(&path))
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

#[test]
fn a_fifo_at_the_service_file_path_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("api.yaml");
    mkfifo(&path);
    let err = load_in_thread(&path).expect_err("a FIFO is not a service file");
    assert!(matches!(err, ConfigError::NotRegular { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: ", path.display())),
        "names the file: {msg}"
    );
    assert!(msg.contains("named pipe"), "{msg}");
    assert!(
        msg.contains("regular file"),
        "says what to use instead: {msg}"
    );
}

#[test]
fn a_symlink_to_a_fifo_is_refused_and_a_symlink_to_a_regular_file_is_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let via_link = dir.path().join("api.yaml");
    std::os::unix::fs::symlink(&fifo, &via_link).expect("symlink");
    let err = load_in_thread(&via_link).expect_err("a FIFO behind a link");
    assert!(err.to_string().contains("named pipe"), "{err}");

    // /etc/zdctl/services.d/api.yaml -> ../available/api.yaml is common, and fine.
    let available = dir.path().join("available");
    std::fs::create_dir(&available).expect("mkdir");
    write(&available, "web.yaml", "command: [sh]\n");
    let enabled = dir.path().join("enabled");
    std::fs::create_dir(&enabled).expect("mkdir");
    std::os::unix::fs::symlink("../available/web.yaml", enabled.join("web.yaml")).expect("link");
    let config = load_in_thread(&enabled.join("web.yaml")).expect("a link to a regular file");
    assert_eq!(config.name, "web");
}

#[test]
fn a_directory_at_the_service_file_path_is_refused_as_not_a_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("api.yaml");
    std::fs::create_dir(&path).expect("mkdir");
    let err = load_file(&path).expect_err("a directory");
    assert!(matches!(err, ConfigError::NotRegular { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("is a directory, not a regular file"),
        "{err}"
    );
}

#[test]
fn a_device_at_the_service_file_path_is_refused_without_reading_it() {
    let err = load_in_thread(Path::new("/dev/null")).expect_err("a device");
    assert!(matches!(err, ConfigError::NotRegular { .. }), "{err:?}");
    assert!(err.to_string().contains("character device"), "{err}");
}

/// A valid service file padded with comments to exactly `size` bytes.
fn padded(size: usize) -> String {
    let mut text = String::from("command: [sh]\n");
    let line = format!("# {}\n", "x".repeat(97));
    while text.len() + line.len() <= size {
        text.push_str(&line);
    }
    text.push_str(&"#".repeat(size - text.len()));
    assert_eq!(text.len(), size);
    text
}

#[test]
fn a_file_of_exactly_one_mebibyte_loads_and_one_byte_more_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "api.yaml", &padded(1 << 20));
    let config = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.command, ["sh"]);

    std::fs::write(&path, padded((1 << 20) + 1)).expect("write");
    let err = load_file(&path).expect_err("too large");
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
    assert!(msg.contains("larger than 1 MiB"), "{msg}");
}

fn nested_flow(depth: usize) -> String {
    format!("command: {}sh{}\n", "[".repeat(depth), "]".repeat(depth))
}

fn parse(text: &str) -> Result<zd_core::config::ServiceConfig, ConfigError> {
    parse_str(text, Path::new("/srv/api/api.yaml"))
}

#[test]
fn nesting_deeper_than_64_levels_is_refused_with_its_position() {
    // 64 levels: refused for what they are (a command is a list of strings), not for depth.
    let err = parse(&nested_flow(63)).expect_err("not a command");
    assert!(!err.to_string().contains("nest"), "{err}");
    let err = parse(&nested_flow(64)).expect_err("too deep");
    assert!(
        err.to_string()
            .starts_with("/srv/api/api.yaml:1:73: the service file nests deeper than 64 levels"),
        "{err}"
    );
}

#[test]
fn block_nesting_counts_like_flow_nesting() {
    // `- - - x`: each dash opens a sequence inside the previous one.
    let compact = format!("command: [sh]\nenv:\n  {}x\n", "- ".repeat(70));
    let err = parse(&compact).expect_err("too deep");
    assert!(err.to_string().contains("nests deeper than 64"), "{err}");
    assert!(err.to_string().starts_with("/srv/api/api.yaml:3:"), "{err}");

    // One more indented key per line.
    let mut indented = String::from("command: [sh]\nenv:\n");
    for level in 0..70 {
        indented.push_str(&format!("{}k{level}:\n", " ".repeat(2 + level)));
    }
    let err = parse(&indented).expect_err("too deep");
    assert!(err.to_string().contains("nests deeper than 64"), "{err}");
}

#[test]
fn a_100_kb_file_nested_50_thousand_deep_fails_at_once_with_the_nesting_message() {
    // Before the cap, libyaml took time quadratic in the depth: 17 s for this file.
    let text = nested_flow(50_000);
    let err = returns("parse_str", move || parse(&text)).expect_err("too deep");
    assert!(err.to_string().contains("nests deeper than 64"), "{err}");
}

#[test]
fn brackets_in_strings_comments_and_block_scalars_do_not_count_as_nesting() {
    let deep = "[".repeat(100);
    let text = format!(
        "# {deep}\ncommand: [sh, -c, \"echo '{deep}'\"]\nenv:\n  A: '{deep}{{'\n  B: x{deep}\n  \
         C: |\n    {deep}\n    {{{{\n  D: >-\n    {deep}\n  E: \"a \\\" {deep}\"\n"
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.env.len(), 5);
}
