//! The executor: creates each item as the plan's walk yields it, under a temporary name, then moves
//! the copy into place in one rename.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use nix::unistd::geteuid;
use rustix::fs::{
    AtFlags, CWD, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, chmodat, chownat,
    fchmod, fchown, fstat, futimens, linkat, mkdirat, mknodat, openat, openat2, symlinkat,
    unlinkat, utimensat,
};
use rustix::io::Errno;

use super::plan::PlanWalk;
use super::resolve::{
    check_destination, check_source, check_source_at, components, exists_refusal, lstat_at,
    open_dest_parent, readlink_at,
};
use super::{
    DataHow, FileData, PlanItem, RestoreOp, RestorePlan, RestoreReport, SCHEMA_VERSION, Totals,
};
use crate::diff::xattr::{self, Xattrs};
use crate::diff::{FileType, escape_bytes};

/// Execute a plan made by [`plan_restore`](super::plan_restore) with the same trees, walking the
/// source again as it goes. Re-checks the refusal rules (the destination may have changed since) and
/// that the source still is what was planned. The report lists every file (memory grows with the
/// tree): the command uses [`apply_restore_streaming`].
pub fn apply_restore(
    plan: &RestorePlan,
    source_root: BorrowedFd<'_>,
    dest_root: BorrowedFd<'_>,
) -> anyhow::Result<RestoreReport> {
    let mut files = Vec::new();
    let mut report = apply_restore_streaming(plan, source_root, dest_root, &mut |f| {
        files.push(f.clone());
        Ok(())
    })?;
    report.files = files;
    Ok(report)
}

