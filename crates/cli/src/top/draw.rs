//! Drawing: a pure function of [`App`]. It reads no clock and no file, so the same App
//! draws the same screen, which the snapshot tests rely on.
//!
//! ```text
//! zdctl top  [api] web pid:812                         every 1s · ? help · q quit
//! ┌generations of 'api' (supervisor pid 40)────────────────────────────────────────┐
//! │GEN STATE    PIDS        AGE   CPU    RSS    FDS OUT LSN CONNS                   │
//! ├in-flight connections, last 60s──────────────┐┌listeners───────────────────────┤
//! │ chart, one line per generation               ││127.0.0.1:8080 queue 0/4096 ... │
//! ├connections of generation 2 ──────────────────────────────────────────────────┤
//! │LOCAL  PEER  STATE  SEND-Q RECV-Q                                              │
//! status line: the restart's last phase, the filter, or a hint
//! ```
//!
//! The detail (Enter) takes the whole body; the output pane (`o`) covers it too.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, TableState, Wrap,
};
use zd_core::inspect::{GenerationView, ListenerView, Snapshot};
use zd_core::proto::FailingInfo;

use super::app::{App, Mode};
use super::overlay;
use super::theme::Theme;
use crate::output::{exit_status, millis};

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let theme = Theme::new(app.color);
    let area = frame.area();
    let [title, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(frame, app, theme, title);
    overlay::draw_status_line(frame, app, theme, status);

    match app.service() {
        None => draw_empty(frame, app, theme, body),
        Some(service) => match &service.snapshot {
            Err(message) => {
                let text = Paragraph::new(format!("'{}': {message}", service.name))
                    .style(theme.bad())
                    .wrap(Wrap { trim: true })
                    .block(Block::bordered().title(format!(" {} ", service.name)));
                frame.render_widget(text, body);
            }
            Ok(snapshot) if app.mode == Mode::Detail => {
                overlay::draw_detail(frame, app, snapshot, theme, body);
            }
            Ok(snapshot) => draw_service(frame, app, snapshot, theme, body),
        },
    }

    match &app.mode {
        Mode::Help => overlay::draw_help(frame, theme, area),
        Mode::Confirm(service) => overlay::draw_confirm(frame, service, theme, area),
        Mode::Output => {
            if let Some(pane) = &app.output {
                overlay::draw_output(frame, pane, theme, body);
            }
        }
        _ => {}
    }
}

fn draw_title(frame: &mut Frame<'_>, app: &App, theme: Theme, area: Rect) {
    let mut spans = vec![Span::styled("zdctl top ", theme.title())];
    for service in app.visible_services() {
        let style = if app.selected_service.as_deref() == Some(&service.name) {
            theme.selected()
        } else {
            Style::new()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {} ", service.name), style));
    }
    let hint = format!("every {} · ? help · q quit ", millis(app.interval_ms));
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(hint.chars().count() as u16),
    ])
    .areas(area);
    frame.render_widget(Line::from(spans), left);
    frame.render_widget(Line::styled(hint, theme.dim()), right);
}

fn draw_empty(frame: &mut Frame<'_>, app: &App, theme: Theme, area: Rect) {
    let text = if !app.loaded {
        "collecting the first snapshot…".to_owned()
    } else if app.services.is_empty() {
        "no service is running: start one with 'zdctl run NAME', or watch any process tree \
         with 'zdctl top --pid PID'"
            .to_owned()
    } else {
        format!(
            "no service matches the filter '{}'; Esc clears it",
            app.filter
        )
    };
    let text = Paragraph::new(text)
        .style(theme.dim())
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(" services "));
    frame.render_widget(text, area);
}

