//! Where supervisors put their control sockets (DESIGN §7).

use std::path::PathBuf;

/// The runtime directory: `$ZDCTL_RUNTIME_DIR`, else `/run/zdctl` for root, else
/// `$XDG_RUNTIME_DIR/zdctl`, else a per-user directory under the system temp dir.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ZDCTL_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/zdctl");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("zdctl");
    }
    std::env::temp_dir().join(format!("zdctl-{uid}"))
}

/// The control socket of service `name`.
pub fn control_socket(name: &str) -> PathBuf {
    runtime_dir().join(format!("{name}.sock"))
}

/// The per-generation notify socket of service `name`.
pub fn notify_socket(name: &str, generation: u64) -> PathBuf {
    notify_socket_in(&runtime_dir(), name, generation)
}

/// The per-generation notify socket of service `name` in runtime directory `dir`.
pub fn notify_socket_in(dir: &std::path::Path, name: &str, generation: u64) -> PathBuf {
    dir.join(format!("{name}.{generation}.notify"))
}

/// Services that have a control socket in the runtime directory (running or stale).
pub fn socket_services() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(runtime_dir()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".sock").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Checks that a service name is usable as a file name component.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}
