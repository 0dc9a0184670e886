//! `tabula roots …`: list, show, mount, pin, delete and prune retired roots.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Local, Utc};
use serde::Serialize;
use tracing::{info, warn};

use super::{load_config, open_filesystem, open_filesystem_in, print_json};
use crate::cli::{Cli, RootsCommand};
use crate::error::{ExitStatus, PartialFailure, UsageError};
use crate::layout;
use crate::mounted::Mounted;
use crate::roots::{self, Guard, RetiredRoot, prune};

// Re-exported for the modules that still import it from here; it lives in `app` (used by several).
pub(super) use super::open_old_roots;

pub(super) fn run(cli: &Cli, cmd: &RootsCommand) -> Result<ExitStatus> {
    match cmd {
        RootsCommand::List(a) => list(cli, a.json),
        RootsCommand::Show { root, json } => show(cli, root, *json),
        RootsCommand::Mount { root, dir } => mount_root(cli, root, dir.as_deref()),
        RootsCommand::Umount { target } => umount_root(cli, target),
        RootsCommand::Pin { root, note } => pin(cli, root, true, note.as_deref()),
        RootsCommand::Unpin { root } => pin(cli, root, false, None),
        RootsCommand::Delete {
            root,
            force,
            dry_run,
        } => delete(cli, root, *force, *dry_run),
        RootsCommand::Prune { dry_run, json } => prune(cli, *dry_run, *json),
        RootsCommand::Diff {
            root,
            against,
            json,
            walk,
        } => super::files::diff(cli, root, against, *json, *walk),
    }
}

/// One row of `roots list` (also its JSON schema).
#[derive(Debug, Serialize)]
struct Row<'a> {
    r#ref: String,
    seq: u64,
    name: &'a layout::RetiredName,
    booted_at: Option<DateTime<Utc>>,
    retired_at: Option<DateTime<Utc>>,
    age_seconds: Option<i64>,
    clock_trusted: Option<bool>,
    pinned: bool,
    note: Option<&'a str>,
    kernel: Option<&'a str>,
    boot_id: Option<&'a str>,
    subvolume_id: Option<u64>,
    uuid: Option<&'a str>,
    read_only: Option<bool>,
    managed: bool,
    problem: Option<String>,
}

fn rows(roots: &[RetiredRoot], now: DateTime<Utc>) -> Vec<Row<'_>> {
    // `-N` refs count managed roots only (as `resolve` does); unmanaged rows have none.
    let mut back = 0;
    let mut refs: Vec<String> = roots
        .iter()
        .rev()
        .map(|r| {
            if r.managed() {
                back += 1;
                format!("-{back}")
            } else {
                String::new()
            }
        })
        .collect();
    refs.reverse();
    let out_of_step = roots::clocks_out_of_step(roots, now);
    roots
        .iter()
        .zip(refs)
        .rev()
        .map(|(r, r_ref)| {
            let m = r.meta.as_ref();
            let trusted = m.map(|m| m.clock_trusted && !out_of_step.contains(&r.seq()));
            let problem = match &r.standing {
                layout::Standing::Unmanaged { reason } => {
                    Some(format!("{reason}: not managed by tabula"))
                }
                layout::Standing::Retiring => Some(
                    "retirement unfinished (no metadata yet): the next rollback or prune completes it"
                        .to_string(),
                ),
                layout::Standing::Managed if r.info.as_ref().is_some_and(|i| !i.read_only) => Some(
                    "writable: a deletion or a rollback was interrupted (delete it again, or run the next rollback), or it was made writable by hand"
                        .to_string(),
                ),
                layout::Standing::Managed => None,
            };
            Row {
                r#ref: r_ref,
                seq: r.seq(),
                name: &r.name,
                booted_at: m.and_then(|m| m.booted_at),
                retired_at: m.map(|m| m.retired_at),
                age_seconds: m
                    .filter(|_| trusted == Some(true))
                    .map(|m| (now - m.retired_at).num_seconds()),
                clock_trusted: trusted,
                pinned: r.pinned(),
                note: m.and_then(|m| m.note.as_deref()),
                kernel: m.and_then(|m| m.kernel.as_deref()),
                boot_id: m.and_then(|m| m.boot_id.as_deref()),
                subvolume_id: r.info.as_ref().map(|i| i.id),
                uuid: r.info.as_ref().map(|i| i.uuid.as_str()),
                read_only: r.info.as_ref().map(|i| i.read_only),
                managed: r.is_ours(),
                problem,
            }
        })
        .collect()
}

