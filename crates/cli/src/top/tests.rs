//! The screen drawn from fixed snapshots (pids, times and counts never change), compared
//! with the insta snapshot files in `snapshots/`; and the App's answers to keys.
//!
//! `cargo insta review` (or `INSTA_UPDATE=always`) accepts a deliberate change of layout.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use zd_core::inspect::{ConnectionView, GenerationView, KernelCounters, ListenerView, Snapshot};
use zd_core::proto::{
    Event, EventKind, ExitInfo, GenerationInfo, GenerationState, InterceptInfo,
    InterceptedListener, LogLine, LogStream, RestartCounters, RestartOutcome, RestartReport,
    Status,
};

use super::app::{Action, App, Mode, RestartUpdate, ServiceState};
use super::draw::draw;
use super::output::{OutputRead, OutputTarget};
use super::refresh::unreadable;

mod pools;

const T0: u64 = 1_790_000_000_000;

fn connections(generation: u64, n: usize) -> Vec<ConnectionView> {
    (0..n)
        .map(|i| ConnectionView {
            local: "127.0.0.1:8080".into(),
            peer: format!("127.0.0.1:{}", 40_000 + i + generation as usize * 100),
            state: "established".into(),
            send_queue: 0,
            recv_queue: if i == 0 { 78 } else { 0 },
            inode: 90_000 + i as u64,
        })
        .collect()
}

fn generation(generation: u64, state: &str, pid: i32, conns: usize) -> GenerationView {
    GenerationView {
        generation,
        instance: None,
        state: state.into(),
        pids: vec![pid, pid + 1, pid + 2],
        main_pid: pid,
        age_ms: 3_723_000 / generation,
        cpu_percent: Some(1.5 * generation as f64),
        rss_bytes: 14_200_000 * generation,
        fds: 12 + conns,
        listener_inodes: vec![5151],
        connections: connections(generation, conns),
        connection_count: conns,
        intercept: None,
        output_lines: Some(20 * generation),
    }
}

/// `api` at second `at` of a flip from generation 1 to 2 under 8 keep-alive clients.
fn api(at: u64) -> Snapshot {
    let (old, new) = match at {
        0..=29 => (Some(8), None),
        30..=31 => (Some(5), Some(3)),
        32..=33 => (Some(0), Some(8)),
        _ => (None, Some(8)),
    };
    let mut generations = Vec::new();
    if let Some(n) = old {
        let state = if new.is_some() { "draining" } else { "active" };
        generations.push(generation(1, state, 1200, n));
    }
    if let Some(n) = new {
        generations.push(generation(2, "active", 1300, n));
    }
    let held_by = generations.iter().map(|g| g.generation).collect();
    Snapshot {
        service: "api".into(),
        taken_unix_ms: T0 + at * 1000,
        source: "netlink".into(),
        connections_read_unix_ms: T0 + at * 1000,
        generations,
        listeners: vec![ListenerView {
            inode: 5151,
            address: "127.0.0.1:8080".into(),
            accept_queue: 2,
            backlog: 4096,
            held_by,
            new_connections: true,
        }],
        kernel: KernelCounters {
            listen_overflows: 7,
            listen_drops: 9,
            overflows_delta: Some(0),
            drops_delta: Some(2),
        },
        intercept_binds: false,
        failing: None,
        supervisor: None,
        bake: None,
    }
}

fn services(at: u64) -> Vec<ServiceState> {
    vec![
        ServiceState {
            name: "api".into(),
            restartable: true,
            snapshot: Ok(api(at)),
        },
        ServiceState {
            name: "web".into(),
            restartable: true,
            snapshot: Err("service 'web' is not running".into()),
        },
    ]
}

/// An App that has watched `api` for 32 seconds, to the middle of a flip at second 30.
fn app(color: bool) -> App {
    let mut app = App::new(1000, color);
    for at in 0..=31 {
        app.on_snapshot(services(at));
    }
    app
}

fn screen(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|frame| draw(frame, app)).expect("draw");
    terminal
}

fn text(app: &App, width: u16, height: u16) -> String {
    screen(app, width, height).backend().to_string()
}

fn key(app: &mut App, code: KeyCode) -> Option<Action> {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
}

#[test]
fn an_80_by_24_terminal_shows_the_table_chart_listeners_and_connections() {
    insta::assert_snapshot!(text(&app(true), 80, 24));
}

#[test]
fn a_wide_terminal_uses_the_room() {
    insta::assert_snapshot!(text(&app(true), 160, 40));
}

