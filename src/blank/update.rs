//! `tabula blank update`: observe, plan, apply.
//!
//! [`observe`] reads what the plan needs (the blank, the next retired-blank number, the live system's
//! separate `/boot` and `/efi`), [`plan`] decides without touching anything (it is what `--dry-run`
//! prints), and [`apply`] stages the new blank, runs the command in it, freezes it and switches it in
//! ([`super::commit`]). An update that fails before the switch discards its stage: the blank is unchanged.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::Intent;
use crate::config::{Config, Kind};
use crate::{btrfs, fsx, layout};

/// Where the new blank starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The current blank.
    Blank,
    /// The live root, minus what is persisted and what `[advise] ignore` names.
    Current,
}

/// What [`plan`] needs from the disk and the running system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The number the retired blank would get; `None` when the sequence is at its end (the switch
    /// refuses then, see [`super::next_seq`]).
    pub next_seq: Option<u64>,
    /// `/boot` and `/efi` when they are separate file systems on the running system: a kernel upgrade
    /// in the stage must reach the boot loader, or the next boot would run a kernel whose modules the
    /// new blank no longer has.
    pub boot_mounts: Vec<PathBuf>,
}

/// Reads what an update of the blank needs; refuses when the blank is missing or writable
/// ([`super::current`]). Changes nothing.
pub fn observe(top: BorrowedFd<'_>, old_roots: BorrowedFd<'_>, blank: &str) -> Result<Observed> {
    super::current(top, blank)?;
    Ok(Observed {
        next_seq: super::seq_after_newest(old_roots)?,
        boot_mounts: boot_mounts(),
    })
}

fn boot_mounts() -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::metadata("/") else {
        return Vec::new();
    };
    ["/boot", "/efi"]
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.dev() != root.dev()))
        .map(PathBuf::from)
        .collect()
}

/// An update of the blank, decided: what `--dry-run` prints and what [`apply`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where the new blank starts from.
    pub from: Source,
    /// The subvolume snapshotted (the blank, or `root` for [`Source::Current`]).
    pub source: String,
    /// The writable stage the command runs in ([`super::staging_name`]).
    pub staging: String,
    /// The blank it replaces.
    pub blank: String,
    /// Where the old blank is kept.
    pub old_roots: String,
    /// Persisted directories emptied in the stage (their content in the live root is hidden under
    /// their mounts, not part of the system); only for [`Source::Current`].
    pub empty: Vec<PathBuf>,
    /// `[advise] ignore` globs whose matches are left out of the stage; only for [`Source::Current`].
    pub ignore: Vec<String>,
    /// The command run chrooted in the stage.
    pub command: Vec<String>,
    /// Paths bound at the same place in the chroot: every persisted target, then `/boot` and `/efi`
    /// when separate.
    pub binds: Vec<PathBuf>,
    /// Whether the stage may be mounted degraded (`allow_degraded`).
    pub degraded: bool,
    /// The number the retired blank would get ([`Observed::next_seq`]).
    pub next_seq: Option<u64>,
    /// How many retired blanks are kept (`blank_history`).
    pub history: usize,
    /// What made the new blank, for its predecessor's metadata.
    pub how: String,
}

/// Decides an update of the blank from `observed` and the configuration. Pure.
pub fn plan(observed: &Observed, config: &Config, from: Source, command: &[String]) -> Plan {
    let layout = &config.layout;
    let current = from == Source::Current;
    let entries = config.persist.entries();
    let empty = if current {
        entries
            .iter()
            .filter(|e| e.kind == Kind::Directory)
            .map(|e| e.target())
            .collect()
    } else {
        Vec::new()
    };
    let ignore = if current {
        config.advise.ignore.clone()
    } else {
        Vec::new()
    };
    let mut binds: Vec<PathBuf> = entries.iter().map(|e| e.target()).collect();
    binds.extend(observed.boot_mounts.iter().cloned());
    let how = match from {
        Source::Blank => format!("update: {}", command.join(" ")),
        Source::Current => format!("update from current: {}", command.join(" ")),
    };
    Plan {
        from,
        source: match from {
            Source::Blank => layout.blank.clone(),
            Source::Current => layout.root.clone(),
        },
        staging: super::staging_name(&layout.blank),
        blank: layout.blank.clone(),
        old_roots: layout.old_roots.clone(),
        empty,
        ignore,
        command: command.to_vec(),
        binds,
        degraded: layout.allow_degraded,
        next_seq: observed.next_seq,
        history: layout.blank_history,
        how,
    }
}

