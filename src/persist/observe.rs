//! Observing: what the new root and persistent storage hold for each allowlist entry, as plain data.
//!
//! [`observe`] only reads (through [`super::walk`], never following a symlink) and decides nothing: the
//! rules live in [`super::plan::plan_observed`], a pure function of an [`Observed`], so each of them is a
//! unit test without a disk. Observation is lazy in the same way the rules are: a chain of path
//! components stops at the first one that is not a directory (what lies below cannot matter), and the
//! extra reads (entries under a target, a symlink's text, a copy's content) happen only where a rule
//! looks at them, so a persist run costs no more syscalls than deciding while walking did.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::plan::parents_of;
use super::walk::{Owner, Walker};
use super::{How, Kind, mountinfo};
use crate::config::{Config, EntryRef};
use crate::error::Refusal;
use crate::users::Resolver;

/// A user or group name resolved to its id, or why not.
pub type Lookup = Result<u32, String>;

/// The type of a file, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symlink (never followed).
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// One `lstat` result, reduced to what the rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// File type.
    pub file_type: FileType,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Device (with `ino`: the same file seen twice, as a bind mount shows it).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Stat {
    /// The plain data of a stat result.
    pub(crate) fn of(st: &crate::fsx::Stat) -> Stat {
        let owner = Owner::of(st);
        Stat {
            file_type: if st.is_dir() {
                FileType::Directory
            } else if st.is_file() {
                FileType::File
            } else if st.is_symlink() {
                FileType::Symlink
            } else {
                FileType::Other
            },
            uid: owner.uid,
            gid: owner.gid,
            mode: owner.mode,
            dev: st.dev,
            ino: st.ino,
            nlink: st.nlink,
            size: st.size,
        }
    }

    /// Owner and permission bits.
    pub(crate) fn owner(&self) -> Owner {
        Owner {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
        }
    }

    /// Whether both are the same file (same device and inode).
    pub fn same_file(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.file_type == FileType::File
    }

    /// A symlink.
    pub fn is_symlink(&self) -> bool {
        self.file_type == FileType::Symlink
    }

    /// Whether this is what an entry of `kind` needs (a directory or a regular file).
    pub fn is_kind(&self, kind: Kind) -> bool {
        match kind {
            Kind::Directory => self.is_dir(),
            Kind::File => self.is_file(),
        }
    }
}

/// An error met while observing, kept as data: the entry it belongs to fails (or is refused, with
/// `rule`), the others go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The refusal rule, when a safety rule said no (a symlink on the way).
    pub rule: Option<&'static str>,
    /// The whole message (`{err:#}`).
    pub message: String,
}

impl Failure {
    /// The failure an error stands for: refused when a [`Refusal`] is in its chain.
    pub fn of(err: &anyhow::Error) -> Failure {
        Failure {
            rule: err
                .chain()
                .find_map(|c| c.downcast_ref::<Refusal>())
                .map(|r| r.rule),
            message: format!("{err:#}"),
        }
    }

    /// A plain failure (no safety rule involved).
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure {
            rule: None,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Failure {
        Failure::of(&err)
    }
}

/// What one path looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Nothing there.
    Missing,
    /// Something, not followed if it is a symlink.
    Found(Stat),
    /// It could not be inspected (a symlink or a non-directory on the way, an I/O error).
    Failed(Failure),
}

impl Probe {
    fn of(r: Result<Option<crate::fsx::Stat>>) -> Probe {
        match r {
            Ok(Some(st)) => Probe::Found(Stat::of(&st)),
            Ok(None) => Probe::Missing,
            Err(e) => Probe::Failed(Failure::of(&e)),
        }
    }

    /// The stat, when something is there.
    pub fn found(&self) -> Option<&Stat> {
        match self {
            Probe::Found(st) => Some(st),
            _ => None,
        }
    }
}

