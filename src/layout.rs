//! The on-disk layout: the top level's `root`, blank, `old_roots` and `persist` subvolumes, retired-root
//! names and their metadata.
//!
//! tabula keeps no state besides `old_roots`: a retired root is a read-only subvolume
//! `old_roots/<seq>-<UTC time>` with its metadata beside it in `old_roots/<name>.json`. The sequence
//! number, not the clock, orders boots (machines without an RTC boot in 1970). One more file,
//! `old_roots/.tabula-retiring.json` ([`Intent`]), records before each retirement which subvolume goes
//! under which name: it proves a retirement interrupted before its metadata was written, and keeps the
//! highest sequence number ever used. Whether an entry is tabula's is [`standing`]: names alone prove
//! nothing. Metadata is read defensively (no blocking, no links, regular files of bounded size).

use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use rustix::fs::{AtFlags, Mode, OFlags, fsync, openat, renameat, unlinkat};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::btrfs::{self, SubvolumeInfo};
use crate::fsx;

/// Suffix of the staging subvolume that becomes the next root (`root.tabula-new`); configuration
/// reserves it, so it is defined there.
pub use crate::config::STAGING_SUFFIX;
/// Clocks before this are certainly wrong (no RTC, dead battery).
pub const CLOCK_FLOOR: &str = "2025-01-01T00:00:00Z";
const TIME_FORMAT: &str = "%Y-%m-%dT%H%M%SZ";

/// A retired root's name: `<seq, at least 5 digits>-<UTC yyyy-mm-ddThhmmssZ>`, colon-free, sorting by boot.
///
/// Parsed once, where a name is read from `old_roots` or the command line, and carried as this type: the
/// sequence and the time are fields, never parsed back out of a string. It reads as the name itself
/// (`Deref<Target = str>`, `Display`, JSON string), so paths and messages take it as they are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetiredName {
    // Field order is the sort order: sequence, then time (the text follows from both).
    seq: u64,
    time: NaiveDateTime,
    text: String,
}

impl RetiredName {
    /// Parses `00042-2025-02-08T101503Z`; `None` for anything else (which tabula then never touches).
    pub fn parse(name: &str) -> Option<RetiredName> {
        let (seq, time) = name.split_once('-')?;
        if seq.len() < 5 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let time = NaiveDateTime::parse_from_str(time, TIME_FORMAT).ok()?;
        let parsed = RetiredName::from_parts(seq.parse().ok()?, time);
        // Only the canonical spelling: no aliases of one root under two names.
        (parsed.text == name).then_some(parsed)
    }

    /// The name for boot `seq` retired at `at`.
    pub fn new(seq: u64, at: DateTime<Utc>) -> RetiredName {
        RetiredName::from_parts(
            seq,
            at.naive_utc().with_nanosecond(0).unwrap_or(at.naive_utc()),
        )
    }

    fn from_parts(seq: u64, time: NaiveDateTime) -> RetiredName {
        let text = format!("{seq:05}-{}", time.format(TIME_FORMAT));
        RetiredName { seq, time, text }
    }

