//! Deciding: what each entry needs, a pure function of what [`super::observe`] found.
//!
//! [`plan_observed`] reads nothing: every rule (what is in the way, what a mount hides, who owns what is
//! created) is decided from an [`Observed`], so the rules are unit tests that need no root. [`plan`],
//! [`plan_with`] and [`plan_running_system`] observe the root, then decide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use std::os::fd::AsFd;

use super::observe::{Eyes, Failure, Observed, ObservedEntry, PersistDir, Probe, Stat, observe};
use super::walk::{Owner, hard_link_refusal, symlink_refusal};
use super::{Op, Perms, Plan, PlannedEntry, State};
use crate::config::{Config, EntryRef, How, Kind, Loc};
use crate::error::{ConfigError, Refusal};

/// Refusal rule: persistent storage is not a mount point, so "persistent" data would land in the
/// ephemeral root and vanish at the next boot.
pub const RULE_NOT_MOUNTED: &str = "persist-not-mounted";

/// Choices that change the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// For a bind-mounted file whose source is missing but whose target exists in the root as a regular
    /// file (generated during this boot: `/etc/machine-id`, `~/.bash_history`), copy it into persistent
    /// storage and bind-mount it: from then on it is persistent. Meant for the running system
    /// (`tabula persist --root / --adopt`), never needed in the initrd.
    pub adopt: bool,
}

/// What the config says explicitly for an entry (enforced at every run).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Explicit {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl Explicit {
    /// The fields of `self` that `actual` does not already have.
    fn differences(&self, actual: Owner) -> Explicit {
        Explicit {
            uid: self.uid.filter(|u| *u != actual.uid),
            gid: self.gid.filter(|g| *g != actual.gid),
            mode: self.mode.filter(|m| *m != actual.mode),
        }
    }

    fn is_empty(&self) -> bool {
        self.uid.is_none() && self.gid.is_none() && self.mode.is_none()
    }

    fn applied_to(&self, o: Owner) -> Owner {
        Owner {
            uid: self.uid.unwrap_or(o.uid),
            gid: self.gid.unwrap_or(o.gid),
            mode: self.mode.unwrap_or(o.mode),
        }
    }
}

/// Resolved `[[persist.users]]` by name.
pub(crate) type Accounts = BTreeMap<String, Result<(u32, u32), String>>;

fn config_error(config: &Config, loc: Loc, message: String) -> Failure {
    Failure::of(&anyhow::Error::new(ConfigError {
        file: config.file.clone(),
        line: Some(loc.line),
        column: Some(loc.column),
        message,
    }))
}

fn account(
    config: &Config,
    accounts: &Accounts,
    name: &str,
    loc: Loc,
) -> Result<(u32, u32), Failure> {
    accounts
        .get(name)
        .cloned()
        .unwrap_or_else(|| Err(format!("user '{name}' is unknown")))
        .map_err(|m| config_error(config, loc, m))
}

/// Owner/mode a newly created source gets, and what the config says explicitly (`uid`/`gid`: the
/// entry's `user`/`group`, resolved).
pub(crate) fn entry_owner(
    config: &Config,
    accounts: &Accounts,
    e: &EntryRef<'_>,
    uid: Option<&Result<u32, String>>,
    gid: Option<&Result<u32, String>>,
) -> Result<(Owner, Explicit), Failure> {
    let (base_uid, base_gid) = match e.user {
        Some(u) => account(config, accounts, &u.name, u.loc)?,
        None => (0, 0),
    };
    let at = |loc: Option<Loc>| loc.unwrap_or(e.entry.loc);
    let resolved = |r: Option<&Result<u32, String>>, loc| match r {
        Some(Ok(id)) => Ok(Some(*id)),
        Some(Err(m)) => Err(config_error(config, at(loc), m.clone())),
        None => Ok(None),
    };
    let explicit = Explicit {
        uid: resolved(uid, e.entry.user_loc)?,
        gid: resolved(gid, e.entry.group_loc)?,
        mode: e.entry.mode,
    };
    let default_mode = match e.kind {
        Kind::Directory => 0o755,
        Kind::File => 0o644,
    };
    Ok((
        explicit.applied_to(Owner {
            uid: base_uid,
            gid: base_gid,
            mode: default_mode,
        }),
        explicit,
    ))
}

