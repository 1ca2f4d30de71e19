//! Where supervisors put their control sockets (DESIGN §7), and the checks that make that
//! place safe to use on a host shared with other users.
//!
//! Everything zdctl creates in the runtime directory (control sockets, notify sockets,
//! driver records, locks) is created by path. That is only safe when nobody else can
//! rename, replace or plant entries on that path: the directory must belong to us and
//! refuse writes from others, and so must every directory above it (or they must be sticky,
//! like `/tmp`, where others cannot rename our entries). [`ensure_runtime_dir`] checks
//! exactly that, as OpenSSH's StrictModes does for `~/.ssh`, and refuses with a message that
//! says what to do, instead of handing a pre-created directory our sockets.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The runtime directory: `$ZDCTL_RUNTIME_DIR`, else `/run/zdctl` for root, else
/// `$XDG_RUNTIME_DIR/zdctl`, else `zdctl-UID` under the system temp dir.
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

/// Why a runtime directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeDirError {
    #[error(
        "runtime directory '{}' belongs to uid {owner}, not to you (uid {uid}): another user may \
         have created it to reach your services; remove it, or set ZDCTL_RUNTIME_DIR (or \
         XDG_RUNTIME_DIR) to a directory of your own",
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "runtime directory '{}' is writable by {who} (mode {mode:04o}): others could replace \
         the sockets in it; run 'chmod go-w {}' or choose another ZDCTL_RUNTIME_DIR",
        path.display(), path.display()
    )]
    Writable {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
    #[error(
        "'{}' above the runtime directory belongs to uid {owner} and is writable by others \
         without the sticky bit: anyone could swap the runtime directory; choose a \
         ZDCTL_RUNTIME_DIR under a directory that only you or root can change",
        path.display()
    )]
    UnsafeAncestor { path: PathBuf, owner: u32 },
    #[error(
        "runtime directory '{}' is {kind}, not a directory; remove it or set ZDCTL_RUNTIME_DIR",
        path.display()
    )]
    NotADirectory { path: PathBuf, kind: &'static str },
    #[error("cannot {about} runtime directory '{}'", path.display())]
    Io {
        about: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the runtime directory `dir` (mode 0700) if it is missing, then checks that it is
/// safe to create files in by path: a real directory (not a symlink) owned by the effective
/// uid, writable by nobody else, under ancestors that only root or this uid can change.
///
/// A directory that is traversable by others (0711 or 0755, like an existing `/run/zdctl`)
/// is accepted: its entries are still ours, and sockets in it keep their own modes.
pub fn ensure_runtime_dir(dir: &Path) -> Result<(), RuntimeDirError> {
    let io = |about| {
        move |source| RuntimeDirError::Io {
            about,
            path: dir.to_path_buf(),
            source,
        }
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Parents that do not exist yet (a fresh ZDCTL_RUNTIME_DIR) are made like any
        // directory the user asks for; the checks below then judge them.
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io("create the parents of"))?;
        }
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create")(e)),
    }
    let uid = nix::unistd::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(dir).map_err(io("inspect"))?;
    if !meta.is_dir() {
        return Err(RuntimeDirError::NotADirectory {
            path: dir.to_path_buf(),
            kind: describe_file_type(meta.file_type()),
        });
    }
    if meta.uid() != uid {
        return Err(RuntimeDirError::NotOwned {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RuntimeDirError::Writable {
            path: dir.to_path_buf(),
            mode,
            who: if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
        });
    }
    check_ancestors(dir, uid)
}

/// Every directory above `dir` must be one that others cannot rename entries in: owned by
/// root or `uid` and not writable by group or others, unless sticky (`/tmp`).
fn check_ancestors(dir: &Path, uid: u32) -> Result<(), RuntimeDirError> {
    let resolved = std::fs::canonicalize(dir).map_err(|source| RuntimeDirError::Io {
        about: "resolve",
        path: dir.to_path_buf(),
        source,
    })?;
    for ancestor in resolved.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(|source| RuntimeDirError::Io {
            about: "inspect a directory above",
            path: ancestor.to_path_buf(),
            source,
        })?;
        let mode = meta.mode();
        let owner_ok = meta.uid() == 0 || meta.uid() == uid;
        let writable_by_others = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        if !owner_ok || (writable_by_others && !sticky) {
            return Err(RuntimeDirError::UnsafeAncestor {
                path: ancestor.to_path_buf(),
                owner: meta.uid(),
            });
        }
    }
    Ok(())
}

/// What kind of file `kind` is, for messages: "a named pipe (FIFO)", "a symlink", ….
pub fn describe_file_type(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a unix socket"
    } else {
        "a special file"
    }
}

/// Whether processes of other users can traverse `dir` (mode 0711 or 0755): then a socket in
/// it may be opened to them by its own mode.
pub fn traversable_by_others(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
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
pub fn notify_socket_in(dir: &Path, name: &str, generation: u64) -> PathBuf {
    instance_notify_socket_in(dir, name, generation, 0)
}

/// The notify socket of instance `instance` of a generation: the generation's own for
/// instance 0, `NAME.GEN.INSTANCE.notify` for the others.
pub fn instance_notify_socket_in(
    dir: &Path,
    name: &str,
    generation: u64,
    instance: u32,
) -> PathBuf {
    if instance == 0 {
        dir.join(format!("{name}.{generation}.notify"))
    } else {
        dir.join(format!("{name}.{generation}.{instance}.notify"))
    }
}

/// The state file of service `name`'s supervisor in runtime directory `dir`: what a new
/// supervisor adopts after this one died.
pub fn state_file_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.state"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn a_missing_runtime_dir_is_created_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("run").join("zdctl");
        ensure_runtime_dir(&dir).expect("created");
        assert_eq!(mode(&dir), 0o700);
        // Twice is fine.
        ensure_runtime_dir(&dir).expect("again");
    }

    #[test]
    fn a_world_writable_runtime_dir_is_refused_with_what_to_do() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("zdctl");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = ensure_runtime_dir(&dir).expect_err("refused").to_string();
        assert!(err.contains("writable by everyone"), "{err}");
        assert!(err.contains("chmod go-w"), "{err}");
    }

    #[test]
    fn a_symlink_in_place_of_the_runtime_dir_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("elsewhere");
        std::fs::create_dir(&target).expect("mkdir");
        let dir = tmp.path().join("zdctl");
        std::os::unix::fs::symlink(&target, &dir).expect("symlink");
        let err = ensure_runtime_dir(&dir).expect_err("refused").to_string();
        assert!(err.contains("is a symlink"), "{err}");
    }

    #[test]
    fn a_runtime_dir_under_a_world_writable_non_sticky_dir_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = ensure_runtime_dir(&open.join("zdctl"))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("above the runtime directory"), "{err}");
        // Sticky, like /tmp: accepted.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        ensure_runtime_dir(&open.join("zdctl2")).expect("sticky parent is fine");
    }
}
