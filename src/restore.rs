//! Copy a file, a symlink or a directory tree out of an old root: the engine behind `tabula restore`.
//!
//! Plan, then apply. [`plan_restore`] resolves both ends and walks the source into a [`RestorePlan`]
//! (pure data: `--dry-run` / `--json` print it); [`apply_restore`] executes a plan and returns a
//! [`RestoreReport`]. Both take the two trees as open directory fds; paths are absolute within them.
//!
//! # Rules
//! - The destination's parent is resolved from `dest_root` one component at a time with
//!   `O_NOFOLLOW`: a symlink anywhere at or above the destination is refused
//!   ([`Refusal`] `symlink-in-destination`), even one that points somewhere harmless. Restore to the
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
//! - A tree more than [`MAX_DEPTH`] directories deep (any user can make one) is refused while
//!   planning, before anything is created: an error, never a stack overflow.
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
//! "totals": {"dirs", "files", "symlinks", "hardlinks", "special", "skipped", "bytes"},
//! "items": [{"path", "op": "dir"|"file"|"symlink"|"hardlink"|"fifo"|"char"|"block"|"skip",
//! "size"?, "mode": "0644", "uid", "gid", "target"?, "link_to"?, "reason"?}]}`; `items[].path` is the
//! destination path, in creation order. A report: `{"version", "dest", "replaced", "totals",
//! "reflinked_files", "copied_files", "reflink_used", "files": [{"path", "data": "reflinked"|"copied"}],
//! "warnings"?}`. Paths follow the diff module's
//! rule (a string, or `{"bytes_base64": …}` when not UTF-8). `reflink_expected` only says that both
//! ends are on btrfs.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat,
    futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, fstatfs};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    Gid, Uid, UnlinkatFlags, fchown, fchownat, geteuid, linkat, symlinkat, unlinkat,
};
use serde::Serialize;

use crate::diff::xattr::{self, Xattrs};
use crate::diff::{FileType, escape_bytes, serialize_mode, serialize_opt_path, serialize_path};
use crate::error::{Refusal, UsageError};
use crate::limits::{MAX_DEPTH, too_deep, with_walk_stack};

/// The version of the JSON documents [`RestorePlan`] and [`RestoreReport`] serialize to.
pub const SCHEMA_VERSION: u32 = 1;

/// What one plan item creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
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
    pub op: Op,
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
    src: SourceStat,
}

/// What the executor checks and copies from the source object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceStat {
    /// Depth below the restored top (0 for the top).
    depth: usize,
    /// The name in its source directory.
    name: Vec<u8>,
    ino: u64,
    dev: u64,
    rdev: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    /// A later item is a hard link to this one.
    linked: bool,
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
    fn count(&mut self, op: Op, size: u64) {
        match op {
            Op::Dir => self.dirs += 1,
            Op::File => {
                self.files += 1;
                self.bytes += size;
            }
            Op::Symlink => self.symlinks += 1,
            Op::Hardlink => self.hardlinks += 1,
            Op::Fifo | Op::Char | Op::Block => self.special += 1,
            Op::Skip => self.skipped += 1,
        }
    }
}

/// A restore, computed and checked, not yet done.
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
    /// What will be created.
    pub totals: Totals,
    /// Everything to create, in order (a directory before its contents).
    pub items: Vec<PlanItem>,
}

/// What [`apply_restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// How each regular file's data got there, in creation order.
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

/// Compute a restore of `source` (absolute, inside the tree `source_root`) to `dest` (absolute, inside
/// `dest_root`, normally an fd of `/`). Checks every refusal rule; changes nothing.
pub fn plan_restore(
    source_root: BorrowedFd<'_>,
    source: &Path,
    dest_root: BorrowedFd<'_>,
    dest: &Path,
    force: bool,
) -> anyhow::Result<RestorePlan> {
    // The walks below recurse per directory level (bounded by `MAX_DEPTH`) on a stack sized for it.
    with_walk_stack(|| plan_restore_inner(source_root, source, dest_root, dest, force))?
}

