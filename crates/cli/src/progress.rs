//! Showing a restart's (or a stop's) events as they happen.
//!
//! Each event is a finished phase, printed as one line on stderr (`[  12ms] spawned
//! generation 8 (pid 1234)`), and says what the supervisor waits for next. On a terminal an
//! indicatif spinner under those lines shows that wait with a running clock; when stderr is
//! not a terminal, or with `--json`, there is no spinner and the lines are plain.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use zd_core::proto::{Event, EventKind};

use crate::output::{exit_status, millis};

/// The line for a finished phase, or `None` for events the final line covers.
pub fn phase_line(kind: &EventKind) -> Option<String> {
    Some(match kind {
        EventKind::RestartRequested => "restart requested".to_owned(),
        EventKind::ConfigReloaded { path } => format!("service file '{path}' read again"),
        EventKind::Spawned { generation, pid } => {
            format!("spawned generation {generation} (pid {pid})")
        }
        EventKind::WaitingReady {
            generation, checks, ..
        } => format!(
            "waiting for generation {generation} to be ready ({})",
            checks.join(", ")
        ),
        EventKind::Ready {
            generation,
            evidence,
        } => format!("generation {generation} ready: {evidence}"),
        EventKind::Promoted { generation, pid } => {
            format!("promoted generation {generation} (pid {pid})")
        }
        EventKind::Draining {
            generation,
            pid,
            signal,
            deadline_ms,
        } => format!(
            "draining generation {generation} (pid {pid}): sent {signal}, deadline {}",
            millis(*deadline_ms)
        ),
        EventKind::Killed { generation, pid } => format!(
            "generation {generation} (pid {pid}) missed its drain deadline: killed with SIGKILL"
        ),
        EventKind::Exited {
            generation,
            pid,
            status,
        } => format!(
            "generation {generation} (pid {pid}) exited: {}",
            exit_status(*status)
        ),
        // The final line says how the restart ended.
        EventKind::Finished { .. } => return None,
        EventKind::Respawning {
            generation,
            delay_ms,
        } => format!(
            "generation {generation} died; respawning in {}",
            millis(*delay_ms)
        ),
        EventKind::Signalled {
            generation,
            pid,
            signal,
        } => format!("sent {signal} to generation {generation} (pid {pid})"),
        EventKind::Stopping => "stopping every generation".to_owned(),
        EventKind::Failing {
            failed_starts,
            window_ms,
            ..
        } => format!(
            "{failed_starts} starts failed within {}: failing, nothing is respawned until \
             the next restart",
            millis(*window_ms)
        ),
        EventKind::InstanceReady {
            generation,
            instance,
            pid,
            evidence,
        } => format!("generation {generation} instance {instance} ready (pid {pid}): {evidence}"),
        EventKind::Step {
            generation,
            step,
            of,
        } => {
            format!("step {step}/{of}: generation {generation} has {step} of {of} instances ready")
        }
        EventKind::Baking {
            generation,
            old_generation,
            bake_ms,
            checks,
        } => {
            let mut line = format!(
                "baking generation {generation} for {} (old generation {old_generation} keeps \
                 serving)",
                millis(*bake_ms)
            );
            if !checks.is_empty() {
                line.push_str(&format!(": checks {}", checks.join(", ")));
            }
            line
        }
        EventKind::Reverted {
            generation,
            old_generation,
            reason,
        } => format!(
            "reverted to generation {old_generation}, draining generation {generation}: {reason}"
        ),
        EventKind::InstanceRespawning {
            generation,
            instance,
            delay_ms,
        } => format!(
            "generation {generation} instance {instance} died; respawning it in {}",
            millis(*delay_ms)
        ),
        _ => return None,
    })
}

/// What the supervisor waits for after `kind`: the spinner's message.
pub fn waiting_for(kind: &EventKind) -> Option<String> {
    Some(match kind {
        EventKind::RestartRequested | EventKind::ConfigReloaded { .. } => {
            "starting the new generation".to_owned()
        }
        EventKind::Spawned { generation, .. } => {
            format!("waiting for generation {generation} to be ready")
        }
        EventKind::WaitingReady { checks, .. } => {
            format!("waiting for readiness ({})", checks.join(", "))
        }
        EventKind::Ready { generation, .. } => format!("promoting generation {generation}"),
        EventKind::Promoted { .. } => "draining the old generation".to_owned(),
        EventKind::Draining {
            generation,
            signal,
            deadline_ms,
            ..
        } => format!(
            "draining generation {generation} ({signal}, deadline {})",
            millis(*deadline_ms)
        ),
        EventKind::Killed { generation, .. } => format!("waiting for generation {generation}"),
        EventKind::Stopping => "waiting for every generation to exit".to_owned(),
        EventKind::Step {
            generation,
            step,
            of,
        } if step < of => format!("replacing the next instance with generation {generation}"),
        EventKind::Baking {
            generation,
            old_generation,
            bake_ms,
            ..
        } => format!(
            "baking generation {generation} for {} ('zdctl revert' keeps generation \
             {old_generation})",
            millis(*bake_ms)
        ),
        EventKind::Reverted { generation, .. } => format!("draining generation {generation}"),
        _ => return None,
    })
}

