//! `tabula orphans`: data in persistent storage that no allowlist entry covers any more.
//!
//! The persistent subvolume is walked from its top, fd-relative, never following a symlink and never
//! leaving its filesystem (a nested subvolume or mount point is reported, not entered). A path is
//! *covered* when it is an entry's source or beneath one, an *ancestor* when an entry's source is
//! beneath it (walked into, not reported), and an *orphan* otherwise: reported once with the objects
//! and bytes beneath it and its newest modification time, at the level `tabula advise` groups at
//! (`/var/lib/<name>`, a dotfile in a home: containers such as `/var/lib` are walked into, and
//! reported only when empty). Nothing is ever changed.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Persist;
use crate::diff;
use crate::fsx::{self, Stat};

/// What a path in persistent storage is to the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// An entry's source, or beneath one.
    Covered,
    /// Holds an entry's source beneath it.
    Ancestor,
    /// Neither: nothing mounts it any more.
    Orphan,
}

/// How `path` (absolute, in the root's terms: `/var/lib/x` for `<persist>/var/lib/x`) relates to the
/// allowlist `targets`.
pub fn classify(path: &Path, targets: &[PathBuf]) -> Status {
    if targets.iter().any(|t| path.starts_with(t)) {
        Status::Covered
    } else if targets.iter().any(|t| t.starts_with(path)) {
        Status::Ancestor
    } else {
        Status::Orphan
    }
}

/// One orphan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// The path it would have in the root (`/var/lib/old`).
    #[serde(serialize_with = "diff::serialize_path")]
    pub path: PathBuf,
    /// Where it is on the running system (`/persist/var/lib/old`).
    #[serde(serialize_with = "diff::serialize_path")]
    pub source: PathBuf,
    /// `file`, `dir`, `symlink`, …
    #[serde(rename = "type")]
    pub file_type: &'static str,
    /// Objects: itself and everything beneath it.
    pub objects: u64,
    /// Bytes of the regular files (apparent size) it holds.
    pub bytes: u64,
    /// The newest modification time of anything in it.
    pub modified: Option<DateTime<Utc>>,
    /// A nested subvolume or mount point: not looked into.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub other_fs: bool,
    /// What could not be read beneath it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Everything found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where persistent storage is mounted on the running system.
    #[serde(serialize_with = "diff::serialize_path")]
    pub persist_path: PathBuf,
    /// The orphans, in path order.
    pub orphans: Vec<Orphan>,
    /// Sum of their bytes.
    pub total_bytes: u64,
}

fn type_name(st: &Stat) -> &'static str {
    diff::FileType::from_mode(st.mode).map_or("unknown", diff::FileType::name)
}

fn mtime(st: &Stat) -> i64 {
    st.mtime.0
}

