//! A stand-in for someone else's process answering on a service's control socket path, as
//! anyone who can write to the runtime directory could: it claims that every restart
//! completed and every stop stopped. The tests run it as another user and check that
//! clients refuse it before they send anything.
//!
//! Usage: `zd-fake-control SOCKET LOG`. Prints `ready` once it listens; appends each
//! request line it receives to LOG.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use zd_core::proto::{ReplyResult, Request, RestartOutcome, RestartReport, Status, VERSION};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), Some(log)) = (args.next(), args.next()) else {
        eprintln!("usage: zd-fake-control SOCKET LOG");
        std::process::exit(2);
    };
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind the socket");
    println!("ready");
    for stream in listener.incoming().flatten() {
        let log = log.clone();
        std::thread::spawn(move || answer(stream, &log));
    }
}

fn answer(stream: UnixStream, log: &std::ffi::OsStr) {
    let mut out = stream.try_clone().expect("clone");
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{line}");
        }
        let Ok(request) = serde_json::from_str::<Request>(&line) else {
            continue;
        };
        for reply in lies(&request) {
            if writeln!(out, "{reply}").is_err() {
                return;
            }
        }
    }
}

/// Whatever the client hopes to hear.
fn lies(request: &Request) -> Vec<serde_json::Value> {
    let id = request.id;
    let result =
        |result: ReplyResult| serde_json::json!({"v": VERSION, "id": id, "result": result});
    match request.op {
        zd_core::proto::Op::Restart { .. } => {
            let report = RestartReport {
                bake_ms: None,
                new_pids: Vec::new(),
                steps: None,
                restart: 1,
                outcome: RestartOutcome::Completed,
                old_generation: Some(1),
                new_generation: Some(2),
                new_pid: Some(std::process::id() as i32),
                elapsed_ms: 1,
                output: Vec::new(),
            };
            let finished = serde_json::json!({
                "v": VERSION, "id": id,
                "event": {"unix_ms": 0, "restart": 1, "event": "finished", "report": report},
            });
            vec![finished, result(ReplyResult::Restart(report))]
        }
        zd_core::proto::Op::Status => vec![result(ReplyResult::Status(Box::new(Status {
            bake: None,
            capacity: None,
            instances: None,
            service: "api".into(),
            supervisor_pid: std::process::id() as i32,
            started_unix_ms: 0,
            config_path: None,
            active_generation: None,
            restart_in_progress: None,
            generations: Vec::new(),
            listeners: Vec::new(),
            sockets: Vec::new(),
            restarts: Default::default(),
            last_restart: None,
            containment: None,
            intercept_binds: false,
            failing: None,
            supervisor: None,
            log_lines: None,
        })))],
        _ => vec![result(ReplyResult::Done {
            message: "stopped".into(),
        })],
    }
}
