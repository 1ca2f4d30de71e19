//! What tells one version of a file from another without reading it.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A file's device, inode, size, modification and change times. Any write, replacement or
/// rename of the file changes it (a rename moves the file's ctime), to the granularity of
/// the filesystem's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of the file at `path`; `None` when it cannot be read.
    pub(crate) fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// When the file last changed in any way (its ctime).
    pub(crate) fn changed(&self) -> Option<SystemTime> {
        let (secs, nanos) = self.ctime;
        Some(
            SystemTime::UNIX_EPOCH
                + Duration::new(u64::try_from(secs).ok()?, u32::try_from(nanos).ok()?),
        )
    }
}
