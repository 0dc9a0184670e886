//! `tabula blank …`: update, roll back, list and diff the blank (see [`crate::blank`]).

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::{info, warn};

use super::{Filesystem, load_config, open_filesystem, open_old_roots, print_json};
use crate::blank::{self, Retired};
use crate::btrfs;
use crate::cli::{BlankCommand, Cli, UpdateFrom};
use crate::diff::{self, DiffOptions};
use crate::error::{ExitStatus, PartialFailure, Refusal, UsageError};
use crate::fsx;
use crate::layout::{self, Occupant};

/// Runs `tabula blank …`.
pub(super) fn run(cli: &Cli, cmd: &BlankCommand) -> Result<ExitStatus> {
    match cmd {
        BlankCommand::Update {
            from,
            dry_run,
            command,
        } => update(cli, *from, *dry_run, command),
        BlankCommand::Rollback { name, dry_run } => rollback(cli, name.as_deref(), *dry_run),
        BlankCommand::List(j) => list(cli, j.json),
        BlankCommand::Diff { old, json } => diff(cli, old.as_deref(), *json),
        BlankCommand::Exec {
            device,
            subvolid,
            degraded,
            bind,
            command,
        } => blank::exec_chroot(device, *subvolid, *degraded, bind, command).map(|n| match n {}),
    }
}

/// The blank, which must be a read-only subvolume.
fn current_blank(fs: &Filesystem) -> Result<btrfs::SubvolumeInfo> {
    let name = &fs.config.layout.blank;
    match layout::entry_at(fs.top.as_fd(), name)? {
        Occupant::Subvolume { info } if info.read_only => Ok(info),
        Occupant::Subvolume { .. } => Err(Refusal::new(
            "blank-writable",
            format!("the blank '{name}' is writable: tabula changes only a read-only blank"),
        )
        .into()),
        _ => Err(Refusal::new(
            "blank-missing",
            format!("there is no blank subvolume '{name}': run `tabula init`"),
        )
        .into()),
    }
}

/// Opens the filesystem locked and finishes whatever an interrupted blank command left.
fn open_recovered(cli: &Cli, lock: bool) -> Result<(Filesystem, OwnedFd)> {
    let fs = open_filesystem(load_config(cli)?, lock.then_some(cli.lock_wait))?;
    let old = open_old_roots(&fs)?;
    if lock {
        for d in blank::recover(
            fs.top.as_fd(),
            old.as_fd(),
            &fs.device,
            &fs.config.layout.blank,
        )? {
            info!("{d}");
        }
    }
    Ok((fs, old))
}

fn update(cli: &Cli, from: UpdateFrom, dry_run: bool, command: &[String]) -> Result<ExitStatus> {
    let (fs, old) = open_recovered(cli, !dry_run)?;
    let layout = &fs.config.layout;
    current_blank(&fs)?;
    let source = match from {
        UpdateFrom::Blank => layout.blank.clone(),
        UpdateFrom::Current => layout.root.clone(),
    };
    let staging = blank::staging_name(&layout.blank);
    if dry_run {
        println!("would snapshot '{source}' to '{staging}' (writable)");
        if from == UpdateFrom::Current {
            println!("would empty the persisted directories in it");
        }
        println!("would run {command:?} chrooted in it");
        println!(
            "if it succeeds: would freeze it, make it '{}' and keep the old blank in '{}' as blank-{:05}-…, \
             keeping {} retired blanks",
            layout.blank,
            layout.old_roots,
            blank::next_seq(old.as_fd())?,
            layout.blank_history
        );
        return Ok(ExitStatus::Success);
    }
    let src = layout::open_subvolume(fs.top.as_fd(), &source)?;
    btrfs::snapshot(src.as_fd(), fs.top.as_fd(), &staging, false)?;
    crate::fault::point("blank-after-snapshot");
    let info = layout::entry_at(fs.top.as_fd(), &staging)?
        .subvolume()
        .cloned()
        .with_context(|| format!("'{staging}' vanished"))?;
    let discard = |why: String| -> Result<ExitStatus> {
        if let Err(e) = blank::discard_staging(fs.top.as_fd(), &fs.device, &layout.blank, None) {
            warn!("{e:#}");
        }
        Err(anyhow::anyhow!("{why}: the blank is unchanged"))
    };
    if from == UpdateFrom::Current
        && let Err(e) = empty_persisted(&fs, &staging).and_then(|()| drop_ignored(&fs, &staging))
    {
        return discard(format!("{e:#}"));
    }
    let mut persisted: Vec<_> = fs
        .config
        .persist
        .entries()
        .iter()
        .map(|e| e.target())
        .collect();
    persisted.extend(boot_mounts());
    let mut child = std::process::Command::new("/proc/self/exe");
    child
        .args(["--log", "stderr", "blank", "exec", "--device"])
        .arg(&fs.device)
        .args(["--subvolid", &info.id.to_string()]);
    if layout.allow_degraded {
        child.arg("--degraded");
    }
    for p in &persisted {
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
    let fd = layout::open_subvolume(fs.top.as_fd(), &staging)?;
    btrfs::set_read_only(fd.as_fd(), true)?;
    btrfs::sync(fs.top.as_fd()).context("committing the staged blank")?;
    crate::fault::point("blank-after-freeze");
    let how = match from {
        UpdateFrom::Blank => format!("update: {}", command.join(" ")),
        UpdateFrom::Current => format!("update from current: {}", command.join(" ")),
    };
    let intent = blank::commit(fs.top.as_fd(), old.as_fd(), &layout.blank, &how)?;
    println!(
        "'{}' is the new blank (the next boot starts from it); the previous one is kept as '{}/{}' \
         (`tabula blank rollback` brings it back)",
        layout.blank, layout.old_roots, intent.name
    );
    prune(&fs, &old)
}

/// `/boot` and `/efi` when they are separate file systems on the running system: a kernel upgrade in
/// the stage must reach the boot loader, or the next boot would run a kernel whose modules the new
/// blank no longer has.
fn boot_mounts() -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::metadata("/") else {
        return Vec::new();
    };
    ["/boot", "/efi"]
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.dev() != root.dev()))
        .map(std::path::PathBuf::from)
        .collect()
}