#[test]
fn the_help_overlay_lists_the_keys() {
    let mut app = app(true);
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(text(&app, 80, 24));
}

#[test]
fn r_asks_for_confirmation_before_restarting() {
    let mut app = app(true);
    assert_eq!(key(&mut app, KeyCode::Char('r')), None);
    assert_eq!(app.mode, Mode::Confirm("api".into()));
    insta::assert_snapshot!(text(&app, 80, 24));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        Some(Action::Restart("api".into()))
    );
}

#[test]
fn r_on_a_process_tree_given_with_pid_says_why_it_cannot_restart_and_asks_nothing() {
    let mut app = App::new(1000, false);
    app.on_snapshot(vec![ServiceState {
        name: "pid:4242".into(),
        restartable: false,
        snapshot: Ok(api(0)),
    }]);
    assert_eq!(key(&mut app, KeyCode::Char('r')), None);
    assert_eq!(app.mode, Mode::Main);
    let outcome = app
        .restart
        .as_ref()
        .and_then(|r| r.outcome.as_ref())
        .expect("an outcome line");
    assert!(!outcome.success);
    assert!(
        outcome.line.contains("given with --pid"),
        "{}",
        outcome.line
    );
    assert!(outcome.line.contains("zdctl top NAME"), "{}", outcome.line);
}

#[test]
fn any_key_but_y_cancels_the_restart() {
    let mut app = app(true);
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(key(&mut app, KeyCode::Char('n')), None);
    assert_eq!(app.mode, Mode::Main);
    assert!(app.restart.is_none());
}

#[test]
fn no_color_draws_without_any_colour_and_keeps_the_layout() {
    let plain = app(false);
    let terminal = screen(&plain, 80, 24);
    let buffer = terminal.backend().buffer();
    for cell in buffer.content() {
        assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset), "{cell:?}");
    }
    // The chart's lines differ by their marks instead of their colours.
    insta::assert_snapshot!(terminal.backend().to_string());
}

#[test]
fn before_the_first_snapshot_the_screen_says_it_is_collecting_not_that_nothing_runs() {
    let app = App::new(1000, true);
    let screen = text(&app, 80, 24);
    assert!(screen.contains("collecting the first snapshot"), "{screen}");
    assert!(!screen.contains("no service is running"), "{screen}");
}

#[test]
fn with_no_service_running_the_screen_says_how_to_start_one() {
    let mut app = App::new(1000, true);
    app.on_snapshot(Vec::new());
    insta::assert_snapshot!(text(&app, 80, 24));
}

#[test]
fn a_restart_shows_its_phases_as_the_events_arrive() {
    let mut app = app(true);
    key(&mut app, KeyCode::Char('r'));
    key(&mut app, KeyCode::Char('y'));
    let event = |ms, kind| {
        RestartUpdate::Event(Event {
            unix_ms: T0 + ms,
            restart: Some(1),
            elapsed_ms: Some(ms),
            elapsed_us: None,
            kind,
        })
    };
    app.on_event(event(
        3,
        EventKind::Spawned {
            generation: 2,
            pid: 1300,
        },
    ));
    app.on_event(event(
        41,
        EventKind::Ready {
            generation: 2,
            evidence: "pid 1300 waits in accept4 on fd 3".into(),
        },
    ));
    app.on_event(event(
        42,
        EventKind::Promoted {
            generation: 2,
            pid: 1300,
        },
    ));
    assert!(app.restart_running());
    insta::assert_snapshot!("restart_running", text(&app, 80, 24));
    app.on_event(event(
        350,
        EventKind::Exited {
            generation: 1,
            pid: 1200,
            status: ExitInfo::Signal { signal: 15 },
        },
    ));
    app.on_event(RestartUpdate::Finished(Ok(RestartReport {
        bake_ms: None,
        new_pids: Vec::new(),
        steps: None,
        restart: 1,
        outcome: RestartOutcome::Completed,
        old_generation: Some(1),
        new_generation: Some(2),
        new_pid: Some(1300),
        elapsed_ms: 351,
        output: Vec::new(),
    })));
    assert!(!app.restart_running());
    insta::assert_snapshot!("restart_done", text(&app, 80, 24));
    // Esc closes the finished restart first, and only then quits.
    assert_eq!(key(&mut app, KeyCode::Esc), None);
    assert!(app.restart.is_none());
    assert_eq!(key(&mut app, KeyCode::Esc), Some(Action::Quit));
}

