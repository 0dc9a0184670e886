//! `tabula persist sync`: copy changed `how = "copy"` files from the running system back into persistent
//! storage.
//!
//! Plan, then apply: [`plan_sync`] compares each live file with its persistent copy (never writes);
//! [`apply_sync`] copies what changed through [`super::copy::replace_with_copy`] (temporary file in the
//! persistent directory, fsync, rename, fsync of the directory), so a crash leaves the old or the new
//! copy, never a part. Every path is resolved without following symlinks. A live file that is gone is
//! kept in persistent storage unless `--prune` says otherwise; a live file replaced by a symlink or by
//! something that is not a regular file is refused and reported, never copied.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

use super::copy::{FaultPoints, is_current, remove_file, replace_with_copy};
use super::plan::{Ctx, classify, parents_of};
use super::walk::{Owner, RULE_SYMLINK, Walker, refuse_hard_links};
use super::{How, Op, Perms, Plan, PlanState, Verdict};
use crate::config::Config;
use crate::error::Refusal;

/// Refusal rule: a copied file was replaced on the live system by something that is not a regular file.
pub const RULE_NOT_REGULAR: &str = "not-a-regular-file";

/// Fault points of a sync (fault-injection builds abort there).
pub const SYNC_FAULTS: FaultPoints = FaultPoints {
    created: "sync-created",
    data: "sync-data",
    before_rename: "sync-before-rename",
    renamed: "sync-renamed",
};

/// Choices of `tabula persist sync`.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only these targets (each must be a `how = "copy"` entry); all copy entries when empty.
    pub paths: Vec<PathBuf>,
    /// Remove the persistent copy of a file deleted on the live system.
    pub prune: bool,
}

/// What one path looks like, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing there.
    Missing,
    /// A regular file.
    Regular,
    /// A symlink.
    Symlink,
    /// A directory, device, fifo or socket.
    Other,
}

/// What a sync does (or did) for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncAction {
    /// The persistent copy equals the live file: nothing to do.
    InSync,
    /// Copy the live file over its persistent copy (creating it, and missing parents, if needed).
    Copy,
    /// The live file is gone; the persistent copy stays (`--prune` removes it).
    Kept,
    /// Remove the persistent copy of a file deleted on the live system (`--prune`).
    Prune,
    /// Neither the live file nor a persistent copy exists.
    Absent,
    /// A safety rule refused the entry (a symlink or a non-regular file on either side).
    Refused,
    /// The entry could not be inspected or done.
    Failed,
}

/// Pure decision for one entry: `live` is the file on the running system, `persisted` its persistent
/// copy, `same` whether both are regular files with equal owner, mode and content.
pub fn decide(live: Found, persisted: Found, same: bool, prune: bool) -> SyncAction {
    match (live, persisted) {
        (Found::Symlink | Found::Other, _) | (_, Found::Symlink) => SyncAction::Refused,
        (_, Found::Other) => SyncAction::Failed,
        (Found::Regular, Found::Regular) if same => SyncAction::InSync,
        (Found::Regular, _) => SyncAction::Copy,
        (Found::Missing, Found::Regular) if prune => SyncAction::Prune,
        (Found::Missing, Found::Regular) => SyncAction::Kept,
        (Found::Missing, Found::Missing) => SyncAction::Absent,
    }
}

/// One entry of a sync plan or report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncEntry {
    /// The file on the running system.
    pub target: PathBuf,
    /// Its persistent copy.
    pub source: PathBuf,
    /// What is (or was) done.
    pub action: SyncAction,
    /// Whether it was done (reports only; a plan says `false`).
    pub done: bool,
    /// The refusal rule, for refused entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// Why, for entries kept, refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Missing parent directories of the persistent copy to create first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mkdirs: Vec<Op>,
}

/// Everything `tabula persist sync` would do (or did).
pub type SyncPlan = Plan<SyncEntry>;

impl Verdict for SyncEntry {
    fn is_failure(&self) -> bool {
        matches!(self.action, SyncAction::Refused | SyncAction::Failed)
    }
}

impl SyncPlan {
    /// One line per entry, for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.entries.is_empty() {
            s.push_str("nothing to sync: no `how = \"copy\"` entry\n");
        }
        for e in &self.entries {
            let what = match (e.action, e.done) {
                (SyncAction::InSync, _) => "in sync",
                (SyncAction::Copy, false) => "to copy",
                (SyncAction::Copy, true) => "copied",
                (SyncAction::Kept, _) => "deleted, kept",
                (SyncAction::Prune, false) => "to prune",
                (SyncAction::Prune, true) => "pruned",
                (SyncAction::Absent, _) => "absent",
                (SyncAction::Refused, _) => "REFUSED",
                (SyncAction::Failed, _) => "FAILED",
            };
            let _ = write!(s, "{what:<14} {}", e.target.display());
            if let Some(m) = &e.message {
                let _ = write!(s, "  ({m})");
            }
            let _ = writeln!(s);
        }
        s
    }
}

