//! `tabula roots diff`, `tabula diff` and `tabula restore`: looking into roots and getting files back.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{Filesystem, load_config, open_filesystem, open_old_roots};
use crate::cli::{Cli, RestoreArgs};
use crate::config::Config;
use crate::diff::{self, DiffOptions};
use crate::error::{ExitStatus, PartialFailure, UsageError};
use crate::layout::{self, RootRef};
use crate::restore;
use crate::roots;

/// The paths the persistence allowlist mounts into the root: not changes of the root itself.
pub(super) fn persisted_paths(config: &Config) -> Vec<PathBuf> {
    config
        .persist
        .entries()
        .iter()
        .map(|e| e.target())
        .collect()
}

/// Opens the tree a root reference names: `blank`, `current` or a retired root. Returns its label too.
fn open_tree(
    fs: &Filesystem,
    old_roots: &OwnedFd,
    all: &[roots::RetiredRoot],
    r: &str,
) -> Result<(OwnedFd, String)> {
    let layout = &fs.config.layout;
    match RootRef::parse(r).map_err(UsageError)? {
        RootRef::Blank => Ok((
            layout::open_subvolume(fs.top.as_fd(), &layout.blank)?,
            "blank".into(),
        )),
        RootRef::Current => Ok((
            layout::open_subvolume(fs.top.as_fd(), &layout.root)?,
            "current".into(),
        )),
        _ => {
            let picked = roots::resolve(all, r)?;
            Ok((
                layout::open_subvolume(old_roots.as_fd(), &picked.name)?,
                picked.name.to_string(),
            ))
        }
    }
}

/// `walk`: the reference walk even where the send stream could say what changed (`current` is
/// writable, so `tabula diff` always walks).
pub(super) fn diff(
    cli: &Cli,
    root: &str,
    against: &str,
    json: bool,
    walk: bool,
) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, None)?;
    let old_roots = open_old_roots(&fs)?;
    let all = roots::list(old_roots.as_fd())?;
    let (new, new_label) = open_tree(&fs, &old_roots, &all, root)?;
    let (old, old_label) = open_tree(&fs, &old_roots, &all, against)?;
    let mut ignore = persisted_paths(&fs.config);
    if let Some(p) = persist_mount_point(&fs.config) {
        ignore.push(p);
    }
    let opts = DiffOptions {
        ignore,
        ..DiffOptions::default()
    };
    // Both trees come from one filesystem (its top level), as the send path requires.
    let mut d = if walk {
        diff::diff_trees(old.as_fd(), new.as_fd(), &opts)
    } else {
        diff::diff_fastest(old.as_fd(), new.as_fd(), &opts)
    }
    .with_context(|| format!("comparing '{new_label}' with '{old_label}'"))?;
    d.old_tree = Some(old_label.clone());
    d.new_tree = Some(new_label.clone());
    let mut out = super::buffered_stdout();
    if json {
        crate::json::Document::new("diff", &d)
            .write_to(&mut out)
            .context("writing JSON")?;
    } else if std::io::stdout().is_terminal() {
        writeln!(out, "{new_label} compared with {old_label}:")?;
        out.write_all(diff::render_human(&d).as_bytes())?;
    } else {
        out.write_all(diff::render_tsv(&d).as_bytes())?;
    }
    out.flush()?;
    match PartialFailure::of(d.summary.errors as usize, d.entries.len()) {
        Some(failed) => Err(failed.into()),
        None => Ok(ExitStatus::Success),
    }
}

/// Where the persistent subvolume is mounted in the root (its own mount point is not a change).
fn persist_mount_point(config: &Config) -> Option<PathBuf> {
    Some(config.persist.path.clone())
}

