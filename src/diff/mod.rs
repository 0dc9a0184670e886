//! What changed between two directory trees: the engine behind `tabula roots diff` and `tabula diff`.
//!
//! [`diff_trees`] compares an *old* tree (usually the blank snapshot) with a *new* one (a retired root or
//! the live root) by one synchronized walk: both directories are listed, names are sorted bytewise and
//! merged, and every name is `fstatat`-ed relative to its parent's fd without following symlinks.
//!
//! # Rules
//! - Symlinks are never followed; a symlink is compared by its target.
//! - The walk never leaves the filesystem of its tree root: an entry whose `st_dev` differs from its
//!   tree's (a nested btrfs subvolume or a mount point) is reported once with `other_fs: true`, never
//!   descended. When such an entry is on both sides, nothing inside it can be compared and it is not
//!   reported.
//! - Content: different sizes mean changed; equal size and equal mtime (to the nanosecond) mean equal
//!   (snapper's rule: it is what makes a diff of a full root affordable; a program that rewrites a file
//!   with the same size and then restores its mtime is not detected); otherwise the bytes are compared.
//!   Two hard links of one inode are compared once.
//! - Metadata: permission bits (`mode & 0o7777`, not for symlinks), owner uid, group gid and extended
//!   attributes (ACLs are `system.posix_acl_*` xattrs, so they count). atime and ctime are ignored. An
//!   mtime-only change (same content, same metadata) is not reported unless
//!   [`DiffOptions::report_mtime`] is set: a rewrite with identical bytes is not a change anyone restores.
//!   Extended attributes are not read for an inode that is provably untouched: same inode number,
//!   ctime, mtime and size on both sides (btrfs snapshots keep inode numbers and ctimes, and any xattr
//!   change bumps ctime).
//! - A directory that exists on one side only is reported once, with the number of entries beneath it
//!   and the apparent size of the regular files beneath it (a hard-linked inode counts once); its
//!   children follow as `implied` entries only when [`DiffOptions::list_children`] is set. A renamed
//!   directory is a deletion plus an addition.
//! - Paths in [`DiffOptions::ignore`] (the mount points of persisted paths) are skipped on both sides
//!   with everything beneath them. A directory that exists on one side only and holds nothing but
//!   ignored paths (the parents `tabula persist` created for a mount point) is not reported either.
//! - Hard links: a regular file with more than one link carries `link_to` when another of its names
//!   represents the inode in that tree: the first name met by the walk that exists in both trees
//!   (where the bytes already were), else the first name met. Its bytes are counted there, once: a
//!   new hard link to an old file adds no bytes, two new names of one new file add them once.
//! - An entry that cannot be read (a directory that cannot be listed, a file that cannot be opened)
//!   becomes an entry of kind `error` with a message, and the walk goes on. Only failing to read the
//!   two tree roots themselves is fatal.
//!
//! # JSON schema (`version: 1`, `kind: "diff"`)
//! ```text
//! {
//!   "version": 1, "kind": "diff",     // the envelope (crate::json)
//!   "old_tree": "blank",              // optional labels set by the caller
//!   "new_tree": "00042-…",
//!   "mtime_reported": false,          // DiffOptions::report_mtime
//!   "summary": { "added": 3, "deleted": 0, "modified": 1, "metadata": 2, "type_changed": 0,
//!                "errors": 0, "objects_added": 14, "objects_deleted": 0,
//!                "bytes_added": 4096, "bytes_deleted": 0 },
//!   "entries": [ {
//!     "path": "/var/log/wtmp",        // absolute in the tree; see "Paths" below
//!     "kind": "added" | "deleted" | "modified" | "metadata" | "type_changed" | "error",
//!     "what": ["content", "target", "device", "mode", "owner", "group", "xattr", "mtime"],
//!     "old": NODE, "new": NODE,       // the side(s) that exist
//!     "xattrs": { "added": [NAME], "removed": [NAME], "changed": [NAME] },  // when "xattr" in what
//!     "implied": true,                // a child of an added/deleted directory (list_children)
//!     "error": "reading …: Permission denied"
//!   } ]
//! }
//! NODE = { "type": "file" | "dir" | "symlink" | "block" | "char" | "fifo" | "socket",
//!          "size": 123,               // file: st_size; dir: bytes of regular files beneath (only when
//!                                     //   the directory was added/deleted/type-changed, else 0);
//!                                     //   symlink: target length; others 0
//!          "mode": "0644", "uid": 0, "gid": 0, "mtime": 1700000000,   // mtime in Unix seconds
//!          "target": PATH,            // symlinks
//!          "device": "8:1",           // block/char devices, major:minor
//!          "entries": 12,             // directories added/deleted/type-changed: entries beneath
//!          "link_to": PATH,           // hard link, see above
//!          "other_fs": true }         // nested subvolume or mount point, not descended (mtime 0)
//! ```
//! Optional members are omitted when empty or false. `what` lists the changes of a `modified` or
//! `metadata` entry; `modified` means one of content/target/device changed.
//! Summary counts are of non-implied entries; `objects_*` also count what lies beneath added/deleted
//! directories; `bytes_*` sum the sizes of added/deleted entries (a `link_to` entry adds nothing).
//!
//! # Paths
//! A path (and an xattr name) that is valid UTF-8 is a JSON string. Anything else is never converted
//! lossily: it becomes `{"bytes_base64": "<standard base64 of the raw bytes>"}`. The text renderings
//! escape such bytes as `\xNN` (see [`escape_bytes`]).