/// "3d", "5h", "12m", "40s": enough to tell boots apart at a glance.
fn short_age(secs: i64) -> String {
    match secs {
        s if s < 0 => "future".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn local(t: Option<DateTime<Utc>>, trusted: Option<bool>) -> String {
    match t {
        Some(t) => {
            let mark = if trusted == Some(false) { "?" } else { "" };
            format!("{}{mark}", t.with_timezone(&Local).format("%Y-%m-%d %H:%M"))
        }
        None => "-".into(),
    }
}

/// A name or note as one line of text: control characters (a tab would break the TSV, an escape
/// sequence would drive the terminal) as `\xNN`.
fn esc(s: &str) -> String {
    crate::logging::escape_controls(s).into_owned()
}

fn list(cli: &Cli, json: bool) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, None)?;
    let old = open_old_roots(&fs)?;
    let roots = roots::list(old.as_fd())?;
    let rows = rows(&roots, Utc::now());
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            roots: &'a [Row<'a>],
        }
        return print_json("roots-list", &Out { roots: &rows }).map(|()| ExitStatus::Success);
    }
    let mut out = super::buffered_stdout();
    if std::io::stdout().is_terminal() {
        let table: Vec<[String; 9]> = rows
            .iter()
            .map(|r| {
                [
                    r.r#ref.clone(),
                    r.seq.to_string(),
                    esc(r.name),
                    local(r.booted_at, r.clock_trusted),
                    local(r.retired_at, r.clock_trusted),
                    r.age_seconds.map_or("?".into(), short_age),
                    if r.pinned {
                        "pinned".into()
                    } else {
                        String::new()
                    },
                    r.note
                        .map(esc)
                        .or_else(|| r.problem.clone())
                        .unwrap_or_default(),
                    r.kernel.unwrap_or("").to_string(),
                ]
            })
            .collect();
        let header = [
            "REF", "SEQ", "NAME", "BOOTED", "RETIRED", "AGE", "PIN", "NOTE", "KERNEL",
        ];
        let mut width = header.map(str::len);
        for row in &table {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let bold = std::env::var_os("NO_COLOR").is_none();
        let line = |cells: Vec<&str>| -> String {
            cells
                .iter()
                .zip(width)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let head = line(header.to_vec());
        if bold {
            writeln!(out, "\x1b[1m{head}\x1b[0m")?;
        } else {
            writeln!(out, "{head}")?;
        }
        for row in &table {
            writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
        }
        if table.is_empty() {
            writeln!(out, "(no retired roots yet)")?;
        }
    } else {
        for r in &rows {
            let t = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.r#ref,
                r.seq,
                esc(r.name),
                t(r.booted_at),
                t(r.retired_at),
                r.age_seconds.map(|a| a.to_string()).unwrap_or_default(),
                if r.clock_trusted == Some(false) {
                    "untrusted"
                } else {
                    "trusted"
                },
                if r.pinned { "pinned" } else { "" },
                esc(r.note.unwrap_or("")),
                r.kernel.unwrap_or(""),
            )?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

fn show(cli: &Cli, root: &str, json: bool) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, None)?;
    let old = open_old_roots(&fs)?;
    let roots = roots::list(old.as_fd())?;
    let r = roots::resolve(&roots, root)?;
    if json {
        return print_json("roots-show", r).map(|()| ExitStatus::Success);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "name:          {}", r.name)?;
    writeln!(out, "seq:           {}", r.seq())?;
    if let Some(i) = &r.info {
        writeln!(
            out,
            "subvolume:     id {} uuid {}{}",
            i.id,
            i.uuid,
            if i.read_only {
                " (read-only)"
            } else {
                " (WRITABLE)"
            }
        )?;
        writeln!(out, "created:       {}", local(i.otime, None))?;
    }
    match &r.meta {
        Some(m) => {
            let trust = if m.clock_trusted {
                ""
            } else {
                "  (clock untrusted)"
            };
            writeln!(
                out,
                "booted:        {}",
                local(m.booted_at, Some(m.clock_trusted))
            )?;
            writeln!(
                out,
                "retired:       {}{trust}",
                local(Some(m.retired_at), Some(m.clock_trusted))
            )?;
            writeln!(
                out,
                "boot id:       {}",
                m.boot_id.as_deref().unwrap_or("unknown")
            )?;
            writeln!(
                out,
                "kernel:        {}",
                m.kernel.as_deref().unwrap_or("unknown")
            )?;
            writeln!(
                out,
                "pinned:        {}",
                if m.pinned { "yes" } else { "no" }
            )?;
            writeln!(out, "note:          {}", m.note.as_deref().unwrap_or(""))?;
            writeln!(
                out,
                "retired by:    boot {} (kernel {})",
                m.retired_by.boot_id.as_deref().unwrap_or("?"),
                m.retired_by.kernel.as_deref().unwrap_or("?")
            )?;
            if !r.is_ours() {
                writeln!(
                    out,
                    "warning:       metadata does not match the subvolume: tabula will not delete it"
                )?;
            }
        }
        None => writeln!(
            out,
            "metadata:      none{}",
            r.meta_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )?,
    }
    writeln!(out, "look inside:   tabula roots mount {}", r.name)?;
    Ok(ExitStatus::Success)
}

fn mount_root(cli: &Cli, root: &str, dir: Option<&Path>) -> Result<ExitStatus> {
    use nix::mount::{MsFlags, mount};
    // The mount must be visible to the user: no private namespace for this command.
    let fs = open_filesystem_in(load_config(cli)?, None, false)?;
    let old = open_old_roots(&fs)?;
    let roots = roots::list(old.as_fd())?;
    let r = roots::resolve(&roots, root)?;
    let info = r
        .info
        .as_ref()
        .ok_or_else(|| UsageError(format!("'{}' is not a subvolume", r.name)))?;
    let target = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| roots::default_mount_point(&r.name));
    std::fs::create_dir_all(&target).with_context(|| format!("creating '{}'", target.display()))?;
    let opts = format!("subvolid={}", info.id);
    mount(
        Some(&fs.device),
        &target,
        Some("btrfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .with_context(|| format!("mounting '{}' on '{}'", r.name, target.display()))?;
    println!("{} is mounted read-only on {}", r.name, target.display());
    println!("unmount with: tabula roots umount {}", r.name);
    Ok(ExitStatus::Success)
}

fn umount_root(cli: &Cli, target: &str) -> Result<ExitStatus> {
    use nix::mount::{MntFlags, umount2};
    let config = load_config(cli)?;
    let dir: PathBuf = if target.starts_with('/') {
        PathBuf::from(target)
    } else {
        let fs = open_filesystem_in(config.clone(), None, false)?;
        let old = open_old_roots(&fs)?;
        let roots = roots::list(old.as_fd())?;
        roots::default_mount_point(&roots::resolve(&roots, target)?.name)
    };
    let mounts = crate::mountinfo::read().context("reading /proc/self/mountinfo")?;
    roots::check_umount(&mounts, &dir, &config.layout.old_roots)?;
    umount2(&dir, MntFlags::empty()).with_context(|| format!("unmounting '{}'", dir.display()))?;
    if dir.starts_with(roots::MOUNT_BASE) {
        let _ = std::fs::remove_dir(&dir);
    }
    println!("unmounted {}", dir.display());
    Ok(ExitStatus::Success)
}

fn pin(cli: &Cli, root: &str, pinned: bool, note: Option<&str>) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, Some(cli.lock_wait))?;
    let old = open_old_roots(&fs)?;
    let roots = roots::list(old.as_fd())?;
    let r = roots::resolve(&roots, root)?;
    roots::set_pinned(old.as_fd(), r, pinned, note)?;
    println!("{} {}", if pinned { "pinned" } else { "unpinned" }, r.name);
    Ok(ExitStatus::Success)
}

