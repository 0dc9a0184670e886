//! Plans and reports for people and programs, written as the walk goes: a line or a JSON array
//! element per item, so that output, like the walk, takes bounded memory.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use anyhow::Context;
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::apply::apply_restore_streaming;
use super::plan::PlanWalk;
use super::{PlanItem, PlanListing, RestoreOp, RestorePlan, RestoreReport, SCHEMA_VERSION, Totals};
use crate::diff::{escape_bytes, format_bytes};

/// Render a collected plan for `--dry-run` on a terminal: one line per item, then the totals (what
/// [`write_plan_text`] writes as it walks).
pub fn render_plan(listing: &PlanListing) -> String {
    let mut out = header_text(&listing.plan);
    for item in &listing.items {
        out.push_str(&item_text(item));
    }
    out.push_str(&totals_text(&listing.plan, &listing.totals));
    out
}

/// Write the plan for `--dry-run` on a terminal, walking the source (in `source_root`) as it goes.
pub fn write_plan_text(
    out: &mut dyn Write,
    plan: &RestorePlan,
    source_root: BorrowedFd<'_>,
) -> anyhow::Result<Totals> {
    out.write_all(header_text(plan).as_bytes())?;
    let mut walk = plan.walk(source_root)?;
    for item in walk.by_ref() {
        out.write_all(item_text(&item?).as_bytes())?;
    }
    out.write_all(totals_text(plan, walk.totals()).as_bytes())?;
    Ok(walk.totals().clone())
}

/// Write the plan as one pretty JSON document (the module's schema), walking the source as it goes:
/// the same document [`PlanListing`] serializes to.
pub fn write_plan_json(
    out: &mut dyn Write,
    plan: &RestorePlan,
    source_root: BorrowedFd<'_>,
) -> anyhow::Result<Totals> {
    let doc = StreamedPlan {
        plan,
        walk: RefCell::new(plan.walk(source_root)?),
        failed: RefCell::new(None),
    };
    let written = serde_json::to_writer_pretty(&mut *out, &doc);
    if let Some(e) = doc.failed.into_inner() {
        return Err(e);
    }
    written.context("writing JSON")?;
    Ok(doc.walk.into_inner().totals().clone())
}

/// Apply the plan (as [`apply_restore_streaming`]) and write its report as one pretty JSON document,
/// each file's entry as it is made; what is known only at the end (totals, replaced, warnings)
/// follows the list.
pub fn write_report_json(
    out: &mut dyn Write,
    plan: &RestorePlan,
    source_root: BorrowedFd<'_>,
    dest_root: BorrowedFd<'_>,
) -> anyhow::Result<RestoreReport> {
    let doc = StreamedReport {
        plan,
        source_root,
        dest_root,
        outcome: RefCell::new(None),
    };
    let written = serde_json::to_writer_pretty(&mut *out, &doc);
    match doc.outcome.into_inner() {
        Some(Err(e)) => Err(e),
        Some(Ok(report)) => {
            written.context("writing JSON")?;
            Ok(report)
        }
        None => Err(written.context("writing JSON").err().unwrap_or_else(|| {
            anyhow::anyhow!("the restore did not run while writing its report")
        })),
    }
}

fn header_text(plan: &RestorePlan) -> String {
    let mut out = format!(
        "restore '{}' to '{}'\n",
        escape_bytes(plan.source.as_os_str().as_bytes()),
        escape_bytes(plan.dest.as_os_str().as_bytes())
    );
    if let Some(r) = &plan.replaces {
        out.push_str(&format!("replaces the existing {}", r.file_type.name()));
        if let Some(n) = r.entries {
            out.push_str(&format!(" and the {n} entries beneath it"));
        }
        out.push('\n');
    }
    out
}

fn item_text(item: &PlanItem) -> String {
    let path = escape_bytes(item.path.as_os_str().as_bytes());
    let what = match item.op {
        RestoreOp::File => format!(
            "file {:04o} {}:{} {}",
            item.mode,
            item.uid,
            item.gid,
            format_bytes(item.size)
        ),
        RestoreOp::Dir => format!("dir {:04o} {}:{}", item.mode, item.uid, item.gid),
        RestoreOp::Symlink => format!(
            "symlink -> {}",
            item.target
                .as_ref()
                .map(|t| escape_bytes(t.as_os_str().as_bytes()))
                .unwrap_or_default()
        ),
        RestoreOp::Hardlink => format!(
            "hard link to {}",
            item.link_to
                .as_ref()
                .map(|t| escape_bytes(t.as_os_str().as_bytes()))
                .unwrap_or_default()
        ),
        RestoreOp::Fifo => format!("fifo {:04o} {}:{}", item.mode, item.uid, item.gid),
        RestoreOp::Char | RestoreOp::Block => format!(
            "{} device {}:{} {:04o} {}:{}",
            if item.op == RestoreOp::Char {
                "char"
            } else {
                "block"
            },
            rustix::fs::major(item.src.rdev),
            rustix::fs::minor(item.src.rdev),
            item.mode,
            item.uid,
            item.gid
        ),
        RestoreOp::Skip => format!("skipped: {}", item.reason.as_deref().unwrap_or("")),
    };
    format!("  {path}  {what}\n")
}

