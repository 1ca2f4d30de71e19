//! Properties of the control protocol, through its public API only: the line framing
//! splits any byte stream like a simple model, a request written by the client reaches the
//! engine as sent, and any line a peer sends gets one answer (the request, or an error that
//! reads as a message) while the connection stays usable.

mod common;
use common::assert_clear;

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::BufReader;
use zd_core::proto::{
    Client, ControlServer, ErrorKind, LineError, LineReader, Op, PeerPolicy, Reply, ReplyResult,
    Request, request_queue,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// What [`LineReader`] must return for `input`: every newline ends a line, a final line
/// without one still counts unless empty, and a line longer than `max` is an error.
fn model(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, ()>> {
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let last = lines.pop().unwrap_or_default();
    if !last.is_empty() {
        lines.push(last);
    }
    lines
        .into_iter()
        .map(|l| {
            if l.len() > max {
                Err(())
            } else {
                Ok(l.to_vec())
            }
        })
        .collect()
}

/// Bytes with newlines common enough to make many lines, some of them long.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            1 => Just(b'\n'),
        ],
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_line_reader_splits_any_stream_like_the_model(
        input in stream(),
        capacity in 1usize..16,
        max in 0usize..24,
    ) {
        let got = runtime().block_on(async {
            let mut reader =
                LineReader::with_max(BufReader::with_capacity(capacity, &input[..]), max);
            let mut got = Vec::new();
            loop {
                match reader.next_line().await {
                    Ok(Some(line)) => got.push(Ok(line)),
                    Ok(None) => break,
                    Err(LineError::TooLong { max: m }) => {
                        assert_eq!(m, max);
                        got.push(Err(()));
                    }
                    Err(other) => panic!("{other}"),
                }
            }
            got
        });
        prop_assert_eq!(got, model(&input, max));
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Status),
        Just(Op::Stop),
        Just(Op::Watch),
        (prop::option::of(any::<u64>()), any::<bool>()).prop_map(|(ready_timeout_ms, attach)| {
            Op::Restart {
                no_bake: false,
                ready_timeout_ms,
                attach,
            }
        }),
        ".{0,12}".prop_map(|signal| Op::Signal { signal }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn a_request_reads_back_from_its_json_line(id: u64, op in op()) {
        let request = Request { v: 1, id, op };
        let line = serde_json::to_string(&request).unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(!line.contains('\n'));
        prop_assert_eq!(serde_json::from_str::<Request>(&line).ok(), Some(request));
    }
}

/// A control server on a socket in a temp dir, and an engine that answers every request
/// it receives with `done` and reports it.
struct Harness {
    runtime: tokio::runtime::Runtime,
    socket: PathBuf,
    received: std::sync::Mutex<std::sync::mpsc::Receiver<(u64, Op)>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let socket = dir.path().join("api.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let server = runtime
            .block_on(ControlServer::bind(&socket))
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let (tx, mut rx) = request_queue(16);
        runtime.spawn(server.serve(PeerPolicy::current(), tx));
        runtime.spawn(async move {
            while let Some(req) = rx.recv().await {
                let _ = seen_tx.send((req.id, req.op.clone()));
                let done = ReplyResult::Done {
                    message: "done".into(),
                };
                let _ = req.replies.send(Reply::result(req.id, done)).await;
            }
        });
        Harness {
            runtime,
            socket,
            received: std::sync::Mutex::new(seen_rx),
            _dir: dir,
        }
    }

    /// Sends each line on one connection, one at a time; returns each answer with the
    /// request the engine received for it, if any.
    fn exchange(&self, lines: &[Vec<u8>]) -> Vec<(Reply, Option<(u64, Op)>)> {
        let received = self
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.runtime.block_on(async {
            let mut client = Client::connect(&self.socket)
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let mut answers = Vec::new();
            for line in lines {
                let mut bytes = line.clone();
                bytes.push(b'\n');
                client
                    .send_raw(&bytes)
                    .await
                    .unwrap_or_else(|e| panic!("send: {e}"));
                let reply = client.next_reply().await.unwrap_or_else(|e| {
                    panic!("no answer to {:?}: {e}", String::from_utf8_lossy(line))
                });
                let request = matches!(reply, Reply::Result { .. })
                    .then(|| received.recv().unwrap_or_else(|e| panic!("{e}")));
                answers.push((reply, request));
            }
            answers
        })
    }
}

/// Request-like JSON objects: `v`, `id` and `op` mostly present with values of every type,
/// and other fields, known and not.
fn requestish() -> impl Strategy<Value = Vec<u8>> {
    let field =
        |values: Vec<&'static str>| prop::option::weighted(0.85, prop::sample::select(values));
    let v = field(vec!["1", "1", "1", "2", "0", "\"1\"", "null", "1.0", "-1"]);
    let id = field(vec![
        "7",
        "0",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "\"7\"",
        "null",
        "1.5",
    ]);
    let op = field(vec![
        "\"status\"",
        "\"restart\"",
        "\"stop\"",
        "\"signal\"",
        "\"watch\"",
        "\"bogus\"",
        "\"Status\"",
        "\"\"",
        "1",
        "null",
        "[\"stop\"]",
    ]);
    let extra = prop::collection::vec(
        (
            prop::sample::select(vec!["signal", "ready_timeout_ms", "attach", "x", "", "op"]),
            prop::sample::select(vec![
                "\"TERM\"",
                "\"nope\"",
                "15",
                "0",
                "-1",
                "1.5",
                "true",
                "null",
                "[]",
                "{}",
                "18446744073709551616",
            ]),
        ),
        0..3,
    );
    (v, id, op, extra).prop_map(|(v, id, op, extra)| {
        let mut fields: Vec<String> = Vec::new();
        for (key, value) in [("v", v), ("id", id), ("op", op)] {
            if let Some(value) = value {
                fields.push(format!("\"{key}\":{value}"));
            }
        }
        fields.extend(extra.iter().map(|(k, v)| format!("\"{k}\":{v}")));
        format!("{{{}}}", fields.join(",")).into_bytes()
    })
}

/// The request in `line` if it is one the server must take: JSON, `"v": 1`, a numeric
/// `id`, an `op` named by a string, and the fields that op needs. (Serde alone is more
/// lenient than the server: it takes `"op": 1` as the op of index 1.)
fn well_formed(line: &[u8]) -> Option<Request> {
    // The server refuses a key repeated at any depth; serde_json's Value keeps the last.
    serde_json::from_slice::<Unique>(line).ok()?;
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let named = value.get("op").is_some_and(serde_json::Value::is_string);
    let numbered = value.get("id").is_some_and(serde_json::Value::is_u64);
    let request: Request = serde_json::from_value(value).ok()?;
    (named && numbered && request.v == 1).then_some(request)
}

/// Any JSON value whose objects name each key once.
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without repeated keys")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
}