/// Owner/mode of a missing parent directory of a source (`target_dir` is the matching target path):
/// the user and 0700 for a configured home and anything inside it, else root:root 0755.
pub(crate) fn parent_owner(
    config: &Config,
    accounts: &Accounts,
    target_dir: &Path,
) -> Result<Owner, Failure> {
    for u in &config.persist.users {
        if target_dir.starts_with(&u.home) {
            let (uid, gid) = account(config, accounts, &u.name, u.loc)?;
            return Ok(Owner {
                uid,
                gid,
                mode: 0o700,
            });
        }
    }
    Ok(Owner {
        uid: 0,
        gid: 0,
        mode: 0o755,
    })
}

/// Persistent storage must exist and be a mount of its own: otherwise "persistent" data would be
/// written into the ephemeral root and silently lost at the next boot.
pub(crate) fn check_persist_mounted(
    shown: &Path,
    dir: Option<PersistDir>,
    root_mnt_id: u64,
) -> Result<()> {
    let dir = dir.ok_or_else(|| {
        anyhow!(
            "persistent storage '{}' does not exist: mount the persistent subvolume there first",
            shown.display()
        )
    })?;
    if dir.mnt_id != root_mnt_id || dir.is_mount == Some(true) {
        return Ok(());
    }
    Err(anyhow::Error::new(Refusal::new(
        RULE_NOT_MOUNTED,
        format!(
            "'{}' is not a mount point: data written there would stay in the ephemeral root and vanish at \
             the next boot; mount the persistent subvolume there first",
            shown.display()
        ),
    )))
}

/// [`check_persist_mounted`] on an opened root: for `tabula persist sync`, which observes only some
/// entries.
pub(crate) fn check_persist_mounted_at(eyes: &Eyes, config: &Config) -> Result<()> {
    let persist = &config.persist.path;
    let w = &eyes.walker;
    let shown = w.shown(persist);
    let dir = match w.dir(persist)? {
        None => None,
        Some(fd) => {
            let mnt_id = crate::fsx::mount_id(fd.as_fd())
                .with_context(|| format!("inspecting '{}'", shown.display()))?;
            Some(PersistDir {
                mnt_id,
                is_mount: eyes.is_mount_point(persist),
            })
        }
    };
    let root_mnt_id = crate::fsx::mount_id(w.root_fd()).context("inspecting the root directory")?;
    check_persist_mounted(&shown, dir, root_mnt_id)
}

/// Plans `tabula persist --root <root_dir>` without changing anything.
pub fn plan(config: &Config, root_dir: &Path) -> Result<Plan> {
    plan_with(config, root_dir, PlanOptions::default())
}

/// [`plan`] with options. When `root_dir` is `/`, as [`plan_running_system`].
pub fn plan_with(config: &Config, root_dir: &Path, opts: PlanOptions) -> Result<Plan> {
    plan_observed(&observe(config, root_dir)?, config, opts)
}

/// [`plan_with`] for a running system whose root is `root_dir`: a `how = "copy"` target that differs
/// from its persistent copy is left alone (with a warning), since the live file is the newer one
/// (changed since the last `tabula persist sync`). In the initrd the persistent copy wins.
pub fn plan_running_system(config: &Config, root_dir: &Path, opts: PlanOptions) -> Result<Plan> {
    let mut observed = observe(config, root_dir)?;
    observed.running = true;
    plan_observed(&observed, config, opts)
}

/// The plan for what `observed` found (from `config`, the same config): pure. Fails as a whole only when
/// persistent storage is missing or not a mount point.
pub fn plan_observed(observed: &Observed, config: &Config, opts: PlanOptions) -> Result<Plan> {
    check_persist_mounted(
        &observed.shown(&config.persist.path),
        observed.persist_dir,
        observed.root_mnt_id,
    )?;
    let entries = config
        .persist
        .entries()
        .iter()
        .zip(&observed.entries)
        .map(|(e, o)| plan_entry(observed, config, e, o, opts))
        .collect();
    Ok(Plan {
        root: observed.root.clone(),
        persist: config.persist.path.clone(),
        entries,
    })
}

/// Sorts an error into refused or failed.
pub(crate) fn classify(err: &anyhow::Error) -> (State, Option<&'static str>) {
    match err.chain().find_map(|c| c.downcast_ref::<Refusal>()) {
        Some(r) => (State::Refused, Some(r.rule)),
        None => (State::Failed, None),
    }
}

