//! The one fd-relative filesystem layer: resolve beneath a directory without following symlinks, stat with
//! the mount id, tell mount points apart by mount id, rename without replacing, and remove a tree
//! iteratively without following symlinks or entering mounts.
//!
//! Everything takes a directory fd plus a path relative to it (`foo_at(dir, name)`), or an fd
//! (`foo_fd(fd)`). Persistent storage and a running root hold user-writable trees: no function here ever
//! follows a symlink, and every fd is opened `O_CLOEXEC`. Errors are [`Error`]s that carry the path (as
//! given, relative to the directory fd) and the errno, so callers can branch on `ENOENT` or a symlink.
//!
//! Built on rustix only (no libc, no nix) and without `unsafe`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, StatxFlags};
pub use rustix::fs::{FileType, OFlags as Flags};
pub use rustix::io::Errno;

/// A failed filesystem operation, with the path it was attempted on (relative to the directory fd the
/// caller gave, as the caller spelled it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `path` is a symlink, where tabula only goes through real directories and files.
    Symlink {
        /// The path up to and including the symlink.
        path: PathBuf,
    },
    /// `path` is absolute or has a `..` component: it could leave the directory it is resolved beneath.
    Escapes {
        /// The path as given.
        path: PathBuf,
    },
    /// `path` is a mount point (its mount id differs from its parent's): tabula never enters or removes it.
    MountPoint {
        /// The mount point.
        path: PathBuf,
    },
    /// `path` is on another filesystem than its parent (a nested btrfs subvolume): not entered.
    OtherFilesystem {
        /// The directory.
        path: PathBuf,
    },
    /// `path` was replaced by another object while it was being worked on.
    Changed {
        /// The object that changed.
        path: PathBuf,
    },
    /// A system call failed.
    Io {
        /// What was attempted ("opening", "removing"…).
        op: &'static str,
        /// Where it failed (for a path resolution: the part resolved so far).
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },
}

impl Error {
    /// The errno closest to this error (`ELOOP` for a symlink, `EXDEV` for an escape or another
    /// filesystem, `EBUSY` for a mount point, `ESTALE` for a change during the operation).
    pub fn errno(&self) -> Errno {
        match self {
            Error::Symlink { .. } => Errno::LOOP,
            Error::Escapes { .. } | Error::OtherFilesystem { .. } => Errno::XDEV,
            Error::MountPoint { .. } => Errno::BUSY,
            Error::Changed { .. } => Errno::STALE,
            Error::Io { errno, .. } => *errno,
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Symlink { path }
            | Error::Escapes { path }
            | Error::MountPoint { path }
            | Error::OtherFilesystem { path }
            | Error::Changed { path }
            | Error::Io { path, .. } => path,
        }
    }

    /// Whether something on the way does not exist (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { errno, .. } if *errno == Errno::NOENT)
    }

    /// Whether the destination of a no-replace rename exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Io { errno, .. } if *errno == Errno::EXIST)
    }

    fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(Errno) -> Error {
        let path = path.into();
        move |errno| Error::Io { op, path, errno }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Symlink { path } => write!(
                f,
                "'{}' is a symlink: tabula never follows symlinks here",
                path.display()
            ),
            Error::Escapes { path } => write!(
                f,
                "'{}' is absolute or has a '..' component: it could leave the directory it is meant to be in",
                path.display()
            ),
            Error::MountPoint { path } => write!(
                f,
                "'{}' is a mount point: tabula never enters or removes what is mounted",
                path.display()
            ),
            Error::OtherFilesystem { path } => write!(
                f,
                "'{}' is on another filesystem (a nested subvolume?): not entered",
                path.display()
            ),
            Error::Changed { path } => {
                write!(f, "'{}' changed while tabula worked on it", path.display())
            }
            Error::Io { op, path, errno } => write!(f, "{op} '{}': {errno}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::new(std::io::Error::from(e.errno()).kind(), e)
    }
}

/// Result of an fsx operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Flags to open a directory for reading its entries.
pub const DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY);
/// Flags for an `O_PATH` handle (a position in the tree, no I/O; a final symlink is returned itself).
pub const PATH: OFlags = OFlags::PATH;

