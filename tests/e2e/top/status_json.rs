//! `zdctl status NAME --json` carries the inspector's snapshot: what `zdctl top` shows.

use zd_core::inspect::Snapshot;
use zd_load::load::ConnectionMode;

use crate::support::*;

#[test]
fn status_json_includes_the_snapshot_of_the_running_generation_and_its_connections() {
    let mut env = TestEnv::new();
    env.fixture_service("api", &[], "");
    let status = env.start("api", &["run", "api"]);
    let pid = active_pid(&status);
    let inode = status.listeners.first().expect("a listener").inode;
    let load = start_load(&address_of(&status), 4, ConnectionMode::KeepAlive);

    let snapshot = wait_for("a snapshot counting the load's connections", || {
        let out = env.run_zdctl(&["status", "api", "--json"]);
        assert_code(&out, 0);
        let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        assert_eq!(
            value["service"], "api",
            "the status is still there: {value}"
        );
        let snapshot: Snapshot =
            serde_json::from_value(value["snapshot"].clone()).expect("a snapshot");
        let generation = snapshot.generations.first()?;
        (generation.connection_count >= 4).then_some(snapshot)
    });
    let _ = load.finish();
    assert_eq!(snapshot.service, "api");
    let generation = &snapshot.generations[0];
    assert_eq!(generation.main_pid, pid);
    assert_eq!(generation.state, "active");
    assert_eq!(generation.listener_inodes, vec![inode]);
    assert!(generation.fds > 0 && generation.rss_bytes > 0);
    // The service's listener, and not the supervisor's control socket.
    let listeners: Vec<(u64, Vec<u64>)> = snapshot
        .listeners
        .iter()
        .map(|l| (l.inode, l.held_by.clone()))
        .collect();
    assert_eq!(listeners, vec![(inode, vec![generation.generation])]);
}
