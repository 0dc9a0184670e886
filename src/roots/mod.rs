//! Retired roots for people: finding, naming (`-1`, `42`, full names), pinning, and deleting them
//! under the safety rules of DESIGN.md.
//!
//! Every entry of `old_roots` named like a retired root is listed, but only managed ones
//! ([`layout::Standing`]: metadata matching the subvolume, or a retirement the intent proves) count for
//! `-1`, `-2`, …, the `newest` rule and sequence numbers; only roots with matching metadata are pinned,
//! judged by retention or deleted.
//!
//! Deletion is guarded, in this order, each failure its own refusal: the subvolume is directly in the
//! `old_roots` subvolume (by subvolume-id ancestry, never by path); it has tabula's metadata and the
//! metadata's id and uuid match it; it is not pinned and not the newest (unless forced); neither it nor
//! any subvolume nested in it is mounted anywhere or is the default subvolume. Only then is it deleted,
//! children first, and its metadata last, so an interrupted deletion is simply resumed next time.
//!
//! [`prune`] plans and applies `roots prune` (retention decides, the guard vetoes, one commit).

use std::collections::BTreeMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::btrfs::{self, SubvolumeInfo};
use crate::config::Layout;
use crate::error::{Refusal, UsageError};
use crate::layout::{self, RetiredName, RootMeta, RootRef};
use crate::mounted::Mounted;
use crate::retention::Candidate;

pub mod prune;

pub(crate) use crate::mounted::subvolume_tree;

/// Opens the `old_roots` subvolume; refuses (`old-roots-missing`) when there is none.
pub fn open_old_roots(top: BorrowedFd<'_>, layout: &Layout) -> Result<OwnedFd> {
    if layout::entry_at(top, &layout.old_roots)?
        .subvolume()
        .is_none()
    {
        return Err(Refusal::new(
            "old-roots-missing",
            format!(
                "there is no '{}' subvolume: run `tabula init`",
                layout.old_roots
            ),
        )
        .into());
    }
    layout::open_subvolume(top, &layout.old_roots)
}

/// A retired root as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredRoot {
    /// Its name in `old_roots` (with its boot sequence number and retirement time).
    pub name: RetiredName,
    /// Subvolume identity, `None` when the name is not a subvolume.
    pub info: Option<SubvolumeInfo>,
    /// Its metadata, `None` when missing or unreadable.
    pub meta: Option<RootMeta>,
    /// Why the metadata could not be read, if it could not.
    pub meta_error: Option<String>,
    /// Whether tabula manages it (see [`layout::standing`]).
    pub standing: layout::Standing,
}

impl Serialize for RetiredRoot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The JSON of `roots show` keeps `seq` beside `name`.
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a RetiredName,
            seq: u64,
            info: &'a Option<SubvolumeInfo>,
            meta: &'a Option<RootMeta>,
            meta_error: &'a Option<String>,
            standing: &'a layout::Standing,
        }
        Json {
            name: &self.name,
            seq: self.name.seq(),
            info: &self.info,
            meta: &self.meta,
            meta_error: &self.meta_error,
            standing: &self.standing,
        }
        .serialize(s)
    }
}

impl RetiredRoot {
    /// Boot sequence number.
    pub fn seq(&self) -> u64 {
        self.name.seq()
    }

    /// Whether tabula retired it and its metadata is complete: metadata present and matching the subvolume.
    pub fn is_ours(&self) -> bool {
        matches!((&self.info, &self.meta), (Some(i), Some(m)) if i.id == m.subvolume_id && i.uuid == m.uuid)
    }

    /// Whether tabula manages it: [`RetiredRoot::is_ours`], or a retirement the intent proves but whose
    /// metadata is not written yet. Only these count for `newest`, `-1` and sequence numbers.
    pub fn managed(&self) -> bool {
        self.standing.is_ours()
    }

    /// Pinned by the user.
    pub fn pinned(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.pinned)
    }
}

