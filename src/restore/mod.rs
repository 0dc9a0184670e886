//! Copy a file, a symlink or a directory tree out of an old root: the engine behind `tabula restore`.
//!
//! Plan, then apply, streamed so that memory stays bounded whatever the size of the tree.
//! [`plan_restore`] resolves both ends and checks the refusal rules into a [`RestorePlan`]; its items
//! come one at a time from a [`PlanWalk`] over the source (`--dry-run` / `--json` print them as they
//! come, [`list_plan`] collects them for small trees and tests). [`apply_restore`] executes a plan,
//! creating each item as the walk yields it, and returns a [`RestoreReport`]
//! ([`apply_restore_streaming`] hands each file's [`FileData`] to a callback instead of keeping them).
//! Both take the two trees as open directory fds; paths are absolute within them.
//!
//! Modules: [`plan`] (the walk), [`apply`] (the executor), [`render`] (text and streamed JSON);
//! `resolve` opens both ends without following symlinks and checks the destination.
//!
//! # Rules
//! - The destination's parent is resolved from `dest_root` one component at a time with
//!   `O_NOFOLLOW`: a symlink anywhere at or above the destination is refused
//!   ([`Refusal`](crate::error::Refusal) `symlink-in-destination`), even one that points somewhere harmless. Restore to the
//!   real path instead. A missing parent is an error (restore the parent directory instead).
//! - An existing destination is never replaced without `force` (`destination-exists`). A destination
//!   that is a mount point or nested subvolume, or a directory with one beneath it, is never replaced
//!   (`destination-is-mount-point`): that would hide a persisted path until the next boot.
//! - The copy is built under a temporary name (`.tabula-restore-<pid>-<n>`) in the destination's
//!   directory and renamed into place in one step: `RENAME_NOREPLACE` when the destination is absent,
//!   `RENAME_EXCHANGE` with `force`, after which the old object (now under the temporary name) is
//!   removed. A failure before the rename removes the partial copy and leaves the destination as it
//!   was.
//! - The source is resolved inside the old root with `openat2(RESOLVE_IN_ROOT)`: its symlinks are
//!   followed as that root would (an absolute link stays inside it, e.g. `/lib` → `usr/lib`), never
//!   out of it; the last component is not followed, so restoring a symlink restores the link.
//! - The source walk stays on the source's filesystem: nested subvolumes and mount points inside
//!   it are listed as `skip` with a reason, as are sockets. Hard links inside the restored tree are
//!   kept as hard links.
//! - A tree more than [`MAX_DEPTH`](crate::limits::MAX_DEPTH) directories deep (any user can make
//!   one) is refused when the walk reaches that depth: an error, never a stack overflow; when applying,
//!   the partial copy (under its temporary name) is removed and the destination is left as it was.
//! - Memory: the walk holds one open directory and its sorted names per level, and the source inode
//!   of each hard-linked file met, never the whole tree.
//! - Metadata: owner, then mode (so setuid bits survive the chown), then extended attributes (`chown`
//!   clears `security.capability`), then atime/mtime; a directory's after its contents. An owner or
//!   xattr that cannot be set (a filesystem without xattrs, `user.*` on a symlink) becomes a warning
//!   in the report, not a failure.
//! - Data: reflink (`FICLONE`) first; on `EXDEV`, `EOPNOTSUPP`, `EINVAL`, `ENOTTY` or `ENOSYS` (another
//!   filesystem, no reflink support, incompatible file flags) a copy of the data ranges only
//!   (`SEEK_DATA`/`SEEK_HOLE`): sparse files stay sparse. The report counts both and lists, per
//!   file, which it was (`files`).
//!
//! # JSON (`version: 1`)
//! A plan: `{"version", "source", "dest", "force", "replaces": {"type", "entries"}?, "reflink_expected",
//! "items": [{"path", "op": "dir"|"file"|"symlink"|"hardlink"|"fifo"|"char"|"block"|"skip",
//! "size"?, "mode": "0644", "uid", "gid", "target"?, "link_to"?, "reason"?}],
//! "totals": {"dirs", "files", "symlinks", "hardlinks", "special", "skipped", "bytes"}}`; `items[].path`
//! is the destination path, in creation order. A report: `{"version", "dest", "files": [{"path",
//! "data": "reflinked"|"copied"}], "replaced", "totals", "reflinked_files", "copied_files",
//! "reflink_used", "warnings"?}`. The lists are written as the walk goes, so what is only known at the
//! end comes after them; a failure cuts the document short (and the exit status says so). Paths follow the diff module's
//! rule (a string, or `{"bytes_base64": …}` when not UTF-8). `reflink_expected` only says that both
//! ends are on btrfs.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::diff::{FileType, serialize_mode, serialize_opt_path, serialize_path};

pub mod apply;
pub mod plan;
pub mod render;
mod resolve;

pub use apply::{apply_restore, apply_restore_streaming};
pub use plan::{PlanWalk, list_plan, plan_restore};
pub use render::{render_plan, write_plan_json, write_plan_text, write_report_json};

/// The version of the JSON documents [`RestorePlan`] and [`RestoreReport`] serialize to.
pub const SCHEMA_VERSION: u32 = crate::json::VERSION;

/// What one restore-plan item creates (the `op` of a JSON plan item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreOp {
    /// A directory (its metadata is applied after its contents).
    Dir,
    /// A regular file: reflink or copy.
    File,
    /// A symbolic link with the same target.
    Symlink,
    /// A further name for a file restored earlier in the plan (`link_to`).
    Hardlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// Not restored; `reason` says why.
    Skip,
}

