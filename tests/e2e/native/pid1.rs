//! `zdctl run` as PID 1 of a pid namespace, as a container's init:
//! `unshare --pid --fork --mount-proc zdctl run NAME`. There the kernel hands every orphan
//! of the namespace to the supervisor, delivers it only the signals it handles, and kills
//! the whole namespace when it exits. Needs root (a pid namespace); skipped loudly
//! otherwise, and a failure under `ZD_REQUIRE_PEERS=1`.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use zd_core::proto::Status;

use crate::support::*;

/// How many orphans each batch makes.
const ORPHANS: usize = 1000;

/// Whether this test can make a pid namespace; says why not otherwise.
fn can_unshare(test: &str) -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        crate::drivers::skip(test, "a pid namespace (unshare --pid) needs root");
        return false;
    }
    for tool in ["unshare", "nsenter"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            crate::drivers::skip(test, &format!("'{tool}' (util-linux) is not installed"));
            return false;
        }
    }
    true
}

/// Whether generations get cgroups, or the supervisor finds them as a subreaper only (as
/// in a container whose cgroup hierarchy is read-only).
#[derive(Debug, Clone, Copy)]
enum Containment {
    Cgroups,
    Subreaper,
}

/// `zdctl -v run NAME` as PID 1 of a new pid namespace, with this test's directories.
fn pid1_command(env: &TestEnv, name: &str, containment: Containment) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(zdctl_bin())
        .args(["-v", "run", name])
        .env("ZDCTL_RUNTIME_DIR", &env.runtime_dir)
        .env("ZDCTL_CONFIG_DIR", &env.config_dir)
        .env_remove("ZD_LOG")
        .stdin(Stdio::null());
    match containment {
        Containment::Cgroups => cmd.env_remove("ZDCTL_CGROUPS"),
        Containment::Subreaper => cmd.env("ZDCTL_CGROUPS", "off"),
    };
    cmd
}

/// A supervisor running as PID 1: its pid as the host sees it, and its pid namespace.
struct Pid1 {
    pid: i32,
    namespace: u64,
}

/// Starts `zdctl run NAME` as PID 1 (the guard of `env` kills `unshare`'s group and the
/// namespace's init with it, which ends the namespace) and waits for an active generation.
fn start_pid1(env: &mut TestEnv, name: &str, containment: Containment) -> (Status, Pid1) {
    let cmd = pid1_command(env, name, containment);
    let status = env.start_command(name, cmd);
    assert_eq!(
        status.supervisor_pid, 1,
        "zdctl run is not its namespace's PID 1"
    );
    let unshare = env.supervisor(name).child.id() as i32;
    let pid = match crate::drivers::children(unshare).as_slice() {
        [pid] => *pid,
        other => panic!("unshare should have one child, zdctl run: {other:?}"),
    };
    let namespace = pid_namespace(pid).expect("the supervisor's pid namespace");
    assert_ne!(
        pid_namespace(std::process::id() as i32),
        Some(namespace),
        "zdctl run shares the test's pid namespace"
    );
    (status, Pid1 { pid, namespace })
}

fn pid_namespace(pid: i32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// The processes of pid namespace `namespace` (host pids), with their states. A zombie
/// still names its namespace until it is reaped.
fn namespace_processes(namespace: u64) -> Vec<(i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid_namespace(pid) == Some(namespace))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat[stat.rfind(')')? + 2..].chars().next()?;
            Some((pid, state))
        })
        .collect()
}

