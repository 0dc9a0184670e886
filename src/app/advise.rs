//! `tabula advise` (the persistence advisor over the last retired roots), `tabula orphans` and
//! `tabula persist add`: knowing and growing the allowlist.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::files::persisted_paths;
use super::{load_config, open_filesystem, open_old_roots, print_json};
use crate::advise::{self, Advisor, BootRef, Ignore, Units};
use crate::cli::{AdviseArgs, Cli};
use crate::diff::{self, DiffOptions};
use crate::error::{ExitStatus, UsageError};
use crate::{layout, roots};

pub(super) fn advise(cli: &Cli, args: &AdviseArgs) -> Result<ExitStatus> {
    if args.boots == 0 {
        return Err(UsageError("--boots must be at least 1".into()).into());
    }
    let config = load_config(cli)?;
    // Units are read from the running system, before leaving its mount namespace (same view anyway).
    let dirs: Vec<PathBuf> = if args.unit_dir.is_empty() {
        advise::UNIT_DIRS.iter().map(PathBuf::from).collect()
    } else {
        args.unit_dir.clone()
    };
    let units = Units::read(&dirs);
    let fs = open_filesystem(config, None)?;
    let old_roots = open_old_roots(&fs)?;
    let all = roots::list(old_roots.as_fd())?;
    let picked: Vec<&roots::RetiredRoot> = all.iter().filter(|r| r.info.is_some()).collect();
    let picked = &picked[picked.len().saturating_sub(args.boots)..];
    let blank = layout::open_subvolume(fs.top.as_fd(), &fs.config.layout.blank)?;
    let mut ignore = persisted_paths(&fs.config);
    ignore.push(fs.config.persist.path.clone());
    let opts = DiffOptions {
        ignore,
        list_children: true,
        ..DiffOptions::default()
    };
    let mut advisor = Advisor::new(
        &fs.config.persist,
        Ignore::from_config(&fs.config),
        !args.all,
        units,
    );
    for r in picked {
        let tree = layout::open_subvolume(old_roots.as_fd(), &r.name)?;
        // One diff at a time: only the advisor's per-group totals outlive it.
        // Both from one filesystem and read-only: btrfs says what changed (send), no full walk.
        let d = diff::diff_fastest(blank.as_fd(), tree.as_fd(), &opts)
            .with_context(|| format!("comparing '{}' with the blank", r.name))?;
        advisor.add_boot(
            BootRef {
                name: r.name.to_string(),
                seq: r.seq(),
            },
            &d,
        );
    }
    let min_boots = args
        .min_boots
        .unwrap_or(if picked.len() <= 1 { 1 } else { 2 })
        .max(1);
    let report = advisor.finish(min_boots);
    if args.json {
        print_json("advise", &report)?;
    } else {
        std::io::stdout()
            .lock()
            .write_all(advise::render_text(&report, &cli.config).as_bytes())
            .context("writing the report")?;
    }
    Ok(ExitStatus::Success)
}

pub(super) fn orphans(cli: &Cli, json: bool) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, None)?;
    let persist = layout::open_subvolume(fs.top.as_fd(), &fs.config.layout.persist)?;
    let report = crate::orphans::find(persist.as_fd(), &fs.config.persist)?;
    if json {
        print_json("orphans", &report)?;
    } else {
        std::io::stdout()
            .lock()
            .write_all(crate::orphans::render_text(&report).as_bytes())
            .context("writing the report")?;
    }
    Ok(ExitStatus::Success)
}

pub(super) fn persist_add(cli: &Cli, args: &crate::cli::PersistAddArgs) -> Result<ExitStatus> {
    use crate::persist_add::{self, Request};
    let text = std::fs::read_to_string(&cli.config)
        .with_context(|| format!("reading '{}'", cli.config.display()))?;
    let config = crate::config::Config::parse(&cli.config, &text)?;
    let req = Request {
        path: args.path.clone(),
        how: if args.how == "symlink" {
            crate::config::How::Symlink
        } else {
            crate::config::How::Bind
        },
        root: args.root.clone(),
        force: args.force,
    };
    // The source: the live root, or a retired root reached through the top level. The process stays
    // in the system's mount namespace: the bind mount must be visible to it.
    let _fs;
    let (source, from) = match &args.from {
        None => (
            rustix::fs::open(
                &args.root,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .with_context(|| format!("opening '{}'", args.root.display()))?,
            "live".to_string(),
        ),
        Some(r) => {
            let fs = super::open_filesystem_in(
                config.clone(),
                (!args.dry_run).then_some(cli.lock_wait),
                false,
            )?;
            let old_roots = open_old_roots(&fs)?;
            let all = roots::list(old_roots.as_fd())?;
            let picked = roots::resolve(&all, r)?;
            let fd = layout::open_subvolume(old_roots.as_fd(), &picked.name)?;
            let name = picked.name.to_string();
            _fs = fs;
            (fd, name)
        }
    };
    let plan = persist_add::plan_add(&config, &text, &req, source.as_fd(), &from)?;
    if args.dry_run {
        if args.json {
            print_json("persist-add-plan", &plan)?;
        } else {
            print!("{}", plan.to_text());
        }
        return Ok(ExitStatus::Success);
    }
    for h in &plan.holders {
        eprintln!(
            "tabula: warning: process {} ({}) uses '{}' ({}): it keeps the old files until restarted",
            h.pid,
            h.comm,
            h.path.display(),
            h.how
        );
    }
    let report = persist_add::apply_add(&plan, &config, &args.root, source.as_fd())
        .with_context(|| format!("persisting '{}'", args.path.display()))?;
    if args.json {
        print_json("persist-add", &report)?;
    } else {
        println!(
            "'{}' is persistent now ({}; {} file(s) reflinked, {} copied) and listed in {}",
            plan.path.display(),
            plan.copy_to.display(),
            report.reflinked_files,
            report.copied_files,
            plan.config_file.display()
        );
        for w in &report.warnings {
            eprintln!("tabula: warning: {w}");
        }
        if !report.restart.is_empty() {
            println!("restart: systemctl restart {}", report.restart.join(" "));
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
    }
    Ok(ExitStatus::Success)
}