fn draw_service(frame: &mut Frame<'_>, app: &App, snapshot: &Snapshot, theme: Theme, area: Rect) {
    // Borders, the header and one row per generation, but at least two rows' room.
    let table_height = (snapshot.generations.len().max(2) as u16).saturating_add(3);
    let middle_height = (area.height.saturating_sub(table_height) / 2).max(7);
    let [table, middle, bottom] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Length(middle_height),
        Constraint::Min(3),
    ])
    .areas(area);
    draw_generations(frame, app, snapshot, theme, table);

    let side = if middle.width >= 100 { 46 } else { 34 };
    let [chart, listeners] =
        Layout::horizontal([Constraint::Min(20), Constraint::Length(side)]).areas(middle);
    draw_chart(frame, app, snapshot, theme, chart);
    draw_listeners(frame, snapshot, theme, listeners);

    if app.restart.is_some() {
        overlay::draw_restart(frame, app, theme, bottom);
    } else if let Some(failing) = &snapshot.failing {
        draw_failing(frame, &snapshot.service, failing, theme, bottom);
    } else {
        overlay::draw_connections(frame, app, snapshot, theme, bottom);
    }
}

fn draw_generations(
    frame: &mut Frame<'_>,
    app: &App,
    snapshot: &Snapshot,
    theme: Theme,
    area: Rect,
) {
    // BINDS (the binds that got a listener) only for a service whose binds are, or were
    // for a generation still running, intercepted.
    let intercepting = intercepting(snapshot);
    let mut header = vec![
        "GEN", "STATE", "PIDS", "AGE", "CPU", "RSS", "FDS", "OUT", "LSN", "CONNS",
    ];
    if intercepting {
        header.push("BINDS");
    }
    let header = Row::new(header.into_iter().map(Cell::from)).style(theme.header());
    // A wide terminal has room for every pid of the tree.
    let all_pids = area.width >= 120;
    // A generation of several instances has a row per instance, `5.2`.
    let instances = snapshot.generations.iter().any(|g| g.instance.is_some());
    let rows = snapshot.generations.iter().map(|g| {
        let mut cells = vec![
            Cell::from(row_label(g)),
            Cell::from(g.state.clone()).style(theme.state(&g.state)),
            Cell::from(if all_pids { pid_list(g) } else { pids(g) }),
            Cell::from(millis(g.age_ms)),
            Cell::from(cpu(g.cpu_percent)),
            Cell::from(bytes(g.rss_bytes)),
            Cell::from(g.fds.to_string()),
            Cell::from(g.output_lines.map_or("-".to_owned(), |n| n.to_string())),
            Cell::from(g.listener_inodes.len().to_string()),
            Cell::from(g.connection_count.to_string()),
        ];
        if intercepting {
            cells.push(match &g.intercept {
                Some(info) if info.binds_failed > 0 => {
                    Cell::from(format!("{}!", info.handed())).style(theme.bad())
                }
                Some(info) => Cell::from(info.handed().to_string()),
                None => Cell::from("-"),
            });
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(if instances { 7 } else { 4 }),
        Constraint::Length(9),
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(3),
        Constraint::Length(6),
    ];
    if intercepting {
        widths.push(Constraint::Length(6));
    }
    let title = format!(
        " generations of '{}' ({} via {}){}{} ",
        snapshot.service,
        generations_word(generation_count(snapshot), snapshot.generations.len()),
        snapshot.source,
        if snapshot.intercept_binds {
            " · binds intercepted"
        } else {
            ""
        },
        supervisor_note(snapshot.supervisor.as_ref())
    );
    let title = match &snapshot.failing {
        Some(failing) => Line::from(vec![
            Span::raw(title),
            Span::styled(
                if failing.refusing_since_unix_ms.is_some() {
                    " FAILING, refusing "
                } else {
                    " FAILING "
                },
                theme.bad(),
            ),
        ]),
        None => Line::from(title),
    };
    let title = match &snapshot.bake {
        Some(_) => {
            let mut title = title;
            title.push_span(Span::styled(" BAKING ", theme.warning()));
            title
        }
        None => title,
    };
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(theme.selected())
        .block(Block::bordered().title(title));
    let mut state = TableState::new().with_selected(app.generation_index());
    frame.render_stateful_widget(table, area, &mut state);
}

/// ` · zdctl 0.4.0, reexec'd 2×, adopted from pid 812`: what runs the service, when it
/// is worth a look (it was re-executed or adopted something).
fn supervisor_note(me: Option<&zd_core::proto::SupervisorInfo>) -> String {
    let Some(me) = me else {
        return String::new();
    };
    let mut note = String::new();
    if me.reexecs > 0 {
        note.push_str(&format!(
            " · zdctl {}, reexec'd {}×",
            me.version, me.reexecs
        ));
    }
    if let Some(adopted) = &me.adopted {
        note.push_str(&format!(" · adopted from pid {}", adopted.from_pid));
    }
    note
}

/// A failing service (`restart.limit` reached): why, in place of the connections.
fn draw_failing(
    frame: &mut Frame<'_>,
    service: &str,
    failing: &FailingInfo,
    theme: Theme,
    area: Rect,
) {
    let last = match (failing.generation, failing.exit, &failing.reason) {
        (_, _, Some(reason)) => reason.clone(),
        (Some(generation), Some(exit), None) => {
            format!("generation {generation}: {}", exit_status(exit))
        }
        _ => "its last start failed".to_owned(),
    };
    let clients = if failing.refusing_since_unix_ms.is_some() {
        "its TCP listeners refuse new connections (restart.refuse_after)"
    } else {
        "clients wait in the listeners' queues"
    };
    let mut lines = vec![
        Line::styled(
            format!(
                "{} starts failed within {}: nothing is respawned until 'zdctl restart {service}' \
                 (r); {clients}",
                failing.failed_starts,
                millis(failing.window_ms)
            ),
            theme.bad(),
        ),
        Line::raw(format!("last failure: {last}")),
    ];
    if !failing.output.is_empty() {
        lines.push(Line::styled("its last output:", theme.dim()));
        lines.extend(failing.output.iter().map(|l| Line::raw(format!("  {l}"))));
    }
    let text = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" failing "));
    frame.render_widget(text, area);
}

