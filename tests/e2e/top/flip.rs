//! What `zdctl top` draws, from the inspector's side: snapshots taken while a flip runs
//! under load show the handoff (shared: both generations hold the very same listening
//! socket; steered: each holds its own, and the new one's gets the new connections) and
//! the load leaving the old generation.

use std::time::{Duration, Instant};

use zd_core::inspect::{Inspector, Snapshot, SocketSource};
use zd_core::proto::{Client, Op, Reply, ReplyResult, Status};
use zd_load::load::ConnectionMode;

use crate::support::*;

/// Snapshots taken every few milliseconds from before a flip under load to after it, with
/// `handoff`, the statuses they were taken from, and the inode `status` named as the
/// listener at the start.
fn flip_snapshots(handoff: &str) -> (Vec<Snapshot>, Vec<Status>, u64) {
    let mut env = TestEnv::new();
    // Held requests keep connections in flight, so the old generation has some to lose;
    // `alive:1s` keeps both generations side by side for a second before the old one is
    // told to stop (the fixture then closes its copy of the listener).
    env.fixture_service(
        "api",
        &["--hold", "300ms"],
        &format!("ready: [accepting, 'alive:1s']\nhandoff: {handoff}\n"),
    );
    let status = env.start("api", &["run", "api"]);
    let inode = status.listeners.first().expect("a listener").inode;
    let load = start_load(&address_of(&status), 8, ConnectionMode::KeepAlive);

    // One connection to the control socket for the whole test: a snapshot every few
    // milliseconds, so that the flip's overlap cannot slip between two of them.
    let rt = runtime();
    let mut client = rt
        .block_on(Client::connect(&env.socket("api")))
        .expect("control socket");
    let mut inspector = Inspector::new(SocketSource::default());
    let mut snapshots: Vec<Snapshot> = Vec::new();
    let mut statuses: Vec<Status> = Vec::new();
    let mut take = |snapshots: &mut Vec<Snapshot>| {
        let status = match rt.block_on(client.call(Op::Status, |_| {})) {
            Ok(Reply::Result { result, .. }) => match *result {
                ReplyResult::Status(status) => status,
                other => panic!("not a status: {other:?}"),
            },
            other => panic!("status failed: {other:?}"),
        };
        // A process that exits while it is read fails that one snapshot: skip it.
        if let Ok(snapshot) = inspector.snapshot_native(&status) {
            snapshots.push(snapshot);
        }
        statuses.push(*status);
    };
    // Before: generation 1 carries the load.
    wait_for("generation 1 to hold connections", || {
        take(&mut snapshots);
        snapshots
            .last()
            .and_then(|s| count(s, 1))
            .filter(|&n| n > 0)
    });

    let mut restart = env.spawn_restart("api");
    let start = Instant::now();
    while restart.try_wait().expect("try_wait").is_none() {
        assert!(start.elapsed() < DEADLINE, "the restart did not finish");
        take(&mut snapshots);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        restart.wait().expect("wait").success(),
        "the restart failed"
    );
    // After: generation 2 carries it alone.
    wait_for("generation 2 to hold connections", || {
        take(&mut snapshots);
        snapshots
            .last()
            .filter(|s| count(s, 1).is_none())
            .and_then(|s| count(s, 2))
            .filter(|&n| n > 0)
    });
    assert_no_failures(&load.finish());
    assert_old_generation_loses_its_connections(&snapshots);
    (snapshots, statuses, inode)
}

/// Each status's sockets as (generations holding it, steered-to), for every status that
/// lists two generations' sockets or one socket held by two.
fn sockets_in_flip(statuses: &[Status]) -> Vec<Vec<(Vec<u64>, bool)>> {
    statuses
        .iter()
        .map(|s| {
            s.sockets
                .iter()
                .map(|k| (k.generations.clone(), k.steered_to))
                .collect::<Vec<_>>()
        })
        .filter(|sockets| sockets.iter().map(|(g, _)| g.len()).sum::<usize>() == 2)
        .collect()
}

