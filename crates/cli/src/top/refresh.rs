//! Taking every watched service's snapshot on the collector thread, and running a restart
//! on its own thread. Neither ever runs on the UI thread: a supervisor that does not answer
//! holds one of them until the client's deadline, never the screen.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use zd_core::inspect::{Inspector, SocketSource};
use zd_core::paths;
use zd_core::proto::{Client, ClientError, Op, Reply, ReplyResult};

use super::Update;
use super::app::{RestartUpdate, ServiceState};
use crate::control;
use crate::status;

/// What `top` watches: the names given (every running service when none are) and `--pid`.
pub struct Refresher {
    names: Vec<String>,
    pid: Option<i32>,
    inspector: Inspector,
    runtime: tokio::runtime::Runtime,
}

impl Refresher {
    pub fn new(names: Vec<String>, pid: Option<i32>) -> anyhow::Result<Refresher> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Refresher {
            names,
            pid,
            // One inspector for the whole run: it caches fd tables and keeps the previous
            // CPU ticks, which make the next snapshot cheap and give CPU %.
            inspector: Inspector::new(SocketSource::default()),
            runtime,
        })
    }

    /// One snapshot per service. A service that does not answer is listed with the reason
    /// when it was named, and left out when it was found by looking at the runtime dir.
    pub fn refresh(&mut self) -> Vec<ServiceState> {
        let named = !self.names.is_empty() || self.pid.is_some();
        let names = if named {
            self.names.clone()
        } else {
            paths::socket_services()
        };
        let mut services = Vec::with_capacity(names.len() + 1);
        // All at once: one supervisor that does not answer delays the refresh by one
        // deadline, not one per service.
        let statuses = self.runtime.block_on(fetch_all(&names, named));
        for (name, status) in names.into_iter().zip(statuses) {
            let snapshot = match status {
                Ok(status) => self
                    .inspector
                    .snapshot_native(&status)
                    .map_err(|e| error_chain(&e.into())),
                Err(Skip::Stale) => continue,
                Err(Skip::Error(message)) => Err(message),
            };
            services.push(ServiceState {
                name,
                restartable: true,
                snapshot,
            });
        }
        if let Some(pid) = self.pid {
            let name = format!("pid:{pid}");
            let snapshot = self
                .inspector
                .snapshot_tree(&name, pid)
                .map_err(|e| error_chain(&e.into()));
            services.push(ServiceState {
                name,
                restartable: false,
                snapshot,
            });
        }
        services
    }
}

/// Takes a snapshot now and then every `interval`, sending each to the UI, until the UI is
/// gone.
pub fn spawn_collector(mut refresher: Refresher, interval: Duration, updates: Sender<Update>) {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        loop {
            if updates.send(Update::Snapshot(refresher.refresh())).is_err() {
                return;
            }
            // Keep the beat; after a stall (a slow snapshot, a supervisor that did not
            // answer) start again from now.
            let now = Instant::now();
            next += interval;
            if next <= now {
                next = now + interval;
            }
            std::thread::sleep(next - now);
        }
    });
}

/// The status of each of `names`, in order, fetched concurrently.
async fn fetch_all(names: &[String], named: bool) -> Vec<Result<zd_core::proto::Status, Skip>> {
    let mut fetches = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let name = name.clone();
        fetches.spawn(async move { (i, fetch_status(&name, named).await) });
    }
    let mut statuses: Vec<Option<Result<_, Skip>>> = names.iter().map(|_| None).collect();
    while let Some(done) = fetches.join_next().await {
        if let Ok((i, status)) = done {
            statuses[i] = Some(status);
        }
    }
    statuses
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err(Skip::Error("taking the status failed".to_owned()))))
        .collect()
}

enum Skip {
    /// A control socket nobody answers on: a supervisor that died without cleaning up.
    Stale,
    Error(String),
}

/// The status of `name`. A service that is not running shows why when it was `named`; a
/// discovered one whose socket is stale is simply left out.
async fn fetch_status(name: &str, named: bool) -> Result<zd_core::proto::Status, Skip> {
    let mut client = match Client::connect(&paths::control_socket(name)).await {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) if !named => return Err(Skip::Stale),
        Err(ClientError::NotRunning { .. }) => {
            // Say whether the service exists at all, as `zdctl status` does.
            return Err(match control::connect(name).await {
                Err(e) => Skip::Error(error_chain(&e)),
                Ok(_) => Skip::Stale,
            });
        }
        Err(e) => return Err(Skip::Error(error_chain(&control::client_error(name, e)))),
    };
    status::fetch(&mut client, name)
        .await
        .map_err(|e| Skip::Error(error_chain(&e)))
}

fn error_chain(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

/// Runs a restart of `name` on its own thread, sending each event and then the report to
/// `updates`.
pub fn spawn_restart(name: String, updates: Sender<Update>) {
    std::thread::spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(restart(&name, &updates)));
        let finished = RestartUpdate::Finished(result.map_err(|e| error_chain(&e)));
        let _ = updates.send(Update::Restart(finished));
    });
}

async fn restart(
    name: &str,
    updates: &Sender<Update>,
) -> anyhow::Result<zd_core::proto::RestartReport> {
    let mut client = control::connect(name).await?;
    let id = client
        .send(Op::Restart {
            ready_timeout_ms: None,
            attach: false,
        })
        .await
        .map_err(|e| control::client_error(name, e))?;
    loop {
        let reply = client
            .next_reply()
            .await
            .map_err(|e| control::client_error(name, e))?;
        if !reply_for(&reply, id) {
            continue;
        }
        match reply {
            Reply::Event { event, .. } => {
                let _ = updates.send(Update::Restart(RestartUpdate::Event(*event)));
            }
            Reply::Result { result, .. } => {
                return match *result {
                    ReplyResult::Restart(report) => Ok(report),
                    other => Err(control::unexpected(name, &other)),
                };
            }
            Reply::Error { error, .. } => return Err(control::reply_error(name, &error)),
        }
    }
}

/// Whether `reply` answers request `id` (0 answers a request that could not be read).
fn reply_for(reply: &Reply, id: u64) -> bool {
    match reply {
        Reply::Event { id: rid, .. } => *rid == id,
        Reply::Result { id: rid, .. } | Reply::Error { id: rid, .. } => *rid == id || *rid == 0,
    }
}
