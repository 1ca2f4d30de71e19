use super::*;
use tokio::io::BufReader;

fn error_of(line: &str) -> (u64, ErrorKind, String) {
    match parse_request(line.as_bytes()) {
        Err(Reply::Error { id, error, .. }) => (id, error.kind, error.message),
        other => panic!("{line}: expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn over_long_line_is_reported_and_the_next_line_still_reads() {
    let mut input = vec![b'x'; 100];
    input.extend_from_slice(b"\nshort\nlast");
    let mut r = LineReader::with_max(BufReader::with_capacity(8, &input[..]), 10);
    assert!(matches!(
        r.next_line().await,
        Err(LineError::TooLong { max: 10 })
    ));
    assert_eq!(r.next_line().await.unwrap(), Some(b"short".to_vec()));
    assert_eq!(r.next_line().await.unwrap(), Some(b"last".to_vec()));
    assert_eq!(r.next_line().await.unwrap(), None);
}

#[tokio::test]
async fn a_line_of_exactly_the_maximum_is_accepted() {
    let mut input = vec![b'y'; 10];
    input.push(b'\n');
    let mut r = LineReader::with_max(&input[..], 10);
    assert_eq!(r.next_line().await.unwrap(), Some(vec![b'y'; 10]));
}

#[tokio::test]
async fn a_line_read_in_pieces_survives_a_cancelled_read() {
    let (mut tx, rx) = tokio::io::duplex(64);
    let mut r = LineReader::new(BufReader::new(rx));
    use tokio::io::AsyncWriteExt;
    tx.write_all(b"{\"v\":1,").await.unwrap();
    // The first half arrives, then the read is abandoned, as a select! does when its
    // timer fires first.
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(20), r.next_line()).await;
    assert!(cancelled.is_err(), "{cancelled:?}");
    tx.write_all(b"\"id\":2}\n").await.unwrap();
    assert_eq!(
        r.next_line().await.unwrap(),
        Some(b"{\"v\":1,\"id\":2}".to_vec())
    );
}

#[test]
fn valid_requests_parse_and_unknown_fields_are_ignored() {
    let (id, op) = parse_request(br#"{"v":1,"id":9,"op":"restart","future":{"a":[1,2]}}"#).unwrap();
    assert_eq!(id, 9);
    assert_eq!(
        op,
        Op::Restart {
            ready_timeout_ms: None,
            attach: false,
            no_bake: false,
        }
    );
    let (_, op) = parse_request(br#"{"v":1,"id":1,"op":"signal","signal":"USR1"}"#).unwrap();
    assert_eq!(
        op,
        Op::Signal {
            signal: "USR1".into()
        }
    );
    let (id, op) = parse_request(b" {\"op\":\"status\", \"id\":0, \"v\":1} \r").unwrap();
    assert_eq!((id, op), (0, Op::Status));
}

#[test]
fn a_repeated_key_is_refused_and_named_rather_than_read_one_way() {
    // Serde's own Value keeps the last "op": this line used to stop the service.
    let (id, kind, message) = error_of(r#"{"v":1,"id":4,"op":"status","op":"stop"}"#);
    assert_eq!((id, kind), (0, ErrorKind::Malformed));
    assert!(message.contains(r#"duplicate key "op""#), "{message}");
    assert!(message.contains("send each key once"), "{message}");
    let (_, _, message) = error_of(r#"{"v":1,"id":4,"id":5,"op":"status"}"#);
    assert!(message.contains(r#"duplicate key "id""#), "{message}");
    // At any depth, unknown fields included.
    let (_, _, message) = error_of(r#"{"v":1,"id":4,"op":"status","x":[{"k":1,"k":2}]}"#);
    assert!(message.contains(r#"duplicate key "k""#), "{message}");
}

#[test]
fn a_version_other_than_1_is_named_in_the_error() {
    for (line, shown) in [
        (r#"{"v":-1}"#, "-1"),
        (r#"{"v":-1,"id":3,"op":"status"}"#, "-1"),
        (r#"{"v":2,"id":3,"op":"status"}"#, "2"),
        (r#"{"v":"1","id":3,"op":"status"}"#, "\"1\""),
        (r#"{"v":1.5,"id":3,"op":"status"}"#, "1.5"),
    ] {
        let (_, kind, message) = error_of(line);
        assert_eq!(kind, ErrorKind::Version, "{line}");
        assert_eq!(
            message,
            format!("unsupported protocol version {shown}; this supervisor speaks v1 (\"v\":1)"),
            "{line}"
        );
    }
    // The reply carries the request's id when that one is valid.
    assert_eq!(error_of(r#"{"v":2,"id":3,"op":"status"}"#).0, 3);
}

#[test]
fn an_id_that_is_not_a_non_negative_integer_is_an_error_not_id_0() {
    for (line, shown) in [
        (r#"{"v":1,"id":"7","op":"status"}"#, "\"7\""),
        (r#"{"v":1,"id":1.5,"op":"status"}"#, "1.5"),
        (r#"{"v":1,"id":1.0,"op":"status"}"#, "1.0"),
        (r#"{"v":1,"id":-3,"op":"status"}"#, "-3"),
        (r#"{"v":1,"id":null,"op":"status"}"#, "null"),
        (
            r#"{"v":1,"id":18446744073709551616,"op":"status"}"#,
            "1.8446744073709552e+19",
        ),
    ] {
        let (id, kind, message) = error_of(line);
        assert_eq!((id, kind), (0, ErrorKind::Malformed), "{line}");
        assert_eq!(
            message,
            format!("\"id\" must be a non-negative integer, not {shown}"),
            "{line}"
        );
    }
    let (_, _, message) = error_of(r#"{"v":1,"op":"status"}"#);
    assert!(message.starts_with("missing \"id\""), "{message}");
}

#[test]
fn bad_lines_get_the_right_error_kind() {
    for (line, want) in [
        ("not json", ErrorKind::Malformed),
        ("", ErrorKind::Malformed),
        (
            "{\"v\":1,\"id\":1,\"op\":\"status\"} trailing",
            ErrorKind::Malformed,
        ),
        ("[1,2]", ErrorKind::Malformed),
        ("\u{FFFD}", ErrorKind::Malformed),
        (r#"{"id":1,"op":"status"}"#, ErrorKind::Malformed),
        (r#"{"v":1,"id":1}"#, ErrorKind::Malformed),
        (r#"{"v":1,"id":1,"op":7}"#, ErrorKind::Malformed),
        (r#"{"v":1,"id":1,"op":"explode"}"#, ErrorKind::UnknownOp),
        (r#"{"v":1,"id":1,"op":"signal"}"#, ErrorKind::Malformed),
        (
            r#"{"v":1,"id":1,"op":"signal","signal":9}"#,
            ErrorKind::Malformed,
        ),
        (
            r#"{"v":1,"id":1,"op":"restart","attach":"yes"}"#,
            ErrorKind::Malformed,
        ),
    ] {
        assert_eq!(error_of(line).1, want, "{line}");
    }
    // Bytes that are not UTF-8, and nesting deeper than serde_json allows, are errors too.
    assert!(parse_request(b"{\"v\":1,\"id\":1,\"op\":\"st\xffatus\"}").is_err());
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(error_of(&deep).1, ErrorKind::Malformed);
}

#[test]
fn an_event_from_a_newer_supervisor_reads_as_unknown_instead_of_failing_the_answer() {
    let line = r#"{"v":1,"id":7,"event":{"unix_ms":5,"restart":2,"event":"traffic_shifted","generation":3,"percent":9}}"#;
    let reply: crate::proto::Reply = serde_json::from_str(line).expect("a reply");
    match reply {
        crate::proto::Reply::Event { id, event, .. } => {
            assert_eq!(id, 7);
            assert_eq!(event.kind, crate::proto::EventKind::Unknown);
            assert_eq!(event.restart, Some(2));
        }
        other => panic!("not an event: {other:?}"),
    }
}