mod render;
pub(crate) mod send;
pub(crate) mod walk;
pub(crate) mod xattr;

use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Serialize, Serializer};

pub use render::{GROUP_DEPTH, escape_bytes, format_bytes, render_human, render_tsv};

/// The version of the `diff` document ([`crate::json::VERSION`]).
pub const SCHEMA_VERSION: u32 = crate::json::VERSION;

/// What to compare and what to report.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Absolute paths (in the trees' own terms, e.g. `/var/log`) skipped entirely on both sides:
    /// the mount points of persisted paths.
    pub ignore: Vec<PathBuf>,
    /// Also report every entry beneath an added or deleted directory, flagged `implied`.
    pub list_children: bool,
    /// Report mtime-only changes (kind `metadata`, what `mtime`). Off by default.
    pub report_mtime: bool,
}

/// The result of a comparison. Serializes to the body of the documented `diff` document (the
/// [`crate::json::Document`] envelope adds `version` and `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Always [`SCHEMA_VERSION`]; written by the envelope, not by the body.
    #[serde(skip)]
    pub version: u32,
    /// Caller's label for the old tree (e.g. `blank`); not set by the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_tree: Option<String>,
    /// Caller's label for the new tree (e.g. a retired root's name); not set by the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_tree: Option<String>,
    /// Whether mtime-only changes were reported.
    pub mtime_reported: bool,
    /// Counts and byte totals.
    pub summary: Summary,
    /// The changes, in walk order (a directory before what is beneath it, names sorted bytewise).
    pub entries: Vec<ChangedPath>,
}

impl Diff {
    /// True when nothing changed and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Counts of non-implied entries by kind, and byte totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Entries of kind `added`.
    pub added: u64,
    /// Entries of kind `deleted`.
    pub deleted: u64,
    /// Entries of kind `modified`.
    pub modified: u64,
    /// Entries of kind `metadata`.
    pub metadata: u64,
    /// Entries of kind `type_changed`.
    pub type_changed: u64,
    /// Entries of kind `error`.
    pub errors: u64,
    /// Added entries plus everything beneath added directories.
    pub objects_added: u64,
    /// Deleted entries plus everything beneath deleted directories.
    pub objects_deleted: u64,
    /// Bytes of added entries (directories: the regular files beneath them).
    pub bytes_added: u64,
    /// Bytes of deleted entries (directories: the regular files beneath them).
    pub bytes_deleted: u64,
}

/// How one path differs between the trees (the `kind` of a JSON entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the new tree.
    Added,
    /// Only in the old tree.
    Deleted,
    /// Content, symlink target or device number changed (metadata may have changed too).
    Modified,
    /// Only metadata changed: see `what`.
    Metadata,
    /// The file type changed (file ↔ directory ↔ symlink …, or a plain directory ↔ nested subvolume).
    TypeChanged,
    /// The entry could not be compared; `error` says why.
    Error,
}

/// One aspect that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Regular file content.
    Content,
    /// Symlink target.
    Target,
    /// Device number of a block or character device.
    Device,
    /// Permission bits.
    Mode,
    /// Owner uid.
    Owner,
    /// Group gid.
    Group,
    /// Extended attributes.
    Xattr,
    /// Modification time (only with [`DiffOptions::report_mtime`]).
    Mtime,
}

