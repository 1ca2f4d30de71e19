//! `zdctl top`: a live view of services, their generations, listeners and connections.
//!
//! The shape is gitui's and tokio-console's: [`app::App`] is plain state changed only by
//! `on_key`, `on_snapshot` and `on_event`; [`draw::draw`] is a pure function of it; and the
//! loop here is the only part that touches the terminal, the clock and the sockets. The
//! loop waits for a key for exactly the time left until the next refresh (or a little while
//! when a restart's events may be arriving), so an idle `top` sleeps in `poll(2)`.
//!
//! Logging is off while it runs: the lib does not install the stderr subscriber for `top`,
//! because a line written to the terminal it draws on would tear the screen.

mod app;
mod draw;
mod history;
mod overlay;
mod refresh;
#[cfg(test)]
mod tests;
mod theme;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event};

use self::app::{Action, App};
use self::refresh::Refresher;
use crate::cli::TopArgs;
use crate::control;
use crate::exit::ExitError;

/// While a restart started here runs, the loop looks at its events this often, so its
/// phases show as they happen rather than at the next refresh.
const RESTART_POLL: Duration = Duration::from_millis(50);

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
    let mut refresher = Refresher::new(args.names, args.pid)?;
    app.on_snapshot(refresher.refresh());

    // try_init enters raw mode and the alternate screen, and installs a panic hook that
    // leaves both before the panic message is printed.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let guard = Restore;
    let result = event_loop(&mut terminal, &mut app, &mut refresher, args.interval);
    drop(terminal);
    drop(guard);
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

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    refresher: &mut Refresher,
    interval: Duration,
) -> anyhow::Result<()> {
    let (updates, restart_updates) = mpsc::channel();
    let mut next_refresh = Instant::now() + interval;
    loop {
        terminal
            .draw(|frame| draw::draw(frame, app))
            .context("cannot draw on the terminal")?;

        let mut timeout = next_refresh.saturating_duration_since(Instant::now());
        if app.restart_running() {
            timeout = timeout.min(RESTART_POLL);
        }
        if event::poll(timeout).context("cannot read the terminal")? {
            // A resize needs nothing here: the next draw sizes the frame to the terminal.
            if let Event::Key(key) = event::read().context("cannot read the terminal")? {
                match app.on_key(key) {
                    Some(Action::Quit) => return Ok(()),
                    Some(Action::Restart(name)) => {
                        refresh::spawn_restart(name, updates.clone());
                    }
                    None => {}
                }
            }
        }
        while let Ok(update) = restart_updates.try_recv() {
            app.on_event(update);
        }
        let now = Instant::now();
        if now >= next_refresh {
            app.on_snapshot(refresher.refresh());
            // Keep the beat; after a stall (a slow snapshot) start again from now.
            next_refresh += interval;
            if next_refresh <= now {
                next_refresh = now + interval;
            }
        }
    }
}