/// Plans `tabula persist sync` on the system whose root is `root`. Changes nothing.
pub fn plan_sync(config: &Config, root: &Path, opts: &SyncOptions) -> Result<SyncPlan> {
    let copies: Vec<_> = config
        .persist
        .entries()
        .into_iter()
        .filter(|e| e.entry.how == How::Copy)
        .collect();
    for p in &opts.paths {
        if !copies.iter().any(|e| e.target() == *p) {
            bail!(
                "'{}' is not a `how = \"copy\"` entry of {}",
                p.display(),
                config.file.display()
            );
        }
    }
    let ctx = Ctx::new(config, root)?;
    ctx.check_persist_mounted()?;
    let entries = copies
        .iter()
        .map(|e| e.target())
        .filter(|t| opts.paths.is_empty() || opts.paths.contains(t))
        .map(|target| plan_entry(&ctx, target, opts.prune))
        .collect();
    Ok(SyncPlan {
        root: root.to_path_buf(),
        persist: config.persist.path.clone(),
        entries,
    })
}

fn plan_entry(ctx: &Ctx<'_>, target: PathBuf, prune: bool) -> SyncEntry {
    let source = ctx.config.persist.source_of(&target);
    let mut e = SyncEntry {
        target,
        source,
        action: SyncAction::Absent,
        done: false,
        rule: None,
        message: None,
        mkdirs: Vec::new(),
    };
    if let Err(err) = inspect(ctx, &mut e, prune) {
        let (state, rule) = classify(&err);
        e.action = if state == PlanState::Refused {
            SyncAction::Refused
        } else {
            SyncAction::Failed
        };
        e.rule = rule;
        e.message = Some(format!("{err:#}"));
        e.mkdirs.clear();
    }
    e
}

fn found(st: Option<&crate::fsx::Stat>) -> Found {
    match st {
        None => Found::Missing,
        Some(st) if st.is_file() => Found::Regular,
        Some(st) if st.is_symlink() => Found::Symlink,
        Some(_) => Found::Other,
    }
}

fn inspect(ctx: &Ctx<'_>, e: &mut SyncEntry, prune: bool) -> Result<()> {
    let w = &ctx.walker;
    let live_st = w.stat(&e.target)?;
    let live = found(live_st.as_ref());
    if let Some(st) = &live_st
        && live == Found::Regular
    {
        refuse_hard_links(st, &w.shown(&e.target))?;
    }

    // Parents of the persistent copy: never through a symlink; missing ones get the usual defaults.
    let mut missing = false;
    for tp in parents_of(&e.target) {
        let sp = ctx.config.persist.source_of(&tp);
        let st = if missing { None } else { w.stat(&sp)? };
        match st {
            None => {
                missing = true;
                let o = ctx.parent_owner(&tp)?;
                e.mkdirs.push(Op::Mkdir {
                    path: sp,
                    uid: o.uid,
                    gid: o.gid,
                    mode: Perms(o.mode),
                });
            }
            Some(st) if st.is_dir() => {}
            Some(st) if st.is_symlink() => {
                return Err(super::walk::symlink_refusal(&w.shown(&sp)));
            }
            Some(_) => bail!(
                "'{}' is in the way and is not a directory",
                w.shown(&sp).display()
            ),
        }
    }
    let persisted = if missing {
        Found::Missing
    } else {
        found(w.stat(&e.source)?.as_ref())
    };
    let same = live == Found::Regular
        && persisted == Found::Regular
        && is_current(w, &e.target, &e.source)?;
    e.action = decide(live, persisted, same, prune);
    match e.action {
        SyncAction::Refused => {
            let (rule, message) = match (live, persisted) {
                (Found::Symlink, _) => (
                    RULE_SYMLINK,
                    format!(
                        "'{}' was replaced by a symlink: not copied (tabula never follows it)",
                        w.shown(&e.target).display()
                    ),
                ),
                (Found::Other, _) => (
                    RULE_NOT_REGULAR,
                    format!(
                        "'{}' was replaced by something that is not a regular file: not copied",
                        w.shown(&e.target).display()
                    ),
                ),
                _ => (
                    RULE_SYMLINK,
                    format!(
                        "'{}' is a symlink: tabula never writes through a symlink in persistent storage; \
                         replace it with a regular file",
                        w.shown(&e.source).display()
                    ),
                ),
            };
            return Err(anyhow::Error::new(Refusal::new(rule, message)));
        }
        SyncAction::Failed => bail!(
            "'{}' exists and is not a regular file",
            w.shown(&e.source).display()
        ),
        SyncAction::Kept => {
            e.message = Some(format!(
                "'{}' is gone from the live system; its persistent copy stays (`--prune` removes it)",
                e.target.display()
            ));
        }
        _ => {}
    }
    if e.action != SyncAction::Copy {
        e.mkdirs.clear();
    }
    Ok(())
}

