//! `net.ipv4.tcp_migrate_req`: what the steered handoff's bounded wait cannot cover.
//!
//! When a socket of an `SO_REUSEPORT` group closes, the kernel resets the connections
//! still in its accept queue and the handshakes it has half done (a SYN answered, the ACK
//! not yet in). The steered handoff closes an old generation's socket only once that
//! generation is gone, and asks it to stop only once its queue is empty (or after
//! `handoff_wait`), so the queue is normally empty by then. What the wait cannot see is
//! a handshake that completes on the old socket after it: a SYN that reached it before the
//! promotion, whose SYN-ACK was lost and retransmitted, completes a second or more later.
//! With `tcp_migrate_req` set, the kernel moves such a request (and anything still queued)
//! to another socket of the group instead of resetting it.
//!
//! The sysctl belongs to the network namespace and affects only reuseport groups, so the
//! supervisor turns it on where it may (`migrate_requests`, on by default) and leaves it on
//! at exit: other services in the namespace may have come to rely on it, and a group that
//! does not want migration can still refuse it with its own BPF program.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The sysctl, in the supervisor's network namespace.
const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// What [`enable_at`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Migration {
    /// It was 0; it is 1 now.
    Enabled,
    /// It was 1 already.
    AlreadyOn,
    /// No such sysctl: a kernel before Linux 5.14, or no /proc.
    Unsupported,
    /// It is 0 and may not be written here: not root, or `/proc/sys` mounted read-only.
    NotPermitted(String),
    /// Anything else: the file is not what a sysctl looks like, or I/O failed.
    Failed(String),
}

/// What to do with the sysctl, given its text.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// It is on: leave it.
    On,
    /// It is off: write "1".
    TurnOn,
    /// Not a value we know: leave it alone.
    Unknown,
}

fn decide(text: &str) -> Decision {
    match text.trim() {
        "0" => Decision::TurnOn,
        "1" => Decision::On,
        _ => Decision::Unknown,
    }
}

/// Turns `net.ipv4.tcp_migrate_req` on in the supervisor's network namespace when it is
/// off, and logs one line that says what happened. The service runs either way.
pub(crate) fn enable() {
    match enable_at(Path::new(SYSCTL)) {
        Migration::Enabled => tracing::info!(
            sysctl = SYSCTL,
            "enabled net.ipv4.tcp_migrate_req: a connection still queued or half open on \
             a closing generation's socket moves to another socket of the group"
        ),
        Migration::AlreadyOn => tracing::debug!(sysctl = SYSCTL, "tcp_migrate_req is on"),
        Migration::Unsupported => tracing::info!(
            "no net.ipv4.tcp_migrate_req here (Linux 5.14 added it; or /proc is not \
             mounted): a handshake that completes on an old generation's socket after \
             handoff_wait is reset"
        ),
        Migration::NotPermitted(error) => tracing::info!(
            sysctl = SYSCTL,
            %error,
            "net.ipv4.tcp_migrate_req is off and the supervisor may not turn it on (it is \
             not root in this network namespace, or /proc/sys is read-only): a handshake \
             that completes on an old generation's socket after handoff_wait is reset; set \
             it with `sysctl -w net.ipv4.tcp_migrate_req=1`, or `migrate_requests: false` \
             to silence this"
        ),
        Migration::Failed(reason) => tracing::warn!(
            sysctl = SYSCTL,
            %reason,
            "cannot turn net.ipv4.tcp_migrate_req on"
        ),
    }
}

/// [`enable`] on the file at `path`.
fn enable_at(path: &Path) -> Migration {
    // O_NOFOLLOW: /proc/sys never holds a symlink, so one here is not the sysctl.
    // O_NONBLOCK: a FIFO in its place must not block the open; it is refused below.
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    // Without write permission the value is still read: an "on" needs no write.
    let (mut file, denied) = match open(true) {
        Ok(file) => (file, None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Migration::Unsupported,
        Err(e) if not_permitted(&e) => match open(false) {
            Ok(file) => (file, Some(e)),
            Err(_) => return Migration::NotPermitted(e.to_string()),
        },
        Err(e) => return Migration::Failed(format!("open: {e}")),
    };
    match file.metadata() {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => return Migration::Failed("not a regular file".to_owned()),
        Err(e) => return Migration::Failed(format!("stat: {e}")),
    }
    let text = match read_value(&mut file) {
        Ok(text) => text,
        Err(e) => return Migration::Failed(format!("read: {e}")),
    };
    match decide(&text) {
        Decision::On => Migration::AlreadyOn,
        Decision::Unknown => Migration::Failed(format!("unexpected value {:?}", text.trim())),
        Decision::TurnOn => match denied {
            Some(e) => Migration::NotPermitted(e.to_string()),
            None => match write_on(&mut file) {
                Ok(()) => Migration::Enabled,
                Err(e) if not_permitted(&e) => Migration::NotPermitted(e.to_string()),
                Err(e) => Migration::Failed(format!("write: {e}")),
            },
        },
    }
}

/// A sysctl is a few bytes: more than that is not one.
fn read_value(file: &mut File) -> io::Result<String> {
    let mut text = String::new();
    file.take(64).read_to_string(&mut text)?;
    Ok(text)
}

fn write_on(file: &mut File) -> io::Result<()> {
    file.rewind()?;
    file.write_all(b"1\n")
}

fn not_permitted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_off_sysctl_is_written() {
        assert_eq!(decide("0\n"), Decision::TurnOn);
        assert_eq!(decide("1\n"), Decision::On);
        assert_eq!(decide(" 1"), Decision::On);
        for odd in ["", "2\n", "yes", "01x"] {
            assert_eq!(decide(odd), Decision::Unknown, "{odd:?}");
        }
    }

    #[test]
    fn an_off_file_is_turned_on_and_an_on_one_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tcp_migrate_req");
        std::fs::write(&path, "0\n").expect("write");
        assert_eq!(enable_at(&path), Migration::Enabled);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1\n");
        assert_eq!(enable_at(&path), Migration::AlreadyOn);
        std::fs::write(&path, "7\n").expect("write");
        assert!(matches!(enable_at(&path), Migration::Failed(_)));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "7\n");
    }

    #[test]
    fn a_symlink_a_directory_or_a_missing_file_is_never_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "0\n").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(matches!(enable_at(&link), Migration::Failed(_)));
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "0\n");
        assert!(matches!(enable_at(dir.path()), Migration::Failed(_)));
        assert_eq!(
            enable_at(&dir.path().join("missing")),
            Migration::Unsupported
        );
    }
}