fn draw_chart(frame: &mut Frame<'_>, app: &App, snapshot: &Snapshot, theme: Theme, area: Rect) {
    let series = app.history.series(&snapshot.service);
    let names: Vec<String> = series
        .iter()
        .map(|s| format!("gen {}", s.generation))
        .collect();
    let datasets: Vec<Dataset<'_>> = series
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(i, (s, name))| {
            let (style, marker) = theme.line(i);
            Dataset::default()
                .name(name.as_str())
                .graph_type(GraphType::Line)
                .marker(marker)
                .style(style)
                .data(&s.points)
        })
        .collect();
    // A round top a little above the peak, so the line never runs along the border.
    let peak = app.history.peak(&snapshot.service).max(1);
    let top = nice_ceiling(peak + peak / 10 + 1);
    // The legend goes in the title: ratatui's own box hides whenever the chart is small.
    let heading = if area.width >= 70 {
        " in-flight connections, last 60s "
    } else {
        " in flight, 60s "
    };
    let mut title = vec![Span::raw(heading)];
    for (i, name) in names.iter().enumerate() {
        let (style, marker) = theme.line(i);
        title.push(Span::styled(format!("{} {name} ", mark(marker)), style));
    }
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(Line::from(title)))
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds([-60.0, 0.0])
                .labels(["-60s", "-30s", "now"])
                .style(theme.dim()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, top as f64])
                .labels(["0".to_owned(), (top / 2).to_string(), top.to_string()])
                .style(theme.dim()),
        );
    frame.render_widget(chart, area);
}

/// How a line drawn with `marker` looks, for the legend.
fn mark(marker: Marker) -> &'static str {
    match marker {
        Marker::Dot => "•",
        Marker::Block => "█",
        Marker::Bar => "▄",
        _ => "⣿",
    }
}