    /// Boot sequence number: highest existing + 1 when it was taken.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Retirement time (UTC, whole seconds) as the clock said then.
    pub fn time(&self) -> NaiveDateTime {
        self.time
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for RetiredName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::ops::Deref for RetiredName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for RetiredName {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl AsRef<std::path::Path> for RetiredName {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.text)
    }
}

impl PartialEq<str> for RetiredName {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for RetiredName {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<String> for RetiredName {
    fn eq(&self, other: &String) -> bool {
        &self.text == other
    }
}

impl Serialize for RetiredName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// What the boot that retired a root knew about itself (and the root it created in its place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retirer {
    /// Boot id of the boot that did the retiring.
    pub boot_id: Option<String>,
    /// Kernel release of that boot.
    pub kernel: Option<String>,
    /// UUID of the fresh root it created.
    pub new_root_uuid: Option<String>,
}

/// Metadata of a retired root, in `old_roots/<name>.json` (schema in the README).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMeta {
    /// Schema version (1).
    pub version: u32,
    /// Boot sequence number (same as in the name).
    pub seq: u64,
    /// The subvolume's name in `old_roots`.
    pub name: String,
    /// Boot id of the boot that ran on this root, when known.
    pub boot_id: Option<String>,
    /// Kernel release that ran on this root, when known.
    pub kernel: Option<String>,
    /// When the root was created, i.e. when that boot began (the subvolume's otime).
    pub booted_at: Option<DateTime<Utc>>,
    /// When it was retired (the clock of the retiring boot).
    pub retired_at: DateTime<Utc>,
    /// Whether the retiring boot's clock looked trustworthy on its own (not before 2025). Retention
    /// also judges whether it is in step with the neighbouring roots.
    pub clock_trusted: bool,
    /// The latest trusted time seen by this or any earlier retirement, carried forward from root to
    /// root. Informational: clocks are no longer judged against it (one boot at 2099 would poison it).
    #[serde(default)]
    pub clock_floor: Option<DateTime<Utc>>,
    /// Subvolume id (checked before any deletion).
    pub subvolume_id: u64,
    /// Subvolume UUID (checked before any deletion).
    pub uuid: String,
    /// Pinned roots are never pruned.
    pub pinned: bool,
    /// Free text (`tabula roots pin --note`).
    pub note: Option<String>,
    /// The boot that retired it.
    pub retired_by: Retirer,
}

impl RootMeta {
    /// The metadata file name of retired root `name`.
    pub fn file_name(name: &str) -> String {
        format!("{name}.json")
    }
}

/// Metadata and intent files are small; anything bigger is not ours.
pub const META_MAX_BYTES: u64 = 64 << 10;

/// Reads a small JSON file `old_roots/<file>` defensively: opened without blocking (a FIFO must not hang
/// the boot) or following a link, and only when it is a regular file of sane size. `Ok(None)` when absent.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    dir: BorrowedFd<'_>,
    file: &str,
) -> Result<Option<T>> {
    use std::io::Read;
    let fd = match openat(
        dir,
        file,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            anyhow::bail!("metadata 'old_roots/{file}' is a symlink, not a regular file")
        }
        Err(e) => return Err(e).with_context(|| format!("opening metadata 'old_roots/{file}'")),
    };
    let st = rustix::fs::fstat(&fd).with_context(|| format!("inspecting 'old_roots/{file}'"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        anyhow::bail!("metadata 'old_roots/{file}' is not a regular file");
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > META_MAX_BYTES {
        anyhow::bail!("metadata 'old_roots/{file}' is {size} bytes, more than metadata ever is");
    }
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(META_MAX_BYTES + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading metadata 'old_roots/{file}'"))?;
    let value = serde_json::from_slice(&buf)
        .with_context(|| format!("parsing metadata 'old_roots/{file}'"))?;
    Ok(Some(value))
}

/// Writes `old_roots/<file>` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_json<T: Serialize>(dir: BorrowedFd<'_>, file: &str, value: &T) -> Result<()> {
    write_json_with(dir, file, value, Durability::Now)
}

/// When a JSON file written by `write_json_with` is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns: fsync of the file and of the directory.
    Now,
    /// With the next transaction commit, in order with every later change: the bytes are in the
    /// filesystem tree before the rename (a small file's inline extent, or an fsync when it is not one),
    /// so no commit ever records the name without them; the directory is not fsynced. For the rollback,
    /// whose own snapshot or freeze commits right after.
    NextCommit,
}

