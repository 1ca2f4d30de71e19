//! `zdctl top`: a live view of services, their generations, listeners and connections.
//!
//! The shape is gitui's and tokio-console's: [`app::App`] is plain state changed only by
//! `on_key`, `on_snapshot`, `on_output` and `on_event`; [`draw::draw`] is a pure function
//! of it; and the loop here is the only part that touches the terminal.
//!
//! A UI never blocks on I/O (bottom's rule): snapshots, and the lines the output pane
//! shows, are taken on a collector thread; keys are read on an input thread; restarts run
//! on threads of their own; and all of them send [`Update`]s down one channel. The UI
//! thread only waits on that channel, applies what arrived and draws (and tells the
//! collector which generation's output to read), so `q` quits at once even while a
//! supervisor does not answer (stopped, stuck): the collector then shows why when its
//! deadline passes. An idle `top` sleeps until the next snapshot or key.
//!
//! Logging is off while it runs: the lib does not install the stderr subscriber for `top`,
//! because a line written to the terminal it draws on would tear the screen.

mod app;
mod draw;
mod history;
mod output;
mod overlay;
mod refresh;
#[cfg(test)]
mod tests;
mod theme;

use std::sync::mpsc::{self, Receiver, Sender};

use anyhow::Context;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event};

use self::app::{Action, App, RestartUpdate, ServiceState};
use self::output::{OutputRead, OutputTarget};
use self::refresh::Refresher;
use crate::cli::TopArgs;
use crate::control;
use crate::exit::ExitError;

/// What the threads around the UI send it.
pub(crate) enum Update {
    Terminal(Event),
    /// Reading the terminal failed: `top` ends with this error.
    TerminalFailed(std::io::Error),
    Snapshot(Vec<ServiceState>),
    /// The lines of the generation the output pane shows, read at a refresh.
    Output(OutputRead),
    Restart(RestartUpdate),
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    for name in &args.names {
        control::check_name(name)?;
    }
    if args.interval.is_zero() {
        return Err(ExitError::usage(
            "--interval must be more than zero, like '1s' or '500ms'",
        ));
    }
    if let Some(pid) = args.pid
        && pid <= 0
    {
        return Err(ExitError::usage(format!(
            "--pid must be a process id above 0, not '{pid}'"
        )));
    }
    // https://no-color.org: set and not empty means no colour.
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let interval_ms = u64::try_from(args.interval.as_millis()).unwrap_or(u64::MAX);
    let mut app = App::new(interval_ms, color);
    let refresher = Refresher::new(args.names, args.pid)?;
    // Without a terminal, raw mode fails with a bare "No such device or address".
    if !std::io::IsTerminal::is_terminal(&std::io::stdout())
        || !std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        return Err(ExitError::usage(
            "zdctl top draws on a terminal, and this is not one (stdin and stdout must be \
             a tty); for a snapshot a script can read, use 'zdctl status NAME --json'",
        ));
    }
    let (updates, received) = mpsc::channel();
    let (watch, watched) = mpsc::channel();
    refresh::spawn_collector(refresher, args.interval, updates.clone(), watched);

    // try_init enters raw mode and the alternate screen, and installs a panic hook that
    // leaves both before the panic message is printed.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let guard = Restore;
    spawn_input(updates.clone());
    let result = event_loop(&mut terminal, &mut app, &received, &updates, &watch);
    drop(terminal);
    drop(guard);
    // The collector may be waiting on a supervisor that does not answer: it is not waited
    // for, and ends with the process.
    result
}

/// Leaves raw mode and the alternate screen however `run` ends: `Ok`, `?` or a panic that
/// unwinds (the panic hook has done it already then; doing it twice is harmless).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = ratatui::try_restore();
    }
}

/// Reads the terminal on a thread of its own, so that the UI thread can wait for keys and
/// snapshots at once. It stays blocked in its read when `top` quits, until the process ends.
fn spawn_input(updates: Sender<Update>) {
    std::thread::spawn(move || {
        loop {
            let (update, failed) = match event::read() {
                Ok(event) => (Update::Terminal(event), false),
                Err(e) => (Update::TerminalFailed(e), true),
            };
            if updates.send(update).is_err() || failed {
                return;
            }
        }
    });
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    received: &Receiver<Update>,
    updates: &Sender<Update>,
    watch: &Sender<Option<OutputTarget>>,
) -> anyhow::Result<()> {
    loop {
        terminal
            .draw(|frame| draw::draw(frame, app))
            .context("cannot draw on the terminal")?;
        // Wait for something to happen, then take all that is queued: a burst (a restart's
        // events, a pasted string) draws once.
        let first = received
            .recv()
            .context("every thread feeding the screen has ended")?;
        for update in std::iter::once(first).chain(received.try_iter()) {
            match update {
                // A resize needs nothing here: the next draw sizes the frame to the terminal.
                Update::Terminal(Event::Key(key)) => match app.on_key(key) {
                    Some(Action::Quit) => return Ok(()),
                    Some(Action::Restart(name)) => {
                        refresh::spawn_restart(name, updates.clone());
                    }
                    // A send fails only once the collector has ended: nothing reads then.
                    Some(Action::WatchOutput(target)) => {
                        let _ = watch.send(target);
                    }
                    None => {}
                },
                Update::Terminal(_) => {}
                Update::TerminalFailed(e) => {
                    return Err(e).context("cannot read the terminal");
                }
                Update::Snapshot(services) => app.on_snapshot(services),
                Update::Output(read) => app.on_output(read),
                Update::Restart(update) => app.on_event(update),
            }
        }
    }
}
