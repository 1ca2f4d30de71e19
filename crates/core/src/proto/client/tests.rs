//! The client against scripted servers on a socket in a temp dir.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::*;
use crate::proto::{EventKind, ReplyResult, RestartOutcome, RestartReport};

/// What a scripted server does after it read the request line.
enum Step {
    Send(Reply),
    Pause(Duration),
}

/// Serves one connection at `path`: reads one line, then plays `steps`, then holds the
/// connection open until the test ends.
fn scripted(dir: &tempfile::TempDir, steps: Vec<Step>) -> PathBuf {
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::new(read);
        let mut line = String::new();
        read.read_line(&mut line).await.expect("request");
        for step in steps {
            match step {
                Step::Send(reply) => {
                    let mut out = serde_json::to_vec(&reply).expect("json");
                    out.push(b'\n');
                    write.write_all(&out).await.expect("write");
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
            }
        }
        std::future::pending::<()>().await;
    });
    path
}

fn event(kind: EventKind) -> Reply {
    Reply::event(
        1,
        Event {
            unix_ms: 0,
            restart: Some(1),
            elapsed_ms: None,
            elapsed_us: None,
            kind,
        },
    )
}

fn restarted() -> Reply {
    Reply::result(
        1,
        ReplyResult::Restart(RestartReport {
            restart: 1,
            outcome: RestartOutcome::Completed,
            old_generation: Some(1),
            new_generation: Some(2),
            new_pid: Some(1234),
            elapsed_ms: 5,
            output: Vec::new(),
            new_pids: Vec::new(),
            steps: None,
            bake_ms: None,
        }),
    )
}

const RESTART: Op = Op::Restart {
    ready_timeout_ms: None,
    attach: false,
    no_bake: false,
};

/// The deadline for short answers in these tests; the scripted pauses are three times it.
const SHORT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_supervisor_that_never_answers_fails_the_call_naming_its_pid_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scripted(&dir, vec![]);
    let mut client = Client::connect_within(&path, SHORT).await.expect("connect");
    // The server is this test process: the kernel names it.
    assert_eq!(client.supervisor_pid(), Some(std::process::id() as i32));
    match client.call(Op::Status, |_| {}).await {
        Err(e @ ClientError::NoAnswer { .. }) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!(
                    "the supervisor (pid {}) did not answer on '{}' within 200ms",
                    std::process::id(),
                    path.display()
                )),
                "{message}"
            );
            assert!(message.contains("not stopped or stuck"), "{message}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_restart_under_way_waits_for_its_result_while_the_supervisor_runs() {
    // Every pause is longer than the short deadline: one in a phase the supervisor did not
    // announce (a spawn on a loaded machine), one in readiness, one in the drain.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scripted(
        &dir,
        vec![
            Step::Send(event(EventKind::RestartRequested)),
            Step::Pause(SHORT * 3),
            Step::Send(event(EventKind::WaitingReady {
                generation: 2,
                checks: vec!["accepting".into()],
                timeout_ms: Some(3_000),
            })),
            Step::Pause(SHORT * 3),
            Step::Send(event(EventKind::Ready {
                generation: 2,
                evidence: "accept".into(),
            })),
            Step::Send(event(EventKind::Draining {
                generation: 1,
                pid: 1,
                signal: "SIGTERM".into(),
                deadline_ms: 3_000,
            })),
            Step::Pause(SHORT * 3),
            Step::Send(restarted()),
        ],
    );
    let mut client = Client::connect_within(&path, SHORT).await.expect("connect");
    let reply = client
        .call(RESTART, |_| {})
        .await
        .expect("the restart's result");
    assert_eq!(reply, restarted());
}

#[tokio::test]
async fn a_restart_whose_first_line_comes_late_is_waited_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scripted(&dir, vec![Step::Pause(SHORT * 3), Step::Send(restarted())]);
    let mut client = Client::connect_within(&path, SHORT).await.expect("connect");
    let reply = client
        .call(RESTART, |_| {})
        .await
        .expect("the restart's result");
    assert_eq!(reply, restarted());
}

#[tokio::test]
async fn a_restart_whose_first_line_does_not_come_fails_at_the_long_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scripted(&dir, vec![Step::Pause(SHORT * 8), Step::Send(restarted())]);
    let mut client = Client::connect_within(&path, SHORT).await.expect("connect");
    let result = client.call(RESTART, |_| {}).await;
    assert!(
        matches!(result, Err(ClientError::NoAnswer { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_long_wait_of_unknown_length_goes_on_while_the_supervisor_runs() {
    // `stop` drains every generation and sends nothing until it is done; the server here
    // (this process) is running, so the client keeps waiting.
    let dir = tempfile::tempdir().expect("tempdir");
    let done = Reply::result(
        1,
        ReplyResult::Done {
            message: "stopped".into(),
        },
    );
    let path = scripted(&dir, vec![Step::Pause(SHORT * 3), Step::Send(done.clone())]);
    let mut client = Client::connect_within(&path, SHORT).await.expect("connect");
    assert_eq!(client.call(Op::Stop, |_| {}).await.expect("stopped"), done);
}

#[test]
fn only_root_and_our_own_uid_are_trusted_to_serve() {
    assert!(trusted(0, 1000));
    assert!(trusted(1000, 1000));
    assert!(trusted(0, 0));
    assert!(!trusted(65534, 0));
    assert!(!trusted(1001, 1000));
}

#[test]
fn permission_denied_names_the_owner_and_who_may_control_the_service() {
    let socket = Path::new("/run/zdctl/api.sock");
    let owned = |uid| Owner {
        path: socket.to_path_buf(),
        uid,
    };
    assert_eq!(
        permission_denied(socket, Some(&owned(0))),
        "permission denied on the control socket '/run/zdctl/api.sock', which belongs to \
         uid 0 (root): only root may control this service; run the command as root"
    );
    let other = permission_denied(socket, Some(&owned(4_000_000)));
    assert_eq!(
        other,
        "permission denied on the control socket '/run/zdctl/api.sock', which belongs to \
         uid 4000000: only root and uid 4000000 may control this service; run the command \
         as one of them"
    );
    let dir = Owner {
        path: PathBuf::from("/run/zdctl"),
        uid: 0,
    };
    assert_eq!(
        permission_denied(socket, Some(&dir)),
        "permission denied on the control socket '/run/zdctl/api.sock': '/run/zdctl' \
         belongs to uid 0 (root) and is closed to you; only root and the user that runs the \
         supervisor may control this service"
    );
}