/// Writes `old_roots/<file>` atomically (temp file, data on disk, rename), durable as `durability` says.
pub(crate) fn write_json_with<T: Serialize>(
    dir: BorrowedFd<'_>,
    file: &str,
    value: &T,
    durability: Durability,
) -> Result<()> {
    let tmp = format!(".{file}.tmp");
    let what = || format!("writing metadata 'old_roots/{file}'");
    let _ = unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .with_context(what)?;
    let mut f = std::fs::File::from(fd);
    let mut json = serde_json::to_vec_pretty(value).with_context(what)?;
    json.push(b'\n');
    f.write_all(&json).with_context(what)?;
    if !crate::fault::broken("meta-fsync") {
        // A commit without the data would record the name with an empty file (btrfs writes file data
        // back on its own schedule, not at a commit), which would read as someone else's root.
        let in_tree = durability == Durability::NextCommit
            && btrfs::write_back_inline(f.as_fd()).unwrap_or(false);
        if !in_tree {
            f.sync_all().with_context(what)?;
        }
    }
    drop(f);
    crate::fault::point("after-metadata-tmp");
    renameat(dir, tmp.as_str(), dir, file).with_context(what)?;
    if durability == Durability::Now {
        fsync(dir).with_context(what)?;
    }
    Ok(())
}

/// Reads `old_roots/<name>.json`; `Ok(None)` when it does not exist (see `read_json` for what is refused).
pub fn read_meta(old_roots: BorrowedFd<'_>, name: &str) -> Result<Option<RootMeta>> {
    read_json(old_roots, &RootMeta::file_name(name))
}

/// Writes `old_roots/<name>.json` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_meta(old_roots: BorrowedFd<'_>, meta: &RootMeta) -> Result<()> {
    write_json(old_roots, &RootMeta::file_name(&meta.name), meta)
}

/// [`write_meta`], durable with the next transaction commit (see [`Durability::NextCommit`]).
pub(crate) fn write_meta_next_commit(old_roots: BorrowedFd<'_>, meta: &RootMeta) -> Result<()> {
    write_json_with(
        old_roots,
        &RootMeta::file_name(&meta.name),
        meta,
        Durability::NextCommit,
    )
}

/// The retirement intent file in `old_roots`.
pub const INTENT_FILE: &str = ".tabula-retiring.json";

/// What a rollback is about to retire, written and fsynced before the rename: the proof that the subvolume
/// later found under `name` is the one tabula moved there. It is replaced by the next retirement, never
/// deleted, so its `seq` is also the sequence high-water mark that survives deleting the newest root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Schema version (1).
    pub version: u32,
    /// The sequence number taken.
    pub seq: u64,
    /// The name in `old_roots` the root is moved to.
    pub name: String,
    /// The retired root's subvolume id.
    pub subvolume_id: u64,
    /// The retired root's uuid.
    pub uuid: String,
}

/// Reads the retirement intent; `Ok(None)` when there is none (nothing retired yet, or before tabula kept one).
pub fn read_intent(old_roots: BorrowedFd<'_>) -> Result<Option<Intent>> {
    read_json(old_roots, INTENT_FILE)
}

/// Writes the retirement intent durably (before the rename it announces).
pub fn write_intent(old_roots: BorrowedFd<'_>, intent: &Intent) -> Result<()> {
    write_json(old_roots, INTENT_FILE, intent)
}

/// [`write_intent`], durable with the next transaction commit, which cannot carry the rename it
/// announces without carrying it too (see [`Durability::NextCommit`]).
pub(crate) fn write_intent_next_commit(old_roots: BorrowedFd<'_>, intent: &Intent) -> Result<()> {
    write_json_with(old_roots, INTENT_FILE, intent, Durability::NextCommit)
}

/// Whether tabula manages an entry of `old_roots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "standing", rename_all = "snake_case")]
pub enum Standing {
    /// Retired by tabula: its metadata parses and matches its subvolume id and uuid.
    Managed,
    /// Retired by tabula, which was interrupted before writing its metadata: the intent names it with its
    /// id and uuid. The next rollback or prune completes it.
    Retiring,
    /// Anything else: listed, never written, frozen, deleted, or counted.
    Unmanaged {
        /// Why.
        reason: String,
    },
}

