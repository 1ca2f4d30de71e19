//! Reading a service file again only when it changed.
//!
//! A restart re-reads the service file so that edits apply, but most restarts follow no
//! edit; parsing and validating the YAML then is wasted work on the restart's critical
//! path. [`FileCache`] keeps the config parsed at the last read, with the file's identity
//! and timestamps, and hands it back while they are unchanged.

use std::path::Path;
use std::time::Duration;

use super::{ConfigError, ServiceConfig, load_file};
use crate::stamp::FileStamp;

/// A change within this long before a read might not move the file's timestamps (their
/// granularity is a clock tick on most filesystems, seconds on some): a file changed that
/// recently is read again next time rather than trusted.
const SETTLE: Duration = Duration::from_secs(2);

/// The last config read from one service file.
#[derive(Debug, Default)]
pub struct FileCache {
    last: Option<(FileStamp, ServiceConfig)>,
}

impl FileCache {
    /// The config in `path`: the one read last time if the file is unchanged since, else
    /// read, parsed and validated again (see [`load_file`]).
    pub fn load(&mut self, path: &Path) -> Result<ServiceConfig, ConfigError> {
        let before = FileStamp::of(path);
        if let (Some(stamp), Some((cached, config))) = (before, &self.last) {
            if stamp == *cached {
                return Ok(config.clone());
            }
        }
        self.last = None;
        let config = load_file(path)?;
        // Keep it only if the file was settled before the read and did not change during it.
        if let Some(stamp) = before {
            let settled = stamp
                .changed()
                .and_then(|changed| changed.elapsed().ok())
                .is_some_and(|since_change| since_change > SETTLE);
            if settled && FileStamp::of(path) == Some(stamp) {
                self.last = Some((stamp, config.clone()));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// Backdates the file's mtime; ctime follows to now, so also check a file whose ctime is
    /// recent is never trusted.
    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn a_recently_changed_file_is_read_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.yaml");
        write(&path, "command: [\"true\"]\n");
        let mut cache = FileCache::default();
        assert_eq!(cache.load(&path).unwrap().command, ["true"]);
        age(&path);
        // Same size, same (backdated) mtime, but ctime moved: must not be served stale.
        write(&path, "command: [\"echo\"]\n");
        age(&path);
        assert_eq!(cache.load(&path).unwrap().command, ["echo"]);
        assert!(
            cache.last.is_none(),
            "a file changed seconds ago is not cached"
        );
    }

    #[test]
    fn a_settled_file_is_served_from_the_cache_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.yaml");
        write(&path, "command: [\"true\"]\n");
        let stamp = FileStamp::of(&path).unwrap();
        let config = load_file(&path).unwrap();
        let mut cache = FileCache {
            last: Some((stamp, config)),
        };
        assert_eq!(cache.load(&path).unwrap().command, ["true"]);
        write(&path, "command: [\"echo\", \"x\"]\n");
        assert_eq!(cache.load(&path).unwrap().command, ["echo", "x"]);
        write(&path, "command: [\"nope\n");
        assert!(cache.load(&path).is_err());
        assert!(cache.last.is_none());
    }
}
