//! `tabula status`, per entry: is the allowlist in place on the running system?

use std::path::{Path, PathBuf};

use anyhow::Result;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use serde::Serialize;

use super::observe::{Eyes, Failure, Observed, ObservedEntry, Stat, observe_entry};
use super::plan::{entry_owner, parents_of, resolve, symlink_failure};
use super::walk::Walker;
use super::{Hidden, How, Kind, Perms, PlannedEntry, State};
use crate::config::{Config, EntryRef};

/// The word `tabula status` prints for a state. On a running system `ready` means not in place
/// (`tabula persist` would act) and `failed` that something could not be inspected; `done` never occurs.
pub fn status_label(state: State) -> &'static str {
    match state {
        State::InPlace | State::Done => "in-place",
        State::Ready => "not-in-place",
        State::SourceMissing => "source-missing",
        State::Refused => "refused",
        State::Failed => "error",
    }
}

/// What a bind mount hides in the root underneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "shadow", rename_all = "snake_case")]
pub enum Shadow {
    /// Nothing is hidden.
    Clear,
    /// A directory mount hides this many entries.
    HiddenEntries {
        /// Number of entries.
        count: u64,
    },
    /// A file mount hides a non-empty file of this size.
    HiddenBytes {
        /// Size in bytes.
        count: u64,
    },
    /// Could not be checked (needs root: the check unmounts in a private mount namespace).
    Unknown {
        /// Why.
        why: String,
    },
}

/// Inspects each entry on the system whose root is `root` (normally `/`). Changes nothing: the check for
/// hidden data runs in a private mount namespace of a helper thread.
pub fn status(config: &Config, root: &Path) -> Result<Vec<PlannedEntry>> {
    let eyes = Eyes::open(config, root)?;
    let full_root = eyes.root_canon.clone();
    let observed = Observed {
        root: root.to_path_buf(),
        running: true,
        root_mnt_id: 0,
        persist_dir: None,
        accounts: eyes.accounts(config),
        entries: config
            .persist
            .entries()
            .iter()
            .map(|e| observe_entry(&eyes, config, e))
            .collect(),
    };
    let mut out = status_observed(&observed, config);
    let bound: Vec<(usize, PathBuf, Kind)> = out
        .iter()
        .enumerate()
        .filter(|(_, s)| s.state == State::InPlace && s.how == How::Bind)
        .map(|(i, s)| (i, s.target.clone(), s.kind))
        .collect();
    if !bound.is_empty() {
        let items: Vec<(PathBuf, Kind)> = bound.iter().map(|(_, t, k)| (t.clone(), *k)).collect();
        let shadows = shadow_check(full_root, items);
        for ((i, _, _), shadow) in bound.into_iter().zip(shadows) {
            out[i].shadow = Some(shadow);
        }
    }
    Ok(out)
}

/// The status of every entry from what was observed (`observed.entries` in `config`'s order): pure.
pub fn status_observed(observed: &Observed, config: &Config) -> Vec<PlannedEntry> {
    config
        .persist
        .entries()
        .iter()
        .zip(&observed.entries)
        .map(|(e, o)| entry_status(observed, config, e, o))
        .collect()
}