impl Standing {
    /// Managed or retiring: tabula's own.
    pub fn is_ours(&self) -> bool {
        !matches!(self, Standing::Unmanaged { .. })
    }
}

/// Judges an entry `name` of `old_roots` from its subvolume identity, the outcome of reading its metadata,
/// and the retirement intent.
pub fn standing(
    name: &str,
    info: Option<&SubvolumeInfo>,
    meta: &std::result::Result<Option<RootMeta>, String>,
    intent: Option<&Intent>,
) -> Standing {
    let unmanaged = |reason: String| Standing::Unmanaged { reason };
    let Some(info) = info else {
        return unmanaged("not a subvolume".into());
    };
    match meta {
        Err(e) => unmanaged(format!("{e}: protected, never rewritten")),
        Ok(Some(m)) if m.subvolume_id == info.id && m.uuid == info.uuid => Standing::Managed,
        Ok(Some(m)) => unmanaged(format!(
            "it is subvolume {} ({}) but its metadata records {} ({}): not the root tabula retired",
            info.id, info.uuid, m.subvolume_id, m.uuid
        )),
        Ok(None) => match intent {
            Some(i) if i.name == name && i.subvolume_id == info.id && i.uuid == info.uuid => {
                Standing::Retiring
            }
            Some(i) if i.name == name => unmanaged(format!(
                "it is subvolume {} ({}) but tabula retired {} ({}) under this name: not the root tabula retired",
                info.id, info.uuid, i.subvolume_id, i.uuid
            )),
            _ => unmanaged("no tabula metadata: not retired by tabula".into()),
        },
    }
}

/// Removes `old_roots/<name>.json` (and a stale temp file), if present.
pub fn remove_meta(old_roots: BorrowedFd<'_>, name: &str) -> Result<()> {
    remove_meta_unsynced(old_roots, name)?;
    fsync(old_roots).context("syncing 'old_roots'")?;
    Ok(())
}

/// [`remove_meta`] without the fsync: for a batch that one transaction commit makes durable.
pub fn remove_meta_unsynced(old_roots: BorrowedFd<'_>, name: &str) -> Result<()> {
    let file = RootMeta::file_name(name);
    for f in [file.clone(), format!(".{file}.tmp")] {
        match unlinkat(old_roots, f.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("removing 'old_roots/{f}'")),
        }
    }
    Ok(())
}

/// What occupies a name in a directory of the layout (the top level, `old_roots`): nothing, a
/// subvolume, or something else. (Not a file-tree entry: those are `diff`'s.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Occupant {
    /// Nothing.
    Missing,
    /// A subvolume.
    Subvolume {
        /// Its identity.
        info: SubvolumeInfo,
    },
    /// Something that is not a subvolume (a plain directory, a file, a symlink).
    Other,
}

impl Occupant {
    /// The subvolume info, if this is a subvolume.
    pub fn subvolume(&self) -> Option<&SubvolumeInfo> {
        match self {
            Occupant::Subvolume { info } => Some(info),
            _ => None,
        }
    }
}

/// Looks at `dir/name` without following symlinks.
pub fn entry_at(dir: BorrowedFd<'_>, name: &str) -> Result<Occupant> {
    match fsx::open_dir_beneath(dir, Path::new(name)).map_err(|e| e.errno()) {
        Ok(fd) => {
            if btrfs::is_subvolume(fd.as_fd()).with_context(|| format!("checking '{name}'"))? {
                Ok(Occupant::Subvolume {
                    info: btrfs::subvolume_info(fd.as_fd())
                        .with_context(|| format!("inspecting '{name}'"))?,
                })
            } else {
                Ok(Occupant::Other)
            }
        }
        Err(Errno::NOENT) => Ok(Occupant::Missing),
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => Ok(Occupant::Other),
        Err(e) => Err(e).with_context(|| format!("opening '{name}'")),
    }
}