impl Change {
    /// Whether this change makes an entry `modified` rather than `metadata`.
    pub fn is_content(self) -> bool {
        matches!(self, Change::Content | Change::Target | Change::Device)
    }
}

/// File types as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Block device.
    Block,
    /// Character device.
    Char,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl FileType {
    /// The type encoded in `st_mode`, if it is one of the known ones.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & S_IFMT {
            0o100000 => FileType::File,
            0o040000 => FileType::Dir,
            0o120000 => FileType::Symlink,
            0o060000 => FileType::Block,
            0o020000 => FileType::Char,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => return None,
        })
    }

    /// A short lowercase name (`file`, `dir`, …), as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Block => "block",
            FileType::Char => "char",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
        }
    }
}

/// The file-type bits of `st_mode`.
const S_IFMT: u32 = 0o170000;

/// One side of an entry: the object as it is in one tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// File type.
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// See the schema: file size, bytes beneath a summarized directory, symlink target length.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`), serialized as an octal string.
    #[serde(serialize_with = "serialize_mode")]
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Modification time, Unix seconds; 0 for an `other_fs` node (not compared, and made up by btrfs
    /// for a nested subvolume in a snapshot).
    pub mtime: i64,
    /// Symlink target.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_path"
    )]
    pub target: Option<PathBuf>,
    /// Device number (`major:minor`) of a block or character device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Entries beneath a summarized directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Another path of the same inode in this tree, where its bytes are counted.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_path"
    )]
    pub link_to: Option<PathBuf>,
    /// A nested subvolume or mount point: not descended.
    #[serde(skip_serializing_if = "is_false")]
    pub other_fs: bool,
    /// Inode number, for hard-link bookkeeping.
    #[serde(skip)]
    pub(crate) ino: u64,
    /// Link count, for hard-link bookkeeping.
    #[serde(skip)]
    pub(crate) nlink: u64,
}

impl Node {
    /// Objects this side stands for when added or deleted: itself and everything beneath it.
    pub(crate) fn objects(side: &Option<Node>) -> u64 {
        side.as_ref().map_or(0, |n| 1 + n.entries.unwrap_or(0))
    }

    /// Bytes this side stands for when added or deleted; a hard link's bytes are counted at `link_to`.
    pub(crate) fn counted_bytes(side: &Option<Node>) -> u64 {
        side.as_ref()
            .filter(|n| n.link_to.is_none())
            .map_or(0, |n| n.size)
    }
}

/// Extended attribute names that differ between the two sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct XattrDiff {
    /// Names only on the new side.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<RawName>,
    /// Names only on the old side.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RawName>,
    /// Names on both sides with different values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<RawName>,
}

/// A raw byte string (xattr name) serialized like a path: a string when UTF-8, else base64.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawName(pub Vec<u8>);

impl Serialize for RawName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_raw(&self.0, s)
    }
}

/// One path that differs between the trees (an `entries` item of the JSON document), with its
/// [`ChangeKind`] and, for a path in both trees, [`what`](Self::what) differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedPath {
    /// Absolute path inside the trees (`/` is the tree root).
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// What kind of change.
    pub kind: ChangeKind,
    /// The aspects that changed, for `modified` and `metadata`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<Change>,
    /// The object in the old tree, if it exists there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Node>,
    /// The object in the new tree, if it exists there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Node>,
    /// Which extended attributes differ, when `what` has `xattr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<XattrDiff>,
    /// Beneath an added or deleted directory that is itself reported.
    #[serde(skip_serializing_if = "is_false")]
    pub implied: bool,
    /// Why the entry could not be compared (kind `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ChangedPath {
    /// The snapper-like five-column status: `+`/`-`/`c`/`t`/`!` or `.`, then `p` (mode), `u` (owner),
    /// `g` (group), `x` (xattrs), each `.` when unchanged.
    pub fn symbols(&self) -> String {
        let first = match self.kind {
            ChangeKind::Added => '+',
            ChangeKind::Deleted => '-',
            ChangeKind::Modified => 'c',
            ChangeKind::TypeChanged => 't',
            ChangeKind::Error => '!',
            ChangeKind::Metadata => '.',
        };
        let flag = |c: Change, ch: char| if self.what.contains(&c) { ch } else { '.' };
        [
            first,
            flag(Change::Mode, 'p'),
            flag(Change::Owner, 'u'),
            flag(Change::Group, 'g'),
            flag(Change::Xattr, 'x'),
        ]
        .iter()
        .collect()
    }
}

