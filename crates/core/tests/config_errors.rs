//! A service file with several problems reports all of them at once, each at its own
//! position, in file order, up to a cap.

use std::path::{Path, PathBuf};

use zd_core::config::{ConfigError, MAX_LISTED, ServiceConfig, load_file, parse_str};

const SOURCE: &str = "/srv/api/api.yaml";

fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
    parse_str(text, Path::new(SOURCE))
}

/// Each problem's `line:column` and message, in the order reported.
fn problems(err: &ConfigError) -> Vec<(usize, usize, String)> {
    err.problems()
        .iter()
        .map(|p| {
            let at = p.location().unwrap_or_else(|| panic!("no position: {p}"));
            (at.line, at.column, p.to_string())
        })
        .collect()
}

fn write_service(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("svc.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn problems_under_different_keys_are_all_reported_at_their_own_lines() {
    let text = "\
comand: [./server]
listen: [tpc://127.0.0.1:8080]
ready: [acepting]
handoff: steerd
log:
  prefix: ture
";
    let err = parse(text).expect_err("five problems");
    assert!(matches!(err, ConfigError::Many { .. }), "{err:?}");
    let found = problems(&err);
    let at: Vec<(usize, usize)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(at, [(1, 1), (2, 10), (3, 9), (4, 10), (6, 11)], "{err}");
    let needles = [
        "unknown key `comand`; did you mean `command`?",
        "unknown scheme 'tpc://' (did you mean 'tcp://'?)",
        "invalid readiness check 'acepting': unknown check (did you mean 'accepting'?)",
        "unknown value `steerd` in `handoff`; did you mean `steered`?",
        "unknown value `ture` in `log.prefix`; did you mean `true`?",
    ];
    for ((line, column, message), needle) in found.iter().zip(needles) {
        let prefix = format!("{SOURCE}:{line}:{column}: ");
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.contains(needle), "{message}\n  wants {needle}");
    }
    // One problem per line, each line with its own position: nothing else.
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 5, "{shown}");
    for (line, (_, _, message)) in lines.iter().zip(&found) {
        assert_eq!(line, message);
    }
    // `comand` says what to do; a "missing key `command`" beside it would only repeat it.
    assert!(!shown.contains("missing key"), "{shown}");
}

#[test]
fn a_missing_required_key_is_reported_beside_the_other_problems() {
    let err = parse("# api\nlisten: [':80']\nhandoff: sharred\n").expect_err("two problems");
    let found = problems(&err);
    assert_eq!(found.len(), 2, "{err}");
    assert!(found[0].2.contains("missing key `command`"), "{err}");
    assert!(found[1].2.contains("did you mean `shared`?"), "{err}");
}

#[test]
fn every_repeated_key_is_reported_where_it_repeats() {
    let err = parse("command: [x]\nfoo: 1\ncommand: [y]\nbar: 2\n").expect_err("three");
    let found = problems(&err);
    let at: Vec<usize> = found.iter().map(|(line, _, _)| *line).collect();
    assert_eq!(at, [2, 3, 4], "{err}");
    assert!(found[1].2.contains("key `command` appears twice"), "{err}");
}

#[test]
fn past_the_cap_the_rest_are_counted() {
    let extra = 5;
    let text: String = std::iter::once("command: [x]\n".to_owned())
        .chain((0..MAX_LISTED + extra).map(|i| format!("junk{i}: 1\n")))
        .collect();
    let err = parse(&text).expect_err("many unknown keys");
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), MAX_LISTED + 1, "{shown}");
    assert!(lines[0].starts_with(&format!("{SOURCE}:2:1: unknown key `junk0`")));
    assert!(lines[MAX_LISTED - 1].starts_with(&format!("{SOURCE}:{}:1: ", MAX_LISTED + 1)));
    assert_eq!(lines[MAX_LISTED], format!("and {extra} more problems"));
}

#[test]
fn a_syntax_error_is_one_error() {
    let err = parse("command: [x\nfoo: 1\nhandoff: nope\n").expect_err("bad yaml");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
    let err = parse("command: [x]\n\tlisten: []\nfoo: 1\n").expect_err("a tab");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
}

#[test]
fn one_problem_keeps_its_own_variant() {
    let err = parse("command: [x]\nhandoff: steerd\n").expect_err("one");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    assert_eq!(err.problems().len(), 1);
}

#[test]
fn misspelled_values_get_a_suggestion() {
    let table = [
        ("restart: on-failur", "did you mean `on-failure`?"),
        ("restart: {policy: nevr}", "did you mean `never`?"),
        ("start_priority: idel", "did you mean `idle`?"),
        ("stop_signal: TREM", "(did you mean 'TERM'?)"),
        ("ready: notfy", "(did you mean 'notify'?)"),
        ("ready: {checks: [acepting]}", "(did you mean 'accepting'?)"),
        ("listen: ['unx:/run/api.sock']", "(did you mean 'unix:'?)"),
        ("listen: ['upd://:53']", "(did you mean 'udp://'?)"),
        ("restart: {limit: of}", "(did you mean 'off'?)"),
        ("restart: {refuse_after: of}", "(did you mean 'off'?)"),
        ("yield_cpu: flase", "did you mean `false`?"),
        ("migrate_requests: yes", "write `true`"),
    ];
    for (line, needle) in table {
        let text = format!("command: [x]\n{line}\n");
        let err = parse(&text).expect_err(line).to_string();
        assert!(err.contains(needle), "{line}: {err}\n  wants {needle}");
    }
}

#[test]
fn checks_of_the_whole_are_reported_with_the_values_that_failed() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = "\
command: [no-such-program-zdctl]
handoff: steerd
drain_timeout: 0s
stop_signal: STOP
";
    let path = write_service(dir.path(), text);
    let err = load_file(&path).expect_err("four problems");
    let found = problems(&err);
    let at: Vec<usize> = found.iter().map(|(line, _, _)| *line).collect();
    assert_eq!(at, [1, 2, 3, 4], "{err}");
    assert!(
        found[0]
            .2
            .contains("command 'no-such-program-zdctl' not found")
    );
    assert!(found[3].2.contains("SIGSTOP pauses a process"));
    Ok(())
}

#[test]
fn checks_that_depend_on_a_value_that_failed_are_skipped() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    // The listener does not parse: "accepting needs a listener" and "steered needs a TCP
    // listener" would be noise about a list that is only unread.
    let text = "command: [sh]\nlisten: ['127.0.0.1:99999']\nready: accepting\nhandoff: steered\n";
    let err = load_file(&write_service(dir.path(), text)).expect_err("one problem");
    assert_eq!(err.problems().len(), 1, "{err}");
    assert!(err.to_string().contains("0 to 65535"), "{err}");
    // A workdir that is not there: where the program is depends on it.
    let text = "command: [./server]\nworkdir: nowhere\n";
    let err = load_file(&write_service(dir.path(), text)).expect_err("one problem");
    assert_eq!(err.problems().len(), 1, "{err}");
    assert!(err.to_string().contains("workdir"), "{err}");
    Ok(())
}
