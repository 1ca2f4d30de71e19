//! Properties of the service-file parser over generated input: it never panics, every
//! error points into the text and reads as a message for a person, nesting is refused
//! exactly past 64 levels, and a generated config reads back as what was written.

mod common;
use common::assert_clear;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use zd_core::config::{ConfigError, MAX_DEPTH, RestartMode, ServiceConfig, parse_str};
use zd_core::listen::{ListenAddr, ListenerSpec};
use zd_core::ready::check::ReadyCheck;
use zd_core::signal::Signal;

const SOURCE: &str = "/srv/api/api.yaml";

fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
    parse_str(text, Path::new(SOURCE))
}

/// What every error of `parse` must be: each problem at a position inside the text, then a
/// clear message, on a line of its own.
fn assert_good_error(text: &str, err: &ConfigError) {
    let shown = err.to_string();
    for problem in err.problems() {
        assert_good_problem(text, problem);
        assert!(
            shown.lines().any(|line| line == problem.to_string()),
            "{problem} is not a line of its own in: {shown}"
        );
    }
}

fn assert_good_problem(text: &str, err: &ConfigError) {
    let shown = err.to_string();
    let at = err
        .location()
        .unwrap_or_else(|| panic!("no position: {shown}"));
    // The parser may point just past the last line: the end of the file.
    let lines = yaml_lines(text);
    assert!(
        (1..=lines + 1).contains(&at.line) && at.column >= 1,
        "position {}:{} outside the text of {lines} lines: {shown}",
        at.line,
        at.column
    );
    let prefix = format!("{SOURCE}:{}:{}: ", at.line, at.column);
    let message = shown
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("does not start with {prefix:?}: {shown}"));
    assert_clear(message);
}

/// Lines as the YAML reader counts them: `\r\n`, `\r`, `\n`, and (libyaml follows YAML
/// 1.1 here) NEL, LS and PS all end one.
fn yaml_lines(text: &str) -> usize {
    let breaks = text
        .replace("\r\n", "\n")
        .matches(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'])
        .count();
    breaks + 1
}

/// Pieces of service files, valid and not, to glue together at random.
const TOKENS: &[&str] = &[
    "command",
    "listen",
    "ready",
    "env",
    "name",
    "timeout",
    "checks",
    "restart",
    "policy",
    "drain_timeout",
    "stop_signal",
    "mode",
    "address",
    "backlog",
    "log",
    "prefix",
    "workdir",
    "pidfile",
    "yield_cpu",
    "start_priority",
    "driver",
    ":",
    ": ",
    " ",
    "  ",
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ",",
    "'",
    "\"",
    "''",
    "\\",
    "# c",
    "|",
    ">-",
    "&a ",
    "*a",
    "!!str ",
    "!!map ",
    "? ",
    "---",
    "...",
    "%YAML 1.2",
    "0s",
    "1s",
    "30",
    "1.5s",
    "alive:0s",
    "alive:1s",
    "accepting",
    "notify",
    "http:http://127.0.0.1:1/",
    "tcp:a:b",
    "127.0.0.1:0",
    ":8080",
    "[::1]:80",
    "unix:/x.sock",
    "a=:1",
    "'7777'",
    "0o600",
    "0660",
    "TERM",
    "SIGSTOP",
    "on-failure",
    "never",
    "idle",
    "true",
    "no",
    "null",
    "~",
    "x",
    "é",
    "\t",
    "\r",
    "\u{feff}",
    "\0",
    "1e9",
    "-1",
    "18446744073709551616",
];

fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_every_error_is_a_clear_message(text in ".{0,300}") {
        if let Err(err) = parse(&text) {
            assert_good_error(&text, &err);
        }
    }

    #[test]
    fn yaml_like_text_never_panics_and_every_error_is_a_clear_message(text in yamlish()) {
        if let Err(err) = parse(&text) {
            assert_good_error(&text, &err);
        }
    }
}

/// A YAML value to nest, and how to write it.
#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
    /// This subtree in flow style (`[…]`, `{…}`), whatever its parent uses.
    Flow(Box<Node>),
}

