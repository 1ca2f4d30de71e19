//! `contrib/ansible`'s playbook with ansible-core against three local "hosts": three `zdctl
//! run` supervisors of a service `api`, each with its own runtime and config directories
//! (`ansible_connection: local`, the directories as host vars). The second host's next
//! generation crashes at start, so the rollout must stop there with the third host
//! untouched.
//!
//! Needs `ansible-playbook`: `ZD_ANSIBLE_PLAYBOOK` (a path, relative to the workspace root
//! unless absolute; `.ci/run` sets it to the venv it installs ansible-core into), else
//! PATH. Without it the test is skipped loudly, and fails under `ZD_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::drivers::skip;
use crate::support::*;

/// How long the whole playbook may take: three hosts, one restart each at most. Generous,
/// since ansible starts a Python interpreter for every task on a shared machine.
const PLAYBOOK_DEADLINE: Duration = Duration::from_secs(180);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// `ansible-playbook` from `ZD_ANSIBLE_PLAYBOOK` or PATH, or `None` after [`skip`].
fn ansible_playbook(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ZD_ANSIBLE_PLAYBOOK") {
        let path = workspace_root().join(path);
        if path.is_file() {
            return Some(path);
        }
        skip(
            test,
            &format!(
                "ZD_ANSIBLE_PLAYBOOK names '{}', which is not a file",
                path.display()
            ),
        );
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("ansible-playbook"))
        .find(|p| p.is_file());
    if found.is_none() {
        skip(
            test,
            "ansible-playbook is not on PATH and ZD_ANSIBLE_PLAYBOOK is not set (PyPI's \
             ansible-core: `pip install 'ansible-core>=2.17,<2.20'` in a venv, as .ci/run does)",
        );
    }
    found
}

/// A process started in its own group; the group is killed when this is dropped, so that
/// nothing it started (ansible's workers, the zdctl they run) outlives the test.
struct Group(Child);

impl Group {
    fn spawn(mut cmd: Command) -> Group {
        use std::os::unix::process::CommandExt;
        Group(cmd.process_group(0).spawn().expect("spawn"))
    }