/// Prunes retired blanks beyond `blank_history`; refusals are warnings.
fn prune(fs: &Filesystem, old: &OwnedFd) -> Result<ExitStatus> {
    let layout = &fs.config.layout;
    let (deleted, held) = blank::prune(
        fs.top.as_fd(),
        old.as_fd(),
        &fs.device,
        &layout.blank,
        layout.blank_history,
    )?;
    for d in deleted {
        info!(
            "deleted retired blank '{d}' (blank_history = {})",
            layout.blank_history
        );
    }
    for h in held {
        warn!("kept {h}");
    }
    Ok(ExitStatus::Success)
}

/// `--from current`: what a persisted directory holds in the live root is hidden under its mount, not
/// part of the system; it is emptied in the stage (the directory itself stays as the mount point).
fn empty_persisted(fs: &Filesystem, staging: &str) -> Result<()> {
    let stage = layout::open_subvolume(fs.top.as_fd(), staging)?;
    for e in fs.config.persist.entries() {
        if e.kind != crate::config::Kind::Directory {
            continue;
        }
        let target = e.target();
        let rel = target.strip_prefix("/").unwrap_or(&target);
        let Ok(dir) = fsx::open_dir_beneath(stage.as_fd(), rel) else {
            continue;
        };
        crate::restore::empty_dir(dir.as_fd())
            .with_context(|| format!("emptying {} in '{staging}'", target.display()))?;
    }
    Ok(())
}

/// `--from current`: what the user's `[advise] ignore` globs name is per-boot noise, not the system:
/// directories are emptied (they stay, with their owner and mode), anything else is removed. The
/// built-in noise list is not applied: on other distributions it names files the system needs.
fn drop_ignored(fs: &Filesystem, staging: &str) -> Result<()> {
    let globs: Vec<&str> = fs.config.advise.ignore.iter().map(String::as_str).collect();
    if globs.is_empty() {
        return Ok(());
    }
    let ignore = crate::advise::Ignore::new(&globs);
    let stage = layout::open_subvolume(fs.top.as_fd(), staging)?;
    let stage_dev = fsx::stat_fd(stage.as_fd())?.dev;
    let mut pending = vec![(std::path::PathBuf::from("/"), stage)];
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
                    crate::restore::empty_dir(d.as_fd())
                } else {
                    crate::restore::remove_tree(dir.as_fd(), name.as_bytes())
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

fn rollback(cli: &Cli, name: Option<&str>, dry_run: bool) -> Result<ExitStatus> {
    let (fs, old) = open_recovered(cli, !dry_run)?;
    let layout = &fs.config.layout;
    current_blank(&fs)?;
    let all = blank::list(old.as_fd())?;
    let target = pick(&all, name)?;
    if dry_run {
        println!(
            "would make a read-only copy of '{}' the blank '{}' and retire the current one",
            target.name, layout.blank
        );
        return Ok(ExitStatus::Success);
    }
    let staging = blank::staging_name(&layout.blank);
    let src = layout::open_subvolume(old.as_fd(), &target.name)?;
    btrfs::snapshot(src.as_fd(), fs.top.as_fd(), &staging, true)?;
    btrfs::sync(fs.top.as_fd()).context("committing")?;
    let intent = blank::commit(
        fs.top.as_fd(),
        old.as_fd(),
        &layout.blank,
        &format!("rollback to {}", target.name),
    )?;
    println!(
        "'{}' is the blank again (a copy of '{}'); the one it replaced is kept as '{}/{}'",
        layout.blank, target.name, layout.old_roots, intent.name
    );
    // The copy is the blank now: the retired original would only duplicate it.
    let top_fd = layout::open_subvolume(fs.top.as_fd(), ".")?;
    let mounted = crate::mounted::Mounted::scan(top_fd.as_fd(), &fs.device)?;
    match blank::check_delete(fs.top.as_fd(), old.as_fd(), &layout.blank, &mounted, target) {
        Ok(_) => blank::delete(old.as_fd(), target)?,
        Err(r) => warn!("kept '{}': {r}", target.name),
    }
    prune(&fs, &old)
}

fn pick<'a>(all: &'a [Retired], name: Option<&str>) -> Result<&'a Retired> {
    let found = match name {
        Some(n) => all.iter().find(|r| r.name == n),
        None => all.iter().rev().find(|r| r.managed),
    };
    let r = found.ok_or_else(|| {
        UsageError(match name {
            Some(n) => format!("no retired blank '{n}' (see `tabula blank list`)"),
            None => "there is no retired blank to go back to".into(),
        })
    })?;
    if !r.managed {
        return Err(Refusal::new(
            "no-metadata",
            format!(
                "'{}': {}",
                r.name,
                r.problem.as_deref().unwrap_or("not tabula's")
            ),
        )
        .into());
    }
    Ok(r)
}

