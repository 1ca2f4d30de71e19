//! The parts drawn on demand: the connection list and the full-screen detail, the restart's
//! phases, the output pane, the help and the confirmation popups, and the status line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, Wrap};
use zd_core::inspect::{ConnectionView, GenerationView, Snapshot};
use zd_core::proto::LogStream;

use super::app::{App, Mode, connection_matches};
use super::draw::{bytes, cpu, intercepting};
use super::output::{OutputPane, time_of_day};
use super::theme::Theme;
use crate::logs::visible;
use crate::output::millis;

/// The keys, as `?` shows them.
pub const HELP: [(&str, &str); 11] = [
    ("↑ ↓  j k", "select a generation"),
    ("← →  h l  Tab", "select a service"),
    ("Enter", "open the generation: all its connections"),
    ("o", "the generation's output (j k g G scroll)"),
    ("r", "restart the service (asks y/n first)"),
    ("/", "filter services and connections"),
    ("Esc", "close what is open; quit when nothing is"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit"),
    ("", ""),
    ("", "any key closes this help"),
];

/// The selected generation's connections, filtered, in a panel of the main view.
pub fn draw_connections(
    frame: &mut Frame<'_>,
    app: &App,
    snapshot: &Snapshot,
    theme: Theme,
    area: Rect,
) {
    let Some(generation) = app
        .generation_index()
        .and_then(|i| snapshot.generations.get(i))
    else {
        let text = Paragraph::new("no generation").block(Block::bordered().title(" connections "));
        frame.render_widget(text, area);
        return;
    };
    let title = connections_title(app, snapshot, generation);
    connection_table(frame, app, generation, 0, title, theme, area);
}

/// Enter: the selected generation, full screen, its connections scrolled with j/k.
pub fn draw_detail(
    frame: &mut Frame<'_>,
    app: &App,
    snapshot: &Snapshot,
    theme: Theme,
    area: Rect,
) {
    let Some(g) = app
        .generation_index()
        .and_then(|i| snapshot.generations.get(i))
    else {
        return;
    };
    let binds = if intercepting(snapshot) {
        binds_lines(g)
    } else {
        Vec::new()
    };
    let summary_height = 6 + binds.len() as u16;
    let [summary, list] =
        Layout::vertical([Constraint::Length(summary_height), Constraint::Min(3)]).areas(area);
    let pids = g
        .pids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let inodes = g
        .listener_inodes
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let mut lines = vec![
        Line::from(vec![
            Span::styled(g.state.clone(), theme.state(&g.state)),
            Span::raw(format!(
                "  main pid {}  up {}  cpu {}  rss {}  fds {}",
                g.main_pid,
                millis(g.age_ms),
                cpu(g.cpu_percent),
                bytes(g.rss_bytes),
                g.fds
            )),
        ]),
        Line::raw(format!("pids: {pids}")),
        Line::raw(format!("listener inodes: {inodes}")),
    ];
    lines.extend(binds.into_iter().map(Line::raw));
    lines.push(Line::styled(
        "↑↓ scroll · Esc back · o output · / filter",
        theme.dim(),
    ));
    let title = format!(
        " generation {} of '{}' ",
        super::draw::row_label(g),
        snapshot.service
    );
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(title)),
        summary,
    );
    let title = connections_title(app, snapshot, g);
    connection_table(frame, app, g, app.scroll, title, theme, list);
}

/// What the interception of the generation's binds answered, then a line per listener
/// that a bind got: ` http 127.0.0.1:8080: 2 binds, last to pid 1236 fd 5`.
fn binds_lines(g: &GenerationView) -> Vec<String> {
    let Some(info) = &g.intercept else {
        return vec!["binds: not intercepted (started without intercept_binds)".to_owned()];
    };
    let mut lines = vec![format!("binds: {}", crate::status::binds_summary(info))];
    for l in info.listeners.iter().filter(|l| l.binds > 0) {
        let mut line = format!(
            " {} {}: {} bind{}",
            l.listener,
            l.address,
            l.binds,
            if l.binds == 1 { "" } else { "s" }
        );
        if let (Some(pid), Some(fd)) = (l.last_pid, l.last_fd) {
            line.push_str(&format!(", last to pid {pid} fd {fd}"));
        }
        lines.push(line);
    }
    lines
}

fn connections_title(app: &App, snapshot: &Snapshot, g: &GenerationView) -> String {
    let listed = if g.connections.len() < g.connection_count {
        format!(", {} listed", g.connections.len())
    } else {
        String::new()
    };
    // The inspector carries connections over while nothing changes; say so once they are
    // a second or more older than the snapshot (their states and queues are as of then).
    let read_ms_ago = snapshot
        .taken_unix_ms
        .saturating_sub(snapshot.connections_read_unix_ms);
    let read = if read_ms_ago >= 1000 && snapshot.connections_read_unix_ms > 0 {
        format!(", read {}s ago", read_ms_ago / 1000)
    } else {
        String::new()
    };
    let filter = match app.connection_filter() {
        "" => String::new(),
        filter => format!(", filter '{filter}'"),
    };
    format!(
        " connections of generation {}: {}{listed}{read}{filter} ",
        super::draw::row_label(g),
        g.connection_count
    )
}

