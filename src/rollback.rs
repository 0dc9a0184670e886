//! The boot step: retire the live root into `old_roots/` and put a fresh root from the blank in its place.
//!
//! Three stages: [`observe`] reads the top level (no changes), [`plan`] decides (pure, unit-tested, printed
//! by `--dry-run`/`--json`), [`apply`] executes. The order of actions is chosen so that the step that can
//! fail for ordinary reasons (the snapshot: ENOSPC, a quota) happens before the live root is touched:
//!
//! 1. snapshot the blank to `<root>.tabula-new` (staging)
//! 2. rename `root` → `old_roots/<seq>-<time>` (atomic)
//! 3. rename staging → `root` (atomic)
//! 4. write the retired root's metadata (temp, fsync, rename, fsync dir), then make it read-only
//! 5. commit
//!
//! The only moment without a `root` is between two renames. A rerun after a power cut at any point
//! finishes the job: a staging subvolume is reused, a missing `root` is filled from the staging, and a
//! newest retired root without metadata or still writable is completed. A root that is still the untouched
//! snapshot of the blank is not retired again, so a rerun in the same boot changes nothing. If step 3
//! fails, step 2 is undone, so a failure never leaves the machine without a bootable `root`.
//! Cost is O(1) in the number of retired roots (one directory listing for the next sequence number).

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
use crate::layout::{self, Entry, RetiredName, Retirer, RootMeta, RootRef, STAGING_SUFFIX};

/// The newest retired root, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// Its name in `old_roots`.
    pub name: String,
    /// Subvolume identity (`None` when the name is not a subvolume).
    pub info: Option<SubvolumeInfo>,
    /// Its metadata, when written.
    pub meta: Option<RootMeta>,
}

/// Everything [`plan`] needs, read from the top level without changing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// The live root.
    pub root: Entry,
    /// The blank snapshot.
    pub blank: Entry,
    /// A staging root left by an interrupted run.
    pub staging: Entry,
    /// The `old_roots` subvolume.
    pub old_roots: Entry,
    /// Retired root names, by sequence.
    pub retired: Vec<String>,
    /// The newest retired root and the one before it (for completing an interrupted run and for
    /// deriving boot ids).
    pub newest: Vec<Retired>,
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

/// One step of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Snapshot `source` (writable) as the staging root.
    Snapshot {
        /// `blank` name or `old_roots/<name>`.
        source: String,
        /// The staging name.
        staging: String,
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
    /// Write a retired root's metadata (`new_root_uuid` is filled in once the new root exists).
    WriteMetadata {
        /// The metadata.
        meta: Box<RootMeta>,
    },
    /// Make a retired root read-only.
    Freeze {
        /// Its name in `old_roots`.
        name: String,
    },
    /// Commit the filesystem.
    Sync,
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
}

/// Reads the top level. Changes nothing, but commits pending writes first: whether the live root was
/// written to is read from its generation, which only moves at a transaction commit.
pub fn observe(top: BorrowedFd<'_>, layout: &Layout, flags: &BootFlags) -> Result<Observed> {
    btrfs::sync(top).context("committing pending writes before looking at the layout")?;
    let staging_name = format!("{}{STAGING_SUFFIX}", layout.root);
    let old_roots = layout::entry_at(top, &layout.old_roots)?;
    let mut retired = Vec::new();
    let mut newest = Vec::new();
    let mut boot_source = None;
    if old_roots.subvolume().is_some() {
        let dir = layout::open_subvolume(top, &layout.old_roots)?;
        let names = layout::retired_names(dir.as_fd())?;
        let look = |n: &RetiredName| -> Result<Retired> {
            let name = n.to_string();
            Ok(Retired {
                info: layout::entry_at(dir.as_fd(), &name)?.subvolume().cloned(),
                meta: layout::read_meta(dir.as_fd(), &name).unwrap_or_else(|e| {
                    warn!("{e:#}, treating it as missing");
                    None
                }),
                name,
            })
        };
        for n in names.iter().rev().take(2) {
            newest.push(look(n)?);
        }
        if let Some(r) = &flags.boot
            && let Ok(rr) = RootRef::parse(r)
            && let Some(n) = rr.pick(&names)
        {
            boot_source = Some(look(n)?);
        }
        retired = names.iter().map(ToString::to_string).collect();
    }
    Ok(Observed {
        root: layout::entry_at(top, &layout.root)?,
        blank: layout::entry_at(top, &layout.blank)?,
        staging: layout::entry_at(top, &staging_name)?,
        old_roots,
        retired,
        newest,
        boot_source,
    })
}

