//! `zdctl demo`: with nothing else installed, supervise the built-in demo service on a free
//! loopback port, verify ten restarts under load, print the report and clean up every
//! process and file it made, on Ctrl-C too.
//!
//! The supervisor is a child `zdctl run` in its own process group (so Ctrl-C reaches only
//! us and we decide how it stops), with `ZDCTL_RUNTIME_DIR` in a temporary directory that
//! holds its control socket and log. Each generation is `zdctl demo-server`: the `zd-demo`
//! crate compiled into this binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::process::{Child, Command};
use zd_core::proto::{Client, Op, Reply, ReplyResult};
use zd_load::load::{ConnectionMode, LoadConfig, Target};
use zd_load::verify::{Restarter, VerifyConfig};

use crate::exit::ExitError;
use crate::verify;

/// How long the supervisor may take to answer, and to stop.
const DEADLINE: Duration = Duration::from_secs(15);
/// The exit code after Ctrl-C (128 + SIGINT).
const INTERRUPTED: u8 = 130;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many restarts.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub restarts: u32,

    /// Draw latency and throughput over time, each flip marked, into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Print the report as one JSON object (the shape of `zdctl verify --json`).
    #[arg(long)]
    pub json: bool,
}

/// `zdctl demo-server ARGS`: the demo service itself.
pub fn server(args: Vec<OsString>) -> anyhow::Result<()> {
    match zd_demo::run_with_args(args) {
        0 => Ok(()),
        code => Err(ExitError::with_code(
            u8::try_from(code).unwrap_or(1),
            String::new(),
        )),
    }
}

pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo_async(args))
}

async fn demo_async(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("zdctl-demo-")
        .tempdir()
        .context("cannot create a temporary directory for the demo")?;
    let name = format!("zd-demo-{}", std::process::id());
    let socket = dir.path().join(format!("{name}.sock"));
    let mut supervisor = start_supervisor(&name, dir.path())?;
    let outcome = tokio::select! {
        result = run_demo(&args, &name, &socket, &mut supervisor) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    stop_supervisor(&socket, &mut supervisor).await;
    let log = std::fs::read_to_string(dir.path().join("supervisor.log")).unwrap_or_default();
    dir.close()
        .context("cannot remove the demo's temporary directory")?;
    match outcome {
        None => Err(ExitError::with_code(
            INTERRUPTED,
            "interrupted; the demo service was stopped and its files removed",
        )),
        Some(Err(e)) if !log.is_empty() => Err(e.context(format!("the supervisor's log:\n{log}"))),
        Some(result) => result,
    }
}

fn start_supervisor(name: &str, dir: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the zdctl executable")?;
    let log = std::fs::File::create(dir.join("supervisor.log"))
        .context("cannot create the demo's log file")?;
    let log2 = log
        .try_clone()
        .context("cannot create the demo's log file")?;
    Command::new(&exe)
        .args(["run", "--name", name, "--listen", "127.0.0.1:0", "--"])
        .arg(&exe)
        .arg("demo-server")
        .env("ZDCTL_RUNTIME_DIR", dir)
        .env_remove("ZD_LOG")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: Ctrl-C in the terminal reaches only us, and we stop it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start '{} run'", exe.display()))
}

async fn run_demo(
    args: &DemoArgs,
    name: &str,
    socket: &Path,
    supervisor: &mut Child,
) -> anyhow::Result<()> {
    let address = wait_active(socket, supervisor).await?;
    let target: Target = format!("http://{address}/")
        .parse()
        .with_context(|| format!("the demo listens on an unexpected address '{address}'"))?;
    let mut load = LoadConfig::new(target);
    load.concurrency = 8;
    load.mode = ConnectionMode::KeepAlive;
    load.duration = Some(Duration::from_secs(3));
    let config = VerifyConfig {
        load,
        restarter: Restarter::Service {
            name: name.to_owned(),
            socket: Some(socket.to_path_buf()),
        },
        restarts: args.restarts,
        interval: Duration::from_millis(250),
    };
    if !args.json {
        crate::output::line(&format!(
            "demo: 'zdctl run' supervises the demo service on http://{address}/; restarting it \
             {} times under load",
            args.restarts
        ))?;
    }
    let verification = verify::run(config, &format!("'{name}'"), args.json).await?;
    if let Some(file) = &args.plot {
        verify::plot::draw(file, &verification)?;
    }
    verify::print_report(&verification.report, args.json)?;
    verify::verdict(&verification.report)
}

/// Waits until the supervisor answers with an active generation; returns its address.
async fn wait_active(socket: &Path, supervisor: &mut Child) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        if let Some(status) = supervisor.try_wait()? {
            return Err(ExitError::failure(format!(
                "the demo supervisor exited early ({status})"
            )));
        }
        if let Ok(mut client) = Client::connect(socket).await
            && let Ok(Reply::Result { result, .. }) = client.call(Op::Status, |_| {}).await
            && let ReplyResult::Status(status) = *result
            && status.active_generation.is_some()
            && let Some(listener) = status.listeners.first()
        {
            return Ok(listener.address.clone());
        }
        if started.elapsed() > DEADLINE {
            return Err(ExitError::failure(format!(
                "the demo supervisor did not start within {}s",
                DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the supervisor to stop (it drains and ends every generation), waits for it, and
/// kills it if it does not end in time.
async fn stop_supervisor(socket: &Path, supervisor: &mut Child) {
    if let Ok(Ok(mut client)) = tokio::time::timeout(DEADLINE, Client::connect(socket)).await {
        let _ = tokio::time::timeout(DEADLINE, client.call(Op::Stop, |_| {})).await;
    }
    if tokio::time::timeout(DEADLINE, supervisor.wait())
        .await
        .is_err()
    {
        let _ = supervisor.kill().await;
    }
}