/// What is there for one allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedEntry {
    /// The source side, component by component: the source paths of the target's parent directories,
    /// outermost first, then the source itself. It ends at the first probe that is not a directory, so
    /// a chain shorter than the parents plus one means that probe is what stopped it.
    pub source_chain: Vec<Probe>,
    /// The target side in the root, in the same form: the parents, then the target.
    pub target_chain: Vec<Probe>,
    /// Whether the target is a mount point (`None`: the mount table could not be read).
    pub target_is_mount: Option<bool>,
    /// Entries in the target directory, read only for a bind-mounted directory that is not mounted yet.
    pub target_entries: Option<Result<u64, Failure>>,
    /// What a symlink at the target points to, read only for `how = "symlink"`.
    pub target_link: Option<Result<Option<PathBuf>, Failure>>,
    /// For `how = "copy"` with a regular file on both sides: whether the target equals the source
    /// (owner, mode, content).
    pub copy_current: Option<Result<bool, Failure>>,
    /// The entry's `user = ...`, resolved.
    pub explicit_uid: Option<Lookup>,
    /// The entry's `group = ...`, resolved.
    pub explicit_gid: Option<Lookup>,
}

impl ObservedEntry {
    /// The source, when the whole chain up to it was observed.
    pub fn source(&self, parents: usize) -> Option<&Probe> {
        self.source_chain.get(parents)
    }

    /// The target, when the whole chain up to it was observed.
    pub fn target(&self, parents: usize) -> Option<&Probe> {
        self.target_chain.get(parents)
    }
}

/// Persistent storage as found in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistDir {
    /// Its mount id: another mount's than the root's when something is mounted there. (Not the device:
    /// a nested btrfs subvolume has a device number of its own but is no mount.)
    pub mnt_id: u64,
    /// Whether it is in the mount table (`None`: the table could not be read).
    pub is_mount: Option<bool>,
}

/// Everything the persist rules look at, for every entry of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The root as given (`/sysroot`), for messages.
    pub root: PathBuf,
    /// Whether this is the running system (the root is `/`): a copy's live file is then the newer one.
    pub running: bool,
    /// Mount id of the root directory.
    pub root_mnt_id: u64,
    /// The persistent storage directory, `None` when it does not exist.
    pub persist_dir: Option<PersistDir>,
    /// `[[persist.users]]` by name: uid and primary gid, or why not.
    pub accounts: BTreeMap<String, Result<(u32, u32), String>>,
    /// Per entry of `config.persist.entries()`, in that order.
    pub entries: Vec<ObservedEntry>,
}

impl Observed {
    /// `path` (absolute inside the root) as seen from outside, for messages.
    pub fn shown(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// The root, its mount table and its users: what observing needs open.
pub(crate) struct Eyes {
    pub walker: Walker,
    pub root_canon: PathBuf,
    pub mounts: Option<HashSet<PathBuf>>,
    pub resolver: Resolver,
}

impl Eyes {
    pub(crate) fn open(config: &Config, root: &Path) -> Result<Eyes> {
        let walker = Walker::open(root)?;
        let root_canon = std::fs::canonicalize(root)
            .with_context(|| format!("resolving the root directory '{}'", root.display()))?;
        let mounts = match mountinfo::mount_points() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("reading the mount table: {e}; is /proc mounted?");
                None
            }
        };
        let resolver = Resolver::for_root(root, &config.persist);
        Ok(Eyes {
            walker,
            root_canon,
            mounts,
            resolver,
        })
    }

    /// Whether `path` (inside the root) is a mount point; `None` when the mount table is unreadable.
    pub(crate) fn is_mount_point(&self, path: &Path) -> Option<bool> {
        let full = self.root_canon.join(path.strip_prefix("/").unwrap_or(path));
        self.mounts.as_ref().map(|m| m.contains(&full))
    }

    /// `[[persist.users]]` resolved.
    pub(crate) fn accounts(&self, config: &Config) -> BTreeMap<String, Result<(u32, u32), String>> {
        config
            .persist
            .users
            .iter()
            .map(|u| (u.name.clone(), self.resolver.account(u)))
            .collect()
    }

