//! Probes that retry until they pass: `http:`, `tcp:` and `exec:`. The caller bounds them
//! with the readiness timeout, so they loop without a deadline of their own.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ReadyContext;

const RETRY: Duration = Duration::from_millis(50);

pub(super) async fn wait_tcp(addr: &str) {
    loop {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One TCP connect to `addr`.
pub(super) async fn tcp_once(addr: &str) -> Result<(), String> {
    TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

pub(super) async fn wait_http(host: &str, port: u16, path: &str) {
    loop {
        if let Ok(Ok(true)) =
            tokio::time::timeout(Duration::from_secs(2), http_ok(host, port, path)).await
        {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One GET, which must answer 2xx.
pub(super) async fn http_once(host: &str, port: u16, path: &str) -> Result<(), String> {
    match http_ok(host, port, path).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("it answered, but not 2xx".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

async fn http_ok(host: &str, port: u16, path: &str) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect((host, port)).await?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: zdctl-ready\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    // "HTTP/1.x 2xx"
    Ok(head.starts_with(b"HTTP/1.") && head[9] == b'2')
}

pub(super) async fn wait_exec(command: &str, ctx: &ReadyContext) {
    loop {
        if exec_once(command, ctx).await.is_ok() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One run of `command`, which must exit 0.
pub(super) async fn exec_once(command: &str, ctx: &ReadyContext) -> Result<(), String> {
    {
        let mut check = tokio::process::Command::new("/bin/sh");
        check
            .arg("-c")
            .arg(command)
            .env("ZD_PID", ctx.pid.to_string())
            .env("ZD_GENERATION", ctx.generation.to_string())
            .env("ZD_INSTANCE", ctx.instance.to_string())
            .env("ZD_SERVICE", &ctx.service)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // Listed as our own child while it runs: the supervisor's orphan reaper must leave
        // its exit status to tokio.
        let spawned = {
            let mut own = crate::contain::OwnChildren::get().lock();
            check.spawn().inspect(|child| {
                if let Some(pid) = child.id() {
                    own.insert(pid as i32);
                }
            })
        };
        let status = match spawned {
            Ok(mut child) => {
                // Off the list when the check ends, also when it is dropped for a timeout
                // (then kill_on_drop ends the child and tokio reaps it).
                let _listed = child.id().map(|pid| crate::contain::Listed(pid as i32));
                child.wait().await
            }
            Err(e) => Err(e),
        };
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("it ended with {s}")),
            Err(e) => Err(e.to_string()),
        }
    }
}