/// Every retired root in `old_roots`, oldest first (by sequence number).
pub fn list(old_roots: BorrowedFd<'_>) -> Result<Vec<RetiredRoot>> {
    let intent = layout::read_intent(old_roots).unwrap_or_else(|e| {
        tracing::warn!("{e:#}: ignoring it");
        None
    });
    let mut out = Vec::new();
    for name in layout::retired_names(old_roots)? {
        let info = layout::entry_at(old_roots, &name)?.subvolume().cloned();
        let read = layout::read_meta(old_roots, &name).map_err(|e| format!("{e:#}"));
        let standing = layout::standing(&name, info.as_ref(), &read, intent.as_ref());
        let (meta, meta_error) = match read {
            Ok(m) => (m, None),
            Err(e) => (None, Some(e)),
        };
        out.push(RetiredRoot {
            name,
            info,
            meta,
            meta_error,
            standing,
        });
    }
    Ok(out)
}

/// Picks the retired root `r` names.
pub fn resolve<'a>(roots: &'a [RetiredRoot], r: &str) -> Result<&'a RetiredRoot> {
    let rr = RootRef::parse(r).map_err(UsageError)?;
    if matches!(rr, RootRef::Blank | RootRef::Current) {
        return Err(UsageError(format!(
            "'{r}' is not a retired root: name one with -1, a sequence number or a full name"
        ))
        .into());
    }
    // `-1`, `-2`, … count managed roots only: a stray entry named like a root never becomes "last boot's".
    let names: Vec<RetiredName> = roots
        .iter()
        .filter(|x| !matches!(rr, RootRef::Back(_)) || x.managed())
        .map(|x| x.name.clone())
        .collect();
    let picked = rr.pick(&names).ok_or_else(|| {
        UsageError(format!(
            "no retired root '{r}' ({} retired roots exist; see `tabula roots list`)",
            roots.len()
        ))
    })?;
    roots
        .iter()
        .find(|x| x.name == *picked)
        .ok_or_else(|| UsageError(format!("no retired root '{r}'")).into())
}

/// Rewrites a retired root's metadata with `pinned` (and a note, when given).
pub fn set_pinned(
    old_roots: BorrowedFd<'_>,
    root: &RetiredRoot,
    pinned: bool,
    note: Option<&str>,
) -> Result<()> {
    let (Some(meta), true) = (&root.meta, root.is_ours()) else {
        return Err(Refusal::new(
            "no-metadata",
            format!(
                "'{}' has no matching tabula metadata: tabula did not retire it (or cannot read what it wrote) \
                 and never writes to it",
                root.name
            ),
        )
        .into());
    };
    let mut meta = meta.clone();
    meta.pinned = pinned;
    if let Some(n) = note {
        meta.note = Some(n.to_string());
    }
    layout::write_meta(old_roots, &meta)
}

/// What the deletion guard needs to know about the filesystem, gathered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Id of the `old_roots` subvolume.
    pub old_roots_id: u64,
    /// The default subvolume's id.
    pub default_id: u64,
    /// Subvolumes of this filesystem mounted in any mount namespace on the machine.
    pub mounted: Mounted,
    /// Sequence number of the newest managed retired root.
    pub newest_seq: Option<u64>,
    /// The subvolume tree (ids, the root's own first) of each root tabula may delete (metadata matching
    /// a subvolume directly in `old_roots`), or why it could not be listed.
    pub trees: BTreeMap<RetiredName, Result<Vec<u64>, String>>,
}

impl Guard {
    /// Gathers the facts once for any number of deletions: `mounted` is the scan of every mount
    /// namespace (see [`crate::mounted`]), taken once by the caller.
    pub fn gather(
        top: BorrowedFd<'_>,
        old_roots: BorrowedFd<'_>,
        mounted: Mounted,
        roots: &[RetiredRoot],
    ) -> Result<Guard> {
        let old_roots_id = btrfs::subvolume_info(old_roots)?.id;
        let trees = roots
            .iter()
            .filter(|r| r.is_ours())
            .filter_map(|r| Some((r, r.info.as_ref()?)))
            .filter(|(_, i)| i.parent_id == old_roots_id)
            .map(|(r, i)| {
                let tree = subvolume_tree(old_roots, &r.name, i.id).map_err(|e| format!("{e:#}"));
                (r.name.clone(), tree)
            })
            .collect();
        Ok(Guard {
            old_roots_id,
            default_id: btrfs::default_subvolume_id(top)?,
            mounted,
            newest_seq: roots.iter().filter(|r| r.managed()).map(|r| r.seq()).max(),
            trees,
        })
    }