#[test]
fn enter_opens_the_selected_generation_and_arrows_move_between_generations() {
    let mut app = app(true);
    assert_eq!(app.selected_generation, Some(2), "the active one first");
    key(&mut app, KeyCode::Up);
    assert_eq!(app.selected_generation, Some(1));
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(app.selected_generation, Some(1), "stays on the first");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.mode, Mode::Detail);
    insta::assert_snapshot!(text(&app, 80, 24));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Main);
}

#[test]
fn the_filter_narrows_services_and_connections() {
    let mut app = app(true);
    key(&mut app, KeyCode::Char('/'));
    for c in "4020".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert_eq!(app.mode, Mode::Filter);
    key(&mut app, KeyCode::Enter);
    // Only api has such a connection: web is hidden and api's list shows the match.
    let names: Vec<&str> = app
        .visible_services()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["api"]);
    insta::assert_snapshot!(text(&app, 80, 24));
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('z'));
    assert!(app.service().is_none());
    assert!(text(&app, 80, 24).contains("no service matches the filter '4020z'"));
    // Esc while typing clears the filter.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.filter, "");
    assert_eq!(app.selected_service.as_deref(), Some("api"));
}

#[test]
fn q_and_ctrl_c_quit_from_anywhere() {
    let mut app = app(true);
    assert_eq!(key(&mut app, KeyCode::Char('q')), Some(Action::Quit));
    key(&mut app, KeyCode::Char('/'));
    assert_eq!(
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Action::Quit)
    );
}

#[test]
fn a_tiny_terminal_does_not_panic() {
    let mut app = app(true);
    for (w, h) in [(1, 1), (10, 3), (20, 8), (40, 12)] {
        text(&app, w, h);
        key(&mut app, KeyCode::Char('?'));
        text(&app, w, h);
        key(&mut app, KeyCode::Char('?'));
    }
}

#[test]
fn the_selection_follows_the_service_across_refreshes() {
    let mut app = app(true);
    key(&mut app, KeyCode::Right);
    assert_eq!(app.selected_service.as_deref(), Some("web"));
    let mut reversed = services(40);
    reversed.reverse();
    app.on_snapshot(reversed);
    assert_eq!(app.selected_service.as_deref(), Some("web"));
    insta::assert_snapshot!(text(&app, 80, 24));
}

#[test]
fn the_chart_drops_a_gone_generation_to_zero_and_forgets_samples_older_than_a_minute() {
    let mut history = super::history::History::default();
    // (moment of the flip, second of the sample)
    for (phase, second) in [(0, 0), (30, 50), (30, 52), (34, 54), (40, 100)] {
        let mut snapshot = api(phase);
        snapshot.taken_unix_ms = T0 + second * 1000;
        history.record("api", &snapshot);
    }
    let lines: Vec<(u64, Vec<(f64, f64)>)> = history
        .series("api")
        .into_iter()
        .map(|s| (s.generation, s.points))
        .collect();
    assert_eq!(
        lines,
        [
            // Second 0 is more than a minute before second 100: forgotten. Generation 1
            // is gone at second 54: its line ends there at zero.
            (1, vec![(-50.0, 5.0), (-48.0, 5.0), (-46.0, 0.0)]),
            (
                2,
                vec![(-50.0, 3.0), (-48.0, 3.0), (-46.0, 8.0), (0.0, 8.0)]
            ),
        ]
    );
    assert_eq!(history.peak("api"), 8);
}

#[test]
fn top_takes_names_a_pid_and_an_interval() {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from([
        "zdctl",
        "top",
        "api",
        "web",
        "--pid",
        "812",
        "--interval",
        "500ms",
    ])
    .expect("valid command line");
    let crate::cli::Command::Top(args) = cli.command else {
        panic!("not top")
    };
    assert_eq!(args.names, ["api", "web"]);
    assert_eq!(args.pid, Some(812));
    assert_eq!(args.interval, std::time::Duration::from_millis(500));
}

#[test]
fn a_steered_listener_shows_each_generations_socket_and_marks_the_one_new_connections_go_to() {
    let mut snapshot = api(30);
    let old = ListenerView {
        inode: 5150,
        accept_queue: 3,
        held_by: vec![1],
        new_connections: false,
        ..snapshot.listeners[0].clone()
    };
    snapshot.listeners[0].held_by = vec![2];
    snapshot.listeners.insert(0, old);
    let mut app = App::new(1000, false);
    app.on_snapshot(vec![ServiceState {
        name: "api".into(),
        restartable: true,
        snapshot: Ok(snapshot),
    }]);
    let screen = text(&app, 160, 40);
    assert!(
        screen.contains("queue 3/4096  gens 1  draining"),
        "{screen}"
    );
    assert!(screen.contains("queue 2/4096  gens 2  ← new"), "{screen}");
}