/// Every entry name in `old_roots` that is valid UTF-8, sorted bytewise (O(entries), no opens).
pub fn entry_names(old_roots: BorrowedFd<'_>) -> Result<Vec<String>> {
    let names = fsx::read_names(old_roots)
        .map_err(|e| e.errno())
        .context("listing 'old_roots'")?;
    Ok(names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect())
}

/// Names in `old_roots` that parse as retired roots, sorted by sequence number (O(entries), no opens).
/// Whether tabula manages each is a separate question: see [`standing`].
pub fn retired_names(old_roots: BorrowedFd<'_>) -> Result<Vec<RetiredName>> {
    let mut names: Vec<RetiredName> = entry_names(old_roots)?
        .iter()
        .filter_map(|n| RetiredName::parse(n))
        .collect();
    names.sort();
    Ok(names)
}

/// The filesystem's default subvolume (what a mount without `subvol=` shows), named in layout terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultSubvolume {
    /// Its subvolume id.
    pub id: u64,
    /// `root`, `top level`, `old_roots/<name>`, … or `None` when it is none of the layout's.
    pub name: Option<String>,
    /// Set when booting without `subvol=` would not land on `root`.
    pub warning: Option<String>,
}

/// Reads and names the default subvolume. tabula moves it along with `root` when it is `root`, and
/// leaves any other default alone.
pub fn default_subvolume(
    top: BorrowedFd<'_>,
    layout: &crate::config::Layout,
) -> Result<DefaultSubvolume> {
    let id = btrfs::default_subvolume_id(top).context("reading the default subvolume")?;
    let mut name = (id == btrfs::TOP_LEVEL_ID).then(|| "top level".to_string());
    for n in [
        &layout.root,
        &layout.blank,
        &layout.persist,
        &layout.old_roots,
    ] {
        if name.is_none()
            && let Occupant::Subvolume { info } = entry_at(top, n)?
            && info.id == id
        {
            name = Some(n.clone());
        }
    }
    if name.is_none()
        && let Ok(old) = open_subvolume(top, &layout.old_roots)
        && let Ok(children) = btrfs::child_subvolumes(old.as_fd())
    {
        name = children
            .iter()
            .find(|c| c.id == id)
            .map(|c| format!("{}/{}", layout.old_roots, c.path.display()));
    }
    let warning = (name.as_deref() != Some(layout.root.as_str())).then(|| {
        format!(
            "booting without subvol= (no rootflags=subvol={}) lands on {}, not on '{}'",
            layout.root,
            name.as_deref()
                .map_or_else(|| format!("subvolume {id}"), |n| format!("'{n}'")),
            layout.root
        )
    });
    Ok(DefaultSubvolume { id, name, warning })
}

/// Opens `name` in `dir` as a directory fd (no symlinks).
pub fn open_subvolume(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    fsx::open_dir_beneath(dir, Path::new(name))
        .map_err(|e| e.errno())
        .with_context(|| format!("opening '{name}'"))
}

/// Whether a clock reading at `now` can be trusted on its own: not before [`CLOCK_FLOOR`] (a machine
/// without an RTC boots in 1970).
///
/// Deliberately not judged against earlier retirements: one boot at 2099 would then make every later,
/// correct clock look "behind" and disable time-based retention for good. Whether a time is in step
/// with the boots around it is judged by retention, from all roots, every time it plans
/// (`retention` module: "In step").
pub fn clock_trusted(now: DateTime<Utc>) -> bool {
    let floor = DateTime::parse_from_rfc3339(CLOCK_FLOOR)
        .map(|d| d.with_timezone(&Utc))
        .ok();
    floor.is_none_or(|f| now >= f)
}

/// How the user names a root on the command line: a full name, a sequence number, `-1` (last boot's
/// root), `-2`, …, `blank` or `current`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootRef {
    /// The read-only blank snapshot.
    Blank,
    /// The live root.
    Current,
    /// The n-th newest retired root (`-1` is the newest).
    Back(usize),
    /// A retired root by sequence number.
    Seq(u64),
    /// A retired root by full name.
    Name(RetiredName),
}

