//! Both ends of a restore, opened without following symlinks, and the checks on the destination.
//!
//! Every call is rustix's, and a failure is rustix's [`Errno`] (what callers downcast to).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Stat, fstat, openat, openat2, readlinkat};
use rustix::io::Errno;

use super::{Existing, SourceStat};
use crate::diff::{FileType, escape_bytes};
use crate::error::{Refusal, UsageError};
use crate::fsx;
use crate::limits::{MAX_DEPTH, too_deep, with_walk_stack};

/// Existing destination: refusal without force, or when it is (or holds) a mount point.
pub(super) fn check_destination(
    parent: BorrowedFd<'_>,
    name: &[u8],
    dest: &Path,
    force: bool,
) -> anyhow::Result<Option<Existing>> {
    let st = match lstat_at(parent, name) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading '{}'", dest.display())),
    };
    if !force {
        return Err(exists_refusal(dest).into());
    }
    let file_type = FileType::from_mode(st.st_mode)
        .ok_or_else(|| anyhow!("'{}' has an unknown file type", dest.display()))?;
    let parent_mnt = mount_of(parent, b"")?;
    if file_type == FileType::Dir {
        // The scan recurses per level (bounded by `MAX_DEPTH`) on a stack sized for it.
        let entries = with_walk_stack(|| scan_for_mounts(parent, name, dest, parent_mnt, 0))??;
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

pub(super) fn exists_refusal(dest: &Path) -> Refusal {
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

/// (mount id, dev) of `name` in `dir` (`b""`: `dir` itself), not following symlinks: a mount point or
/// a nested subvolume differs from its parent in one of the two.
fn mount_of(dir: BorrowedFd<'_>, name: &[u8]) -> anyhow::Result<(u64, u64)> {
    let st = crate::fsx::stat_at(dir, OsStr::from_bytes(name))?;
    Ok((st.mnt_id, st.dev))
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
    let st = lstat_at(parent, name)?;
    let d = open_checked_fd(parent, name, &st)
        .with_context(|| format!("opening '{}'", path.display()))?;
    let names = read_names(d.as_fd())?;
    let mut count = 0;
    for child in names {
        count += 1;
        let cpath = path.join(OsStr::from_bytes(&child));
        let cst = lstat_at(d.as_fd(), &child)?;
        if FileType::from_mode(cst.st_mode) == Some(FileType::Dir) {
            count += scan_for_mounts(d.as_fd(), &child, &cpath, parent_mnt, depth + 1)?;
        } else if mount_of(d.as_fd(), &child)? != parent_mnt {
            return Err(mount_refusal(&cpath).into());
        }
    }
    Ok(count)
}

pub(super) fn is_btrfs(fd: BorrowedFd<'_>) -> bool {
    crate::btrfs::require_btrfs(fd).is_ok()
}

/// The normal components of an absolute path; `..` and the root itself are usage errors.
pub(super) fn components(p: &Path, what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
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
pub(super) fn open_source_parent(
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
    let fd = match openat2(
        root,
        rel.as_os_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => bail!(
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

/// The destination's parent, resolved beneath `root` without following any symlink
/// ([`fsx::open_beneath`]); a failure names the component at fault.
pub(super) fn open_dest_parent(
    root: BorrowedFd<'_>,
    parts: &[Vec<u8>],
    dest: &Path,
) -> anyhow::Result<(OwnedFd, Vec<u8>)> {
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| anyhow!("empty destination path"))?;
    let rel: PathBuf = parents.iter().map(|p| OsStr::from_bytes(p)).collect();
    match fsx::open_beneath(root, &rel, OFlags::PATH | OFlags::DIRECTORY) {
        Ok(fd) => Ok((fd, name.clone())),
        Err(e) if parents.is_empty() => {
            Err(anyhow::Error::from(e.errno()).context("opening the destination root"))
        }
        Err(e) => Err(dest_parent_error(root, e, dest)),
    }
}

/// Why the destination's parent could not be resolved, worded for the component at fault.
fn dest_parent_error(root: BorrowedFd<'_>, e: fsx::Error, dest: &Path) -> anyhow::Error {
    let shown = Path::new("/").join(e.path());
    match e {
        fsx::Error::Symlink { path } => {
            let target = path
                .parent()
                .zip(path.file_name())
                .and_then(|(dir, link)| {
                    let dir =
                        fsx::open_beneath(root, dir, OFlags::PATH | OFlags::DIRECTORY).ok()?;
                    readlink_at(dir.as_fd(), link.as_bytes()).ok()
                })
                .unwrap_or_default();
            Refusal::new(
                "symlink-in-destination",
                format!(
                    "'{}' is a symlink (to '{}'); restore never writes through a symlink. \
                     Name the real path instead (--to)",
                    shown.display(),
                    Path::new(&target).display()
                ),
            )
            .into()
        }
        fsx::Error::Io {
            errno: fsx::Errno::NOENT,
            ..
        } => anyhow!(
            "'{}' does not exist; restore it first (or create it), then '{}'",
            shown.display(),
            dest.display()
        ),
        fsx::Error::Io {
            errno: fsx::Errno::NOTDIR,
            ..
        } => anyhow!("'{}' is not a directory", shown.display()),
        e => anyhow::Error::from(e.errno()).context(format!("opening '{}'", shown.display())),
    }
}

/// Opens the directory `name` in `parent` for reading, checking it is the object `st` describes.
pub(super) fn open_checked_fd(
    parent: BorrowedFd<'_>,
    name: &[u8],
    st: &Stat,
) -> anyhow::Result<OwnedFd> {
    let fd = openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let now = fstat(fd.as_fd())?;
    if !same_object(&now, st) {
        bail!("'{}' changed while it was being read", escape_bytes(name));
    }
    Ok(fd)
}

pub(super) fn check_source_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    src: &SourceStat,
) -> anyhow::Result<()> {
    let st = lstat_at(dir, name).context("reading the source")?;
    if (st.st_ino, st.st_dev) != (src.ino, src.dev) {
        bail!("the source changed since the plan was made");
    }
    Ok(())
}

pub(super) fn check_source(fd: &OwnedFd, src: &SourceStat) -> anyhow::Result<()> {
    let st = fstat(fd.as_fd())?;
    if (st.st_ino, st.st_dev) != (src.ino, src.dev) {
        bail!("the source changed since the plan was made");
    }
    Ok(())
}

/// The sorted names in the directory open for reading as `dir` ([`crate::fsx::read_names_in`]).
pub(super) fn read_names(dir: BorrowedFd<'_>) -> anyhow::Result<Vec<Vec<u8>>> {
    let names = crate::fsx::read_names_in(dir).map_err(|e| e.errno())?;
    Ok(names.into_iter().map(OsString::into_vec).collect())
}

/// `lstat` of `name` in `dir`: never follows a symlink.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Stat, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// The target of the symlink `name` in `dir`, as bytes.
pub(super) fn readlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OsString, Errno> {
    let target = readlinkat(dir, name, Vec::new())?;
    Ok(OsString::from_vec(target.into_bytes()))
}

/// Whether two stats are of the same object (inode and device).
fn same_object(a: &Stat, b: &Stat) -> bool {
    (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The destination's parents: every way to fail, worded as restore always has.
    #[test]
    fn dest_parent_missing_symlink_file_and_found() {
        let tmp = std::env::temp_dir().join(format!("restore-dest-parent-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("a/b")).unwrap();
        std::fs::write(tmp.join("a/file"), b"").unwrap();
        std::os::unix::fs::symlink("/etc", tmp.join("a/link")).unwrap();
        let root = rustix::fs::open(&tmp, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let run = |dest: &str| {
            let parts = components(Path::new(dest), "x").unwrap();
            open_dest_parent(root.as_fd(), &parts, Path::new(dest))
        };
        let missing = run("/a/nowhere/deeper/x").map(|_| ()).unwrap_err();
        let link = run("/a/link/x").map(|_| ()).unwrap_err();
        let file = run("/a/file/x").map(|_| ()).unwrap_err();
        let found = run("/a/b/new").map(|(fd, name)| (stat_fd_ino(&fd), name));
        let expected_b = std::fs::metadata(tmp.join("a/b")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(
            format!("{missing:#}"),
            "'/a/nowhere' does not exist; restore it first (or create it), then '/a/nowhere/deeper/x'"
        );
        assert!(missing.downcast_ref::<Refusal>().is_none());
        assert_eq!(
            link.downcast_ref::<Refusal>().map(|r| r.to_string()),
            Some(
                "refused (symlink-in-destination): '/a/link' is a symlink (to '/etc'); restore never writes through a symlink. \
                 Name the real path instead (--to)"
                    .to_string()
            ),
            "{link:#}"
        );
        assert_eq!(format!("{file:#}"), "'/a/file' is not a directory");
        assert_eq!(found.unwrap(), (expected_b.unwrap(), b"new".to_vec()));
    }

    fn stat_fd_ino(fd: &OwnedFd) -> u64 {
        fstat(fd.as_fd()).unwrap().st_ino
    }
}