fn zombies(namespace: u64) -> Vec<i32> {
    namespace_processes(namespace)
        .into_iter()
        .filter(|(_, state)| *state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits until no process of the namespace is a zombie, the orphans' `sleep`s included
/// (they must have exited, and been reaped).
fn wait_no_zombie(namespace: u64, sleeper: &str) {
    let start = Instant::now();
    loop {
        let zombies = zombies(namespace);
        let sleeping = namespace_processes(namespace)
            .into_iter()
            .filter(|(pid, _)| cmdline(*pid).starts_with(sleeper))
            .count();
        if zombies.is_empty() && sleeping == 0 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "zombies left in the namespace: {} (the first: {:?}), orphans still running: \
             {sleeping}",
            zombies.len(),
            &zombies[..zombies.len().min(10)]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// A shell script that leaves [`ORPHANS`] orphans: each `( ... & )` is a subshell that
/// starts a background job and exits at once, so the job's parent is gone and the kernel
/// hands it to the nearest subreaper, or to the namespace's PID 1. Most exit at once; two
/// (`sleep SLEEP`) live long enough to be seen as the supervisor's children.
fn orphans_script(sleep: &str) -> String {
    format!(
        "i=0; while [ $i -lt {ORPHANS} ]; do ( true & ); i=$((i+1)); done; \
         ( exec sleep {sleep} & ); ( exec sleep {sleep} & )"
    )
}

/// A generation that first leaves [`ORPHANS`] orphans, marks `marker`, then execs the
/// fixture with its log in `log`.
fn orphaning_service(env: &TestEnv, name: &str, marker: &Path, log: &Path) {
    let script = format!(
        "{}; : > '{}'; exec '{}' --log '{}'",
        orphans_script("2.5"),
        marker.display(),
        fixture_bin().display(),
        log.display()
    );
    env.write_service(
        name,
        &format!(
            "command: [\"/bin/sh\", \"-c\", {script:?}]\nlisten:\n  - http=127.0.0.1:0\n\
             drain_timeout: 10s\n"
        ),
    );
}

/// The orphans' long sleepers are children of the supervisor while they live: the kernel
/// re-parented them to PID 1.
fn assert_sleepers_reparented_to(sup: &Pid1, sleeper: &str) {
    let sleepers = wait_for("the orphans' sleepers", || {
        let found: Vec<i32> = namespace_processes(sup.namespace)
            .into_iter()
            .filter(|(pid, _)| cmdline(*pid).starts_with(sleeper))
            .map(|(pid, _)| pid)
            .collect();
        (!found.is_empty()).then_some(found)
    });
    for pid in sleepers {
        if let Some(parent) = parent_of(pid) {
            assert_eq!(
                parent, sup.pid,
                "orphan {pid} was not re-parented to the namespace's PID 1"
            );
        }
    }
}

fn as_pid1_orphans_are_reaped_restarts_work_and_sigterm_stops_cleanly(containment: Containment) {
    let test = format!("native::pid1 ({containment:?})");
    if !can_unshare(&test) {
        return;
    }
    let mut env = TestEnv::new();
    let marker = env.path("orphans-made");
    let app_log = env.path("app.log");
    orphaning_service(&env, "api", &marker, &app_log);
    let (status, sup) = start_pid1(&mut env, "api", containment);
    let addr = address_of(&status);
    wait_for("generation 1 to make its orphans", || {
        marker.exists().then_some(())
    });

    // A generation's orphans come to PID 1, and every one is reaped.
    assert_sleepers_reparented_to(&sup, "sleep 2.5");
    wait_no_zombie(sup.namespace, "sleep 2.5");
    let (code, _) = http_get(&addr, "/").expect("GET / from generation 1");
    assert_eq!(code, 200);

    // So are those of a process that belongs to no generation (`docker exec`).
    let mut outsider = Command::new("nsenter");
    outsider
        .args(["--target", &sup.pid.to_string(), "--pid", "--"])
        .args(["/bin/sh", "-c", &orphans_script("1.5")])
        .stdin(Stdio::null());
    let outsider = Spawned::start(outsider);
    assert_eq!(outsider.wait(), Some(0), "the outsider's script failed");
    assert_sleepers_reparented_to(&sup, "sleep 1.5");
    wait_no_zombie(sup.namespace, "sleep 1.5");

    // A restart through the control socket, from outside the namespace: generation 2
    // makes its own orphans, and they are reaped as well.
    std::fs::remove_file(&marker).expect("remove the marker");
    let out = env.run_zdctl(&["restart", "api"]);
    assert_code(&out, 0);
    let status = env.status("api").expect("status after the restart");
    assert_eq!(status.active_generation, Some(2));
    assert!(marker.exists(), "generation 2 made its orphans");
    let (code, _) = http_get(&addr, "/").expect("GET / from generation 2");
    assert_eq!(code, 200);
    wait_no_zombie(sup.namespace, "sleep 2.5");

    // SIGTERM to PID 1 (a `docker stop`): the generation gets its stop signal, drains and
    // exits 0; the supervisor exits 0 and the namespace ends with it.
    // SAFETY: kill(2) on the supervisor this test started, still running (it answered).
    unsafe { libc::kill(sup.pid, libc::SIGTERM) };
    assert_eq!(env.wait_exit("api"), Some(0), "{}", env.log("api"));
    let app = std::fs::read_to_string(&app_log).unwrap_or_default();
    assert_eq!(
        app.matches("signal TERM").count(),
        2,
        "each generation got one SIGTERM:\n{app}"
    );
    assert_eq!(
        app.matches("exit code=0").count(),
        2,
        "each generation exited 0 after its drain:\n{app}"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the listener is still open after the stop"
    );
    wait_for("the namespace to be gone", || {
        namespace_processes(sup.namespace).is_empty().then_some(())
    });
}

#[test]
fn as_pid1_orphans_are_reaped_restarts_work_and_sigterm_stops_cleanly_with_cgroups() {
    as_pid1_orphans_are_reaped_restarts_work_and_sigterm_stops_cleanly(Containment::Cgroups);
}

#[test]
fn as_pid1_orphans_are_reaped_restarts_work_and_sigterm_stops_cleanly_as_subreaper() {
    as_pid1_orphans_are_reaped_restarts_work_and_sigterm_stops_cleanly(Containment::Subreaper);
}

#[test]
fn as_pid1_a_stop_that_must_kill_the_service_exits_1() {
    if !can_unshare("native::pid1::as_pid1_a_stop_that_must_kill_the_service_exits_1") {
        return;
    }
    let mut env = TestEnv::new();
    let app_log = env.path("app.log");
    env.fixture_service(
        "api",
        &["--ignore-term", "--log", &app_log.display().to_string()],
        "drain_timeout: 1s\n",
    );
    let (status, sup) = start_pid1(&mut env, "api", Containment::Cgroups);
    // The fixture ignores TERM once it serves: a TERM before that would end it at once,
    // and the stop would be clean.
    let addr = address_of(&status);
    wait_for("the fixture to answer", || http_get(&addr, "/").ok());
    // SAFETY: kill(2) on the supervisor this test started, still running (it answered).
    unsafe { libc::kill(sup.pid, libc::SIGTERM) };
    assert_eq!(env.wait_exit("api"), Some(1));
    let log = env.log("api");
    assert!(log.contains("not cleanly"), "{log}");
    let app = std::fs::read_to_string(&app_log).unwrap_or_default();
    assert!(app.contains("ignoring TERM"), "{app}");
}

#[test]
fn as_pid1_zdctl_stop_from_outside_the_namespace_waits_for_the_supervisor() {
    if !can_unshare("native::pid1::as_pid1_zdctl_stop_from_outside_the_namespace") {
        return;
    }
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let (_, sup) = start_pid1(&mut env, "api", Containment::Cgroups);
    // `status` calls the supervisor pid 1; `stop` must wait for this one, not the host's.
    assert_code(&env.run_zdctl(&["stop", "api"]), 0);
    assert!(!is_alive(sup.pid), "the supervisor outlived 'zdctl stop'");
    assert_eq!(env.wait_exit("api"), Some(0));
}

#[test]
fn as_pid1_a_service_that_cannot_start_exits_2() {
    if !can_unshare("native::pid1::as_pid1_a_service_that_cannot_start_exits_2") {
        return;
    }
    let env = TestEnv::new();
    // Executable, but its interpreter does not exist: execve fails in the generation.
    let program = env.path("broken");
    std::fs::write(&program, "#!/nonexistent/interpreter\n").expect("write the program");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    env.write_service(
        "api",
        &format!(
            "command: [{:?}]\nlisten:\n  - http=127.0.0.1:0\n",
            program.display().to_string()
        ),
    );
    let log = env.path("api.supervisor.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = pid1_command(&env, "api", Containment::Cgroups);
    cmd.stdout(file.try_clone().expect("dup")).stderr(file);
    let code = Spawned::start(cmd).wait();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("cannot start generation 1"), "{output}");
}

/// A command in its own process group, killed with it when dropped (even when the test
/// fails first).
struct Spawned(Child);

impl Spawned {
    fn start(mut cmd: Command) -> Spawned {
        // SAFETY: setpgid is async-signal-safe; the guard kills the group by its id.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        Spawned(cmd.spawn().expect("spawn"))
    }

    /// Waits for its exit within [`DEADLINE`]; its exit code.
    fn wait(mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(start.elapsed() < DEADLINE, "the command did not exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let pid = self.0.id() as i32;
            // SAFETY: kill(2) on the group of a child not yet reaped, so its id is still
            // its own.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

#[test]
fn as_pid1_two_supervisors_of_the_same_service_keep_their_own_cgroups() {
    if !can_unshare("native::pid1::as_pid1_two_supervisors_of_the_same_service") {
        return;
    }
    // Two containers that share the cgroup hierarchy, each with `api` as its PID 1.
    let mut first = TestEnv::new();
    first.fixture_service("api", &[], "");
    let (_, one) = start_pid1(&mut first, "api", Containment::Cgroups);
    let mut second = TestEnv::new();
    second.fixture_service("api", &[], "");
    let (status, two) = start_pid1(&mut second, "api", Containment::Cgroups);
    assert!(is_alive(one.pid) && is_alive(two.pid));
    // Generation 1 of the second, as its namespace names it and as the host does.
    let generation = active_pid(&status);
    let host_pid = namespace_processes(two.namespace)
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| nspid(*pid) == Some(generation))
        .expect("the second's generation 1");
    let before = zd_core::contain::cgroup_of(host_pid).expect("its cgroup");
    // The first's restart ends its generation 1 with its cgroup: the second's is not in it.
    assert_code(&first.run_zdctl(&["restart", "api"]), 0);
    assert!(
        is_alive(host_pid),
        "the first supervisor's restart killed the second's generation (in cgroup '{before}')"
    );
    let status = second.status("api").expect("the second answers");
    assert_eq!(status.restarts.crashes, 0);
    assert_eq!(status.active_generation, Some(1));
}

/// The pid of host process `pid` in its own (innermost) pid namespace.
fn nspid(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}