/// Whether `st` is on another filesystem or mount than `top` (a nested subvolume, a mount point):
/// reported, never entered.
fn elsewhere(st: &Stat, top: &Stat) -> bool {
    st.dev != top.dev || st.mnt_id != top.mnt_id
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> fsx::Result<OwnedFd> {
    fsx::open_dir_beneath(dir, Path::new(name))
}

fn names(dir: BorrowedFd<'_>) -> fsx::Result<Vec<std::ffi::OsString>> {
    fsx::read_names(dir)
}

/// Walks the persistent storage open at `top` (its root directory) and reports the orphans.
pub fn find(top: BorrowedFd<'_>, persist: &Persist) -> Result<Report> {
    let targets: Vec<PathBuf> = persist.entries().iter().map(|e| e.target()).collect();
    let root_st = fsx::stat_fd(top).context("reading persistent storage")?;
    let mut orphans = Vec::new();
    // (directory fd, its path in the root's terms, whether it is an orphan container) still to list:
    // ancestors of entries, and orphan directories above the advisor's group level (`/var/lib`,
    // a home), so that orphans are named at the level they were persisted at.
    let mut stack: Vec<(OwnedFd, PathBuf, Option<Stat>)> = vec![(
        open_dir_at(top, OsStr::new(".")).context("opening persistent storage")?,
        PathBuf::from("/"),
        None,
    )];
    while let Some((fd, path, container)) = stack.pop() {
        let list = names(fd.as_fd())
            .with_context(|| format!("listing '{}' in persistent storage", path.display()))?;
        if let (Some(st), true) = (container, list.is_empty()) {
            // An empty leftover directory: its parent holds no entry either.
            orphans.push(measure(
                fd.as_fd(),
                OsStr::new("."),
                &st,
                path,
                &root_st,
                persist,
            ));
            continue;
        }
        for n in list.into_iter().rev() {
            let name = n.as_os_str();
            let child = path.join(name);
            let st = fsx::stat_at(fd.as_fd(), name)
                .with_context(|| format!("reading '{}' in persistent storage", child.display()))?;
            let plain_dir = st.is_dir() && !elsewhere(&st, &root_st);
            let descend = match classify(&child, &targets) {
                Status::Covered => continue,
                Status::Ancestor if plain_dir => Some(None),
                Status::Orphan
                    if plain_dir && crate::advise::group_of(&child, true, persist).is_none() =>
                {
                    Some(Some(st))
                }
                // An entry's parent that is not a plain directory here is reported too: `tabula
                // persist` refuses it, and the user should see it.
                Status::Ancestor | Status::Orphan => None,
            };
            match descend {
                Some(container) => {
                    let sub = open_dir_at(fd.as_fd(), name).with_context(|| {
                        format!("opening '{}' in persistent storage", child.display())
                    })?;
                    stack.push((sub, child, container));
                }
                None => orphans.push(measure(fd.as_fd(), name, &st, child, &root_st, persist)),
            }
        }
    }
    orphans.sort_by(|a, b| a.path.cmp(&b.path));
    let total_bytes = orphans.iter().map(|o| o.bytes).sum();
    Ok(Report {
        persist_path: persist.path.clone(),
        orphans,
        total_bytes,
    })
}

/// Sizes one orphan: objects, bytes and newest mtime beneath it (iteratively, same filesystem only).
fn measure(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
    path: PathBuf,
    top: &Stat,
    persist: &Persist,
) -> Orphan {
    let mut o = Orphan {
        source: persist.source_of(&path),
        path,
        file_type: type_name(st),
        objects: 1,
        bytes: if st.is_file() { st.size } else { 0 },
        modified: None,
        other_fs: elsewhere(st, top),
        errors: Vec::new(),
    };
    let mut newest = mtime(st);
    if st.is_dir() && !o.other_fs {
        let mut seen_inodes = std::collections::HashSet::new();
        let mut stack: Vec<(OwnedFd, PathBuf)> = Vec::new();
        match open_dir_at(parent, name) {
            Ok(fd) => stack.push((fd, o.path.clone())),
            Err(e) => o.errors.push(format!("{}: {e}", o.path.display())),
        }
        while let Some((fd, p)) = stack.pop() {
            let list = match names(fd.as_fd()) {
                Ok(l) => l,
                Err(e) => {
                    o.errors.push(format!("{}: {e}", p.display()));
                    continue;
                }
            };
            for n in list {
                let name = n.as_os_str();
                let Ok(cst) = fsx::stat_at(fd.as_fd(), name) else {
                    o.errors
                        .push(format!("{}: unreadable", p.join(name).display()));
                    continue;
                };
                o.objects += 1;
                newest = newest.max(mtime(&cst));
                if elsewhere(&cst, top) {
                    continue;
                }
                if cst.is_dir() {
                    match open_dir_at(fd.as_fd(), name) {
                        Ok(sub) => stack.push((sub, p.join(name))),
                        Err(e) => o.errors.push(format!("{}: {e}", p.join(name).display())),
                    }
                } else if cst.is_file() && (cst.nlink <= 1 || seen_inodes.insert(cst.ino)) {
                    o.bytes += cst.size;
                }
            }
        }
    }
    o.modified = DateTime::from_timestamp(newest, 0);
    o
}

/// The report for people.
pub fn render_text(r: &Report) -> String {
    if r.orphans.is_empty() {
        return format!(
            "No orphans: everything in persistent storage ({}) is covered by the allowlist.\n",
            r.persist_path.display()
        );
    }
    let mut out = format!(
        "In persistent storage ({}) but covered by no allowlist entry ({} in all); tabula never deletes \
         these:\n\n",
        r.persist_path.display(),
        diff::format_bytes(r.total_bytes)
    );
    out.push_str(&format!(
        "  {:>10}  {:>8}  {:<20}  {}\n",
        "SIZE", "OBJECTS", "MODIFIED", "PATH"
    ));
    for o in &r.orphans {
        let mut p = diff::escape_bytes(o.source.as_os_str().as_bytes());
        if o.file_type == "dir" {
            p.push('/');
        }
        if o.other_fs {
            p.push_str("  (another subvolume or mount: not looked into)");
        }
        out.push_str(&format!(
            "  {:>10}  {:>8}  {:<20}  {}\n",
            diff::format_bytes(o.bytes),
            o.objects,
            o.modified
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
            p
        ));
        for e in &o.errors {
            out.push_str(&format!("      could not read {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let t = vec![PathBuf::from("/var/lib/foo"), PathBuf::from("/home/a/.ssh")];
        assert_eq!(classify(Path::new("/var"), &t), Status::Ancestor);
        assert_eq!(classify(Path::new("/var/lib"), &t), Status::Ancestor);
        assert_eq!(classify(Path::new("/var/lib/foo"), &t), Status::Covered);
        assert_eq!(classify(Path::new("/var/lib/foo/x"), &t), Status::Covered);
        assert_eq!(classify(Path::new("/var/lib/food"), &t), Status::Orphan);
        assert_eq!(classify(Path::new("/home/a/.gnupg"), &t), Status::Orphan);
        assert_eq!(classify(Path::new("/etc"), &t), Status::Orphan);
    }
}
