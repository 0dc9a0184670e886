//! Building the plan: read the new root and persistent storage, decide what each entry needs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::stat::fstat;

use super::walk::{Owner, Walker, is_dir, is_file, is_symlink, refuse_hard_links, symlink_refusal};
use super::{Op, Perms, Plan, PlanState, PlannedEntry, mountinfo};
use crate::config::{Config, EntryRef, How, Kind, Loc};
use crate::error::{ConfigError, Refusal};
use crate::users::Resolver;

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

/// What planning, applying and status share: the opened root, mount points and user lookups.
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub walker: Walker,
    root_canon: PathBuf,
    pub mounts: Option<HashSet<PathBuf>>,
    resolver: Resolver,
    accounts: HashMap<&'a str, Result<(u32, u32), String>>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(config: &'a Config, root: &Path) -> Result<Ctx<'a>> {
        let walker = Walker::open(root)?;
        let root_canon = std::fs::canonicalize(root)
            .with_context(|| format!("resolving the root directory '{}'", root.display()))?;
        let mounts = match mountinfo::mount_points() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("reading the mount table: {e}; is /proc mounted?");
                None
            }
        };
        let resolver = Resolver::for_root(root, &config.persist);
        let accounts = config
            .persist
            .users
            .iter()
            .map(|u| (u.name.as_str(), resolver.account(u)))
            .collect();
        Ok(Ctx {
            config,
            walker,
            root_canon,
            mounts,
            resolver,
            accounts,
        })
    }

    /// Whether `path` (inside the root) is a mount point; `None` when the mount table is unreadable.
    pub(crate) fn is_mount_point(&self, path: &Path) -> Option<bool> {
        let full = self.root_canon.join(path.strip_prefix("/").unwrap_or(path));
        self.mounts.as_ref().map(|m| m.contains(&full))
    }

    /// The absolute path of `path` (inside the root) in this process's view, for path-only syscalls.
    pub(crate) fn full_path(&self, path: &Path) -> PathBuf {
        self.root_canon.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Persistent storage must exist and be a mount of its own: otherwise "persistent" data would be
    /// written into the ephemeral root and silently lost at the next boot.
    pub(crate) fn check_persist_mounted(&self) -> Result<()> {
        let persist = &self.config.persist.path;
        let shown = self.walker.shown(persist);
        let fd = self.walker.dir(persist)?.ok_or_else(|| {
            anyhow!(
                "persistent storage '{}' does not exist: mount the persistent subvolume there first",
                shown.display()
            )
        })?;
        let st = fstat(&fd).with_context(|| format!("inspecting '{}'", shown.display()))?;
        let root_st = fstat(self.walker.root_fd()).context("inspecting the root directory")?;
        if st.st_dev != root_st.st_dev || self.is_mount_point(persist) == Some(true) {
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

    fn config_error(&self, loc: Loc, message: String) -> anyhow::Error {
        anyhow::Error::new(ConfigError {
            file: self.config.file.clone(),
            line: Some(loc.line),
            column: Some(loc.column),
            message,
        })
    }

    /// Owner/mode a newly created source gets, and what the config says explicitly.
    pub(crate) fn entry_owner(&self, e: &EntryRef<'_>) -> Result<(Owner, Explicit)> {
        let (base_uid, base_gid) = match e.user {
            Some(u) => self
                .accounts
                .get(u.name.as_str())
                .cloned()
                .unwrap_or_else(|| Err(format!("user '{}' is unknown", u.name)))
                .map_err(|m| self.config_error(u.loc, m))?,
            None => (0, 0),
        };
        let at = |loc: Option<Loc>| loc.unwrap_or(e.entry.loc);
        let explicit = Explicit {
            uid: match &e.entry.user {
                Some(spec) => Some(
                    self.resolver
                        .uid(spec)
                        .map_err(|m| self.config_error(at(e.entry.user_loc), m))?,
                ),
                None => None,
            },
            gid: match &e.entry.group {
                Some(spec) => Some(
                    self.resolver
                        .gid(spec)
                        .map_err(|m| self.config_error(at(e.entry.group_loc), m))?,
                ),
                None => None,
            },
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
    pub(crate) fn parent_owner(&self, target_dir: &Path) -> Result<Owner> {
        for u in &self.config.persist.users {
            if target_dir.starts_with(&u.home) {
                let (uid, gid) = self
                    .accounts
                    .get(u.name.as_str())
                    .cloned()
                    .unwrap_or_else(|| Err(format!("user '{}' is unknown", u.name)))
                    .map_err(|m| self.config_error(u.loc, m))?;
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
}

/// Plans `tabula persist --root <root_dir>` without changing anything.
pub fn plan(config: &Config, root_dir: &Path) -> Result<Plan> {
    plan_with(config, root_dir, PlanOptions::default())
}

/// [`plan`] with options. When `root_dir` is `/`, as [`plan_running_system`].
pub fn plan_with(config: &Config, root_dir: &Path, opts: PlanOptions) -> Result<Plan> {
    plan_inner(config, root_dir, opts, None)
}

/// [`plan_with`] for a running system whose root is `root_dir`: a `how = "copy"` target that differs
/// from its persistent copy is left alone (with a warning), since the live file is the newer one
/// (changed since the last `tabula persist sync`). In the initrd the persistent copy wins.
pub fn plan_running_system(config: &Config, root_dir: &Path, opts: PlanOptions) -> Result<Plan> {
    plan_inner(config, root_dir, opts, Some(true))
}

fn plan_inner(
    config: &Config,
    root_dir: &Path,
    opts: PlanOptions,
    running: Option<bool>,
) -> Result<Plan> {
    let ctx = Ctx::new(config, root_dir)?;
    ctx.check_persist_mounted()?;
    let running = running.unwrap_or_else(|| ctx.full_path(Path::new("/")) == Path::new("/"));
    let entries = config
        .persist
        .entries()
        .iter()
        .map(|e| plan_entry(&ctx, e, opts, running))
        .collect();
    Ok(Plan {
        root: root_dir.to_path_buf(),
        persist: config.persist.path.clone(),
        entries,
    })
}

/// Sorts an error into refused or failed.
pub(crate) fn classify(err: &anyhow::Error) -> (PlanState, Option<&'static str>) {
    match err.chain().find_map(|c| c.downcast_ref::<Refusal>()) {
        Some(r) => (PlanState::Refused, Some(r.rule)),
        None => (PlanState::Failed, None),
    }
}

fn plan_entry(ctx: &Ctx<'_>, e: &EntryRef<'_>, opts: PlanOptions, running: bool) -> PlannedEntry {
    let target = e.target();
    let source = ctx.config.persist.source_of(&target);
    let mut p = PlannedEntry {
        target: target.clone(),
        source: source.clone(),
        kind: e.kind,
        how: e.entry.how,
        state: PlanState::Ready,
        rule: None,
        message: None,
        ops: Vec::new(),
        warnings: Vec::new(),
    };
    match plan_ops(ctx, e, &target, &source, opts, running, &mut p) {
        Ok(state) => {
            p.state = if state == PlanState::Ready && p.ops.is_empty() {
                PlanState::InPlace
            } else {
                state
            };
        }
        Err(err) => {
            let (state, rule) = classify(&err);
            p.state = state;
            p.rule = rule;
            p.message = Some(format!("{err:#}"));
            p.ops.clear();
        }
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

fn plan_ops(
    ctx: &Ctx<'_>,
    e: &EntryRef<'_>,
    target: &Path,
    source: &Path,
    opts: PlanOptions,
    running: bool,
    p: &mut PlannedEntry,
) -> Result<PlanState> {
    let w = &ctx.walker;
    let persist = &ctx.config.persist;
    let (owner, explicit) = ctx.entry_owner(e)?;
    let parents = parents_of(target);

    // Source parents: what exists keeps its owner/mode, what is missing gets the defaults.
    let mut ops = Vec::new();
    let mut parent_owners = Vec::new();
    let mut missing = false;
    for tp in &parents {
        let sp = persist.source_of(tp);
        let st = if missing { None } else { w.stat(&sp)? };
        match st {
            None => {
                missing = true;
                let o = ctx.parent_owner(tp)?;
                ops.push(Op::Mkdir {
                    path: sp,
                    uid: o.uid,
                    gid: o.gid,
                    mode: Perms(o.mode),
                });
                parent_owners.push(o);
            }
            Some(st) if is_dir(&st) => parent_owners.push(Owner::of(&st)),
            Some(st) if is_symlink(&st) => return Err(symlink_refusal(&w.shown(&sp))),
            Some(_) => bail!(
                "'{}' is in the way and is not a directory",
                w.shown(&sp).display()
            ),
        }
    }

    // The source itself.
    let src_st = if missing { None } else { w.stat(source)? };
    let shown_src = w.shown(source);
    let mut adopted = false;
    let src_owner: Owner = match (e.kind, src_st) {
        (_, Some(st)) if is_symlink(&st) => return Err(symlink_refusal(&shown_src)),
        (Kind::Directory, Some(st)) if !is_dir(&st) => {
            bail!("'{}' exists and is not a directory", shown_src.display())
        }
        (Kind::File, Some(st)) if !is_file(&st) => {
            bail!("'{}' exists and is not a regular file", shown_src.display())
        }
        (_, Some(st)) => {
            if e.entry.how == How::Copy {
                // Checked again at apply time; refusing now makes --dry-run say so.
                refuse_hard_links(&st, &shown_src)?;
            }
            let diff = explicit.differences(Owner::of(&st));
            if !diff.is_empty() {
                if e.kind == Kind::File && st.st_nlink > 1 {
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
            explicit.applied_to(Owner::of(&st))
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
            return Ok(PlanState::SourceMissing);
        }
        (Kind::File, None) if e.entry.how == How::Symlink => {
            p.message = Some(format!(
                "'{}' does not exist yet: the symlink dangles until a program writes through it",
                shown_src.display()
            ));
            owner
        }
        (Kind::File, None) => {
            let existing = if opts.adopt { w.leaf(target)? } else { None };
            match existing {
                Some((_, st)) if is_file(&st) && st.st_nlink == 1 => {
                    let o = explicit.applied_to(Owner::of(&st));
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
                    p.message = Some(source_missing_hint(ctx, target, source, opts.adopt));
                    return Ok(PlanState::SourceMissing);
                }
            }
        }
    };

    // Target parents copy the matching source parents.
    let mut tmissing = false;
    for (tp, o) in parents.iter().zip(&parent_owners) {
        let st = if tmissing { None } else { w.stat(tp)? };
        match st {
            None => {
                tmissing = true;
                ops.push(Op::Mkdir {
                    path: tp.clone(),
                    uid: o.uid,
                    gid: o.gid,
                    mode: Perms(o.mode),
                });
            }
            Some(st) if is_dir(&st) => {}
            Some(st) if is_symlink(&st) => return Err(symlink_refusal(&w.shown(tp))),
            Some(_) => bail!(
                "'{}' is in the way and is not a directory",
                w.shown(tp).display()
            ),
        }
    }

    // The target, then the mount or link.
    let shown_tgt = w.shown(target);
    let tgt_st = if tmissing { None } else { w.stat(target)? };
    match e.entry.how {
        How::Copy => {
            let needed = match tgt_st {
                None => true,
                Some(st) if is_symlink(&st) => return Err(symlink_refusal(&shown_tgt)),
                Some(st) if !is_file(&st) => bail!(
                    "'{}' exists in the root and is not a regular file",
                    shown_tgt.display()
                ),
                Some(_) => {
                    if ctx.is_mount_point(target) == Some(true) {
                        bail!(
                            "'{}' is a mount point (a bind mount from before `how = \"copy\"`?): a copy \
                             cannot replace it; unmount it first",
                            shown_tgt.display()
                        );
                    }
                    let owner_changes = ops.iter().any(|o| matches!(o, Op::SetOwnerMode { .. }));
                    let stale = owner_changes || !super::copy::is_current(w, source, target)?;
                    if stale && running {
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
            Some(st) if is_symlink(&st) => return Err(symlink_refusal(&shown_tgt)),
            Some(st) if e.kind == Kind::Directory && !is_dir(&st) => {
                bail!(
                    "'{}' exists in the root and is not a directory",
                    shown_tgt.display()
                )
            }
            Some(st) if e.kind == Kind::File && !is_file(&st) => {
                bail!(
                    "'{}' exists in the root and is not a regular file",
                    shown_tgt.display()
                )
            }
            Some(st) => {
                let bound = src_st.is_some_and(|s| s.st_dev == st.st_dev && s.st_ino == st.st_ino);
                if !bound {
                    if ctx.is_mount_point(target) == Some(true) {
                        bail!(
                            "'{}' is already a mount point of something else: unmount it first",
                            shown_tgt.display()
                        );
                    }
                    if let Some(w) = hidden_content(ctx, e.kind, target, &st, adopted)? {
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
                Some(st) if is_symlink(&st) => match w.read_link(target)? {
                    Some(t) if t == points_to => {}
                    Some(t) => bail!(
                        "'{}' is a symlink to '{}', not to '{}': remove it",
                        shown_tgt.display(),
                        t.display(),
                        points_to.display()
                    ),
                    None => bail!("'{}' changed while it was inspected", shown_tgt.display()),
                },
                Some(_) => bail!(
                    "a file already exists at '{}': move it to '{}' (to keep it) or delete it",
                    shown_tgt.display(),
                    shown_src.display()
                ),
            }
        }
    }
    p.ops = ops;
    Ok(PlanState::Ready)
}

/// A warning when a bind mount would hide what the root already has at the target.
fn hidden_content(
    ctx: &Ctx<'_>,
    kind: Kind,
    target: &Path,
    st: &nix::sys::stat::FileStat,
    adopted: bool,
) -> Result<Option<String>> {
    let shown = ctx.walker.shown(target);
    Ok(match kind {
        Kind::Directory => {
            let n = ctx.walker.count_entries(target)?;
            (n > 0).then(|| {
                format!(
                    "'{}' already has {n} {} in the root: the bind mount hides them (they stay in the \
                     root underneath; copy what you need into persistent storage)",
                    shown.display(),
                    entries_word(n)
                )
            })
        }
        Kind::File if adopted => None,
        Kind::File => (st.st_size > 0).then(|| {
            format!(
                "'{}' already has {} bytes in the root: the bind mount hides them",
                shown.display(),
                st.st_size
            )
        }),
    })
}

/// How a bind-mounted file with no source becomes persistent.
fn source_missing_hint(ctx: &Ctx<'_>, target: &Path, source: &Path, adopting: bool) -> String {
    let src = source.display();
    if adopting {
        format!(
            "'{src}' does not exist and '{}' has no regular file to adopt: nothing to do until the system \
             creates it",
            ctx.walker.shown(target).display()
        )
    } else {
        format!(
            "'{src}' does not exist: nothing is mounted this boot and the system creates '{}' as usual; to \
             keep it from now on run `tabula persist --root / --adopt` once it exists (or copy it to '{src}'); \
             from the next boot on it is bind-mounted",
            target.display()
        )
    }
}

/// "entry" or "entries".
pub(crate) fn entries_word(n: u64) -> &'static str {
    if n == 1 { "entry" } else { "entries" }
}