impl Node {
    /// Collections from here down, along the deepest path.
    fn depth(&self) -> usize {
        match self {
            Node::Scalar(_) => 0,
            Node::Seq(items) => 1 + items.iter().map(Node::depth).max().unwrap_or(0),
            Node::Map(entries) => 1 + entries.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            Node::Flow(inner) => inner.depth(),
        }
    }

    /// Flow style: JSON-like, with scalars quoted one way or another.
    fn flow(&self, out: &mut String) {
        match self {
            Node::Scalar(s) => out.push_str(s),
            Node::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.flow(out);
                }
                out.push(']');
            }
            Node::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{key}: ");
                    value.flow(out);
                }
                out.push('}');
            }
            Node::Flow(inner) => inner.flow(out),
        }
    }

    /// Whether in block style this node is written on its own lines below its parent.
    fn is_block(&self) -> bool {
        match self {
            Node::Seq(items) => !items.is_empty(),
            Node::Map(entries) => !entries.is_empty(),
            Node::Scalar(_) | Node::Flow(_) => false,
        }
    }

    /// Block style at column `indent`; `first_inline` when the first line continues a `- `
    /// already written (compact nesting).
    fn block(&self, indent: usize, indentless: bool, out: &mut String, first_inline: bool) {
        let pad = |out: &mut String, first: bool| {
            if !(first && first_inline) {
                out.push_str(&" ".repeat(indent));
            }
        };
        match self {
            Node::Seq(items) if self.is_block() => {
                for (i, item) in items.iter().enumerate() {
                    pad(out, i == 0);
                    out.push_str("- ");
                    if item.is_block() {
                        item.block(indent + 2, indentless, out, true);
                    } else {
                        item.flow(out);
                        out.push('\n');
                    }
                }
            }
            Node::Map(entries) if self.is_block() => {
                for (i, (key, value)) in entries.iter().enumerate() {
                    pad(out, i == 0);
                    let _ = write!(out, "{key}:");
                    match value {
                        // `key:\n- a` at the key's column, or indented below it.
                        Node::Seq(_) if value.is_block() => {
                            out.push('\n');
                            let at = if indentless { indent } else { indent + 2 };
                            value.block(at, indentless, out, false);
                        }
                        _ if value.is_block() => {
                            out.push('\n');
                            value.block(indent + 2, indentless, out, false);
                        }
                        _ => {
                            out.push(' ');
                            value.flow(out);
                            out.push('\n');
                        }
                    }
                }
            }
            _ => {
                pad(out, true);
                self.flow(out);
                out.push('\n');
            }
        }
    }
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,6}",
        "'[\\[\\]{}# a-z:]{0,6}'",
        "\"[\\[\\]{}# a-z:]{0,6}\"",
        Just("1".to_owned()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{1,5}", "\"[a-z \\[]{1,5}\""]
}

/// Trees up to about 90 levels deep: enough to cross the 64-level cap both ways.
fn node() -> impl Strategy<Value = Node> {
    let leaf = scalar().prop_map(Node::Scalar);
    leaf.prop_recursive(90, 400, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Node::Seq),
            prop::collection::vec((key(), inner.clone()), 0..3).prop_map(|mut entries| {
                // Keys of one mapping must differ for the YAML to be valid: `s` and `"s"`
                // are the same key.
                let mut seen = std::collections::BTreeSet::new();
                entries.retain(|(k, _)| seen.insert(k.trim_matches('"').to_owned()));
                Node::Map(entries)
            }),
            inner.prop_map(|n| Node::Flow(Box::new(n))),
        ]
    })
}

/// Chains of one collection inside another, so that deep trees are common.
fn chain() -> impl Strategy<Value = Node> {
    (prop::collection::vec((0u8..4, key()), 40..100), scalar()).prop_map(|(links, leaf)| {
        links
            .into_iter()
            .fold(Node::Scalar(leaf), |inner, (kind, key)| match kind {
                0 => Node::Seq(vec![inner]),
                1 => Node::Map(vec![(key, inner)]),
                2 => Node::Seq(vec![Node::Scalar("x".into()), inner]),
                _ => Node::Flow(Box::new(Node::Map(vec![(key, inner)]))),
            })
    })
}

