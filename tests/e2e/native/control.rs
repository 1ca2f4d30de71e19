//! The control socket under bad input and foreign users.

use std::os::unix::fs::PermissionsExt;

use zd_core::proto::{Client, ErrorKind, Op, Reply};

use crate::support::*;

fn error_kind(reply: &Reply) -> Option<ErrorKind> {
    match reply {
        Reply::Error { error, .. } => Some(error.kind),
        _ => None,
    }
}

#[test]
fn malformed_and_oversized_lines_get_error_replies_and_the_supervisor_keeps_serving() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let socket = env.socket("api");
    runtime().block_on(async {
        let mut c = Client::connect(&socket).await.expect("connect");
        c.send_raw(b"{this is not json\n").await.expect("send");
        assert_eq!(
            error_kind(&c.next_reply().await.expect("reply")),
            Some(ErrorKind::Malformed)
        );
        let mut huge = vec![b'x'; 200 * 1024];
        huge.push(b'\n');
        c.send_raw(&huge).await.expect("send");
        assert_eq!(
            error_kind(&c.next_reply().await.expect("reply")),
            Some(ErrorKind::TooLong)
        );
        c.send_raw(b"{\"v\":1,\"id\":3,\"op\":\"launch\"}\n")
            .await
            .expect("send");
        assert_eq!(
            error_kind(&c.next_reply().await.expect("reply")),
            Some(ErrorKind::UnknownOp)
        );
        // The same connection still works.
        let reply = c.call(Op::Status, |_| {}).await.expect("status");
        assert!(matches!(reply, Reply::Result { .. }), "{reply:?}");
    });
    assert_code(&env.run_zdctl(&["restart", "api"]), 0);
}

#[test]
fn a_request_that_names_its_op_twice_is_refused_and_the_service_keeps_running() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    let socket = env.socket("api");
    runtime().block_on(async {
        let mut c = Client::connect(&socket).await.expect("connect");
        // Read as its last "op", this line stopped the service.
        c.send_raw(b"{\"v\":1,\"id\":1,\"op\":\"status\",\"op\":\"stop\"}\n")
            .await
            .expect("send");
        match c.next_reply().await.expect("reply") {
            Reply::Error { id, error, .. } => {
                assert_eq!((id, error.kind), (0, ErrorKind::Malformed));
                assert!(error.message.contains("duplicate key \"op\""), "{error:?}");
            }
            other => panic!("{other:?}"),
        }
        c.send_raw(b"{\"v\":1,\"id\":\"2\",\"op\":\"status\"}\n")
            .await
            .expect("send");
        match c.next_reply().await.expect("reply") {
            Reply::Error { error, .. } => assert_eq!(
                error.message,
                "\"id\" must be a non-negative integer, not \"2\""
            ),
            other => panic!("{other:?}"),
        }
    });
    assert!(env.status("api").is_some(), "the service was stopped");
    let supervisor = &mut env.supervisor("api").child;
    assert!(supervisor.try_wait().expect("try_wait").is_none());
}

#[test]
fn a_restart_request_with_a_zero_readiness_timeout_is_refused() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let socket = env.socket("api");
    runtime().block_on(async {
        let mut c = Client::connect(&socket).await.expect("connect");
        c.send_raw(b"{\"v\":1,\"id\":1,\"op\":\"restart\",\"ready_timeout_ms\":0}\n")
            .await
            .expect("send");
        match c.next_reply().await.expect("reply") {
            Reply::Error { id, error, .. } => {
                assert_eq!((id, error.kind), (1, ErrorKind::Invalid));
                assert!(error.message.contains("must be positive"), "{error:?}");
            }
            other => panic!("{other:?}"),
        }
    });
    let after = env.status("api").expect("status");
    assert_eq!(
        after.active_generation, status.active_generation,
        "nothing restarted"
    );
    assert_eq!(after.restarts.requested, 0);
}

#[test]
fn connection_from_another_uid_is_refused() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    env.start("api", &["run", "api"]);
    // Open the path to everyone so that only the peer-credential check stands in the way:
    // the socket, and the directories of this test's own temp dir (never above it).
    let socket = env.socket("api");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for dir in socket.ancestors().skip(1) {
        if !dir.starts_with(env.dir.path()) {
            break;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    if nix::unistd::geteuid().as_raw() != 0 {
        say_skipped("connection_from_another_uid_is_refused needs root to switch uid");
        return;
    }
    use std::os::unix::process::CommandExt;
    let out = env
        .zdctl()
        .args(["status", "api", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("zdctl as nobody");
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("uid 65534"), "{err}");
    // The supervisor is unharmed.
    assert!(env.status("api").is_some());
}
