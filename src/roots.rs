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

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::btrfs::{self, SubvolumeInfo};
use crate::error::{Refusal, UsageError};
use crate::layout::{self, RetiredName, RootMeta, RootRef};
use crate::mounted::Mounted;
use crate::retention::{self, Candidate, Policy, RetentionPlan};

/// A retired root as found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetiredRoot {
    /// Its name in `old_roots`.
    pub name: String,
    /// Boot sequence number.
    pub seq: u64,
    /// Subvolume identity, `None` when the name is not a subvolume.
    pub info: Option<SubvolumeInfo>,
    /// Its metadata, `None` when missing or unreadable.
    pub meta: Option<RootMeta>,
    /// Why the metadata could not be read, if it could not.
    pub meta_error: Option<String>,
    /// Whether tabula manages it (see [`layout::standing`]).
    pub standing: layout::Standing,
}

impl RetiredRoot {
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
    for n in layout::retired_names(old_roots)? {
        let name = n.to_string();
        let info = layout::entry_at(old_roots, &name)?.subvolume().cloned();
        let read = layout::read_meta(old_roots, &name).map_err(|e| format!("{e:#}"));
        let standing = layout::standing(&name, info.as_ref(), &read, intent.as_ref());
        let (meta, meta_error) = match read {
            Ok(m) => (m, None),
            Err(e) => (None, Some(e)),
        };
        out.push(RetiredRoot {
            name,
            seq: n.seq,
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
        .filter_map(|x| RetiredName::parse(&x.name))
        .collect();
    let picked = rr.pick(&names).ok_or_else(|| {
        UsageError(format!(
            "no retired root '{r}' ({} retired roots exist; see `tabula roots list`)",
            roots.len()
        ))
    })?;
    let name = picked.to_string();
    roots
        .iter()
        .find(|x| x.name == name)
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
}

impl Guard {
    /// Gathers the facts, including the mounts of every mount namespace (see [`crate::mounted`]);
    /// `device` is the one `top` was opened from.
    pub fn gather(
        top: BorrowedFd<'_>,
        old_roots: BorrowedFd<'_>,
        device: &Path,
        roots: &[RetiredRoot],
    ) -> Result<Guard> {
        Ok(Guard {
            old_roots_id: btrfs::subvolume_info(old_roots)?.id,
            default_id: btrfs::default_subvolume_id(top)?,
            mounted: Mounted::scan(top, device)?,
            newest_seq: roots.iter().filter(|r| r.managed()).map(|r| r.seq).max(),
        })
    }

    /// Refuses deleting `root` unless every rule allows it; returns the ids of its subvolume tree.
    /// `force` overrides only the pinned and newest rules.
    pub fn check(
        &self,
        old_roots: BorrowedFd<'_>,
        root: &RetiredRoot,
        force: bool,
    ) -> Result<Vec<u64>, Refusal> {
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
        if Some(root.seq) == self.newest_seq && !force {
            return Err(Refusal::new(
                "newest",
                format!(
                    "'{name}' is the newest retired root (last boot's): pass --force to delete it anyway"
                ),
            ));
        }
        let ids = subvolume_tree(old_roots, name, info.id).map_err(|e| {
            Refusal::new(
                "unreadable",
                format!("listing the subvolumes inside '{name}': {e:#}"),
            )
        })?;
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

/// Ids of subvolume `old_roots/name` and every subvolume nested in it, found by id.
pub(crate) fn subvolume_tree(old_roots: BorrowedFd<'_>, name: &str, id: u64) -> Result<Vec<u64>> {
    fn walk(dir: BorrowedFd<'_>, out: &mut Vec<u64>, depth: usize) -> Result<()> {
        anyhow::ensure!(depth < 4096, "subvolumes nested too deep");
        for c in btrfs::child_subvolumes(dir)? {
            out.push(c.id);
            let fd = btrfs::open_dir_beneath(dir, &c.path)
                .with_context(|| format!("opening '{}'", c.path.display()))?;
            walk(fd.as_fd(), out, depth + 1)?;
        }
        Ok(())
    }
    let fd = layout::open_subvolume(old_roots, name)?;
    let mut out = vec![id];
    walk(fd.as_fd(), &mut out, 0)?;
    Ok(out)
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
    layout::remove_meta(old_roots, &root.name)?;
    btrfs::sync(old_roots).context("committing the deletion")?;
    if let Err(e) = btrfs::remove_qgroups(old_roots, &ids, CLEANER_WAIT) {
        // The root is gone; a stale qgroup is only clutter (`btrfs qgroup clear-stale`).
        tracing::warn!("deleted '{}', but {e}", root.name);
    }
    Ok(ids)
}

/// [`delete`] without the commit, for a batch: the subvolume tree, then the metadata, left for one
/// [`commit_deletions`] after the last root (a commit per root made pruning 50 roots ×9 slower than
/// the C library). A power cut before that commit loses the uncommitted deletions as a whole
/// transaction, subvolumes and metadata together, and the next prune starts over.
pub fn delete_uncommitted(
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
    layout::remove_meta_unsynced(old_roots, &root.name)?;
    Ok(ids)
}

/// Commits a batch of [`delete_uncommitted`] (one transaction commit), then removes the qgroups of the
/// subvolumes `ids` deleted (when quotas are on).
pub fn commit_deletions(old_roots: BorrowedFd<'_>, ids: &[u64]) -> Result<()> {
    btrfs::sync(old_roots).context("committing the deletions")?;
    if let Err(e) = btrfs::remove_qgroups(old_roots, ids, CLEANER_WAIT) {
        // The roots are gone; a stale qgroup is only clutter (`btrfs qgroup clear-stale`).
        tracing::warn!("deleted, but {e}");
    }
    Ok(())
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
                seq: r.seq,
                name: r.name.clone(),
                retired_at: m.retired_at,
                clock_trusted: m.clock_trusted,
                pinned: m.pinned,
            })
        })
        .collect()
}

/// A root the policy would delete but the guard keeps, or one retention never judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// Its name.
    pub name: String,
    /// The rule that keeps it.
    pub rule: String,
    /// Why.
    pub message: String,
}

