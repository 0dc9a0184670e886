//! The boot step: retire the live root into `old_roots/` and put a fresh root from the blank in its place.
//!
//! Three stages: [`observe`] reads the top level (no changes), [`plan`] decides (pure, unit-tested, printed
//! by `--dry-run`/`--json`), [`apply`] executes. The order of actions is chosen so that the step that can
//! fail for ordinary reasons (the snapshot: ENOSPC, a quota) happens before the live root is touched:
//!
//! 1. snapshot the blank to `<root>.tabula-new` (staging): **commit 1** (the ioctl commits)
//! 2. record the intent: the name, id and uuid of the root about to be retired (`old_roots/.tabula-retiring.json`)
//! 3. rename `root` → `old_roots/<seq>-<time>` (atomic)
//! 4. rename staging → `root` (atomic)
//! 5. when the filesystem's default subvolume was the old root, make the new root the default
//! 6. write the retired root's metadata (temp file, rename)
//! 7. make it read-only: **commit 2** (the ioctl commits, carrying steps 2–6 with it)
//! 8. commit (nothing is left to commit by then, so this costs nothing; it makes a plan without a freeze
//!    durable)
//!
//! Two transaction commits and no fsync: both ioctls commit whatever the filesystem holds, and nothing of
//! steps 2–6 needs to be durable on its own, only in this order. Each commit (ours, or the kernel's
//! periodic one, at any moment) records a prefix of the steps, and every prefix is a state the next run
//! finishes. The JSON files' bytes are in the filesystem tree before their rename (a small file's inline
//! extent, written back with `sync_file_range`, or an fsync when it is not one: see
//! [`layout::Durability`]), so no commit records a name without its contents. Nothing is dirty after the
//! freeze, so the unmount when the process exits has nothing to commit. Fewer commits are not possible
//! while the retired root is frozen on the boot path: the snapshot and the read-only flag each commit,
//! and the flag can only be set once the root has moved (below).
//!
//! The only moment without a `root` is between two renames. A rerun after a power cut at any point
//! finishes the job: a staging subvolume is reused when it is an untouched snapshot of this run's source
//! (otherwise it is discarded and made again), a missing `root` is filled from the staging, and the newest
//! retirement is completed (metadata, default subvolume, read-only) only when it is provably tabula's: its
//! metadata matches it, or the intent names its id and uuid. Anything else in `old_roots` is never written,
//! frozen or counted. The default subvolume is moved before the old root is frozen, so it is on a writable
//! root at every step. A root that is still the untouched snapshot of the blank is not retired again, so a
//! rerun in the same boot changes nothing. If step 4 fails, step 3 is undone, so a failure never leaves the
//! machine without a bootable `root`; every failure reports the [`State`] the machine is left in.
//!
//! Sequence numbers come from the intent (the high-water mark, kept across deletions) and managed roots
//! only, and are never wrapped. Nothing on the boot path grows with the number of retired roots: the
//! intent names the last retirement, which is the newest managed root while it is whole, and the names a
//! new retirement could take are probed one by one. `old_roots` is listed only to recover (no intent, the
//! last retirement interrupted or deleted) and for `tabula.boot=`; then roots are opened from the newest
//! down until two managed ones are found.

use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::btrfs::{self, SubvolumeInfo};
use crate::cmdline::BootFlags;
use crate::config::Layout;
use crate::error::Refusal;
use crate::fault;
use crate::fsx;
use crate::layout::{
    self, Intent, Occupant, RetiredName, Retirer, RootMeta, RootRef, STAGING_SUFFIX, Standing,
};

/// A retired root, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// Its name in `old_roots` (with its sequence number).
    pub name: RetiredName,
    /// Subvolume identity (`None` when the name is not a subvolume).
    pub info: Option<SubvolumeInfo>,
    /// Its metadata, when written and readable.
    pub meta: Option<RootMeta>,
    /// Whether tabula manages it.
    pub standing: Standing,
}

impl Retired {
    fn seq(&self) -> u64 {
        self.name.seq()
    }
}

/// Everything [`plan`] needs, read from the top level without changing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// The live root.
    pub root: Occupant,
    /// The blank snapshot.
    pub blank: Occupant,
    /// A staging root left by an interrupted run.
    pub staging: Occupant,
    /// The `old_roots` subvolume.
    pub old_roots: Occupant,
    /// The filesystem's default subvolume id, when it could be read.
    pub default_id: Option<u64>,
    /// The last retirement's intent (also the sequence high-water mark).
    pub intent: Option<Intent>,
    /// Entry names in `old_roots` a new name must collide with none of: every entry when `old_roots` was
    /// listed, else the candidate names found taken.
    pub taken: Vec<String>,
    /// The newest roots tabula manages (at most two), newest first.
    pub newest: Vec<Retired>,
    /// Unmanaged roots named above the newest managed one (the first 16): left alone, reported.
    pub skipped: Vec<Retired>,
    /// The retired root asked for by `tabula.boot=`, if any and found.
    pub boot_source: Option<Retired>,
}

/// Facts about this boot that are not on the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootContext {
    /// The clock now (possibly wrong).
    pub now: DateTime<Utc>,
    /// This boot's id.
    pub boot_id: Option<String>,
    /// This boot's kernel release.
    pub kernel: Option<String>,
    /// Kernel command line switches.
    pub flags: BootFlags,
}

/// Where a new root comes from. In JSON it is its path from the top level, as a reader names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The read-only blank snapshot, by its subvolume name.
    Blank(String),
    /// A retired root (`tabula.boot=`): the `old_roots` directory and its typed name.
    Retired {
        /// The directory of retired roots.
        old_roots: String,
        /// The retired root.
        name: RetiredName,
    },
}

