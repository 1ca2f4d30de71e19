//! Parsers and config of the drivers, on fixture text.

use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<DriverConfig, String> {
    parse_str(text, Path::new("/etc/zdctl/services.d/web.yaml")).map_err(|e| e.to_string())
}

#[test]
fn an_nginx_service_needs_only_a_driver_and_a_pidfile() {
    let config =
        parse("driver: nginx\npidfile: /run/nginx.pid\nnginx: { mode: reload }\ntimeout: 5s\n")
            .expect("valid");
    assert_eq!(config.name, "web");
    assert_eq!(config.kind, DriverKind::Nginx);
    assert_eq!(config.nginx, NginxMode::Reload);
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.expect.as_deref(), Some("nginx"));
    assert!(names_driver("driver: nginx\n"));
    assert!(!names_driver("command: [true]\n"));
}

#[test]
fn an_unknown_key_is_an_error_with_its_position_and_a_guess() {
    let err = parse("driver: psflip\npidfile: /run/p.pid\ntimout: 5s\n").expect_err("unknown key");
    assert!(
        err.starts_with("/etc/zdctl/services.d/web.yaml:3:"),
        "{err}"
    );
    assert!(err.contains("did you mean `timeout`?"), "{err}");
}

#[test]
fn every_key_of_a_driver_file_that_cannot_be_read_is_reported() {
    let err = parse("driver: nginx\ntimout: 5s\nnginx: { mode: relaod }\nsignal: HUPP\n")
        .expect_err("three problems");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].contains(":2:1: unknown key `timout`"), "{err}");
    assert!(
        lines[1].contains(":3:") && lines[1].contains("did you mean `reload`?"),
        "{err}"
    );
    assert!(
        lines[2].contains(":4:") && lines[2].contains("(did you mean 'HUP'?)"),
        "{err}"
    );
}

#[test]
fn an_unknown_driver_lists_the_known_ones() {
    let err = parse("driver: nginxx\npidfile: /run/p.pid\n").expect_err("unknown driver");
    assert!(err.contains(":1:"), "{err}");
    assert!(err.contains("nginx"), "{err}");
}

#[test]
fn a_section_for_another_driver_and_a_missing_pidfile_are_errors() {
    let err = parse("driver: psflip\npidfile: /p\nnginx: { mode: reload }\n").expect_err("section");
    assert!(
        err.contains(":3:1: `nginx:` applies to `driver: nginx` only"),
        "{err}"
    );
    let err = parse("driver: signal\n").expect_err("no pidfile");
    assert!(err.contains("needs `pidfile:`"), "{err}");
    let err = parse("driver: start_server\npidfile: /p\n").expect_err("no status file");
    assert!(err.contains("needs `status_file:`"), "{err}");
    let err = parse("driver: haproxy\n").expect_err("no socket");
    assert!(err.contains("needs `socket:`"), "{err}");
}

#[test]
fn relative_paths_resolve_against_the_service_file() {
    let config =
        parse("driver: signal\npidfile: run/app.pid\nwatch: child\nsignal: USR2\n").expect("valid");
    assert_eq!(
        config.pidfile.as_deref(),
        Some(Path::new("/etc/zdctl/services.d/run/app.pid"))
    );
    assert_eq!(config.watch, WatchMode::Child);
    assert_eq!(config.signal, crate::signal::Signal::User2);
}

#[test]
fn start_server_status_lines_are_generation_and_pid() {
    assert_eq!(
        start_server::parse_status("3:1200\n2:1100\nnoise\n"),
        vec![(2, 1100), (3, 1200)]
    );
    assert!(start_server::parse_status("").is_empty());
}

#[test]
fn haproxy_show_proc_lists_master_workers_and_old_workers() {
    let text = "\
#<PID>          <type>          <reloads>       <uptime>        <version>
4100            master          2 [failed: 1]   0d00h01m10s     2.6.12-1+deb12u4
# workers
4321            worker          0               0d00h00m03s     2.6.12-1+deb12u4
# old workers
4200            worker          1               0d00h00m40s     2.6.12-1+deb12u4
# programs

";
    let list = haproxy::parse_show_proc(text).expect("parses");
    assert_eq!(list.master, 4100);
    assert_eq!(list.reloads, 2);
    assert_eq!(list.failed, 1);
    assert_eq!(list.workers, vec![4321]);
    assert_eq!(list.old_workers, vec![4200]);
    assert_eq!(haproxy::parse_show_proc("Unknown command\n"), None);
}

#[test]
fn systemctl_show_output_gives_pid_state_and_status() {
    let text =
        "MainPID=812\nActiveState=active\nSubState=running\nExecMainStatus=0\nResult=success\n";
    let state = parse_show(text).expect("parses");
    assert_eq!(state.main_pid, 812);
    assert_eq!(state.active_state, "active");
    assert_eq!(state.sub_state, "running");
    assert_eq!(state.result, "success");
    let failed =
        parse_show("MainPID=0\nActiveState=failed\nExecMainStatus=203\nResult=exit-code\n")
            .expect("parses");
    assert_eq!((failed.main_pid, failed.exec_main_status), (0, 203));
    assert_eq!(parse_show("garbage\n"), None);
    assert_eq!(parse_show("MainPID=x\nActiveState=active\n"), None);
}