/// What `statx` says about one object, with the mount it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Inode number.
    pub ino: u64,
    /// Device of the filesystem (for btrfs, one anonymous device per subvolume).
    pub dev: u64,
    /// Device a block or character device node stands for.
    pub rdev: u64,
    /// Hard links.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// The id of the mount the object is on (`STATX_MNT_ID`). Nested btrfs subvolumes share their
    /// parent's mount id though their `dev` differs; a bind mount has its own id on the same `dev`.
    pub mnt_id: u64,
    /// Access time (seconds, nanoseconds): a copy carries it over.
    pub atime: (i64, u32),
}

impl Stat {
    /// The object's type.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }

    /// Whether it is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    /// Whether it is the same object as `other` (inode and device).
    pub fn same_object(&self, other: &Stat) -> bool {
        (self.ino, self.dev) == (other.ino, other.dev)
    }
}

/// Set when `openat2` is known to be missing (`ENOSYS`), so the walk is used straight away.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// The normal components of `rel`; an absolute path or `..` is refused. An empty path (or `.`) has none
/// and means the directory itself.
fn components(rel: &Path) -> Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(Error::Escapes {
                path: rel.to_path_buf(),
            }),
        })
        .collect()
}

/// Opens `rel` beneath `dir` without following any symlink, on any component (the last one included:
/// with [`PATH`] a final symlink is opened itself, otherwise it is an [`Error::Symlink`]). `rel` must be
/// relative and without `..`; empty or `.` opens `dir` itself again. `flags` are open flags for the
/// last component (`O_CLOEXEC|O_NOFOLLOW` are always added); this never creates anything.
///
/// Uses `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`; where that is missing or
/// filtered (`ENOSYS`, or `EPERM` from a seccomp filter) and whenever it fails (to name the component
/// at fault), it walks one component at a time with `O_PATH|O_DIRECTORY|O_NOFOLLOW`. Both give the
/// same answers.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
    let parts = components(rel)?;
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // COMPAT(kernel < 5.6): no openat2; the walk below does the same, one syscall per component.
        match open_beneath_openat2(dir, &parts, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // Any failure: the walk finds which component is at fault (and retries a spurious EAGAIN).
            Err(_) => {}
        }
    }
    open_beneath_walk(dir, &parts, flags)
}

/// Opens directory `rel` beneath `dir` for reading, without following any symlink ([`open_beneath`]).
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd> {
    open_beneath(dir, rel, DIR)
}

/// The joined relative path for `openat2` (`.` for none).
fn joined(parts: &[&OsStr]) -> PathBuf {
    if parts.is_empty() {
        PathBuf::from(".")
    } else {
        parts.iter().collect()
    }
}

fn open_beneath_openat2(
    dir: BorrowedFd<'_>,
    parts: &[&OsStr],
    flags: OFlags,
) -> std::result::Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        dir,
        joined(parts).as_path(),
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// The fallback of [`open_beneath`]: one `openat` per component, refusing symlinks.
fn open_beneath_walk(dir: BorrowedFd<'_>, parts: &[&OsStr], flags: OFlags) -> Result<OwnedFd> {
    let Some((last, parents)) = parts.split_last() else {
        return rustix::fs::openat(dir, ".", flags, Mode::empty())
            .map_err(Error::io("opening", "."));
    };
    let mut cur: Option<OwnedFd> = None;
    let mut walked = PathBuf::new();
    for name in parents {
        walked.push(name);
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        let step = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(at, *name, step, Mode::empty()) {
            Ok(fd) => cur = Some(fd),
            Err(e) => return Err(diagnose(at, name, walked, e)),
        }
    }
    walked.push(last);
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    rustix::fs::openat(at, *last, flags, Mode::empty()).map_err(|e| diagnose(at, last, walked, e))
}

/// Turns a failed open of `name` in `at` into an error: a symlink there (`ELOOP`, or `ENOTDIR` with
/// `O_DIRECTORY`) is an [`Error::Symlink`].
fn diagnose(at: BorrowedFd<'_>, name: &OsStr, walked: PathBuf, errno: Errno) -> Error {
    if matches!(errno, Errno::LOOP | Errno::NOTDIR)
        && rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    {
        return Error::Symlink { path: walked };
    }
    Error::Io {
        op: "opening",
        path: walked,
        errno,
    }
}