/// `command: [x]` and then `env:` holding the tree: the top-level mapping is one level.
fn document(tree: &Node, indentless: bool) -> String {
    let mut text = String::from("command: [x]\nenv:");
    if tree.is_block() {
        text.push('\n');
        let at = if indentless && matches!(tree, Node::Seq(_)) {
            0
        } else {
            2
        };
        tree.block(at, indentless, &mut text, false);
    } else {
        text.push(' ');
        tree.flow(&mut text);
        text.push('\n');
    }
    text
}

fn check_nesting(tree: &Node, indentless: bool) {
    let text = document(tree, indentless);
    let depth = 1 + tree.depth();
    let err = parse(&text).err();
    let too_deep = err
        .as_ref()
        .is_some_and(|e| e.to_string().contains("nests deeper than"));
    assert_eq!(
        too_deep,
        depth > MAX_DEPTH,
        "depth {depth}, error {err:?}, text:\n{text}"
    );
    if let Some(err) = &err {
        assert_good_error(&text, err);
    }
    // The generator writes valid YAML: what the cap lets through, the parser reads.
    if depth <= MAX_DEPTH {
        let parsed = serde_yaml::from_str::<serde_yaml::Value>(&text);
        assert!(parsed.is_ok(), "{parsed:?}\n{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn nesting_is_refused_exactly_past_64_levels(tree in node(), indentless: bool) {
        check_nesting(&tree, indentless);
    }

    #[test]
    fn deep_chains_are_refused_exactly_past_64_levels(tree in chain(), indentless: bool) {
        check_nesting(&tree, indentless);
    }
}

/// A service as a generator writes it, with what parsing must give back.
#[derive(Debug, Clone)]
struct Written {
    text: String,
    want: ServiceConfig,
}

/// Quotes a string for YAML: JSON strings are YAML double-quoted scalars.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn word() -> impl Strategy<Value = String> {
    "[ -~é]{1,12}".prop_filter("not blank", |s| !s.trim().is_empty())
}

fn listener() -> impl Strategy<Value = (String, ListenerSpec)> {
    let tcp = (1u16.., prop::option::of(1u32..65536)).prop_map(|(port, backlog)| {
        let mut spec = ListenerSpec::new(ListenAddr::Tcp(([127, 0, 0, 1], port).into()));
        spec.backlog = backlog;
        let text = match backlog {
            Some(b) => format!("{{address: '127.0.0.1:{port}', backlog: {b}}}"),
            None => format!("'127.0.0.1:{port}'"),
        };
        (text, spec)
    });
    let unix = ("[a-z]{1,8}", prop::option::of(0u32..=0o777)).prop_map(|(file, mode)| {
        let path = format!("/run/{file}.sock");
        let mut spec = ListenerSpec::new(ListenAddr::Unix(path.clone().into()));
        spec.mode = mode;
        let text = match mode {
            Some(m) => format!("{{address: 'unix:{path}', mode: '0{m:o}'}}"),
            None => format!("'unix:{path}'"),
        };
        (text, spec)
    });
    let udp = (1u16.., any::<bool>()).prop_map(|(port, every)| {
        let (addr, text) = if every {
            (ListenAddr::UdpAnyPort(port), format!("'udp://:{port}'"))
        } else {
            (
                ListenAddr::Udp(([127, 0, 0, 1], port).into()),
                format!("{{address: 'udp://127.0.0.1:{port}'}}"),
            )
        };
        (text, ListenerSpec::new(addr))
    });
    prop_oneof![tcp, unix, udp]
}

fn check() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("notify".to_owned()),
        (1u64..100_000).prop_map(|ms| format!("alive:{ms}ms")),
        (1u16..).prop_map(|port| format!("tcp:127.0.0.1:{port}")),
        (1u16.., "[a-z]{0,8}")
            .prop_map(|(port, path)| format!("http:http://127.0.0.1:{port}/{path}")),
        "[a-z]{1,8}".prop_map(|cmd| format!("exec:{cmd} --check")),
    ]
}

