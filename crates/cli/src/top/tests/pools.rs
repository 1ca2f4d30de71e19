//! A generation of several instances (a row each, `5.2`) and a restart's bake window (the
//! old generation standing by, the countdown in the table's title).

use zd_core::inspect::{GenerationView, Snapshot};
use zd_core::proto::BakeInfo;

use super::super::app::{App, ServiceState};
use super::{T0, api, generation, text};

/// Generation `number`'s `count` instances, each a row of its own.
fn instances(number: u64, state: &str, first_pid: i32, count: u32) -> Vec<GenerationView> {
    (0..count)
        .map(|i| {
            let pid = first_pid + 10 * i as i32;
            GenerationView {
                instance: Some(i),
                ..generation(number, state, pid, 2)
            }
        })
        .collect()
}

fn watched(snapshot: Snapshot) -> App {
    let mut app = App::new(1000, true);
    for _ in 0..2 {
        app.on_snapshot(vec![ServiceState {
            name: "api".into(),
            restartable: true,
            snapshot: Ok(snapshot.clone()),
        }]);
    }
    app
}

#[test]
fn a_generation_of_four_instances_has_a_row_per_instance() {
    let mut snapshot = api(40);
    snapshot.generations = instances(2, "active", 1300, 4);
    let app = watched(snapshot);
    assert_eq!(app.selected_generation, Some(2));
    assert_eq!(app.selected_instance, Some(0), "the first instance first");
    insta::assert_snapshot!(text(&app, 80, 24));
}

#[test]
fn a_bake_shows_the_standby_generation_and_the_countdown() {
    let mut snapshot = api(40);
    snapshot.generations = instances(1, "standby", 1200, 2);
    snapshot.generations.extend(instances(2, "active", 1300, 2));
    snapshot.listeners[0].held_by = vec![1, 2];
    snapshot.bake = Some(BakeInfo {
        generation: 2,
        old_generation: 1,
        started_unix_ms: T0 + 38_000,
        ends_unix_ms: T0 + 43_200,
        checks: vec!["http://127.0.0.1:8080/health".into()],
    });
    insta::assert_snapshot!(text(&watched(snapshot), 100, 24));
}