#[test]
fn a_steered_udp_listener_shows_each_generations_socket_with_its_queued_bytes() {
    let mut snapshot = api(30);
    let new = ListenerView {
        inode: 6160,
        address: "udp://127.0.0.1:5353".into(),
        accept_queue: 0,
        backlog: 0,
        held_by: vec![2],
        new_connections: true,
    };
    let old = ListenerView {
        inode: 6150,
        accept_queue: 768,
        held_by: vec![1],
        new_connections: false,
        ..new.clone()
    };
    snapshot.listeners.extend([old, new]);
    let mut app = App::new(1000, false);
    app.on_snapshot(vec![ServiceState {
        name: "api".into(),
        restartable: true,
        snapshot: Ok(snapshot),
    }]);
    let screen = text(&app, 160, 40);
    assert!(screen.contains("udp://127.0.0.1:5353"), "{screen}");
    assert!(
        screen.contains("queued 768 B  gens 1  draining"),
        "{screen}"
    );
    assert!(screen.contains("queued 0 B  gens 2  ← new"), "{screen}");
}

/// `api` mid-flip as [`app`] has it, with `intercept_binds`: generation 2's bind got the
/// listener, generation 1 ran before the service intercepted binds.
fn intercepting_app() -> App {
    let mut app = App::new(1000, true);
    for at in 0..=31 {
        let mut snapshot = api(at);
        snapshot.intercept_binds = true;
        for g in snapshot
            .generations
            .iter_mut()
            .filter(|g| g.generation == 2)
        {
            g.intercept = Some(InterceptInfo {
                listeners: vec![InterceptedListener {
                    listener: "http".into(),
                    address: "127.0.0.1:8080".into(),
                    binds: 1,
                    unlinks_skipped: 0,
                    last_pid: Some(1300),
                    last_fd: Some(3),
                }],
                binds_continued: 1,
                binds_failed: 0,
                last_error: None,
            });
        }
        app.on_snapshot(vec![ServiceState {
            name: "api".into(),
            restartable: true,
            snapshot: Ok(snapshot),
        }]);
    }
    app
}

#[test]
fn an_intercepting_service_says_so_and_counts_each_generations_binds() {
    let mut app = intercepting_app();
    let main = text(&app, 80, 24);
    assert!(main.contains("binds intercepted"), "{main}");
    insta::assert_snapshot!("intercepting_main", main);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.mode, Mode::Detail);
    let detail = text(&app, 80, 24);
    assert!(
        detail.contains("binds: 1 got a listener, 1 let through"),
        "{detail}"
    );
    insta::assert_snapshot!("intercepting_detail", detail);
    // The generation started without interception says so.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Enter);
    let detail = text(&app, 80, 24);
    assert!(
        detail.contains("binds: not intercepted (started without intercept_binds)"),
        "{detail}"
    );
}

#[test]
fn a_failing_service_shows_why_in_place_of_the_connections() {
    let mut snapshot = api(40);
    snapshot.generations.clear();
    snapshot.listeners[0].held_by.clear();
    snapshot.failing = Some(zd_core::proto::FailingInfo {
        since_unix_ms: T0 + 38_000,
        failed_starts: 5,
        window_ms: 60_000,
        refusing_since_unix_ms: None,
        generation: Some(7),
        pid: Some(1400),
        exit: Some(zd_core::proto::ExitInfo::Code { code: 1 }),
        reason: None,
        output: vec!["error: cannot read /etc/api.conf".into()],
    });
    let mut app = App::new(1000, false);
    app.on_snapshot(vec![ServiceState {
        name: "api".into(),
        restartable: true,
        snapshot: Ok(snapshot),
    }]);
    insta::assert_snapshot!(text(&app, 80, 24));
}

#[test]
fn a_failing_service_past_refuse_after_says_its_listeners_refuse() {
    let mut snapshot = api(40);
    snapshot.generations.clear();
    snapshot.listeners[0].held_by.clear();
    snapshot.failing = Some(zd_core::proto::FailingInfo {
        since_unix_ms: T0 + 38_000,
        failed_starts: 5,
        window_ms: 60_000,
        refusing_since_unix_ms: Some(T0 + 39_000),
        generation: Some(7),
        pid: Some(1400),
        exit: Some(zd_core::proto::ExitInfo::Code { code: 1 }),
        reason: None,
        output: vec!["error: cannot read /etc/api.conf".into()],
    });
    let mut app = App::new(1000, false);
    app.on_snapshot(vec![ServiceState {
        name: "api".into(),
        restartable: true,
        snapshot: Ok(snapshot),
    }]);
    insta::assert_snapshot!(text(&app, 80, 24));
}

