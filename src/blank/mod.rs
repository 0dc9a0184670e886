//! Updating the blank transactionally (`tabula blank update|rollback|list`).
//!
//! A change is staged in `<blank>.tabula-update` (a name the configuration can never use), frozen, and
//! then swapped with the blank by one `renameat2(RENAME_EXCHANGE)` in the top level: at every instant the
//! blank is a read-only subvolume, the old one or the new one, so the boot path never sees it missing or
//! writable. Only then is the old blank (now under the staging name) moved into `old_roots` as
//! `blank-<seq>-<time>`, beside retired roots. Retired blanks live in `old_roots` because it already is
//! tabula's subvolume for retired things (same guard facts: ancestry, mounts, default subvolume) and
//! because their names never parse as retired roots ([`crate::layout::RetiredName`]), so the root code
//! (list, resolve, retention, sequence numbers, the guard) never sees them.
//!
//! Like a root's retirement, a blank's is proven by an intent, `old_roots/.tabula-blank.json`, written
//! and fsynced before the exchange: it names the old and new blank by id and uuid and the retired name.
//! Every `blank` command first finishes a transaction its intent shows interrupted ([`recover`]). A
//! retired blank is ours only when its metadata (`old_roots/blank-….json`) matches its id and uuid, or
//! the intent names it; only those are ever deleted, and only when not mounted anywhere, not the current
//! blank and not the default subvolume ([`check_delete`]).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::btrfs::{self, SubvolumeInfo};
use crate::error::Refusal;
use crate::layout::{self, Occupant, RetiredName};
use crate::mounted::Mounted;

pub mod rollback;
pub mod update;

/// Suffix of the staging subvolume of a blank update (`root-blank.tabula-update`).
pub const UPDATE_SUFFIX: &str = ".tabula-update";
/// The blank retirement intent in `old_roots`.
pub const INTENT_FILE: &str = ".tabula-blank.json";
/// Prefix of a retired blank's name in `old_roots`.
pub const PREFIX: &str = "blank-";

/// Fault points of a blank update, in order.
pub const FAULT_POINTS: &[&str] = &[
    "blank-after-snapshot",
    "blank-after-command",
    "blank-after-freeze",
    "blank-after-intent",
    "blank-after-exchange",
    "blank-after-thaw",
    "blank-after-retire",
    "blank-after-metadata",
    "blank-after-refreeze",
];

/// The staging name for `blank`.
pub fn staging_name(blank: &str) -> String {
    format!("{blank}{UPDATE_SUFFIX}")
}

/// Parses a retired blank's name (`blank-00003-2026-12-03T083500Z`).
pub fn parse_name(name: &str) -> Option<RetiredName> {
    RetiredName::parse(name.strip_prefix(PREFIX)?)
}

/// A subvolume's identity as recorded in an intent or metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ident {
    /// Subvolume id.
    pub id: u64,
    /// Subvolume uuid.
    pub uuid: String,
}

impl Ident {
    fn of(i: &SubvolumeInfo) -> Ident {
        Ident {
            id: i.id,
            uuid: i.uuid.clone(),
        }
    }
    fn is(&self, i: Option<&SubvolumeInfo>) -> bool {
        i.is_some_and(|i| i.id == self.id && i.uuid == self.uuid)
    }
}

/// What a blank switch is about to do, written durably before the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Schema version (1).
    pub version: u32,
    /// Sequence number of the retired blank (also the high-water mark).
    pub seq: u64,
    /// Its name in `old_roots`.
    pub name: String,
    /// The blank being retired.
    pub old: Ident,
    /// The staged blank replacing it.
    pub new: Ident,
    /// When.
    pub at: DateTime<Utc>,
    /// What made the new blank (`update from blank: apt-get …`, `rollback to blank-…`).
    pub how: String,
}

