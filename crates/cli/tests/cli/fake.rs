//! A test environment (its own runtime and config directories) and a fake supervisor: a
//! real control socket served by zd-core's `ControlServer`, answering each request with a
//! scripted list of steps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use zd_core::proto::{
    ControlServer, ErrorReply, Event, EventKind, Op, PeerPolicy, Reply, ReplyResult, request_queue,
};

/// One thing the fake does in answer to a request.
#[derive(Debug, Clone)]
pub enum Step {
    Event(EventKind),
    Result(ReplyResult),
    Error(ErrorReply),
    Sleep(Duration),
}

/// Temp directories for one test; `zdctl()` runs the binary inside them.
pub struct TestEnv {
    dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("run")).expect("runtime dir");
        std::fs::create_dir_all(dir.path().join("services.d")).expect("config dir");
        TestEnv { dir }
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("services.d")
    }

    /// Writes a service file `NAME.yaml` with `text`.
    pub fn service_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.config_dir().join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write service file");
        path
    }

    /// Leaves a control socket file that nothing answers on, as a crashed supervisor does.
    pub fn stale_socket(&self, name: &str) {
        let path = self.runtime_dir().join(format!("{name}.sock"));
        drop(std::os::unix::net::UnixListener::bind(path).expect("bind"));
    }

    /// `zdctl ARGS` confined to this environment's directories.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zdctl"));
        command
            .args(args)
            .env("ZDCTL_RUNTIME_DIR", self.runtime_dir())
            .env("ZDCTL_CONFIG_DIR", self.config_dir())
            .env("HOME", self.dir.path())
            .env_remove("ZD_LOG");
        command
    }

    /// Runs `zdctl ARGS` to completion.
    pub fn zdctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run zdctl")
    }

    /// Serves `name`'s control socket, answering each request with `script(op)`.
    pub fn fake(
        &self,
        name: &str,
        script: impl Fn(&Op) -> Vec<Step> + Send + Sync + 'static,
    ) -> FakeSupervisor {
        FakeSupervisor::start(&self.runtime_dir().join(format!("{name}.sock")), script)
    }
}

/// A fake supervisor running on its own thread until dropped.
pub struct FakeSupervisor {
    requests: Arc<Mutex<Vec<Op>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSupervisor {
    fn start(
        socket: &Path,
        script: impl Fn(&Op) -> Vec<Step> + Send + Sync + 'static,
    ) -> FakeSupervisor {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<()>();
        let socket = socket.to_path_buf();
        let script = Arc::new(script);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let server = ControlServer::bind(&socket).await.expect("bind fake");
                let (tx, mut rx) = request_queue(16);
                tokio::spawn(server.serve(PeerPolicy::current(), tx));
                bound_tx.send(()).expect("signal bound");
                let answer = async move {
                    while let Some(req) = rx.recv().await {
                        seen.lock().expect("lock").push(req.op.clone());
                        let steps = script(&req.op);
                        tokio::spawn(async move {
                            for step in steps {
                                let reply = match step {
                                    Step::Event(kind) => Reply::event(req.id, event(kind)),
                                    Step::Result(result) => Reply::result(req.id, result),
                                    Step::Error(error) => Reply::Error {
                                        v: 1,
                                        id: req.id,
                                        error,
                                    },
                                    Step::Sleep(d) => {
                                        tokio::time::sleep(d).await;
                                        continue;
                                    }
                                };
                                if req.replies.send(reply).await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = answer => {}
                    _ = stop_rx => {}
                }
            });
        });
        bound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the fake supervisor binds its socket");
        FakeSupervisor {
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Op> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FakeSupervisor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn event(kind: EventKind) -> Event {
    Event {
        unix_ms: 1_800_000_000_000,
        restart: Some(3),
        elapsed_ms: Some(12),
        elapsed_us: Some(12_345),
        kind,
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing everything the command printed when it differs.
#[track_caller]
pub fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "unexpected exit status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}