fn api_generation(generation: u64) -> OutputTarget {
    OutputTarget {
        service: "api".into(),
        generation,
    }
}

/// `n` lines generation 2 printed a second apart from `T0`, every third on stderr, the
/// sequence numbers from `first_seq` on.
fn printed(first_seq: u64, n: u64) -> Vec<LogLine> {
    (first_seq..first_seq + n)
        .map(|seq| LogLine {
            instance: 0,
            generation: 2,
            seq,
            unix_ms: T0 + seq * 1000 + 7,
            stream: if seq % 3 == 0 {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            },
            text: format!("line {seq}"),
        })
        .collect()
}

fn read(lines: Result<Vec<LogLine>, String>) -> OutputRead {
    OutputRead {
        target: api_generation(2),
        lines,
    }
}

#[test]
fn o_opens_the_selected_generations_output_and_o_or_esc_close_it() {
    let mut app = app(true);
    assert_eq!(
        key(&mut app, KeyCode::Char('o')),
        Some(Action::WatchOutput(Some(api_generation(2))))
    );
    assert_eq!(app.mode, Mode::Output);
    let screen = text(&app, 80, 24);
    assert!(
        screen.contains("output of generation 2 of 'api'"),
        "{screen}"
    );
    assert!(screen.contains("reading…"), "{screen}");
    assert_eq!(
        key(&mut app, KeyCode::Char('o')),
        Some(Action::WatchOutput(None))
    );
    assert_eq!(app.mode, Mode::Main);
    assert!(app.output.is_none());
    // The generation selected is the one shown; Esc closes too, and q quits from it.
    key(&mut app, KeyCode::Up);
    assert_eq!(
        key(&mut app, KeyCode::Char('o')),
        Some(Action::WatchOutput(Some(api_generation(1))))
    );
    assert_eq!(key(&mut app, KeyCode::Esc), Some(Action::WatchOutput(None)));
    assert_eq!(app.mode, Mode::Main);
    key(&mut app, KeyCode::Char('o'));
    assert_eq!(key(&mut app, KeyCode::Char('q')), Some(Action::Quit));
}

#[test]
fn o_without_a_generation_opens_nothing() {
    let mut app = App::new(1000, true);
    app.on_snapshot(Vec::new());
    assert_eq!(key(&mut app, KeyCode::Char('o')), None);
    assert_eq!(app.mode, Mode::Main);
}

#[test]
fn the_output_pane_shows_the_newest_lines_with_their_time_and_stream() {
    let mut app = app(true);
    key(&mut app, KeyCode::Char('o'));
    let mut lines = printed(1, 40);
    lines[39].text = "GET /\u{1b}[2J done".into();
    app.on_output(read(Ok(lines)));
    let terminal = screen(&app, 80, 24);
    let buffer = terminal.backend().buffer();
    // Line 39 was printed on stderr: it stands out.
    let row = (0..24)
        .find(|&y| {
            (0..80)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
                .contains("line 39")
        })
        .expect("line 39 on screen");
    let colours: Vec<Color> = (0..80).map(|x| buffer[(x, row)].fg).collect();
    assert!(colours.contains(&Color::Yellow), "{colours:?}");
    insta::assert_snapshot!(terminal.backend().to_string());
}

#[test]
fn the_output_pane_says_why_when_the_output_is_not_kept_or_nothing_was_printed() {
    let mut app = app(true);
    key(&mut app, KeyCode::Char('o'));
    app.on_output(read(Err(
        "generation 2's output is not kept (log.lines: 0)".into(),
    )));
    insta::assert_snapshot!(text(&app, 80, 24));
    app.on_output(read(Ok(Vec::new())));
    let screen = text(&app, 80, 24);
    assert!(
        screen.contains("generation 2 printed nothing yet"),
        "{screen}"
    );
    // A read of another generation, asked for before the pane changed, is left alone.
    app.on_output(OutputRead {
        target: api_generation(1),
        lines: Ok(printed(1, 3)),
    });
    assert!(text(&app, 80, 24).contains("printed nothing yet"));
}