/// A progress line on a terminal for long deletions; silent otherwise.
struct Progress {
    tty: bool,
    total: usize,
    done: usize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal() && total > 1,
            total,
            done: 0,
        }
    }
    fn step(&mut self, what: &str) {
        self.done += 1;
        if self.tty {
            eprint!("\r\x1b[Kdeleting {}/{}: {what}", self.done, self.total);
        }
    }
    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn delete(cli: &Cli, root: &str, force: bool, dry_run: bool) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, (!dry_run).then_some(cli.lock_wait))?;
    let old = open_old_roots(&fs)?;
    let roots = roots::list(old.as_fd())?;
    let r = roots::resolve(&roots, root)?;
    let mounted = Mounted::scan(fs.top.as_fd(), &fs.device)?;
    let guard = Guard::gather(fs.top.as_fd(), old.as_fd(), mounted, &roots)?;
    let ids = guard.check(r, force)?;
    if dry_run {
        println!(
            "would delete '{}' ({} subvolume{})",
            r.name,
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitStatus::Success);
    }
    let mut progress = Progress::new(ids.len());
    roots::delete(old.as_fd(), r, &mut |p| {
        progress.step(&p.display().to_string())
    })?;
    progress.finish();
    println!("deleted '{}'", r.name);
    Ok(ExitStatus::Success)
}