/// Carries out `plan` on the filesystem of `device` (whose top level is `top`): snapshots the source
/// to the stage, prepares it ([`Source::Current`]), runs the command chrooted in it through
/// `/proc/self/exe blank exec`, freezes and commits it, and switches it in ([`super::commit`]). When
/// the command or the preparation fails the stage is discarded and the blank is unchanged. Returns the
/// switch's intent (the old blank's name in `old_roots`). Retired blanks beyond the history are pruned
/// by the caller ([`super::prune_history`]), after it has said what changed.
pub fn apply(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    device: &Path,
    plan: &Plan,
) -> Result<Intent> {
    let staging = &plan.staging;
    let src = layout::open_subvolume(top, &plan.source)?;
    btrfs::snapshot(src.as_fd(), top, staging, false)?;
    crate::fault::point("blank-after-snapshot");
    let info = layout::entry_at(top, staging)?
        .subvolume()
        .cloned()
        .with_context(|| format!("'{staging}' vanished"))?;
    let discard = |why: String| -> Result<Intent> {
        if let Err(e) = super::discard_staging(top, device, &plan.blank, None) {
            warn!("{e:#}");
        }
        Err(anyhow::anyhow!("{why}: the blank is unchanged"))
    };
    if plan.from == Source::Current
        && let Err(e) = empty_persisted(top, plan).and_then(|()| drop_ignored(top, plan))
    {
        return discard(format!("{e:#}"));
    }
    let command = &plan.command;
    let mut child = std::process::Command::new("/proc/self/exe");
    child
        .args(["--log", "stderr", "blank", "exec", "--device"])
        .arg(device)
        .args(["--subvolid", &info.id.to_string()]);
    if plan.degraded {
        child.arg("--degraded");
    }
    for p in &plan.binds {
        child.arg("--bind").arg(p);
    }
    child.arg("--").args(command);
    info!("running {command:?} in '{staging}'");
    let status = match child.status() {
        Ok(s) => s,
        Err(e) => return discard(format!("starting the command: {e}")),
    };
    if !status.success() {
        return discard(format!("{command:?} failed ({status})"));
    }
    crate::fault::point("blank-after-command");
    let fd = layout::open_subvolume(top, staging)?;
    btrfs::set_read_only(fd.as_fd(), true)?;
    btrfs::sync(top).context("committing the staged blank")?;
    crate::fault::point("blank-after-freeze");
    super::commit(top, old_roots, &plan.blank, &plan.how)
}

/// What a persisted directory holds in the live root is hidden under its mount, not part of the system:
/// it is emptied in the stage (the directory itself stays as the mount point).
fn empty_persisted(top: BorrowedFd<'_>, plan: &Plan) -> Result<()> {
    let staging = &plan.staging;
    let stage = layout::open_subvolume(top, staging)?;
    for target in &plan.empty {
        let rel = target.strip_prefix("/").unwrap_or(target);
        let Ok(dir) = fsx::open_dir_beneath(stage.as_fd(), rel) else {
            continue;
        };
        fsx::empty_dir(dir.as_fd())
            .with_context(|| format!("emptying {} in '{staging}'", target.display()))?;
    }
    Ok(())
}