#[derive(Serialize)]
struct ListOut {
    current: Option<btrfs::SubvolumeInfo>,
    retired: Vec<Retired>,
}

fn list(cli: &Cli, json: bool) -> Result<ExitStatus> {
    let (fs, old) = open_recovered(cli, false)?;
    let current = layout::entry_at(fs.top.as_fd(), &fs.config.layout.blank)?
        .subvolume()
        .cloned();
    let mut retired = blank::list(old.as_fd())?;
    retired.reverse();
    if json {
        print_json("blank-list", &ListOut { current, retired })?;
        return Ok(ExitStatus::Success);
    }
    let mut out = std::io::stdout().lock();
    if let Some(c) = &current {
        let made = c.otime.map(|t| t.to_rfc3339()).unwrap_or_default();
        writeln!(
            out,
            "current\t{}\t{made}\t{}",
            fs.config.layout.blank, c.uuid
        )?;
    }
    for r in &retired {
        let at = r.meta.as_ref().map(|m| m.retired_at.to_rfc3339());
        let how = r.meta.as_ref().map(|m| m.how.as_str());
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            r.seq,
            r.name,
            at.unwrap_or_default(),
            if r.managed {
                how.unwrap_or("").to_string()
            } else {
                format!("unmanaged: {}", r.problem.as_deref().unwrap_or(""))
            }
        )?;
    }
    Ok(ExitStatus::Success)
}

fn diff(cli: &Cli, old_name: Option<&str>, json: bool) -> Result<ExitStatus> {
    let (fs, old) = open_recovered(cli, false)?;
    let all = blank::list(old.as_fd())?;
    let found = match old_name {
        Some(n) => all.iter().find(|r| r.name == n),
        None => all.iter().rev().find(|r| r.managed),
    }
    .ok_or_else(|| UsageError("no such retired blank (see `tabula blank list`)".into()))?;
    let old_tree = layout::open_subvolume(old.as_fd(), &found.name)?;
    let new_tree = layout::open_subvolume(fs.top.as_fd(), &fs.config.layout.blank)?;
    let mut d = diff::diff_fastest(old_tree.as_fd(), new_tree.as_fd(), &DiffOptions::default())
        .with_context(|| format!("comparing the blank with '{}'", found.name))?;
    d.old_tree = Some(found.name.clone());
    d.new_tree = Some(fs.config.layout.blank.clone());
    let mut out = std::io::stdout().lock();
    if json {
        crate::json::Document::new("diff", &d)
            .write_to(&mut out)
            .context("writing JSON")?;
    } else if std::io::stdout().is_terminal() {
        writeln!(
            out,
            "{} compared with {}:",
            fs.config.layout.blank, found.name
        )?;
        out.write_all(diff::render_human(&d).as_bytes())?;
    } else {
        out.write_all(diff::render_tsv(&d).as_bytes())?;
    }
    match PartialFailure::of(d.summary.errors as usize, d.entries.len()) {
        Some(failed) => Err(failed.into()),
        None => Ok(ExitStatus::Success),
    }
}