#[test]
fn the_output_pane_scrolls_and_keeps_its_lines_in_view_as_new_ones_arrive() {
    let mut app = app(false);
    key(&mut app, KeyCode::Char('o'));
    app.on_output(read(Ok(printed(1, 60))));
    // 22 rows between the title and the status line, 20 of them inside the borders.
    let screen = text(&app, 80, 24);
    assert!(screen.contains("line 60"), "{screen}");
    assert!(!screen.contains("line 40 "), "{screen}");
    key(&mut app, KeyCode::Char('k'));
    key(&mut app, KeyCode::Up);
    let screen = text(&app, 80, 24);
    assert!(screen.contains("line 39"), "{screen}");
    assert!(!screen.contains("line 59"), "{screen}");
    assert!(screen.contains("2 newer below"), "{screen}");
    // Five more lines arrive: the same ones stay in view.
    app.on_output(read(Ok(printed(6, 60))));
    let screen = text(&app, 80, 24);
    assert!(screen.contains("line 39"), "{screen}");
    assert!(screen.contains("7 newer below"), "{screen}");
    key(&mut app, KeyCode::Char('g'));
    let screen = text(&app, 80, 24);
    assert!(screen.contains("line 6 "), "{screen}");
    assert!(screen.contains("line 25"), "{screen}");
    key(&mut app, KeyCode::Char('G'));
    let screen = text(&app, 80, 24);
    assert!(screen.contains("line 65"), "{screen}");
    assert!(!screen.contains("newer below"), "{screen}");
}

#[test]
fn the_generations_table_counts_the_output_lines_kept() {
    let mut snapshot = api(30);
    snapshot.generations[0].output_lines = None;
    let mut app = App::new(1000, false);
    app.on_snapshot(vec![ServiceState {
        name: "api".into(),
        restartable: true,
        snapshot: Ok(snapshot),
    }]);
    let screen = text(&app, 80, 24);
    // GEN STATE PIDS (main, +more) AGE CPU RSS FDS OUT: the ninth word.
    let out = |pid: &str| {
        let row = screen
            .lines()
            .find(|l| l.contains(pid))
            .unwrap_or_else(|| panic!("no row with {pid}:\n{screen}"));
        let cells: Vec<&str> = row
            .split(|c: char| c.is_whitespace() || c == '│' || c == '"')
            .filter(|c| !c.is_empty())
            .collect();
        cells[8].to_owned()
    };
    assert!(screen.contains(" FDS    OUT   LSN "), "{screen}");
    assert_eq!(out("1200 +2"), "-", "{screen}");
    assert_eq!(out("1300 +2"), "40", "{screen}");
}

fn status(log_lines: Option<u32>, output_lines: Option<u64>) -> Status {
    Status {
        bake: None,
        capacity: None,
        instances: None,
        service: "api".into(),
        supervisor_pid: 1100,
        started_unix_ms: T0,
        config_path: None,
        active_generation: Some(2),
        restart_in_progress: None,
        generations: vec![GenerationInfo {
            instances: Vec::new(),
            generation: 2,
            pid: 1300,
            state: GenerationState::Active,
            started_unix_ms: T0,
            exit: None,
            intercept: None,
            output_lines,
        }],
        listeners: Vec::new(),
        sockets: Vec::new(),
        restarts: RestartCounters::default(),
        last_restart: None,
        containment: None,
        intercept_binds: false,
        failing: None,
        supervisor: None,
        log_lines,
    }
}

#[test]
fn the_status_says_when_a_generations_output_cannot_be_read() {
    let why = |driver, status: &Status, generation| unreadable("api", driver, status, generation);
    assert_eq!(why(None, &status(Some(1000), Some(12)), 2), None);
    assert_eq!(
        why(None, &status(Some(0), None), 2).as_deref(),
        Some("generation 2's output is not kept (log.lines: 0)")
    );
    assert_eq!(
        why(None, &status(Some(1000), None), 2).as_deref(),
        Some("generation 2's output is not kept: it started while its supervisor kept none")
    );
    // A generation the status no longer lists: its supervisor may still keep its lines.
    assert_eq!(why(None, &status(Some(1000), None), 1), None);
    let older = why(None, &status(None, None), 2).expect("a reason");
    assert!(older.contains("older zdctl"), "{older}");
    let driven = why(Some("nginx"), &status(None, None), 2).expect("a reason");
    assert_eq!(
        driven,
        "'api' is run by nginx: its programs print to nginx's own output or log files, \
         which top does not read"
    );
}
