//! Reading a service file again only when it changed.
//!
//! A restart re-reads the service file so that edits apply, but most restarts follow no
//! edit; parsing and validating the YAML then is wasted work on the restart's critical
//! path. [`FileCache`] keeps the config parsed at the last read, with the file's identity
//! and timestamps, and hands it back while they are unchanged: one `stat`, no read.
//!
//! A changed file is read with [`FileCache::reload`], on a thread of its own and within
//! [`READ_DEADLINE`], so that whatever sits at the path cannot hold up the supervisor.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::read::off_thread;
use super::{ConfigError, READ_DEADLINE, ServiceConfig, load_file};
use crate::stamp::FileStamp;

/// A change within this long before a read might not move the file's timestamps (their
/// granularity is a clock tick on most filesystems, seconds on some): a file changed that
/// recently is read again next time rather than trusted.
const SETTLE: Duration = Duration::from_secs(2);

/// The last config read from one service file.
#[derive(Debug, Default)]
pub struct FileCache {
    last: Option<(FileStamp, ServiceConfig)>,
    /// Held by the thread of the last [`FileCache::reload`] until its read returns: while
    /// someone else holds it, that read is still blocked.
    reading: Option<Arc<()>>,
}

impl FileCache {
    /// The config in `path`: the one read last time if the file is unchanged since, else
    /// read, parsed and validated again (see [`load_file`]), on the caller's thread.
    pub fn load(&mut self, path: &Path) -> Result<ServiceConfig, ConfigError> {
        if let Some(config) = self.get(path) {
            return Ok(config);
        }
        self.last = None;
        let (config, keep) = read_fresh(path)?;
        self.last = keep.map(|stamp| (stamp, config.clone()));
        Ok(config)
    }

    /// The config read last time, if the file at `path` has not changed since: a `stat`,
    /// never a read.
    pub(crate) fn get(&self, path: &Path) -> Option<ServiceConfig> {
        let (cached, config) = self.last.as_ref()?;
        (FileStamp::of(path)? == *cached).then(|| config.clone())
    }

    /// Reads, parses and validates `path` on a thread of its own and waits at most
    /// [`READ_DEADLINE`] for it, keeping the result for [`FileCache::get`]. The lock is held
    /// only before and after the read, never across it. While a read given up on earlier
    /// is still blocked, fails at once rather than leave a second thread blocked beside it.
    pub(crate) async fn reload(
        cache: &Mutex<FileCache>,
        path: &Path,
    ) -> Result<ServiceConfig, ConfigError> {
        let lock = || cache.lock().unwrap_or_else(PoisonError::into_inner);
        let token = {
            let mut cache = lock();
            if cache
                .reading
                .as_ref()
                .is_some_and(|r| Arc::strong_count(r) > 1)
            {
                return Err(ConfigError::StillReading {
                    path: path.to_owned(),
                });
            }
            cache.last = None;
            let token = Arc::new(());
            cache.reading = Some(token.clone());
            token
        };
        let owned = path.to_owned();
        let read = off_thread(path, READ_DEADLINE, move || {
            let _reading = token;
            read_fresh(&owned)
        })
        .await;
        let (config, keep) = read?;
        lock().last = keep.map(|stamp| (stamp, config.clone()));
        Ok(config)
    }
}

/// Reads `path`; with the config, the file's stamp when the cache may keep it: the file was
/// settled before the read and did not change during it.
fn read_fresh(path: &Path) -> Result<(ServiceConfig, Option<FileStamp>), ConfigError> {
    let before = FileStamp::of(path);
    let config = load_file(path)?;
    let keep = before.filter(|stamp| {
        let settled = stamp
            .changed()
            .and_then(|changed| changed.elapsed().ok())
            .is_some_and(|since_change| since_change > SETTLE);
        settled && FileStamp::of(path) == Some(*stamp)
    });
    Ok((config, keep))
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
            reading: None,
        };
        assert_eq!(cache.load(&path).unwrap().command, ["true"]);
        write(&path, "command: [\"echo\", \"x\"]\n");
        assert_eq!(cache.load(&path).unwrap().command, ["echo", "x"]);
        write(&path, "command: [\"nope\n");
        assert!(cache.load(&path).is_err());
        assert!(cache.last.is_none());
    }

    #[tokio::test]
    async fn a_reload_reads_the_file_again_once_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.yaml");
        write(&path, "command: [\"true\"]\n");
        age(&path);
        let cache = Mutex::new(FileCache::default());
        let config = FileCache::reload(&cache, &path).await.unwrap();
        assert_eq!(config.command, ["true"]);
        write(&path, "command: [\"echo\"]\n");
        assert!(cache.lock().unwrap().get(&path).is_none(), "changed since");
        let config = FileCache::reload(&cache, &path).await.unwrap();
        assert_eq!(config.command, ["echo"]);
    }

    #[tokio::test]
    async fn a_reload_fails_at_once_while_an_earlier_read_is_still_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.yaml");
        write(&path, "command: [\"true\"]\n");
        let cache = Mutex::new(FileCache::default());
        // As if the thread of a read given up on still held its token.
        let stuck = Arc::new(());
        cache.lock().unwrap().reading = Some(stuck.clone());
        let err = FileCache::reload(&cache, &path).await.unwrap_err();
        assert!(matches!(err, ConfigError::StillReading { .. }), "{err:?}");
        assert!(err.to_string().contains("still blocked"), "{err}");
        drop(stuck);
        assert!(FileCache::reload(&cache, &path).await.is_ok());
    }
}