/// Performs `plan`: each entry is resolved again without following symlinks; one failing entry does not
/// stop the others. Returns the plan with `done` set (and failures recorded).
pub fn apply_sync(plan: &SyncPlan) -> SyncPlan {
    let mut out = plan.clone();
    let walker = Walker::open(&plan.root);
    for e in &mut out.entries {
        if !matches!(e.action, SyncAction::Copy | SyncAction::Prune) {
            continue;
        }
        let result = match &walker {
            Ok(w) => apply_entry(w, e),
            Err(err) => Err(anyhow::anyhow!("{err:#}")),
        };
        match result {
            Ok(()) => {
                e.done = true;
                tracing::info!(
                    "{} '{}' to '{}'",
                    if e.action == SyncAction::Copy {
                        "synced"
                    } else {
                        "pruned the persistent copy of"
                    },
                    e.target.display(),
                    e.source.display()
                );
            }
            Err(err) => {
                let (state, rule) = classify(&err);
                e.action = if state == PlanState::Refused {
                    SyncAction::Refused
                } else {
                    SyncAction::Failed
                };
                e.rule = rule;
                e.message = Some(format!("{err:#}"));
                tracing::error!("{}: {err:#}", e.target.display());
            }
        }
    }
    out
}

fn apply_entry(w: &Walker, e: &SyncEntry) -> Result<()> {
    match e.action {
        SyncAction::Copy => {
            for op in &e.mkdirs {
                if let Op::Mkdir {
                    path,
                    uid,
                    gid,
                    mode,
                } = op
                {
                    w.mkdir(
                        path,
                        Owner {
                            uid: *uid,
                            gid: *gid,
                            mode: mode.0,
                        },
                    )?;
                }
            }
            let copied = replace_with_copy(w, &e.target, &e.source, SYNC_FAULTS)?;
            tracing::debug!(
                "'{}': data {}",
                e.source.display(),
                if copied.reflinked {
                    "reflinked"
                } else {
                    "copied (copy_file_range)"
                }
            );
            for warning in &copied.warnings {
                tracing::warn!("{warning}");
            }
            Ok(())
        }
        SyncAction::Prune => {
            // The live file must still be gone: a program may have written it since the plan.
            if w.stat(&e.target)?.is_some() {
                bail!(
                    "'{}' exists again: not pruned; run the sync again",
                    w.shown(&e.target).display()
                );
            }
            remove_file(w, &e.source).map(|_| ())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Found::*;

    #[test]
    fn decisions() {
        assert_eq!(decide(Regular, Regular, true, false), SyncAction::InSync);
        assert_eq!(decide(Regular, Regular, false, false), SyncAction::Copy);
        assert_eq!(decide(Regular, Missing, false, false), SyncAction::Copy);
        assert_eq!(decide(Missing, Regular, false, false), SyncAction::Kept);
        assert_eq!(decide(Missing, Regular, false, true), SyncAction::Prune);
        assert_eq!(decide(Missing, Missing, false, true), SyncAction::Absent);
        // Never copied, never pruned through or onto anything but regular files.
        for p in [Missing, Regular, Symlink, Other] {
            for prune in [false, true] {
                assert_eq!(decide(Symlink, p, false, prune), SyncAction::Refused);
                assert_eq!(decide(Other, p, false, prune), SyncAction::Refused);
            }
        }
        for live in [Missing, Regular] {
            for prune in [false, true] {
                assert_eq!(decide(live, Symlink, false, prune), SyncAction::Refused);
                assert_eq!(decide(live, Other, false, prune), SyncAction::Failed);
            }
        }
    }

    #[test]
    fn fault_points_are_listed_in_order() {
        let f = SYNC_FAULTS;
        assert_eq!(
            crate::fault::SYNC_POINTS,
            [f.created, f.data, f.before_rename, f.renamed]
        );
    }

    #[test]
    fn text_says_what_happens() {
        let entry = |action, done| SyncEntry {
            target: PathBuf::from("/etc/shadow"),
            source: PathBuf::from("/persist/etc/shadow"),
            action,
            done,
            rule: None,
            message: None,
            mkdirs: Vec::new(),
        };
        let plan = SyncPlan {
            root: PathBuf::from("/"),
            persist: PathBuf::from("/persist"),
            entries: vec![
                entry(SyncAction::Copy, false),
                entry(SyncAction::Copy, true),
                entry(SyncAction::Refused, false),
            ],
        };
        let text = plan.to_text();
        assert!(text.contains("to copy        /etc/shadow"), "{text}");
        assert!(text.contains("copied         /etc/shadow"), "{text}");
        assert!(text.contains("REFUSED"), "{text}");
        assert_eq!(plan.failed(), 1);
        let empty = SyncPlan {
            entries: Vec::new(),
            ..plan
        };
        assert!(empty.to_text().starts_with("nothing to sync"));
    }
}