/// Like [`open_beneath`], but `Ok(None)` when something on the way does not exist.
pub fn open_beneath_optional(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
) -> Result<Option<OwnedFd>> {
    match open_beneath(dir, rel, flags) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn stat_of(sx: &rustix::fs::Statx) -> Stat {
    Stat {
        mode: u32::from(sx.stx_mode),
        uid: sx.stx_uid,
        gid: sx.stx_gid,
        ino: sx.stx_ino,
        dev: rustix::fs::makedev(sx.stx_dev_major, sx.stx_dev_minor),
        rdev: rustix::fs::makedev(sx.stx_rdev_major, sx.stx_rdev_minor),
        nlink: u64::from(sx.stx_nlink),
        size: sx.stx_size,
        mtime: (sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec),
        mnt_id: sx.stx_mnt_id,
        atime: (sx.stx_atime.tv_sec, sx.stx_atime.tv_nsec),
    }
}

fn statx_raw(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: AtFlags,
) -> std::result::Result<rustix::fs::Statx, Errno> {
    rustix::fs::statx(
        dir,
        name,
        flags | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )
}

/// The mount id from `/proc/self/fdinfo` (there since Linux 3.15).
fn mount_id_from_fdinfo(fd: BorrowedFd<'_>) -> std::result::Result<u64, Errno> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(|e| e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error))?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(Errno::NOSYS)
}

/// `lstat` of `name` in `dir` (one component or a path; never follows a symlink, not even the last
/// component), with its mount id. `name` empty: `dir` itself. Parents in a multi-component `name` are
/// resolved as [`open_beneath`] does.
pub fn stat_at(dir: BorrowedFd<'_>, name: impl AsRef<Path>) -> Result<Stat> {
    let rel = name.as_ref();
    let parts = components(rel)?;
    let Some((last, parents)) = parts.split_last() else {
        return stat_fd(dir);
    };
    let parent;
    let at = if parents.is_empty() {
        dir
    } else {
        parent = open_beneath(dir, &joined(parents), PATH | OFlags::DIRECTORY)?;
        parent.as_fd()
    };
    let sx = statx_raw(at, last, AtFlags::empty()).map_err(Error::io("inspecting", rel))?;
    let mut st = stat_of(&sx);
    if sx.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        // COMPAT(kernel < 5.8): no STATX_MNT_ID; ask fdinfo about an O_PATH fd on the object.
        let fd = rustix::fs::openat(
            at,
            *last,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(Error::io("opening", rel))?;
        st.mnt_id = mount_id_from_fdinfo(fd.as_fd()).map_err(Error::io("inspecting", rel))?;
    }
    Ok(st)
}

/// Like [`stat_at`], but `Ok(None)` when it does not exist.
pub fn stat_at_optional(dir: BorrowedFd<'_>, name: impl AsRef<Path>) -> Result<Option<Stat>> {
    match stat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `fstat` of an open fd (an `O_PATH` one too), with its mount id.
pub fn stat_fd(fd: BorrowedFd<'_>) -> Result<Stat> {
    let sx =
        statx_raw(fd, OsStr::new(""), AtFlags::EMPTY_PATH).map_err(Error::io("inspecting", "."))?;
    let mut st = stat_of(&sx);
    if sx.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        // COMPAT(kernel < 5.8): no STATX_MNT_ID.
        st.mnt_id = mount_id_from_fdinfo(fd).map_err(Error::io("inspecting", "."))?;
    }
    Ok(st)
}

/// The id of the mount `fd` is on.
pub fn mount_id(fd: BorrowedFd<'_>) -> Result<u64> {
    Ok(stat_fd(fd)?.mnt_id)
}

/// Whether `name` in `dir` (a single component) is a mount point: its mount id differs from `dir`'s.
///
/// By mount id, not by device: a nested btrfs subvolume has its own `st_dev` but is no mount point (it
/// goes wherever its parent subvolume goes), and a bind mount of a directory of the same filesystem has
/// the same `st_dev` but is one. `name` is not followed if it is a symlink (a symlink is no mount point).
pub fn is_mount_point_at(dir: BorrowedFd<'_>, name: impl AsRef<Path>) -> Result<bool> {
    let name = name.as_ref();
    if name.components().count() != 1 || components(name).is_err() {
        return Err(Error::Escapes {
            path: name.to_path_buf(),
        });
    }
    Ok(stat_at(dir, name)?.mnt_id != stat_fd(dir)?.mnt_id)
}

/// Renames `from` in `from_dir` to `to` in `to_dir` (single components), failing with `EEXIST`
/// ([`Error::is_exists`]) instead of replacing anything (`renameat2(RENAME_NOREPLACE)`).
pub fn rename_noreplace_at(
    from_dir: BorrowedFd<'_>,
    from: impl AsRef<OsStr>,
    to_dir: BorrowedFd<'_>,
    to: impl AsRef<OsStr>,
) -> Result<()> {
    let (from, to) = (from.as_ref(), to.as_ref());
    rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE)
        .map_err(Error::io("renaming", from))
}