#[test]
fn during_a_shared_flip_both_generations_hold_the_listener_and_the_old_ones_connections_fall_to_zero()
 {
    let (snapshots, statuses, inode) = flip_snapshots("shared");
    // `status` lists the one socket, held by both generations, new connections to it.
    let flip = sockets_in_flip(&statuses);
    assert!(!flip.is_empty(), "no status during the flip");
    assert!(
        flip.iter().all(|sockets| sockets == &[(vec![2, 1], true)]),
        "{flip:?}"
    );
    // Between the new generation's start and the old one's stop signal (after which the
    // fixture closes its copy), both hold the very same socket: one inode, two holders.
    let both = snapshots
        .iter()
        .find(|s| {
            s.generations.len() == 2 && s.generations.iter().all(|g| g.listener_inodes == [inode])
        })
        .unwrap_or_else(|| {
            let seen: Vec<Vec<(u64, Vec<u64>)>> = snapshots
                .iter()
                .map(|s| {
                    s.generations
                        .iter()
                        .map(|g| (g.generation, g.listener_inodes.clone()))
                        .collect()
                })
                .collect();
            panic!("no snapshot with both generations holding inode {inode}: {seen:?}")
        });
    let listener = both
        .listeners
        .iter()
        .find(|l| l.inode == inode)
        .expect("the listener");
    assert_eq!(listener.held_by, [1, 2]);
}

#[test]
fn during_a_steered_flip_each_generation_holds_its_own_socket_and_only_the_new_one_gets_new_connections()
 {
    let (snapshots, statuses, inode) = flip_snapshots("steered");
    // `status` lists a socket per generation: new connections go to generation 1's until
    // the promotion, then to generation 2's.
    let flip = sockets_in_flip(&statuses);
    let before = [(vec![2], false), (vec![1], true)];
    let after = [(vec![2], true), (vec![1], false)];
    assert!(flip.iter().all(|s| s == &before || s == &after), "{flip:?}");
    assert_eq!(
        flip.first().map(Vec::as_slice),
        Some(&before[..]),
        "{flip:?}"
    );
    assert_eq!(flip.last().map(Vec::as_slice), Some(&after[..]), "{flip:?}");
    // Between the new generation's start and the old one's end, each holds a socket of
    // its own on the same address: the old one's is where new connections went first,
    // the new one's is where they go once it is promoted.
    let both = snapshots
        .iter()
        .find(|s| {
            s.generations.len() == 2
                && s.generations[0].listener_inodes == [inode]
                && s.generations[1].listener_inodes.len() == 1
                && s.generations[1].listener_inodes != [inode]
        })
        .unwrap_or_else(|| panic!("no snapshot with a socket per generation"));
    let theirs: Vec<_> = both
        .listeners
        .iter()
        .filter(|l| l.held_by.len() == 1)
        .map(|l| (l.held_by[0], l.address.clone()))
        .collect();
    assert_eq!(theirs.len(), 2, "{:?}", both.listeners);
    assert_eq!(theirs[0].1, theirs[1].1, "one address");
    // After the promotion, new connections go to generation 2's socket only.
    let promoted = snapshots
        .iter()
        .rev()
        .find(|s| s.generations.len() == 2)
        .expect("a snapshot with both generations");
    let marked: Vec<(Vec<u64>, bool)> = promoted
        .listeners
        .iter()
        .map(|l| (l.held_by.clone(), l.new_connections))
        .collect();
    assert!(
        marked.contains(&(vec![2], true)) && !marked.iter().any(|(h, n)| h == &[1] && *n),
        "{marked:?}"
    );
}

/// The old generation's connection count, snapshot by snapshot, from the flip on: it ends
/// at zero (seen as zero, or as gone once it exited) and never climbs back.
fn assert_old_generation_loses_its_connections(snapshots: &[Snapshot]) {
    let old: Vec<usize> = snapshots
        .iter()
        .skip_while(|s| count(s, 2).is_none())
        .map(|s| count(s, 1).unwrap_or(0))
        .collect();
    assert_eq!(old.last(), Some(&0), "{old:?}");
    let first_zero = old.iter().position(|&n| n == 0).expect("a zero");
    assert!(
        old[first_zero..].iter().all(|&n| n == 0),
        "the old generation got connections again: {old:?}"
    );
}

/// Generation `generation`'s connection count, `None` when it is not in the snapshot.
fn count(snapshot: &Snapshot, generation: u64) -> Option<usize> {
    snapshot
        .generations
        .iter()
        .find(|g| g.generation == generation)
        .map(|g| g.connection_count)
}
