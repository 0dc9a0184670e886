//! Safe, fd-relative btrfs subvolume operations over the raw ioctls in `ioctl`.
//!
//! Every function takes a borrowed directory fd and (where needed) a single name component, checks that
//! the fd really is on btrfs before issuing an ioctl (device drivers reuse btrfs ioctl numbers), and keeps
//! the errno in its [`Error`] so callers can branch on `EROFS`, `ENOTEMPTY`, `EPERM`…
//! Nothing here follows a symlink: directories are opened with `O_NOFOLLOW`.

mod ioctl;

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
// The ioctls (module `ioctl`) are nix's macros and answer with nix's errno; this module's [`Error`]
// keeps that errno. The plain file syscalls here are rustix's (through `fsx`), converted at the boundary.
use nix::errno::Errno;
use serde::Serialize;

use crate::fsx;

/// Inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOL_ROOT_INO: u64 = 256;
/// The top-level subvolume's id (`BTRFS_FS_TREE_OBJECTID`).
pub const TOP_LEVEL_ID: u64 = 5;

/// A failed btrfs operation, with the errno the kernel gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What was attempted ("creating subvolume", "deleting subvolume"…).
    pub op: &'static str,
    /// The subvolume or path it was attempted on.
    pub target: String,
    /// The kernel's answer.
    pub errno: Errno,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}': {}", self.op, self.target, self.errno.desc())?;
        match self.errno {
            Errno::ENOTTY => write!(
                f,
                " (not a btrfs subvolume, or the kernel lacks this ioctl)"
            ),
            Errno::EPERM | Errno::EACCES => write!(f, " (tabula needs root / CAP_SYS_ADMIN)"),
            Errno::EXDEV => write!(
                f,
                " (something is mounted there: tabula never descends into it)"
            ),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

/// Result of a btrfs operation.
pub type Result<T> = std::result::Result<T, Error>;

fn err(op: &'static str, target: impl fmt::Display) -> impl FnOnce(Errno) -> Error {
    let target = target.to_string();
    move |errno| Error { op, target, errno }
}

/// A subvolume's identity and history, from `BTRFS_IOC_GET_SUBVOL_INFO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubvolumeInfo {
    /// Subvolume (tree) id.
    pub id: u64,
    /// Id of the subvolume that contains it (0 for the top level).
    pub parent_id: u64,
    /// Inode of the directory in the parent that holds it.
    pub dir_id: u64,
    /// Its name in that directory.
    pub name: String,
    /// Last transaction that changed it.
    pub generation: u64,
    /// Transaction that created it.
    pub otransid: u64,
    /// Its own UUID.
    pub uuid: String,
    /// UUID of the subvolume it was snapshotted from, if any.
    pub parent_uuid: Option<String>,
    /// UUID it was received as (send/receive), if any.
    pub received_uuid: Option<String>,
    /// Creation time (a snapshot's own creation, not its source's).
    pub otime: Option<DateTime<Utc>>,
    /// Whether it is read-only.
    pub read_only: bool,
}