/// Swaps `a` in `a_dir` and `b` in `b_dir` in one step (`renameat2(RENAME_EXCHANGE)`); both must exist.
pub fn exchange_at(
    a_dir: BorrowedFd<'_>,
    a: impl AsRef<OsStr>,
    b_dir: BorrowedFd<'_>,
    b: impl AsRef<OsStr>,
) -> Result<()> {
    let (a, b) = (a.as_ref(), b.as_ref());
    rustix::fs::renameat_with(a_dir, a, b_dir, b, RenameFlags::EXCHANGE)
        .map_err(Error::io("exchanging", a))
}

/// The names in directory `dir` except `.` and `..`, sorted bytewise. `dir` may be an `O_PATH` fd.
pub fn read_names(dir: BorrowedFd<'_>) -> Result<Vec<OsString>> {
    let fd = rustix::fs::openat(dir, ".", DIR | OFlags::CLOEXEC, Mode::empty())
        .map_err(Error::io("listing", "."))?;
    read_names_in(fd.as_fd())
}

/// The names in the directory open for reading as `dir` (e.g. with [`DIR`]), except `.` and `..`,
/// sorted bytewise, read from `dir` itself from its current position. Unlike [`read_names`] it does
/// not reopen the directory (one syscall less per directory in a walk, and the flags `dir` was opened
/// with, such as `O_NOATIME`, hold); it cannot read an `O_PATH` fd.
pub fn read_names_in(dir: BorrowedFd<'_>) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    each_name(dir, |name| {
        names.push(OsStr::from_bytes(name).to_os_string())
    })?;
    names.sort_unstable();
    Ok(names)
}

/// The number of entries in directory `dir` except `.` and `..`. Reads through `dir`'s own file
/// position (so `dir` must be freshly opened for reading, not `O_PATH`), without collecting the names.
pub fn count_names(dir: BorrowedFd<'_>) -> Result<u64> {
    let mut n = 0;
    each_name(dir, |_| n += 1)?;
    Ok(n)
}

/// Calls `f` with each name in the directory open for reading as `dir`, except `.` and `..`, in
/// directory order. A 32 KiB buffer, as `readdir(3)` uses: rustix's `Dir` starts smaller and makes
/// more `getdents64` calls on big directories.
fn each_name(dir: BorrowedFd<'_>, mut f: impl FnMut(&[u8])) -> Result<()> {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 << 10];
    let mut entries = rustix::fs::RawDir::new(dir, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry.map_err(Error::io("listing", "."))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            f(name);
        }
    }
    Ok(())
}

/// Creates regular file `name` in `dir` (a single component) for writing with `mode`, failing with
/// `EEXIST` ([`Error::is_exists`]) when anything is there, a symlink included (`O_CREAT|O_EXCL` never
/// follows one).
pub fn create_excl_at(dir: BorrowedFd<'_>, name: impl AsRef<OsStr>, mode: u32) -> Result<OwnedFd> {
    let name = name.as_ref();
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::from_bits_truncate(mode))
        .map_err(Error::io("creating", name))
}

/// One directory being emptied by [`remove_tree_at`].
struct Frame {
    /// Its name in its parent.
    name: OsString,
    /// Its identity, checked when the walk comes back up through `..`.
    ino: u64,
    dev: u64,
    /// Entries not handled yet, the next one last (so they are handled in name order).
    todo: Vec<OsString>,
    /// Something beneath it stays, so it cannot be removed.
    kept: bool,
}

