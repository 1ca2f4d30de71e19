//! The environment a generation receives.

use std::collections::BTreeMap;

use crate::listen::{ListenAddr, Listener};

/// Variables from other supervisors' dialects that must never leak from the supervisor's own
/// environment into a generation: stale values would point the app at the wrong fds.
const DIALECT_PREFIXES: &[&str] = &["LISTEN_", "EINHORN_", "SERVER_STARTER_", "ZD_"];
/// `NOTIFY_SOCKET` and `FDSTORE` are systemd's for the supervisor: a generation gets a
/// notify socket of ours, which keeps no fds.
const DIALECT_NAMES: &[&str] = &["NOTIFY_SOCKET", "FDSTORE"];

/// The handoff variables for one generation, in every dialect at once. `LISTEN_PID` is not
/// among them: only the child knows its pid, and writes it itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffVars(pub Vec<(String, String)>);

/// The handoff variables for `listeners` passed at fds 3, 4, … to instance `instance` of
/// generation `generation`.
pub fn handoff_vars(
    service: &str,
    generation: u64,
    instance: u32,
    listeners: &[Listener],
    notify_socket: Option<&std::path::Path>,
) -> HandoffVars {
    let mut vars = Vec::new();
    let fds: Vec<i32> = (0..listeners.len()).map(|i| 3 + i as i32).collect();
    if !listeners.is_empty() {
        vars.push(("LISTEN_FDS".into(), listeners.len().to_string()));
        let names: Vec<&str> = listeners.iter().map(|l| l.name()).collect();
        vars.push(("LISTEN_FDNAMES".into(), names.join(":")));
        vars.push(("EINHORN_FD_COUNT".into(), listeners.len().to_string()));
        for (i, fd) in fds.iter().enumerate() {
            vars.push((format!("EINHORN_FD_{i}"), fd.to_string()));
        }
        let list: Vec<String> = fds.iter().map(|fd| fd.to_string()).collect();
        vars.push(("EINHORN_FDS".into(), list.join(" ")));
        // Server::Starter knows TCP and unix listeners only: a library that reads this
        // variable makes a stream listener of every entry, so UDP sockets are left out
        // (each entry names its fd, so the others keep theirs).
        let ports: Vec<String> = listeners
            .iter()
            .zip(&fds)
            .filter(|(l, _)| !l.is_udp())
            .map(|(l, fd)| format!("{}={fd}", server_starter_key(l)))
            .collect();
        if !ports.is_empty() {
            vars.push(("SERVER_STARTER_PORT".into(), ports.join(";")));
        }
    }
    vars.push(("SERVER_STARTER_GENERATION".into(), generation.to_string()));
    vars.push(("ZD_GENERATION".into(), generation.to_string()));
    vars.push(("ZD_INSTANCE".into(), instance.to_string()));
    vars.push(("ZD_SERVICE".into(), service.to_owned()));
    if let Some(path) = notify_socket {
        vars.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    }
    HandoffVars(vars)
}

/// Server::Starter names a listener by `host:port`, by the bare port when it listens on
/// every address, or by the unix socket's path.
fn server_starter_key(listener: &Listener) -> String {
    match listener.local_addr() {
        ListenAddr::AnyPort(port) => port.to_string(),
        _ => listener.local_display(),
    }
}

/// The full environment of a generation: the supervisor's own (minus stale dialect
/// variables), then the service's `env:`, then the handoff variables, which win.
pub fn generation_env(
    inherited: impl Iterator<Item = (String, String)>,
    service_env: &BTreeMap<String, String>,
    vars: &HandoffVars,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = inherited
        .filter(|(k, _)| {
            !DIALECT_PREFIXES.iter().any(|p| k.starts_with(p))
                && !DIALECT_NAMES.contains(&k.as_str())
        })
        .collect();
    for (k, v) in service_env {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &vars.0 {
        env.insert(k.clone(), v.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_dialect_variables_are_dropped_and_handoff_wins() {
        let inherited = [
            ("PATH", "/bin"),
            ("LISTEN_FDS", "9"),
            ("EINHORN_FD_COUNT", "2"),
            ("NOTIFY_SOCKET", "/old"),
            ("FDSTORE", "16"),
            ("ZD_GENERATION", "77"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut service = BTreeMap::new();
        service.insert("ZD_GENERATION".to_owned(), "user".to_owned());
        service.insert("RUST_LOG".to_owned(), "info".to_owned());
        let vars = handoff_vars("api", 4, 0, &[], None);
        let env = generation_env(inherited, &service, &vars);
        assert_eq!(env.get("PATH").map(String::as_str), Some("/bin"));
        assert_eq!(env.get("RUST_LOG").map(String::as_str), Some("info"));
        assert_eq!(env.get("ZD_GENERATION").map(String::as_str), Some("4"));
        assert!(
            !env.contains_key("LISTEN_FDS"),
            "no listeners, no LISTEN_FDS"
        );
        assert!(!env.contains_key("EINHORN_FD_COUNT"));
        assert!(!env.contains_key("NOTIFY_SOCKET"));
        assert!(!env.contains_key("FDSTORE"));
    }

    #[test]
    fn udp_listeners_get_fds_in_every_dialect_but_server_starters() {
        let specs: Vec<crate::listen::ListenerSpec> = ["127.0.0.1:0", "dns=udp://127.0.0.1:0"]
            .iter()
            .map(|s| s.parse().expect("spec"))
            .collect();
        let listeners = crate::listen::open_listeners(&specs).expect("open");
        let vars = handoff_vars("api", 1, 0, &listeners, None);
        let get = |name: &str| {
            vars.0
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("LISTEN_FDS").as_deref(), Some("2"));
        assert_eq!(get("LISTEN_FDNAMES").as_deref(), Some("unknown:dns"));
        assert_eq!(get("EINHORN_FDS").as_deref(), Some("3 4"));
        let starter = get("SERVER_STARTER_PORT").expect("the TCP listener");
        assert!(
            starter.ends_with("=3") && !starter.contains("udp"),
            "{starter}"
        );

        let udp_only = crate::listen::open_listeners(&specs[1..]).expect("open");
        let vars = handoff_vars("api", 1, 0, &udp_only, None);
        assert!(vars.0.iter().any(|(k, v)| k == "LISTEN_FDS" && v == "1"));
        assert!(!vars.0.iter().any(|(k, _)| k == "SERVER_STARTER_PORT"));
    }
}
