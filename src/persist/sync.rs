//! `tabula persist sync`: copy changed `how = "copy"` files from the running system back into persistent
//! storage.
//!
//! Plan, then apply, in persist's words: a sync plan is a [`Plan`] of [`PlannedEntry`]s with the one
//! [`State`]. [`plan_sync`] compares each live file with its persistent copy (never writes) and the pure
//! [`decide`] turns what it found into the entry's state and operations ([`Op::CopyBack`] after the
//! [`Op::Mkdir`]s of missing parents, or [`Op::RemoveCopy`]); [`apply_sync`] performs them: a copy goes
//! through [`super::copy::replace_with_copy`] (temporary file in the persistent directory, fsync, rename,
//! fsync of the directory), so a crash leaves the old or the new copy, never a part. Every path is
//! resolved without following symlinks. A live file that is gone is kept in persistent storage unless
//! `--prune` says otherwise; a live file replaced by a symlink or by something that is not a regular file
//! is refused and reported, never copied.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Serialize, Serializer};

use super::copy::{FaultPoints, remove_file, replace_with_copy};
use super::observe::{Eyes, Failure, ObservedEntry, Probe, Stat, observe_entry};
use super::plan::{
    Accounts, check_persist_mounted_at, classify, fail, parent_owner, parents_of,
    refuse_hard_links, resolve, symlink_failure,
};
use super::walk::{Owner, RULE_SYMLINK, Walker};
use super::{How, Kind, Op, Perms, Plan, PlannedEntry, State};
use crate::config::{Config, EntryRef};
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

/// The rule for one entry, pure: from what the live file (`live`, at `e.target`) and its persistent copy
/// (`persisted`, at `e.source`) are, and whether both are regular files with equal owner, mode and
/// content (`same`), sets the entry's state, whether it is synced, and its last operation, after the
/// [`Op::Mkdir`]s of missing parents already in `e.ops` (dropped when nothing is copied). `root`: where
/// messages show paths from.
///
/// | live | persistent copy | state | operation | `action` |
/// |---|---|---|---|---|
/// | regular | regular, the same | `in_place` (synced) | | `in_sync` |
/// | regular | regular and different, or missing | `ready` | [`Op::CopyBack`] | `copy` |
/// | missing | regular | `in_place` (the copy stays, see the message) | | `kept` |
/// | missing | regular, with `prune` | `ready` | [`Op::RemoveCopy`] | `prune` |
/// | missing | missing | `source_missing` | | `absent` |
/// | a symlink or not a regular file | any | `refused` | | `refused` |
/// | any | a symlink | `refused` | | `refused` |
/// | any | not a regular file | `failed` | | `failed` |
pub fn decide(
    e: &mut PlannedEntry,
    root: &Path,
    live: Found,
    persisted: Found,
    same: bool,
    prune: bool,
) {
    let shown = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let refuse = |e: &mut PlannedEntry, rule: &'static str, message: String| {
        e.state = State::Refused;
        e.rule = Some(rule);
        e.message = Some(Refusal::new(rule, message).to_string());
    };
    let step = match (live, persisted) {
        (Found::Symlink, _) => {
            let m = format!(
                "'{}' was replaced by a symlink: not copied (tabula never follows it)",
                shown(&e.target).display()
            );
            refuse(e, RULE_SYMLINK, m);
            None
        }
        (Found::Other, _) => {
            let m = format!(
                "'{}' was replaced by something that is not a regular file: not copied",
                shown(&e.target).display()
            );
            refuse(e, RULE_NOT_REGULAR, m);
            None
        }
        (_, Found::Symlink) => {
            let m = format!(
                "'{}' is a symlink: tabula never writes through a symlink in persistent storage; \
                 replace it with a regular file",
                shown(&e.source).display()
            );
            refuse(e, RULE_SYMLINK, m);
            None
        }
        (_, Found::Other) => {
            e.state = State::Failed;
            e.message = Some(format!(
                "'{}' exists and is not a regular file",
                shown(&e.source).display()
            ));
            None
        }
        (Found::Regular, Found::Regular) if same => {
            e.state = State::InPlace;
            e.synced = Some(true);
            None
        }
        (Found::Regular, _) => {
            e.state = State::Ready;
            e.synced = Some(false);
            Some(Op::CopyBack {
                from: e.target.clone(),
                to: e.source.clone(),
            })
        }
        (Found::Missing, Found::Regular) if prune => {
            e.state = State::Ready;
            Some(Op::RemoveCopy {
                path: e.source.clone(),
            })
        }
        (Found::Missing, Found::Regular) => {
            e.state = State::InPlace;
            e.message = Some(format!(
                "'{}' is gone from the live system; its persistent copy stays (`--prune` removes it)",
                e.target.display()
            ));
            None
        }
        (Found::Missing, Found::Missing) => {
            e.state = State::SourceMissing;
            None
        }
    };
    match step {
        Some(op @ Op::CopyBack { .. }) => e.ops.push(op),
        Some(op) => e.ops = vec![op],
        None => e.ops.clear(),
    }
}