/// The path of `name` below the frames, relative to where the removal started.
fn frame_path(frames: &[Frame], name: Option<&OsStr>) -> PathBuf {
    let mut p: PathBuf = frames.iter().map(|f| f.name.as_os_str()).collect();
    if let Some(n) = name {
        p.push(n);
    }
    p
}

/// Removes `name` in `dir` and everything beneath it. Never follows a symlink (a symlink is removed,
/// not what it points to), never enters or removes a mount point ([`Error::MountPoint`], by mount id)
/// or another filesystem such as a nested subvolume ([`Error::OtherFilesystem`]). Goes on past errors
/// (what cannot be removed stays, with its parents) and returns the first one.
///
/// Iterative: it holds two fds and one small record per level, however deep the tree is, and comes
/// back up through `..`, checking each parent is the directory it went down from.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: impl AsRef<OsStr>) -> Result<()> {
    let name = name.as_ref();
    let base = stat_fd(dir)?;
    let st = stat_at(dir, name)?;
    if st.mnt_id != base.mnt_id {
        return Err(Error::MountPoint { path: name.into() });
    }
    if !st.is_dir() {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty())
            .map_err(Error::io("removing", name));
    }
    if st.dev != base.dev {
        return Err(Error::OtherFilesystem { path: name.into() });
    }
    let fd = open_beneath(dir, Path::new(name), DIR)?;
    let mut first = empty_tree(fd, name, &st, &base);
    if first.is_none()
        && let Err(e) = rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    {
        first = Some(Error::io("removing", name)(e));
    }
    first.map_or(Ok(()), Err)
}

/// Removes everything in the directory `dir`, keeping `dir`, as [`remove_tree_at`] does for each entry.
pub fn empty_dir(dir: BorrowedFd<'_>) -> Result<()> {
    let st = stat_fd(dir)?;
    let fd = rustix::fs::openat(dir, ".", DIR | OFlags::CLOEXEC, Mode::empty())
        .map_err(Error::io("opening", "."))?;
    empty_tree(fd, OsStr::new(""), &st, &st).map_or(Ok(()), Err)
}