    /// Refuses deleting `root` unless every rule allows it; returns the ids of its subvolume tree.
    /// `force` overrides only the pinned and newest rules. Pure: it judges the facts [`Guard::gather`]
    /// read.
    pub fn check(&self, root: &RetiredRoot, force: bool) -> Result<Vec<u64>, Refusal> {
        let name = &root.name;
        let Some(info) = &root.info else {
            return Err(Refusal::new(
                "not-subvolume",
                format!("'{name}' is not a subvolume"),
            ));
        };
        if info.parent_id != self.old_roots_id {
            return Err(Refusal::new(
                "not-under-old-roots",
                format!(
                    "'{name}' is not a subvolume directly inside 'old_roots' (its parent is subvolume {})",
                    info.parent_id
                ),
            ));
        }
        let Some(meta) = &root.meta else {
            return Err(Refusal::new(
                "no-metadata",
                format!(
                    "'{name}' has no tabula metadata: it was not retired by tabula, so tabula never deletes it"
                ),
            ));
        };
        if meta.subvolume_id != info.id || meta.uuid != info.uuid {
            return Err(Refusal::new(
                "identity-mismatch",
                format!(
                    "'{name}' is subvolume {} ({}) but its metadata records {} ({}): not the root tabula retired",
                    info.id, info.uuid, meta.subvolume_id, meta.uuid
                ),
            ));
        }
        if meta.pinned && !force {
            return Err(Refusal::new(
                "pinned",
                format!("'{name}' is pinned: `tabula roots unpin` it first, or pass --force"),
            ));
        }
        if Some(root.seq()) == self.newest_seq && !force {
            return Err(Refusal::new(
                "newest",
                format!(
                    "'{name}' is the newest retired root (last boot's): pass --force to delete it anyway"
                ),
            ));
        }
        let ids = match self.trees.get(name) {
            Some(Ok(ids)) => ids.clone(),
            Some(Err(e)) => {
                return Err(Refusal::new(
                    "unreadable",
                    format!("listing the subvolumes inside '{name}': {e}"),
                ));
            }
            None => {
                return Err(Refusal::new(
                    "unreadable",
                    format!("the subvolumes inside '{name}' were not listed"),
                ));
            }
        };
        if let Some((id, place)) = self.mounted.find(&ids) {
            return Err(Refusal::new(
                "mounted",
                format!(
                    "'{name}' (subvolume {id} in it) is mounted at {place}: unmount it first (`tabula roots umount {name}`)"
                ),
            ));
        }
        if ids.contains(&self.default_id) {
            return Err(Refusal::new(
                "default-subvolume",
                format!(
                    "'{name}' holds the filesystem's default subvolume ({}): change it with `btrfs subvolume set-default`",
                    self.default_id
                ),
            ));
        }
        Ok(ids)
    }
}

/// Deletes a retired root that passed [`Guard::check`]: its subvolume tree children first (making
/// read-only subvolumes in it writable where needed, except received ones), then its metadata, then the
/// qgroups of what was deleted (when quotas are on). Returns the ids of the subvolumes deleted.
pub fn delete(
    old_roots: BorrowedFd<'_>,
    root: &RetiredRoot,
    on_delete: &mut dyn FnMut(&Path),
) -> Result<Vec<u64>> {
    let ids = btrfs::delete_subvolume_recursive(
        old_roots,
        &root.name,
        &|i: &SubvolumeInfo| i.received_uuid.is_none(),
        on_delete,
    )
    .with_context(|| format!("deleting retired root '{}'", root.name))?;
    // The commit makes the unlink durable too: no fsync of its own.
    layout::remove_meta_unsynced(old_roots, &root.name)?;
    btrfs::sync(old_roots).context("committing the deletion")?;
    if let Err(e) = btrfs::remove_qgroups(old_roots, &ids, CLEANER_WAIT) {
        // The root is gone; a stale qgroup is only clutter (`btrfs qgroup clear-stale`).
        tracing::warn!("deleted '{}', but {e}", root.name);
    }
    Ok(ids)
}