fn plan_entry(
    observed: &Observed,
    config: &Config,
    e: &EntryRef<'_>,
    o: &ObservedEntry,
    opts: PlanOptions,
) -> PlannedEntry {
    let target = e.target();
    let source = config.persist.source_of(&target);
    let mut p = PlannedEntry::new(target.clone(), source.clone(), e.kind, e.entry.how);
    let facts = Facts {
        observed,
        config,
        e,
        o,
        target: &target,
        source: &source,
        opts,
    };
    match facts.decide(&mut p) {
        Ok(state) => {
            p.state = if state == State::Ready && p.ops.is_empty() {
                State::InPlace
            } else {
                state
            };
        }
        Err(f) => p.settle_failure(f),
    }
    p
}

/// The directories between `/` and `target` (exclusive), outermost first.
pub(crate) fn parents_of(target: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = target
        .ancestors()
        .skip(1)
        .filter(|a| *a != Path::new("/"))
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

/// A plain failure from a message.
pub(crate) fn fail<T>(message: String) -> Result<T, Failure> {
    Err(Failure::msg(message))
}

/// The refusal for a file with other hard links whose owner, mode or content tabula would change.
pub(crate) fn refuse_hard_links(st: &Stat, shown: &Path) -> Result<(), Failure> {
    if st.nlink > 1 {
        return Err(Failure::of(&hard_link_refusal(shown, st.nlink)));
    }
    Ok(())
}

fn symlink(shown: &Path) -> Failure {
    Failure::of(&symlink_refusal(shown))
}

/// The last path of a chain as a walk from the root would find it (`shown`: the chain's parents as
/// messages show them): a symlink on the way is refused and a file on the way fails, as the walk would;
/// a missing component means nothing is there. The last path itself is returned as it is, even a symlink.
pub(crate) fn resolve(chain: &[Probe], shown: &[PathBuf]) -> Result<Option<Stat>, Failure> {
    let at = |i: usize| chain.get(i).unwrap_or(&Probe::Missing);
    for (i, sp) in shown.iter().enumerate() {
        match at(i) {
            Probe::Missing => return Ok(None),
            Probe::Found(st) if st.is_dir() => {}
            Probe::Found(st) if st.is_symlink() => return Err(symlink(sp)),
            Probe::Found(_) => return fail(format!("'{}' is not a directory", sp.display())),
            Probe::Failed(f) => return Err(f.clone()),
        }
    }
    match at(shown.len()) {
        Probe::Missing => Ok(None),
        Probe::Found(st) => Ok(Some(*st)),
        Probe::Failed(f) => Err(f.clone()),
    }
}

pub(crate) fn symlink_failure(shown: &Path) -> Failure {
    symlink(shown)
}

/// One entry's config and observation, for the rules.
struct Facts<'a> {
    observed: &'a Observed,
    config: &'a Config,
    e: &'a EntryRef<'a>,
    o: &'a ObservedEntry,
    target: &'a Path,
    source: &'a Path,
    opts: PlanOptions,
}

