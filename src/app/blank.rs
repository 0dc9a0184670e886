//! `tabula blank …`: update, roll back, list and diff the blank (see [`crate::blank`]).

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::info;

use super::{Filesystem, load_config, open_filesystem, open_old_roots, print_json};
use crate::blank::{self, Retired, update};
use crate::btrfs;
use crate::cli::{BlankCommand, Cli, UpdateFrom};
use crate::diff::{self, DiffOptions};
use crate::error::{ExitStatus, PartialFailure, UsageError};
use crate::layout;

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
    let observed = update::observe(fs.top.as_fd(), old.as_fd(), &fs.config.layout.blank)?;
    let from = match from {
        UpdateFrom::Blank => update::Source::Blank,
        UpdateFrom::Current => update::Source::Current,
    };
    let plan = update::plan(&observed, &fs.config, from, command);
    if dry_run {
        println!(
            "would snapshot '{}' to '{}' (writable)",
            plan.source, plan.staging
        );
        if plan.from == update::Source::Current {
            println!("would empty the persisted directories in it");
        }
        println!("would run {:?} chrooted in it", plan.command);
        println!(
            "if it succeeds: would freeze it, make it '{}' and keep the old blank in '{}' as blank-{:05}-…, \
             keeping {} retired blanks",
            plan.blank,
            plan.old_roots,
            plan.next_seq.ok_or_else(blank::sequence_exhausted)?,
            plan.history
        );
        return Ok(ExitStatus::Success);
    }
    let intent = update::apply(fs.top.as_fd(), old.as_fd(), &fs.device, &plan)?;
    println!(
        "'{}' is the new blank (the next boot starts from it); the previous one is kept as '{}/{}' \
         (`tabula blank rollback` brings it back)",
        plan.blank, plan.old_roots, intent.name
    );
    prune(&fs, &old)
}

/// Prunes retired blanks beyond `blank_history`; refusals are warnings.
fn prune(fs: &Filesystem, old: &OwnedFd) -> Result<ExitStatus> {
    let layout = &fs.config.layout;
    blank::prune_history(
        fs.top.as_fd(),
        old.as_fd(),
        &fs.device,
        &layout.blank,
        layout.blank_history,
    )?;
    Ok(ExitStatus::Success)
}

fn rollback(cli: &Cli, name: Option<&str>, dry_run: bool) -> Result<ExitStatus> {
    let (fs, old) = open_recovered(cli, !dry_run)?;
    let layout = &fs.config.layout;
    let retired = blank::rollback::observe(fs.top.as_fd(), old.as_fd(), &layout.blank)?;
    let plan = blank::rollback::plan(&retired, name, layout)?;
    if dry_run {
        println!(
            "would make a read-only copy of '{}' the blank '{}' and retire the current one",
            plan.target.name, plan.blank
        );
        return Ok(ExitStatus::Success);
    }
    let intent = blank::rollback::apply(fs.top.as_fd(), old.as_fd(), &plan)?;
    println!(
        "'{}' is the blank again (a copy of '{}'); the one it replaced is kept as '{}/{}'",
        plan.blank, plan.target.name, plan.old_roots, intent.name
    );
    blank::rollback::drop_original(fs.top.as_fd(), old.as_fd(), &fs.device, &plan)?;
    prune(&fs, &old)
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
