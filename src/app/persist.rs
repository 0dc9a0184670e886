//! `tabula persist`, `tabula check` and `tabula status`.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::{info, warn};

use super::roots::open_old_roots;
use super::{load_config, open_filesystem, print_json};
use crate::check::{self, CheckOptions};
use crate::cli::{CheckArgs, Cli, PersistArgs};
use crate::error::ExitStatus;
use crate::layout;
use crate::persist::{self, PlanOptions, State, prepare};

pub(super) fn persist(cli: &Cli, args: &PersistArgs) -> Result<ExitStatus> {
    // No private namespace: the bind mounts must be visible to the system that boots.
    let config = load_config(cli)?;
    // Into a new root (the initrd): mount what the binds go into first, as the shell glue used to.
    let into_new_root = std::fs::canonicalize(&args.root).ok().as_deref() != Some(Path::new("/"));
    let prep = if into_new_root {
        prepare::observe(&config, &args.root)?
    } else {
        prepare::Prepare::default()
    };
    let applied = if args.dry_run {
        None
    } else {
        Some(prepare::apply(&prep, &args.root))
    };
    let result = persist_prepared(args, &config, &prep, applied.as_ref());
    if let Some(applied) = &applied {
        prepare::finish(applied, &args.root);
    }
    result
}

fn persist_prepared(
    args: &PersistArgs,
    config: &crate::config::Config,
    prep: &prepare::Prepare,
    applied: Option<&prepare::Applied>,
) -> Result<ExitStatus> {
    let planned = persist::plan_with(config, &args.root, PlanOptions { adopt: args.adopt })
        .with_context(|| format!("planning persistence into '{}'", args.root.display()));
    let mut plan = match planned {
        // A dry run mounts nothing: the binds can only be planned once persistent storage is there.
        Err(e) if args.dry_run && !args.json && !prep.mounts.is_empty() => {
            print!("{}", prep.to_text());
            println!("then plan the binds ({e:#})");
            return Ok(ExitStatus::Success);
        }
        p => p?,
    };
    // Entries under a mount point that is still to come would be hidden by it: refuse them.
    let blocked = applied.map_or(&prep.blocked, |a| &a.blocked);
    prepare::refuse_blocked(&mut plan, blocked);
    if args.dry_run {
        if args.json {
            print_json("persist-plan", &plan)?;
        } else {
            print!("{}{}", prep.to_text(), plan.to_text());
        }
        return Ok(ExitStatus::Success);
    }
    let report = persist::apply(&plan);
    for e in &report.entries {
        let what = format!("'{}' ({})", e.target.display(), e.source.display());
        match e.state {
            State::Done => info!("{what}: in place"),
            State::Ready => {}
            State::InPlace => info!("{what}: already in place"),
            State::SourceMissing => warn!(
                "{what}: {}",
                e.message.as_deref().unwrap_or("source missing")
            ),
            State::Refused => warn!(
                "{what}: refused ({}): {}",
                e.rule.unwrap_or("?"),
                e.message.as_deref().unwrap_or("")
            ),
            State::Failed => warn!("{what}: failed: {}", e.message.as_deref().unwrap_or("")),
        }
    }
    if args.json {
        print_json("persist", &report)?;
    } else {
        let n = |o: State| report.entries.iter().filter(|e| e.state == o).count();
        println!(
            "persist: {} mounted, {} already in place, {} source missing, {} refused, {} failed",
            n(State::Done),
            n(State::InPlace),
            n(State::SourceMissing),
            n(State::Refused),
            n(State::Failed)
        );
    }
    match report.partial_failure() {
        Some(pf) => Err(pf.into()),
        None => Ok(ExitStatus::Success),
    }
}

pub(super) fn check(cli: &Cli, args: &CheckArgs) -> Result<ExitStatus> {
    let mut blank = args.blank.clone();
    // Keeps the blank's fd open while `/proc/self/fd/N` names it.
    let mut _held = None;
    if blank.is_none() {
        match blank_from_device(cli) {
            Ok((fd, path, default)) => {
                _held = Some(fd);
                blank = Some(path);
                if let Some(d) = default {
                    eprintln!(
                        "tabula: note: the default subvolume is {} (subvolume {})",
                        d.name.as_deref().unwrap_or("not in the layout"),
                        d.id
                    );
                    if let Some(w) = d.warning {
                        eprintln!("tabula: warning: {w}");
                    }
                }
            }
            Err(e) => eprintln!(
                "tabula: note: the blank snapshot was not checked ({e:#}); pass --blank DIR"
            ),
        }
    }
    let report = check::check_file(
        &cli.config,
        &CheckOptions {
            root: args.root.clone(),
            blank,
        },
    );
    let mut out = std::io::stdout().lock();
    for d in &report.diagnostics {
        writeln!(out, "{d}")?;
    }
    if report.has_errors() {
        return Ok(ExitStatus::Usage);
    }
    if !report.is_clean() {
        return Ok(ExitStatus::Failure);
    }
    writeln!(out, "{}: ok", cli.config.display())?;
    Ok(ExitStatus::Success)
}

