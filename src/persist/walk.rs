//! Path resolution that never follows a symlink, and fd-relative changes.
//!
//! Persistent storage holds user-writable trees (`/persist/home/alice`), and on a running system so does
//! the target side. Every path is therefore resolved beneath the root's fd by [`crate::fsx`] (openat2
//! without symlinks, or an `O_NOFOLLOW` walk), and every change is made through an fd (or relative to a
//! verified parent fd): a symlink planted anywhere on the way makes the operation fail with a
//! [`Refusal`] instead of redirecting it.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{AtFlags, CWD, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use crate::error::Refusal;
use crate::fsx::{self, Stat};

/// Refusal rule: a symlink was found where a real directory or file was expected.
pub const RULE_SYMLINK: &str = "symlink-in-path";
/// Refusal rule: a file whose owner or mode would change has other hard links.
pub const RULE_HARDLINK: &str = "hard-linked-file";

/// The errno of an [`fsx`] error on a single name (a stat or an open of one component, where the
/// only errors are the kernel's), so the caller's context stays the whole message as before.
fn errno(e: fsx::Error) -> Errno {
    e.errno()
}

/// A refusal for a symlink found at `path`.
pub(crate) fn symlink_refusal(path: &Path) -> anyhow::Error {
    anyhow::Error::new(Refusal::new(
        RULE_SYMLINK,
        format!(
            "'{}' is a symlink: tabula never follows symlinks in persistent storage or in the new root; \
             replace it with a real directory or file",
            path.display()
        ),
    ))
}

/// The components of an absolute, normalised path (the config guarantees that form).
fn components(path: &Path) -> Result<Vec<&OsStr>> {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(anyhow!(
                "'{}' is not a normalised absolute path",
                path.display()
            )),
        })
        .collect()
}

/// Opens directory `name` under `dir` without following a symlink; `Ok(None)` when it does not exist.
fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<Option<OwnedFd>> {
    open_dir_beneath(dir, Path::new(name), |_| shown.to_path_buf())
}

/// Opens directory `rel` beneath `dir` through [`fsx`]; `Ok(None)` when some component does not exist,
/// a [`Refusal`] when one is a symlink. `shown` turns the part of `rel` at fault into a path for messages.
fn open_dir_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    shown: impl Fn(&Path) -> PathBuf,
) -> Result<Option<OwnedFd>> {
    match fsx::open_dir_beneath(dir, rel) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(fsx::Error::Symlink { path }) => Err(symlink_refusal(&shown(&path))),
        Err(e) if e.errno() == fsx::Errno::NOTDIR => {
            bail!("'{}' is not a directory", shown(e.path()).display())
        }
        Err(e) => {
            let at = shown(e.path());
            Err(anyhow::Error::new(e)).with_context(|| format!("opening '{}'", at.display()))
        }
    }
}

/// Opens `name` under `dir` as an `O_PATH` fd without following a symlink (a symlink itself is returned).
pub(crate) fn open_path_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
) -> Result<Option<(OwnedFd, Stat)>> {
    // One component: a plain openat (fsx::open_beneath would retry a missing name through its walk).
    match rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let st = fsx::stat_fd(fd.as_fd())
                .map_err(errno)
                .with_context(|| format!("inspecting '{}'", shown.display()))?;
            Ok(Some((fd, st)))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("opening '{}'", shown.display())),
    }
}

/// The path of an open fd for syscalls that only take paths (mount, chmod of an `O_PATH` fd).
pub(crate) fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Owner and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Owner {
    /// Owner and permission bits of a stat result.
    pub(crate) fn of(st: &Stat) -> Owner {
        Owner {
            uid: st.uid,
            gid: st.gid,
            mode: st.mode & 0o7777,
        }
    }
}