/// Formats a 16-byte UUID, `None` when all zero.
pub fn format_uuid(b: &[u8; 16]) -> Option<String> {
    if b.iter().all(|x| *x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn name_bytes<'a>(name: &'a str, op: &'static str) -> Result<&'a [u8]> {
    let b = name.as_bytes();
    if b.is_empty()
        || b.len() > ioctl::VOL_NAME_MAX
        || b.contains(&b'/')
        || name == "."
        || name == ".."
    {
        return Err(Error {
            op,
            target: name.to_string(),
            errno: Errno::EINVAL,
        });
    }
    Ok(b)
}

/// nix's errno for rustix's, for this module's [`Error`] (whose errno is the ioctls').
fn nix_errno(e: fsx::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// `BTRFS_SUPER_MAGIC` (`f_type` of a btrfs filesystem).
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;

/// Fails with `ENOTTY` unless `fd` is on a btrfs filesystem.
pub fn require_btrfs(fd: BorrowedFd<'_>) -> std::result::Result<(), fsx::Errno> {
    // `f_type`'s integer type differs between architectures; the magic fits every one of them.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let f_type = rustix::fs::fstatfs(fd)?.f_type as u64;
    if f_type == BTRFS_SUPER_MAGIC {
        Ok(())
    } else {
        Err(fsx::Errno::NOTTY)
    }
}

/// [`require_btrfs`] for this module's ioctls, with nix's errno.
fn on_btrfs(fd: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    require_btrfs(fd).map_err(nix_errno)
}

/// Whether `fd` is the root directory of a btrfs subvolume.
pub fn is_subvolume(fd: BorrowedFd<'_>) -> std::result::Result<bool, fsx::Errno> {
    if require_btrfs(fd).is_err() {
        return Ok(false);
    }
    let st = rustix::fs::fstat(fd)?;
    Ok(st.st_ino == SUBVOL_ROOT_INO
        && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
}

/// Whether `dir/name` exists and is a subvolume (a symlink there is not).
pub fn is_subvolume_at(dir: BorrowedFd<'_>, name: &str) -> std::result::Result<bool, fsx::Errno> {
    match fsx::open_dir_beneath(dir, Path::new(name)).map_err(|e| e.errno()) {
        Ok(fd) => is_subvolume(fd.as_fd()),
        Err(fsx::Errno::NOENT) | Err(fsx::Errno::NOTDIR) | Err(fsx::Errno::LOOP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates an empty subvolume `dir/name`.
pub fn create_subvolume(dir: BorrowedFd<'_>, name: &str) -> Result<()> {
    let op = "creating subvolume";
    on_btrfs(dir).map_err(err(op, name))?;
    ioctl::subvol_create(dir, name_bytes(name, op)?).map_err(err(op, name))
}

/// Snapshots the subvolume open as `source` to `dir/name`, read-only or writable.
pub fn snapshot(
    source: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    read_only: bool,
) -> Result<()> {
    let op = if read_only {
        "creating read-only snapshot"
    } else {
        "creating snapshot"
    };
    on_btrfs(dir).map_err(err(op, name))?;
    on_btrfs(source).map_err(err(op, name))?;
    ioctl::snap_create(source, dir, name_bytes(name, op)?, read_only).map_err(err(op, name))
}

/// Deletes the (childless) subvolume `dir/name`; `ENOTEMPTY` when it still holds subvolumes.
pub fn delete_subvolume(dir: BorrowedFd<'_>, name: &str) -> Result<()> {
    let op = "deleting subvolume";
    on_btrfs(dir).map_err(err(op, name))?;
    let bytes = name_bytes(name, op)?;
    match ioctl::snap_destroy_v2(dir, bytes) {
        // COMPAT(kernel < 5.7): SNAP_DESTROY_V2 is unknown there.
        Err(Errno::ENOTTY) | Err(Errno::EOPNOTSUPP) => ioctl::snap_destroy_v1(dir, bytes),
        other => other,
    }
    .map_err(err(op, name))
}

/// Information about the subvolume containing `fd`.
pub fn subvolume_info(fd: BorrowedFd<'_>) -> Result<SubvolumeInfo> {
    let op = "reading subvolume info of";
    on_btrfs(fd).map_err(err(op, "fd"))?;
    let a = ioctl::get_subvol_info(fd).map_err(err(op, "fd"))?;
    let name_end = a.name.iter().position(|b| *b == 0).unwrap_or(a.name.len());
    let otime = (a.otime.sec != 0)
        .then(|| {
            i64::try_from(a.otime.sec)
                .ok()
                .and_then(|s| DateTime::from_timestamp(s, a.otime.nsec))
        })
        .flatten();
    Ok(SubvolumeInfo {
        id: a.treeid,
        parent_id: a.parent_id,
        dir_id: a.dirid,
        name: String::from_utf8_lossy(&a.name[..name_end]).into_owned(),
        generation: a.generation,
        otransid: a.otransid,
        uuid: format_uuid(&a.uuid).unwrap_or_default(),
        parent_uuid: format_uuid(&a.parent_uuid),
        received_uuid: format_uuid(&a.received_uuid),
        otime,
        // Root-item flags: read-only is bit 0 here (BTRFS_ROOT_SUBVOL_RDONLY), unlike GETFLAGS.
        read_only: a.flags & 1 != 0,
    })
}

/// `BTRFS_IOC_SEND` of the read-only subvolume `subvol` against the read-only subvolume `parent_id` of
/// the same filesystem, without file data, written to `out` (a pipe someone reads: this blocks until
/// the whole stream is written).
pub fn send_no_data(subvol: BorrowedFd<'_>, out: BorrowedFd<'_>, parent_id: u64) -> Result<()> {
    ioctl::send(subvol, out, parent_id, ioctl::SEND_FLAG_NO_FILE_DATA).map_err(err(
        "sending the changes of",
        format!("subvolume against {parent_id}"),
    ))
}

/// Whether the subvolume open as `fd` is read-only.
pub fn is_read_only(fd: BorrowedFd<'_>) -> Result<bool> {
    let op = "reading flags of subvolume";
    on_btrfs(fd).map_err(err(op, "fd"))?;
    Ok(ioctl::subvol_getflags(fd).map_err(err(op, "fd"))? & ioctl::SUBVOL_RDONLY != 0)
}

/// Makes the subvolume open as `fd` read-only or writable; does nothing when it already is.
pub fn set_read_only(fd: BorrowedFd<'_>, read_only: bool) -> Result<()> {
    let op = if read_only {
        "making subvolume read-only"
    } else {
        "making subvolume writable"
    };
    on_btrfs(fd).map_err(err(op, "fd"))?;
    let flags = ioctl::subvol_getflags(fd).map_err(err(op, "fd"))?;
    let want = if read_only {
        flags | ioctl::SUBVOL_RDONLY
    } else {
        flags & !ioctl::SUBVOL_RDONLY
    };
    if want == flags {
        return Ok(());
    }
    ioctl::subvol_setflags(fd, want).map_err(err(op, "fd"))
}

/// A subvolume directly inside another one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Child {
    /// The child's subvolume id.
    pub id: u64,
    /// Its path relative to the parent subvolume's root directory.
    pub path: PathBuf,
}

/// The subvolumes directly inside the subvolume open as `fd` (which must be its root directory), by id
/// (`GET_SUBVOL_ROOTREF`, paginated past the kernel's 255-item buffer), never by path.
pub fn child_subvolumes(fd: BorrowedFd<'_>) -> Result<Vec<Child>> {
    let op = "listing subvolumes inside";
    on_btrfs(fd).map_err(err(op, "fd"))?;
    let mut out = Vec::new();
    let mut min = 0u64;
    loop {
        let (items, more) = ioctl::get_subvol_rootref(fd, min).map_err(err(op, "fd"))?;
        for r in &items {
            let (name, dir) =
                ioctl::ino_lookup_user(fd, r.dirid, r.treeid).map_err(err(op, "fd"))?;
            let mut path = PathBuf::from(OsStr::from_bytes(&dir));
            path.push(OsStr::from_bytes(&name));
            out.push(Child { id: r.treeid, path });
        }
        match (more, items.last()) {
            (true, Some(last)) => min = last.treeid + 1,
            _ => break,
        }
    }
    Ok(out)
}

/// Deletes subvolume `dir/name` and every subvolume nested in it, children first (post-order); returns
/// the ids of the subvolumes deleted.
///
/// Children are found by id ([`child_subvolumes`]) and opened with `O_NOFOLLOW` walks, never listed by path.
/// Every directory opened is checked to be on the same mount as `dir` ([`fsx::mount_id`]): a walk never
/// descends into something mounted inside the tree after it was inspected (`EXDEV`). A read-only
/// subvolume that still holds children is made writable first, but only when `may_thaw` allows it (the
/// caller decides what it owns). A child that cannot be deleted does not stop its siblings; the first
/// error is returned, and the parents of what failed stay. Safe to call again after a crash half-way:
/// whatever is already gone stays gone. `on_delete` is told each subvolume just before it goes.
pub fn delete_subvolume_recursive(
    dir: BorrowedFd<'_>,
    name: &str,
    may_thaw: &dyn Fn(&SubvolumeInfo) -> bool,
    on_delete: &mut dyn FnMut(&Path),
) -> Result<Vec<u64>> {
    let mnt = mount_id(dir).map_err(err("deleting subvolume", name))?;
    let mut deleted = Vec::new();
    let mut deletion = TreeDeletion {
        may_thaw,
        on_delete,
        mnt,
        deleted: &mut deleted,
    };
    deletion.delete_tree(dir, Path::new(name), name, 0)?;
    Ok(deleted)
}

/// One recursive deletion under way: what it may thaw, whom it tells, the mount it stays on.
struct TreeDeletion<'a> {
    may_thaw: &'a dyn Fn(&SubvolumeInfo) -> bool,
    on_delete: &'a mut dyn FnMut(&Path),
    mnt: u64,
    deleted: &'a mut Vec<u64>,
}

impl TreeDeletion<'_> {
    /// Fails with `EXDEV` unless `fd` is on the mount the walk started on.
    fn same_mount(&self, fd: BorrowedFd<'_>, display: &Path) -> Result<()> {
        let op = "deleting subvolume";
        match mount_id(fd).map_err(err(op, display.display()))? {
            id if id == self.mnt => Ok(()),
            _ => Err(Error {
                op,
                target: display.display().to_string(),
                errno: Errno::EXDEV,
            }),
        }
    }

    fn delete_tree(
        &mut self,
        dir: BorrowedFd<'_>,
        display: &Path,
        name: &str,
        depth: usize,
    ) -> Result<()> {
        let op = "deleting subvolume";
        // Bounded: btrfs itself limits nesting far below this; a loop here would mean a corrupted view.
        if depth > 4096 {
            return Err(Error {
                op,
                target: display.display().to_string(),
                errno: Errno::ELOOP,
            });
        }
        let sub = fsx::open_dir_beneath(dir, Path::new(name))
            .map_err(|e| err(op, display.display())(nix_errno(e.errno())))?;
        self.same_mount(sub.as_fd(), display)?;
        if !is_subvolume(sub.as_fd()).map_err(|e| err(op, display.display())(nix_errno(e)))? {
            return Err(Error {
                op,
                target: display.display().to_string(),
                errno: Errno::ENOTTY,
            });
        }
        let info = subvolume_info(sub.as_fd())?;
        let children = child_subvolumes(sub.as_fd())?;
        if !children.is_empty() && info.read_only {
            if !(self.may_thaw)(&info) {
                return Err(Error {
                    op,
                    target: display.display().to_string(),
                    errno: Errno::EROFS,
                });
            }
            set_read_only(sub.as_fd(), false)?;
        }
        let mut first: Option<Error> = None;
        for child in children {
            let shown = display.join(&child.path);
            let result = (|| {
                let parent = child.path.parent().unwrap_or(Path::new(""));
                let Some(child_name) = child.path.file_name().and_then(|n| n.to_str()) else {
                    return Err(Error {
                        op,
                        target: shown.display().to_string(),
                        errno: Errno::EINVAL,
                    });
                };
                // `..` in a path the kernel gave is refused (EINVAL), never resolved.
                let child_dir = fsx::open_dir_beneath(sub.as_fd(), parent).map_err(|e| {
                    let errno = match e {
                        fsx::Error::Escapes { .. } => Errno::EINVAL,
                        e => nix_errno(e.errno()),
                    };
                    err(op, shown.display())(errno)
                })?;
                self.same_mount(child_dir.as_fd(), &shown)?;
                self.delete_tree(child_dir.as_fd(), &shown, child_name, depth + 1)
            })();
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        drop(sub);
        (self.on_delete)(display);
        delete_subvolume(dir, name).map_err(|e| Error {
            target: display.display().to_string(),
            ..e
        })?;
        self.deleted.push(info.id);
        Ok(())
    }
}

/// Whether subvolume `id` still has its root item. A deleted subvolume keeps it until the cleaner thread
/// has dropped its tree, and only then is its space free (`BTRFS_IOC_TREE_SEARCH`, CAP_SYS_ADMIN).
pub fn subvolume_exists(fd: BorrowedFd<'_>, id: u64) -> Result<bool> {
    const ROOT_TREE: u64 = 1;
    const ROOT_ITEM: u32 = 132;
    let op = "looking up subvolume";
    on_btrfs(fd).map_err(err(op, id))?;
    let key = ioctl::SearchKey {
        tree_id: ROOT_TREE,
        min_objectid: id,
        max_objectid: id,
        min_offset: 0,
        max_offset: u64::MAX,
        min_transid: 0,
        max_transid: u64::MAX,
        min_type: ROOT_ITEM,
        max_type: ROOT_ITEM,
        nr_items: 1,
        unused: 0,
        unused1: 0,
        unused2: 0,
        unused3: 0,
        unused4: 0,
    };
    let (_, n) = ioctl::tree_search(fd, key).map_err(err(op, id))?;
    Ok(n > 0)
}

/// Waits until the deleted subvolumes `ids` are dropped by the cleaner (committing so it starts), at
/// most `timeout`; returns whether they all were.
pub fn wait_cleaned(fd: BorrowedFd<'_>, ids: &[u64], timeout: std::time::Duration) -> Result<bool> {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let mut last_sync: Option<Instant> = None;
    loop {
        // A commit hands deleted subvolumes to the cleaner; one a second keeps it going.
        if last_sync.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            sync(fd)?;
            last_sync = Some(Instant::now());
        }
        let mut pending = false;
        for id in ids {
            if subvolume_exists(fd, *id)? {
                pending = true;
                break;
            }
        }
        if !pending {
            // The freed extents are pinned until the next commit.
            sync(fd)?;
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the qgroups `0/<id>` of the deleted subvolumes `ids` when quotas are enabled (older kernels
/// otherwise keep a stale qgroup per deleted subvolume). The kernel refuses (`EBUSY`) while a subvolume
/// is not dropped yet, so this waits for the cleaner, at most `timeout`. Quotas off, or a qgroup already
/// gone (newer kernels remove it once the subvolume is dropped): nothing to do.
pub fn remove_qgroups(fd: BorrowedFd<'_>, ids: &[u64], timeout: std::time::Duration) -> Result<()> {
    let op = "removing the qgroup of subvolume";
    on_btrfs(fd).map_err(err(op, "fd"))?;
    let mut waited = false;
    for id in ids {
        loop {
            match ioctl::qgroup_destroy(fd, *id) {
                Ok(()) | Err(Errno::ENOENT) => break,
                Err(Errno::ENOTCONN) => return Ok(()),
                Err(Errno::EBUSY) if !waited => {
                    waited = true;
                    wait_cleaned(fd, ids, timeout)?;
                }
                Err(e) => return Err(err(op, id)(e)),
            }
        }
    }
    Ok(())
}

/// The id of the mount `fd` is on ([`fsx::mount_id`]), with nix's errno for this module's [`Error`].
///
/// Two directories on the same filesystem can be on different mounts (a bind mount over a directory):
/// the mount id, not the device, tells whether a walk crossed into something mounted.
fn mount_id(fd: BorrowedFd<'_>) -> std::result::Result<u64, Errno> {
    fsx::mount_id(fd).map_err(|e| nix_errno(e.errno()))
}

/// Commits the current transaction of the filesystem `fd` is on.
pub fn sync(fd: BorrowedFd<'_>) -> Result<()> {
    ioctl::sync(fd).map_err(err("committing the filesystem of", "fd"))
}

/// Writes the file `fd`'s data back (`sync_file_range`, no commit) and says whether it is now all one
/// inline extent in the filesystem tree: then the next transaction commit records the bytes along with
/// the name, and no fsync is needed (a small file on btrfs with the default `max_inline`).
pub fn write_back_inline(fd: BorrowedFd<'_>) -> Result<bool> {
    ioctl::write_back(fd).map_err(err("writing back", "fd"))?;
    data_is_inline(fd)
}

/// Whether all of the file `fd`'s data is one inline extent, already in the filesystem tree (not waiting
/// for writeback): then the next transaction commit records its bytes along with its name (`FS_IOC_FIEMAP`).
pub fn data_is_inline(fd: BorrowedFd<'_>) -> Result<bool> {
    let flags = ioctl::fiemap_flags(fd).map_err(err("mapping the extents of", "fd"))?;
    let pending = ioctl::FIEMAP_EXTENT_DELALLOC | ioctl::FIEMAP_EXTENT_UNKNOWN;
    Ok(
        matches!(flags.as_slice(), [f] if f & ioctl::FIEMAP_EXTENT_DATA_INLINE != 0
        && f & ioctl::FIEMAP_EXTENT_LAST != 0
        && f & pending == 0),
    )
}

/// Reflink-copies all of `src` into `dst` (`FICLONE`); `EXDEV`/`EOPNOTSUPP`/`EINVAL` mean "copy instead".
pub fn clone_file(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    ioctl::clone_file(dst, src)
}

/// Makes subvolume `id` the filesystem's default subvolume (`BTRFS_IOC_DEFAULT_SUBVOL`; durable at the
/// next commit).
pub fn set_default_subvolume(fd: BorrowedFd<'_>, id: u64) -> Result<()> {
    let op = "setting the default subvolume to";
    on_btrfs(fd).map_err(err(op, id))?;
    ioctl::default_subvol(fd, id).map_err(err(op, id))
}

/// Registers the block device `path` with the kernel as a member of its btrfs filesystem
/// (`BTRFS_IOC_SCAN_DEV` on `/dev/btrfs-control`), as `btrfs device scan` does. Needed before mounting
/// a multi-device filesystem where no udev did it (a busybox initrd).
pub fn register_device(path: &Path) -> std::result::Result<(), Errno> {
    let control = rustix::fs::open(
        "/dev/btrfs-control",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(nix_errno)?;
    ioctl::scan_dev(control.as_fd(), path.as_os_str().as_bytes())
}

/// The id of the filesystem's default subvolume (what a mount without `subvol=` shows).
///
/// Read from the `default` dir item of the root tree (`BTRFS_IOC_TREE_SEARCH`, needs CAP_SYS_ADMIN).
pub fn default_subvolume_id(fd: BorrowedFd<'_>) -> Result<u64> {
    const ROOT_TREE: u64 = 1;
    const ROOT_TREE_DIR: u64 = 6;
    const DIR_ITEM: u32 = 84;
    let op = "reading the default subvolume of";
    on_btrfs(fd).map_err(err(op, "fd"))?;
    let key = ioctl::SearchKey {
        tree_id: ROOT_TREE,
        min_objectid: ROOT_TREE_DIR,
        max_objectid: ROOT_TREE_DIR,
        min_offset: 0,
        max_offset: u64::MAX,
        min_transid: 0,
        max_transid: u64::MAX,
        min_type: DIR_ITEM,
        max_type: DIR_ITEM,
        nr_items: 16,
        unused: 0,
        unused1: 0,
        unused2: 0,
        unused3: 0,
        unused4: 0,
    };
    let (buf, n) = ioctl::tree_search(fd, key).map_err(err(op, "fd"))?;
    parse_default_dir_item(&buf, n).ok_or(Error {
        op,
        target: "fd".into(),
        errno: Errno::ENOENT,
    })
}

/// Finds the `default` entry among `n` search results (header: transid, objectid, offset u64; type, len
/// u32; then a packed `btrfs_dir_item`: location key 17 bytes, transid 8, data_len 2, name_len 2, type 1).
fn parse_default_dir_item(buf: &[u8], n: u32) -> Option<u64> {
    let u64_at = |o: usize| {
        buf.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u16_at = |o: usize| {
        buf.get(o..o + 2)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let mut off = 0usize;
    for _ in 0..n {
        let len = usize::try_from(u32_at(off + 28)?).ok()?;
        let item = off + 32;
        let location = u64_at(item)?;
        let name_len = usize::from(u16_at(item + 27)?);
        let name = buf.get(item + 30..item + 30 + name_len)?;
        if name == b"default" {
            return Some(location);
        }
        off = item + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_formatting() {
        assert_eq!(format_uuid(&[0; 16]), None);
        let mut b = [0u8; 16];
        b[0] = 0xab;
        b[15] = 0x01;
        assert_eq!(
            format_uuid(&b).as_deref(),
            Some("ab000000-0000-0000-0000-000000000001")
        );
    }

    #[test]
    fn default_dir_item_parsing() {
        // One search result: 32-byte header, then a dir item naming "default" -> subvolume 257.
        let mut buf = vec![0u8; 32];
        let mut item = Vec::new();
        item.extend_from_slice(&257u64.to_le_bytes()); // location.objectid
        item.push(132); // location.type (ROOT_ITEM)
        item.extend_from_slice(&u64::MAX.to_le_bytes()); // location.offset
        item.extend_from_slice(&7u64.to_le_bytes()); // transid
        item.extend_from_slice(&0u16.to_le_bytes()); // data_len
        item.extend_from_slice(&7u16.to_le_bytes()); // name_len
        item.push(2); // type
        item.extend_from_slice(b"default");
        buf[28..32].copy_from_slice(&u32::try_from(item.len()).unwrap().to_le_bytes());
        buf.extend_from_slice(&item);
        assert_eq!(parse_default_dir_item(&buf, 1), Some(257));
        assert_eq!(parse_default_dir_item(&buf, 0), None);
        assert_eq!(
            parse_default_dir_item(&buf[..40], 1),
            None,
            "truncated input is not trusted"
        );
    }

    #[test]
    fn bad_names_never_reach_the_kernel() {
        for bad in ["", ".", "..", "a/b"] {
            assert_eq!(
                name_bytes(bad, "x").unwrap_err().errno,
                Errno::EINVAL,
                "{bad:?}"
            );
        }
        assert!(name_bytes(&"x".repeat(256), "x").is_err());
    }
}