impl Source {
    /// Its path from the top level, for messages (`root-blank`, `old_roots/<name>`).
    pub fn path(&self) -> String {
        match self {
            Source::Blank(blank) => blank.clone(),
            Source::Retired { old_roots, name } => format!("{old_roots}/{name}"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.path())
    }
}

/// One step of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Delete a staging root that is not what this run would make.
    DiscardStaging {
        /// The staging name.
        staging: String,
    },
    /// Snapshot `source` (writable) as the staging root.
    Snapshot {
        /// The blank, or a retired root.
        source: Source,
        /// The staging name.
        staging: String,
    },
    /// Record durably which subvolume is about to be retired under which name.
    RecordIntent {
        /// The intent.
        intent: Intent,
    },
    /// Move the live root into `old_roots`.
    Retire {
        /// The live root's name.
        root: String,
        /// Its new name in `old_roots`.
        name: String,
    },
    /// Rename the staging root to the live root's name.
    Promote {
        /// The staging name.
        staging: String,
        /// The live root's name.
        root: String,
    },
    /// Make the live root the filesystem's default subvolume (it was the root being retired).
    SetDefault {
        /// The live root's name.
        root: String,
    },
    /// Write a retired root's metadata (`new_root_uuid` is filled in once the new root exists).
    WriteMetadata {
        /// The metadata.
        meta: Box<RootMeta>,
    },
    /// Make a retired root read-only.
    Freeze {
        /// Its name in `old_roots`.
        name: String,
        /// Its uuid, checked before the change.
        uuid: String,
    },
    /// Commit the filesystem.
    Sync,
}

/// The state a failed rollback leaves the machine in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// `root` is the old root, untouched.
    OldRoot,
    /// The old root was retired, the promotion failed, and the old root was put back.
    PutBack,
    /// There is no `root` to boot.
    NoRoot,
    /// A fresh root is in place; the retirement of the old one may be unfinished.
    FreshRoot,
}