fn totals_text(plan: &RestorePlan, t: &Totals) -> String {
    format!(
        "{} dirs, {} files ({}), {} symlinks, {} hard links, {} special, {} skipped; {}\n",
        t.dirs,
        t.files,
        format_bytes(t.bytes),
        t.symlinks,
        t.hardlinks,
        t.special,
        t.skipped,
        if plan.reflink_expected {
            "reflinks expected (btrfs on both ends)"
        } else {
            "files will be copied"
        }
    )
}

/// A plan document whose `items` are walked while they are serialized.
struct StreamedPlan<'a> {
    plan: &'a RestorePlan,
    walk: RefCell<PlanWalk>,
    /// The walk's error, which the serializer can only carry as text.
    failed: RefCell<Option<anyhow::Error>>,
}

impl Serialize for StreamedPlan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The header's fields, then the items as they come, then the totals they add up to.
        let p = self.plan;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("version", &p.version)?;
        map.serialize_entry("kind", "restore-plan")?;
        map.serialize_entry("source", &Path(&p.source))?;
        map.serialize_entry("dest", &Path(&p.dest))?;
        map.serialize_entry("force", &p.force)?;
        if let Some(r) = &p.replaces {
            map.serialize_entry("replaces", r)?;
        }
        map.serialize_entry("reflink_expected", &p.reflink_expected)?;
        map.serialize_entry("items", &Items(self))?;
        map.serialize_entry("totals", self.walk.borrow().totals())?;
        map.end()
    }
}

struct Items<'a, 'b>(&'b StreamedPlan<'a>);

impl Serialize for Items<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut walk = self.0.walk.borrow_mut();
        for item in walk.by_ref() {
            match item {
                Ok(item) => seq.serialize_element(&item)?,
                Err(e) => {
                    let text = format!("{e:#}");
                    *self.0.failed.borrow_mut() = Some(e);
                    return Err(S::Error::custom(text));
                }
            }
        }
        seq.end()
    }
}

/// A report document whose `files` are listed while the restore runs.
struct StreamedReport<'a> {
    plan: &'a RestorePlan,
    source_root: BorrowedFd<'a>,
    dest_root: BorrowedFd<'a>,
    outcome: RefCell<Option<anyhow::Result<RestoreReport>>>,
}

impl Serialize for StreamedReport<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("version", &SCHEMA_VERSION)?;
        map.serialize_entry("kind", "restore")?;
        map.serialize_entry("dest", &Path(&self.plan.dest))?;
        map.serialize_entry("files", &Files(self))?;
        let outcome = self.outcome.borrow();
        let Some(Ok(r)) = outcome.as_ref() else {
            return Err(S::Error::custom("the restore failed"));
        };
        map.serialize_entry("replaced", &r.replaced)?;
        map.serialize_entry("totals", &r.totals)?;
        map.serialize_entry("reflinked_files", &r.reflinked_files)?;
        map.serialize_entry("copied_files", &r.copied_files)?;
        map.serialize_entry("reflink_used", &r.reflink_used)?;
        if !r.warnings.is_empty() {
            map.serialize_entry("warnings", &r.warnings)?;
        }
        map.end()
    }
}

struct Files<'a, 'b>(&'b StreamedReport<'a>);

impl Serialize for Files<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut seq = s.serialize_seq(None)?;
        let mut failed = None;
        let outcome = apply_restore_streaming(r.plan, r.source_root, r.dest_root, &mut |f| {
            seq.serialize_element(f).map_err(|e| {
                let text = e.to_string();
                failed = Some(e);
                anyhow::anyhow!("writing the report: {text}")
            })
        });
        let ok = outcome.is_ok();
        *r.outcome.borrow_mut() = Some(outcome);
        if let Some(e) = failed {
            return Err(e);
        }
        if !ok {
            return Err(S::Error::custom("the restore failed"));
        }
        seq.end()
    }
}

/// A path as the diff module writes it (a string, or `{"bytes_base64": …}`).
struct Path<'a>(&'a std::path::Path);

impl Serialize for Path<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::diff::serialize_path(self.0, s)
    }
}
