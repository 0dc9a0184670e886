//! `tabula persist sync` and `tabula persist units`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags};

use super::{load_config, print_json};
use crate::cli::{Cli, SyncArgs};
use crate::error::ExitStatus;
use crate::persist::{self, SyncOptions};

/// Where concurrent syncs (the path unit's service and the shutdown one) queue.
const SYNC_LOCK: &str = "/run/tabula/persist-sync.lock";

/// `tabula persist units [--dir DIR]`.
pub(super) fn units(cli: &Cli, dir: Option<&Path>) -> Result<ExitStatus> {
    let config = load_config(cli)?;
    let units = persist::copy_path_units(&config);
    match dir {
        Some(dir) => {
            for p in persist::write_units(&units, dir)? {
                println!("{}", p.display());
            }
        }
        None => {
            for (name, text) in &units {
                println!("# {name}\n{text}");
            }
        }
    }
    Ok(ExitStatus::Success)
}

/// `tabula persist sync`.
pub(super) fn sync(cli: &Cli, args: &SyncArgs) -> Result<ExitStatus> {
    let config = load_config(cli)?;
    let opts = SyncOptions {
        paths: args.paths.clone(),
        prune: args.prune,
    };
    // Two syncs at once would race to rename: the later rename could hold the older content.
    let _lock = if args.dry_run {
        None
    } else {
        lock(cli.lock_wait)?
    };
    let plan = persist::plan_sync(&config, &args.root, &opts)
        .with_context(|| format!("planning the sync of '{}'", args.root.display()))?;
    let report = if args.dry_run {
        plan
    } else {
        persist::apply_sync(&plan)
    };
    if args.json {
        print_json(
            if args.dry_run {
                "persist-sync-plan"
            } else {
                "persist-sync"
            },
            &report,
        )?;
    } else {
        print!("{}", report.to_text());
    }
    match report.partial_failure() {
        Some(pf) => Err(pf.into()),
        None => Ok(ExitStatus::Success),
    }
}

/// An exclusive lock in /run (root's tmpfs: no user can hold it). `None` without /run.
fn lock(wait: Duration) -> Result<Option<crate::lock::FsLock>> {
    let dir = Path::new(SYNC_LOCK).parent().unwrap_or(Path::new("/run"));
    if !Path::new("/run").is_dir() {
        tracing::warn!("/run does not exist: syncing without a lock");
        return Ok(None);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating '{}'", dir.display()))?;
    crate::lock::lock_exclusive(SYNC_LOCK, wait, || {
        rustix::fs::open(
            SYNC_LOCK,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .with_context(|| format!("opening '{SYNC_LOCK}'"))
    })
    .map(Some)
}