/// The context of a failed [`apply`]: where the machine stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The state.
    pub state: State,
    /// The root whose retirement is unfinished, if any.
    pub unfinished: Option<String>,
    /// The default subvolume is still the old root (it was to follow `root`, and did not yet): a boot
    /// without `subvol=` lands on the old root.
    pub default_on_old: bool,
    /// `old_roots`' name, for messages.
    pub old_roots: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state {
            State::OldRoot => write!(
                f,
                "nothing was retired: the old root is in place, untouched"
            ),
            State::PutBack => write!(f, "the old root is back in place"),
            State::NoRoot => write!(f, "there is NO root to boot"),
            State::FreshRoot => {
                write!(f, "a fresh root is in place")?;
                if self.default_on_old {
                    write!(
                        f,
                        ", but the default subvolume is still the old root (a boot without subvol= lands on it)"
                    )?;
                }
                if let Some(n) = &self.unfinished {
                    write!(
                        f,
                        "; retiring the old root as '{}/{n}' is unfinished: the next rollback or prune completes it",
                        self.old_roots
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// What a rollback will do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The steps, in order.
    pub actions: Vec<Action>,
    /// Why the plan looks the way it does (interrupted run found, nothing to retire, …).
    pub notes: Vec<String>,
    /// The name the live root will be retired under, if it will be.
    pub retire_as: Option<String>,
    /// The state before the first action (what a failure of the first action leaves).
    pub start: State,
    /// Whether the new root comes fresh from the blank (not from `tabula.boot=`, not a leftover).
    pub fresh: bool,
}

fn look(dir: BorrowedFd<'_>, name: &RetiredName, intent: Option<&Intent>) -> Result<Retired> {
    let info = layout::entry_at(dir, name)?.subvolume().cloned();
    let read = layout::read_meta(dir, name).map_err(|e| format!("{e:#}"));
    let standing = layout::standing(name, info.as_ref(), &read, intent);
    Ok(Retired {
        name: name.clone(),
        info,
        meta: read.ok().flatten(),
        standing,
    })
}

/// Reads the top level. Changes nothing, but commits pending writes first: whether the live root was
/// written to is read from its generation, which only moves at a transaction commit.
///
/// O(1) in the number of retired roots in the usual case: the intent names the last retirement, which is
/// the newest managed root when it is there and whole, and the sequence high-water mark; the names a new
/// retirement would take at `ctx.now` are probed one by one. `old_roots` is listed only when that does
/// not hold (no intent, the last retirement interrupted or gone, `tabula.boot=`).
pub fn observe(top: BorrowedFd<'_>, layout: &Layout, ctx: &BootContext) -> Result<Observed> {
    observe_with(top, layout, ctx, true)
}

/// [`observe`] from a full listing of `old_roots` always: the reference the O(1) path is tested against.
pub fn observe_listed(top: BorrowedFd<'_>, layout: &Layout, ctx: &BootContext) -> Result<Observed> {
    observe_with(top, layout, ctx, false)
}

fn observe_with(
    top: BorrowedFd<'_>,
    layout: &Layout,
    ctx: &BootContext,
    fast: bool,
) -> Result<Observed> {
    btrfs::sync(top).context("committing pending writes before looking at the layout")?;
    let staging_name = format!("{}{STAGING_SUFFIX}", layout.root);
    let old_roots = layout::entry_at(top, &layout.old_roots)?;
    let mut obs = Observed {
        root: layout::entry_at(top, &layout.root)?,
        blank: layout::entry_at(top, &layout.blank)?,
        staging: layout::entry_at(top, &staging_name)?,
        old_roots: old_roots.clone(),
        default_id: btrfs::default_subvolume_id(top).ok(),
        intent: None,
        taken: Vec::new(),
        newest: Vec::new(),
        skipped: Vec::new(),
        boot_source: None,
    };
    if old_roots.subvolume().is_none() {
        return Ok(obs);
    }
    let dir = layout::open_subvolume(top, &layout.old_roots)?;
    obs.intent = layout::read_intent(dir.as_fd()).unwrap_or_else(|e| {
        warn!("{e:#}: ignoring it (nothing it names is completed)");
        None
    });
    if let Some(intent) = &obs.intent
        && fast
        && ctx.flags.boot.is_none()
        && let Some(name) = RetiredName::parse(&intent.name)
    {
        let last = look(dir.as_fd(), &name, Some(intent))?;
        if last.info.is_some() && last.standing == Standing::Managed {
            let floor = last.seq().max(intent.seq);
            obs.taken = taken_after(dir.as_fd(), floor, ctx.now)?;
            obs.newest = vec![last];
            return Ok(obs);
        }
    }
    obs.taken = layout::entry_names(dir.as_fd())?;
    let mut names: Vec<RetiredName> = obs
        .taken
        .iter()
        .filter_map(|n| RetiredName::parse(n))
        .collect();
    names.sort();
    let back = match &ctx.flags.boot {
        Some(r) => match RootRef::parse(r) {
            Ok(RootRef::Back(n)) => Some(n),
            Ok(rr) => {
                if let Some(n) = rr.pick(&names) {
                    obs.boot_source = Some(look(dir.as_fd(), n, obs.intent.as_ref())?);
                }
                None
            }
            Err(_) => None,
        },
        None => None,
    };
    // From the newest down: the two newest managed roots (and the n-th for `tabula.boot=-n`).
    let mut managed = 0;
    for n in names.iter().rev() {
        let r = look(dir.as_fd(), n, obs.intent.as_ref())?;
        if r.standing.is_ours() {
            managed += 1;
            if back == Some(managed) {
                obs.boot_source = Some(r.clone());
            }
            if obs.newest.len() < 2 {
                obs.newest.push(r);
            }
        } else if obs.newest.is_empty() && obs.skipped.len() < 16 {
            obs.skipped.push(r);
        }
        if obs.newest.len() == 2 && back.is_none_or(|b| managed >= b) {
            break;
        }
    }
    Ok(obs)
}

/// The names a retirement after `floor` would take at `now` (and their metadata files) that are taken,
/// probed in order until a free one: what [`plan`] needs to never reuse a name, without a listing.
fn taken_after(dir: BorrowedFd<'_>, floor: u64, now: DateTime<Utc>) -> Result<Vec<String>> {
    let mut taken = Vec::new();
    let mut seq = floor;
    while let Some(next) = seq.checked_add(1) {
        seq = next;
        let name = RetiredName::new(seq, now).to_string();
        let json = RootMeta::file_name(&name);
        let before = taken.len();
        for n in [name, json] {
            match rustix::fs::statat(dir, n.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => taken.push(n),
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e).with_context(|| format!("looking for 'old_roots/{n}'")),
            }
        }
        if taken.len() == before {
            break;
        }
    }
    Ok(taken)
}

fn refuse(rule: &'static str, msg: impl Into<String>) -> Refusal {
    Refusal::new(rule, msg)
}

/// A subvolume that nothing has written to since it was snapshotted from `source`.
fn untouched_copy_of(sub: &SubvolumeInfo, source: &SubvolumeInfo) -> bool {
    sub.parent_uuid.as_deref() == Some(source.uuid.as_str()) && sub.generation <= sub.otransid
}

/// Completing the newest retirement an interrupted run left: metadata when the intent proves it ours, the
/// default subvolume when it still points at it (only when a `root` will exist), read-only last.
/// Returns the actions and the metadata written (the previous root of a retirement in the same run).
fn completion(
    obs: &Observed,
    layout: &Layout,
    ctx: &BootContext,
    root_will_exist: bool,
    notes: &mut Vec<String>,
) -> (Vec<Action>, Option<RootMeta>, bool) {
    for r in &obs.skipped {
        if let Standing::Unmanaged { reason } = &r.standing {
            notes.push(format!(
                "'{}/{}' is not tabula's ({reason}): left alone",
                layout.old_roots, r.name
            ));
        }
    }
    let mut actions = Vec::new();
    let mut meta = None;
    let mut moved_default = false;
    let Some(n) = obs.newest.first() else {
        return (actions, meta, moved_default);
    };
    let Some(info) = &n.info else {
        return (actions, meta, moved_default);
    };
    if n.standing == Standing::Retiring {
        notes.push(format!(
            "'{}/{}' has no metadata (interrupted run; the intent proves tabula retired it): writing it now",
            layout.old_roots, n.name
        ));
        let note =
            "metadata completed after an interrupted rollback; retired_at is the completion time";
        let m = new_meta(
            &n.name,
            n.seq(),
            info,
            obs.newest.get(1).and_then(|p| p.meta.as_ref()),
            ctx,
            Some(note),
        );
        actions.push(Action::WriteMetadata {
            meta: Box::new(m.clone()),
        });
        meta = Some(m);
    }
    if obs.default_id == Some(info.id) && root_will_exist {
        notes.push(format!(
            "the default subvolume is still the retired '{}/{}': moving it to '{}'",
            layout.old_roots, n.name, layout.root
        ));
        actions.push(Action::SetDefault {
            root: layout.root.clone(),
        });
        moved_default = true;
    }
    if !info.read_only {
        actions.push(Action::Freeze {
            name: n.name.to_string(),
            uuid: info.uuid.clone(),
        });
    }
    (actions, meta, moved_default)
}

/// Decides what to do. Pure: same input, same plan.
pub fn plan(obs: &Observed, layout: &Layout, ctx: &BootContext) -> Result<Plan, Refusal> {
    let mut notes = Vec::new();
    let start = match obs.root {
        Occupant::Missing => State::NoRoot,
        _ => State::OldRoot,
    };
    if ctx.flags.skip {
        notes.push("tabula.skip is on the kernel command line: no rollback this boot".to_string());
        return Ok(Plan {
            actions: Vec::new(),
            notes,
            retire_as: None,
            start,
            fresh: false,
        });
    }
    let staging = format!("{}{STAGING_SUFFIX}", layout.root);
    match &obs.old_roots {
        Occupant::Missing => {
            return Err(refuse(
                "old-roots-missing",
                format!(
                    "there is no '{}' subvolume in the top level: run `tabula init` first",
                    layout.old_roots
                ),
            ));
        }
        Occupant::Other => {
            return Err(refuse(
                "old-roots-not-subvolume",
                format!(
                    "'{}' is not a subvolume (a plain directory?): tabula only retires roots into a subvolume it \
                     can tell apart from everything else; move it aside and run `tabula init`",
                    layout.old_roots
                ),
            ));
        }
        Occupant::Subvolume { info } if info.parent_id != btrfs::TOP_LEVEL_ID || info.read_only => {
            return Err(refuse(
                "old-roots-not-ours",
                format!(
                    "'{}' is not a writable subvolume directly in the top level",
                    layout.old_roots
                ),
            ));
        }
        Occupant::Subvolume { .. } => {}
    }
    if obs.root == Occupant::Other {
        return Err(refuse(
            "root-not-subvolume",
            format!(
                "'{}' in the top level is not a subvolume: tabula will not move it",
                layout.root
            ),
        ));
    }
    if obs.staging == Occupant::Other {
        return Err(refuse(
            "staging-not-subvolume",
            format!("'{staging}' exists and is not a subvolume: move it out of the way"),
        ));
    }

    // The source of the new root: the blank, or a retired root asked for on the command line.
    let (new_source, source) = match &ctx.flags.boot {
        Some(r) => match &obs.boot_source {
            Some(Retired {
                name,
                info: Some(info),
                ..
            }) => {
                notes.push(format!("tabula.boot={r}: this boot runs on a writable snapshot of '{name}', which stays as it is"));
                (
                    Source::Retired {
                        old_roots: layout.old_roots.clone(),
                        name: name.clone(),
                    },
                    Some(info),
                )
            }
            _ => {
                return Err(refuse(
                    "boot-root-not-found",
                    format!(
                        "tabula.boot={r} names no retired root: see `tabula roots list` for what exists"
                    ),
                ));
            }
        },
        None => (
            Source::Blank(layout.blank.clone()),
            obs.blank.subvolume().filter(|i| i.read_only),
        ),
    };
    let source_path = new_source.path();
    // A missing or writable blank stops everything, unless we are only finishing an interrupted run.
    let blank_problem = match &obs.blank {
        Occupant::Missing => Some((
            "blank-missing",
            format!(
                "the blank snapshot '{}' does not exist: run `tabula init`",
                layout.blank
            ),
        )),
        Occupant::Other => Some((
            "blank-not-subvolume",
            format!("'{}' is not a subvolume", layout.blank),
        )),
        Occupant::Subvolume { info } if !info.read_only => Some((
            "blank-writable",
            format!(
                "the blank snapshot '{}' is writable, so it may no longer be blank: make a read-only blank \
                 (`tabula init`), or if it is right, `btrfs property set -ts <top>/{} ro true`",
                layout.blank, layout.blank
            ),
        )),
        Occupant::Subvolume { .. } => None,
    };
    if ctx.flags.boot.is_none()
        && let Some((rule, msg)) = &blank_problem
    {
        let finishing = obs.root == Occupant::Missing && obs.staging.subvolume().is_some();
        if !finishing {
            return Err(refuse(rule, msg.clone()));
        }
    }

    // Staging is reused only when it is an untouched snapshot of this run's source.
    let staging_fits = match (obs.staging.subvolume(), source) {
        (Some(st), Some(src)) => untouched_copy_of(st, src),
        _ => false,
    };
    let make_staging = |actions: &mut Vec<Action>, notes: &mut Vec<String>| match obs
        .staging
        .subvolume()
    {
        Some(_) if staging_fits => {
            notes.push(format!("reusing '{staging}' left by an interrupted run"));
            true
        }
        Some(_) if source.is_some() => {
            notes.push(format!(
                "discarding '{staging}': it is not an untouched snapshot of '{source_path}' (left by another kind of run)"
            ));
            actions.push(Action::DiscardStaging {
                staging: staging.clone(),
            });
            actions.push(Action::Snapshot {
                source: new_source.clone(),
                staging: staging.clone(),
            });
            true
        }
        Some(_) => {
            notes.push(format!(
                "'{staging}' is not a snapshot of a usable '{source_path}', which is all there is: promoting it so \
                 that there is a root to boot (this boot is NOT fresh)"
            ));
            false
        }
        None => {
            actions.push(Action::Snapshot {
                source: new_source.clone(),
                staging: staging.clone(),
            });
            true
        }
    };

    let mut actions = Vec::new();
    let mut retire_as = None;
    let mut fresh = ctx.flags.boot.is_none();
    let root_will_exist;
    let mut new_retirement = Vec::new();
    let mut root_is_default = false;
    let mut start = start;

    match (&obs.root, source) {
        (Occupant::Subvolume { info: root }, Some(src))
            if ctx.flags.boot.is_none() && untouched_copy_of(root, src) =>
        {
            notes.push(format!(
                "'{}' is still the untouched snapshot of '{source_path}': nothing to retire",
                layout.root
            ));
            start = State::FreshRoot;
            root_will_exist = true;
        }
        (Occupant::Subvolume { info: root }, _) => {
            root_will_exist = true;
            make_staging(&mut actions, &mut notes);
            let floor = obs
                .intent
                .as_ref()
                .map(|i| i.seq)
                .into_iter()
                .chain(obs.newest.first().map(Retired::seq))
                .max()
                .unwrap_or(0);
            let mut seq = floor;
            let name = loop {
                seq = seq.checked_add(1).ok_or_else(|| {
                    refuse(
                        "sequence-exhausted",
                        format!(
                            "the boot sequence number is at the top of its range ({floor}): tabula never wraps it; \
                             move the retired roots aside (or delete them) and remove '{}/{}' to start again",
                            layout.old_roots,
                            layout::INTENT_FILE
                        ),
                    )
                })?;
                let name = RetiredName::new(seq, ctx.now).to_string();
                let json = RootMeta::file_name(&name);
                if !obs.taken.iter().any(|t| *t == name || *t == json) {
                    break name;
                }
            };
            new_retirement.push(Action::RecordIntent {
                intent: Intent {
                    version: 1,
                    seq,
                    name: name.clone(),
                    subvolume_id: root.id,
                    uuid: root.uuid.clone(),
                },
            });
            new_retirement.push(Action::Retire {
                root: layout.root.clone(),
                name: name.clone(),
            });
            new_retirement.push(Action::Promote {
                staging: staging.clone(),
                root: layout.root.clone(),
            });
            root_is_default = obs.default_id == Some(root.id);
            retire_as = Some((name, seq, root.clone()));
        }
        (Occupant::Missing, _) => {
            root_will_exist = true;
            match obs.staging.subvolume() {
                Some(_) => notes.push(format!(
                    "'{}' is missing and '{staging}' exists: finishing an interrupted run",
                    layout.root
                )),
                None => notes.push(format!(
                    "'{}' is missing: creating it from '{source_path}'",
                    layout.root
                )),
            }
            fresh = make_staging(&mut actions, &mut notes) && fresh;
            actions.push(Action::Promote {
                staging: staging.clone(),
                root: layout.root.clone(),
            });
        }
        // Refused above.
        (Occupant::Other, _) => root_will_exist = false,
    }

    // Complete the newest retirement first, so metadata files appear in sequence order and the default
    // subvolume is on `root` before a new retirement is judged.
    let (complete, completed_meta, moved_default) =
        completion(obs, layout, ctx, root_will_exist, &mut notes);
    actions.extend(complete);
    if let Some((name, seq, root)) = &retire_as {
        actions.extend(new_retirement);
        if root_is_default || moved_default {
            actions.push(Action::SetDefault {
                root: layout.root.clone(),
            });
        }
        let previous = completed_meta
            .as_ref()
            .or_else(|| obs.newest.first().and_then(|p| p.meta.as_ref()));
        actions.push(Action::WriteMetadata {
            meta: Box::new(new_meta(name, *seq, root, previous, ctx, None)),
        });
        actions.push(Action::Freeze {
            name: name.clone(),
            uuid: root.uuid.clone(),
        });
    }
    if !actions.is_empty() {
        actions.push(Action::Sync);
    }
    Ok(Plan {
        actions,
        notes,
        retire_as: retire_as.map(|r| r.0),
        start,
        fresh,
    })
}

/// Metadata for retiring `root` as `name`. The boot that ran on it is known when the previous retirement
/// recorded that it created this very root (`retired_by.new_root_uuid`).
fn new_meta(
    name: &str,
    seq: u64,
    root: &SubvolumeInfo,
    prev_meta: Option<&RootMeta>,
    ctx: &BootContext,
    note: Option<&str>,
) -> RootMeta {
    let creator = prev_meta
        .map(|m| &m.retired_by)
        .filter(|r| r.new_root_uuid.as_deref() == Some(root.uuid.as_str()));
    let floor = prev_meta.and_then(|m| {
        let own = m.clock_trusted.then_some(m.retired_at);
        own.into_iter().chain(m.clock_floor).max()
    });
    let trusted = layout::clock_trusted(ctx.now);
    RootMeta {
        version: 1,
        seq,
        name: name.to_string(),
        boot_id: creator.and_then(|c| c.boot_id.clone()),
        kernel: creator.and_then(|c| c.kernel.clone()),
        booted_at: root.otime,
        retired_at: ctx.now,
        clock_trusted: trusted,
        clock_floor: if trusted {
            floor.into_iter().chain([ctx.now]).max()
        } else {
            floor
        },
        subvolume_id: root.id,
        uuid: root.uuid.clone(),
        pinned: false,
        note: note.map(str::to_string),
        retired_by: Retirer {
            boot_id: ctx.boot_id.clone(),
            kernel: ctx.kernel.clone(),
            new_root_uuid: None,
        },
    }
}

/// Opens `old_roots/name` and checks that it is still the subvolume `uuid` names (never write into a
/// subvolume swapped in under a name tabula chose).
fn open_ours(
    old_roots: BorrowedFd<'_>,
    layout: &Layout,
    name: &str,
    uuid: &str,
) -> Result<std::os::fd::OwnedFd> {
    let sub = layout::open_subvolume(old_roots, name)?;
    let info = btrfs::subvolume_info(sub.as_fd())
        .with_context(|| format!("inspecting '{}/{name}'", layout.old_roots))?;
    anyhow::ensure!(
        info.uuid == uuid,
        "'{}/{name}' is subvolume {} ({}), not the root tabula retired ({uuid}): left alone",
        layout.old_roots,
        info.id,
        info.uuid
    );
    Ok(sub)
}

/// Observes and plans the rollback of the filesystem on `device` (top level `top`), then checks what
/// only the running system can tell: nothing in `root` may be mounted when the plan retires it
/// ([`crate::mounted::refuse_mounted_root`]). Returns the plan, or the refusal as the boot must report
/// it: with no `root` at all, in a [`Failed`] of [`State::NoRoot`]. Changes nothing.
pub fn observe_and_plan(
    top: BorrowedFd<'_>,
    device: &std::path::Path,
    layout: &Layout,
    ctx: &BootContext,
) -> Result<Plan> {
    let observed = observe(top, layout, ctx)?;
    let plan = plan(&observed, layout, ctx).map_err(|r| refusal_error(r, &observed, layout))?;
    if plan.retire_as.is_some() {
        crate::mounted::refuse_mounted_root(top, device, &layout.root)?;
    }
    Ok(plan)
}

/// A plan's refusal as an error. Refused with no `root` at all, it carries [`Failed`] in
/// [`State::NoRoot`]: the boot must say there is no root, never "booting the old root".
fn refusal_error(refusal: Refusal, observed: &Observed, layout: &Layout) -> anyhow::Error {
    let e = anyhow::Error::from(refusal);
    if observed.root == Occupant::Missing {
        e.context(Failed {
            state: State::NoRoot,
            unfinished: None,
            default_on_old: false,
            old_roots: layout.old_roots.clone(),
        })
    } else {
        e
    }
}

/// Executes `plan` on the top level `top`. On a failed promotion the retirement is undone. A failure
/// carries a [`Failed`] context saying the state the machine is left in.
pub fn apply(top: BorrowedFd<'_>, layout: &Layout, plan: &Plan) -> Result<()> {
    let mut state = plan.start;
    let mut unfinished: Option<String> = None;
    let failed = |state: State, unfinished: &Option<String>, default_on_old: bool| Failed {
        state,
        unfinished: unfinished.clone(),
        default_on_old,
        old_roots: layout.old_roots.clone(),
    };
    let old_roots = layout::open_subvolume(top, &layout.old_roots)
        .map_err(|e| e.context(failed(state, &unfinished, false)))?;
    let mut retired: Option<String> = None;
    for action in &plan.actions {
        let step = || -> Result<()> {
            match action {
                Action::DiscardStaging { staging } => {
                    fault::fail("discard-staging")?;
                    btrfs::delete_subvolume(top, staging)
                        .with_context(|| format!("discarding '{staging}'"))?;
                    info!("discarded '{staging}'");
                }
                Action::Snapshot { source, staging } => {
                    let src = match source {
                        Source::Blank(blank) => layout::open_subvolume(top, blank)?,
                        Source::Retired { name, .. } => {
                            layout::open_subvolume(old_roots.as_fd(), name)?
                        }
                    };
                    let path = source.path();
                    fault::fail("snapshot")?;
                    btrfs::snapshot(src.as_fd(), top, staging, false).with_context(|| {
                        format!("creating the new root '{staging}' from '{path}'")
                    })?;
                    info!("created '{staging}' from '{path}'");
                    fault::point("after-snapshot");
                }
                Action::RecordIntent { intent } => {
                    fault::fail("intent")?;
                    layout::write_intent_next_commit(old_roots.as_fd(), intent)
                        .context("recording the retirement intent")?;
                    fault::point("after-intent");
                }
                Action::Retire { root, name } => {
                    fault::fail("retire")?;
                    fsx::rename_noreplace_at(top, root, old_roots.as_fd(), name)
                        .map_err(|e| e.errno())
                        .with_context(|| {
                            format!("retiring '{root}' as '{}/{name}'", layout.old_roots)
                        })?;
                    info!("retired '{root}' as '{}/{name}'", layout.old_roots);
                    fault::point("after-retire");
                }
                Action::Promote { staging, root } => {
                    fault::fail("promote")?;
                    fsx::rename_noreplace_at(top, staging, top, root)
                        .map_err(|e| e.errno())
                        .with_context(|| format!("renaming '{staging}' to '{root}'"))?;
                    info!(
                        "'{root}' is {}",
                        if plan.fresh {
                            "a fresh root"
                        } else {
                            "in place"
                        }
                    );
                    fault::point("after-promote");
                }
                Action::SetDefault { root } => {
                    fault::fail("set-default")?;
                    let fd = layout::open_subvolume(top, root)?;
                    let id = btrfs::subvolume_info(fd.as_fd())?.id;
                    // Durable with the freeze's commit, which follows (or the final sync).
                    btrfs::set_default_subvolume(top, id)?;
                    info!("the default subvolume is '{root}' (subvolume {id})");
                    fault::point("after-set-default");
                }
                Action::WriteMetadata { meta } => {
                    let mut meta = (**meta).clone();
                    open_ours(old_roots.as_fd(), layout, &meta.name, &meta.uuid)?;
                    if Some(&meta.name) == retired.as_ref() {
                        let root = layout::open_subvolume(top, &layout.root)?;
                        meta.retired_by.new_root_uuid =
                            Some(btrfs::subvolume_info(root.as_fd())?.uuid);
                    }
                    fault::fail("metadata")?;
                    layout::write_meta_next_commit(old_roots.as_fd(), &meta)?;
                    fault::point("after-metadata");
                }
                Action::Freeze { name, uuid } => {
                    fault::fail("freeze")?;
                    let sub = open_ours(old_roots.as_fd(), layout, name, uuid)?;
                    btrfs::set_read_only(sub.as_fd(), true).with_context(|| {
                        format!("making '{}/{name}' read-only", layout.old_roots)
                    })?;
                    fault::point("after-freeze");
                }
                Action::Sync => {
                    fault::fail("sync")?;
                    btrfs::sync(top).context("committing the rollback")?;
                }
            }
            Ok(())
        };
        match (step(), action) {
            (Ok(()), Action::Retire { name, .. }) => {
                retired = Some(name.clone());
                unfinished = Some(name.clone());
                state = State::NoRoot;
            }
            (Ok(()), Action::Promote { .. }) => state = State::FreshRoot,
            (Ok(()), Action::Freeze { name, .. }) if unfinished.as_ref() == Some(name) => {
                unfinished = None;
            }
            (Ok(()), _) => {}
            (Err(e), Action::Promote { root, .. }) => {
                if let Some(name) = &retired {
                    state = if put_back(top, old_roots.as_fd(), layout, name, root) {
                        State::PutBack
                    } else {
                        State::NoRoot
                    };
                    unfinished = None;
                }
                return Err(e.context(failed(state, &unfinished, false)));
            }
            (Err(e), _) => {
                if state == State::FreshRoot {
                    // Make what was done durable: the steps after the snapshot ride on a later commit.
                    let _ = btrfs::sync(top);
                }
                let default_on_old = state == State::FreshRoot
                    && plan
                        .actions
                        .iter()
                        .skip_while(|a| *a != action)
                        .any(|a| matches!(a, Action::SetDefault { .. }));
                if state == State::FreshRoot
                    && let Some(n) = plan.actions.iter().find_map(|a| match a {
                        Action::WriteMetadata { meta } => Some(meta.name.clone()),
                        Action::Freeze { name, .. } => Some(name.clone()),
                        _ => None,
                    })
                {
                    unfinished.get_or_insert(n);
                }
                return Err(e.context(failed(state, &unfinished, default_on_old)));
            }
        }
    }
    Ok(())
}

/// Undoes a retirement so that `root` exists again; logs loudly when even that fails. Returns whether the
/// old root is back.
fn put_back(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    layout: &Layout,
    name: &str,
    root: &str,
) -> bool {
    match fsx::rename_noreplace_at(old_roots, name, top, root).map_err(|e| e.errno()) {
        Ok(()) => {
            let _ = btrfs::sync(top);
            warn!(
                "put the old root back: '{}/{name}' is '{root}' again",
                layout.old_roots
            );
            true
        }
        Err(e) => {
            error!(
                "could not put the old root back ({e}): boot from a rescue system, mount the top level and \
                 `mv {}/{name} {root}`",
                layout.old_roots
            );
            false
        }
    }
}

/// Completes a retirement an interrupted rollback left (metadata, default subvolume, read-only), when the
/// intent proves tabula retired it; for `roots prune`. A retired root that is mounted (a system that came
/// up on it through the default subvolume) only gets its metadata: it is never frozen under running
/// programs. Returns the name completed, if any.
pub fn complete_interrupted(
    top: BorrowedFd<'_>,
    layout: &Layout,
    ctx: &BootContext,
    mounted: &dyn Fn(u64) -> bool,
) -> Result<Option<String>> {
    let ctx = BootContext {
        flags: BootFlags::default(),
        ..ctx.clone()
    };
    let obs = observe(top, layout, &ctx)?;
    let mut notes = Vec::new();
    let root_exists = obs.root.subvolume().is_some();
    let (mut actions, _, _) = completion(&obs, layout, &ctx, root_exists, &mut notes);
    if let Some(n) = obs.newest.first()
        && n.info.as_ref().is_some_and(|i| mounted(i.id))
    {
        actions.retain(|a| matches!(a, Action::WriteMetadata { .. }));
        notes.push(format!(
            "'{}/{}' is mounted: only its metadata is written (it stays writable and the default stays)",
            layout.old_roots, n.name
        ));
    }
    if actions.is_empty() {
        return Ok(None);
    }
    for n in &notes {
        info!("{n}");
    }
    let plan = Plan {
        actions: actions.into_iter().chain([Action::Sync]).collect(),
        notes,
        retire_as: None,
        start: State::FreshRoot,
        fresh: false,
    };
    apply(top, layout, &plan)?;
    Ok(obs.newest.first().map(|n| n.name.to_string()))
}

/// Names of the fault points of this command (for `--list-fault-points`).
pub fn fault_points() -> &'static [&'static str] {
    fault::ROLLBACK_POINTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceSpec, Layout};
    use std::time::Duration;

    fn layout() -> Layout {
        Layout {
            device: DeviceSpec::Path("/dev/x".into()),
            device_timeout: Duration::from_secs(1),
            root: "root".into(),
            blank: "root-blank".into(),
            old_roots: "old_roots".into(),
            persist: "persist".into(),
            allow_degraded: false,
            blank_history: 2,
        }
    }

    fn sub(
        id: u64,
        uuid: &str,
        parent_uuid: Option<&str>,
        ro: bool,
        gen_: u64,
        otransid: u64,
    ) -> Occupant {
        Occupant::Subvolume {
            info: SubvolumeInfo {
                id,
                parent_id: 5,
                dir_id: 256,
                name: String::new(),
                generation: gen_,
                otransid,
                uuid: uuid.into(),
                parent_uuid: parent_uuid.map(str::to_string),
                received_uuid: None,
                otime: DateTime::from_timestamp(1_750_000_000, 0),
                read_only: ro,
            },
        }
    }

    fn ctx() -> BootContext {
        BootContext {
            now: DateTime::from_timestamp(1_760_000_000, 0).unwrap(),
            boot_id: Some("b".repeat(32)),
            kernel: Some("6.1.0".into()),
            flags: BootFlags::default(),
        }
    }

    /// root written to (generation past its creation), ro blank, old_roots, no retired roots.
    fn normal() -> Observed {
        Observed {
            root: sub(300, "r", Some("blank"), false, 20, 10),
            blank: sub(257, "blank", None, true, 5, 5),
            staging: Occupant::Missing,
            old_roots: sub(258, "old", None, false, 9, 3),
            default_id: Some(5),
            intent: Some(Intent {
                version: 1,
                seq: 41,
                name: "00041-2025-01-01T000000Z".into(),
                subvolume_id: 299,
                uuid: "gone".into(),
            }),
            taken: vec!["00041-2025-01-01T000000Z".into()],
            newest: vec![],
            skipped: vec![],
            boot_source: None,
        }
    }

    #[test]
    fn a_refusal_with_no_root_says_there_is_no_root() {
        let refusal = || refuse("some-rule", "refused");
        let mut o = normal();
        let e = refusal_error(refusal(), &o, &layout());
        assert!(e.downcast_ref::<Failed>().is_none(), "{e:#}");
        assert_eq!(
            e.downcast_ref::<Refusal>().map(|r| r.rule),
            Some("some-rule")
        );
        o.root = Occupant::Missing;
        let e = refusal_error(refusal(), &o, &layout());
        let failed = e.downcast_ref::<Failed>().expect("a Failed context");
        assert_eq!(failed.state, State::NoRoot);
        assert_eq!(failed.old_roots, "old_roots");
        assert_eq!(
            e.downcast_ref::<Refusal>().map(|r| r.rule),
            Some("some-rule")
        );
    }

    fn kinds(p: &Plan) -> Vec<&'static str> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::DiscardStaging { .. } => "discard",
                Action::Snapshot { .. } => "snapshot",
                Action::RecordIntent { .. } => "intent",
                Action::SetDefault { .. } => "default",
                Action::Retire { .. } => "retire",
                Action::Promote { .. } => "promote",
                Action::WriteMetadata { .. } => "meta",
                Action::Freeze { .. } => "freeze",
                Action::Sync => "sync",
            })
            .collect()
    }

    #[test]
    fn normal_boot_snapshots_before_touching_the_root() {
        let p = plan(&normal(), &layout(), &ctx()).unwrap();
        assert_eq!(
            kinds(&p),
            [
                "snapshot", "intent", "retire", "promote", "meta", "freeze", "sync"
            ]
        );
        assert_eq!(p.retire_as.as_deref(), Some("00042-2025-10-09T085320Z"));
    }

    #[test]
    fn interrupted_runs_are_finished() {
        // Crash after the snapshot: staging reused, not snapshotted again.
        let mut o = normal();
        o.staging = sub(301, "s", Some("blank"), false, 11, 11);
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            ["intent", "retire", "promote", "meta", "freeze", "sync"]
        );
        // Crash after retiring: no root, staging there, newest retired root without metadata.
        o.root = Occupant::Missing;
        o.newest = vec![Retired {
            name: RetiredName::parse("00042-2025-10-09T085320Z").unwrap(),
            info: sub(300, "r", Some("blank"), false, 20, 10)
                .subvolume()
                .cloned(),
            meta: None,
            standing: Standing::Retiring,
        }];
        let p = plan(&o, &layout(), &ctx()).unwrap();
        assert_eq!(kinds(&p), ["promote", "meta", "freeze", "sync"]);
        assert_eq!(p.retire_as, None);
        // Crash after promoting: the fresh root is untouched; only the retired root is completed.
        o.root = sub(301, "s", Some("blank"), false, 11, 11);
        o.staging = Occupant::Missing;
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            ["meta", "freeze", "sync"]
        );
        // Crash after the metadata: only the freeze is left.
        o.newest[0].meta = Some(new_meta(
            "00042-2025-10-09T085320Z",
            42,
            o.newest[0].info.as_ref().unwrap(),
            None,
            &ctx(),
            None,
        ));
        o.newest[0].standing = Standing::Managed;
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            ["freeze", "sync"]
        );
        // All done: nothing.
        if let Some(i) = o.newest[0].info.as_mut() {
            i.read_only = true;
        }
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn missing_blank_does_not_block_finishing_but_blocks_a_new_rotation() {
        let mut o = normal();
        o.blank = Occupant::Missing;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "blank-missing"
        );
        o.root = Occupant::Missing;
        o.staging = sub(301, "s", Some("blank"), false, 11, 11);
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            ["promote", "sync"]
        );
        o.staging = Occupant::Missing;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "blank-missing"
        );
    }

    #[test]
    fn refusals() {
        let mut o = normal();
        o.blank = sub(257, "blank", None, false, 5, 5);
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "blank-writable"
        );
        let mut o = normal();
        o.old_roots = Occupant::Other;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "old-roots-not-subvolume"
        );
        let mut o = normal();
        o.root = Occupant::Other;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "root-not-subvolume"
        );
        let mut o = normal();
        o.staging = Occupant::Other;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "staging-not-subvolume"
        );
    }

    #[test]
    fn skip_and_untouched_do_nothing() {
        let mut c = ctx();
        c.flags.skip = true;
        assert!(plan(&normal(), &layout(), &c).unwrap().actions.is_empty());
        let mut o = normal();
        o.root = sub(300, "r", Some("blank"), false, 10, 10);
        let p = plan(&o, &layout(), &ctx()).unwrap();
        assert!(
            p.actions.is_empty() && p.notes[0].contains("untouched"),
            "{p:?}"
        );
    }

    #[test]
    fn boot_ids_and_clock_trust_need_only_the_previous_root() {
        let root = sub(300, "r", Some("blank"), false, 20, 10)
            .subvolume()
            .cloned()
            .unwrap();
        let mut prev = new_meta("00041-x", 41, &root, None, &ctx(), None);
        prev.retired_by.new_root_uuid = Some("r".into());
        prev.retired_by.boot_id = Some("previous-boot".into());
        let m = new_meta("00042-y", 42, &root, Some(&prev), &ctx(), None);
        assert_eq!(m.boot_id.as_deref(), Some("previous-boot"));
        let mut early = ctx();
        early.now = DateTime::from_timestamp(1_759_000_000, 0).unwrap();
        let m2 = new_meta("00042-y", 42, &root, Some(&prev), &early, None);
        // Behind the previous retirement: in or out of step is retention's call, from all roots.
        assert!(m2.clock_trusted);
        let mut in_1970 = ctx();
        in_1970.now = DateTime::from_timestamp(10, 0).unwrap();
        let m3 = new_meta("00042-y", 42, &root, Some(&prev), &in_1970, None);
        assert!(!m3.clock_trusted);
        assert_eq!(m3.clock_floor, prev.clock_floor);
    }

    fn retired(name: &str, info: Occupant, standing: Standing) -> Retired {
        Retired {
            name: RetiredName::parse(name).unwrap(),
            info: info.subvolume().cloned(),
            meta: None,
            standing,
        }
    }

    #[test]
    fn unmanaged_roots_are_never_completed_or_counted() {
        let mut o = normal();
        let stray = "99999-2030-01-01T000000Z";
        o.taken.push(stray.into());
        o.skipped = vec![retired(
            stray,
            sub(400, "x", None, false, 9, 9),
            Standing::Unmanaged {
                reason: "no tabula metadata".into(),
            },
        )];
        let p = plan(&o, &layout(), &ctx()).unwrap();
        assert_eq!(
            kinds(&p),
            [
                "snapshot", "intent", "retire", "promote", "meta", "freeze", "sync"
            ]
        );
        assert!(p.retire_as.as_deref().unwrap().starts_with("00042-"));
        assert!(
            p.actions
                .iter()
                .all(|a| !matches!(a, Action::Freeze { name, .. } if name == stray))
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains(stray) && n.contains("left alone"))
        );
    }

    #[test]
    fn the_sequence_never_wraps_and_never_reuses_a_taken_name() {
        let mut o = normal();
        o.intent.as_mut().unwrap().seq = u64::MAX;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "sequence-exhausted"
        );
        let mut o = normal();
        o.taken.push("00042-2025-10-09T085320Z.json".into());
        let p = plan(&o, &layout(), &ctx()).unwrap();
        assert_eq!(p.retire_as.as_deref(), Some("00043-2025-10-09T085320Z"));
    }

    #[test]
    fn staging_is_reused_only_when_it_is_an_untouched_snapshot_of_the_source() {
        let mut o = normal();
        // A snapshot of a retired root (left by a tabula.boot= run): discarded, made again.
        o.staging = sub(301, "s", Some("some-old-root"), false, 11, 11);
        let p = plan(&o, &layout(), &ctx()).unwrap();
        assert_eq!(
            kinds(&p),
            [
                "discard", "snapshot", "intent", "retire", "promote", "meta", "freeze", "sync"
            ]
        );
        // A snapshot of the blank that was written to: the same.
        o.staging = sub(301, "s", Some("blank"), false, 15, 11);
        assert_eq!(kinds(&plan(&o, &layout(), &ctx()).unwrap())[0], "discard");
        // Root missing, staging from another source: discarded too, and the new root is fresh.
        o.root = Occupant::Missing;
        o.staging = sub(301, "s", Some("some-old-root"), false, 11, 11);
        let p = plan(&o, &layout(), &ctx()).unwrap();
        assert_eq!(kinds(&p), ["discard", "snapshot", "promote", "sync"]);
        assert!(p.fresh);
    }

    #[test]
    fn the_default_subvolume_follows_root_before_the_freeze() {
        let mut o = normal();
        o.default_id = Some(300);
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            [
                "snapshot", "intent", "retire", "promote", "default", "meta", "freeze", "sync"
            ]
        );
        // Interrupted after the retirement: the default is still the retired root.
        o.root = Occupant::Missing;
        o.staging = sub(301, "s", Some("blank"), false, 11, 11);
        o.newest = vec![retired(
            "00042-2025-10-09T085320Z",
            sub(300, "r", Some("blank"), false, 20, 10),
            Standing::Retiring,
        )];
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            ["promote", "meta", "default", "freeze", "sync"]
        );
        // A default that is something else is left alone.
        o.default_id = Some(5);
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            ["promote", "meta", "freeze", "sync"]
        );
    }
}
