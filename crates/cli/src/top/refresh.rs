//! Taking every watched service's snapshot on the collector thread, and running a restart
//! on its own thread. Neither ever runs on the UI thread: a supervisor that does not answer
//! holds one of them until the client's deadline, never the screen.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use zd_core::inspect::{Inspector, SocketSource};
use zd_core::proto::RestartReport;
use zd_core::service::{self, RestartOptions, Restarted, Service, ServiceError};

use super::Update;
use super::app::{RestartUpdate, ServiceState};
use crate::control;

/// What `top` watches: the names given (every service that runs when none are, whoever
/// runs it) and `--pid`.
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

    /// One snapshot per service. A service that is not running is listed with the reason
    /// when it was named, and left out when it was found by looking around.
    pub fn refresh(&mut self) -> Vec<ServiceState> {
        let named = !self.names.is_empty() || self.pid.is_some();
        let mut services = Vec::with_capacity(self.names.len() + 1);
        let mut opened = Vec::new();
        if named {
            for name in &self.names {
                match Service::open(name) {
                    Ok(service) => opened.push(service),
                    Err(err) => services.push(ServiceState {
                        name: name.clone(),
                        // `r` says why the name cannot be used.
                        restartable: true,
                        snapshot: Err(error_chain(err)),
                    }),
                }
            }
        } else {
            opened = service::discover()
                .into_iter()
                .filter_map(|found| found.service)
                .collect();
        }
        // All at once: one supervisor that does not answer delays the refresh by one
        // deadline, not one per service.
        let statuses = self.runtime.block_on(service::statuses(opened));
        for (service, status) in statuses {
            let snapshot = match status {
                Ok(status) => service
                    .snapshot(&mut self.inspector, &status.status)
                    .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
                Err(err) if !named && err.is_not_running() => continue,
                Err(err) => Err(error_chain(err)),
            };
            services.push(ServiceState {
                name: service.name().to_owned(),
                restartable: true,
                snapshot,
            });
        }
        if let Some(pid) = self.pid {
            let name = format!("pid:{pid}");
            let snapshot = self
                .inspector
                .snapshot_tree(&name, pid)
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
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

fn error_chain(err: ServiceError) -> String {
    format!("{:#}", control::service_error(err))
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
        let finished = RestartUpdate::Finished(result.map_err(|e| format!("{e:#}")));
        let _ = updates.send(Update::Restart(finished));
    });
}

async fn restart(name: &str, updates: &Sender<Update>) -> anyhow::Result<RestartReport> {
    let service = control::open(name)?;
    let restarted = service
        .restart(RestartOptions::default(), |event| {
            let _ = updates.send(Update::Restart(RestartUpdate::Event(event.clone())));
        })
        .await
        .map_err(control::service_error)?;
    match restarted {
        Restarted::Finished(report) => Ok(report),
        Restarted::Promoted(_) => unreachable!("the restart is followed to its end"),
    }
}
