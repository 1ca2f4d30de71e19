//! `migrate_requests`: a supervisor with a steered listener turns
//! `net.ipv4.tcp_migrate_req` on in its network namespace, and leaves it alone when the
//! file says `migrate_requests: false`. Each supervisor runs in a network namespace of its
//! own (`unshare --net`, which needs root), where the sysctl starts at 0, so the test
//! neither depends on nor changes the machine's value, and tests running beside it see
//! no change.

use std::process::{Command, Stdio};

use zd_core::proto::Status;

use crate::support::*;

const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Starts `zdctl run NAME` in a new network namespace (`unshare` execs it: same pid).
fn start_in_private_netns(env: &mut TestEnv, name: &str) -> Status {
    let mut cmd = Command::new("unshare");
    cmd.arg("--net")
        .arg(zdctl_bin())
        .args(["-v", "run", name])
        .env("ZDCTL_RUNTIME_DIR", &env.runtime_dir)
        .env("ZDCTL_CONFIG_DIR", &env.config_dir)
        .env_remove("ZD_LOG")
        .stdin(Stdio::null());
    env.start_command(name, cmd)
}

/// The sysctl as the process `pid` sees it, in its network namespace.
fn sysctl_of(pid: i32) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["cat", SYSCTL])
        .output()
        .expect("run nsenter");
    assert!(out.status.success(), "nsenter: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

#[test]
fn a_steered_supervisor_turns_tcp_migrate_req_on_unless_told_not_to() {
    if !is_root() {
        say_skipped("a private network namespace (unshare --net) needs root");
        return;
    }
    let mut env = TestEnv::new();
    env.fixture_service("on", &[], "handoff: steered\n");
    env.fixture_service("off", &[], "handoff: steered\nmigrate_requests: false\n");
    let on = start_in_private_netns(&mut env, "on").supervisor_pid;
    let off = start_in_private_netns(&mut env, "off").supervisor_pid;
    // SAFETY: getpid has no arguments and cannot fail.
    let me = unsafe { libc::getpid() };
    let own = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("netns");
    assert_ne!(
        own(on),
        own(me),
        "the supervisor shares the test's namespace"
    );
    assert_ne!(
        own(off),
        own(me),
        "the supervisor shares the test's namespace"
    );
    assert_eq!(sysctl_of(off), "0", "migrate_requests: false left it alone");
    assert_eq!(sysctl_of(on), "1", "{}", env.log("on"));
    assert!(
        env.log("on").contains("enabled net.ipv4.tcp_migrate_req"),
        "{}",
        env.log("on")
    );
}