impl Facts<'_> {
    fn shown(&self, path: &Path) -> PathBuf {
        self.observed.shown(path)
    }

    /// Probe `i` of a chain; what was not observed (below a missing directory) is missing.
    fn at(chain: &[Probe], i: usize) -> &Probe {
        chain.get(i).unwrap_or(&Probe::Missing)
    }

    /// The target itself as an `O_PATH` open would find it: a symlink on the way or at the end is
    /// refused, a file on the way fails, a missing component means nothing is there.
    fn leaf_target(&self, parents: &[PathBuf]) -> Result<Option<Stat>, Failure> {
        let shown: Vec<PathBuf> = parents.iter().map(|p| self.shown(p)).collect();
        match resolve(&self.o.target_chain, &shown)? {
            Some(st) if st.is_symlink() => Err(symlink(&self.shown(self.target))),
            other => Ok(other),
        }
    }

    /// The rules for one entry: fills `p.ops` (and messages, warnings) and returns its state.
    fn decide(&self, p: &mut PlannedEntry) -> Result<State, Failure> {
        let (e, o, target, source) = (self.e, self.o, self.target, self.source);
        let persist = &self.config.persist;
        let accounts = &self.observed.accounts;
        let (owner, explicit) = entry_owner(
            self.config,
            accounts,
            e,
            o.explicit_uid.as_ref(),
            o.explicit_gid.as_ref(),
        )?;
        let parents = parents_of(target);
        let n = parents.len();

        // Source parents: what exists keeps its owner/mode, what is missing gets the defaults.
        let mut ops = Vec::new();
        let mut parent_owners = Vec::new();
        let mut missing = false;
        for (i, tp) in parents.iter().enumerate() {
            let sp = persist.source_of(tp);
            let probe = if missing {
                &Probe::Missing
            } else {
                Self::at(&o.source_chain, i)
            };
            match probe {
                Probe::Missing => {
                    missing = true;
                    let o = parent_owner(self.config, accounts, tp)?;
                    ops.push(Op::Mkdir {
                        path: sp,
                        uid: o.uid,
                        gid: o.gid,
                        mode: Perms(o.mode),
                    });
                    parent_owners.push(o);
                }
                Probe::Found(st) if st.is_dir() => parent_owners.push(st.owner()),
                Probe::Found(st) if st.is_symlink() => return Err(symlink(&self.shown(&sp))),
                Probe::Found(_) => {
                    return fail(format!(
                        "'{}' is in the way and is not a directory",
                        self.shown(&sp).display()
                    ));
                }
                Probe::Failed(f) => return Err(f.clone()),
            }
        }

        // The source itself.
        let src_st = match if missing {
            &Probe::Missing
        } else {
            Self::at(&o.source_chain, n)
        } {
            Probe::Missing => None,
            Probe::Found(st) => Some(*st),
            Probe::Failed(f) => return Err(f.clone()),
        };
        let shown_src = self.shown(source);
        let mut adopted = false;
        let src_owner: Owner = match (e.kind, src_st) {
            (_, Some(st)) if st.is_symlink() => return Err(symlink(&shown_src)),
            (Kind::Directory, Some(st)) if !st.is_dir() => {
                return fail(format!(
                    "'{}' exists and is not a directory",
                    shown_src.display()
                ));
            }
            (Kind::File, Some(st)) if !st.is_file() => {
                return fail(format!(
                    "'{}' exists and is not a regular file",
                    shown_src.display()
                ));
            }
            (_, Some(st)) => {
                if e.entry.how == How::Copy {
                    // Checked again at apply time; refusing now makes --dry-run say so.
                    refuse_hard_links(&st, &shown_src)?;
                }
                let diff = explicit.differences(st.owner());
                if !diff.is_empty() {
                    if e.kind == Kind::File {
                        // Checked again at apply time; refusing now makes --dry-run say so.
                        refuse_hard_links(&st, &shown_src)?;
                    }
                    ops.push(Op::SetOwnerMode {
                        path: source.to_path_buf(),
                        uid: diff.uid,
                        gid: diff.gid,
                        mode: diff.mode.map(Perms),
                    });
                }
                explicit.applied_to(st.owner())
            }
            (Kind::Directory, None) => {
                ops.push(Op::Mkdir {
                    path: source.to_path_buf(),
                    uid: owner.uid,
                    gid: owner.gid,
                    mode: Perms(owner.mode),
                });
                owner
            }
            (Kind::File, None) if e.entry.how == How::Copy => {
                p.message = Some(format!(
                    "'{}' does not exist: nothing is copied this boot and the system creates '{}' as usual; \
                     `tabula persist sync` copies it into persistent storage once it exists",
                    shown_src.display(),
                    target.display()
                ));
                return Ok(State::SourceMissing);
            }
            (Kind::File, None) if e.entry.how == How::Symlink => {
                p.message = Some(format!(
                    "'{}' does not exist yet: the symlink dangles until a program writes through it",
                    shown_src.display()
                ));
                owner
            }
            (Kind::File, None) => {
                let existing = if self.opts.adopt {
                    self.leaf_target(&parents)?
                } else {
                    None
                };
                match existing {
                    Some(st) if st.is_file() && st.nlink == 1 => {
                        let o = explicit.applied_to(st.owner());
                        ops.push(Op::Adopt {
                            from: target.to_path_buf(),
                            to: source.to_path_buf(),
                            uid: o.uid,
                            gid: o.gid,
                            mode: Perms(o.mode),
                        });
                        adopted = true;
                        o
                    }
                    _ => {
                        p.message = Some(self.source_missing_hint());
                        return Ok(State::SourceMissing);
                    }
                }
            }
        };

        // Target parents copy the matching source parents.
        let mut tmissing = false;
        for (i, (tp, o)) in parents.iter().zip(&parent_owners).enumerate() {
            let probe = if tmissing {
                &Probe::Missing
            } else {
                Self::at(&self.o.target_chain, i)
            };
            match probe {
                Probe::Missing => {
                    tmissing = true;
                    ops.push(Op::Mkdir {
                        path: tp.clone(),
                        uid: o.uid,
                        gid: o.gid,
                        mode: Perms(o.mode),
                    });
                }
                Probe::Found(st) if st.is_dir() => {}
                Probe::Found(st) if st.is_symlink() => return Err(symlink(&self.shown(tp))),
                Probe::Found(_) => {
                    return fail(format!(
                        "'{}' is in the way and is not a directory",
                        self.shown(tp).display()
                    ));
                }
                Probe::Failed(f) => return Err(f.clone()),
            }
        }

        // The target, then the mount or link.
        let shown_tgt = self.shown(target);
        let tgt_st = match if tmissing {
            &Probe::Missing
        } else {
            Self::at(&o.target_chain, n)
        } {
            Probe::Missing => None,
            Probe::Found(st) => Some(*st),
            Probe::Failed(f) => return Err(f.clone()),
        };
        let mounted = o.target_is_mount == Some(true);
        if let Some(w) = tgt_st.and_then(|st| in_the_way(e.kind, e.entry.how, &st)) {
            return Err(w.failure(&shown_tgt, &shown_src));
        }
        match e.entry.how {
            How::Copy => {
                let needed = match tgt_st {
                    None => true,
                    Some(_) => {
                        if mounted {
                            return fail(format!(
                                "'{}' is a mount point (a bind mount from before `how = \"copy\"`?): a copy \
                                 cannot replace it; unmount it first",
                                shown_tgt.display()
                            ));
                        }
                        let owner_changes =
                            ops.iter().any(|o| matches!(o, Op::SetOwnerMode { .. }));
                        let stale = owner_changes
                            || !match &o.copy_current {
                                Some(Ok(current)) => *current,
                                Some(Err(f)) => return Err(f.clone()),
                                None => false,
                            };
                        if stale && self.observed.running {
                            p.warnings.push(format!(
                                "'{}' differs from '{}': on a running system the live file is kept (it may hold \
                                 changes not synced yet); `tabula persist sync` copies it back",
                                shown_tgt.display(),
                                shown_src.display()
                            ));
                            false
                        } else {
                            stale
                        }
                    }
                };
                if needed {
                    ops.push(Op::CopyIn {
                        source: source.to_path_buf(),
                        target: target.to_path_buf(),
                    });
                }
            }
            How::Bind => match tgt_st {
                None => {
                    let (uid, gid, mode) = (src_owner.uid, src_owner.gid, Perms(src_owner.mode));
                    ops.push(match e.kind {
                        Kind::Directory => Op::Mkdir {
                            path: target.to_path_buf(),
                            uid,
                            gid,
                            mode,
                        },
                        Kind::File => Op::CreateFile {
                            path: target.to_path_buf(),
                            uid,
                            gid,
                            mode,
                        },
                    });
                    ops.push(Op::Bind {
                        source: source.to_path_buf(),
                        target: target.to_path_buf(),
                    });
                }
                Some(st) => {
                    let bound = src_st.is_some_and(|s| s.same_file(&st));
                    if !bound {
                        if mounted {
                            return fail(format!(
                                "'{}' is already a mount point of something else: unmount it first",
                                shown_tgt.display()
                            ));
                        }
                        let hidden = match (e.kind, &o.target_entries) {
                            (Kind::Directory, Some(Err(f))) => return Err(f.clone()),
                            (Kind::Directory, Some(Ok(n))) => Some(Hidden::Entries(*n)),
                            (Kind::Directory, None) => None,
                            (Kind::File, _) if adopted => None,
                            (Kind::File, _) => Some(Hidden::Bytes(st.size)),
                        };
                        if let Some(w) = hidden.and_then(|h| h.warning(&shown_tgt)) {
                            p.warnings.push(w);
                        }
                        ops.push(Op::Bind {
                            source: source.to_path_buf(),
                            target: target.to_path_buf(),
                        });
                    }
                }
            },
            How::Symlink => {
                let points_to = source.to_path_buf();
                match tgt_st {
                    None => ops.push(Op::Symlink {
                        path: target.to_path_buf(),
                        points_to,
                        uid: src_owner.uid,
                        gid: src_owner.gid,
                    }),
                    Some(_) => match &o.target_link {
                        Some(Ok(Some(t))) if *t == points_to => {}
                        Some(Ok(Some(t))) => {
                            return fail(format!(
                                "'{}' is a symlink to '{}', not to '{}': remove it",
                                shown_tgt.display(),
                                t.display(),
                                points_to.display()
                            ));
                        }
                        Some(Err(f)) => return Err(f.clone()),
                        Some(Ok(None)) | None => {
                            return fail(format!(
                                "'{}' changed while it was inspected",
                                shown_tgt.display()
                            ));
                        }
                    },
                }
            }
        }
        p.ops = ops;
        Ok(State::Ready)
    }

    /// How a bind-mounted file with no source becomes persistent.
    fn source_missing_hint(&self) -> String {
        let src = self.source.display();
        if self.opts.adopt {
            format!(
                "'{src}' does not exist and '{}' has no regular file to adopt: nothing to do until the system \
                 creates it",
                self.shown(self.target).display()
            )
        } else {
            format!(
                "'{src}' does not exist: nothing is mounted this boot and the system creates '{}' as usual; to \
                 keep it from now on run `tabula persist --root / --adopt` once it exists (or copy it to '{src}'); \
                 from the next boot on it is bind-mounted",
                self.target.display()
            )
        }
    }
}

