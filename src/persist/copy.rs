//! `how = "copy"`: files that programs replace by `rename(2)` (`/etc/shadow`, shell histories).
//!
//! A bind-mounted file cannot be renamed over (`EBUSY`), and a symlink is replaced by a plain file that
//! the next boot erases. Such files are therefore copied: into the new root at boot (`tabula persist`),
//! and back into persistent storage on the running system (`tabula persist sync`). Both directions use
//! [`replace_with_copy`]: a temporary file in the destination directory, data reflinked (or copied),
//! owner, mode, xattrs and times of the origin, fsync, `rename` over the destination, fsync of the
//! directory. A crash at any instant leaves the old or the new file at the destination, never a part.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::walk::{Walker, symlink_refusal};
use crate::diff::xattr;
use crate::fsx::{self, Stat};

/// Files known to be replaced by rename: `shadow-utils`, `passwd`, `useradd`, `chpasswd`, `vipw`.
const RENAMED_PATHS: &[&str] = &[
    "/etc/shadow",
    "/etc/passwd",
    "/etc/group",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
];

/// File names known to be replaced by rename wherever they are (shells and REPLs saving history).
const RENAMED_NAMES: &[&str] = &[
    ".bash_history",
    ".zsh_history",
    "fish_history",
    ".python_history",
];

/// Whether programs are known to replace `target` by writing a new file and renaming it over the old
/// one (so a bind mount breaks them: `EBUSY`).
pub fn replaced_by_rename(target: &Path) -> bool {
    RENAMED_PATHS.iter().any(|p| target == Path::new(p))
        || target
            .file_name()
            .is_some_and(|n| RENAMED_NAMES.iter().any(|r| n == OsStr::new(r)))
}

/// A regular file opened for reading without following a symlink. `Ok(None)` when it does not exist;
/// a refusal when it is a symlink; an error when it is something else.
pub(crate) fn open_regular(w: &Walker, path: &Path) -> Result<Option<(File, Stat)>> {
    let shown = w.shown(path);
    let Some((dir, name)) = w.parent(path)? else {
        return Ok(None);
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(&dir, &name, flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(symlink_refusal(&shown)),
        Err(e) => return Err(e).with_context(|| format!("opening '{}'", shown.display())),
    };
    let st = fsx::stat_fd(fd.as_fd())
        .map_err(|e| e.errno())
        .with_context(|| format!("inspecting '{}'", shown.display()))?;
    if !st.is_file() {
        bail!("'{}' is not a regular file", shown.display());
    }
    Ok(Some((File::from(fd), st)))
}

/// Whether two open regular files have the same owner, mode and content (read from the start).
pub(crate) fn same_file(a: &mut File, ast: &Stat, b: &mut File, bst: &Stat) -> Result<bool> {
    if ast.same_object(bst) {
        return Ok(true);
    }
    if ast.size != bst.size
        || ast.uid != bst.uid
        || ast.gid != bst.gid
        || ast.mode & 0o7777 != bst.mode & 0o7777
    {
        return Ok(false);
    }
    fsx::same_content(a, b).context("reading a file to compare it")
}

/// Whether regular file `copy` has the owner, mode and content of regular file `original`. `false`
/// when either is missing.
pub(crate) fn is_current(w: &Walker, original: &Path, copy: &Path) -> Result<bool> {
    let (Some((mut a, ast)), Some((mut b, bst))) =
        (open_regular(w, original)?, open_regular(w, copy)?)
    else {
        return Ok(false);
    };
    same_file(&mut a, &ast, &mut b, &bst)
}

/// What [`replace_with_copy`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Copied {
    /// The data was shared with `FICLONE` rather than copied (a copy may still share it through
    /// `copy_file_range` when both ends are on the same btrfs).
    pub reflinked: bool,
    /// Extended attributes that could not be set.
    pub warnings: Vec<String>,
}

/// Fault points of one copy direction (aborts there in fault-injection builds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaultPoints {
    /// After the temporary file is created, before any data is in it.
    pub created: &'static str,
    /// After the data is in the temporary file, before its metadata and fsync.
    pub data: &'static str,
    /// After the fsync, right before the rename.
    pub before_rename: &'static str,
    /// After the rename, before the directory's fsync.
    pub renamed: &'static str,
}

