//! `zdctl demo` on a machine with nothing else: it passes and leaves nothing behind.

use crate::support::*;

/// Processes whose environment names the demo's service (`ZD_SERVICE=zd-demo-PID`, set for
/// every generation) or whose command line does (the supervisor).
fn demo_processes(demo_pid: u32) -> Vec<i32> {
    let marker = format!("zd-demo-{demo_pid}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            ["environ", "cmdline"].iter().any(|file| {
                std::fs::read(format!("/proc/{pid}/{file}"))
                    .map(|bytes| String::from_utf8_lossy(&bytes).contains(&marker))
                    .unwrap_or(false)
            })
        })
        .collect()
}

#[test]
fn demo_passes_and_leaves_no_process_or_file_behind() {
    let env = TestEnv::new();
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let child = env
        .zdctl()
        .args(["demo", "--restarts", "5"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zdctl demo");
    let pid = child.id();
    let out = child.wait_with_output().expect("zdctl demo");
    let leftovers = demo_processes(pid);
    for &p in &leftovers {
        // SAFETY: plain kill(2) of processes this test's demo started.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert_code(&out, 0);
    assert!(stdout(&out).contains("PASS"), "{}", stdout(&out));
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
    let files: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(files.is_empty(), "files left behind: {files:?}");
}

#[test]
fn demo_interrupted_by_ctrl_c_exits_130_and_cleans_up() {
    let env = TestEnv::new();
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let mut child = env
        .zdctl()
        .args(["demo", "--restarts", "1000"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zdctl demo");
    let pid = child.id();
    // Interrupt once the demo service runs: its generation exists.
    wait_for("the demo service to start", || {
        (demo_processes(pid).len() >= 2).then_some(())
    });
    // SAFETY: plain kill(2) of the process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = wait_for("zdctl demo to exit", || child.try_wait().expect("try_wait"));
    let leftovers = demo_processes(pid);
    for &p in &leftovers {
        // SAFETY: as above.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert_eq!(status.code(), Some(130));
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
    let files: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(files.is_empty(), "files left behind: {files:?}");
}