fn plan_restore_inner(
    source_root: BorrowedFd<'_>,
    source: &Path,
    dest_root: BorrowedFd<'_>,
    dest: &Path,
    force: bool,
) -> anyhow::Result<RestorePlan> {
    let src_parts = components(source, "the path to restore")?;
    let dst_parts = components(dest, "the destination")?;
    let (src_parent, src_name) = open_source_parent(source_root, &src_parts, source)?;
    let top = match fstatat(
        src_parent.as_fd(),
        src_name.as_slice(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => st,
        Err(Errno::ENOENT) => bail!("'{}' does not exist in the old root", source.display()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading '{}' in the old root", source.display()));
        }
    };
    let (dst_parent, dst_name) = open_dest_parent(dest_root, &dst_parts, dest)?;
    let replaces = check_destination(dst_parent.as_fd(), &dst_name, dest, force)?;

    let mut planner = Planner {
        items: Vec::new(),
        totals: Totals::default(),
        links: HashMap::new(),
        dev: top.st_dev,
    };
    planner
        .visit(src_parent.as_fd(), &src_name, &top, dest.to_path_buf(), 0)
        .with_context(|| format!("reading '{}' in the old root", source.display()))?;
    if let Some(top) = planner.items.first().filter(|i| i.op == Op::Skip) {
        bail!(
            "'{}' cannot be restored: {}",
            source.display(),
            top.reason.as_deref().unwrap_or("unsupported file type")
        );
    }
    let reflink_expected = is_btrfs(src_parent.as_fd()) && is_btrfs(dst_parent.as_fd());
    Ok(RestorePlan {
        version: SCHEMA_VERSION,
        source: source.to_path_buf(),
        dest: dest.to_path_buf(),
        force,
        replaces,
        reflink_expected,
        totals: planner.totals,
        items: planner.items,
    })
}

/// Execute a plan made by [`plan_restore`] with the same trees. Re-checks the refusal rules (the
/// destination may have changed since) and that the source still is what was planned.
pub fn apply_restore(
    plan: &RestorePlan,
    source_root: BorrowedFd<'_>,
    dest_root: BorrowedFd<'_>,
) -> anyhow::Result<RestoreReport> {
    with_walk_stack(|| apply_restore_inner(plan, source_root, dest_root))?
}

fn apply_restore_inner(
    plan: &RestorePlan,
    source_root: BorrowedFd<'_>,
    dest_root: BorrowedFd<'_>,
) -> anyhow::Result<RestoreReport> {
    let src_parts = components(&plan.source, "the path to restore")?;
    let dst_parts = components(&plan.dest, "the destination")?;
    let (src_parent, src_name) = open_source_parent(source_root, &src_parts, &plan.source)?;
    let (dst_parent, dst_name) = open_dest_parent(dest_root, &dst_parts, &plan.dest)?;
    let existing = check_destination(dst_parent.as_fd(), &dst_name, &plan.dest, plan.force)?;

    let mut ex = Executor {
        totals: Totals::default(),
        reflinked: 0,
        copied: 0,
        warnings: Vec::new(),
        files: Vec::new(),
        first_links: HashMap::new(),
        euid: geteuid().as_raw(),
    };
    let tmp = ex
        .build(plan, src_parent.as_fd(), &src_name, dst_parent.as_fd())
        .with_context(|| {
            format!(
                "restoring '{}' to '{}'",
                plan.source.display(),
                plan.dest.display()
            )
        })?;

    let parent = dst_parent.as_fd();
    let mut replaced = false;
    let mut renamed = false;
    if existing.is_some() {
        match rustix::fs::renameat_with(
            parent,
            &tmp,
            parent,
            &dst_name,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {
                replaced = true;
                renamed = true;
            }
            // Gone since we looked: a plain no-replace rename below.
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                remove_quietly(parent, &tmp);
                return Err(std::io::Error::from(e)).with_context(|| {
                    format!("moving the copy into place at '{}'", plan.dest.display())
                });
            }
        }
    }
    if !renamed {
        match rustix::fs::renameat_with(
            parent,
            &tmp,
            parent,
            &dst_name,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(e) => {
                remove_quietly(parent, &tmp);
                if e == rustix::io::Errno::EXIST {
                    return Err(exists_refusal(&plan.dest).into());
                }
                return Err(std::io::Error::from(e)).with_context(|| {
                    format!("moving the copy into place at '{}'", plan.dest.display())
                });
            }
        }
    }
    if replaced {
        // The old object now has the temporary name.
        if let Err(e) = remove_tree(parent, &tmp) {
            ex.warnings.push(format!(
                "removing the replaced '{}' (now '{}'): {e:#}",
                plan.dest.display(),
                plan.dest.with_file_name(OsStr::from_bytes(&tmp)).display()
            ));
        }
    }
    Ok(RestoreReport {
        version: SCHEMA_VERSION,
        dest: plan.dest.clone(),
        replaced,
        totals: ex.totals,
        reflinked_files: ex.reflinked,
        copied_files: ex.copied,
        reflink_used: ex.reflinked > 0,
        files: ex.files,
        warnings: ex.warnings,
    })
}

