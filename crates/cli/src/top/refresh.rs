//! Taking every watched service's snapshot (and the output pane's lines) on the collector
//! thread, and running a restart on its own thread. Neither ever runs on the UI thread: a
//! supervisor that does not answer holds one of them until the client's deadline, never
//! the screen.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use zd_core::inspect::{Inspector, SocketSource};
use zd_core::proto::{LogLine, RestartReport, Status};
use zd_core::service::{self, RestartOptions, Restarted, Service, ServiceError};

use super::Update;
use super::app::{RestartUpdate, ServiceState};
use super::output::{self, OutputRead, OutputTarget};
use crate::control;

/// What `top` watches: the names given (every service that runs when none are, whoever
/// runs it) and `--pid`.
pub struct Refresher {
    names: Vec<String>,
    pid: Option<i32>,
    inspector: Inspector,
    runtime: tokio::runtime::Runtime,
    /// The generation whose output the pane shows, while it is open.
    output: Option<OutputTarget>,
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
            output: None,
        })
    }

    /// One snapshot per service, and the output pane's lines while it is open. A service
    /// that is not running is listed with the reason when it was named, and left out when
    /// it was found by looking around.
    pub fn refresh(&mut self) -> (Vec<ServiceState>, Option<OutputRead>) {
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
        let mut read = None;
        for (service, status) in statuses {
            if let Some(target) = self.output.as_ref().filter(|t| t.service == service.name()) {
                let status = status.as_ref().map(|s| &s.status);
                read = Some(OutputRead {
                    target: target.clone(),
                    lines: self.read_output(&service, status, target.generation),
                });
            }
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
        let read = read.or_else(|| {
            let target = self.output.clone()?;
            let why = if services
                .iter()
                .any(|s| !s.restartable && s.name == target.service)
            {
                format!(
                    "'{}' is a process tree given with --pid: its programs print wherever \
                     they were started, which top does not read",
                    target.service
                )
            } else {
                format!("'{}' is not running", target.service)
            };
            Some(OutputRead {
                target,
                lines: Err(why),
            })
        });
        (services, read)
    }

    /// The last [`output::LINES`] lines `generation` printed, or why there are none to
    /// show.
    fn read_output(
        &self,
        service: &Service,
        status: Result<&Status, &ServiceError>,
        generation: u64,
    ) -> Result<Vec<LogLine>, String> {
        let status = status.map_err(ToString::to_string)?;
        if let Some(why) = unreadable(service.name(), service.driver(), status, generation) {
            return Err(why);
        }
        let mut lines = Vec::new();
        let mut after = None;
        let mut until = None;
        // A long answer holds the oldest part and says `more`: ask for the rest, up to
        // the newest line of the first answer. Each holds a line at least, so this ends
        // by the time it has all of them.
        for _ in 0..output::LINES {
            let report = self
                .runtime
                .block_on(service.logs(Some(generation), after, until, Some(output::LINES)))
                .map_err(error_chain)?;
            lines.extend(report.lines);
            if !report.more {
                break;
            }
            after = Some(report.last_seq);
            until = Some(report.newest);
        }
        lines.drain(..lines.len().saturating_sub(output::LINES as usize));
        Ok(lines)
    }
}

/// Why the output of `generation` cannot be shown, when the status tells already: a driven
/// service's programs print to their own supervisor's output, and a supervisor keeps the
/// output of a generation only when `log.lines` was above 0 as it started. `None` when it
/// is worth asking (a generation the status does not list any more may still be kept).
pub fn unreadable(
    name: &str,
    driver: Option<&str>,
    status: &Status,
    generation: u64,
) -> Option<String> {
    if let Some(driver) = driver {
        return Some(format!(
            "'{name}' is run by {driver}: its programs print to {driver}'s own output or log \
             files, which top does not read"
        ));
    }
    let Some(log_lines) = status.log_lines else {
        return Some(format!(
            "the supervisor of '{name}' runs an older zdctl, which keeps no output; \
             'zdctl reexec {name}' updates it"
        ));
    };
    let info = status
        .generations
        .iter()
        .find(|g| g.generation == generation)?;
    match (info.output_lines, log_lines) {
        (Some(_), _) => None,
        (None, 0) => Some(format!(
            "generation {generation}'s output is not kept (log.lines: 0)"
        )),
        (None, _) => Some(format!(
            "generation {generation}'s output is not kept: it started while its supervisor \
             kept none"
        )),
    }
}

/// Takes a snapshot now and then every `interval`, sending each to the UI, until the UI is
/// gone. `watched` says which generation's output to read along, from the moment the
/// output pane opens on it (`Some`) until it closes (`None`).
pub fn spawn_collector(
    mut refresher: Refresher,
    interval: Duration,
    updates: Sender<Update>,
    watched: Receiver<Option<OutputTarget>>,
) {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        loop {
            let (services, read) = refresher.refresh();
            if updates.send(Update::Snapshot(services)).is_err() {
                return;
            }
            if let Some(read) = read
                && updates.send(Update::Output(read)).is_err()
            {
                return;
            }
            // Keep the beat; after a stall (a slow snapshot, a supervisor that did not
            // answer) start again from now.
            let now = Instant::now();
            next += interval;
            if next <= now {
                next = now + interval;
            }
            // Until the next beat, unless the pane opens: its first lines are read at
            // once, with a whole refresh, whose status says whether they are kept.
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                match watched.recv_timeout(wait) {
                    Ok(target) => {
                        let opened = target.is_some();
                        refresher.output = target;
                        if opened {
                            next = Instant::now();
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    // The UI is gone.
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
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