/// What a sync entry does (or did): the word of the sync documents' `action` field, and the label of
/// its text line. Derived from the entry alone: its state, its operations and whether it is synced.
pub fn sync_action(e: &PlannedEntry) -> (&'static str, &'static str) {
    let prune = e.ops.iter().any(|o| matches!(o, Op::RemoveCopy { .. }));
    match (e.state, prune) {
        (State::Refused, _) => ("refused", "REFUSED"),
        (State::Failed, _) => ("failed", "FAILED"),
        (State::SourceMissing, _) => ("absent", "absent"),
        (State::InPlace, _) if e.synced == Some(true) => ("in_sync", "in sync"),
        (State::InPlace, _) => ("kept", "deleted, kept"),
        (State::Ready, false) => ("copy", "to copy"),
        (State::Done, false) => ("copy", "copied"),
        (State::Ready, true) => ("prune", "to prune"),
        (State::Done, true) => ("prune", "pruned"),
    }
}

/// Everything `tabula persist sync` would do (or did): a [`Plan`] of the `how = "copy"` entries, whose
/// operations copy live files back into persistent storage. A type of its own so that it can never be
/// given to [`super::apply`], and so that its documents keep the fields readers know (see its
/// `Serialize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan(pub Plan);

impl SyncPlan {
    /// The entries.
    pub fn entries(&self) -> &[PlannedEntry] {
        &self.0.entries
    }

    /// `Some` when some entries were refused or failed: the error for the exit status.
    pub fn partial_failure(&self) -> Option<crate::error::PartialFailure> {
        self.0.partial_failure()
    }

    /// One line per entry, for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.0.entries.is_empty() {
            s.push_str("nothing to sync: no `how = \"copy\"` entry\n");
        }
        for e in &self.0.entries {
            let (_, what) = sync_action(e);
            let _ = write!(s, "{what:<14} {}", e.target.display());
            if let Some(m) = &e.message {
                let _ = write!(s, "  ({m})");
            }
            let _ = writeln!(s);
        }
        s
    }
}

/// The plan's document, each entry with three fields derived from it that the sync documents had before
/// their entries were [`PlannedEntry`]s: `action` ([`sync_action`]), `done` (a flag: the state is
/// `done`) and `mkdirs` (its [`Op::Mkdir`]s).
impl Serialize for SyncPlan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            entry: PlannedEntry,
            action: &'static str,
            done: bool,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            mkdirs: Vec<&'a Op>,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            root: &'a Path,
            persist: &'a Path,
            entries: Vec<Entry<'a>>,
        }
        let entries = self
            .0
            .entries
            .iter()
            .map(|e| Entry {
                // A sync records what it did in its state: no `done` lines to clash with the flag.
                entry: PlannedEntry {
                    done: Vec::new(),
                    ..e.clone()
                },
                action: sync_action(e).0,
                done: e.state == State::Done,
                mkdirs: e
                    .ops
                    .iter()
                    .filter(|o| matches!(o, Op::Mkdir { .. }))
                    .collect(),
            })
            .collect();
        Doc {
            root: &self.0.root,
            persist: &self.0.persist,
            entries,
        }
        .serialize(s)
    }
}

/// Plans `tabula persist sync` on the system whose root is `root`. Changes nothing: observes each chosen
/// entry as `tabula persist` does ([`super::observe()`]), then decides from that alone.
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
    let eyes = Eyes::open(config, root)?;
    check_persist_mounted_at(&eyes, config)?;
    let accounts = eyes.accounts(config);
    let entries = copies
        .iter()
        .filter(|e| opts.paths.is_empty() || opts.paths.contains(&e.target()))
        .map(|e| {
            let observed = observe_entry(&eyes, config, e);
            sync_entry(root, config, &accounts, e, &observed, opts.prune)
        })
        .collect();
    Ok(SyncPlan(Plan {
        root: root.to_path_buf(),
        persist: config.persist.path.clone(),
        entries,
    }))
}