/// What is in the way at an entry's target: a file that `tabula persist` will not mount on, copy over or
/// replace with a symlink. One rule for `persist`, `check --blank` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InTheWay {
    /// A symlink where a real directory or file must be (never followed, never replaced).
    Symlink,
    /// Something else where a directory must be.
    NotADirectory,
    /// Something else where a regular file must be.
    NotARegularFile,
    /// A real file where `how = "symlink"` would put its link.
    NotASymlink,
}

/// What is in the way of an entry of `kind` persisted by `how`, at a target found as `st`.
pub fn in_the_way(kind: Kind, how: How, st: &Stat) -> Option<InTheWay> {
    match how {
        How::Symlink if st.is_symlink() => None,
        How::Symlink => Some(InTheWay::NotASymlink),
        _ if st.is_symlink() => Some(InTheWay::Symlink),
        How::Copy | How::Bind if !st.is_kind(kind) => Some(match kind {
            Kind::Directory if how == How::Bind => InTheWay::NotADirectory,
            _ => InTheWay::NotARegularFile,
        }),
        _ => None,
    }
}

impl InTheWay {
    /// The plan's failure (`shown_src`: where the file should go instead).
    fn failure(self, shown_tgt: &Path, shown_src: &Path) -> Failure {
        let t = shown_tgt.display();
        match self {
            InTheWay::Symlink => symlink(shown_tgt),
            InTheWay::NotADirectory => {
                Failure::msg(format!("'{t}' exists in the root and is not a directory"))
            }
            InTheWay::NotARegularFile => Failure::msg(format!(
                "'{t}' exists in the root and is not a regular file"
            )),
            InTheWay::NotASymlink => Failure::msg(format!(
                "a file already exists at '{t}': move it to '{}' (to keep it) or delete it",
                shown_src.display()
            )),
        }
    }
}