pub(super) fn restore(cli: &Cli, args: &RestoreArgs) -> Result<ExitStatus> {
    if !args.path.is_absolute() {
        return Err(UsageError(format!(
            "'{}': give the absolute path the file had in that boot",
            args.path.display()
        ))
        .into());
    }
    let dest = match &args.to {
        Some(to) if to.is_absolute() => to.clone(),
        Some(to) => std::env::current_dir()
            .context("reading the current directory")?
            .join(to),
        None => args.path.clone(),
    };
    let config = load_config(cli)?;
    let persisted = restore::persisted_prefix(&args.path, &persisted_paths(&config)).map(|p| {
        let live = config.persist.source_of(&args.path);
        format!(
            "'{}' is persisted ('{}' is bind-mounted from persistent storage): its contents live in persistent \
             storage ('{}' on the running system), not in the retired root, which only holds what was \
             written there before the mount",
            args.path.display(),
            p.display(),
            live.display()
        )
    });
    if let Some(note) = &persisted {
        println!("note: {}", crate::logging::escape_controls(note));
    }
    let fs = open_filesystem(config, (!args.dry_run).then_some(cli.lock_wait))?;
    let old_roots = open_old_roots(&fs)?;
    let all = roots::list(old_roots.as_fd())?;
    if matches!(
        RootRef::parse(&args.from),
        Ok(RootRef::Blank | RootRef::Current)
    ) {
        return Err(UsageError(
            "restore copies from a retired root: --from -1, a sequence number or a name".into(),
        )
        .into());
    }
    let (src, label) = open_tree(&fs, &old_roots, &all, &args.from)?;
    // The live system's root, in this process's (private copy of the) mount namespace: same filesystems.
    let slash = rustix::fs::open(
        "/",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("opening '/'")?;
    let planning = || match &persisted {
        Some(note) => format!(
            "planning the restore of '{}' from '{label}' ({note})",
            args.path.display()
        ),
        None => format!(
            "planning the restore of '{}' from '{label}'",
            args.path.display()
        ),
    };
    let plan = restore::plan_restore(src.as_fd(), &args.path, slash.as_fd(), &dest, args.force)
        .with_context(planning)?;
    // Items and files are written as the walk yields them: memory stays bounded by the tree's depth.
    let mut out = super::buffered_stdout();
    if args.dry_run {
        if args.json {
            restore::write_plan_json(&mut out, &plan, src.as_fd()).with_context(planning)?;
            writeln!(out)?;
        } else {
            restore::write_plan_text(&mut out, &plan, src.as_fd()).with_context(planning)?;
        }
        out.flush()?;
        return Ok(ExitStatus::Success);
    }
    let restoring = || format!("restoring '{}' from '{label}'", args.path.display());
    let report = if args.json {
        let report = restore::write_report_json(&mut out, &plan, src.as_fd(), slash.as_fd())
            .with_context(restoring)?;
        writeln!(out)?;
        report
    } else {
        let verbose = cli.verbose;
        let out = &mut out;
        let report =
            restore::apply_restore_streaming(&plan, src.as_fd(), slash.as_fd(), &mut |f| {
                if verbose {
                    let how = match f.data {
                        restore::DataHow::Reflinked => "reflinked",
                        restore::DataHow::Copied => "copied",
                    };
                    writeln!(
                        out,
                        "  {how}: {}",
                        crate::diff::escape_bytes(f.path.as_os_str().as_encoded_bytes())
                    )?;
                }
                Ok(())
            })
            .with_context(restoring)?;
        writeln!(
            out,
            "restored '{}' from '{label}' to '{}': {} file(s) reflinked, {} copied{}",
            crate::diff::escape_bytes(args.path.as_os_str().as_encoded_bytes()),
            crate::diff::escape_bytes(report.dest.as_os_str().as_encoded_bytes()),
            report.reflinked_files,
            report.copied_files,
            if report.replaced {
                ", replacing what was there"
            } else {
                ""
            }
        )?;
        report
    };
    out.flush()?;
    if !args.json {
        for w in &report.warnings {
            eprintln!("tabula: warning: {w}");
        }
    }
    Ok(ExitStatus::Success)
}