/// Any line: raw bytes (no newline), text, request-like objects, and valid requests.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..64
        ),
        "[^\n]{0,64}".prop_map(String::into_bytes),
        requestish(),
        (any::<u64>(), op()).prop_map(|(id, op)| {
            serde_json::to_vec(&Request { v: 1, id, op }).unwrap_or_default()
        }),
    ]
}

#[test]
fn any_line_gets_one_answer_and_the_connection_stays_usable() {
    let harness = Harness::start();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    let lines = prop::collection::vec(line(), 1..8);
    let result = runner.run(&lines, |lines| {
        let mut all = lines.clone();
        // Whatever came before, a valid request still works.
        all.push(br#"{"v":1,"id":4242,"op":"status"}"#.to_vec());
        let answers = harness.exchange(&all);
        for (line, (reply, request)) in all.iter().zip(&answers) {
            let shown = String::from_utf8_lossy(line);
            let valid = well_formed(line);
            match reply {
                Reply::Result { id, .. } => {
                    let (got_id, got_op) = request.clone().unwrap_or_else(|| panic!("{shown}"));
                    prop_assert_eq!(*id, got_id);
                    if let Some(valid) = valid {
                        prop_assert_eq!((valid.id, valid.op), (got_id, got_op), "{}", shown);
                    }
                }
                Reply::Error { error, .. } => {
                    prop_assert!(
                        valid.is_none(),
                        "a valid request was refused: {}: {:?}",
                        shown,
                        error
                    );
                    prop_assert!(
                        matches!(
                            error.kind,
                            ErrorKind::Malformed | ErrorKind::Version | ErrorKind::UnknownOp
                        ),
                        "{:?} for {}",
                        error.kind,
                        shown
                    );
                    assert_clear(&error.message);
                }
                Reply::Event { .. } => panic!("an event for {shown}"),
            }
        }
        let last = answers.last().map(|(_, request)| request.clone());
        prop_assert_eq!(last, Some(Some((4242, Op::Status))));
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}