    /// Waits for the exit, killing the group at `deadline`.
    fn wait(&mut self, what: &str, deadline: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "{what} did not end within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The group's id stays reserved while any member lives, even once its leader is
        // reaped, so this reaches only what the test started.
        let pgid = i32::try_from(self.0.id()).expect("pid");
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// `zdctl status api --json` of one host.
fn status_json(host: &TestEnv) -> serde_json::Value {
    let out = host.run_zdctl(&["status", "api", "--json"]);
    assert_code(&out, 0);
    serde_json::from_str(&stdout(&out)).expect("status JSON")
}

/// The active generation and its pid, from `zdctl status --json`.
fn active(status: &serde_json::Value) -> (u64, i64) {
    let generation = status["active_generation"].as_u64().expect("a generation");
    let pid = status["generations"]
        .as_array()
        .and_then(|gens| gens.iter().find(|g| g["generation"] == generation))
        .and_then(|g| g["pid"].as_i64())
        .expect("the active generation's pid");
    (generation, pid)
}

#[test]
#[cfg_attr(
    not(has_ansible_playbook),
    ignore = "ansible-playbook not installed (Debian package ansible)"
)]
fn the_rollout_stops_at_the_first_host_that_rolls_back_and_leaves_the_next_untouched() {
    let test = "the_rollout_stops_at_the_first_host_that_rolls_back_and_leaves_the_next_untouched";
    let Some(playbook_bin) = ansible_playbook(test) else {
        return;
    };
    let mut hosts = [TestEnv::new(), TestEnv::new(), TestEnv::new()];
    let marker = hosts[1].path("crash-next");
    let marker_s = marker.display().to_string();
    for (i, host) in hosts.iter_mut().enumerate() {
        let args: &[&str] = if i == 1 {
            &["--crash-if-exists", &marker_s]
        } else {
            &[]
        };
        host.fixture_service("api", args, "");
        host.start("api", &["run", "api"]);
    }
    // From now on host2's next generation exits 3 at start: its restart rolls back.
    std::fs::write(&marker, "").expect("marker");
    let before: Vec<(u64, i64)> = hosts.iter().map(|h| active(&status_json(h))).collect();

    let work = tempfile::tempdir().expect("tempdir");
    let host_vars: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let vars = serde_json::json!({
                "zdctl_runtime_dir": h.runtime_dir,
                "zdctl_config_dir": h.config_dir,
            });
            (format!("host{}", i + 1), vars)
        })
        .collect();
    // JSON is YAML: ansible's yaml inventory plugin reads it.
    let inventory = serde_json::json!({
        "all": {
            "hosts": host_vars,
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            },
        },
    });
    let inventory_path = work.path().join("inventory.yml");
    std::fs::write(&inventory_path, inventory.to_string()).expect("inventory");

    let log_path = work.path().join("ansible.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut cmd = Command::new(&playbook_bin);
    cmd.current_dir(work.path())
        .arg("-i")
        .arg(&inventory_path)
        .arg(workspace_root().join("contrib/ansible/restart.yml"))
        .arg("-e")
        .arg(serde_json::json!({ "zdctl_service": "api", "zdctl_bin": zdctl_bin() }).to_string())
        // Ansible's own files stay in this test's directory.
        .env("ANSIBLE_HOME", work.path().join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", work.path().join("ansible-tmp"))
        .env(
            "ANSIBLE_REMOTE_TEMP",
            work.path().join("ansible-remote-tmp"),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .env_remove("ANSIBLE_FORCE_COLOR")
        .env_remove("ANSIBLE_CONFIG")
        .env_remove("ZDCTL_RUNTIME_DIR")
        .env_remove("ZDCTL_CONFIG_DIR")
        .env_remove("ZD_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log);
    let mut run = Group::spawn(cmd);
    let status = run.wait("ansible-playbook", PLAYBOOK_DEADLINE);
    drop(run);
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let shown = format!("ansible-playbook output:\n{output}");

    // 2: a host failed.
    assert_eq!(status.code(), Some(2), "{status}\n{shown}");

    // host1 restarted: a new generation, the old one drained.
    let after: Vec<serde_json::Value> = hosts.iter().map(status_json).collect();
    let (gen1, pid1) = active(&after[0]);
    assert_eq!(gen1, before[0].0 + 1, "host1 did not restart\n{shown}");
    assert_ne!(pid1, before[0].1, "{shown}");
    assert_eq!(after[0]["restarts"]["completed"], 1, "{shown}");

    // host2 rolled back: the same generation, its process still serving.
    let (gen2, pid2) = active(&after[1]);
    assert_eq!((gen2, pid2), before[1], "host2 did not roll back\n{shown}");
    assert_eq!(after[1]["restarts"]["rolled_back"], 1, "{shown}");
    let addr = after[1]["listeners"][0]["address"]
        .as_str()
        .expect("an address");
    let (code, body) = http_get(addr, "/").expect("host2 answers");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("pid={pid2}")), "{body}");

    // host3 untouched: no restart was even requested.
    assert_eq!(active(&after[2]), before[2], "host3 changed\n{shown}");
    assert_eq!(after[2]["restarts"]["requested"], 0, "{shown}");
    assert!(after[2]["last_restart"].is_null(), "{shown}");

    // What the playbook reported: host1's generations, pids and flip time; host2's
    // rollback, which stopped the rollout; nothing ran on host3.
    let (old_gen, old_pid) = before[0];
    let host1_line = format!(
        "'api' restarted: generation {old_gen} → {gen1}, pid {old_pid} → {pid1}, promoted after "
    );
    let at = output
        .find(&host1_line)
        .unwrap_or_else(|| panic!("no '{host1_line}'\n{shown}"));
    let rest = output[at + host1_line.len()..].lines().next().unwrap_or("");
    let flip = rest
        .split_once(" ms, flip ")
        .and_then(|(_, flip)| flip.strip_suffix(" ms\""))
        .and_then(|ms| ms.parse::<u64>().ok());
    assert!(flip.is_some(), "no flip time in '{rest}'\n{shown}");
    assert!(
        output.contains("'api' rolled back: generation 1 still serves"),
        "{shown}"
    );
    assert!(output.contains("fatal: [host2]"), "{shown}");
    assert!(!output.contains("[host3]"), "a task ran on host3\n{shown}");
}