/// What a bind mount would hide of what the root has at its target: one rule for `persist`, `check
/// --blank` and `status`, each rendering it in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// A directory with this many entries.
    Entries(u64),
    /// A regular file of this size.
    Bytes(u64),
}

impl Hidden {
    /// What a mount on `kind` hides of `st` (`entries`: how many the directory holds, read only when
    /// asked): `None` when nothing (an empty directory or file, or something of another type).
    pub fn of(
        kind: Kind,
        st: &Stat,
        entries: impl FnOnce() -> Result<u64>,
    ) -> Result<Option<Hidden>> {
        Ok(match kind {
            Kind::Directory if st.is_dir() => Some(Hidden::Entries(entries()?)),
            Kind::File if st.is_file() => Some(Hidden::Bytes(st.size)),
            _ => None,
        }
        .filter(|h| !h.is_empty()))
    }

    /// Nothing hidden.
    pub fn is_empty(&self) -> bool {
        matches!(self, Hidden::Entries(0) | Hidden::Bytes(0))
    }

    /// The plan's warning, `None` when nothing is hidden.
    fn warning(self, shown: &Path) -> Option<String> {
        match self {
            _ if self.is_empty() => None,
            Hidden::Entries(n) => Some(format!(
                "'{}' already has {n} {} in the root: the bind mount hides them (they stay in the \
                 root underneath; copy what you need into persistent storage)",
                shown.display(),
                entries_word(n)
            )),
            Hidden::Bytes(n) => Some(format!(
                "'{}' already has {n} bytes in the root: the bind mount hides them",
                shown.display()
            )),
        }
    }
}

/// "entry" or "entries".
pub(crate) fn entries_word(n: u64) -> &'static str {
    if n == 1 { "entry" } else { "entries" }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
