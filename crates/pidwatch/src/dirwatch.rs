//! Noticing every change of the pid file without polling: inotify on its directory.
//!
//! Watching the directory rather than the file sees the file appear, be replaced by a
//! rename (the atomic writers), be deleted and recreated, and be rewritten in place (the
//! non-atomic ones: every write is an IN_MODIFY, so a half-written file is re-read when its
//! second half lands).

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::error::Error;

#[derive(Debug)]
pub struct PidfileWatch {
    inotify: Inotify,
    name: OsString,
}

/// What a batch of inotify events means for the pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The pid file may have changed: read it again.
    Maybe,
    /// Only other files of the directory changed.
    None,
    /// The directory itself was deleted or moved: no further change will be seen.
    DirectoryGone,
}

impl PidfileWatch {
    pub fn new(path: &Path) -> Result<Self, Error> {
        let fail = |source| Error::WatchPidfile {
            path: path.to_owned(),
            source,
        };
        let name = path.file_name().ok_or(fail(Errno::EISDIR))?.to_owned();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(fail)?;
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        inotify.add_watch(&dir, flags).map_err(fail)?;
        Ok(Self { inotify, name })
    }

    /// Drains the pending events.
    pub fn drain(&self) -> nix::Result<Change> {
        let mut change = Change::None;
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return Ok(change),
                Err(err) => return Err(err),
            };
            for event in events {
                let ours = event.name.as_deref() == Some(self.name.as_os_str());
                if event.mask.intersects(
                    AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_IGNORED,
                ) {
                    return Ok(Change::DirectoryGone);
                }
                // An overflowed queue may have lost events about our file.
                if ours || event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    change = Change::Maybe;
                }
            }
        }
    }
}

impl AsFd for PidfileWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}