/// Atomically replaces (or creates) regular file `to` with a copy of regular file `from`, both resolved
/// inside `w` without following symlinks. The parent of `to` must exist; a symlink or anything but a
/// regular file at `to` is refused. `from` must have a single link (a hard link could expose another
/// file).
pub(crate) fn replace_with_copy(
    w: &Walker,
    from: &Path,
    to: &Path,
    faults: FaultPoints,
) -> Result<Copied> {
    let shown_to = w.shown(to);
    let (mut src, sst) = w.open_file_for_copy(from)?;
    let (dir, name) = w.parent(to)?.ok_or_else(|| {
        anyhow!(
            "copying to '{}': its parent directory does not exist",
            shown_to.display()
        )
    })?;
    match fsx::stat_at(dir.as_fd(), &name).map_err(|e| e.errno()) {
        Ok(st) if st.is_symlink() => return Err(symlink_refusal(&shown_to)),
        Ok(st) if !st.is_file() => bail!(
            "'{}' is in the way and is not a regular file",
            shown_to.display()
        ),
        Ok(_) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting '{}'", shown_to.display())),
    }

    // A name of our own next to the destination: same directory, so the rename is atomic.
    let mut tmp: Option<(OsString, std::os::fd::OwnedFd)> = None;
    for n in 0..100 {
        let mut t = OsString::from(".");
        t.push(&name);
        t.push(format!(".tabula-{}-{n}", std::process::id()));
        match fsx::create_excl_at(dir.as_fd(), &t, 0o600).map_err(|e| e.errno()) {
            Ok(fd) => {
                tmp = Some((t, fd));
                break;
            }
            Err(Errno::EXIST) => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("creating a temporary file next to '{}'", shown_to.display())
                });
            }
        }
    }
    let (tmp_name, tmp_fd) =
        tmp.ok_or_else(|| anyhow!("no free temporary name next to '{}'", shown_to.display()))?;
    crate::fault::point(faults.created);

    let result = (|| -> Result<Copied> {
        let mut out = Copied::default();
        match crate::btrfs::clone_file(tmp_fd.as_fd(), src.as_fd()) {
            Ok(()) => out.reflinked = true,
            Err(e) if no_reflink(std::io::Error::from(e).raw_os_error()) => {
                // std's copy uses copy_file_range, which still shares extents within one btrfs.
                let mut dst = File::from(
                    tmp_fd
                        .try_clone()
                        .context("duplicating a file descriptor")?,
                );
                std::io::copy(&mut src, &mut dst)
                    .with_context(|| format!("copying into '{}'", shown_to.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cloning into '{}'", shown_to.display()));
            }
        }
        crate::fault::point(faults.data);
        // Owner before mode (chown clears set-id bits), xattrs after chown (it drops capabilities),
        // times last (every change above touches ctime/mtime).
        rustix::fs::fchown(
            &tmp_fd,
            Some(Uid::from_raw(sst.uid)),
            Some(Gid::from_raw(sst.gid)),
        )
        .with_context(|| format!("setting the owner of the copy of '{}'", shown_to.display()))?;
        rustix::fs::fchmod(&tmp_fd, Mode::from_bits_truncate(sst.mode & 0o7777))
            .with_context(|| format!("setting the mode of the copy of '{}'", shown_to.display()))?;
        let attrs = xattr::list_fd(src.as_fd())
            .map_err(std::io::Error::from)
            .with_context(|| format!("reading the xattrs of '{}'", w.shown(from).display()))?;
        for (key, e) in xattr::set_fd(tmp_fd.as_fd(), &attrs) {
            out.warnings.push(format!(
                "extended attribute '{}' not copied to '{}': {}",
                String::from_utf8_lossy(&key),
                shown_to.display(),
                std::io::Error::from(e)
            ));
        }
        let time = |(tv_sec, nsec): (i64, u32)| Timespec {
            tv_sec,
            tv_nsec: nsec.into(),
        };
        rustix::fs::futimens(
            &tmp_fd,
            &Timestamps {
                last_access: time(sst.atime),
                last_modification: time(sst.mtime),
            },
        )
        .with_context(|| format!("setting the times of the copy of '{}'", shown_to.display()))?;
        rustix::fs::fsync(&tmp_fd)
            .with_context(|| format!("syncing the copy of '{}'", shown_to.display()))?;
        crate::fault::point(faults.before_rename);
        // rename replaces the name itself: a symlink planted at `to` since the check is replaced, never
        // followed.
        rustix::fs::renameat(&dir, &tmp_name, &dir, &name)
            .with_context(|| format!("renaming the copy onto '{}'", shown_to.display()))?;
        crate::fault::point(faults.renamed);
        rustix::fs::fsync(&dir)
            .with_context(|| format!("syncing the directory of '{}'", shown_to.display()))?;
        Ok(out)
    })();
    if result.is_err() {
        // The temporary name is ours (O_EXCL); unlinkat never follows a link.
        let _ = rustix::fs::unlinkat(&dir, &tmp_name, AtFlags::empty());
    }
    result
}

/// Whether the `FICLONE` ioctl failed with an errno meaning "no reflink here" (another filesystem,
/// not supported): then the data is copied. Compared by number, whichever crate the ioctl's errno
/// type comes from.
fn no_reflink(raw: Option<i32>) -> bool {
    [
        Errno::XDEV,
        Errno::OPNOTSUPP,
        Errno::INVAL,
        Errno::NOTTY,
        Errno::NOSYS,
    ]
    .iter()
    .any(|e| Some(e.raw_os_error()) == raw)
}

/// Removes regular file `path` (never a symlink's target, never a directory) and syncs its directory.
pub(crate) fn remove_file(w: &Walker, path: &Path) -> Result<bool> {
    let shown = w.shown(path);
    let Some((dir, name)) = w.parent(path)? else {
        return Ok(false);
    };
    match fsx::stat_at(dir.as_fd(), &name).map_err(|e| e.errno()) {
        Ok(st) if st.is_symlink() => return Err(symlink_refusal(&shown)),
        Ok(st) if !st.is_file() => bail!("'{}' is not a regular file", shown.display()),
        Ok(_) => {}
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("inspecting '{}'", shown.display())),
    }
    rustix::fs::unlinkat(&dir, &name, AtFlags::empty())
        .with_context(|| format!("removing '{}'", shown.display()))?;
    rustix::fs::fsync(&dir)
        .with_context(|| format!("syncing the directory of '{}'", shown.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    const FAULTS: FaultPoints = FaultPoints {
        created: "test-created",
        data: "test-data",
        before_rename: "test-before-rename",
        renamed: "test-renamed",
    };

    #[test]
    fn replace_with_copy_keeps_mode_and_times_and_refuses_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path();
        std::fs::write(p.join("from"), "new content").expect("write");
        std::fs::set_permissions(p.join("from"), std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        let times = std::fs::FileTimes::new()
            .set_accessed(std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000, 7))
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(2_000_000, 9));
        std::fs::File::options()
            .write(true)
            .open(p.join("from"))
            .expect("open")
            .set_times(times)
            .expect("times");
        std::fs::write(p.join("to"), "old").expect("write");
        let w = Walker::open(p).expect("open");

        replace_with_copy(&w, Path::new("/from"), Path::new("/to"), FAULTS).expect("copy");
        let m = std::fs::symlink_metadata(p.join("to")).expect("stat");
        assert_eq!(std::fs::read(p.join("to")).expect("read"), b"new content");
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!((m.atime(), m.atime_nsec()), (1_000_000, 7));
        assert_eq!((m.mtime(), m.mtime_nsec()), (2_000_000, 9));
        assert!(is_current(&w, Path::new("/from"), Path::new("/to")).expect("compare"));
        // No temporary file is left next to the destination.
        assert_eq!(w.count_entries(Path::new("/")).expect("count"), 2);

        symlink("from", p.join("link")).expect("symlink");
        let refused = |e: anyhow::Error| {
            e.chain()
                .find_map(|c| c.downcast_ref::<crate::error::Refusal>())
                .map(|r| r.rule)
        };
        let e = replace_with_copy(&w, Path::new("/from"), Path::new("/link"), FAULTS)
            .expect_err("a symlink at the destination");
        assert_eq!(refused(e), Some(super::super::walk::RULE_SYMLINK));
        let e = remove_file(&w, Path::new("/link")).expect_err("a symlink");
        assert_eq!(refused(e), Some(super::super::walk::RULE_SYMLINK));
        assert!(p.join("from").exists());

        assert!(remove_file(&w, Path::new("/to")).expect("remove"));
        assert!(!remove_file(&w, Path::new("/to")).expect("already gone"));
        assert!(!p.join("to").exists());
    }

    #[test]
    fn known_rename_replaced_files() {
        for p in [
            "/etc/shadow",
            "/etc/passwd",
            "/etc/group",
            "/etc/gshadow",
            "/etc/subuid",
            "/etc/subgid",
            "/home/alice/.bash_history",
            "/root/.zsh_history",
            "/home/bob/.local/share/fish/fish_history",
            "/home/alice/.python_history",
        ] {
            assert!(replaced_by_rename(Path::new(p)), "{p}");
        }
        for p in [
            "/etc/machine-id",
            "/etc/shadow-",
            "/srv/etc/shadow",
            "/home/alice/.bash_history.bak",
            "/etc/adjtime",
        ] {
            assert!(!replaced_by_rename(Path::new(p)), "{p}");
        }
    }
}