/// Metadata of a retired blank, `old_roots/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlankMeta {
    /// Schema version (1).
    pub version: u32,
    /// Sequence number.
    pub seq: u64,
    /// Name in `old_roots`.
    pub name: String,
    /// Subvolume id and uuid (checked before any deletion).
    pub subvolume_id: u64,
    /// Subvolume uuid.
    pub uuid: String,
    /// When it stopped being the blank.
    pub retired_at: DateTime<Utc>,
    /// The uuid of the blank that replaced it.
    pub replaced_by: String,
    /// What replaced it.
    pub how: String,
}

/// A retired blank found in `old_roots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// Name in `old_roots`.
    pub name: String,
    /// Sequence number.
    pub seq: u64,
    /// Subvolume identity, `None` when not a subvolume.
    pub info: Option<SubvolumeInfo>,
    /// Metadata, when readable.
    pub meta: Option<BlankMeta>,
    /// Whether tabula retired it (metadata matches its id and uuid).
    pub managed: bool,
    /// Why not, when not.
    pub problem: Option<String>,
}

/// Reads the intent (a broken one is reported and ignored: it then proves nothing).
pub fn read_intent(old_roots: BorrowedFd<'_>) -> Option<Intent> {
    layout::read_json(old_roots, INTENT_FILE).unwrap_or_else(|e| {
        tracing::warn!("{e:#}: ignoring it");
        None
    })
}

/// Every retired blank in `old_roots`, oldest first.
pub fn list(old_roots: BorrowedFd<'_>) -> Result<Vec<Retired>> {
    let mut names: Vec<(RetiredName, String)> = layout::entry_names(old_roots)?
        .into_iter()
        .filter_map(|n| parse_name(&n).map(|p| (p, n)))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for (parsed, name) in names {
        let info = layout::entry_at(old_roots, &name)?.subvolume().cloned();
        let meta: std::result::Result<Option<BlankMeta>, String> =
            layout::read_json(old_roots, &format!("{name}.json")).map_err(|e| format!("{e:#}"));
        let (managed, problem) = match (&info, &meta) {
            (None, _) => (false, Some("not a subvolume".to_string())),
            (_, Err(e)) => (false, Some(format!("{e}: protected"))),
            (Some(i), Ok(Some(m))) if m.subvolume_id == i.id && m.uuid == i.uuid => (true, None),
            (Some(_), Ok(Some(_))) => (
                false,
                Some("its metadata records another subvolume: not the blank tabula retired".into()),
            ),
            (Some(_), Ok(None)) => (
                false,
                Some("no tabula metadata: not retired by tabula".into()),
            ),
        };
        out.push(Retired {
            name,
            seq: parsed.seq(),
            info,
            meta: meta.ok().flatten(),
            managed,
            problem,
        });
    }
    Ok(out)
}

/// Refuses deleting retired blank `r` unless every rule allows it; returns its subvolume tree's ids.
pub fn check_delete(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    blank: &str,
    mounted: &Mounted,
    r: &Retired,
) -> Result<Vec<u64>, Refusal> {
    let name = &r.name;
    let Some(info) = &r.info else {
        return Err(Refusal::new(
            "not-subvolume",
            format!("'{name}' is not a subvolume"),
        ));
    };
    let old_id = btrfs::subvolume_info(old_roots)
        .map_err(|e| Refusal::new("unreadable", format!("{e:#}")))?
        .id;
    if info.parent_id != old_id {
        return Err(Refusal::new(
            "not-under-old-roots",
            format!("'{name}' is not a subvolume directly inside 'old_roots'"),
        ));
    }
    if !r.managed {
        return Err(Refusal::new(
            "no-metadata",
            format!(
                "'{name}': {}; tabula never deletes it",
                r.problem.as_deref().unwrap_or("not tabula's")
            ),
        ));
    }
    if let Ok(Occupant::Subvolume { info: b }) = layout::entry_at(top, blank)
        && (b.id == info.id || b.uuid == info.uuid)
    {
        return Err(Refusal::new(
            "current-blank",
            format!("'{name}' is the current blank"),
        ));
    }
    let ids = crate::roots::subvolume_tree(old_roots, name, info.id).map_err(|e| {
        Refusal::new(
            "unreadable",
            format!("listing the subvolumes inside '{name}': {e:#}"),
        )
    })?;
    if let Some((id, place)) = mounted.find(&ids) {
        return Err(Refusal::new(
            "mounted",
            format!("'{name}' (subvolume {id} in it) is mounted at {place}: unmount it first"),
        ));
    }
    let default_id = btrfs::default_subvolume_id(top)
        .map_err(|e| Refusal::new("unreadable", format!("{e:#}")))?;
    if ids.contains(&default_id) {
        return Err(Refusal::new(
            "default-subvolume",
            format!("'{name}' holds the filesystem's default subvolume ({default_id})"),
        ));
    }
    Ok(ids)
}