/// Render a plan for `--dry-run` on a terminal: one line per item, then the totals.
pub fn render_plan(plan: &RestorePlan) -> String {
    let mut out = format!(
        "restore '{}' to '{}'\n",
        escape_bytes(plan.source.as_os_str().as_bytes()),
        escape_bytes(plan.dest.as_os_str().as_bytes())
    );
    if let Some(r) = &plan.replaces {
        out.push_str(&format!("replaces the existing {}", r.file_type.name()));
        if let Some(n) = r.entries {
            out.push_str(&format!(" and the {n} entries beneath it"));
        }
        out.push('\n');
    }
    for item in &plan.items {
        let path = escape_bytes(item.path.as_os_str().as_bytes());
        let what = match item.op {
            Op::File => format!(
                "file {:04o} {}:{} {}",
                item.mode,
                item.uid,
                item.gid,
                crate::diff::format_bytes(item.size)
            ),
            Op::Dir => format!("dir {:04o} {}:{}", item.mode, item.uid, item.gid),
            Op::Symlink => format!(
                "symlink -> {}",
                item.target
                    .as_ref()
                    .map(|t| escape_bytes(t.as_os_str().as_bytes()))
                    .unwrap_or_default()
            ),
            Op::Hardlink => format!(
                "hard link to {}",
                item.link_to
                    .as_ref()
                    .map(|t| escape_bytes(t.as_os_str().as_bytes()))
                    .unwrap_or_default()
            ),
            Op::Fifo => format!("fifo {:04o} {}:{}", item.mode, item.uid, item.gid),
            Op::Char | Op::Block => format!(
                "{} device {}:{} {:04o} {}:{}",
                if item.op == Op::Char { "char" } else { "block" },
                nix::sys::stat::major(item.src.rdev),
                nix::sys::stat::minor(item.src.rdev),
                item.mode,
                item.uid,
                item.gid
            ),
            Op::Skip => format!("skipped: {}", item.reason.as_deref().unwrap_or("")),
        };
        out.push_str(&format!("  {path}  {what}\n"));
    }
    let t = &plan.totals;
    out.push_str(&format!(
        "{} dirs, {} files ({}), {} symlinks, {} hard links, {} special, {} skipped; {}\n",
        t.dirs,
        t.files,
        crate::diff::format_bytes(t.bytes),
        t.symlinks,
        t.hardlinks,
        t.special,
        t.skipped,
        if plan.reflink_expected {
            "reflinks expected (btrfs on both ends)"
        } else {
            "files will be copied"
        }
    ));
    out
}

struct Planner {
    items: Vec<PlanItem>,
    totals: Totals,
    /// Source inode → (destination path, item index) of its first name, for hard links.
    links: HashMap<u64, (PathBuf, usize)>,
    /// The source top's filesystem: the walk does not leave it.
    dev: u64,
}