#[test]
fn an_nginx_started_by_a_bare_name_cannot_exec_itself() {
    assert_eq!(
        nginx::relative_argv0("nginx: master process nginx -p /srv/www -c nginx.conf").as_deref(),
        Some("nginx")
    );
    assert_eq!(
        nginx::relative_argv0("nginx: master process /usr/sbin/nginx -c /etc/nginx.conf"),
        None
    );
}

#[test]
fn einhorn_state_lists_workers_and_their_acks() {
    let reply = r#"{"id":1,"message":"{\"state\":{\"children\":{\"101\":{\"type\":\"worker\",\"acked\":true},\"102\":{\"type\":\"worker\",\"acked\":false},\"103\":{\"type\":\"state_passer\"}}}}"}"#;
    assert_eq!(
        einhorn::parse_state(reply).map(|s| s.workers),
        Some(vec![(101, true), (102, false)])
    );
    assert!(einhorn::parse_state("hello\n").is_none());
}

#[test]
fn einhorn_state_as_ruby_dumps_it_has_symbol_keys_integer_pids_and_tags() {
    // `YAML.dump({"message" => YAML.dump({state: ...}), "request_id" => 1})`, framed as
    // einhorn frames it: `%` as `%25`, newlines as `%0A`.
    let state = "---\n:state:\n  :children:\n    4101:\n      :type: :worker\n      \
                 :version: 2\n      :acked: true\n      :signaled: !ruby/object:Set\n        \
                 hash: {}\n      :last_signaled_at:\n      :index: 0\n      \
                 :spinup_time: 2026-11-22 05:00:00.123456789 +00:00\n    4102:\n      \
                 :type: :worker\n      :version: 2\n      :acked: false\n    4103:\n      \
                 :type: :state_passer\n  :generation: 3\n  :version: 7\n  :upgrading: true\n  \
                 :consecutive_deaths_before_ack: 1\n  :ack_mode:\n    :type: :timer\n    \
                 :timeout: 1\n  :cmd_name: 100%\n";
    let indented: String = state.lines().map(|l| format!("  {l}\n")).collect();
    let reply = format!("---\nmessage: |\n{indented}request_id: 1\n");
    let line = reply.replace('%', "%25").replace('\n', "%0A") + "\n";
    assert_eq!(
        einhorn::parse_state(&line),
        Some(einhorn::State {
            workers: vec![(4101, true), (4102, false)],
            version: Some(7),
            upgrading: true,
            deaths_before_ack: 1,
        })
    );
    assert!(einhorn::parse_state("Could not parse command\n").is_none());
}

#[test]
fn einhorn_upgrade_log_lines_name_launched_dead_and_signalled_workers() {
    use einhorn::{Progress, parse_message, parse_progress};
    let framed = |message: &str| {
        let reply = format!("---\nmessage: {message:?}\nrequest_id: 2\nwait: true\n");
        reply.replace('%', "%25").replace('\n', "%0A") + "\n"
    };
    let read = |message: &str| parse_progress(&parse_message(&framed(message)).expect("a reply"));
    assert_eq!(
        read("===> Launched 4242 (index: 1)"),
        Progress::Launched(4242)
    );
    assert_eq!(
        read("===> Exited worker 4243 before it was ACKed"),
        Progress::DiedUnacked(4243)
    );
    assert_eq!(
        read("===> Exited worker 4243"),
        Progress::Other("===> Exited worker 4243".to_owned())
    );
    assert_eq!(
        read("Sending USR2 to [4101, 4102]"),
        Progress::Sending("USR2".to_owned(), vec![4101, 4102])
    );
    assert_eq!(read("Upgrade done"), Progress::Done);
    assert!(parse_message("\n").is_none());
}

#[test]
fn a_preloaded_library_names_the_wrapper_of_an_unmodified_program() {
    let maps = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 131 /usr/bin/python3.11
7f1c2a000000-7f1c2a004000 r-xp 00000000 08:01 912 /usr/lib/huptime/huptime.so
7f1c2b000000-7f1c2b1d5000 r-xp 00000000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1e9f0000-7ffd1ea11000 rw-p 00000000 00:00 0 [stack]
";
    assert!(process::maps_name_library(maps, "huptime"));
    assert!(!process::maps_name_library(maps, "nginx"));
    // The program's own file is not a library: only the command line or exe can name it.
    assert!(!process::maps_name_library(maps, "python3"));
}

#[test]
fn a_child_reaped_between_two_looks_is_still_seen_to_have_died() {
    let me = i32::try_from(std::process::id()).expect("pid");
    let reaped = process::Reaped::watch(me);
    // Born, dead and reaped before anything looked at the process's children.
    let status = std::process::Command::new("true")
        .status()
        .expect("run true");
    assert!(status.success());
    assert!(reaped.any(), "a reaped child left no trace in cminflt");
}

#[test]
fn a_child_that_died_unreaped_is_a_dead_child() {
    let me = i32::try_from(std::process::id()).expect("pid");
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = i32::try_from(child.id()).expect("pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !process::dead_children(me).contains(&pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never showed as dead"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!process::live_children(me).contains(&pid));
    child.wait().expect("reap");
}