fn entry_status(
    observed: &Observed,
    config: &Config,
    e: &EntryRef<'_>,
    o: &ObservedEntry,
) -> PlannedEntry {
    let target = e.target();
    let source = config.persist.source_of(&target);
    let mut s = PlannedEntry {
        state: State::InPlace,
        ..PlannedEntry::new(target.clone(), source.clone(), e.kind, e.entry.how)
    };
    let shown = |p: &Path| observed.shown(p);
    let parents = parents_of(&target);
    let src_parents: Vec<PathBuf> = parents
        .iter()
        .map(|p| shown(&config.persist.source_of(p)))
        .collect();
    let tgt_parents: Vec<PathBuf> = parents.iter().map(|p| shown(p)).collect();
    // The source as an O_PATH open finds it: a symlink is refused.
    let src = match resolve(&o.source_chain, &src_parents) {
        Ok(Some(st)) if st.is_symlink() => {
            s.settle_failure(symlink_failure(&shown(&source)));
            return s;
        }
        Ok(Some(st)) if st.is_kind(e.kind) => Some(st),
        Ok(Some(_)) => {
            s.state = State::Failed;
            s.message = Some(format!(
                "'{}' is not a {}",
                shown(&source).display(),
                kind_name(e.kind)
            ));
            return s;
        }
        Ok(None) => None,
        Err(f) => {
            s.settle_failure(f);
            return s;
        }
    };
    if let Some(st) = &src {
        match entry_owner(
            config,
            &observed.accounts,
            e,
            o.explicit_uid.as_ref(),
            o.explicit_gid.as_ref(),
        ) {
            Ok((_, explicit)) => {
                let actual = st.owner();
                if let Some(u) = explicit.uid.filter(|u| *u != actual.uid) {
                    s.problems
                        .push(format!("owner is {}, the config says {u}", actual.uid));
                }
                if let Some(g) = explicit.gid.filter(|g| *g != actual.gid) {
                    s.problems
                        .push(format!("group is {}, the config says {g}", actual.gid));
                }
                if let Some(m) = explicit.mode.filter(|m| *m != actual.mode) {
                    s.problems.push(format!(
                        "mode is {}, the config says {}",
                        Perms(actual.mode),
                        Perms(m)
                    ));
                }
            }
            Err(f) => s.problems.push(f.message),
        }
    }
    let tgt = resolve(&o.target_chain, &tgt_parents);
    let no_target = |s: &mut PlannedEntry| {
        s.state = if src.is_some() {
            State::Ready
        } else {
            State::SourceMissing
        };
        s.message = Some(format!("'{}' does not exist", shown(&target).display()));
    };
    match e.entry.how {
        How::Bind => match tgt {
            Ok(Some(tst)) if tst.is_symlink() => s.settle_failure(symlink_failure(&shown(&target))),
            Ok(Some(tst)) => match &src {
                Some(st) if st.same_file(&tst) => {}
                Some(_) => {
                    s.state = State::Ready;
                    s.message = Some(format!(
                        "'{}' is not a bind mount of '{}'",
                        shown(&target).display(),
                        shown(&source).display()
                    ));
                }
                None => {
                    s.state = State::SourceMissing;
                    s.message = Some(format!(
                        "'{}' does not exist: '{}' is not persistent",
                        shown(&source).display(),
                        shown(&target).display()
                    ));
                }
            },
            Ok(None) => no_target(&mut s),
            Err(f) => s.settle_failure(f),
        },
        How::Copy => match tgt {
            Ok(Some(tst)) if tst.is_symlink() => s.settle_failure(symlink_failure(&shown(&target))),
            Ok(Some(tst)) if !tst.is_file() => s.settle_failure(Failure::msg(format!(
                "'{}' is not a regular file",
                shown(&target).display()
            ))),
            Ok(Some(_)) if src.is_none() => {
                s.state = State::SourceMissing;
                s.synced = Some(false);
                s.message = Some(format!(
                    "'{}' does not exist: '{}' is not persistent until `tabula persist sync` copies it",
                    shown(&source).display(),
                    shown(&target).display()
                ));
            }
            Ok(Some(_)) => match &o.copy_current {
                Some(Ok(true)) => s.synced = Some(true),
                Some(Ok(false)) | None => {
                    s.synced = Some(false);
                    s.problems.push(format!(
                        "differs from '{}': not synced yet (`tabula persist sync`)",
                        shown(&source).display()
                    ));
                }
                Some(Err(f)) => s.settle_failure(f.clone()),
            },
            Ok(None) => no_target(&mut s),
            Err(f) => s.settle_failure(f),
        },
        How::Symlink => {
            let link = match tgt {
                Ok(Some(st)) if st.is_symlink() => match &o.target_link {
                    Some(Ok(l)) => Ok(l.clone()),
                    Some(Err(f)) => Err(f.clone()),
                    None => Ok(None),
                },
                Ok(_) => Ok(None),
                Err(f) => Err(f),
            };
            match link {
                Ok(Some(t)) if t == source => {
                    if src.is_none() {
                        s.state = State::SourceMissing;
                        s.message = Some(format!(
                            "the symlink dangles: '{}' does not exist",
                            source.display()
                        ));
                    }
                }
                Ok(Some(t)) => {
                    s.state = State::Ready;
                    s.message = Some(format!(
                        "points to '{}', not '{}'",
                        t.display(),
                        source.display()
                    ));
                }
                Ok(None) => {
                    s.state = State::Ready;
                    s.message = Some(format!(
                        "'{}' is not a symlink to '{}'",
                        shown(&target).display(),
                        source.display()
                    ));
                }
                Err(f) => s.settle_failure(f),
            }
        }
    }
    s
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Directory => "directory",
        Kind::File => "regular file",
    }
}

/// Looks under each bind mount: in a helper thread with a private mount namespace, unmount the copy of
/// the mount and inspect what the root has there. Nothing leaves the thread: its namespace dies with it.
fn shadow_check(root: PathBuf, items: Vec<(PathBuf, Kind)>) -> Vec<Shadow> {
    let n = items.len();
    let unknown = move |why: String| vec![Shadow::Unknown { why }; n];
    let handle = std::thread::spawn(move || -> Vec<Shadow> {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
            return unknown(format!("creating a private mount namespace: {e}"));
        }
        // Without this, the unmounts below would propagate to the real system.
        if let Err(e) = mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            return unknown(format!("making the private mount namespace private: {e}"));
        }
        items
            .iter()
            .map(|(target, kind)| {
                let full = root.join(target.strip_prefix("/").unwrap_or(target));
                if let Err(e) = umount2(&full, MntFlags::MNT_DETACH) {
                    return Shadow::Unknown {
                        why: format!("unmounting a private copy of '{}': {e}", full.display()),
                    };
                }
                let inspect = || -> Result<Shadow> {
                    let w = Walker::open(&root)?;
                    Ok(match w.stat(target)? {
                        None => Shadow::Clear,
                        Some(st) => {
                            match Hidden::of(*kind, &Stat::of(&st), || w.count_entries(target))? {
                                None => Shadow::Clear,
                                Some(Hidden::Entries(count)) => Shadow::HiddenEntries { count },
                                Some(Hidden::Bytes(count)) => Shadow::HiddenBytes { count },
                            }
                        }
                    })
                };
                inspect().unwrap_or_else(|e| Shadow::Unknown {
                    why: format!("{e:#}"),
                })
            })
            .collect()
    });
    handle
        .join()
        .unwrap_or_else(|_| unknown("the inspection thread panicked".into()))
}