impl Planner {
    fn visit(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &FileStat,
        dest: PathBuf,
        depth: usize,
    ) -> anyhow::Result<()> {
        let ft = FileType::from_mode(st.st_mode);
        let mut item = PlanItem {
            path: dest.clone(),
            op: Op::Skip,
            size: 0,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            target: None,
            link_to: None,
            reason: None,
            src: SourceStat {
                depth,
                name: name.to_vec(),
                ino: st.st_ino,
                dev: st.st_dev,
                rdev: st.st_rdev,
                atime: (st.st_atime, st.st_atime_nsec),
                mtime: (st.st_mtime, st.st_mtime_nsec),
                linked: false,
            },
        };
        let mut children = None;
        if depth > 0 && st.st_dev != self.dev {
            item.reason = Some("a nested subvolume or mount point: not restored".into());
        } else {
            match ft {
                Some(FileType::Dir) if depth >= MAX_DEPTH => {
                    bail!(
                        "{}; restore a directory further down on its own",
                        too_deep()
                    )
                }
                Some(FileType::Dir) => {
                    item.op = Op::Dir;
                    let mut d = open_checked_dir(dir, name, st)?;
                    children = Some((read_names(&mut d)?, d));
                }
                Some(FileType::File) => {
                    #[allow(clippy::useless_conversion)] // nlink_t is u32 on some architectures
                    let nlink = u64::from(st.st_nlink);
                    match self.links.get(&st.st_ino).filter(|_| nlink > 1) {
                        Some((first, index)) => {
                            item.op = Op::Hardlink;
                            item.link_to = Some(first.clone());
                            if let Some(f) = self.items.get_mut(*index) {
                                f.src.linked = true;
                            }
                        }
                        None => {
                            item.op = Op::File;
                            item.size = u64::try_from(st.st_size).unwrap_or(0);
                            if nlink > 1 {
                                self.links
                                    .insert(st.st_ino, (dest.clone(), self.items.len()));
                            }
                        }
                    }
                }
                Some(FileType::Symlink) => {
                    item.op = Op::Symlink;
                    item.target = Some(PathBuf::from(
                        readlinkat(dir, name).context("reading a symlink")?,
                    ));
                }
                Some(FileType::Fifo) => item.op = Op::Fifo,
                Some(FileType::Char) => item.op = Op::Char,
                Some(FileType::Block) => item.op = Op::Block,
                Some(FileType::Socket) => {
                    item.reason = Some("a socket: recreated by its program, not restored".into())
                }
                None => item.reason = Some("an unknown file type".into()),
            }
        }
        self.totals.count(item.op, item.size);
        self.items.push(item);
        if let Some((names, d)) = children {
            for child in names {
                let cst = fstatat(d.as_fd(), child.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .with_context(|| {
                        format!(
                            "reading '{}'",
                            dest.join(OsStr::from_bytes(&child)).display()
                        )
                    })?;
                self.visit(
                    d.as_fd(),
                    &child,
                    &cst,
                    dest.join(OsStr::from_bytes(&child)),
                    depth + 1,
                )?;
            }
        }
        Ok(())
    }
}

struct Frame {
    src: Dir,
    dst: OwnedFd,
    item: usize,
    xattrs: Xattrs,
}

struct Executor {
    totals: Totals,
    reflinked: u64,
    copied: u64,
    warnings: Vec<String>,
    files: Vec<FileData>,
    /// Destination path of a hard-linked file's first name → an fd on it, for `linkat`.
    first_links: HashMap<PathBuf, OwnedFd>,
    euid: u32,
}

impl Executor {
    /// Build the copy under a fresh temporary name in `dst_parent`; returns that name. On failure,
    /// removes what it built.
    fn build(
        &mut self,
        plan: &RestorePlan,
        src_parent: BorrowedFd<'_>,
        src_name: &[u8],
        dst_parent: BorrowedFd<'_>,
    ) -> anyhow::Result<Vec<u8>> {
        let top = plan
            .items
            .first()
            .ok_or_else(|| anyhow!("the plan is empty"))?;
        let mut stack = Vec::new();
        let mut created = None;
        for n in 0..100 {
            let tmp = format!(".tabula-restore-{}-{n}", std::process::id()).into_bytes();
            let taken = |tmp: &[u8]| fstatat(dst_parent, tmp, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok();
            // A leftover, or someone else's: never touch it, take the next name.
            if taken(&tmp) {
                continue;
            }
            match self.create(plan, 0, src_parent, src_name, dst_parent, &tmp) {
                Err(e) if e.downcast_ref::<Errno>() == Some(&Errno::EEXIST) => continue,
                Err(e) => {
                    // Free a moment ago: whatever is there now, `create` made.
                    if taken(&tmp) {
                        remove_quietly(dst_parent, &tmp);
                    }
                    return Err(e.context(format!("creating '{}'", top.path.display())));
                }
                Ok(frame) => {
                    stack.extend(frame);
                    created = Some(tmp);
                    break;
                }
            }
        }
        let tmp = created
            .ok_or_else(|| anyhow!("no free temporary name in the destination directory"))?;
        if let Err(e) = self.build_rest(plan, &mut stack) {
            drop(stack);
            remove_quietly(dst_parent, &tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn build_rest(&mut self, plan: &RestorePlan, stack: &mut Vec<Frame>) -> anyhow::Result<()> {
        for (i, item) in plan.items.iter().enumerate().skip(1) {
            while stack.len() > item.src.depth {
                self.finish_dir(plan, stack)?;
            }
            let frame = stack.last().ok_or_else(|| {
                anyhow!(
                    "the plan's item '{}' has no parent directory",
                    item.path.display()
                )
            })?;
            let name = item.src.name.as_slice();
            let pushed = self
                .create(plan, i, frame.src.as_fd(), name, frame.dst.as_fd(), name)
                .with_context(|| format!("creating '{}'", item.path.display()))?;
            stack.extend(pushed);
        }
        while !stack.is_empty() {
            self.finish_dir(plan, stack)?;
        }
        Ok(())
    }

    /// Create item `i` as `dname` in `ddir` from `sname` in `sdir`. A directory comes back as a frame
    /// whose metadata [`Executor::finish_dir`] applies once its contents exist. A failure to create
    /// the object itself is a bare [`Errno`], so that `EEXIST` can be told apart.
    fn create(
        &mut self,
        plan: &RestorePlan,
        i: usize,
        sdir: BorrowedFd<'_>,
        sname: &[u8],
        ddir: BorrowedFd<'_>,
        dname: &[u8],
    ) -> anyhow::Result<Option<Frame>> {
        let item = &plan.items[i];
        let mut frame = None;
        match item.op {
            Op::Dir => {
                let src = open_checked_dir_src(sdir, sname, &item.src)?;
                let xattrs = xattr::list_fd(src.as_fd())
                    .map_err(std::io::Error::from)
                    .context("reading xattrs")?;
                mkdirat(ddir, dname, Mode::from_bits_truncate(0o700))
                    .map_err(anyhow::Error::from)?;
                let dst = openat(
                    ddir,
                    dname,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .context("opening the new directory")?;
                // The directory just made is ours, not one swapped in by someone else.
                let st = fstat(dst.as_fd())?;
                if st.st_uid != self.euid || FileType::from_mode(st.st_mode) != Some(FileType::Dir)
                {
                    bail!("the new directory was replaced while restoring");
                }
                frame = Some(Frame {
                    src,
                    dst,
                    item: i,
                    xattrs,
                });
            }
            Op::File => {
                // O_NOATIME: restoring from a tree must not change it (where we may ask).
                let flags =
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                let src = match openat(sdir, sname, flags | OFlag::O_NOATIME, Mode::empty()) {
                    Err(Errno::EPERM) => openat(sdir, sname, flags, Mode::empty()),
                    r => r,
                }
                .context("opening the source")?;
                check_source(&src, &item.src)?;
                let dst = openat(
                    ddir,
                    dname,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(anyhow::Error::from)?;
                let how = match crate::btrfs::clone_file(dst.as_fd(), src.as_fd()) {
                    Ok(()) => DataHow::Reflinked,
                    Err(
                        Errno::EXDEV
                        | Errno::EOPNOTSUPP
                        | Errno::EINVAL
                        | Errno::ENOTTY
                        | Errno::ENOSYS,
                    ) => {
                        copy_sparse(&src, &dst).context("copying the data")?;
                        DataHow::Copied
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context("cloning the data")),
                };
                match how {
                    DataHow::Reflinked => self.reflinked += 1,
                    DataHow::Copied => self.copied += 1,
                }
                self.files.push(FileData {
                    path: item.path.clone(),
                    data: how,
                });
                let xattrs = xattr::list_fd(src.as_fd())
                    .map_err(std::io::Error::from)
                    .context("reading xattrs")?;
                self.set_meta_fd(dst.as_fd(), item, &xattrs)?;
                if item.src.linked {
                    self.first_links.insert(item.path.clone(), dst);
                }
            }
            Op::Hardlink => {
                check_source_at(sdir, sname, &item.src)?;
                let to = item
                    .link_to
                    .as_ref()
                    .ok_or_else(|| anyhow!("hard link without a target"))?;
                let first = self
                    .first_links
                    .get(to)
                    .ok_or_else(|| anyhow!("'{}' was not restored first", to.display()))?;
                let proc = format!("/proc/self/fd/{}", first.as_raw_fd());
                linkat(
                    AT_FDCWD,
                    proc.as_str(),
                    ddir,
                    dname,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(anyhow::Error::from)?;
            }
            Op::Symlink => {
                check_source_at(sdir, sname, &item.src)?;
                let target = readlinkat(sdir, sname).context("reading the source symlink")?;
                if item.target.as_deref().map(Path::as_os_str) != Some(target.as_os_str()) {
                    bail!("the source changed since the plan was made");
                }
                symlinkat(target.as_os_str(), ddir, dname).map_err(anyhow::Error::from)?;
                let xattrs = xattr::list_at(sdir, sname)
                    .map_err(std::io::Error::from)
                    .context("reading xattrs")?;
                self.set_meta_at(ddir, dname, item, &xattrs, false)?;
            }
            Op::Fifo | Op::Char | Op::Block => {
                check_source_at(sdir, sname, &item.src)?;
                let kind = match item.op {
                    Op::Fifo => SFlag::S_IFIFO,
                    Op::Char => SFlag::S_IFCHR,
                    _ => SFlag::S_IFBLK,
                };
                mknodat(
                    ddir,
                    dname,
                    kind,
                    Mode::from_bits_truncate(0o600),
                    item.src.rdev,
                )
                .map_err(anyhow::Error::from)?;
                let xattrs = xattr::list_at(sdir, sname)
                    .map_err(std::io::Error::from)
                    .context("reading xattrs")?;
                self.set_meta_at(ddir, dname, item, &xattrs, true)?;
            }
            Op::Skip => {}
        }
        self.totals.count(item.op, item.size);
        Ok(frame)
    }

    /// Pop the innermost directory and give it its metadata, now that its contents exist.
    fn finish_dir(&mut self, plan: &RestorePlan, stack: &mut Vec<Frame>) -> anyhow::Result<()> {
        if let Some(f) = stack.pop() {
            let item = &plan.items[f.item];
            self.set_meta_fd(f.dst.as_fd(), item, &f.xattrs)
                .with_context(|| format!("setting the metadata of '{}'", item.path.display()))?;
        }
        Ok(())
    }

    /// Owner, mode, xattrs, times, in that order, on an open file or directory.
    fn set_meta_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        item: &PlanItem,
        xattrs: &Xattrs,
    ) -> anyhow::Result<()> {
        if let Err(e) = fchown(
            fd,
            Some(Uid::from_raw(item.uid)),
            Some(Gid::from_raw(item.gid)),
        ) {
            self.warn_owner(item, e);
        }
        fchmod(fd, Mode::from_bits_truncate(item.mode)).context("setting the mode")?;
        for (name, e) in xattr::set_fd(fd, xattrs) {
            self.warn_xattr(item, &name, e);
        }
        let (atime, mtime) = times(item);
        futimens(fd, &atime, &mtime).context("setting the times")?;
        Ok(())
    }

    /// The same for a symlink or special file, by name, never following it.
    fn set_meta_at(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        item: &PlanItem,
        xattrs: &Xattrs,
        chmod: bool,
    ) -> anyhow::Result<()> {
        if let Err(e) = fchownat(
            dir,
            name,
            Some(Uid::from_raw(item.uid)),
            Some(Gid::from_raw(item.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            self.warn_owner(item, e);
        }
        if chmod {
            // chmod has no no-follow form: go through an O_PATH fd checked not to be a symlink.
            let fd = openat(
                dir,
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let st = fstat(fd.as_fd())?;
            if FileType::from_mode(st.st_mode) == Some(FileType::Symlink) {
                bail!("the new object was replaced by a symlink while restoring");
            }
            let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
            fchmodat(
                AT_FDCWD,
                proc.as_str(),
                Mode::from_bits_truncate(item.mode),
                FchmodatFlags::FollowSymlink,
            )
            .context("setting the mode")?;
        }
        for (key, e) in xattr::set_at(dir, name, xattrs) {
            self.warn_xattr(item, &key, e);
        }
        let (atime, mtime) = times(item);
        utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .context("setting the times")?;
        Ok(())
    }

    fn warn_owner(&mut self, item: &PlanItem, e: Errno) {
        self.warnings.push(format!(
            "setting the owner of '{}' to {}:{}: {e}",
            item.path.display(),
            item.uid,
            item.gid
        ));
    }

    fn warn_xattr(&mut self, item: &PlanItem, name: &[u8], e: rustix::io::Errno) {
        self.warnings.push(format!(
            "setting the extended attribute '{}' on '{}': {}",
            escape_bytes(name),
            item.path.display(),
            std::io::Error::from(e)
        ));
    }
}

fn times(item: &PlanItem) -> (TimeSpec, TimeSpec) {
    let (a, m) = (item.src.atime, item.src.mtime);
    (TimeSpec::new(a.0, a.1), TimeSpec::new(m.0, m.1))
}

/// Existing destination: refusal without force, or when it is (or holds) a mount point.
fn check_destination(
    parent: BorrowedFd<'_>,
    name: &[u8],
    dest: &Path,
    force: bool,
) -> anyhow::Result<Option<Existing>> {
    let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading '{}'", dest.display())),
    };
    if !force {
        return Err(exists_refusal(dest).into());
    }
    let file_type = FileType::from_mode(st.st_mode)
        .ok_or_else(|| anyhow!("'{}' has an unknown file type", dest.display()))?;
    let parent_mnt = mount_of(parent, b"")?;
    if file_type == FileType::Dir {
        let entries = scan_for_mounts(parent, name, dest, parent_mnt, 0)?;
        Ok(Some(Existing {
            file_type,
            entries: Some(entries),
        }))
    } else {
        if mount_of(parent, name)? != parent_mnt {
            return Err(mount_refusal(dest).into());
        }
        Ok(Some(Existing {
            file_type,
            entries: None,
        }))
    }
}

fn exists_refusal(dest: &Path) -> Refusal {
    Refusal::new(
        "destination-exists",
        format!(
            "'{}' exists; use --force to replace it, or --to to restore elsewhere",
            dest.display()
        ),
    )
}

fn mount_refusal(at: &Path) -> Refusal {
    Refusal::new(
        "destination-is-mount-point",
        format!(
            "'{}' is a mount point (a persisted path?) or a nested subvolume; replacing it would hide \
             or orphan it. Restore into it, or elsewhere with --to",
            at.display()
        ),
    )
}

/// (mount id, dev) of `name` in `dir` (`b""`: `dir` itself), not following symlinks.
fn mount_of(dir: BorrowedFd<'_>, name: &[u8]) -> anyhow::Result<(u64, u64)> {
    use rustix::fs::{AtFlags as RAt, StatxFlags, statx};
    let flags = if name.is_empty() {
        RAt::EMPTY_PATH | RAt::SYMLINK_NOFOLLOW
    } else {
        RAt::SYMLINK_NOFOLLOW
    };
    let sx = statx(
        dir,
        name,
        flags,
        StatxFlags::MNT_ID | StatxFlags::BASIC_STATS,
    )
    .map_err(std::io::Error::from)?;
    let mnt = if sx.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        sx.stx_mnt_id
    } else {
        0
    };
    Ok((
        mnt,
        nix::sys::stat::makedev(u64::from(sx.stx_dev_major), u64::from(sx.stx_dev_minor)),
    ))
}

/// Count the entries beneath an existing directory that `--force` would remove, refusing if it is or
/// holds a mount point (mount id or device differs from its parent's).
fn scan_for_mounts(
    parent: BorrowedFd<'_>,
    name: &[u8],
    path: &Path,
    parent_mnt: (u64, u64),
    depth: usize,
) -> anyhow::Result<u64> {
    if mount_of(parent, name)? != parent_mnt {
        return Err(mount_refusal(path).into());
    }
    if depth >= MAX_DEPTH {
        bail!("the destination is {}", too_deep());
    }
    let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let mut d = open_checked_dir(parent, name, &st)
        .with_context(|| format!("opening '{}'", path.display()))?;
    let names = read_names(&mut d)?;
    let mut count = 0;
    for child in names {
        count += 1;
        let cpath = path.join(OsStr::from_bytes(&child));
        let cst = fstatat(d.as_fd(), child.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if FileType::from_mode(cst.st_mode) == Some(FileType::Dir) {
            count += scan_for_mounts(d.as_fd(), &child, &cpath, parent_mnt, depth + 1)?;
        } else if mount_of(d.as_fd(), &child)? != parent_mnt {
            return Err(mount_refusal(&cpath).into());
        }
    }
    Ok(count)
}

/// Remove `name` in `parent` and everything beneath it, never following symlinks or crossing into
/// another filesystem.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> anyhow::Result<()> {
    remove_tree_at(parent, name, 0)
}

/// Removes everything in the directory `dir` (as [`remove_tree`] does for each entry), keeping `dir`.
pub(crate) fn empty_dir(dir: BorrowedFd<'_>) -> anyhow::Result<()> {
    let st = fstat(dir)?;
    let mut d = open_checked_dir(dir, b".", &st)?;
    for child in read_names(&mut d)? {
        remove_tree_at(d.as_fd(), &child, 1)?;
    }
    Ok(())
}

fn remove_tree_at(parent: BorrowedFd<'_>, name: &[u8], depth: usize) -> anyhow::Result<()> {
    let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if FileType::from_mode(st.st_mode) == Some(FileType::Dir) {
        if depth >= MAX_DEPTH {
            bail!("'{}' is {}", escape_bytes(name), too_deep());
        }
        let pst = fstat(parent)?;
        if st.st_dev != pst.st_dev {
            bail!("'{}' is on another filesystem", escape_bytes(name));
        }
        let mut d = open_checked_dir(parent, name, &st)?;
        for child in read_names(&mut d)? {
            remove_tree_at(d.as_fd(), &child, depth + 1)?;
        }
        unlinkat(parent, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// Copies the bytes of `from` into the new, empty file `to`, keeping holes: only the data ranges
/// `SEEK_DATA`/`SEEK_HOLE` find are written, and the size is set at the end. A 2 GiB sparse VM image
/// takes as little room in the copy as in the source. (Filesystems without hole tracking report the
/// whole file as data: a plain copy.)
fn copy_sparse(from: &OwnedFd, to: &OwnedFd) -> std::io::Result<()> {
    use rustix::fs::{SeekFrom, seek};
    use std::os::unix::fs::FileExt;
    let size = u64::try_from(fstat(from.as_fd())?.st_size).unwrap_or(0);
    let (src, dst) = (File::from(from.try_clone()?), File::from(to.try_clone()?));
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < size {
        let data = match seek(from, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // Only a hole up to the end.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = match seek(from, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(e) => return Err(e.into()),
        };
        let mut at = data;
        while at < end {
            let want = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = src.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break; // Shrunk meanwhile: the source is read-only in practice; copy what is there.
            }
            dst.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        pos = end.max(data + 1);
    }
    dst.set_len(size)
}

/// Best-effort cleanup of a partial copy (the error that caused it is what the user needs).
fn remove_quietly(parent: BorrowedFd<'_>, name: &[u8]) {
    if let Err(e) = remove_tree(parent, name) {
        tracing::warn!("removing the partial copy '{}': {e:#}", escape_bytes(name));
    }
}

fn is_btrfs(fd: BorrowedFd<'_>) -> bool {
    fstatfs(fd).is_ok_and(|s| s.filesystem_type() == BTRFS_SUPER_MAGIC)
}

/// The normal components of an absolute path; `..` and the root itself are usage errors.
fn components(p: &Path, what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    if !p.is_absolute() {
        return Err(
            UsageError(format!("{what} '{}' must be an absolute path", p.display())).into(),
        );
    }
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => out.push(s.as_bytes().to_vec()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(
                    UsageError(format!("{what} '{}' must not contain '..'", p.display())).into(),
                );
            }
        }
    }
    if out.is_empty() {
        return Err(UsageError(format!("{what} cannot be '/' itself")).into());
    }
    Ok(out)
}

/// The source's parent directory, resolved inside the old root as that root would resolve it.
fn open_source_parent(
    root: BorrowedFd<'_>,
    parts: &[Vec<u8>],
    shown: &Path,
) -> anyhow::Result<(OwnedFd, Vec<u8>)> {
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| anyhow!("empty source path"))?;
    let mut rel = OsString::from(".");
    for p in parents {
        rel.push("/");
        rel.push(OsStr::from_bytes(p));
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(root, rel.as_os_str(), how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => bail!(
            "'{}' does not exist in the old root",
            shown.parent().unwrap_or(Path::new("/")).display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("resolving '{}' in the old root", shown.display()));
        }
    };
    Ok((fd, name.clone()))
}

/// The destination's parent, one component at a time without following symlinks.
fn open_dest_parent(
    root: BorrowedFd<'_>,
    parts: &[Vec<u8>],
    dest: &Path,
) -> anyhow::Result<(OwnedFd, Vec<u8>)> {
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| anyhow!("empty destination path"))?;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur =
        openat(root, ".", flags, Mode::empty()).context("opening the destination root")?;
    let mut shown = PathBuf::from("/");
    for p in parents {
        shown.push(OsStr::from_bytes(p));
        let st = match fstatat(cur.as_fd(), p.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => bail!(
                "'{}' does not exist; restore it first (or create it), then '{}'",
                shown.display(),
                dest.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading '{}'", shown.display())),
        };
        match FileType::from_mode(st.st_mode) {
            Some(FileType::Dir) => {}
            Some(FileType::Symlink) => {
                let target = readlinkat(cur.as_fd(), p.as_slice()).unwrap_or_default();
                return Err(Refusal::new(
                    "symlink-in-destination",
                    format!(
                        "'{}' is a symlink (to '{}'); restore never writes through a symlink. \
                         Name the real path instead (--to)",
                        shown.display(),
                        Path::new(&target).display()
                    ),
                )
                .into());
            }
            _ => bail!("'{}' is not a directory", shown.display()),
        }
        let next = openat(cur.as_fd(), p.as_slice(), flags, Mode::empty())
            .with_context(|| format!("opening '{}'", shown.display()))?;
        let nst = fstat(next.as_fd())?;
        if nst.st_ino != st.st_ino || nst.st_dev != st.st_dev {
            bail!("'{}' changed while it was being resolved", shown.display());
        }
        cur = next;
    }
    Ok((cur, name.clone()))
}

fn open_checked_dir(parent: BorrowedFd<'_>, name: &[u8], st: &FileStat) -> anyhow::Result<Dir> {
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let now = fstat(fd.as_fd())?;
    if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
        bail!("'{}' changed while it was being read", escape_bytes(name));
    }
    Ok(Dir::from_fd(fd)?)
}

fn open_checked_dir_src(
    parent: BorrowedFd<'_>,
    name: &[u8],
    src: &SourceStat,
) -> anyhow::Result<Dir> {
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    check_source(&fd, src)?;
    Ok(Dir::from_fd(fd)?)
}

fn check_source_at(dir: BorrowedFd<'_>, name: &[u8], src: &SourceStat) -> anyhow::Result<()> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).context("reading the source")?;
    if st.st_ino != src.ino || st.st_dev != src.dev {
        bail!("the source changed since the plan was made");
    }
    Ok(())
}

fn check_source(fd: &OwnedFd, src: &SourceStat) -> anyhow::Result<()> {
    let st = fstat(fd.as_fd())?;
    if st.st_ino != src.ino || st.st_dev != src.dev {
        bail!("the source changed since the plan was made");
    }
    Ok(())
}

fn read_names(dir: &mut Dir) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(crate::diff::walk::read_names(dir)?)
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

    #[test]
    fn components_reject_relative_parent_and_root() {
        assert_eq!(
            components(Path::new("/a/./b/"), "x").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        for bad in ["a/b", "/a/../b", "/"] {
            let err = components(Path::new(bad), "x").unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{bad}: {err}");
        }
    }
}
