//! Applying a plan: one entry at a time, every step re-checked, a failing entry does not stop the others.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::mount::{MsFlags, mount};

use super::plan::classify;
use super::walk::{Owner, Walker, fd_path};
use super::{Kind, Op, Plan, PlannedEntry, State};

/// The result of [`apply`]: the plan, each entry with its state after applying (`done`, `in_place`,
/// `source_missing`, `refused`, `failed`) and the operations done.
pub type Report = Plan;

/// Performs `plan`. Each operation resolves its paths again without following symlinks, so a plan made
/// earlier (or a tree changed since) cannot redirect it; work found already done is skipped.
pub fn apply(plan: &Plan) -> Report {
    let walker = Walker::open(&plan.root);
    let mut mounts = super::mountinfo::mount_points().ok();
    let root_canon = std::fs::canonicalize(&plan.root).unwrap_or_else(|_| plan.root.clone());
    let entries = plan
        .entries
        .iter()
        .map(|p| {
            let mut report = PlannedEntry {
                done: Vec::new(),
                ..p.clone()
            };
            for w in &p.warnings {
                tracing::warn!("{}: {w}", p.target.display());
            }
            match p.state {
                State::InPlace | State::Done => report.state = State::InPlace,
                State::SourceMissing => {
                    tracing::info!(
                        "{}: {}",
                        p.target.display(),
                        p.message.as_deref().unwrap_or("source missing")
                    );
                }
                State::Refused | State::Failed => {
                    tracing::error!(
                        "{}: {}",
                        p.target.display(),
                        p.message.as_deref().unwrap_or("failed")
                    );
                }
                State::Ready => {
                    let result = match &walker {
                        Ok(w) => apply_entry(w, p, &root_canon, &mut mounts, &mut report.done),
                        Err(e) => Err(anyhow!("{e:#}")),
                    };
                    match result {
                        Ok(()) if report.done.is_empty() => report.state = State::InPlace,
                        Ok(()) => {
                            report.state = State::Done;
                            tracing::info!(
                                "persisted '{}' ({} steps)",
                                p.target.display(),
                                report.done.len()
                            );
                        }
                        Err(err) => {
                            let (state, rule) = classify(&err);
                            report.state = state;
                            report.rule = rule;
                            report.message = Some(format!("{err:#}"));
                            tracing::error!("{}: {err:#}", p.target.display());
                        }
                    }
                }
            }
            report
        })
        .collect();
    Plan {
        root: plan.root.clone(),
        persist: plan.persist.clone(),
        entries,
    }
}

fn apply_entry(
    w: &Walker,
    p: &PlannedEntry,
    root_canon: &Path,
    mounts: &mut Option<std::collections::HashSet<PathBuf>>,
    done: &mut Vec<String>,
) -> Result<()> {
    for op in &p.ops {
        let did = match op {
            Op::Mkdir {
                path,
                uid,
                gid,
                mode,
            } => w.mkdir(
                path,
                Owner {
                    uid: *uid,
                    gid: *gid,
                    mode: mode.0,
                },
            )?,
            Op::CreateFile {
                path,
                uid,
                gid,
                mode,
            } => w.create_file(
                path,
                Owner {
                    uid: *uid,
                    gid: *gid,
                    mode: mode.0,
                },
            )?,
            Op::SetOwnerMode {
                path,
                uid,
                gid,
                mode,
            } => {
                w.set_owner_mode(path, *uid, *gid, mode.map(|m| m.0))?;
                true
            }
            Op::Adopt {
                from,
                to,
                uid,
                gid,
                mode,
            } => {
                let (mut file, _) = w.open_file_for_copy(from)?;
                w.create_file_from(
                    to,
                    Owner {
                        uid: *uid,
                        gid: *gid,
                        mode: mode.0,
                    },
                    &mut file,
                )?;
                true
            }
            Op::Bind { source, target } => bind(w, p.kind, source, target, root_canon, mounts)?,
            Op::CopyIn { source, target } => {
                let full_target = root_canon.join(target.strip_prefix("/").unwrap_or(target));
                if mounts.as_ref().is_some_and(|m| m.contains(&full_target)) {
                    bail!(
                        "'{}' is a mount point: a copy cannot replace it; unmount it first",
                        w.shown(target).display()
                    );
                }
                let copied = super::copy::replace_with_copy(w, source, target, COPY_IN_FAULTS)?;
                for warning in &copied.warnings {
                    tracing::warn!("{warning}");
                }
                true
            }
            Op::Symlink {
                path,
                points_to,
                uid,
                gid,
            } => w.symlink(path, points_to, *uid, *gid)?,
            Op::CopyBack { .. } | Op::RemoveCopy { .. } => {
                bail!("'{op}' is a step of `tabula persist sync`, not of `tabula persist`")
            }
        };
        if did {
            // One line per step only at debug level: in the initrd the log is /dev/kmsg, which is rate-limited.
            tracing::debug!("{op}");
            done.push(op.to_string());
        }
    }
    Ok(())
}

/// Fault points of the boot-time copy into the new root.
const COPY_IN_FAULTS: super::copy::FaultPoints = super::copy::FaultPoints {
    created: "copy-in-created",
    data: "copy-in-data",
    before_rename: "copy-in-before-rename",
    renamed: "copy-in-renamed",
};

/// Bind-mounts `source` on `target` through `/proc/self/fd` paths of `O_PATH` fds obtained without following
/// symlinks, so no rename or symlink swap after the check can redirect the mount.
fn bind(
    w: &Walker,
    kind: Kind,
    source: &Path,
    target: &Path,
    root_canon: &Path,
    mounts: &mut Option<std::collections::HashSet<PathBuf>>,
) -> Result<bool> {
    let (sfd, sst) = w
        .leaf(source)?
        .ok_or_else(|| anyhow!("'{}' does not exist", w.shown(source).display()))?;
    let (tfd, tst) = w
        .leaf(target)?
        .ok_or_else(|| anyhow!("'{}' does not exist", w.shown(target).display()))?;
    let right_type = |st: &crate::fsx::Stat| match kind {
        Kind::Directory => st.is_dir(),
        Kind::File => st.is_file(),
    };
    if !right_type(&sst) || !right_type(&tst) {
        bail!(
            "'{}' and '{}' must both be {}",
            w.shown(source).display(),
            w.shown(target).display(),
            if kind == Kind::Directory {
                "directories"
            } else {
                "regular files"
            }
        );
    }
    if sst.same_object(&tst) {
        return Ok(false);
    }
    let full_target = root_canon.join(target.strip_prefix("/").unwrap_or(target));
    if mounts.as_ref().is_some_and(|m| m.contains(&full_target)) {
        bail!(
            "'{}' is already a mount point of something else: unmount it first",
            w.shown(target).display()
        );
    }
    if !Path::new("/proc/self/fd").is_dir() {
        bail!("/proc is not mounted: tabula bind-mounts through /proc/self/fd; mount /proc first");
    }
    mount(
        Some(fd_path(&sfd).as_str()),
        fd_path(&tfd).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "bind-mounting '{}' on '{}'",
            w.shown(source).display(),
            w.shown(target).display()
        )
    })?;
    if let Some(m) = mounts.as_mut() {
        m.insert(full_target);
    }
    // The target name now resolves to the mount: it must be the very source we checked.
    let (_, now) = w
        .leaf(target)?
        .ok_or_else(|| anyhow!("'{}' vanished after mounting", w.shown(target).display()))?;
    if !now.same_object(&sst) {
        bail!(
            "after mounting, '{}' is not '{}'",
            w.shown(target).display(),
            w.shown(source).display()
        );
    }
    Ok(true)
}