fn draw_listeners(frame: &mut Frame<'_>, snapshot: &Snapshot, theme: Theme, area: Rect) {
    let mut lines: Vec<Line<'_>> = Vec::new();
    if snapshot.listeners.is_empty() {
        lines.push(Line::styled("no listeners", theme.dim()));
    }
    for l in &snapshot.listeners {
        lines.push(Line::from(Span::styled(l.address.clone(), theme.header())));
        let backlog = if l.backlog == 0 {
            "?".to_owned()
        } else {
            l.backlog.to_string()
        };
        let held = l
            .held_by
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // A steered group shows one socket per generation on the same address;
        // the one that gets new connections is marked.
        let group: Vec<&ListenerView> = snapshot
            .listeners
            .iter()
            .filter(|other| other.address == l.address)
            .collect();
        let steered_group = group.len() > 1 && group.iter().any(|o| o.new_connections);
        let mark = match (steered_group, l.new_connections) {
            (false, _) => "",
            (true, true) => "  ← new",
            (true, false) => "  draining",
        };
        // A UDP socket has no accept queue and no backlog: what waits on it is
        // datagrams, shown by the receive memory they hold.
        let queue = if l.address.starts_with("udp://") {
            format!("queued {} B", l.accept_queue)
        } else {
            format!("queue {}/{backlog}", l.accept_queue)
        };
        lines.push(Line::raw(format!(" {queue}  gens {held}{mark}")));
    }
    let k = &snapshot.kernel;
    lines.push(Line::styled("kernel (namespace)", theme.header()));
    for (name, total, delta) in [
        ("ListenOverflows", k.listen_overflows, k.overflows_delta),
        ("ListenDrops", k.listen_drops, k.drops_delta),
    ] {
        let change = match delta {
            Some(0) => Span::raw(" (+0)"),
            Some(d) => Span::styled(format!(" (+{d})"), theme.bad()),
            None => Span::raw(""),
        };
        lines.push(Line::from(vec![
            Span::raw(format!(" {name} {total}")),
            change,
        ]));
    }
    let text = Paragraph::new(lines).block(Block::bordered().title(" listeners "));
    frame.render_widget(text, area);
}

/// Whether the service's binds are intercepted, or were for a generation still running.
pub fn intercepting(snapshot: &Snapshot) -> bool {
    snapshot.intercept_binds || snapshot.generations.iter().any(|g| g.intercept.is_some())
}

/// `1234 1240 1241`: the main pid, then its descendants.
fn pid_list(g: &GenerationView) -> String {
    g.pids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1234 +3`: the main pid and how many descendants.
pub fn pids(g: &GenerationView) -> String {
    match g.pids.len().saturating_sub(1) {
        0 => g.main_pid.to_string(),
        more => format!("{} +{more}", g.main_pid),
    }
}

pub fn cpu(percent: Option<f64>) -> String {
    match percent {
        Some(p) => format!("{p:.1}%"),
        None => "-".to_owned(),
    }
}

/// `512K`, `12.5M`, `1.2G`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 || unit == 0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// `baking generation 5: 3.2s left · generation 4 stands by · zdctl revert api`: the
/// countdown of a restart's bake window for the status line, as of the snapshot (drawing
/// reads no clock).
pub fn bake_note(bake: &zd_core::proto::BakeInfo, snapshot: &Snapshot) -> String {
    let left = bake.ends_unix_ms.saturating_sub(snapshot.taken_unix_ms);
    format!(
        "baking generation {}: {} left · generation {} stands by · zdctl revert {}",
        bake.generation,
        millis(left),
        bake.old_generation,
        snapshot.service
    )
}

/// A row's generation: `5`, or `5.2` for instance 2 of a generation of several.
pub fn row_label(g: &GenerationView) -> String {
    match g.instance {
        Some(instance) => format!("{}.{instance}", g.generation),
        None => g.generation.to_string(),
    }
}

/// How many generations the rows show: a generation of several instances has a row each.
fn generation_count(snapshot: &Snapshot) -> usize {
    let mut numbers: Vec<u64> = snapshot.generations.iter().map(|g| g.generation).collect();
    numbers.dedup();
    numbers.len()
}

fn generations_word(n: usize, rows: usize) -> String {
    if rows > n {
        return format!("{}, {rows} instances,", generations_word(n, n));
    }
    if n == 1 {
        "1 generation".to_owned()
    } else {
        format!("{n} generations")
    }
}

/// The smallest of 1, 2, 5 × 10^k at or above `n`.
fn nice_ceiling(n: usize) -> usize {
    let mut base = 1;
    loop {
        for step in [1, 2, 5] {
            if base * step >= n {
                return base * step;
            }
        }
        base = base.saturating_mul(10);
    }
}
