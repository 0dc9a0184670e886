//! `tabula status`, per entry: is the allowlist in place on the running system?

use std::path::{Path, PathBuf};

use anyhow::Result;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use serde::Serialize;

use super::plan::{Ctx, classify};
use super::walk::{Owner, Walker, is_dir, is_file};
use super::{How, Kind, Perms, PlanState};
use crate::config::Config;

/// Whether an entry is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    /// The target is the source (same device and inode), or the symlink points at it.
    InPlace,
    /// The target exists but is not the source (not mounted, or a wrong link), or is missing.
    NotInPlace,
    /// The source does not exist in persistent storage.
    SourceMissing,
    /// A symlink (or hard link) where there should be none: tabula would refuse this entry.
    Refused,
    /// Something could not be inspected.
    Error,
}

impl StatusState {
    /// The word `tabula status` prints.
    pub fn label(self) -> &'static str {
        match self {
            StatusState::InPlace => "in-place",
            StatusState::NotInPlace => "not-in-place",
            StatusState::SourceMissing => "source-missing",
            StatusState::Refused => "refused",
            StatusState::Error => "error",
        }
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

/// The status of one allowlist entry on the running system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryStatus {
    /// Where it appears.
    pub target: PathBuf,
    /// Where it lives in persistent storage.
    pub source: PathBuf,
    /// Directory or file.
    pub kind: Kind,
    /// Bind mount, copy or symlink.
    pub how: How,
    /// The verdict.
    pub state: StatusState,
    /// Owner/mode of the source that differ from what the config says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// For copies (`how = "copy"`): whether the live file equals its persistent copy (owner, mode,
    /// content); `false` means `tabula persist sync` has changes to copy back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synced: Option<bool>,
    /// For bind mounts in place: what the mount hides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    /// Details for states other than in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Inspects each entry on the system whose root is `root` (normally `/`). Changes nothing: the check for
/// hidden data runs in a private mount namespace of a helper thread.
pub fn status(config: &Config, root: &Path) -> Result<Vec<EntryStatus>> {
    let ctx = Ctx::new(config, root)?;
    let mut out: Vec<EntryStatus> = config
        .persist
        .entries()
        .iter()
        .map(|e| entry_status(&ctx, e))
        .collect();
    let bound: Vec<(usize, PathBuf, Kind)> = out
        .iter()
        .enumerate()
        .filter(|(_, s)| s.state == StatusState::InPlace && s.how == How::Bind)
        .map(|(i, s)| (i, s.target.clone(), s.kind))
        .collect();
    if !bound.is_empty() {
        let items: Vec<(PathBuf, Kind)> = bound.iter().map(|(_, t, k)| (t.clone(), *k)).collect();
        let shadows = shadow_check(ctx.full_path(Path::new("/")), items);
        for ((i, _, _), shadow) in bound.into_iter().zip(shadows) {
            out[i].shadow = Some(shadow);
        }
    }
    Ok(out)
}

fn entry_status(ctx: &Ctx<'_>, e: &crate::config::EntryRef<'_>) -> EntryStatus {
    let target = e.target();
    let source = ctx.config.persist.source_of(&target);
    let mut s = EntryStatus {
        target: target.clone(),
        source: source.clone(),
        kind: e.kind,
        how: e.entry.how,
        state: StatusState::InPlace,
        problems: Vec::new(),
        synced: None,
        shadow: None,
        message: None,
    };
    let w = &ctx.walker;
    let fail = |s: &mut EntryStatus, err: anyhow::Error| {
        let (state, _) = classify(&err);
        s.state = if state == PlanState::Refused {
            StatusState::Refused
        } else {
            StatusState::Error
        };
        s.message = Some(format!("{err:#}"));
    };
    let right_type = |st: &nix::sys::stat::FileStat| match e.kind {
        Kind::Directory => is_dir(st),
        Kind::File => is_file(st),
    };
    let src = match w.leaf(&source) {
        Ok(Some((_, st))) if right_type(&st) => Some(st),
        Ok(Some(_)) => {
            s.state = StatusState::Error;
            s.message = Some(format!(
                "'{}' is not a {}",
                w.shown(&source).display(),
                kind_name(e.kind)
            ));
            return s;
        }
        Ok(None) => None,
        Err(err) => {
            fail(&mut s, err);
            return s;
        }
    };
    if let Some(st) = &src {
        match ctx.entry_owner(e) {
            Ok((_, explicit)) => {
                let actual = Owner::of(st);
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
            Err(err) => s.problems.push(format!("{err:#}")),
        }
    }
    match e.entry.how {
        How::Bind => match w.leaf(&target) {
            Ok(Some((_, tst))) => match &src {
                Some(st) if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino => {}
                Some(_) => {
                    s.state = StatusState::NotInPlace;
                    s.message = Some(format!(
                        "'{}' is not a bind mount of '{}'",
                        w.shown(&target).display(),
                        w.shown(&source).display()
                    ));
                }
                None => {
                    s.state = StatusState::SourceMissing;
                    s.message = Some(format!(
                        "'{}' does not exist: '{}' is not persistent",
                        w.shown(&source).display(),
                        w.shown(&target).display()
                    ));
                }
            },
            Ok(None) => {
                s.state = if src.is_some() {
                    StatusState::NotInPlace
                } else {
                    StatusState::SourceMissing
                };
                s.message = Some(format!("'{}' does not exist", w.shown(&target).display()));
            }
            Err(err) => fail(&mut s, err),
        },
        How::Copy => match super::copy::open_regular(w, &target) {
            Ok(Some(_)) if src.is_none() => {
                s.state = StatusState::SourceMissing;
                s.synced = Some(false);
                s.message = Some(format!(
                    "'{}' does not exist: '{}' is not persistent until `tabula persist sync` copies it",
                    w.shown(&source).display(),
                    w.shown(&target).display()
                ));
            }
            Ok(Some(_)) => match super::copy::is_current(w, &source, &target) {
                Ok(true) => s.synced = Some(true),
                Ok(false) => {
                    s.synced = Some(false);
                    s.problems.push(format!(
                        "differs from '{}': not synced yet (`tabula persist sync`)",
                        w.shown(&source).display()
                    ));
                }
                Err(err) => fail(&mut s, err),
            },
            Ok(None) => {
                s.state = if src.is_some() {
                    StatusState::NotInPlace
                } else {
                    StatusState::SourceMissing
                };
                s.message = Some(format!("'{}' does not exist", w.shown(&target).display()));
            }
            Err(err) => fail(&mut s, err),
        },
        How::Symlink => match w.read_link(&target) {
            Ok(Some(t)) if t == source => {
                if src.is_none() {
                    s.state = StatusState::SourceMissing;
                    s.message = Some(format!(
                        "the symlink dangles: '{}' does not exist",
                        source.display()
                    ));
                }
            }
            Ok(Some(t)) => {
                s.state = StatusState::NotInPlace;
                s.message = Some(format!(
                    "points to '{}', not '{}'",
                    t.display(),
                    source.display()
                ));
            }
            Ok(None) => {
                s.state = StatusState::NotInPlace;
                s.message = Some(format!(
                    "'{}' is not a symlink to '{}'",
                    w.shown(&target).display(),
                    source.display()
                ));
            }
            Err(err) => fail(&mut s, err),
        },
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
                    Ok(match (kind, w.stat(target)?) {
                        (_, None) => Shadow::Clear,
                        (Kind::Directory, Some(st)) if is_dir(&st) => {
                            match w.count_entries(target)? {
                                0 => Shadow::Clear,
                                count => Shadow::HiddenEntries { count },
                            }
                        }
                        (Kind::File, Some(st)) if is_file(&st) && st.st_size > 0 => {
                            Shadow::HiddenBytes {
                                count: st.st_size as u64,
                            }
                        }
                        _ => Shadow::Clear,
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