/// Deletes a retired blank that passed [`check_delete`]: subvolumes first, metadata last.
pub fn delete(old_roots: BorrowedFd<'_>, r: &Retired) -> Result<()> {
    btrfs::delete_subvolume_recursive(
        old_roots,
        &r.name,
        &|i: &SubvolumeInfo| i.received_uuid.is_none(),
        &mut |_| {},
    )
    .with_context(|| format!("deleting retired blank '{}'", r.name))?;
    remove_file(old_roots, &format!("{}.json", r.name))?;
    btrfs::sync(old_roots).context("committing the deletion")
}

fn remove_file(dir: BorrowedFd<'_>, file: &str) -> Result<()> {
    match rustix::fs::unlinkat(dir, file, rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing 'old_roots/{file}'")),
    }
}

/// Deletes a leftover staging subvolume (an update that died before its switch): the name is reserved
/// for tabula, and it is deleted only when it is directly in the top level, not the blank, not the one
/// the intent is retiring, not mounted anywhere and not the default subvolume.
pub fn discard_staging(
    top: BorrowedFd<'_>,
    device: &Path,
    blank: &str,
    intent: Option<&Intent>,
) -> Result<bool> {
    let staging = staging_name(blank);
    let info = match layout::entry_at(top, &staging)? {
        Occupant::Missing => return Ok(false),
        Occupant::Other => {
            return Err(Refusal::new(
                "staging-not-subvolume",
                format!("'{staging}' exists and is not a subvolume: move it away"),
            )
            .into());
        }
        Occupant::Subvolume { info } => info,
    };
    let blank_info = layout::entry_at(top, blank)?.subvolume().cloned();
    let refuse = |why: String| -> anyhow::Error {
        Refusal::new(
            "staging-protected",
            format!("'{staging}' {why}: left alone"),
        )
        .into()
    };
    if info.parent_id != btrfs::TOP_LEVEL_ID {
        return Err(refuse("is not directly in the top level".into()));
    }
    if blank_info.as_ref().is_some_and(|b| b.id == info.id)
        || intent.is_some_and(|i| i.old.id == info.id)
    {
        return Err(refuse("is a blank".into()));
    }
    let top_fd = layout::open_subvolume(top, ".")?;
    let mut ids = vec![info.id];
    let fd = layout::open_subvolume(top, &staging)?;
    for c in btrfs::child_subvolumes(fd.as_fd())? {
        ids.push(c.id);
    }
    let mounted = Mounted::scan(top_fd.as_fd(), device)?;
    if let Some((id, place)) = mounted.find(&ids) {
        return Err(refuse(format!("(subvolume {id}) is mounted at {place}")));
    }
    if ids.contains(&btrfs::default_subvolume_id(top)?) {
        return Err(refuse("is the default subvolume".into()));
    }
    btrfs::delete_subvolume_recursive(
        top,
        &staging,
        &|i: &SubvolumeInfo| i.received_uuid.is_none(),
        &mut |_| {},
    )
    .with_context(|| format!("deleting the staging subvolume '{staging}'"))?;
    btrfs::sync(top).context("committing")?;
    Ok(true)
}

/// The next retired-blank sequence number.
pub fn next_seq(old_roots: BorrowedFd<'_>) -> Result<u64> {
    seq_after_newest(old_roots)?.ok_or_else(|| sequence_exhausted().into())
}