/// Compare two trees given as open directory fds (any open mode, `O_PATH` included).
///
/// The fds are the roots of the trees; paths in the result are absolute relative to them. Fails
/// only when a root cannot be read; everything below becomes `error` entries, including a directory
/// more than [`crate::limits::MAX_DEPTH`] levels down, which is not descended.
pub fn diff_trees(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    opts: &DiffOptions,
) -> anyhow::Result<Diff> {
    // The walk recurses per directory level (bounded by `limits::MAX_DEPTH`) on a stack sized for it.
    crate::limits::with_walk_stack(|| walk::run(old, new, opts))?
}

/// [`diff_trees`] by the btrfs send stream, in time that follows the size of the change (see the
/// `send` module): `old` and `new` must be read-only subvolumes opened from the **same filesystem**
/// (send takes the old side by subvolume id). Errors when send cannot apply (a writable side, send
/// refused), for the caller to fall back to [`diff_trees`]; the result is the same as
/// [`diff_trees`]'s.
pub fn diff_subvolumes(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    opts: &DiffOptions,
) -> anyhow::Result<Diff> {
    send::diff(old, new, opts)
}

/// [`diff_subvolumes`] where it applies, else [`diff_trees`] (saying why at debug level): the same
/// answer either way, in time that follows the change when both sides are read-only subvolumes of one
/// filesystem.
pub fn diff_fastest(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    opts: &DiffOptions,
) -> anyhow::Result<Diff> {
    match diff_subvolumes(old, new, opts) {
        Ok(d) => Ok(d),
        Err(e) => {
            tracing::debug!("the send stream cannot say what changed ({e:#}): walking");
            diff_trees(old, new, opts)
        }
    }
}

/// [`diff_trees`] for two directory paths (opened with `O_DIRECTORY|O_NOFOLLOW`).
pub fn diff_paths(old: &Path, new: &Path, opts: &DiffOptions) -> anyhow::Result<Diff> {
    let o = open_dir_path(old)?;
    let n = open_dir_path(new)?;
    use std::os::fd::AsFd;
    diff_trees(o.as_fd(), n.as_fd(), opts)
}

fn open_dir_path(path: &Path) -> anyhow::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, open};
    open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening directory '{}'", path.display()))
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Serialize permission bits as an octal string (`"0644"`).
pub(crate) fn serialize_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// Serialize a path: a JSON string when it is UTF-8, else `{"bytes_base64": "…"}`.
pub fn serialize_path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    serialize_raw(p.as_os_str().as_bytes(), s)
}

/// [`serialize_path`] for an optional path (use with `skip_serializing_if = "Option::is_none"`).
pub fn serialize_opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => serialize_path(p, s),
        None => s.serialize_none(),
    }
}

fn serialize_raw<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("bytes_base64", &base64(bytes))?;
            m.end()
        }
    }
}

/// Standard base64 (RFC 4648, with padding). Small enough not to warrant a dependency.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn paths_serialize_losslessly() {
        use std::ffi::OsStr;
        let e = ChangedPath {
            path: PathBuf::from(OsStr::from_bytes(b"/a\xffb")),
            kind: ChangeKind::Added,
            what: vec![],
            old: None,
            new: None,
            xattrs: None,
            implied: false,
            error: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["path"]["bytes_base64"], base64(b"/a\xffb"));
        let e = ChangedPath {
            path: "/é".into(),
            ..e
        };
        assert_eq!(serde_json::to_value(&e).unwrap()["path"], "/é");
    }

    #[test]
    fn symbols_follow_snapper() {
        let e = ChangedPath {
            path: "/x".into(),
            kind: ChangeKind::Metadata,
            what: vec![Change::Mode, Change::Xattr],
            old: None,
            new: None,
            xattrs: None,
            implied: false,
            error: None,
        };
        assert_eq!(e.symbols(), ".p..x");
        let e = ChangedPath {
            kind: ChangeKind::Modified,
            what: vec![Change::Content, Change::Group],
            ..e
        };
        assert_eq!(e.symbols(), "c..g.");
    }
}