/// The sync of one `how = "copy"` entry from what was observed of it (`root`: where messages show paths
/// from): pure. The paths are read as a walk from the root finds them (a symlink or a file on the way of
/// either side refuses or fails the entry; a live file with other hard links is refused), missing parents
/// of the persistent copy get [`Op::Mkdir`]s with the usual owners, and [`decide`] does the rest.
pub(crate) fn sync_entry(
    root: &Path,
    config: &Config,
    accounts: &Accounts,
    e: &EntryRef<'_>,
    o: &ObservedEntry,
    prune: bool,
) -> PlannedEntry {
    let target = e.target();
    let source = config.persist.source_of(&target);
    let mut p = PlannedEntry::new(target, source, Kind::File, How::Copy);
    if let Err(f) = sync_rules(&mut p, root, config, accounts, o, prune) {
        p.settle_failure(f);
    }
    p
}

fn found(st: Option<&Stat>) -> Found {
    match st {
        None => Found::Missing,
        Some(st) if st.is_file() => Found::Regular,
        Some(st) if st.is_symlink() => Found::Symlink,
        Some(_) => Found::Other,
    }
}

fn sync_rules(
    e: &mut PlannedEntry,
    root: &Path,
    config: &Config,
    accounts: &Accounts,
    o: &ObservedEntry,
    prune: bool,
) -> Result<(), Failure> {
    let shown = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let parents = parents_of(&e.target);
    let shown_parents: Vec<PathBuf> = parents.iter().map(|p| shown(p)).collect();
    let live_st = resolve(&o.target_chain, &shown_parents)?;
    let live = found(live_st.as_ref());
    if let Some(st) = &live_st
        && live == Found::Regular
    {
        refuse_hard_links(st, &shown(&e.target))?;
    }

    // Parents of the persistent copy: never through a symlink; missing ones get the usual defaults.
    let mut missing = false;
    for (i, tp) in parents.iter().enumerate() {
        let sp = config.persist.source_of(tp);
        let probe = match o.source_chain.get(i) {
            Some(p) if !missing => p,
            _ => &Probe::Missing,
        };
        match probe {
            Probe::Missing => {
                missing = true;
                let owner = parent_owner(config, accounts, tp)?;
                e.ops.push(Op::Mkdir {
                    path: sp,
                    uid: owner.uid,
                    gid: owner.gid,
                    mode: Perms(owner.mode),
                });
            }
            Probe::Found(st) if st.is_dir() => {}
            Probe::Found(st) if st.is_symlink() => return Err(symlink_failure(&shown(&sp))),
            Probe::Found(_) => {
                return fail(format!(
                    "'{}' is in the way and is not a directory",
                    shown(&sp).display()
                ));
            }
            Probe::Failed(f) => return Err(f.clone()),
        }
    }
    let persisted = match o.source_chain.get(parents.len()) {
        Some(_) if missing => Found::Missing,
        Some(Probe::Found(st)) => found(Some(st)),
        Some(Probe::Failed(f)) => return Err(f.clone()),
        Some(Probe::Missing) | None => Found::Missing,
    };
    let same = live == Found::Regular
        && persisted == Found::Regular
        && match &o.copy_current {
            Some(Ok(same)) => *same,
            Some(Err(f)) => return Err(f.clone()),
            None => false,
        };
    decide(e, root, live, persisted, same, prune);
    Ok(())
}