/// [`apply_restore`], handing each regular file's [`FileData`] to `on_file` as it is made instead of
/// keeping it (the report's `files` stays empty). An error from `on_file` stops the restore like any
/// other: the partial copy is removed.
pub fn apply_restore_streaming(
    plan: &RestorePlan,
    source_root: BorrowedFd<'_>,
    dest_root: BorrowedFd<'_>,
    on_file: &mut dyn FnMut(&FileData) -> anyhow::Result<()>,
) -> anyhow::Result<RestoreReport> {
    let dst_parts = components(&plan.dest, "the destination")?;
    let mut walk = plan.walk(source_root)?;
    let (dst_parent, dst_name) = open_dest_parent(dest_root, &dst_parts, &plan.dest)?;
    let existing = check_destination(dst_parent.as_fd(), &dst_name, &plan.dest, plan.force)?;

    let mut ex = Executor {
        totals: Totals::default(),
        reflinked: 0,
        copied: 0,
        warnings: Vec::new(),
        first_links: HashMap::new(),
        euid: geteuid().as_raw(),
        dest: &plan.dest,
        on_file,
        buf: Vec::new(),
    };
    let tmp = ex
        .build(&mut walk, &plan.source, dst_parent.as_fd())
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
        match crate::fsx::exchange_at(
            parent,
            OsStr::from_bytes(&tmp),
            parent,
            OsStr::from_bytes(&dst_name),
        ) {
            Ok(()) => {
                replaced = true;
                renamed = true;
            }
            // Gone since we looked: a plain no-replace rename below.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                remove_quietly(parent, &tmp);
                return Err(e).with_context(|| {
                    format!("moving the copy into place at '{}'", plan.dest.display())
                });
            }
        }
    }
    if !renamed {
        match crate::fsx::rename_noreplace_at(
            parent,
            OsStr::from_bytes(&tmp),
            parent,
            OsStr::from_bytes(&dst_name),
        ) {
            Ok(()) => {}
            Err(e) => {
                remove_quietly(parent, &tmp);
                if e.is_exists() {
                    return Err(exists_refusal(&plan.dest).into());
                }
                return Err(e).with_context(|| {
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
        files: Vec::new(),
        warnings: ex.warnings,
    })
}

/// A directory created, whose metadata is applied once its contents exist.
struct Frame {
    dst: OwnedFd,
    item: PlanItem,
    xattrs: Xattrs,
}

struct Executor<'a> {
    totals: Totals,
    reflinked: u64,
    copied: u64,
    warnings: Vec<String>,
    /// Destination path of a hard-linked file's first name → the inode made for it, for `linkat`
    /// (kept only for files with more than one link).
    first_links: HashMap<PathBuf, u64>,
    euid: u32,
    /// The plan's destination: hard links are found beneath the copy by their path below it.
    dest: &'a Path,
    on_file: &'a mut dyn FnMut(&FileData) -> anyhow::Result<()>,
    /// The data copy's buffer.
    buf: Vec<u8>,
}

impl Executor<'_> {
    /// Build the copy under a fresh temporary name in `dst_parent`, item by item as `walk` yields
    /// them; returns that name. On failure, removes what it built.
    fn build(
        &mut self,
        walk: &mut PlanWalk,
        source: &Path,
        dst_parent: BorrowedFd<'_>,
    ) -> anyhow::Result<Vec<u8>> {
        let top = walk.next().ok_or_else(|| anyhow!("the plan is empty"))??;
        if top.op == RestoreOp::Skip {
            bail!(
                "'{}' cannot be restored: {}",
                source.display(),
                top.reason.as_deref().unwrap_or("unsupported file type")
            );
        }
        let mut stack = Vec::new();
        let mut created = None;
        for n in 0..100 {
            let tmp = format!(".tabula-restore-{}-{n}", std::process::id()).into_bytes();
            let taken = |tmp: &[u8]| lstat_at(dst_parent, tmp).is_ok();
            // A leftover, or someone else's: never touch it, take the next name.
            if taken(&tmp) {
                continue;
            }
            let sdir = walk
                .source_dir()
                .ok_or_else(|| anyhow!("the source's directory is not open"))?;
            let to = Target {
                dir: dst_parent,
                name: &tmp,
                copy: None,
            };
            match self.create(&top, sdir, walk.entered_dir(), to) {
                Err(e) if e.downcast_ref::<Errno>() == Some(&Errno::EXIST) => continue,
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
        if let Err(e) = self.build_rest(walk, &mut stack) {
            drop(stack);
            remove_quietly(dst_parent, &tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn build_rest(&mut self, walk: &mut PlanWalk, stack: &mut Vec<Frame>) -> anyhow::Result<()> {
        while let Some(item) = walk.next() {
            let item = item?;
            while stack.len() > item.src.depth {
                self.finish_dir(stack)?;
            }
            let frame = stack.last().ok_or_else(|| {
                anyhow!(
                    "the plan's item '{}' has no parent directory",
                    item.path.display()
                )
            })?;
            let sdir = walk
                .source_dir()
                .ok_or_else(|| anyhow!("the source's directory is not open"))?;
            let to = Target {
                dir: frame.dst.as_fd(),
                name: &item.src.name,
                copy: stack.first().map(|f| f.dst.as_fd()),
            };
            let pushed = self
                .create(&item, sdir, walk.entered_dir(), to)
                .with_context(|| format!("creating '{}'", item.path.display()))?;
            stack.extend(pushed);
        }
        while !stack.is_empty() {
            self.finish_dir(stack)?;
        }
        Ok(())
    }

    /// Create `item` as `to` from its name in `sdir` (`entered`: the source directory itself, for a
    /// directory). A directory comes back as a frame whose metadata [`Executor::finish_dir`] applies
    /// once its contents exist. A failure to create the object itself is a bare [`Errno`], so that
    /// `EEXIST` can be told apart.
    fn create(
        &mut self,
        item: &PlanItem,
        sdir: BorrowedFd<'_>,
        entered: Option<BorrowedFd<'_>>,
        to: Target<'_>,
    ) -> anyhow::Result<Option<Frame>> {
        let sname = item.src.name.as_slice();
        let (ddir, dname, to_top) = (to.dir, to.name, to.copy);
        let mut frame = None;
        match item.op {
            RestoreOp::Dir => {
                let src = entered.ok_or_else(|| anyhow!("the source directory is not open"))?;
                let xattrs = xattr::list_fd(src)
                    .map_err(std::io::Error::from)
                    .context("reading xattrs")?;
                mkdirat(ddir, dname, Mode::from_bits_truncate(0o700))
                    .map_err(anyhow::Error::from)?;
                let dst = openat(
                    ddir,
                    dname,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
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
                    dst,
                    item: item.clone(),
                    xattrs,
                });
            }
            RestoreOp::File => {
                // O_NOATIME: restoring from a tree must not change it (where we may ask).
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                let src = match openat(sdir, sname, flags | OFlags::NOATIME, Mode::empty()) {
                    Err(rustix::io::Errno::PERM) => openat(sdir, sname, flags, Mode::empty()),
                    r => r,
                }
                .context("opening the source")?;
                check_source(&src, &item.src)?;
                let dst = openat(
                    ddir,
                    dname,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(anyhow::Error::from)?;
                let how = match crate::btrfs::clone_file(dst.as_fd(), src.as_fd()) {
                    Ok(()) => DataHow::Reflinked,
                    // The ioctl layer's errors are nix's.
                    Err(
                        nix::errno::Errno::EXDEV
                        | nix::errno::Errno::EOPNOTSUPP
                        | nix::errno::Errno::EINVAL
                        | nix::errno::Errno::ENOTTY
                        | nix::errno::Errno::ENOSYS,
                    ) => {
                        copy_sparse(&src, &dst, &mut self.buf).context("copying the data")?;
                        DataHow::Copied
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context("cloning the data")),
                };
                match how {
                    DataHow::Reflinked => self.reflinked += 1,
                    DataHow::Copied => self.copied += 1,
                }
                (self.on_file)(&FileData {
                    path: item.path.clone(),
                    data: how,
                })?;
                let xattrs = xattr::list_fd(src.as_fd())
                    .map_err(std::io::Error::from)
                    .context("reading xattrs")?;
                self.set_meta_fd(dst.as_fd(), item, &xattrs)?;
                if item.src.nlink > 1 {
                    let made = fstat(dst.as_fd())?.st_ino;
                    self.first_links.insert(item.path.clone(), made);
                }
            }
            RestoreOp::Hardlink => {
                check_source_at(sdir, sname, &item.src)?;
                let to = item
                    .link_to
                    .as_ref()
                    .ok_or_else(|| anyhow!("hard link without a target"))?;
                let made = *self
                    .first_links
                    .get(to)
                    .ok_or_else(|| anyhow!("'{}' was not restored first", to.display()))?;
                self.hard_link(
                    to,
                    made,
                    Linked {
                        dir: ddir,
                        name: dname,
                        top: to_top,
                    },
                )?;
            }
            RestoreOp::Symlink => {
                check_source_at(sdir, sname, &item.src)?;
                let target = readlink_at(sdir, sname).context("reading the source symlink")?;
                if item.target.as_deref().map(Path::as_os_str) != Some(target.as_os_str()) {
                    bail!("the source changed since the plan was made");
                }
                symlinkat(target.as_os_str(), ddir, dname).map_err(anyhow::Error::from)?;
                let xattrs = xattr::list_at(sdir, sname)
                    .map_err(std::io::Error::from)
                    .context("reading xattrs")?;
                self.set_meta_at(ddir, dname, item, &xattrs, false)?;
            }
            RestoreOp::Fifo | RestoreOp::Char | RestoreOp::Block => {
                check_source_at(sdir, sname, &item.src)?;
                let kind = match item.op {
                    RestoreOp::Fifo => rustix::fs::FileType::Fifo,
                    RestoreOp::Char => rustix::fs::FileType::CharacterDevice,
                    _ => rustix::fs::FileType::BlockDevice,
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
            RestoreOp::Skip => {}
        }
        self.totals.count(item.op, item.size);
        Ok(frame)
    }

    /// Another name for the file made for `first` (inode `made`), found beneath the copy by its
    /// path there without following symlinks (the copy's directories may belong to users by now).
    fn hard_link(&self, first: &Path, made: u64, at: Linked<'_>) -> anyhow::Result<()> {
        let rel = first
            .strip_prefix(self.dest)
            .map_err(|_| anyhow!("'{}' is outside the copy", first.display()))?;
        let name = rel
            .file_name()
            .ok_or_else(|| anyhow!("'{}' has no name", first.display()))?;
        let top = at
            .top
            .ok_or_else(|| anyhow!("a hard link outside a directory"))?;
        let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => None,
            Some(p) => Some(
                // Not `fsx::open_beneath`: RESOLVE_NO_XDEV too, and no fallback walk (the copy is
                // on a kernel with openat2, where restore's source resolution already needs it).
                openat2(
                    top,
                    p,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH
                        | ResolveFlags::NO_SYMLINKS
                        | ResolveFlags::NO_MAGICLINKS
                        | ResolveFlags::NO_XDEV,
                )
                .with_context(|| format!("opening the directory of '{}'", first.display()))?,
            ),
        };
        let dir = parent.as_ref().map_or(top, AsFd::as_fd);
        let is_made = |dir: BorrowedFd<'_>, name: &OsStr| {
            lstat_at(dir, name.as_bytes()).is_ok_and(|st| {
                st.st_ino == made && FileType::from_mode(st.st_mode) == Some(FileType::File)
            })
        };
        if !is_made(dir, name) {
            bail!("'{}' changed while restoring", first.display());
        }
        linkat(dir, name, at.dir, at.name, AtFlags::empty()).map_err(anyhow::Error::from)?;
        // Swapped between the check and the link: undo, never keep a name for someone else's file.
        if !is_made(at.dir, OsStr::from_bytes(at.name)) {
            let _ = unlinkat(at.dir, at.name, AtFlags::empty());
            bail!("'{}' changed while restoring", first.display());
        }
        Ok(())
    }

    /// Pop the innermost directory and give it its metadata, now that its contents exist.
    fn finish_dir(&mut self, stack: &mut Vec<Frame>) -> anyhow::Result<()> {
        if let Some(f) = stack.pop() {
            let item = &f.item;
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
        if let Err(e) = fchown(fd, Some(uid(item)), Some(gid(item))) {
            self.warn_owner(item, e);
        }
        fchmod(fd, Mode::from_bits_truncate(item.mode)).context("setting the mode")?;
        for (name, e) in xattr::set_fd(fd, xattrs) {
            self.warn_xattr(item, &name, e);
        }
        futimens(fd, &times(item)).context("setting the times")?;
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
        if let Err(e) = chownat(
            dir,
            name,
            Some(uid(item)),
            Some(gid(item)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            self.warn_owner(item, e);
        }
        if chmod {
            // chmod has no no-follow form: go through an O_PATH fd checked not to be a symlink.
            let fd = openat(
                dir,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = fstat(fd.as_fd())?;
            if FileType::from_mode(st.st_mode) == Some(FileType::Symlink) {
                bail!("the new object was replaced by a symlink while restoring");
            }
            let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
            // Following the /proc magic link is the point here.
            chmodat(
                CWD,
                proc.as_str(),
                Mode::from_bits_truncate(item.mode),
                AtFlags::empty(),
            )
            .context("setting the mode")?;
        }
        for (key, e) in xattr::set_at(dir, name, xattrs) {
            self.warn_xattr(item, &key, e);
        }
        utimensat(dir, name, &times(item), AtFlags::SYMLINK_NOFOLLOW)
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

fn times(item: &PlanItem) -> Timestamps {
    let ts = |(tv_sec, tv_nsec): (i64, i64)| Timespec { tv_sec, tv_nsec };
    Timestamps {
        last_access: ts(item.src.atime),
        last_modification: ts(item.src.mtime),
    }
}

/// The item's owner, passed on as it was read (as nix's `Uid::from_raw` did).
fn uid(item: &PlanItem) -> Uid {
    Uid::from_raw_unchecked(item.uid)
}

/// The item's group, passed on as it was read.
fn gid(item: &PlanItem) -> Gid {
    Gid::from_raw_unchecked(item.gid)
}

/// Where an item is created: `name` in `dir`; `copy` is the top directory of the copy, when there
/// is one (hard links are resolved beneath it).
struct Target<'a> {
    dir: BorrowedFd<'a>,
    name: &'a [u8],
    copy: Option<BorrowedFd<'a>>,
}

/// Where a hard link is made, and the copy it is found in.
struct Linked<'a> {
    dir: BorrowedFd<'a>,
    name: &'a [u8],
    top: Option<BorrowedFd<'a>>,
}

/// Remove `name` in `parent` and everything beneath it, never following symlinks, never entering a
/// mount or another filesystem ([`crate::fsx::remove_tree_at`]: iterative, whatever the depth).
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> anyhow::Result<()> {
    Ok(crate::fsx::remove_tree_at(parent, OsStr::from_bytes(name))?)
}

/// Copies the bytes of `from` into the new, empty file `to`, keeping holes: only the data ranges
/// `SEEK_DATA`/`SEEK_HOLE` find are written, and the size is set at the end. A 2 GiB sparse VM image
/// takes as little room in the copy as in the source. (Filesystems without hole tracking report the
/// whole file as data: a plain copy.)
fn copy_sparse(from: &OwnedFd, to: &OwnedFd, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use rustix::fs::{SeekFrom, seek};
    use std::os::unix::fs::FileExt;
    let size = u64::try_from(fstat(from.as_fd())?.st_size).unwrap_or(0);
    let (src, dst) = (File::from(from.try_clone()?), File::from(to.try_clone()?));
    // One buffer for the whole restore, allocated at the first copy.
    buf.resize(1 << 20, 0);
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