/// How long to wait for the kernel's cleaner to drop one deleted root (its space, its qgroups).
pub const CLEANER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Retention candidates: the roots tabula retired (others are never judged, never deleted).
pub fn candidates(roots: &[RetiredRoot]) -> Vec<Candidate> {
    roots
        .iter()
        .filter(|r| r.is_ours())
        .filter_map(|r| {
            let m = r.meta.as_ref()?;
            Some(Candidate {
                seq: r.seq(),
                name: r.name.to_string(),
                retired_at: m.retired_at,
                clock_trusted: m.clock_trusted,
                pinned: m.pinned,
            })
        })
        .collect()
}

/// Sequence numbers of the roots whose clock retention finds out of step with the neighbouring roots
/// (so that `roots list` marks what prune will not judge by time).
pub fn clocks_out_of_step(
    roots: &[RetiredRoot],
    now: chrono::DateTime<chrono::Utc>,
) -> std::collections::BTreeSet<u64> {
    crate::retention::plan(
        &candidates(roots),
        &crate::retention::Policy::default(),
        now,
    )
    .roots
    .iter()
    .filter(|p| p.clock == crate::retention::Clock::OutOfStep)
    .map(|p| p.seq)
    .collect()
}

/// Where `roots mount` puts a root unless told otherwise.
pub const MOUNT_BASE: &str = "/run/tabula/roots";

/// The directory `roots mount` uses for `root` by default.
pub fn default_mount_point(root: &RetiredName) -> PathBuf {
    Path::new(MOUNT_BASE).join(root.as_str())
}

/// What `roots umount` may unmount at `dir`: only what `roots mount` made, a btrfs mount (the last one
/// on `dir` in `mounts`) whose root is inside the `old_roots` subvolume (named `old_roots`). Refuses
/// (`not-a-retired-root-mount`) anything else, and says so when nothing is mounted there.
pub fn check_umount(mounts: &[crate::mountinfo::Mount], dir: &Path, old_roots: &str) -> Result<()> {
    let prefix = format!("/{old_roots}/");
    match mounts.iter().rev().find(|m| m.mount_point == dir) {
        Some(m) if m.fs_type == "btrfs" && m.root.starts_with(&prefix) => Ok(()),
        Some(_) => Err(Refusal::new(
            "not-a-retired-root-mount",
            format!(
                "'{}' is not a retired root mounted by `tabula roots mount`: left alone",
                dir.display()
            ),
        )
        .into()),
        None => Err(UsageError(format!("nothing is mounted on '{}'", dir.display())).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umount_only_what_roots_mount_made() {
        let mounts = crate::mountinfo::parse(
            "30 1 0:47 /old_roots/00001-2026-01-01T000000Z /run/tabula/roots/a ro - btrfs /dev/vda ro,subvolid=300\n\
             31 1 0:47 /persist /run/tabula/roots/b rw - btrfs /dev/vda rw,subvolid=258\n\
             32 1 0:50 /old_roots/x /run/tabula/roots/c rw - ext4 /dev/vdb rw\n",
        );
        let at = |d: &str| check_umount(&mounts, Path::new(d), "old_roots");
        assert!(at("/run/tabula/roots/a").is_ok());
        for (dir, rule) in [
            ("/run/tabula/roots/b", Some("not-a-retired-root-mount")),
            ("/run/tabula/roots/c", Some("not-a-retired-root-mount")),
            ("/run/tabula/roots/d", None),
        ] {
            let e = at(dir).unwrap_err();
            assert_eq!(e.downcast_ref::<Refusal>().map(|r| r.rule), rule, "{dir}");
            if rule.is_none() {
                assert!(e.downcast_ref::<UsageError>().is_some(), "{dir}");
            }
        }
    }
}