/// What the user's `[advise] ignore` globs name is per-boot noise, not the system: directories are
/// emptied (they stay, with their owner and mode), anything else is removed. The built-in noise list
/// is not applied: on other distributions it names files the system needs.
fn drop_ignored(top: BorrowedFd<'_>, plan: &Plan) -> Result<()> {
    if plan.ignore.is_empty() {
        return Ok(());
    }
    let staging = &plan.staging;
    let globs: Vec<&str> = plan.ignore.iter().map(String::as_str).collect();
    let ignore = crate::advise::Ignore::new(&globs);
    let stage = layout::open_subvolume(top, staging)?;
    let stage_dev = fsx::stat_fd(stage.as_fd())?.dev;
    let mut pending = vec![(PathBuf::from("/"), stage)];
    while let Some((path, dir)) = pending.pop() {
        for name in fsx::read_names(dir.as_fd())? {
            let child = path.join(&name);
            let st = fsx::stat_at(dir.as_fd(), &name)?;
            let is_dir = st.is_dir();
            if ignore.matches(&child) {
                info!(
                    "--from current: leaving out {} ([advise] ignore)",
                    child.display()
                );
                if is_dir {
                    let d = fsx::open_dir_beneath(dir.as_fd(), Path::new(&name))?;
                    fsx::empty_dir(d.as_fd())
                } else {
                    fsx::remove_tree_at(dir.as_fd(), &name)
                }
                .with_context(|| format!("leaving out {} in '{staging}'", child.display()))?;
            } else if is_dir && st.dev == stage_dev && ignore.may_match_below(&child) {
                let d = fsx::open_dir_beneath(dir.as_fd(), Path::new(&name))?;
                pending.push((child, d));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[layout]\ndevice = \"/dev/vda2\"\nblank_history = 4\n{extra}\
             [persist]\ndirectories = [\"/var/lib/keep\"]\nfiles = [\"/etc/machine-id\"]\n\
             [advise]\nignore = [\"/var/cache/**\"]\n"
        );
        Config::parse(Path::new("/etc/tabula/tabula.toml"), &text).expect("a valid config")
    }

    fn observed() -> Observed {
        Observed {
            next_seq: Some(7),
            boot_mounts: vec![PathBuf::from("/boot")],
        }
    }

    fn cmd() -> Vec<String> {
        vec!["apt-get".into(), "-y".into(), "upgrade".into()]
    }

    #[test]
    fn from_blank_snapshots_the_blank_and_leaves_the_stage_as_it_is() {
        let c = config("");
        let p = plan(&observed(), &c, Source::Blank, &cmd());
        assert_eq!(p.source, c.layout.blank);
        assert_eq!(p.staging, format!("{}.tabula-update", c.layout.blank));
        assert_eq!(p.blank, c.layout.blank);
        assert_eq!(p.old_roots, c.layout.old_roots);
        assert!(p.empty.is_empty(), "{:?}", p.empty);
        assert!(p.ignore.is_empty(), "{:?}", p.ignore);
        assert_eq!(p.command, cmd());
        assert_eq!(p.how, "update: apt-get -y upgrade");
        assert_eq!((p.next_seq, p.history, p.degraded), (Some(7), 4, false));
    }

    #[test]
    fn from_current_snapshots_root_and_empties_only_persisted_directories() {
        let c = config("");
        let p = plan(&observed(), &c, Source::Current, &cmd());
        assert_eq!(p.source, c.layout.root);
        assert_eq!(p.empty, vec![PathBuf::from("/var/lib/keep")]);
        assert_eq!(p.ignore, vec!["/var/cache/**".to_string()]);
        assert_eq!(p.how, "update from current: apt-get -y upgrade");
    }

    #[test]
    fn every_persisted_path_and_the_boot_mounts_are_bound() {
        let c = config("allow_degraded = true\n");
        for from in [Source::Blank, Source::Current] {
            let p = plan(&observed(), &c, from, &cmd());
            assert_eq!(
                p.binds,
                ["/etc/machine-id", "/var/lib/keep", "/boot"].map(PathBuf::from)
            );
            assert!(p.degraded);
        }
        let none = Observed {
            next_seq: None,
            boot_mounts: Vec::new(),
        };
        let p = plan(&none, &c, Source::Blank, &cmd());
        assert_eq!(
            p.binds,
            ["/etc/machine-id", "/var/lib/keep"].map(PathBuf::from)
        );
        assert_eq!(p.next_seq, None);
    }
}