/// What `roots prune` will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunePlan {
    /// The policy's decisions with reasons.
    pub retention: RetentionPlan,
    /// Roots to delete now (policy says delete and the guard allows it), newest first.
    pub delete: Vec<String>,
    /// Roots kept despite the policy, or never judged (no metadata), with the rule that keeps them.
    pub held: Vec<Held>,
    /// The free-space floor, when set, as configured.
    pub min_free: Option<String>,
}

/// Plans a prune: retention decides, the guard vetoes.
pub fn plan_prune(
    old_roots: BorrowedFd<'_>,
    roots: &[RetiredRoot],
    guard: &Guard,
    policy: &Policy,
    now: DateTime<Utc>,
) -> PrunePlan {
    let retention = retention::plan(&candidates(roots), policy, now);
    let mut delete = Vec::new();
    let mut held = Vec::new();
    for r in roots.iter().filter(|r| !r.is_ours()) {
        held.push(Held {
            name: r.name.clone(),
            rule: "no-metadata".into(),
            message: "no matching tabula metadata: not retired by tabula (or placed by hand), never deleted".into(),
        });
    }
    for d in retention.to_delete() {
        let Some(root) = roots.iter().find(|r| r.name == d.name) else {
            continue;
        };
        match guard.check(old_roots, root, false) {
            Ok(_) => delete.push(d.name.clone()),
            Err(refusal) => held.push(Held {
                name: d.name.clone(),
                rule: refusal.rule.to_string(),
                message: refusal.message,
            }),
        }
    }
    PrunePlan {
        retention,
        delete,
        held,
        min_free: policy.min_free.map(|m| m.to_string()),
    }
}

/// Free and total bytes of the filesystem of `fd`.
pub fn free_space(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    let s = nix::sys::statvfs::fstatvfs(fd).context("reading free space")?;
    let frsize = s.fragment_size();
    Ok((s.blocks_available() * frsize, s.blocks() * frsize))
}

/// Free and total bytes once the space of the deleted subvolumes `ids` is accounted: waits (at most
/// [`CLEANER_WAIT`]) for the cleaner to drop them, then until two readings of the free space a moment
/// apart agree (at most a few seconds), since the kernel frees space in steps.
pub fn settled_free_space(fd: BorrowedFd<'_>, ids: &[u64]) -> Result<(u64, u64)> {
    use std::time::{Duration, Instant};
    if ids.is_empty() {
        return free_space(fd);
    }
    if !btrfs::wait_cleaned(fd, ids, CLEANER_WAIT).context("waiting for the deleted subvolumes")? {
        tracing::warn!(
            "the kernel has not finished dropping deleted subvolumes after {}s: free space may be understated",
            CLEANER_WAIT.as_secs()
        );
    }
    let start = Instant::now();
    let mut last = free_space(fd)?;
    while start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        btrfs::sync(fd).context("committing")?;
        let now = free_space(fd)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}