/// The refusal when the retired-blank sequence is at its end.
pub fn sequence_exhausted() -> Refusal {
    Refusal::new("sequence-exhausted", "the blank sequence is at its end")
}

/// The number after the highest one used (the intent's or a retired blank's); `None` at the end of the
/// sequence, which is never wrapped.
pub(crate) fn seq_after_newest(old_roots: BorrowedFd<'_>) -> Result<Option<u64>> {
    let mut seq = read_intent(old_roots).map_or(0, |i| i.seq);
    for n in layout::entry_names(old_roots)? {
        if let Some(p) = parse_name(&n) {
            seq = seq.max(p.seq());
        }
    }
    Ok(seq.checked_add(1))
}

/// Switches the frozen staging subvolume in as the blank and retires the old blank into `old_roots`.
/// The staging subvolume must be read-only (checked).
pub fn commit(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    blank: &str,
    how: &str,
) -> Result<Intent> {
    let staging = staging_name(blank);
    let new = layout::entry_at(top, &staging)?
        .subvolume()
        .cloned()
        .with_context(|| format!("'{staging}' is not a subvolume"))?;
    anyhow::ensure!(new.read_only, "'{staging}' is not read-only");
    let old = layout::entry_at(top, blank)?
        .subvolume()
        .cloned()
        .ok_or_else(|| Refusal::new("blank-missing", format!("there is no '{blank}' subvolume")))?;
    let seq = next_seq(old_roots)?;
    let at = crate::fault::now();
    let intent = Intent {
        version: 1,
        seq,
        name: format!("{PREFIX}{}", RetiredName::new(seq, at)),
        old: Ident::of(&old),
        new: Ident::of(&new),
        at,
        how: how.to_string(),
    };
    layout::write_json(old_roots, INTENT_FILE, &intent)?;
    crate::fault::point("blank-after-intent");
    finish(top, old_roots, blank, &intent)?;
    Ok(intent)
}

/// Finishes the switch `intent` describes from wherever it stopped; `Ok(false)` when the disk shows
/// nothing of it left to do (or a state it does not describe, which is then left alone).
pub fn finish(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    blank: &str,
    intent: &Intent,
) -> Result<bool> {
    let staging = staging_name(blank);
    let b = layout::entry_at(top, blank)?.subvolume().cloned();
    let s = layout::entry_at(top, &staging)?.subvolume().cloned();
    let mut did = false;
    if intent.old.is(b.as_ref()) && intent.new.is(s.as_ref()) {
        // Both frozen: the swap is one atomic rename, the blank is never missing.
        anyhow::ensure!(
            s.as_ref().is_some_and(|s| s.read_only),
            "'{staging}' is not read-only"
        );
        crate::fsx::exchange_at(top, staging.as_str(), top, blank)
            .with_context(|| format!("exchanging '{staging}' and '{blank}'"))?;
        btrfs::sync(top).context("committing the switch")?;
        crate::fault::point("blank-after-exchange");
        did = true;
    }
    let b = layout::entry_at(top, blank)?.subvolume().cloned();
    if !intent.new.is(b.as_ref()) {
        return Ok(did);
    }
    let s = layout::entry_at(top, &staging)?.subvolume().cloned();
    if intent.old.is(s.as_ref()) {
        // btrfs refuses moving a read-only subvolume to another directory (EROFS): thaw it first. It
        // is no longer the blank, so being writable for a moment harms no boot.
        let fd = layout::open_subvolume(top, &staging)?;
        btrfs::set_read_only(fd.as_fd(), false)?;
        crate::fault::point("blank-after-thaw");
        crate::fsx::rename_noreplace_at(top, &staging, old_roots, &intent.name)
            .map_err(|e| e.errno())
            .with_context(|| format!("moving the old blank to 'old_roots/{}'", intent.name))?;
        crate::fault::point("blank-after-retire");
        did = true;
    }
    let r = layout::entry_at(old_roots, &intent.name)?
        .subvolume()
        .cloned();
    if let Some(r) = r.filter(|r| intent.old.is(Some(r))) {
        let file = format!("{}.json", intent.name);
        let meta: Option<BlankMeta> = layout::read_json(old_roots, &file).ok().flatten();
        if meta.is_none_or(|m| m.uuid != r.uuid) {
            layout::write_json(
                old_roots,
                &file,
                &BlankMeta {
                    version: 1,
                    seq: intent.seq,
                    name: intent.name.clone(),
                    subvolume_id: r.id,
                    uuid: r.uuid.clone(),
                    retired_at: intent.at,
                    replaced_by: intent.new.uuid.clone(),
                    how: intent.how.clone(),
                },
            )?;
            crate::fault::point("blank-after-metadata");
            did = true;
        }
        if !r.read_only {
            let fd = layout::open_subvolume(old_roots, &intent.name)?;
            btrfs::set_read_only(fd.as_fd(), true)?;
            crate::fault::point("blank-after-refreeze");
            did = true;
        }
        btrfs::sync(old_roots).context("committing")?;
    }
    Ok(did)
}