/// Sets owner then mode (chown clears set-id bits, so the mode goes last) on an fd opened for I/O.
fn set_owner_mode_fd(
    fd: &OwnedFd,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    shown: &Path,
) -> Result<()> {
    if uid.is_some() || gid.is_some() {
        rustix::fs::fchown(fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
            .with_context(|| format!("changing the owner of '{}'", shown.display()))?;
    }
    if let Some(mode) = mode {
        rustix::fs::fchmod(fd, Mode::from_bits_truncate(mode))
            .with_context(|| format!("changing the mode of '{}'", shown.display()))?;
    }
    Ok(())
}

/// Walks and changes paths inside one root directory.
pub struct Walker {
    root: OwnedFd,
    root_path: PathBuf,
}

impl Walker {
    /// Opens the root directory (`/sysroot`, `/`, a blank snapshot). The root path itself is trusted
    /// (given by the administrator); everything below it is resolved without following symlinks.
    pub fn open(root: &Path) -> Result<Walker> {
        let fd = rustix::fs::openat(CWD, root, fsx::DIR | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("opening the root directory '{}'", root.display()))?;
        Ok(Walker {
            root: fd,
            root_path: root.to_path_buf(),
        })
    }

    /// The root directory's fd.
    pub(crate) fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// `path` (absolute inside the root) as seen from outside, for messages.
    pub(crate) fn shown(&self, path: &Path) -> PathBuf {
        self.root_path.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Opens directory `path` (absolute inside the root). `Ok(None)` when some component does not exist;
    /// a refusal when one is a symlink.
    pub(crate) fn dir(&self, path: &Path) -> Result<Option<OwnedFd>> {
        let rel: PathBuf = components(path)?.into_iter().collect();
        open_dir_beneath(self.root.as_fd(), &rel, |at| self.shown(at))
    }

    /// The parent directory of `path` and its last component. `Ok(None)` when the parent does not exist.
    pub(crate) fn parent(&self, path: &Path) -> Result<Option<(OwnedFd, OsString)>> {
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("'{}' has no last component", path.display()))?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        Ok(self.dir(parent)?.map(|fd| (fd, name.to_os_string())))
    }

    /// `lstat` of `path`, resolving its parents without following symlinks. `Ok(None)` when missing.
    pub(crate) fn stat(&self, path: &Path) -> Result<Option<Stat>> {
        let Some((dir, name)) = self.parent(path)? else {
            return Ok(None);
        };
        match fsx::stat_at(dir.as_fd(), &name).map_err(errno) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("inspecting '{}'", self.shown(path).display()))
            }
        }
    }

    /// An `O_PATH` fd on `path` itself (a symlink is refused) with its stat. `Ok(None)` when missing.
    pub(crate) fn leaf(&self, path: &Path) -> Result<Option<(OwnedFd, Stat)>> {
        let Some((dir, name)) = self.parent(path)? else {
            return Ok(None);
        };
        let shown = self.shown(path);
        match open_path_at(dir.as_fd(), &name, &shown)? {
            Some((_, st)) if st.is_symlink() => Err(symlink_refusal(&shown)),
            other => Ok(other),
        }
    }

    /// The target of symlink `path`, or `Ok(None)` when `path` is missing or not a symlink.
    pub(crate) fn read_link(&self, path: &Path) -> Result<Option<PathBuf>> {
        let Some((dir, name)) = self.parent(path)? else {
            return Ok(None);
        };
        match fsx::stat_at(dir.as_fd(), &name).map_err(errno) {
            Ok(st) if st.is_symlink() => {}
            Ok(_) | Err(Errno::NOENT) => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("inspecting '{}'", self.shown(path).display()));
            }
        }
        let link = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())
            .with_context(|| format!("reading the symlink '{}'", self.shown(path).display()))?;
        Ok(Some(PathBuf::from(OsString::from_vec(link.into_bytes()))))
    }

    /// Number of entries in directory `path` (`.` and `..` excluded).
    pub(crate) fn count_entries(&self, path: &Path) -> Result<u64> {
        let fd = self
            .dir(path)?
            .ok_or_else(|| anyhow!("'{}' does not exist", self.shown(path).display()))?;
        fsx::count_names(fd.as_fd())
            .map_err(errno)
            .with_context(|| format!("listing '{}'", self.shown(path).display()))
    }

    /// Creates directory `path` with owner and mode set before anyone else can use it. Returns `true` when
    /// it was created, `false` when a directory was already there (left as it is).
    pub(crate) fn mkdir(&self, path: &Path, owner: Owner) -> Result<bool> {
        let shown = self.shown(path);
        let (dir, name) = self
            .parent(path)?
            .ok_or_else(|| anyhow!("creating '{}': its parent does not exist", shown.display()))?;
        // 0700 until owner and mode are final, so nobody can use a half-made directory.
        let created = match rustix::fs::mkdirat(&dir, &name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(e).with_context(|| format!("creating '{}'", shown.display())),
        };
        let fd = open_dir_at(dir.as_fd(), &name, &shown)?
            .ok_or_else(|| anyhow!("creating '{}': it vanished right after", shown.display()))?;
        if created {
            set_owner_mode_fd(
                &fd,
                Some(owner.uid),
                Some(owner.gid),
                Some(owner.mode),
                &shown,
            )?;
        }
        Ok(created)
    }

    /// Creates an empty regular file at `path` (a bind target) with owner and mode. Returns `false` when a
    /// regular file was already there.
    pub(crate) fn create_file(&self, path: &Path, owner: Owner) -> Result<bool> {
        let shown = self.shown(path);
        let (dir, name) = self
            .parent(path)?
            .ok_or_else(|| anyhow!("creating '{}': its parent does not exist", shown.display()))?;
        match fsx::create_excl_at(dir.as_fd(), &name, 0o600).map_err(errno) {
            Ok(fd) => {
                set_owner_mode_fd(
                    &fd,
                    Some(owner.uid),
                    Some(owner.gid),
                    Some(owner.mode),
                    &shown,
                )?;
                Ok(true)
            }
            Err(Errno::EXIST) => match open_path_at(dir.as_fd(), &name, &shown)? {
                Some((_, st)) if st.is_file() => Ok(false),
                Some((_, st)) if st.is_symlink() => Err(symlink_refusal(&shown)),
                _ => bail!(
                    "creating '{}': something that is not a regular file is in the way",
                    shown.display()
                ),
            },
            Err(e) => Err(e).with_context(|| format!("creating '{}'", shown.display())),
        }
    }

    /// Changes owner and/or mode of the directory or regular file at `path`, never through a symlink, and
    /// never on a file with other hard links (that would change a file elsewhere too).
    pub(crate) fn set_owner_mode(
        &self,
        path: &Path,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<()> {
        let shown = self.shown(path);
        let (dir, name) = self
            .parent(path)?
            .ok_or_else(|| anyhow!("'{}' does not exist", shown.display()))?;
        let (fd, st) = open_path_at(dir.as_fd(), &name, &shown)?
            .ok_or_else(|| anyhow!("'{}' does not exist", shown.display()))?;
        if st.is_symlink() {
            return Err(symlink_refusal(&shown));
        }
        if st.is_dir() {
            let fd = open_dir_at(dir.as_fd(), &name, &shown)?
                .ok_or_else(|| anyhow!("'{}' vanished", shown.display()))?;
            return set_owner_mode_fd(&fd, uid, gid, mode, &shown);
        }
        if !st.is_file() {
            bail!(
                "'{}' is neither a directory nor a regular file",
                shown.display()
            );
        }
        refuse_hard_links(&st, &shown)?;
        // The O_PATH fd pins the inode checked above; chown/chmod act on it, not on whatever the name
        // points at by then.
        if uid.is_some() || gid.is_some() {
            rustix::fs::chownat(
                &fd,
                "",
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::EMPTY_PATH,
            )
            .with_context(|| format!("changing the owner of '{}'", shown.display()))?;
        }
        if let Some(mode) = mode {
            // chmod of an O_PATH fd goes through its /proc path (fchmod refuses O_PATH fds).
            rustix::fs::chmodat(
                CWD,
                fd_path(&fd).as_str(),
                Mode::from_bits_truncate(mode),
                AtFlags::empty(),
            )
            .with_context(|| format!("changing the mode of '{}'", shown.display()))?;
        }
        Ok(())
    }

    /// Opens regular file `path` for reading: no symlink, no other hard link.
    pub(crate) fn open_file_for_copy(&self, path: &Path) -> Result<(std::fs::File, Stat)> {
        let shown = self.shown(path);
        let (dir, name) = self
            .parent(path)?
            .ok_or_else(|| anyhow!("'{}' does not exist", shown.display()))?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir, name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(symlink_refusal(&shown)),
            Err(e) => return Err(e).with_context(|| format!("opening '{}'", shown.display())),
        };
        let st = fsx::stat_fd(fd.as_fd())
            .map_err(errno)
            .with_context(|| format!("inspecting '{}'", shown.display()))?;
        if !st.is_file() {
            bail!("'{}' is not a regular file", shown.display());
        }
        refuse_hard_links(&st, &shown)?;
        Ok((std::fs::File::from(fd), st))
    }

    /// Creates a new regular file at `path` (it must not exist) with `owner`, filled from `content`, synced.
    pub(crate) fn create_file_from(
        &self,
        path: &Path,
        owner: Owner,
        content: &mut impl Read,
    ) -> Result<()> {
        let shown = self.shown(path);
        let (dir, name) = self
            .parent(path)?
            .ok_or_else(|| anyhow!("creating '{}': its parent does not exist", shown.display()))?;
        let fd = fsx::create_excl_at(dir.as_fd(), &name, 0o600)
            .map_err(errno)
            .with_context(|| format!("creating '{}'", shown.display()))?;
        let result = (|| -> Result<()> {
            let mut file =
                std::fs::File::from(fd.try_clone().context("duplicating a file descriptor")?);
            std::io::copy(content, &mut file)
                .with_context(|| format!("writing '{}'", shown.display()))?;
            set_owner_mode_fd(
                &fd,
                Some(owner.uid),
                Some(owner.gid),
                Some(owner.mode),
                &shown,
            )?;
            file.sync_all()
                .with_context(|| format!("syncing '{}'", shown.display()))?;
            rustix::fs::fsync(&dir)
                .with_context(|| format!("syncing the directory of '{}'", shown.display()))
        })();
        if result.is_err() {
            // Leave no half-written source behind: the next run would take it for the real file.
            let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
        }
        result
    }

    /// Creates symlink `path` → `points_to` owned by `uid:gid`. Returns `false` when the same symlink exists.
    pub(crate) fn symlink(
        &self,
        path: &Path,
        points_to: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<bool> {
        let shown = self.shown(path);
        let (dir, name) = self
            .parent(path)?
            .ok_or_else(|| anyhow!("creating '{}': its parent does not exist", shown.display()))?;
        match rustix::fs::symlinkat(points_to, &dir, &name) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return match self.read_link(path)? {
                    Some(t) if t == points_to => Ok(false),
                    Some(t) => bail!(
                        "'{}' is a symlink to '{}', not to '{}': remove it",
                        shown.display(),
                        t.display(),
                        points_to.display()
                    ),
                    None => bail!(
                        "a file already exists at '{}': move it away first",
                        shown.display()
                    ),
                };
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating the symlink '{}'", shown.display()));
            }
        }
        rustix::fs::chownat(
            &dir,
            &name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("changing the owner of the symlink '{}'", shown.display()))?;
        Ok(true)
    }
}