    /// The `user`/`group` an entry names, resolved.
    pub(crate) fn explicit(&self, e: &EntryRef<'_>) -> (Option<Lookup>, Option<Lookup>) {
        (
            e.entry.user.as_ref().map(|s| self.resolver.uid(s)),
            e.entry.group.as_ref().map(|s| self.resolver.gid(s)),
        )
    }

    /// `paths` one by one with `lstat`, stopping after the first that is not a directory.
    fn chain(&self, paths: impl Iterator<Item = PathBuf>) -> Vec<Probe> {
        let mut out = Vec::new();
        for p in paths {
            let probe = Probe::of(self.walker.stat(&p));
            let go_on = probe.found().is_some_and(Stat::is_dir);
            out.push(probe);
            if !go_on {
                break;
            }
        }
        out
    }
}

/// Observes every entry of `config` in the root `root` (`/sysroot`, or `/` on a running system). Fails
/// only when the root itself cannot be opened, or persistent storage cannot be inspected.
pub fn observe(config: &Config, root: &Path) -> Result<Observed> {
    let eyes = Eyes::open(config, root)?;
    let w = &eyes.walker;
    let persist = &config.persist.path;
    let persist_dir = match w.dir(persist)? {
        None => None,
        Some(fd) => {
            let mnt_id = crate::fsx::mount_id(fd.as_fd())
                .with_context(|| format!("inspecting '{}'", w.shown(persist).display()))?;
            Some(PersistDir {
                mnt_id,
                is_mount: eyes.is_mount_point(persist),
            })
        }
    };
    let root_mnt_id = crate::fsx::mount_id(w.root_fd()).context("inspecting the root directory")?;
    let entries = config
        .persist
        .entries()
        .iter()
        .map(|e| observe_entry(&eyes, config, e))
        .collect();
    Ok(Observed {
        root: root.to_path_buf(),
        running: eyes.root_canon == Path::new("/"),
        root_mnt_id,
        persist_dir,
        accounts: eyes.accounts(config),
        entries,
    })
}

pub(crate) fn observe_entry(eyes: &Eyes, config: &Config, e: &EntryRef<'_>) -> ObservedEntry {
    let w = &eyes.walker;
    let target = e.target();
    let source = config.persist.source_of(&target);
    let parents = parents_of(&target);
    let n = parents.len();
    let source_chain = eyes.chain(
        parents
            .iter()
            .map(|p| config.persist.source_of(p))
            .chain(std::iter::once(source.clone())),
    );
    let target_chain = eyes.chain(
        parents
            .iter()
            .cloned()
            .chain(std::iter::once(target.clone())),
    );
    let src = source_chain.get(n).and_then(Probe::found).copied();
    let tgt = target_chain.get(n).and_then(Probe::found).copied();
    let target_is_mount = eyes.is_mount_point(&target);
    let not_mounted = target_is_mount != Some(true);
    let how = e.entry.how;
    let target_entries = match tgt {
        Some(t)
            if how == How::Bind
                && e.kind == Kind::Directory
                && t.is_dir()
                && not_mounted
                && !src.is_some_and(|s| s.same_file(&t)) =>
        {
            Some(w.count_entries(&target).map_err(Failure::from))
        }
        _ => None,
    };
    let target_link = match tgt {
        Some(t) if how == How::Symlink && t.is_symlink() => {
            Some(w.read_link(&target).map_err(Failure::from))
        }
        _ => None,
    };
    let copy_current = match (src, tgt) {
        (Some(s), Some(t)) if how == How::Copy && s.is_file() && t.is_file() => {
            Some(super::copy::is_current(w, &source, &target).map_err(Failure::from))
        }
        _ => None,
    };
    let (explicit_uid, explicit_gid) = eyes.explicit(e);
    ObservedEntry {
        source_chain,
        target_chain,
        target_is_mount,
        target_entries,
        target_link,
        copy_current,
        explicit_uid,
        explicit_gid,
    }
}