fn prune(cli: &Cli, dry_run: bool, json: bool) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, (!dry_run).then_some(cli.lock_wait))?;
    let policy = &fs.config.retention;
    let old = open_old_roots(&fs)?;
    // Every mount namespace, scanned once for the whole prune.
    let mounted = Mounted::scan(fs.top.as_fd(), &fs.device)?;
    if !dry_run {
        prune::complete_interrupted(fs.top.as_fd(), &fs.config.layout, &mounted);
        // After boot, the service finishes a blank switch a power cut interrupted (`blank update`).
        match crate::blank::recover(
            fs.top.as_fd(),
            old.as_fd(),
            &fs.device,
            &fs.config.layout.blank,
        ) {
            Ok(done) => done.iter().for_each(|d| info!("{d}")),
            Err(e) => warn!("{e:#}"),
        }
    }
    let observed = prune::observe(fs.top.as_fd(), old.as_fd(), mounted)?;
    let plan = prune::plan(&observed, policy, Utc::now());
    if !json {
        print_prune_plan(&plan, dry_run)?;
    }
    let outcome = if dry_run {
        None
    } else {
        let mut progress = Progress::new(plan.delete.len());
        let outcome = prune::apply(
            fs.top.as_fd(),
            old.as_fd(),
            &observed,
            &plan,
            policy,
            &mut |name| progress.step(name),
        )?;
        progress.finish();
        Some(outcome)
    };
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            dry_run: bool,
            plan: &'a prune::PrunePlan,
            outcome: Option<&'a prune::Outcome>,
        }
        print_json(
            "roots-prune",
            &Out {
                dry_run,
                plan: &plan,
                outcome: outcome.as_ref(),
            },
        )?;
    } else if let Some(o) = &outcome {
        println!(
            "pruned: {} deleted by policy, {} for free space, {} failed",
            o.deleted.len(),
            o.deleted_for_space.len(),
            o.failed.len()
        );
    }
    if let Some(o) = outcome.as_ref().filter(|o| !o.failed.is_empty()) {
        let total = plan.delete.len() + o.deleted_for_space.len();
        return Err(PartialFailure {
            failed: o.failed.len(),
            total,
        }
        .into());
    }
    Ok(ExitStatus::Success)
}

fn print_prune_plan(plan: &prune::PrunePlan, dry_run: bool) -> Result<()> {
    let mut out = super::buffered_stdout();
    for r in &plan.retention.roots {
        let held = plan.held.iter().find(|h| h.name == r.name);
        let verdict = match (r.decision, held) {
            (crate::retention::Decision::Keep, _) => "keep",
            (crate::retention::Decision::Delete, Some(_)) => "keep",
            (crate::retention::Decision::Delete, None) if dry_run => "would delete",
            (crate::retention::Decision::Delete, None) => "delete",
        };
        let mut reasons: Vec<String> = r.reasons.iter().map(|x| x.text.clone()).collect();
        if let Some(h) = held {
            reasons.insert(0, format!("{} ({})", h.message, h.rule));
        }
        writeln!(out, "{verdict:<12} {}  {}", r.name, reasons.join("; "))?;
    }
    for h in plan
        .held
        .iter()
        .filter(|h| !plan.retention.roots.iter().any(|r| h.name == r.name))
    {
        writeln!(out, "{:<12} {}  {} ({})", "keep", h.name, h.message, h.rule)?;
    }
    if let Some(m) = &plan.min_free {
        writeln!(
            out,
            "free-space floor: {m} (oldest unprotected roots go first while below it)"
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::short_age;

    #[test]
    fn ages() {
        assert_eq!(short_age(-5), "future");
        assert_eq!(short_age(59), "59s");
        assert_eq!(short_age(600), "10m");
        assert_eq!(short_age(3 * 3600), "3h");
        assert_eq!(short_age(5 * 86400), "5d");
    }
}