fn refuse(rule: &'static str, msg: impl Into<String>) -> Refusal {
    Refusal::new(rule, msg)
}

/// A root that nothing has written to since it was snapshotted from `source` has nothing to retire.
fn untouched_copy_of(root: &SubvolumeInfo, source: &SubvolumeInfo) -> bool {
    root.parent_uuid.as_deref() == Some(source.uuid.as_str()) && root.generation <= root.otransid
}

/// Decides what to do. Pure: same input, same plan.
pub fn plan(obs: &Observed, layout: &Layout, ctx: &BootContext) -> Result<Plan, Refusal> {
    let mut notes = Vec::new();
    if ctx.flags.skip {
        notes.push("tabula.skip is on the kernel command line: no rollback this boot".to_string());
        return Ok(Plan {
            actions: Vec::new(),
            notes,
            retire_as: None,
        });
    }
    let staging = format!("{}{STAGING_SUFFIX}", layout.root);
    match &obs.old_roots {
        Entry::Missing => {
            return Err(refuse(
                "old-roots-missing",
                format!(
                    "there is no '{}' subvolume in the top level: run `tabula init` first",
                    layout.old_roots
                ),
            ));
        }
        Entry::Other => {
            return Err(refuse(
                "old-roots-not-subvolume",
                format!(
                    "'{}' is not a subvolume (a plain directory?): tabula only retires roots into a subvolume it \
                     can tell apart from everything else; move it aside and run `tabula init`",
                    layout.old_roots
                ),
            ));
        }
        Entry::Subvolume { info } if info.parent_id != btrfs::TOP_LEVEL_ID || info.read_only => {
            return Err(refuse(
                "old-roots-not-ours",
                format!(
                    "'{}' is not a writable subvolume directly in the top level",
                    layout.old_roots
                ),
            ));
        }
        Entry::Subvolume { .. } => {}
    }
    if obs.root == Entry::Other {
        return Err(refuse(
            "root-not-subvolume",
            format!(
                "'{}' in the top level is not a subvolume: tabula will not move it",
                layout.root
            ),
        ));
    }
    if obs.staging == Entry::Other {
        return Err(refuse(
            "staging-not-subvolume",
            format!("'{staging}' exists and is not a subvolume: move it out of the way"),
        ));
    }

    // The source of the new root: the blank, or a retired root asked for on the command line.
    let (source_name, source) = match &ctx.flags.boot {
        Some(r) => match &obs.boot_source {
            Some(Retired {
                name,
                info: Some(info),
                ..
            }) => {
                notes.push(format!("tabula.boot={r}: this boot runs on a writable snapshot of '{name}', which stays as it is"));
                (format!("{}/{name}", layout.old_roots), Some(info))
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
            layout.blank.clone(),
            obs.blank.subvolume().filter(|i| i.read_only),
        ),
    };
    // A missing or writable blank stops everything, unless we are only finishing an interrupted run.
    let blank_problem = match &obs.blank {
        Entry::Missing => Some((
            "blank-missing",
            format!(
                "the blank snapshot '{}' does not exist: run `tabula init`",
                layout.blank
            ),
        )),
        Entry::Other => Some((
            "blank-not-subvolume",
            format!("'{}' is not a subvolume", layout.blank),
        )),
        Entry::Subvolume { info } if !info.read_only => Some((
            "blank-writable",
            format!(
                "the blank snapshot '{}' is writable, so it may no longer be blank: make a read-only blank \
                 (`tabula init`), or if it is right, `btrfs property set -ts <top>/{} ro true`",
                layout.blank, layout.blank
            ),
        )),
        Entry::Subvolume { .. } => None,
    };
    if ctx.flags.boot.is_none()
        && let Some((rule, msg)) = &blank_problem
    {
        let finishing = obs.root == Entry::Missing && obs.staging.subvolume().is_some();
        if !finishing {
            return Err(refuse(rule, msg.clone()));
        }
    }

    let mut actions = Vec::new();
    let newest = obs.newest.first();
    let mut retire_as = None;

    match (&obs.root, source) {
        (Entry::Subvolume { info: root }, Some(src))
            if ctx.flags.boot.is_none() && untouched_copy_of(root, src) =>
        {
            notes.push(format!(
                "'{}' is still the untouched snapshot of '{source_name}': nothing to retire",
                layout.root
            ));
        }
        (Entry::Subvolume { info: root }, _) => {
            match obs.staging.subvolume() {
                Some(_) => notes.push(format!("reusing '{staging}' left by an interrupted run")),
                None => actions.push(Action::Snapshot {
                    source: source_name.clone(),
                    staging: staging.clone(),
                }),
            }
            let seq = obs
                .retired
                .iter()
                .filter_map(|n| RetiredName::parse(n))
                .map(|n| n.seq)
                .max()
                .unwrap_or(0)
                + 1;
            let name = RetiredName::new(seq, ctx.now).to_string();
            actions.push(Action::Retire {
                root: layout.root.clone(),
                name: name.clone(),
            });
            actions.push(Action::Promote {
                staging: staging.clone(),
                root: layout.root.clone(),
            });
            actions.push(Action::WriteMetadata {
                meta: Box::new(new_meta(&name, seq, root, newest, ctx, None)),
            });
            actions.push(Action::Freeze { name: name.clone() });
            retire_as = Some(name);
        }
        (Entry::Missing, _) => {
            match obs.staging.subvolume() {
                Some(_) => notes.push(format!(
                    "'{}' is missing and '{staging}' exists: finishing an interrupted run",
                    layout.root
                )),
                None => {
                    notes.push(format!(
                        "'{}' is missing: creating it from '{source_name}'",
                        layout.root
                    ));
                    actions.push(Action::Snapshot {
                        source: source_name.clone(),
                        staging: staging.clone(),
                    });
                }
            }
            actions.push(Action::Promote {
                staging: staging.clone(),
                root: layout.root.clone(),
            });
        }
        // Refused above.
        (Entry::Other, _) => {}
    }

    // Complete the newest retired root if an interrupted run left it without metadata or writable. The
    // completion goes before a new retirement, so metadata files appear in sequence order.
    let mut completion = Vec::new();
    if let Some(n) = newest
        && let Some(info) = &n.info
    {
        let meta_ok = n.meta.as_ref().is_some_and(|m| m.uuid == info.uuid);
        if !meta_ok {
            notes.push(format!(
                "'{}/{}' has no metadata (interrupted run): writing it now",
                layout.old_roots, n.name
            ));
            let seq = RetiredName::parse(&n.name).map_or(0, |x| x.seq);
            let note = "metadata completed after an interrupted rollback; retired_at is the completion time";
            let meta = new_meta(&n.name, seq, info, obs.newest.get(1), ctx, Some(note));
            completion.push(Action::WriteMetadata {
                meta: Box::new(meta),
            });
        }
        if !meta_ok || !info.read_only {
            completion.push(Action::Freeze {
                name: n.name.clone(),
            });
        }
    }
    let at = actions
        .iter()
        .position(|a| matches!(a, Action::Retire { .. }))
        .unwrap_or(actions.len());
    actions.splice(at..at, completion);
    if !actions.is_empty() {
        actions.push(Action::Sync);
    }
    Ok(Plan {
        actions,
        notes,
        retire_as,
    })
}

/// Metadata for retiring `root` as `name`. The boot that ran on it is known when the previous retirement
/// recorded that it created this very root (`retired_by.new_root_uuid`).
fn new_meta(
    name: &str,
    seq: u64,
    root: &SubvolumeInfo,
    previous: Option<&Retired>,
    ctx: &BootContext,
    note: Option<&str>,
) -> RootMeta {
    let prev_meta = previous.and_then(|p| p.meta.as_ref());
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

/// Executes `plan` on the top level `top`. On a failed promotion the retirement is undone.
pub fn apply(top: BorrowedFd<'_>, layout: &Layout, plan: &Plan) -> Result<()> {
    let old_roots = layout::open_subvolume(top, &layout.old_roots)?;
    let mut retired: Option<String> = None;
    for action in &plan.actions {
        match action {
            Action::Snapshot { source, staging } => {
                let (dir, name) = match source.split_once('/') {
                    Some((_, n)) => (old_roots.as_fd(), n),
                    None => (top, source.as_str()),
                };
                let src = layout::open_subvolume(dir, name)?;
                fault::fail("snapshot")?;
                btrfs::snapshot(src.as_fd(), top, staging, false).with_context(|| {
                    format!("creating the new root '{staging}' from '{source}'")
                })?;
                info!("created '{staging}' from '{source}'");
                fault::point("after-snapshot");
            }
            Action::Retire { root, name } => {
                layout::rename_noreplace(top, root, old_roots.as_fd(), name).with_context(
                    || format!("retiring '{root}' as '{}/{name}'", layout.old_roots),
                )?;
                retired = Some(name.clone());
                info!("retired '{root}' as '{}/{name}'", layout.old_roots);
                fault::point("after-retire");
            }
            Action::Promote { staging, root } => {
                let promoted = fault::fail("promote").and_then(|()| {
                    layout::rename_noreplace(top, staging, top, root)
                        .with_context(|| format!("renaming '{staging}' to '{root}'"))
                });
                if let Err(e) = promoted {
                    if let Some(name) = &retired {
                        put_back(top, old_roots.as_fd(), layout, name, root);
                    }
                    return Err(e);
                }
                info!("'{root}' is a fresh root");
                fault::point("after-promote");
            }
            Action::WriteMetadata { meta } => {
                let mut meta = (**meta).clone();
                if Some(&meta.name) == retired.as_ref() {
                    let root = layout::open_subvolume(top, &layout.root)?;
                    meta.retired_by.new_root_uuid = Some(btrfs::subvolume_info(root.as_fd())?.uuid);
                }
                fault::fail("metadata")?;
                layout::write_meta(old_roots.as_fd(), &meta)?;
                fault::point("after-metadata");
            }
            Action::Freeze { name } => {
                let sub = layout::open_subvolume(old_roots.as_fd(), name)?;
                btrfs::set_read_only(sub.as_fd(), true)
                    .with_context(|| format!("making '{}/{name}' read-only", layout.old_roots))?;
                fault::point("after-freeze");
            }
            Action::Sync => btrfs::sync(top).context("committing the rollback")?,
        }
    }
    Ok(())
}

/// Undoes a retirement so that `root` exists again; logs loudly when even that fails.
fn put_back(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    layout: &Layout,
    name: &str,
    root: &str,
) {
    match layout::rename_noreplace(old_roots, name, top, root) {
        Ok(()) => {
            let _ = btrfs::sync(top);
            warn!(
                "put the old root back: '{}/{name}' is '{root}' again",
                layout.old_roots
            );
        }
        Err(e) => error!(
            "could not put the old root back ({e}): boot from a rescue system, mount the top level and \
             `mv {}/{name} {root}`",
            layout.old_roots
        ),
    }
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
        }
    }

    fn sub(
        id: u64,
        uuid: &str,
        parent_uuid: Option<&str>,
        ro: bool,
        gen_: u64,
        otransid: u64,
    ) -> Entry {
        Entry::Subvolume {
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
            staging: Entry::Missing,
            old_roots: sub(258, "old", None, false, 9, 3),
            retired: vec!["00041-2025-01-01T000000Z".into()],
            newest: vec![],
            boot_source: None,
        }
    }

    fn kinds(p: &Plan) -> Vec<&'static str> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Snapshot { .. } => "snapshot",
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
            ["snapshot", "retire", "promote", "meta", "freeze", "sync"]
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
            ["retire", "promote", "meta", "freeze", "sync"]
        );
        // Crash after retiring: no root, staging there, newest retired root without metadata.
        o.root = Entry::Missing;
        o.newest = vec![Retired {
            name: "00042-2025-10-09T085320Z".into(),
            info: sub(300, "r", Some("blank"), false, 20, 10)
                .subvolume()
                .cloned(),
            meta: None,
        }];
        let p = plan(&o, &layout(), &ctx()).unwrap();
        assert_eq!(kinds(&p), ["promote", "meta", "freeze", "sync"]);
        assert_eq!(p.retire_as, None);
        // Crash after promoting: the fresh root is untouched; only the retired root is completed.
        o.root = sub(301, "s", Some("blank"), false, 11, 11);
        o.staging = Entry::Missing;
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
        o.blank = Entry::Missing;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "blank-missing"
        );
        o.root = Entry::Missing;
        o.staging = sub(301, "s", Some("blank"), false, 11, 11);
        assert_eq!(
            kinds(&plan(&o, &layout(), &ctx()).unwrap()),
            ["promote", "sync"]
        );
        o.staging = Entry::Missing;
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
        o.old_roots = Entry::Other;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "old-roots-not-subvolume"
        );
        let mut o = normal();
        o.root = Entry::Other;
        assert_eq!(
            plan(&o, &layout(), &ctx()).unwrap_err().rule,
            "root-not-subvolume"
        );
        let mut o = normal();
        o.staging = Entry::Other;
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
        let prev = Retired {
            name: "00041-x".into(),
            info: None,
            meta: Some(prev),
        };
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
        assert_eq!(m3.clock_floor, prev.meta.as_ref().unwrap().clock_floor);
    }
}