fn signal() -> impl Strategy<Value = (String, Signal)> {
    prop::sample::select(vec![
        ("TERM", Signal::Terminate),
        ("SIGQUIT", Signal::Quit),
        ("int", Signal::Interrupt),
        ("usr2", Signal::User2),
        ("SIGWINCH", Signal::Winch),
        ("1", Signal::Hangup),
        ("9", Signal::Kill),
    ])
    .prop_map(|(text, signal)| (text.to_owned(), signal))
}

prop_compose! {
    fn written()(
        command in prop::collection::vec(word(), 1..5),
        env in prop::collection::btree_map("[A-Z_]{1,8}", word(), 0..4),
        listeners in prop::collection::vec(listener(), 0..4),
        checks in prop::option::of(prop::collection::vec(check(), 1..3)),
        ready_ms in prop::option::of(1u64..10_000_000),
        drain_ms in prop::option::of(1u64..10_000_000),
        stop in prop::option::of(signal()),
        policy in prop::option::of(prop::sample::select(vec![
            ("always", RestartMode::Always),
            ("on-failure", RestartMode::OnFailure),
            ("on_failure", RestartMode::OnFailure),
            ("never", RestartMode::Never),
        ])),
        backoff_ms in prop::option::of((1u64..60_000, 0u64..60_000)),
        prefix: Option<bool>,
        flow_command: bool,
    ) -> Written {
        let mut text = String::new();
        let mut want = ServiceConfig::defaults_for(
            "api",
            command.clone(),
        );
        want.source = Some(SOURCE.into());
        let words: Vec<String> = command.iter().map(|w| quoted(w)).collect();
        if flow_command {
            let _ = writeln!(text, "command: [{}]", words.join(", "));
        } else {
            text.push_str("command:\n");
            for w in &words {
                let _ = writeln!(text, "  - {w}");
            }
        }
        if !env.is_empty() {
            text.push_str("env:\n");
            for (k, v) in &env {
                let _ = writeln!(text, "  {k}: {}", quoted(v));
            }
        }
        want.env = env.into_iter().collect::<BTreeMap<_, _>>();
        if !listeners.is_empty() {
            text.push_str("listen:\n");
            for (entry, _) in &listeners {
                let _ = writeln!(text, "  - {entry}");
            }
        }
        want.listeners = listeners.into_iter().map(|(_, spec)| spec).collect();
        want.ready = zd_core::config::ReadyConfig::default_for(&want.listeners);
        if checks.is_some() || ready_ms.is_some() {
            text.push_str("ready:\n");
            if let Some(checks) = &checks {
                let list: Vec<String> = checks.iter().map(|c| quoted(c)).collect();
                let _ = writeln!(text, "  checks: [{}]", list.join(", "));
                want.ready.checks = checks
                    .iter()
                    .map(|c| c.parse::<ReadyCheck>().unwrap_or_else(|e| panic!("{c}: {e}")))
                    .collect();
            }
            if let Some(ms) = ready_ms {
                let _ = writeln!(text, "  timeout: {ms}ms");
                want.ready.timeout = Duration::from_millis(ms);
            }
        }
        if let Some(ms) = drain_ms {
            let _ = writeln!(text, "drain_timeout: {ms}ms");
            want.drain_timeout = Duration::from_millis(ms);
        }
        if let Some((name, signal)) = stop {
            let _ = writeln!(text, "stop_signal: {name}");
            want.stop_signal = signal;
        }
        if policy.is_some() || backoff_ms.is_some() {
            text.push_str("restart:\n");
            if let Some((name, mode)) = policy {
                let _ = writeln!(text, "  policy: {name}");
                want.restart.mode = mode;
            }
            if let Some((first, more)) = backoff_ms {
                let _ = writeln!(text, "  backoff: {first}ms\n  backoff_max: {}ms", first + more);
                want.restart.backoff = Duration::from_millis(first);
                want.restart.backoff_max = Duration::from_millis(first + more);
            }
        }
        if let Some(prefix) = prefix {
            let _ = writeln!(text, "log: {{prefix: {prefix}}}");
            want.log_prefix = prefix;
        }
        Written { text, want }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn a_generated_service_file_reads_back_as_written(w in written()) {
        match parse(&w.text) {
            Ok(config) => prop_assert_eq!(config, w.want, "{}", w.text),
            Err(err) => panic!("{err}\n{}", w.text),
        }
    }
}