/// Empties the directory open as `top` (named `top_name`, stat-ed as `top_st`); `base` is what a
/// child must share: its mount id and device. Returns the first error.
fn empty_tree(top: OwnedFd, top_name: &OsStr, top_st: &Stat, base: &Stat) -> Option<Error> {
    let mut first: Option<Error> = None;
    let mut note = |e: Error| {
        first.get_or_insert(e);
    };
    let todo = match read_names(top.as_fd()) {
        Ok(n) => n.into_iter().rev().collect(),
        Err(e) => return Some(relocate(e, &PathBuf::from(top_name))),
    };
    let mut frames = vec![Frame {
        name: top_name.to_os_string(),
        ino: top_st.ino,
        dev: top_st.dev,
        todo,
        kept: false,
    }];
    let mut cur = top;
    while let Some(next) = frames.last_mut().map(|f| f.todo.pop()) {
        let Some(child) = next else {
            // Everything in this directory is handled: go back up and remove it (unless it is the top).
            let Some(done) = frames.pop() else { break };
            let Some(&Frame { ino, dev, .. }) = frames.last() else {
                break;
            };
            let up = rustix::fs::openat(
                &cur,
                "..",
                DIR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .and_then(|fd| rustix::fs::fstat(&fd).map(|st| (fd, st)));
            match up {
                Ok((fd, st)) if (st.st_ino, st.st_dev) == (ino, dev) => cur = fd,
                // Moved away meanwhile: going on would remove things elsewhere.
                _ => {
                    note(Error::Changed {
                        path: frame_path(&frames, Some(&done.name)),
                    });
                    break;
                }
            }
            let removed = if done.kept {
                Ok(())
            } else {
                rustix::fs::unlinkat(&cur, &done.name, AtFlags::REMOVEDIR)
                    .map_err(|e| Error::io("removing", frame_path(&frames, Some(&done.name)))(e))
            };
            if done.kept || removed.is_err() {
                keep(&mut frames);
            }
            if let Err(e) = removed {
                note(e);
            }
            continue;
        };
        let path = || frame_path(&frames, Some(&child));
        let child_stat = match statx_raw(cur.as_fd(), &child, AtFlags::empty()) {
            Ok(sx) => stat_of(&sx),
            Err(Errno::NOENT) => continue,
            Err(e) => {
                note(Error::io("inspecting", path())(e));
                keep(&mut frames);
                continue;
            }
        };
        // COMPAT(kernel < 5.8): without STATX_MNT_ID, mnt_id is 0 and only `dev` is compared.
        let mounted = child_stat.mnt_id != base.mnt_id && child_stat.mnt_id != 0;
        if mounted || (child_stat.is_dir() && child_stat.dev != base.dev) {
            note(if mounted {
                Error::MountPoint { path: path() }
            } else {
                Error::OtherFilesystem { path: path() }
            });
            keep(&mut frames);
            continue;
        }
        if !child_stat.is_dir() {
            if let Err(e) = rustix::fs::unlinkat(&cur, &child, AtFlags::empty()) {
                note(Error::io("removing", path())(e));
                keep(&mut frames);
            }
            continue;
        }
        let opened = rustix::fs::openat(
            &cur,
            &child,
            DIR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("opening", path())(e))
        .and_then(|fd| {
            if stat_fd(fd.as_fd())?.same_object(&child_stat) {
                Ok(fd)
            } else {
                Err(Error::Changed { path: path() })
            }
        })
        .and_then(|fd| {
            read_names(fd.as_fd())
                .map(|n| (fd, n.into_iter().rev().collect()))
                .map_err(|e| relocate(e, &path()))
        });
        match opened {
            Ok((fd, todo)) => {
                frames.push(Frame {
                    name: child,
                    ino: child_stat.ino,
                    dev: child_stat.dev,
                    todo,
                    kept: false,
                });
                cur = fd;
            }
            Err(e) => {
                note(e);
                keep(&mut frames);
            }
        }
    }
    first
}

/// Marks the innermost directory as kept: something beneath it stays.
fn keep(frames: &mut [Frame]) {
    if let Some(f) = frames.last_mut() {
        f.kept = true;
    }
}

/// Re-labels an error about `.` as being about `path`.
fn relocate(e: Error, path: &Path) -> Error {
    match e {
        Error::Io { op, errno, .. } => Error::Io {
            op,
            path: path.to_path_buf(),
            errno,
        },
        other => other,
    }
}

/// Whether two open files hold the same bytes from their current positions to their ends (read in
/// 128 KiB blocks; `EINTR` is retried).
pub fn same_content(
    a: &mut impl std::io::Read,
    b: &mut impl std::io::Read,
) -> std::io::Result<bool> {
    let (mut ba, mut bb) = (vec![0u8; 128 << 10], vec![0u8; 128 << 10]);
    loop {
        let n = read_full(a, &mut ba)?;
        let m = read_full(b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; the count read (`EINTR` is retried).
pub fn read_full(f: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Creates a new, empty directory named `prefix` plus six random characters (mode 0700), as
/// `mkdtemp(3)` does, and returns its path: a private mount point (`/run/tabula-mnt.` gives
/// `/run/tabula-mnt.Xy3k9Q`). A name that exists is never reused, whatever it is (no symlink is
/// followed: `mkdir` fails on any existing name).
pub fn make_temp_dir(prefix: &Path) -> Result<PathBuf> {
    use std::hash::{BuildHasher, Hasher};
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut last = Errno::EXIST;
    for attempt in 0u32..100 {
        // RandomState is seeded from the OS once per thread; the clock and attempt vary it further.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        h.write_u128(now.as_nanos());
        h.write_u32(attempt);
        let mut bits = h.finish();
        let mut name = prefix.as_os_str().to_os_string();
        let mut suffix = [0u8; 6];
        for c in &mut suffix {
            *c = CHARS[(bits % CHARS.len() as u64) as usize];
            bits /= CHARS.len() as u64;
        }
        name.push(OsStr::from_bytes(&suffix));
        let path = PathBuf::from(name);
        match rustix::fs::mkdir(&path, Mode::from_raw_mode(0o700)) {
            Ok(()) => return Ok(path),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(Error::io("creating", path)(e)),
        }
    }
    Err(Error::io("creating", prefix)(last))
}

#[cfg(test)]
mod tests;
