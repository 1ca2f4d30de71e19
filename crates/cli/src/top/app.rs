//! The state of `zdctl top` and how keys, snapshots and restart events change it.
//!
//! Nothing here reads a clock, a socket or the terminal: the loop in [`super::run`] feeds
//! keys, snapshots and restart events in, and [`super::draw::draw`] reads the result. That
//! is what lets the drawing be tested on fixed snapshots.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use zd_core::inspect::{ConnectionView, Snapshot};
use zd_core::proto::{Event, EventKind, RestartOutcome, RestartReport};

use super::history::History;
use super::output::{OutputPane, OutputRead, OutputTarget, Scroll};
use crate::output::millis;
use crate::progress::phase_line;
use crate::restart::completed_line;

/// One service as the last refresh saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// The name shown in the list: a service name, or `pid:1234` for `--pid`.
    pub name: String,
    /// Whether `r` can restart it: every service can, whoever runs it; a process tree
    /// given with `--pid` cannot.
    pub restartable: bool,
    /// The snapshot, or why there is none (not running, permission…).
    pub snapshot: Result<Snapshot, String>,
}

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Restart this service (the user confirmed it).
    Restart(String),
    /// Read this generation's output at every refresh from now on; `None`: stop.
    WatchOutput(Option<OutputTarget>),
}

/// What is drawn over the main view, and takes the keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Main,
    /// The selected generation's connections, full screen.
    Detail,
    Help,
    /// Waiting for y/n before restarting this service.
    Confirm(String),
    /// Typing the filter after `/`.
    Filter,
    /// `o`: the output pane ([`App::output`]).
    Output,
}

/// A restart started from `top`, phase by phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartView {
    pub service: String,
    /// `[  12ms] spawned generation 8 (pid 1234)`, as `zdctl restart` prints them.
    pub lines: Vec<String>,
    /// The final line once the restart ended; `None` while it runs.
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    pub line: String,
}

/// What the restart thread sends.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartUpdate {
    Event(Event),
    /// The restart's report, or why it could not run.
    Finished(Result<RestartReport, String>),
}

#[derive(Debug, Default)]
pub struct App {
    pub services: Vec<ServiceState>,
    /// The selected service, by name, so that a refresh that adds or removes services keeps
    /// the selection on the same one.
    pub selected_service: Option<String>,
    /// The selected generation's number within the selected service.
    pub selected_generation: Option<u64>,
    /// And its instance, when the generation runs several (a row each).
    pub selected_instance: Option<u32>,
    /// Set once the user picks a generation; until then the selection follows the active
    /// generation, so that a flip moves it to the new one.
    pub pinned: bool,
    /// First row of the connection list in the detail view.
    pub scroll: usize,
    pub mode: Mode,
    /// Substring that service names and connections must contain.
    pub filter: String,
    pub restart: Option<RestartView>,
    /// The output pane, while it is open (in [`Mode::Output`]).
    pub output: Option<OutputPane>,
    /// In-flight connections per generation over the last minute, per service.
    pub history: History,
    /// The refresh interval, shown in the title bar.
    pub interval_ms: u64,
    /// False when NO_COLOR is set.
    pub color: bool,
    /// Whether a snapshot arrived yet: until then the list is empty for want of one.
    pub loaded: bool,
}

impl App {
    pub fn new(interval_ms: u64, color: bool) -> App {
        App {
            interval_ms,
            color,
            ..App::default()
        }
    }

    /// Takes a refresh: every service's new state.
    pub fn on_snapshot(&mut self, services: Vec<ServiceState>) {
        for service in &services {
            if let Ok(snapshot) = &service.snapshot {
                self.history.record(&service.name, snapshot);
            }
        }
        self.history
            .retain(|name| services.iter().any(|s| s.name == name));
        self.services = services;
        self.loaded = true;
        self.fix_selection();
    }

    /// Takes one update of the running restart.
    pub fn on_event(&mut self, update: RestartUpdate) {
        let Some(view) = &mut self.restart else {
            return;
        };
        match update {
            RestartUpdate::Event(event) => {
                if let Some(line) = phase_line(&event.kind) {
                    let at = event.elapsed_ms.map(millis).unwrap_or_default();
                    view.lines.push(format!("[{at:>6}] {line}"));
                }
                if let EventKind::Finished { report } = event.kind {
                    view.outcome = Some(outcome(&view.service, &report));
                }
            }
            RestartUpdate::Finished(Ok(report)) => {
                view.outcome = Some(outcome(&view.service, &report));
            }
            RestartUpdate::Finished(Err(message)) => {
                view.outcome = Some(Outcome {
                    success: false,
                    line: message,
                });
            }
        }
    }