/// Finishes an interrupted switch, if the intent shows one; then discards a leftover staging
/// subvolume (an update that died before its switch). Returns what it did, for the log.
pub fn recover(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    device: &Path,
    blank: &str,
) -> Result<Vec<String>> {
    let mut did = Vec::new();
    let intent = read_intent(old_roots);
    if let Some(i) = &intent
        && finish(top, old_roots, blank, i)?
    {
        did.push(format!(
            "finished an interrupted blank switch (old blank retired as '{}')",
            i.name
        ));
    }
    if discard_staging(top, device, blank, intent.as_ref())? {
        did.push(format!(
            "discarded '{}', left by an update that did not finish",
            staging_name(blank)
        ));
    }
    Ok(did)
}

/// The blank, which must be a read-only subvolume: tabula changes only a read-only blank.
pub fn current(top: BorrowedFd<'_>, blank: &str) -> Result<SubvolumeInfo> {
    match layout::entry_at(top, blank)? {
        Occupant::Subvolume { info } if info.read_only => Ok(info),
        Occupant::Subvolume { .. } => Err(Refusal::new(
            "blank-writable",
            format!("the blank '{blank}' is writable: tabula changes only a read-only blank"),
        )
        .into()),
        _ => Err(Refusal::new(
            "blank-missing",
            format!("there is no blank subvolume '{blank}': run `tabula init`"),
        )
        .into()),
    }
}

/// [`prune`] to `keep` retired blanks (`blank_history`), logging what it deleted; a refusal is a warning,
/// not an error (the blank itself is already in place).
pub fn prune_history(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    device: &Path,
    blank: &str,
    keep: usize,
) -> Result<()> {
    let (deleted, held) = prune(top, old_roots, device, blank, keep)?;
    for d in deleted {
        tracing::info!("deleted retired blank '{d}' (blank_history = {keep})");
    }
    for h in held {
        tracing::warn!("kept {h}");
    }
    Ok(())
}

/// Deletes the oldest managed retired blanks beyond `keep`; returns the names deleted and the refusals.
pub fn prune(
    top: BorrowedFd<'_>,
    old_roots: BorrowedFd<'_>,
    device: &Path,
    blank: &str,
    keep: usize,
) -> Result<(Vec<String>, Vec<String>)> {
    let all = list(old_roots)?;
    let managed: Vec<&Retired> = all.iter().filter(|r| r.managed).collect();
    let excess = managed.len().saturating_sub(keep);
    let (mut deleted, mut held) = (Vec::new(), Vec::new());
    if excess == 0 {
        return Ok((deleted, held));
    }
    let top_fd = layout::open_subvolume(top, ".")?;
    let mounted = Mounted::scan(top_fd.as_fd(), device)?;
    for r in &managed[..excess] {
        match check_delete(top, old_roots, blank, &mounted, r) {
            Ok(_) => {
                delete(old_roots, r)?;
                deleted.push(r.name.clone());
            }
            Err(refusal) => held.push(format!("{}: {refusal}", r.name)),
        }
    }
    Ok((deleted, held))
}