impl RootRef {
    /// Parses a reference; the error says what is accepted.
    pub fn parse(s: &str) -> std::result::Result<RootRef, String> {
        let s = s.trim();
        if s == "blank" {
            return Ok(RootRef::Blank);
        }
        if s == "current" {
            return Ok(RootRef::Current);
        }
        if let Some(n) = s.strip_prefix('-')
            && let Ok(n) = n.parse::<usize>()
            && n >= 1
        {
            return Ok(RootRef::Back(n));
        }
        if !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = s.parse()
        {
            return Ok(RootRef::Seq(n));
        }
        if let Some(n) = RetiredName::parse(s) {
            return Ok(RootRef::Name(n));
        }
        Err(format!(
            "'{s}' names no root: use a full name (00042-2025-02-08T101503Z), a sequence number (42), \
             -1 for last boot's root, -2, …, `blank` or `current`"
        ))
    }

    /// The retired root this reference picks among `names` (sorted by sequence); `None` for blank/current
    /// or when there is no such root.
    pub fn pick<'a>(&self, names: &'a [RetiredName]) -> Option<&'a RetiredName> {
        match self {
            RootRef::Back(n) => names.len().checked_sub(*n).and_then(|i| names.get(i)),
            RootRef::Seq(seq) => names.iter().find(|x| x.seq == *seq),
            RootRef::Name(name) => names.iter().find(|x| *x == name),
            RootRef::Blank | RootRef::Current => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_refs() {
        let epoch = DateTime::from_timestamp(0, 0).unwrap();
        let names: Vec<RetiredName> = (1..=3).map(|s| RetiredName::new(s, epoch)).collect();
        assert_eq!(RootRef::parse("-1").unwrap().pick(&names), Some(&names[2]));
        assert_eq!(RootRef::parse("-3").unwrap().pick(&names), Some(&names[0]));
        assert_eq!(RootRef::parse("-4").unwrap().pick(&names), None);
        assert_eq!(RootRef::parse("2").unwrap().pick(&names), Some(&names[1]));
        assert_eq!(
            RootRef::parse("00001-1970-01-01T000000Z")
                .unwrap()
                .pick(&names),
            Some(&names[0])
        );
        assert_eq!(RootRef::parse("blank").unwrap(), RootRef::Blank);
        assert_eq!(RootRef::parse("current").unwrap(), RootRef::Current);
        for bad in ["-0", "", "yesterday", "-x"] {
            assert!(RootRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        let t = DateTime::parse_from_rfc3339("2025-02-08T10:15:03.7Z")
            .unwrap()
            .with_timezone(&Utc);
        let n = RetiredName::new(42, t);
        assert_eq!(n.to_string(), "00042-2025-02-08T101503Z");
        assert_eq!(
            RetiredName::parse("00042-2025-02-08T101503Z"),
            Some(n.clone())
        );
        let epoch = DateTime::from_timestamp(0, 0).unwrap();
        let later = RetiredName::new(43, epoch);
        assert_eq!(later.to_string(), "00043-1970-01-01T000000Z");
        assert!(later > n, "sequence, not clock, orders");
        assert_eq!(
            RetiredName::new(123456, epoch).to_string(),
            "123456-1970-01-01T000000Z"
        );
        assert!(RetiredName::parse("123456-1970-01-01T000000Z").is_some());
        for bad in [
            "42-2025-02-08T101503Z",
            "00042-2025-02-08T10:15:03Z",
            "00042",
            "x0042-2025-02-08T101503Z",
            "00042-2025-02-08T101503Z.json",
            "000042-2025-02-08T101503Z",
        ] {
            assert_eq!(RetiredName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_trust() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(clock_trusted(t("2026-01-01T00:00:00Z")));
        assert!(
            clock_trusted(t("2099-01-01T00:00:00Z")),
            "judged by retention"
        );
        assert!(!clock_trusted(t("1970-01-01T00:00:10Z")));
    }
}
