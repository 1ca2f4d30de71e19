//! What `status` adds for a service whose generations run several instances
//! (`instances`) or whose restart is baking (`bake`): a row per instance under its
//! generation, the serving capacity, and the bake window.

use std::time::SystemTime;

use zd_core::proto::{BakeInfo, GenerationInfo, InstanceInfo, Status};

use crate::output::{age, exit_status, millis};

/// Whether the generations table needs the READY and RESPAWNS columns and instance rows.
pub fn has_pools(status: &Status) -> bool {
    status.instances.is_some_and(|n| n > 1) || status.generations.iter().any(several)
}

/// Whether `generation` runs more than one instance: then each gets a row.
pub fn several(generation: &GenerationInfo) -> bool {
    generation.instances.len() > 1
}

/// The READY and RESPAWNS cells of a generation's row: `3/4`, and its instances'
/// respawns summed.
pub fn generation_cells(generation: &GenerationInfo) -> [String; 2] {
    if generation.instances.is_empty() {
        return ["-".to_owned(), "-".to_owned()];
    }
    let ready = generation.instances.iter().filter(|i| i.ready).count();
    let respawns: u64 = generation
        .instances
        .iter()
        .map(|i| u64::from(i.respawns))
        .sum();
    [
        format!("{ready}/{}", generation.instances.len()),
        respawns.to_string(),
    ]
}

/// The row of one instance under its generation's: `  5.2`, its pid, state, start, exit,
/// whether it is ready and how often it was started again alone.
pub fn instance_row(generation: u64, instance: &InstanceInfo, now: SystemTime) -> Vec<String> {
    vec![
        format!("  {generation}.{}", instance.instance),
        instance.pid.to_string(),
        instance.state.name().to_owned(),
        format!("{} ago", age(instance.started_unix_ms, now)),
        instance
            .exit
            .map(exit_status)
            .unwrap_or_else(|| "-".to_owned()),
        if instance.ready { "yes" } else { "no" }.to_owned(),
        instance.respawns.to_string(),
    ]
}

/// `  capacity: 4 of 4 instances ready`, for a service of several instances. During a
/// bake or a rolling restart two generations serve, and the count may pass the
/// configured one.
pub fn capacity_line(status: &Status) -> Option<String> {
    let instances = status.instances.filter(|&n| n > 1)?;
    let capacity = status.capacity?;
    Some(if capacity <= instances {
        format!("  capacity: {capacity} of {instances} instances ready\n")
    } else {
        format!(
            "  capacity: {capacity} instances ready, over two generations of {instances} each\n"
        )
    })
}

/// `  baking: generation 5 watched for 3.2s more; generation 4 stands by (zdctl revert
/// api)`, and the checks that watch it.
pub fn bake_line(service: &str, bake: &BakeInfo, now: SystemTime) -> String {
    let now_ms = zd_core::proto::unix_ms(now);
    let left = bake.ends_unix_ms.saturating_sub(now_ms);
    let generation = bake.generation;
    let watched = if left == 0 {
        format!("generation {generation}'s window ends now")
    } else {
        format!("generation {generation} watched for {} more", millis(left))
    };
    let mut line = format!(
        "  baking: {watched}; generation {} stands by (zdctl revert {service})",
        bake.old_generation
    );
    if !bake.checks.is_empty() {
        line.push_str(&format!("; checks {}", bake.checks.join(", ")));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zd_core::proto::{ExitInfo, GenerationState};
    use zd_core::service::ServiceStatus;

    use crate::status::render;
    use crate::status::tests::{NOW_MS, fixed};

    fn instance(instance: u32, pid: i32, state: GenerationState, ready: bool) -> InstanceInfo {
        InstanceInfo {
            instance,
            pid,
            state,
            started_unix_ms: NOW_MS - 60_000,
            ready,
            respawns: 0,
            exit: None,
            output_lines: None,
        }
    }

    fn generation(generation: u64, state: GenerationState, pids: &[i32]) -> GenerationInfo {
        GenerationInfo {
            generation,
            pid: pids[0],
            state,
            started_unix_ms: NOW_MS - 60_000,
            exit: None,
            intercept: None,
            output_lines: None,
            instances: pids
                .iter()
                .enumerate()
                .map(|(i, &pid)| instance(i as u32, pid, state, true))
                .collect(),
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS)
    }

    #[test]
    fn a_generation_of_four_instances_gets_a_row_per_instance_and_the_capacity() {
        let mut status = fixed();
        status.instances = Some(4);
        status.capacity = Some(3);
        let mut five = generation(5, GenerationState::Active, &[812, 813, 814, 815]);
        five.instances[2].ready = false;
        five.instances[2].respawns = 2;
        five.instances[2].pid = 830;
        five.instances[2].started_unix_ms = NOW_MS - 2_000;
        status.generations = vec![five];
        status.generations.push(GenerationInfo {
            exit: Some(ExitInfo::Code { code: 0 }),
            ..generation(4, GenerationState::Exited, &[700])
        });
        status.active_generation = Some(5);
        let text = render(
            &ServiceStatus {
                status,
                driver: None,
            },
            now(),
        );
        let want = "\
  active: generation 5
  capacity: 3 of 4 instances ready

  GEN    PID  STATE   STARTED  EXIT         READY  RESPAWNS
  5      812  active  1m ago   -            3/4    2
    5.0  812  active  1m ago   -            yes    0
    5.1  813  active  1m ago   -            yes    0
    5.2  830  active  2s ago   -            no     2
    5.3  815  active  1m ago   -            yes    0
  4      700  exited  1m ago   exit code 0  1/1    0

";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn a_bake_says_how_long_is_left_who_stands_by_and_how_to_revert() {
        let mut status = fixed();
        status.instances = Some(2);
        status.capacity = Some(4);
        status.restart_in_progress = Some(4);
        status.active_generation = Some(9);
        status.generations = vec![
            generation(9, GenerationState::Active, &[900, 901]),
            generation(8, GenerationState::Standby, &[800, 801]),
        ];
        status.bake = Some(BakeInfo {
            generation: 9,
            old_generation: 8,
            started_unix_ms: NOW_MS - 1_800,
            ends_unix_ms: NOW_MS + 3_200,
            checks: vec!["http://127.0.0.1:8080/health".into()],
        });
        let text = render(
            &ServiceStatus {
                status,
                driver: None,
            },
            now(),
        );
        let want = "\
  active: generation 9 (restart #4 in progress)
  capacity: 4 instances ready, over two generations of 2 each
  baking: generation 9 watched for 3.2s more; generation 8 stands by (zdctl revert api); checks http://127.0.0.1:8080/health

  GEN    PID  STATE    STARTED  EXIT  READY  RESPAWNS
  9      900  active   1m ago   -     2/2    0
    9.0  900  active   1m ago   -     yes    0
    9.1  901  active   1m ago   -     yes    0
  8      800  standby  1m ago   -     2/2    0
    8.0  800  standby  1m ago   -     yes    0
    8.1  801  standby  1m ago   -     yes    0
";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn a_bake_past_its_end_says_it_is_ending() {
        let bake = BakeInfo {
            generation: 9,
            old_generation: 8,
            started_unix_ms: NOW_MS - 5_000,
            ends_unix_ms: NOW_MS - 10,
            checks: Vec::new(),
        };
        assert_eq!(
            bake_line("api", &bake, now()),
            "  baking: generation 9's window ends now; generation 8 stands by (zdctl revert \
             api)\n"
        );
    }
}