/// A kernel file system mounted in the chroot: where, source, type, flags, options.
type KernelMount = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    nix::mount::MsFlags,
    Option<&'static str>,
);

/// Runs `command` chrooted in the staged subvolume `subvolid` of `device`, in a mount namespace of its
/// own: `/proc`, `/sys` and `/dev` of the machine, a fresh `/run` (no sockets of the running system's
/// services: a package script must not restart them) and each path of `binds` that exists both live
/// and in the stage, bound at the same place. Targets are opened without following symlinks and
/// mounted through their fd. Replaces this process with `command` (the namespace, and every mount in
/// it, ends with it); returns only on failure.
pub fn exec_chroot(
    device: &Path,
    subvolid: u64,
    degraded: bool,
    binds: &[std::path::PathBuf],
    command: &[String],
) -> Result<std::convert::Infallible> {
    use nix::mount::{MsFlags, mount};
    use std::os::unix::process::CommandExt;
    let (program, args) = command.split_first().context("no command given")?;
    crate::mount::enter_private_namespace()?;
    let base = crate::mount::scratch_base();
    let dir = crate::fsx::make_temp_dir(&base.join("tabula-blank."))
        .map_err(|e| e.errno())
        .context("creating a mount point for the staged blank")?;
    let opts = format!("subvolid={subvolid}");
    let mounted = mount(
        Some(device),
        &dir,
        Some("btrfs"),
        MsFlags::MS_NOATIME,
        Some(opts.as_str()),
    );
    if mounted.is_err() && degraded {
        mount(
            Some(device),
            &dir,
            Some("btrfs"),
            MsFlags::MS_NOATIME,
            Some(format!("{opts},degraded").as_str()),
        )
    } else {
        mounted
    }
    .with_context(|| format!("mounting the staged blank (subvolume {subvolid})"))?;
    let root = rustix::fs::open(
        &dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("opening the staged blank")?;
    let on = |rel: &Path, dir_wanted: bool| -> Option<std::os::fd::OwnedFd> {
        let target = if dir_wanted {
            crate::fsx::open_dir_beneath(root.as_fd(), rel).ok()?
        } else {
            let fd = crate::fsx::open_beneath(root.as_fd(), rel, crate::fsx::PATH).ok()?;
            crate::fsx::stat_fd(fd.as_fd())
                .ok()?
                .is_file()
                .then_some(fd)?
        };
        Some(target)
    };
    let fd_path = |fd: &std::os::fd::OwnedFd| {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", fd.as_raw_fd())
    };
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let kernel: [KernelMount; 4] = [
        (
            "proc",
            Some("proc"),
            Some("proc"),
            nodev | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "sys",
            Some("/sys"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ),
        (
            "dev",
            Some("/dev"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ),
        (
            "run",
            Some("tmpfs"),
            Some("tmpfs"),
            nodev,
            Some("mode=0755"),
        ),
    ];
    for (rel, source, fstype, flags, data) in kernel {
        let Some(t) = on(Path::new(rel), true) else {
            tracing::warn!("the staged blank has no /{rel}: not mounted");
            continue;
        };
        mount(source, fd_path(&t).as_str(), fstype, flags, data)
            .with_context(|| format!("mounting /{rel} in the staged blank"))?;
    }
    for b in binds {
        let Ok(rel) = b.strip_prefix("/") else {
            continue;
        };
        let live = std::fs::symlink_metadata(b);
        let Ok(live) = live else { continue };
        let Some(t) = on(rel, live.is_dir()) else {
            tracing::debug!("{}: not in the staged blank, not mounted", b.display());
            continue;
        };
        mount(
            Some(b.as_path()),
            fd_path(&t).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("binding {} in the staged blank", b.display()))?;
    }
    std::os::unix::fs::chroot(&dir).context("entering the staged blank (chroot)")?;
    std::env::set_current_dir("/").context("entering the staged blank")?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(err).with_context(|| format!("running '{program}' in the staged blank"))
}