/// A refusal when regular file `st` has other hard links: changing it would change them too.
pub(crate) fn refuse_hard_links(st: &Stat, shown: &Path) -> Result<()> {
    if st.nlink > 1 {
        return Err(hard_link_refusal(shown, st.nlink));
    }
    Ok(())
}

/// The refusal for a file with `nlink` names whose owner, mode or content tabula would change.
pub(crate) fn hard_link_refusal(path: &Path, nlink: u64) -> anyhow::Error {
    anyhow::Error::new(Refusal::new(
        RULE_HARDLINK,
        format!(
            "'{}' has {nlink} hard links: changing it would change a file elsewhere too; replace it with a copy",
            path.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    //! The walker on a plain temporary directory (no root needed): what each call finds or refuses.
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    /// A root with a directory, a file, a symlink and a symlinked directory.
    fn tree() -> (tempfile::TempDir, Walker, Owner) {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path();
        std::fs::create_dir(p.join("d")).expect("mkdir");
        std::fs::write(p.join("d/f"), "hello").expect("write");
        symlink("/etc", p.join("link")).expect("symlink");
        symlink("d", p.join("dlink")).expect("symlink");
        let me = std::fs::metadata(p).expect("stat");
        let owner = Owner {
            uid: me.uid(),
            gid: me.gid(),
            mode: 0o750,
        };
        let w = Walker::open(p).expect("open");
        (t, w, owner)
    }

    fn rule(e: &anyhow::Error) -> Option<&'static str> {
        e.chain()
            .find_map(|c| c.downcast_ref::<Refusal>())
            .map(|r| r.rule)
    }

    #[test]
    fn stat_never_follows_a_symlink() {
        let (_t, w, _) = tree();
        let st = w.stat(Path::new("/d/f")).expect("stat").expect("there");
        assert!(st.is_file() && st.size == 5 && st.nlink == 1);
        assert!(
            w.stat(Path::new("/d"))
                .expect("stat")
                .expect("there")
                .is_dir()
        );
        assert!(
            w.stat(Path::new("/link"))
                .expect("stat")
                .expect("there")
                .is_symlink()
        );
        assert_eq!(w.stat(Path::new("/d/missing")).expect("stat"), None);
        assert_eq!(w.stat(Path::new("/missing/f")).expect("stat"), None);
        let e = w
            .stat(Path::new("/dlink/f"))
            .expect_err("through a symlink");
        assert_eq!(rule(&e), Some(RULE_SYMLINK));
        let e = w.leaf(Path::new("/link")).expect_err("a symlink leaf");
        assert_eq!(rule(&e), Some(RULE_SYMLINK));
        let (_, st) = w.leaf(Path::new("/d/f")).expect("leaf").expect("there");
        assert!(st.is_file());
    }

    #[test]
    fn read_link_and_count_entries() {
        let (t, w, _) = tree();
        assert_eq!(
            w.read_link(Path::new("/link")).expect("readlink"),
            Some(PathBuf::from("/etc"))
        );
        assert_eq!(w.read_link(Path::new("/d/f")).expect("readlink"), None);
        assert_eq!(w.read_link(Path::new("/nothing")).expect("readlink"), None);
        assert_eq!(w.count_entries(Path::new("/")).expect("count"), 3);
        assert_eq!(w.count_entries(Path::new("/d")).expect("count"), 1);
        let e = w.count_entries(Path::new("/dlink")).expect_err("a symlink");
        assert_eq!(rule(&e), Some(RULE_SYMLINK));
        let e = w.count_entries(Path::new("/gone")).expect_err("missing");
        assert_eq!(
            format!("{e:#}"),
            format!("'{}' does not exist", t.path().join("gone").display())
        );
    }

    #[test]
    fn mkdir_and_create_file_set_owner_and_mode_and_refuse_symlinks() {
        let (t, w, owner) = tree();
        assert!(w.mkdir(Path::new("/d/new"), owner).expect("mkdir"));
        let m = std::fs::symlink_metadata(t.path().join("d/new")).expect("stat");
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        assert!(!w.mkdir(Path::new("/d/new"), owner).expect("again"));
        let e = w
            .mkdir(Path::new("/dlink/x"), owner)
            .expect_err("symlinked parent");
        assert_eq!(rule(&e), Some(RULE_SYMLINK));

        let file = Owner {
            mode: 0o640,
            ..owner
        };
        assert!(w.create_file(Path::new("/d/g"), file).expect("create"));
        let m = std::fs::symlink_metadata(t.path().join("d/g")).expect("stat");
        assert!(m.is_file());
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert!(!w.create_file(Path::new("/d/g"), file).expect("again"));
        let e = w
            .create_file(Path::new("/link"), file)
            .expect_err("a symlink");
        assert_eq!(rule(&e), Some(RULE_SYMLINK));
        let e = w
            .create_file(Path::new("/d/new"), file)
            .expect_err("a directory");
        assert!(format!("{e:#}").contains("is not a regular file is in the way"));
    }

    #[test]
    fn set_owner_mode_refuses_symlinks_and_hard_links() {
        let (t, w, owner) = tree();
        w.set_owner_mode(Path::new("/d/f"), Some(owner.uid), None, Some(0o604))
            .expect("file");
        let m = std::fs::symlink_metadata(t.path().join("d/f")).expect("stat");
        assert_eq!(m.permissions().mode() & 0o7777, 0o604);
        w.set_owner_mode(Path::new("/d"), None, Some(owner.gid), Some(0o711))
            .expect("dir");
        let m = std::fs::symlink_metadata(t.path().join("d")).expect("stat");
        assert_eq!(m.permissions().mode() & 0o7777, 0o711);
        let e = w
            .set_owner_mode(Path::new("/link"), None, None, Some(0o600))
            .expect_err("symlink");
        assert_eq!(rule(&e), Some(RULE_SYMLINK));
        std::fs::hard_link(t.path().join("d/f"), t.path().join("f2")).expect("link");
        let e = w
            .set_owner_mode(Path::new("/d/f"), None, None, Some(0o600))
            .expect_err("hard link");
        assert_eq!(rule(&e), Some(RULE_HARDLINK));
        assert_eq!(
            std::fs::symlink_metadata(t.path().join("d/f"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777,
            0o604
        );
        let e = w
            .open_file_for_copy(Path::new("/f2"))
            .expect_err("hard link");
        assert_eq!(rule(&e), Some(RULE_HARDLINK));
    }

    #[test]
    fn copy_in_and_symlink() {
        let (t, w, owner) = tree();
        let (mut src, st) = w.open_file_for_copy(Path::new("/d/f")).expect("open");
        assert_eq!(st.size, 5);
        let file = Owner {
            mode: 0o600,
            ..owner
        };
        w.create_file_from(Path::new("/copy"), file, &mut src)
            .expect("copy");
        assert_eq!(
            std::fs::read(t.path().join("copy")).expect("read"),
            b"hello"
        );
        assert!(
            w.create_file_from(Path::new("/copy"), file, &mut std::io::empty())
                .is_err()
        );
        assert_eq!(
            std::fs::read(t.path().join("copy")).expect("read"),
            b"hello"
        );
        let e = w
            .open_file_for_copy(Path::new("/link"))
            .expect_err("symlink");
        assert_eq!(rule(&e), Some(RULE_SYMLINK));

        let to = Path::new("/d/f");
        assert!(
            w.symlink(Path::new("/s"), to, owner.uid, owner.gid)
                .expect("symlink")
        );
        assert!(
            !w.symlink(Path::new("/s"), to, owner.uid, owner.gid)
                .expect("again")
        );
        let e = w
            .symlink(Path::new("/s"), Path::new("/x"), owner.uid, owner.gid)
            .expect_err("another target");
        assert!(format!("{e:#}").contains("is a symlink to '/d/f', not to '/x'"));
        let e = w
            .symlink(Path::new("/copy"), to, owner.uid, owner.gid)
            .expect_err("a file");
        assert!(format!("{e:#}").contains("a file already exists at"));
    }
}