/// Performs `plan`: each entry is resolved again without following symlinks; one failing entry does not
/// stop the others. Returns the plan with each `ready` entry `done`, or refused or failed.
pub fn apply_sync(plan: &SyncPlan) -> SyncPlan {
    let mut out = plan.clone();
    let walker = Walker::open(&plan.0.root);
    for e in &mut out.0.entries {
        if e.state != State::Ready {
            continue;
        }
        let result = match &walker {
            Ok(w) => apply_entry(w, e),
            Err(err) => Err(anyhow::anyhow!("{err:#}")),
        };
        match result {
            Ok(()) => {
                e.state = State::Done;
                let copied = sync_action(e).0 == "copy";
                if copied {
                    // The persistent copy now equals the live file.
                    e.synced = Some(true);
                }
                tracing::info!(
                    "{} '{}' to '{}'",
                    if copied {
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
                e.state = state;
                e.rule = rule;
                e.message = Some(format!("{err:#}"));
                tracing::error!("{}: {err:#}", e.target.display());
            }
        }
    }
    out
}

fn apply_entry(w: &Walker, e: &PlannedEntry) -> Result<()> {
    for op in &e.ops {
        match op {
            Op::Mkdir {
                path,
                uid,
                gid,
                mode,
            } => {
                w.mkdir(
                    path,
                    Owner {
                        uid: *uid,
                        gid: *gid,
                        mode: mode.0,
                    },
                )?;
            }
            Op::CopyBack { from, to } => {
                let copied = replace_with_copy(w, from, to, SYNC_FAULTS)?;
                tracing::debug!(
                    "'{}': data {}",
                    to.display(),
                    if copied.reflinked {
                        "reflinked"
                    } else {
                        "copied (copy_file_range)"
                    }
                );
                for warning in &copied.warnings {
                    tracing::warn!("{warning}");
                }
            }
            Op::RemoveCopy { path } => {
                // The live file must still be gone: a program may have written it since the plan.
                if w.stat(&e.target)?.is_some() {
                    bail!(
                        "'{}' exists again: not pruned; run the sync again",
                        w.shown(&e.target).display()
                    );
                }
                remove_file(w, path)?;
            }
            other => bail!("'{other}' is not a step of `tabula persist sync`"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Found::*;

    fn entry() -> PlannedEntry {
        PlannedEntry::new(
            PathBuf::from("/etc/shadow"),
            PathBuf::from("/persist/etc/shadow"),
            Kind::File,
            How::Copy,
        )
    }

    fn mkdir() -> Op {
        Op::Mkdir {
            path: PathBuf::from("/persist/etc"),
            uid: 0,
            gid: 0,
            mode: Perms(0o755),
        }
    }

    /// The entry [`decide`] makes of an entry whose persistent copy's parent is missing.
    fn decided(live: Found, persisted: Found, same: bool, prune: bool) -> PlannedEntry {
        let mut e = entry();
        e.ops.push(mkdir());
        decide(&mut e, Path::new("/"), live, persisted, same, prune);
        e
    }

    fn action(live: Found, persisted: Found, same: bool, prune: bool) -> &'static str {
        sync_action(&decided(live, persisted, same, prune)).0
    }

    #[test]
    fn decisions() {
        assert_eq!(action(Regular, Regular, true, false), "in_sync");
        assert_eq!(action(Regular, Regular, false, false), "copy");
        assert_eq!(action(Regular, Missing, false, false), "copy");
        assert_eq!(action(Missing, Regular, false, false), "kept");
        assert_eq!(action(Missing, Regular, false, true), "prune");
        assert_eq!(action(Missing, Missing, false, true), "absent");
        // Never copied, never pruned through or onto anything but regular files.
        for p in [Missing, Regular, Symlink, Other] {
            for prune in [false, true] {
                assert_eq!(action(Symlink, p, false, prune), "refused");
                assert_eq!(action(Other, p, false, prune), "refused");
            }
        }
        for live in [Missing, Regular] {
            for prune in [false, true] {
                assert_eq!(action(live, Symlink, false, prune), "refused");
                assert_eq!(action(live, Other, false, prune), "failed");
            }
        }
    }

    /// The whole rule in persist's words: what the two sides are -> the entry's state, whether it is
    /// synced, its operations, its rule, and the `action` derived from them.
    #[test]
    fn each_case_is_one_state_and_its_operations() {
        const COPY: &[&str] = &["mkdir", "copy_back"];
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            Found,
            Found,
            bool,
            bool,
            State,
            Option<bool>,
            &[&str],
            Option<&str>,
            &str,
        )> = vec![
            // live, persisted, same, prune -> state, synced, ops, rule, action
            (
                Regular,
                Regular,
                true,
                false,
                State::InPlace,
                Some(true),
                &[],
                None,
                "in_sync",
            ),
            (
                Regular,
                Regular,
                false,
                false,
                State::Ready,
                Some(false),
                COPY,
                None,
                "copy",
            ),
            (
                Regular,
                Missing,
                false,
                true,
                State::Ready,
                Some(false),
                COPY,
                None,
                "copy",
            ),
            (
                Missing,
                Regular,
                false,
                false,
                State::InPlace,
                None,
                &[],
                None,
                "kept",
            ),
            (
                Missing,
                Regular,
                false,
                true,
                State::Ready,
                None,
                &["remove_copy"],
                None,
                "prune",
            ),
            (
                Missing,
                Missing,
                false,
                true,
                State::SourceMissing,
                None,
                &[],
                None,
                "absent",
            ),
            (
                Symlink,
                Regular,
                false,
                false,
                State::Refused,
                None,
                &[],
                Some(RULE_SYMLINK),
                "refused",
            ),
            (
                Other,
                Regular,
                false,
                false,
                State::Refused,
                None,
                &[],
                Some(RULE_NOT_REGULAR),
                "refused",
            ),
            (
                Regular,
                Symlink,
                false,
                false,
                State::Refused,
                None,
                &[],
                Some(RULE_SYMLINK),
                "refused",
            ),
            (
                Missing,
                Other,
                false,
                true,
                State::Failed,
                None,
                &[],
                None,
                "failed",
            ),
        ];
        let mut failures = Vec::new();
        for (live, persisted, same, prune, state, synced, ops, rule, act) in table {
            let e = decided(live, persisted, same, prune);
            let got_ops: Vec<String> = e
                .ops
                .iter()
                .map(|o| match serde_json::to_value(o) {
                    Ok(v) => v["op"].as_str().unwrap_or("?").to_string(),
                    Err(err) => err.to_string(),
                })
                .collect();
            let ok = e.state == state
                && e.synced == synced
                && got_ops == ops
                && e.rule == rule
                && sync_action(&e).0 == act
                // Only a refusal or failure, and a kept copy, say why.
                && e.message.is_some() == (e.state.is_failure() || act == "kept");
            if !ok {
                failures.push(format!(
                    "{live:?} {persisted:?} same={same} prune={prune}: {e:#?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let e = decided(Symlink, Regular, false, false);
        assert_eq!(
            e.message.as_deref(),
            Some(
                "refused (symlink-in-path): '/etc/shadow' was replaced by a symlink: not copied \
                 (tabula never follows it)"
            )
        );
    }

    #[test]
    fn fault_points_are_listed_in_order() {
        let f = SYNC_FAULTS;
        assert_eq!(
            crate::fault::SYNC_POINTS,
            [f.created, f.data, f.before_rename, f.renamed]
        );
    }

    fn sync_plan(entries: Vec<PlannedEntry>) -> SyncPlan {
        SyncPlan(Plan {
            root: PathBuf::from("/"),
            persist: PathBuf::from("/persist"),
            entries,
        })
    }

    #[test]
    fn text_says_what_happens() {
        let done = |mut e: PlannedEntry| {
            e.state = State::Done;
            e
        };
        let plan = sync_plan(vec![
            decided(Regular, Missing, false, false),
            done(decided(Regular, Missing, false, false)),
            decided(Symlink, Regular, false, false),
            decided(Missing, Regular, false, true),
            done(decided(Missing, Regular, false, true)),
            decided(Missing, Regular, false, false),
            decided(Regular, Regular, true, false),
            decided(Missing, Missing, false, false),
        ]);
        let text = plan.to_text();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split("  (").next().unwrap_or(l))
            .collect();
        assert_eq!(
            lines,
            [
                "to copy        /etc/shadow",
                "copied         /etc/shadow",
                "REFUSED        /etc/shadow",
                "to prune       /etc/shadow",
                "pruned         /etc/shadow",
                "deleted, kept  /etc/shadow",
                "in sync        /etc/shadow",
                "absent         /etc/shadow",
            ],
            "{text}"
        );
        assert_eq!(plan.0.failed(), 1);
        assert!(
            sync_plan(Vec::new())
                .to_text()
                .starts_with("nothing to sync")
        );
    }

    /// The sync documents keep `action`, `done` (a flag) and `mkdirs`, derived from the entry.
    #[test]
    fn documents_keep_their_fields() {
        let mut applied = decided(Regular, Missing, false, false);
        applied.state = State::Done;
        let v = serde_json::to_value(sync_plan(vec![
            decided(Regular, Missing, false, false),
            applied,
            decided(Regular, Regular, true, false),
        ]))
        .unwrap_or_default();
        let e = &v["entries"];
        assert_eq!(
            (&e[0]["action"], &e[0]["done"], &e[0]["state"]),
            (&"copy".into(), &false.into(), &"ready".into()),
            "{v:#}"
        );
        assert_eq!(e[0]["mkdirs"][0]["path"], "/persist/etc", "{v:#}");
        assert_eq!(e[0]["ops"][1]["op"], "copy_back", "{v:#}");
        assert_eq!(
            (&e[1]["done"], &e[1]["state"]),
            (&true.into(), &"done".into())
        );
        assert_eq!(e[2]["action"], "in_sync", "{v:#}");
        assert!(e[2].get("mkdirs").is_none(), "{v:#}");
    }
}
