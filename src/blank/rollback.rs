//! `tabula blank rollback`: observe, plan, apply.
//!
//! A read-only copy of a retired blank becomes the blank through the same switch as an update
//! ([`super::commit`]): the blank it replaces is retired in turn, so a rollback can be rolled back.
//! The retired original is then deleted when the rules allow ([`super::check_delete`]): the copy is
//! the blank now, and the original would only duplicate it.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use anyhow::{Context, Result};

use super::{Intent, Retired};
use crate::config::Layout;
use crate::error::{Refusal, UsageError};
use crate::mounted::Mounted;
use crate::{btrfs, layout};

/// Every retired blank, oldest first; refuses when the blank is missing or writable
/// ([`super::current`]). Changes nothing.
pub fn observe(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    blank: &str,
) -> Result<Vec<Retired>> {
    super::current(top, blank)?;
    super::list(old_roots)
}

/// A return to a retired blank, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The retired blank whose copy becomes the blank.
    pub target: Retired,
    /// The blank it replaces.
    pub blank: String,
    /// Where the copy is made before the switch ([`super::staging_name`]).
    pub staging: String,
    /// Where retired blanks are kept.
    pub old_roots: String,
}

/// Picks the retired blank to go back to: the one named, or the newest tabula retired. A name that is
/// not a retired blank is a usage error; one tabula did not retire is refused (`no-metadata`). Pure.
pub fn plan(retired: &[Retired], name: Option<&str>, layout: &Layout) -> Result<Plan> {
    let found = match name {
        Some(n) => retired.iter().find(|r| r.name == n),
        None => retired.iter().rev().find(|r| r.managed),
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
    Ok(Plan {
        target: r.clone(),
        blank: layout.blank.clone(),
        staging: super::staging_name(&layout.blank),
        old_roots: layout.old_roots.clone(),
    })
}

/// Makes a read-only copy of the plan's retired blank the blank ([`super::commit`]); returns the
/// switch's intent (the replaced blank's name in `old_roots`). The original is left to
/// [`drop_original`], after the caller has said what changed.
pub fn apply(top: BorrowedFd<'_>, old_roots: BorrowedFd<'_>, plan: &Plan) -> Result<Intent> {
    let src = layout::open_subvolume(old_roots, &plan.target.name)?;
    btrfs::snapshot(src.as_fd(), top, &plan.staging, true)?;
    btrfs::sync(top).context("committing")?;
    super::commit(
        top,
        old_roots,
        &plan.blank,
        &format!("rollback to {}", plan.target.name),
    )
}

/// Deletes the retired original of the blank [`apply`] put in place, when [`super::check_delete`]
/// allows; a refusal is a warning (the original is kept).
pub fn drop_original(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    device: &Path,
    plan: &Plan,
) -> Result<()> {
    let top_fd = layout::open_subvolume(top, ".")?;
    let mounted = Mounted::scan(top_fd.as_fd(), device)?;
    match super::check_delete(top, old_roots, &plan.blank, &mounted, &plan.target) {
        Ok(_) => super::delete(old_roots, &plan.target)?,
        Err(r) => tracing::warn!("kept '{}': {r}", plan.target.name),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn layout() -> Layout {
        Config::parse(
            Path::new("/etc/tabula/tabula.toml"),
            "[layout]\ndevice = \"/dev/vda2\"\n",
        )
        .expect("a valid config")
        .layout
    }

    fn retired(seq: u64, managed: bool) -> Retired {
        Retired {
            name: format!("blank-{seq:05}-2026-12-03T083500Z"),
            seq,
            info: None,
            meta: None,
            managed,
            problem: (!managed).then(|| "no tabula metadata: not retired by tabula".into()),
        }
    }

    fn rule(e: &anyhow::Error) -> Option<&'static str> {
        e.downcast_ref::<Refusal>().map(|r| r.rule)
    }

    #[test]
    fn without_a_name_the_newest_blank_tabula_retired_is_chosen() {
        let all = [retired(1, true), retired(2, true), retired(3, false)];
        let p = plan(&all, None, &layout()).expect("a plan");
        assert_eq!(p.target, all[1]);
        assert_eq!(p.blank, "root-blank");
        assert_eq!(p.staging, "root-blank.tabula-update");
        assert_eq!(p.old_roots, "old_roots");
        let e = plan(&[retired(3, false)], None, &layout()).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
    }

    #[test]
    fn a_named_blank_must_exist_and_be_tabulas() {
        let all = [retired(1, true), retired(2, false)];
        let p = plan(&all, Some(&all[0].name), &layout()).expect("a plan");
        assert_eq!(p.target, all[0]);
        let e = plan(&all, Some(&all[1].name), &layout()).unwrap_err();
        assert_eq!(rule(&e), Some("no-metadata"), "{e:#}");
        assert!(format!("{e}").contains("not retired by tabula"), "{e:#}");
        let e = plan(&all, Some("blank-00009-2026-12-03T083500Z"), &layout()).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
    }
}