/// Where the phase lines go.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    started: Instant,
}

impl Progress {
    /// A spinner when stderr is a terminal and `quiet` is false; plain lines otherwise;
    /// nothing at all when `quiet` (`--json`, where stdout carries the events).
    pub fn new(quiet: bool, initial: &str) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_message(initial.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            quiet,
            started: Instant::now(),
        }
    }

    /// Shows `event`: its line above the spinner, and the next wait in it.
    pub fn event(&self, event: &Event) {
        if self.quiet {
            return;
        }
        let elapsed = event
            .elapsed_ms
            .unwrap_or_else(|| u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0));
        if let Some(line) = phase_line(&event.kind) {
            self.println(&format!("[{:>6}] {line}", millis(elapsed)));
        }
        if let (Some(bar), Some(waiting)) = (&self.bar, waiting_for(&event.kind)) {
            bar.set_message(waiting);
        }
    }

    /// A line on stderr that does not tear the spinner.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            None => {}
        }
    }

    /// Removes the spinner before the final line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zd_core::proto::ExitInfo;

    #[test]
    fn each_phase_of_a_restart_reads_as_one_line() {
        let lines: Vec<String> = [
            EventKind::Spawned {
                generation: 8,
                pid: 1234,
            },
            EventKind::WaitingReady {
                generation: 8,
                checks: vec!["accepting".into()],
                timeout_ms: Some(30_000),
            },
            EventKind::Ready {
                generation: 8,
                evidence: "pid 1234 waits in accept4 on fd 3".into(),
            },
            EventKind::Promoted {
                generation: 8,
                pid: 1234,
            },
            EventKind::Draining {
                generation: 7,
                pid: 1100,
                signal: "SIGTERM".into(),
                deadline_ms: 30_000,
            },
            EventKind::Exited {
                generation: 7,
                pid: 1100,
                status: ExitInfo::Signal { signal: 15 },
            },
        ]
        .iter()
        .filter_map(phase_line)
        .collect();
        assert_eq!(
            lines,
            [
                "spawned generation 8 (pid 1234)",
                "waiting for generation 8 to be ready (accepting)",
                "generation 8 ready: pid 1234 waits in accept4 on fd 3",
                "promoted generation 8 (pid 1234)",
                "draining generation 7 (pid 1100): sent SIGTERM, deadline 30s",
                "generation 7 (pid 1100) exited: killed by SIGTERM (143)",
            ]
        );
    }

    #[test]
    fn instances_steps_a_bake_and_a_revert_read_as_one_line_each() {
        let lines: Vec<String> = [
            EventKind::InstanceReady {
                generation: 5,
                instance: 2,
                pid: 812,
                evidence: "accepting".into(),
            },
            EventKind::Step {
                generation: 5,
                step: 2,
                of: 4,
            },
            EventKind::Baking {
                generation: 5,
                old_generation: 4,
                bake_ms: 5_000,
                checks: vec!["http://127.0.0.1:8080/health".into()],
            },
            EventKind::Baking {
                generation: 5,
                old_generation: 4,
                bake_ms: 5_000,
                checks: Vec::new(),
            },
            EventKind::Reverted {
                generation: 5,
                old_generation: 4,
                reason: "check http://127.0.0.1:8080/health failed: 503".into(),
            },
            EventKind::InstanceRespawning {
                generation: 5,
                instance: 1,
                delay_ms: 100,
            },
        ]
        .iter()
        .filter_map(phase_line)
        .collect();
        assert_eq!(
            lines,
            [
                "generation 5 instance 2 ready (pid 812): accepting",
                "step 2/4: generation 5 has 2 of 4 instances ready",
                "baking generation 5 for 5s (old generation 4 keeps serving): checks \
                 http://127.0.0.1:8080/health",
                "baking generation 5 for 5s (old generation 4 keeps serving)",
                "reverted to generation 4, draining generation 5: check \
                 http://127.0.0.1:8080/health failed: 503",
                "generation 5 instance 1 died; respawning it in 100ms",
            ]
        );
    }

    #[test]
    fn the_spinner_names_what_the_supervisor_waits_for() {
        let kind = EventKind::Draining {
            generation: 7,
            pid: 1100,
            signal: "SIGTERM".into(),
            deadline_ms: 30_000,
        };
        assert_eq!(
            waiting_for(&kind).as_deref(),
            Some("draining generation 7 (SIGTERM, deadline 30s)")
        );
    }
}