/// The blank subvolume, reachable as `/proc/self/fd/N` (no visible mount), when the config and device
/// allow it; never waits for a device.
fn blank_from_device(
    cli: &Cli,
) -> Result<(
    std::os::fd::OwnedFd,
    PathBuf,
    Option<layout::DefaultSubvolume>,
)> {
    let mut config = load_config(cli)?;
    config.layout.device_timeout = Duration::ZERO;
    let fs = open_filesystem(config, None)?;
    let blank = layout::open_subvolume(fs.top.as_fd(), &fs.config.layout.blank)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", blank.as_raw_fd()));
    let default = layout::default_subvolume(fs.top.as_fd(), &fs.config.layout).ok();
    // The top-level fd can go: the blank's fd keeps the (detached) mount alive.
    Ok((blank, path, default))
}

#[derive(Serialize)]
struct Status {
    device: Option<String>,
    layout_error: Option<String>,
    root: Option<crate::btrfs::SubvolumeInfo>,
    blank: Option<crate::btrfs::SubvolumeInfo>,
    persist: Option<crate::btrfs::SubvolumeInfo>,
    retired_roots: Option<usize>,
    newest_retired: Option<String>,
    default_subvolume: Option<layout::DefaultSubvolume>,
    entries: Vec<persist::PlannedEntry>,
}

pub(super) fn status(cli: &Cli, args: &crate::cli::StatusArgs) -> Result<ExitStatus> {
    let json = args.json;
    let config = load_config(cli)?;
    // The allowlist is judged in this (the system's) mount namespace, before tabula leaves it.
    let entries = persist::status(&config, &args.root)
        .with_context(|| format!("inspecting the allowlist in '{}'", args.root.display()))?;
    let mut st = Status {
        device: None,
        layout_error: None,
        root: None,
        blank: None,
        persist: None,
        retired_roots: None,
        newest_retired: None,
        default_subvolume: None,
        entries,
    };
    let layout_cfg = config.layout.clone();
    match open_filesystem(config, None) {
        Ok(fs) => {
            st.device = Some(fs.device.display().to_string());
            let top = fs.top.as_fd();
            st.root = layout::entry_at(top, &layout_cfg.root)?
                .subvolume()
                .cloned();
            st.blank = layout::entry_at(top, &layout_cfg.blank)?
                .subvolume()
                .cloned();
            st.persist = layout::entry_at(top, &layout_cfg.persist)?
                .subvolume()
                .cloned();
            if let Ok(old) = open_old_roots(&fs) {
                let names = layout::retired_names(old.as_fd())?;
                st.retired_roots = Some(names.len());
                // The newest tabula manages: a stray entry named like a root is not "newest".
                st.newest_retired = crate::roots::list(old.as_fd())?
                    .iter()
                    .rev()
                    .find(|r| r.managed())
                    .map(|r| r.name.to_string());
            }
            st.default_subvolume = layout::default_subvolume(top, &layout_cfg).ok();
        }
        Err(e) => st.layout_error = Some(format!("{e:#}")),
    }
    let bad = st
        .entries
        .iter()
        .filter(|e| e.state != State::InPlace)
        .count();
    if json {
        print_json("status", &st)?;
    } else {
        let mut out = std::io::stdout().lock();
        let sv = |name: &str, s: &Option<crate::btrfs::SubvolumeInfo>| match s {
            Some(i) => format!(
                "'{name}' (subvolume {}{})",
                i.id,
                if i.read_only { ", read-only" } else { "" }
            ),
            None => format!("'{name}' MISSING"),
        };
        match &st.device {
            Some(d) => {
                writeln!(out, "device:        {d}")?;
                writeln!(out, "root:          {}", sv(&layout_cfg.root, &st.root))?;
                writeln!(out, "blank:         {}", sv(&layout_cfg.blank, &st.blank))?;
                writeln!(
                    out,
                    "persist:       {}",
                    sv(&layout_cfg.persist, &st.persist)
                )?;
                match st.retired_roots {
                    Some(n) => writeln!(
                        out,
                        "retired roots: {n}{}",
                        st.newest_retired
                            .as_deref()
                            .map(|x| format!(" (newest {x})"))
                            .unwrap_or_default()
                    )?,
                    None => writeln!(out, "retired roots: '{}' MISSING", layout_cfg.old_roots)?,
                }
                if let Some(d) = &st.default_subvolume {
                    writeln!(
                        out,
                        "default subvolume: {} (subvolume {})",
                        d.name.as_deref().unwrap_or("not in the layout"),
                        d.id
                    )?;
                    if let Some(w) = &d.warning {
                        writeln!(out, "warning:       {w}")?;
                    }
                }
            }
            None => writeln!(
                out,
                "layout:        unavailable: {}",
                st.layout_error.as_deref().unwrap_or("")
            )?,
        }
        writeln!(
            out,
            "allowlist:     {} entries, {} not in place",
            st.entries.len(),
            bad
        )?;
        for e in &st.entries {
            let state = persist::status_label(e.state);
            let mut line = format!("  {state:<14} {}", e.target.display());
            if let Some(m) = &e.message {
                line.push_str(&format!("  ({m})"));
            }
            for p in &e.problems {
                line.push_str(&format!("  [{p}]"));
            }
            if let Some(persist::Shadow::HiddenEntries { .. }) = &e.shadow {
                line.push_str("  [the mount hides data in the root]");
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(if bad > 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