fn connection_table(
    frame: &mut Frame<'_>,
    app: &App,
    g: &GenerationView,
    skip: usize,
    title: String,
    theme: Theme,
    area: Rect,
) {
    let filter = app.connection_filter();
    let shown: Vec<&ConnectionView> = g
        .connections
        .iter()
        .filter(|c| connection_matches(c, filter))
        .collect();
    // Never scroll past the last page.
    let page = usize::from(area.height.saturating_sub(3));
    let skip = skip.min(shown.len().saturating_sub(page));
    let rows = shown.iter().skip(skip).map(|c| {
        Row::new([
            Cell::from(c.local.clone()),
            Cell::from(c.peer.clone()),
            Cell::from(c.state.clone()),
            Cell::from(c.send_queue.to_string()),
            Cell::from(c.recv_queue.to_string()),
        ])
    });
    let header = Row::new(["LOCAL", "PEER", "STATE", "SEND-Q", "RECV-Q"].map(Cell::from))
        .style(theme.header());
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(12),
            Constraint::Length(7),
            Constraint::Length(7),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

/// A restart started with `r`: its phases as they arrive, then how it ended.
pub fn draw_restart(frame: &mut Frame<'_>, app: &App, theme: Theme, area: Rect) {
    let Some(restart) = &app.restart else {
        return;
    };
    let room = usize::from(area.height.saturating_sub(2));
    let mut lines: Vec<Line<'_>> = restart
        .lines
        .iter()
        .map(|l| Line::raw(l.as_str()))
        .collect();
    match &restart.outcome {
        None => lines.push(Line::styled("…", theme.dim())),
        Some(outcome) => {
            let style = if outcome.success {
                theme.good()
            } else {
                theme.bad()
            };
            lines.push(Line::styled(outcome.line.as_str(), style));
        }
    }
    // Keep the newest lines in view.
    let skip = lines.len().saturating_sub(room);
    let lines: Vec<Line<'_>> = lines.into_iter().skip(skip).collect();
    let title = match restart.outcome {
        None => format!(" restarting '{}' ", restart.service),
        Some(_) => format!(" restart of '{}' (Esc closes) ", restart.service),
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

/// `o`: the last lines the generation printed, newest at the bottom, over the main view.
pub fn draw_output(frame: &mut Frame<'_>, pane: &OutputPane, theme: Theme, area: Rect) {
    let target = &pane.target;
    let page = usize::from(area.height.saturating_sub(2));
    let (lines, title) = match &pane.read {
        None => (vec![Line::styled("reading…", theme.dim())], String::new()),
        Some(Err(why)) => (vec![Line::styled(why.as_str(), theme.dim())], String::new()),
        Some(Ok(all)) if all.is_empty() => (
            vec![Line::styled(
                format!("generation {} printed nothing yet", target.generation),
                theme.dim(),
            )],
            String::new(),
        ),
        Some(Ok(all)) => {
            let (shown, below) = pane.page(page);
            let lines = shown
                .iter()
                .map(|l| {
                    let style = match l.stream {
                        LogStream::Stdout => ratatui::style::Style::new(),
                        LogStream::Stderr => theme.warning(),
                    };
                    Line::from(vec![
                        Span::styled(format!("{} ", time_of_day(l.unix_ms)), theme.dim()),
                        Span::styled(format!("{} ", l.stream.short()), style),
                        Span::styled(visible(&l.text), style),
                    ])
                })
                .collect();
            let newer = if below > 0 {
                format!(", {below} newer below")
            } else {
                String::new()
            };
            (lines, format!(": last {} lines, UTC{newer}", all.len()))
        }
    };
    let title = format!(
        " output of generation {} of '{}'{title} ",
        target.generation, target.service
    );
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

pub fn draw_help(frame: &mut Frame<'_>, theme: Theme, area: Rect) {
    let rows = HELP
        .iter()
        .map(|(key, what)| Row::new([Cell::from(*key).style(theme.header()), Cell::from(*what)]));
    let popup = centered(area, 62, HELP.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Table::new(rows, [Constraint::Length(15), Constraint::Min(10)])
            .block(Block::bordered().title(" keys ")),
        popup,
    );
}

pub fn draw_confirm(frame: &mut Frame<'_>, service: &str, theme: Theme, area: Rect) {
    let popup = centered(area, 50, 5);
    frame.render_widget(Clear, popup);
    let text = vec![
        Line::raw(format!("restart '{service}' now?")),
        Line::raw(""),
        Line::from(vec![
            Span::styled("y", theme.header()),
            Span::raw(" restart   "),
            Span::styled("any other key", theme.header()),
            Span::raw(" cancel"),
        ]),
    ];
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" restart ")),
        popup,
    );
}

/// The bottom line: the filter being typed, the restart's newest phase, or a hint.
pub fn draw_status_line(frame: &mut Frame<'_>, app: &App, theme: Theme, area: Rect) {
    let line = if app.mode == Mode::Filter {
        Line::from(vec![
            Span::styled("/", theme.header()),
            Span::raw(app.filter.as_str()),
            Span::styled("▏ Enter keeps · Esc clears", theme.dim()),
        ])
    } else if let Some(restart) = app.restart.as_ref().filter(|r| r.outcome.is_none()) {
        let last = restart.lines.last().map(String::as_str).unwrap_or("");
        Line::raw(format!("restarting '{}' {last}", restart.service))
    } else if app.mode == Mode::Output {
        Line::styled("↑↓ scroll · g oldest · G newest · o/Esc close", theme.dim())
    } else if !app.filter.is_empty() {
        Line::raw(format!("filter '{}' · Esc clears", app.filter))
    } else if let Some((bake, snapshot)) = app
        .snapshot()
        .and_then(|s| s.bake.as_ref().map(|bake| (bake, s)))
    {
        Line::styled(super::draw::bake_note(bake, snapshot), theme.warning())
    } else {
        Line::styled(
            "↑↓ generation · ←→ service · Enter open · o output · r restart · / filter",
            theme.dim(),
        )
    };
    frame.render_widget(line, area);
}

/// A `width`×`height` rectangle in the middle of `area`, clipped to it.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}