/// One object to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    /// Where it will be, in the destination tree.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// What is created.
    pub op: RestoreOp,
    /// Bytes (regular files).
    #[serde(skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Permission bits, serialized as an octal string.
    #[serde(serialize_with = "serialize_mode")]
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Symlink target.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_path"
    )]
    pub target: Option<PathBuf>,
    /// For a hard link: the destination path of the item it links to.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_path"
    )]
    pub link_to: Option<PathBuf>,
    /// Why an item is skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip)]
    pub(crate) src: SourceStat,
}

/// What the executor checks and copies from the source object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceStat {
    /// Depth below the restored top (0 for the top).
    pub(crate) depth: usize,
    /// The name in its source directory.
    pub(crate) name: Vec<u8>,
    pub(crate) ino: u64,
    pub(crate) dev: u64,
    pub(crate) rdev: u64,
    pub(crate) atime: (i64, i64),
    pub(crate) mtime: (i64, i64),
    /// Its link count: above 1, a later item may be a hard link to it.
    pub(crate) nlink: u64,
}

/// What an existing destination is, when `force` will replace it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Existing {
    /// Its file type.
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// For a directory: entries beneath it, which will be removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

/// Counts of a plan or of what was done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Directories.
    pub dirs: u64,
    /// Regular files.
    pub files: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Extra names of hard-linked files.
    pub hardlinks: u64,
    /// Fifos and devices.
    pub special: u64,
    /// Items not restored.
    pub skipped: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

impl Totals {
    pub(crate) fn count(&mut self, op: RestoreOp, size: u64) {
        match op {
            RestoreOp::Dir => self.dirs += 1,
            RestoreOp::File => {
                self.files += 1;
                self.bytes += size;
            }
            RestoreOp::Symlink => self.symlinks += 1,
            RestoreOp::Hardlink => self.hardlinks += 1,
            RestoreOp::Fifo | RestoreOp::Char | RestoreOp::Block => self.special += 1,
            RestoreOp::Skip => self.skipped += 1,
        }
    }
}

/// A restore, resolved and checked, not yet done: both ends and what is replaced. Its items come from
/// [`RestorePlan::walk`], one at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// The restored path, inside the source tree.
    #[serde(serialize_with = "serialize_path")]
    pub source: PathBuf,
    /// Where it goes, inside the destination tree.
    #[serde(serialize_with = "serialize_path")]
    pub dest: PathBuf,
    /// Whether an existing destination may be replaced.
    pub force: bool,
    /// The existing destination that will be replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Existing>,
    /// Both ends are on btrfs, so files should be reflinked rather than copied.
    pub reflink_expected: bool,
    /// The source top's (inode, device) when planned: the walk checks it is still the same object.
    #[serde(skip)]
    pub(crate) top: (u64, u64),
}

/// A plan with its items collected: for small trees and tests ([`list_plan`]). Serializes to the same
/// document as the streamed `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename = "restore-plan")]
pub struct PlanListing {
    /// The plan.
    #[serde(flatten)]
    pub plan: RestorePlan,
    /// Everything to create, in order (a directory before its contents).
    pub items: Vec<PlanItem>,
    /// What will be created.
    pub totals: Totals,
}

impl Deref for PlanListing {
    type Target = RestorePlan;
    fn deref(&self) -> &RestorePlan {
        &self.plan
    }
}

/// What [`apply_restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename = "restore")]
pub struct RestoreReport {
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// Where the copy now is.
    #[serde(serialize_with = "serialize_path")]
    pub dest: PathBuf,
    /// An existing destination was replaced.
    pub replaced: bool,
    /// What was created.
    pub totals: Totals,
    /// Regular files that share their data with the source (FICLONE).
    pub reflinked_files: u64,
    /// Regular files whose bytes were copied.
    pub copied_files: u64,
    /// At least one file was reflinked.
    pub reflink_used: bool,
    /// How each regular file's data got there, in creation order (empty from
    /// [`apply_restore_streaming`], which hands them over one at a time).
    pub files: Vec<FileData>,
    /// Metadata that could not be restored, and leftovers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How a restored file's data was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataHow {
    /// Shares the source's extents (FICLONE): no data written.
    Reflinked,
    /// Bytes copied (another filesystem, or no reflink support); holes stay holes.
    Copied,
}

/// One restored regular file and how its data was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileData {
    /// Its destination path.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Reflinked or copied.
    pub data: DataHow,
}

/// The persisted path (from `persisted`) that `path` is, or lies beneath, if any; the longest wins.
/// Its contents lived in persistent storage in that boot, not in the old root.
pub fn persisted_prefix<'a>(path: &Path, persisted: &'a [PathBuf]) -> Option<&'a Path> {
    persisted
        .iter()
        .filter(|p| path.starts_with(p))
        .max_by_key(|p| p.components().count())
        .map(PathBuf::as_path)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_prefix_is_component_wise_and_longest() {
        let persisted = vec![
            PathBuf::from("/var/log"),
            PathBuf::from("/var/lib"),
            PathBuf::from("/var/lib/foo"),
        ];
        assert_eq!(
            persisted_prefix(Path::new("/var/log"), &persisted),
            Some(Path::new("/var/log"))
        );
        assert_eq!(
            persisted_prefix(Path::new("/var/log/x/y"), &persisted),
            Some(Path::new("/var/log"))
        );
        assert_eq!(persisted_prefix(Path::new("/var/logs/x"), &persisted), None);
        assert_eq!(
            persisted_prefix(Path::new("/var/lib/foo/bar"), &persisted),
            Some(Path::new("/var/lib/foo"))
        );
        assert_eq!(persisted_prefix(Path::new("/etc"), &persisted), None);
    }
}