    /// Takes what the collector read for the output pane.
    pub fn on_output(&mut self, read: OutputRead) {
        if let Some(pane) = &mut self.output {
            pane.on_read(read);
        }
    }

    /// Whether a restart started here still runs.
    pub fn restart_running(&self) -> bool {
        self.restart.as_ref().is_some_and(|r| r.outcome.is_none())
    }

    /// Takes a key; returns what the loop must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        match self.mode.clone() {
            Mode::Help => {
                self.mode = Mode::Main;
                (key.code == KeyCode::Char('q')).then_some(Action::Quit)
            }
            Mode::Confirm(service) => {
                self.mode = Mode::Main;
                if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                    self.restart = Some(RestartView {
                        service: service.clone(),
                        lines: Vec::new(),
                        outcome: None,
                    });
                    return Some(Action::Restart(service));
                }
                None
            }
            Mode::Filter => {
                match key.code {
                    KeyCode::Enter => self.mode = Mode::Main,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Main;
                    }
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) if !ctrl => self.filter.push(c),
                    _ => {}
                }
                self.fix_selection();
                None
            }
            Mode::Detail => {
                match key.code {
                    KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => self.mode = Mode::Main,
                    KeyCode::Char('q') => return Some(Action::Quit),
                    KeyCode::Down | KeyCode::Char('j') => {
                        self.scroll = self.scroll.saturating_add(1)
                    }
                    KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
                    KeyCode::PageDown => self.scroll = self.scroll.saturating_add(10),
                    KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(10),
                    KeyCode::Home | KeyCode::Char('g') => self.scroll = 0,
                    _ => return self.main_key(key),
                }
                None
            }
            Mode::Output => {
                match key.code {
                    KeyCode::Esc | KeyCode::Char('o') => return self.close_output(),
                    KeyCode::Char('q') => return Some(Action::Quit),
                    KeyCode::Up | KeyCode::Char('k') => self.scroll_output(Scroll::Up(1)),
                    KeyCode::Down | KeyCode::Char('j') => self.scroll_output(Scroll::Down(1)),
                    KeyCode::PageUp => self.scroll_output(Scroll::Up(10)),
                    KeyCode::PageDown => self.scroll_output(Scroll::Down(10)),
                    KeyCode::Home | KeyCode::Char('g') => self.scroll_output(Scroll::Oldest),
                    KeyCode::End | KeyCode::Char('G') => self.scroll_output(Scroll::Newest),
                    KeyCode::Char('?') => {
                        let closed = self.close_output();
                        self.mode = Mode::Help;
                        return closed;
                    }
                    _ => {}
                }
                None
            }
            Mode::Main => self.main_key(key),
        }
    }

    /// `o`: opens the output pane on the selected generation.
    fn open_output(&mut self) -> Option<Action> {
        let target = OutputTarget {
            service: self.service()?.name.clone(),
            generation: self.selected_generation?,
        };
        self.output = Some(OutputPane::new(target.clone()));
        self.mode = Mode::Output;
        Some(Action::WatchOutput(Some(target)))
    }

    fn close_output(&mut self) -> Option<Action> {
        self.output = None;
        self.mode = Mode::Main;
        Some(Action::WatchOutput(None))
    }

    fn scroll_output(&mut self, by: Scroll) {
        if let Some(pane) = &mut self.output {
            pane.scroll(by);
        }
    }

    fn main_key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Char('q') => return Some(Action::Quit),
            // Esc closes what is open first; with nothing open it quits.
            KeyCode::Esc => {
                if self.restart.as_ref().is_some_and(|r| r.outcome.is_some()) {
                    self.restart = None;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.fix_selection();
                } else if self.mode == Mode::Main {
                    return Some(Action::Quit);
                } else {
                    self.mode = Mode::Main;
                }
            }
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Enter if self.selected_generation.is_some() => {
                self.scroll = 0;
                self.mode = Mode::Detail;
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_generation(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_generation(-1),
            KeyCode::Right | KeyCode::Char('l') | KeyCode::Tab => self.move_service(1),
            KeyCode::Left | KeyCode::Char('h') | KeyCode::BackTab => self.move_service(-1),
            KeyCode::Char('r') => self.ask_restart(),
            KeyCode::Char('o') => return self.open_output(),
            _ => {}
        }
        None
    }

    fn ask_restart(&mut self) {
        let Some(service) = self.service() else {
            return;
        };
        if self.restart_running() {
            return;
        }
        if service.restartable {
            self.mode = Mode::Confirm(service.name.clone());
        } else {
            let name = service.name.clone();
            self.restart = Some(RestartView {
                service: name.clone(),
                lines: Vec::new(),
                outcome: Some(Outcome {
                    success: false,
                    line: format!(
                        "'{name}' is a process tree given with --pid, not a service: top \
                         cannot restart it; give the service's name instead ('zdctl top NAME')"
                    ),
                }),
            });
        }
    }

    /// The services the filter lets through, in refresh order: those whose name matches,
    /// and those with a listed connection that does.
    pub fn visible_services(&self) -> Vec<&ServiceState> {
        self.services
            .iter()
            .filter(|s| {
                self.filter.is_empty()
                    || s.name.contains(&self.filter)
                    || s.snapshot.as_ref().is_ok_and(|snapshot| {
                        snapshot
                            .generations
                            .iter()
                            .flat_map(|g| &g.connections)
                            .any(|c| connection_matches(c, &self.filter))
                    })
            })
            .collect()
    }

    /// What the selected service's connections must match: nothing when the filter
    /// matched the service's name.
    pub fn connection_filter(&self) -> &str {
        match self.service() {
            Some(s) if s.name.contains(&self.filter) => "",
            _ => &self.filter,
        }
    }

    /// The selected service, when one is visible.
    pub fn service(&self) -> Option<&ServiceState> {
        let name = self.selected_service.as_deref()?;
        self.visible_services().into_iter().find(|s| s.name == name)
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.service().and_then(|s| s.snapshot.as_ref().ok())
    }

    /// The selected generation's (or instance's) index in the selected snapshot.
    pub fn generation_index(&self) -> Option<usize> {
        let wanted = self.selected_generation?;
        self.snapshot()?
            .generations
            .iter()
            .position(|g| g.generation == wanted && g.instance == self.selected_instance)
    }

    fn move_service(&mut self, step: isize) {
        let names: Vec<String> = self
            .visible_services()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let Some(at) = self
            .selected_service
            .as_ref()
            .and_then(|n| names.iter().position(|m| m == n))
        else {
            return;
        };
        let next = at
            .saturating_add_signed(step)
            .min(names.len().saturating_sub(1));
        if next != at {
            self.selected_service = names.get(next).cloned();
            self.selected_generation = None;
            self.selected_instance = None;
            self.pinned = false;
            self.fix_selection();
        }
    }

    fn move_generation(&mut self, step: isize) {
        let Some(snapshot) = self.snapshot() else {
            return;
        };
        let count = snapshot.generations.len();
        let at = self.generation_index().unwrap_or(0);
        let next = at.saturating_add_signed(step).min(count.saturating_sub(1));
        let row = snapshot
            .generations
            .get(next)
            .map(|g| (g.generation, g.instance));
        self.selected_generation = row.map(|(generation, _)| generation);
        self.selected_instance = row.and_then(|(_, instance)| instance);
        self.pinned = true;
    }

    /// Keeps the selection on something that exists: the same service and generation when
    /// they still do, else the first visible service and its active (newest) generation.
    fn fix_selection(&mut self) {
        if self.service().is_none() {
            self.selected_service = self.visible_services().first().map(|s| s.name.clone());
            self.selected_generation = None;
            self.selected_instance = None;
            self.pinned = false;
        }
        if !self.pinned || self.generation_index().is_none() {
            let before = (self.selected_generation, self.selected_instance);
            // The active generation's first row: its instance 0 when it runs several.
            let row = self.snapshot().and_then(|s| {
                let newest = s
                    .generations
                    .iter()
                    .rev()
                    .find(|g| g.state == "active")
                    .or(s.generations.last())?;
                s.generations
                    .iter()
                    .find(|g| g.generation == newest.generation)
                    .map(|g| (g.generation, g.instance))
            });
            self.selected_generation = row.map(|(generation, _)| generation);
            self.selected_instance = row.and_then(|(_, instance)| instance);
            if (self.selected_generation, self.selected_instance) != before {
                self.scroll = 0;
            }
        }
    }
}

/// Whether a connection's addresses or state contain `filter`.
pub fn connection_matches(c: &ConnectionView, filter: &str) -> bool {
    filter.is_empty()
        || c.peer.contains(filter)
        || c.local.contains(filter)
        || c.state.contains(filter)
}

fn outcome(service: &str, report: &RestartReport) -> Outcome {
    let line = match &report.outcome {
        RestartOutcome::Completed => completed_line(service, report),
        RestartOutcome::RolledBack { reason } => {
            format!("restart of '{service}' rolled back: {reason}")
        }
        RestartOutcome::Failed { reason } => format!("restart of '{service}' failed: {reason}"),
    };
    Outcome {
        success: report.outcome.is_success(),
        line,
    }
}
