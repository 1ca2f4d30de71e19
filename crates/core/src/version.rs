//! The version a zdctl binary reports: the package version, and a build tag that a
//! packager can stamp into a built binary without rebuilding it.
//!
//! `zdctl reexec` replaces a running supervisor with another binary, and `status` must say
//! which one now runs. Two builds of one package version differ only in their bytes, so the
//! binary carries a fixed-size slot, [`STAMP`], that starts with a marker and is empty
//! after it. Writing a tag after the marker in a copy of the file (the end-to-end tests
//! do, to get a second build in milliseconds) makes that copy report
//! `VERSION+TAG`. The slot is read with a volatile read, so the compiler cannot fold
//! the empty tag into the code.

/// The marker, then room for a tag of up to [`TAG_LEN`] bytes, NUL-padded.
#[used]
static STAMP: [u8; MARKER_LEN + TAG_LEN] = *b"zdctl-build-tag:\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// The length of the marker (`zdctl-build-tag:`); the tag follows it.
pub const MARKER_LEN: usize = 16;
/// The most bytes a tag may have.
pub const TAG_LEN: usize = 48;

/// `0.4.0`, or `0.4.0+TAG` in a binary stamped with a tag.
pub fn version() -> String {
    let package = env!("CARGO_PKG_VERSION");
    match tag() {
        Some(tag) => format!("{package}+{tag}"),
        None => package.to_owned(),
    }
}

/// The build tag stamped into this binary, if any (printable ASCII only).
fn tag() -> Option<String> {
    // SAFETY: STAMP is a plain byte array that lives for the whole program.
    let slot: [u8; MARKER_LEN + TAG_LEN] = unsafe { std::ptr::read_volatile(&raw const STAMP) };
    let tag = &slot[MARKER_LEN..];
    let len = tag.iter().position(|b| *b == 0).unwrap_or(TAG_LEN);
    let tag = &tag[..len];
    (!tag.is_empty() && tag.iter().all(|b| b.is_ascii_graphic()))
        .then(|| String::from_utf8_lossy(tag).into_owned())
}

/// Writes `tag` into the stamp slot of the binary `bytes` (a copy of a zdctl binary);
/// returns false when the slot is not found or the tag does not fit.
pub fn stamp(bytes: &mut [u8], tag: &str) -> bool {
    let marker = &STAMP[..MARKER_LEN];
    if tag.len() > TAG_LEN || !tag.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let Some(at) = bytes
        .windows(MARKER_LEN + TAG_LEN)
        .position(|w| &w[..MARKER_LEN] == marker && w[MARKER_LEN..].iter().all(|b| *b == 0))
    else {
        return false;
    };
    let slot = &mut bytes[at + MARKER_LEN..at + MARKER_LEN + TAG_LEN];
    slot.fill(0);
    slot[..tag.len()].copy_from_slice(tag.as_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unstamped_build_reports_the_package_version() {
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn stamping_a_copy_writes_the_tag_after_the_marker() {
        let mut bytes = b"xx".to_vec();
        bytes.extend_from_slice(&STAMP);
        bytes.extend_from_slice(b"yy");
        assert!(stamp(&mut bytes, "second"));
        let slot = &bytes[2 + MARKER_LEN..2 + MARKER_LEN + TAG_LEN];
        assert_eq!(&slot[..6], b"second");
        assert!(slot[6..].iter().all(|b| *b == 0));
        // Once stamped, the slot is no longer empty: stamping again finds nothing.
        assert!(!stamp(&mut bytes, "third"));
        assert!(!stamp(&mut b"no slot here".to_vec(), "x"));
        let mut fresh = STAMP.to_vec();
        assert!(!stamp(&mut fresh, &"x".repeat(TAG_LEN + 1)));
        assert!(!stamp(&mut fresh, "has space"));
    }
}
