//! Mount points of the calling thread's mount namespace.
//!
//! Read from `/proc/thread-self/mountinfo`, not `/proc/self`: a thread may have its own namespace (the
//! status helper, tests), and `/proc/self` shows the main thread's. Parsing is [`crate::mountinfo`]'s.

use std::collections::HashSet;
use std::path::PathBuf;

/// The set of mount points, or an error when procfs is not mounted.
pub(crate) fn mount_points() -> std::io::Result<HashSet<PathBuf>> {
    Ok(crate::mountinfo::read()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}
