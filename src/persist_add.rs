//! `tabula persist add PATH`: make a path persistent now, not at the next boot.
//!
//! Plan, then apply. [`plan_add`] checks everything and changes nothing: the path is absolute and
//! allowed, no entry covers it or lies beneath it, the configuration file can be edited (else the
//! NixOS line to add is given instead), and no process holds files under it open or has its working
//! directory there (else a refusal naming the processes and their systemd units, unless `force`).
//! [`apply_add`] then, in this order, each step undone if a later one fails:
//! 1. creates the missing parents in persistent storage with the owner and mode of the live parents;
//! 2. copies the path (from the live root, or from a retired root with `--from`) into persistent
//!    storage with the restore engine (owner, mode, xattrs, timestamps; reflinked on btrfs), under a
//!    temporary name renamed into place;
//! 3. writes the configuration with the entry added (format-preserving: comments and layout are
//!    kept), atomically;
//! 4. puts the copy in place with `tabula persist`'s own code for that one entry (a bind mount; for
//!    `how = "symlink"` the live file is first renamed aside and restored if that fails).
//!
//! Until step 4 the live path is untouched; a failure at step 4 unmounts nothing because nothing was
//! mounted. A crash between steps leaves at most a copy in persistent storage that `tabula orphans`
//! lists and the configuration as it was or with the entry (never half-written).

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid, mkdirat, unlinkat};
use serde::Serialize;

use crate::config::{self, Config, How, Kind};
use crate::diff::serialize_path;
use crate::error::Refusal;
use crate::{fault, fsx, persist, restore};

/// Fault points of `persist add`, in the order they are reached.
pub const FAULT_POINTS: &[&str] = &[
    "persist-add-after-parents",
    "persist-add-after-copy",
    "persist-add-after-config",
];

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The absolute path to persist.
    pub path: PathBuf,
    /// Bind mount (default) or symlink (files only).
    pub how: How,
    /// The live root (`/`).
    pub root: PathBuf,
    /// Go on although processes use the path.
    pub force: bool,
}

/// A process that uses the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// `cwd`, `root`, `fd N` or `mmap`.
    pub how: String,
    /// The path it holds.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// The systemd unit it runs in (from `/proc/PID/cgroup`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A parent directory to create in persistent storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parent {
    /// Its path inside persistent storage (as in the root: `/var/lib`).
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Permission bits, from the live directory.
    #[serde(serialize_with = "crate::diff::serialize_mode")]
    pub mode: u32,
    /// Owner, from the live directory.
    pub uid: u32,
    /// Group, from the live directory.
    pub gid: u32,
}

/// Everything `persist add` will do, checked, nothing done yet.
#[derive(Debug, Clone, Serialize)]
pub struct AddPlan {
    /// The path made persistent.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Directory or file (`entry_kind` in JSON: `kind` is the document's).
    #[serde(rename = "entry_kind")]
    pub kind: Kind,
    /// Bind mount or symlink.
    pub how: How,
    /// Where the data comes from: `live` or a retired root's name.
    pub from: String,
    /// Where the copy goes, on the running system.
    #[serde(serialize_with = "serialize_path")]
    pub copy_to: PathBuf,
    /// Parents created in persistent storage first.
    pub parents: Vec<Parent>,
    /// The configuration file edited.
    #[serde(serialize_with = "serialize_path")]
    pub config_file: PathBuf,
    /// The `[[persist.users]]` table the entry goes to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The list it is added to (`directories` / `files`) and the value written.
    pub entry: String,
    /// Processes using the path (only when `force`: otherwise they refuse the plan).
    pub holders: Vec<Holder>,
    /// Units to restart so their processes see the persisted path.
    pub restart: Vec<String>,
    /// What else the next boot needs to keep the entry.
    pub notes: Vec<String>,
    /// The configuration text after the edit.
    #[serde(skip)]
    pub new_config: String,
    /// The configuration text before the edit.
    #[serde(skip)]
    pub old_config: String,
}

impl AddPlan {
    /// Human-readable steps for `--dry-run`.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "persist add '{}' ({}, {}):\n",
            self.path.display(),
            match self.kind {
                Kind::Directory => "directory",
                Kind::File => "file",
            },
            match self.how {
                How::Bind => "bind mount",
                How::Symlink => "symlink",
                How::Copy => "copy",
            }
        );
        for p in &self.parents {
            s.push_str(&format!(
                "  create '{}' in persistent storage (mode {:04o}, owner {}:{})\n",
                p.path.display(),
                p.mode,
                p.uid,
                p.gid
            ));
        }
        s.push_str(&format!(
            "  copy '{}' ({}) to '{}' with owner, mode, xattrs and times (reflinked where possible)\n",
            self.path.display(),
            if self.from == "live" {
                "live".to_string()
            } else {
                format!("from retired root {}", self.from)
            },
            self.copy_to.display()
        ));
        s.push_str(&format!(
            "  add {} to {}{} in '{}'\n",
            self.entry,
            if self.kind == Kind::Directory {
                "directories"
            } else {
                "files"
            },
            self.user
                .as_deref()
                .map(|u| format!(" of [[persist.users]] '{u}'"))
                .unwrap_or_default(),
            self.config_file.display()
        ));
        s.push_str(&match self.how {
            How::Bind => format!(
                "  bind-mount '{}' on '{}'\n",
                self.copy_to.display(),
                self.path.display()
            ),
            How::Symlink => format!(
                "  replace '{}' with a symlink to '{}'\n",
                self.path.display(),
                self.copy_to.display()
            ),
            How::Copy => format!(
                "  keep '{}' as a copy of '{}' (synced back by `tabula persist sync`)\n",
                self.path.display(),
                self.copy_to.display()
            ),
        });
        for h in &self.holders {
            s.push_str(&format!("  note: {}\n", describe_holder(h)));
        }
        if !self.restart.is_empty() {
            s.push_str(&format!(
                "  then restart: systemctl restart {}\n",
                self.restart.join(" ")
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        s
    }
}

fn describe_holder(h: &Holder) -> String {
    format!(
        "process {} ({}) has '{}' open ({}){}",
        h.pid,
        h.comm,
        h.path.display(),
        h.how,
        h.unit
            .as_deref()
            .map(|u| format!(", unit {u}"))
            .unwrap_or_default()
    )
}

/// The path inside `root` as seen on this system.
fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Plans `persist add`. `source_root` is the tree the data is copied from (the live root, or a
/// retired root), labelled `from`.
pub fn plan_add(
    config: &Config,
    config_text: &str,
    req: &Request,
    source_root: BorrowedFd<'_>,
    from: &str,
) -> Result<AddPlan> {
    let shown = req.path.display().to_string();
    let path = config::normalised_absolute(&shown).map_err(|why| anyhow!("'{shown}': {why}"))?;
    if path == Path::new("/") {
        bail!("'/' cannot be persisted: name a directory or file in it");
    }
    if let Some(p) = config::FORBIDDEN_PREFIXES
        .iter()
        .find(|p| path.starts_with(p))
    {
        bail!("'{shown}' is in '{p}', which the kernel or init manages: it cannot be persisted");
    }
    if path.starts_with(&config.persist.path) || config.persist.path.starts_with(&path) {
        return Err(Refusal::new(
            "persistent-storage",
            format!(
                "'{shown}' is or holds persistent storage ('{}')",
                config.persist.path.display()
            ),
        )
        .into());
    }
    for e in config.persist.entries() {
        let t = e.target();
        if path.starts_with(&t) {
            return Err(Refusal::new(
                "already-covered",
                format!(
                    "'{shown}' is already persisted: the entry '{}' (line {}) covers it",
                    t.display(),
                    e.entry.loc.line
                ),
            )
            .into());
        }
        if t.starts_with(&path) {
            return Err(Refusal::new(
                "holds-an-entry",
                format!(
                    "'{shown}' holds the persisted '{}' (line {}): an entry cannot be inside another; \
                     persist what is beside it",
                    t.display(),
                    e.entry.loc.line
                ),
            )
            .into());
        }
    }
    // What it is, in the tree the data comes from (never following a symlink on the way).
    let (src_parent, name) = open_parent(source_root, &path)
        .with_context(|| format!("opening the parent of '{shown}' in {from}"))?;
    let st = match fsx::stat_at(src_parent.as_fd(), &name).map_err(|e| e.errno()) {
        Ok(st) => st,
        Err(fsx::Errno::NOENT) => bail!("'{shown}' does not exist ({from})"),
        Err(e) => return Err(e).with_context(|| format!("reading '{shown}' ({from})")),
    };
    let kind = match st.file_type() {
        fsx::FileType::Directory => Kind::Directory,
        fsx::FileType::RegularFile => Kind::File,
        _ => {
            bail!("'{shown}' is neither a directory nor a regular file: tabula persists only those")
        }
    };
    if kind == Kind::Directory && req.how == How::Symlink {
        bail!("`--how symlink` is for files only: directories are always bind-mounted");
    }
    // Persistent storage, as mounted on the running system.
    let storage_path = under(&req.root, &config.persist.path);
    let storage = RootDir::open(&storage_path)
        .with_context(|| "persistent storage must be mounted to persist a path now")?;
    // By mount id, not device: a nested subvolume there has a device of its own but is no mount.
    let root_dir = std::fs::File::open(&req.root)
        .with_context(|| format!("reading '{}'", req.root.display()))?;
    if crate::fsx::mount_id(storage.fd.as_fd())? == crate::fsx::mount_id(root_dir.as_fd())? {
        return Err(Refusal::new(
            "persist-not-mounted",
            format!(
                "'{}' is not mounted (it is a directory of the root, erased at the next boot): mount \
                 the persistent subvolume there first",
                storage_path.display()
            ),
        )
        .into());
    }
    // Parents get the owner and mode they have in the tree the data comes from.
    let parents = missing_parents(source_root, &storage, &path)?;
    if parents.is_empty()
        && let Ok((dir, name)) = open_parent(storage.fd.as_fd(), &path)
        && fsx::stat_at(dir.as_fd(), &name).is_ok()
    {
        return Err(Refusal::new(
            "already-in-storage",
            format!(
                "'{}' already exists in persistent storage (data of a removed entry, or left by an \
                 interrupted `tabula persist add`: `tabula orphans` lists it); to keep it as it is, add \
                 the entry to {} and run `tabula persist --root {}`; otherwise move it away first",
                under(&storage_path, &path).display(),
                config.file.display(),
                req.root.display()
            ),
        )
        .into());
    }
    // The configuration edit, checked by the parser that boots use.
    let user = config
        .persist
        .users
        .iter()
        .find(|u| path.starts_with(&u.home) && path != u.home);
    let (entry_path, user_name) = match user {
        Some(u) => (
            path.strip_prefix(&u.home)
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            Some(u.name.clone()),
        ),
        None => (path.clone(), None),
    };
    let entry_text = entry_path
        .to_str()
        .ok_or_else(|| anyhow!("'{shown}' is not valid UTF-8: the configuration cannot name it"))?
        .to_string();
    if let Err(why) = config_editable(&config.file) {
        return Err(Refusal::new(
            "config-not-editable",
            format!(
                "{}: {why}; add this to your NixOS configuration instead, then rebuild and run \
                 `tabula persist add` again:\n  {}",
                config.file.display(),
                nix_line(kind, req.how, user_name.as_deref(), &entry_text)
            ),
        )
        .into());
    }
    let new_config = add_entry(
        config_text,
        kind,
        req.how,
        user_name.as_deref(),
        &entry_text,
    )
    .with_context(|| format!("editing '{}'", config.file.display()))?;
    let parsed = Config::parse(&config.file, &new_config)
        .map_err(|e| anyhow!("the configuration with the entry added is invalid: {e}"))?;
    if !parsed.persist.entries().iter().any(|e| e.target() == path) {
        bail!("internal error: the edited configuration does not list '{shown}'");
    }
    let holders = holders(&under(&req.root, &path));
    if !holders.is_empty() && !req.force {
        let mut msg =
            format!("'{shown}' is in use; stop these (or pass --force and restart them after):");
        for h in &holders {
            msg.push_str(&format!("\n  {}", describe_holder(h)));
        }
        return Err(Refusal::new("path-in-use", msg).into());
    }
    let mut restart: Vec<String> = holders.iter().filter_map(|h| h.unit.clone()).collect();
    restart.sort();
    restart.dedup();
    let value = match req.how {
        How::Bind => format!("\"{entry_text}\""),
        How::Symlink => format!("{{ path = \"{entry_text}\", how = \"symlink\" }}"),
        How::Copy => format!("{{ path = \"{entry_text}\", how = \"copy\" }}"),
    };
    let notes = next_boot_notes(&parsed, &req.root);
    Ok(AddPlan {
        notes,
        copy_to: under(&storage_path, &path),
        path,
        kind,
        how: req.how,
        from: from.to_string(),
        parents,
        config_file: config.file.clone(),
        user: user_name,
        entry: value,
        holders,
        restart,
        new_config,
        old_config: config_text.to_string(),
    })
}

/// What the next boot needs besides the edited file: the initrd's copy of the configuration, and the
/// file itself surviving the rollback.
fn next_boot_notes(config: &Config, root: &Path) -> Vec<String> {
    let file = &config.file;
    let mut notes = vec![format!(
        "the initrd boots with its own copy of '{}': rebuild it (dracut --force, update-initramfs -u, \
         mkinitcpio -P) before the next boot, or that boot does not bind the new entry",
        file.display()
    )];
    // The file as the root sees it (`--root` is where the live root is on this system).
    let in_root = match file.strip_prefix(root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => file.clone(),
    };
    let kept = in_root.starts_with(&config.persist.path)
        || config
            .persist
            .entries()
            .iter()
            .any(|e| in_root.starts_with(e.target()));
    if !kept {
        notes.push(format!(
            "'{}' is not persisted: the next rollback brings back the blank's copy without this entry; \
             persist it (`tabula persist add {}`) or put the edited file in the blank",
            in_root.display(),
            in_root.display()
        ));
    }
    notes
}

/// The NixOS option line that adds this entry (the module of `initrd/nixos`).
pub fn nix_line(kind: Kind, how: How, user: Option<&str>, entry: &str) -> String {
    let list = if kind == Kind::Directory {
        "directories"
    } else {
        "files"
    };
    let item = match how {
        How::Bind => format!("\"{entry}\""),
        How::Symlink => format!("{{ path = \"{entry}\"; how = \"symlink\"; }}"),
        How::Copy => format!("{{ path = \"{entry}\"; how = \"copy\"; }}"),
    };
    match user {
        Some(u) => format!("services.tabula.persist.users.{u}.{list} = [ {item} ];"),
        None => format!("services.tabula.persist.{list} = [ {item} ];"),
    }
}

/// Why the configuration file cannot be edited in place, if it cannot.
fn config_editable(file: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| format!("cannot read it: {e}"))?;
    if meta.file_type().is_symlink() {
        let to = std::fs::canonicalize(file).unwrap_or_default();
        return Err(if to.starts_with("/nix/store") {
            "it is generated by NixOS (a link into /nix/store)".to_string()
        } else {
            format!(
                "it is a symlink (to '{}'): edit the file it points to, or point --config at it",
                to.display()
            )
        });
    }
    if file.starts_with("/nix/store") {
        return Err("it is in /nix/store (generated by NixOS)".into());
    }
    let dir = file.parent().unwrap_or(Path::new("/"));
    for p in [file, dir] {
        if let Err(e) = rustix::fs::access(p, rustix::fs::Access::WRITE_OK) {
            return Err(format!("'{}' is not writable ({e})", p.display()));
        }
    }
    Ok(())
}

/// `text` with one entry added to `[persist]` (or a user's table), comments and layout kept.
pub fn add_entry(
    text: &str,
    kind: Kind,
    how: How,
    user: Option<&str>,
    entry: &str,
) -> Result<String> {
    use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};
    let mut doc: DocumentMut = text.parse().context("parsing the configuration")?;
    let list = if kind == Kind::Directory {
        "directories"
    } else {
        "files"
    };
    if !doc.contains_key("persist") {
        let mut t = Table::new();
        t.set_implicit(user.is_some());
        doc.insert("persist", Item::Table(t));
    }
    let persist = doc["persist"]
        .as_table_mut()
        .ok_or_else(|| anyhow!("`persist` is not a table"))?;
    let table: &mut Table = match user {
        None => persist,
        Some(name) => persist
            .get_mut("users")
            .and_then(Item::as_array_of_tables_mut)
            .and_then(|a| {
                a.iter_mut()
                    .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
            })
            .ok_or_else(|| anyhow!("no [[persist.users]] table for '{name}'"))?,
    };
    if !table.contains_key(list) {
        table.insert(list, Item::Value(Value::Array(Array::new())));
    }
    let arr = table[list]
        .as_array_mut()
        .ok_or_else(|| anyhow!("`{list}` is not an array"))?;
    let mut value: Value = match how {
        How::Bind => entry.into(),
        How::Symlink | How::Copy => {
            let mut t = InlineTable::new();
            t.insert("path", entry.into());
            t.insert(
                "how",
                if how == How::Copy { "copy" } else { "symlink" }.into(),
            );
            Value::InlineTable(t)
        }
    };
    // Follow the array's layout: one element per line if that is how it is written.
    let prefix = arr.iter().last().and_then(|v| {
        v.decor()
            .prefix()
            .and_then(|p| p.as_str())
            .map(str::to_string)
    });
    match prefix {
        Some(p) if p.contains('\n') => {
            // The new element goes on its own line with the last one's indentation; a comment after
            // the old last element (the array's trailing text) stays with that element.
            let indent = p.rsplit('\n').next().unwrap_or("").to_string();
            let trailing = arr.trailing().as_str().unwrap_or("").to_string();
            let (head, tail) = trailing
                .rsplit_once('\n')
                .unwrap_or((trailing.as_str(), ""));
            value.decor_mut().set_prefix(format!("{head}\n{indent}"));
            value.decor_mut().set_suffix("");
            let was_trailing = arr.trailing_comma();
            arr.push_formatted(value);
            arr.set_trailing_comma(was_trailing);
            arr.set_trailing(format!("\n{tail}"));
        }
        _ => {
            arr.push(value);
        }
    }
    Ok(doc.to_string())
}

/// Writes `text` to `file` atomically (temp file, fsync, rename, fsync dir), keeping mode and owner.
fn write_config(file: &Path, text: &str) -> Result<()> {
    let meta = std::fs::metadata(file).with_context(|| format!("reading '{}'", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    let name = file
        .file_name()
        .ok_or_else(|| anyhow!("'{}' has no file name", file.display()))?;
    let tmp = dir.join(format!(
        ".{}.tabula-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating '{}'", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        f.sync_all()?;
        match std::fs::rename(&tmp, file) {
            Ok(()) => {}
            // A bind-mounted (persisted) configuration cannot be replaced by a rename: rewrite it in
            // place, which is what the mount shows.
            Err(e) if e.raw_os_error() == Some(fsx::Errno::BUSY.raw_os_error()) => {
                let _ = std::fs::remove_file(&tmp);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(file)
                    .with_context(|| format!("opening '{}'", file.display()))?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                return Ok(());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("replacing '{}'", file.display()));
            }
        }
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing '{}'", file.display()))
}

/// A directory opened as a trusted root for fd-relative walks.
struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    fn open(p: &Path) -> Result<RootDir> {
        let fd = rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening '{}'", p.display()))?;
        Ok(RootDir { fd })
    }
}

/// The parent directory of `path` inside `root` (no symlinks followed) and the last component.
fn open_parent(root: BorrowedFd<'_>, path: &Path) -> Result<(OwnedFd, PathBuf)> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let name = rel
        .file_name()
        .ok_or_else(|| anyhow!("'{}' has no last component", path.display()))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let fd = if parent.as_os_str().is_empty() {
        fsx::open_dir_beneath(root, Path::new(".")).map_err(|e| e.errno())?
    } else {
        fsx::open_dir_beneath(root, parent).map_err(|e| {
            // `..` is refused as an invalid path, as it always was here.
            let errno = match e {
                fsx::Error::Escapes { .. } => fsx::Errno::INVAL,
                e => e.errno(),
            };
            anyhow!(
                "'{}': {errno} (a symlink on the way is refused)",
                Path::new("/").join(parent).display()
            )
        })?
    };
    Ok((fd, PathBuf::from(name)))
}

/// Parents of `path` missing in persistent storage, outermost first, with the metadata of the parents
/// in `source` (the live root, or the retired root the data comes from).
fn missing_parents(source: BorrowedFd<'_>, storage: &RootDir, path: &Path) -> Result<Vec<Parent>> {
    let mut out = Vec::new();
    fn open(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, fsx::Errno> {
        fsx::open_dir_beneath(dir, Path::new(name)).map_err(|e| e.errno())
    }
    let mut live_dir = open(source, OsStr::new("."))?;
    let mut st_dir = Some(open(storage.fd.as_fd(), OsStr::new("."))?);
    let mut cur = PathBuf::from("/");
    let comps: Vec<&OsStr> = path.strip_prefix("/").unwrap_or(path).iter().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        let lst = fsx::stat_at(live_dir.as_fd(), c)
            .map_err(|e| e.errno())
            .with_context(|| format!("reading '{}'", cur.display()))?;
        if !lst.is_dir() {
            bail!("'{}' is not a directory on the live system", cur.display());
        }
        live_dir =
            open(live_dir.as_fd(), c).with_context(|| format!("opening '{}'", cur.display()))?;
        st_dir = match st_dir {
            Some(d) => match fsx::stat_at(d.as_fd(), c).map_err(|e| e.errno()) {
                Ok(s) if s.is_dir() => Some(open(d.as_fd(), c).with_context(|| {
                    format!("opening '{}' in persistent storage", cur.display())
                })?),
                Ok(_) => bail!(
                    "'{}' in persistent storage is not a directory (a symlink is never followed)",
                    cur.display()
                ),
                Err(fsx::Errno::NOENT) => None,
                Err(e) => return Err(e).context(format!("reading '{}'", cur.display())),
            },
            None => None,
        };
        if st_dir.is_none() {
            out.push(Parent {
                path: cur.clone(),
                mode: lst.mode & 0o7777,
                uid: lst.uid,
                gid: lst.gid,
            });
        }
    }
    Ok(out)
}

/// Processes whose cwd, root, open or memory-mapped files are `live` or beneath it (this process
/// excepted).
pub fn holders(live: &Path) -> Vec<Holder> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = e.path();
        let mut hits: Vec<(String, PathBuf)> = Vec::new();
        for what in ["cwd", "root"] {
            if let Ok(p) = std::fs::read_link(base.join(what))
                && p.starts_with(live)
            {
                hits.push((what.to_string(), p));
            }
        }
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for f in fds.flatten() {
                if let Ok(p) = std::fs::read_link(f.path())
                    && p.starts_with(live)
                {
                    hits.push((format!("fd {}", f.file_name().to_string_lossy()), p));
                }
            }
        }
        // Memory-mapped files (databases such as LMDB) without an open fd.
        if let Ok(maps) = std::fs::read_to_string(base.join("maps")) {
            let mut seen = std::collections::BTreeSet::new();
            for line in maps.lines() {
                // address perms offset dev inode path: the path is the sixth field, may hold spaces.
                let Some(p) = line.splitn(6, ' ').nth(5).map(str::trim_start) else {
                    continue;
                };
                let p = PathBuf::from(p);
                if p.starts_with(live)
                    && !hits.iter().any(|(_, h)| *h == p)
                    && seen.insert(p.clone())
                {
                    hits.push(("mmap".to_string(), p));
                }
            }
        }
        if hits.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(base.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let unit = std::fs::read_to_string(base.join("cgroup"))
            .ok()
            .and_then(|c| unit_of_cgroup(&c));
        for (how, path) in hits {
            out.push(Holder {
                pid,
                comm: comm.clone(),
                how,
                path,
                unit: unit.clone(),
            });
        }
    }
    out.sort_by(|a, b| (a.pid, &a.how).cmp(&(b.pid, &b.how)));
    out
}

/// The systemd unit of a `/proc/PID/cgroup` text: the innermost `.service` (else `.scope`) component.
pub fn unit_of_cgroup(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("0::"))
        .or_else(|| text.lines().find(|l| l.contains("name=systemd")))?;
    let path = line.rsplit_once(':')?.1;
    let comps: Vec<&str> = path.split('/').collect();
    comps
        .iter()
        .rev()
        .find(|c| c.ends_with(".service"))
        .or_else(|| comps.iter().rev().find(|c| c.ends_with(".scope")))
        .map(|s| s.to_string())
}

/// What [`apply_add`] did.
#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    /// The path now persistent.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Files reflinked and copied.
    pub reflinked_files: u64,
    /// Files whose bytes were copied.
    pub copied_files: u64,
    /// Units to restart.
    pub restart: Vec<String>,
    /// Warnings from the copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Carries out `plan`; on failure, undoes what was done and leaves the live path as it was.
pub fn apply_add(
    plan: &AddPlan,
    config: &Config,
    root: &Path,
    source_root: BorrowedFd<'_>,
) -> Result<AddReport> {
    let storage_path = under(root, &config.persist.path);
    let storage = RootDir::open(&storage_path)?;
    let mut undo = Undo {
        storage: &storage,
        created_parents: Vec::new(),
        copied: None,
        config: None,
    };
    let result = apply_steps(plan, root, source_root, &storage, &mut undo);
    if let Err(e) = &result {
        let left = undo.run();
        if !left.is_empty() {
            return Err(anyhow!(
                "{e:#}; undoing it also failed, left: {}",
                left.join("; ")
            ));
        }
    }
    result
}

struct Undo<'a> {
    storage: &'a RootDir,
    created_parents: Vec<PathBuf>,
    copied: Option<PathBuf>,
    config: Option<(PathBuf, String)>,
}

impl Undo<'_> {
    /// Undoes in reverse order; returns what could not be undone.
    fn run(self) -> Vec<String> {
        let mut left = Vec::new();
        if let Some((file, text)) = self.config
            && let Err(e) = write_config(&file, &text)
        {
            left.push(format!("restoring '{}': {e:#}", file.display()));
        }
        if let Some(p) = self.copied
            && let Err(e) = remove_beneath(self.storage.fd.as_fd(), &p)
        {
            left.push(format!("removing the copy '{}': {e:#}", p.display()));
        }
        for p in self.created_parents.iter().rev() {
            if let Ok((parent, name)) = open_parent(self.storage.fd.as_fd(), p)
                && let Err(e) = unlinkat(parent.as_fd(), name.as_os_str(), AtFlags::REMOVEDIR)
            {
                left.push(format!("removing '{}': {e}", p.display()));
            }
        }
        left
    }
}

fn apply_steps(
    plan: &AddPlan,
    root: &Path,
    source_root: BorrowedFd<'_>,
    storage: &RootDir,
    undo: &mut Undo<'_>,
) -> Result<AddReport> {
    // 1. Parents in persistent storage.
    for p in &plan.parents {
        let (parent, name) = open_parent(storage.fd.as_fd(), &p.path)?;
        mkdirat(parent.as_fd(), name.as_os_str(), Mode::from_raw_mode(0o700))
            .with_context(|| format!("creating '{}' in persistent storage", p.path.display()))?;
        undo.created_parents.push(p.path.clone());
        rustix::fs::chownat(
            parent.as_fd(),
            name.as_os_str(),
            Some(Uid::from_raw(p.uid)),
            Some(Gid::from_raw(p.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("setting the owner of '{}'", p.path.display()))?;
        rustix::fs::chmodat(
            parent.as_fd(),
            name.as_os_str(),
            Mode::from_raw_mode(p.mode),
            AtFlags::empty(),
        )
        .with_context(|| format!("setting the mode of '{}'", p.path.display()))?;
    }
    fault::point("persist-add-after-parents");
    // 2. The copy.
    fault::fail("persist-add-copy")?;
    let copy = restore::plan_restore(
        source_root,
        &plan.path,
        storage.fd.as_fd(),
        &plan.path,
        false,
    )
    .with_context(|| format!("planning the copy of '{}'", plan.path.display()))?;
    let report = restore::apply_restore(&copy, source_root, storage.fd.as_fd())
        .with_context(|| format!("copying '{}' into persistent storage", plan.path.display()))?;
    undo.copied = Some(plan.path.clone());
    fault::point("persist-add-after-copy");
    // 3. The configuration.
    fault::fail("persist-add-config")?;
    undo.config = Some((plan.config_file.clone(), plan.old_config.clone()));
    write_config(&plan.config_file, &plan.new_config)?;
    fault::point("persist-add-after-config");
    // 4. In place, by the boot's own code for this one entry.
    fault::fail("persist-add-mount")?;
    let new_config =
        Config::parse(&plan.config_file, &plan.new_config).map_err(|e| anyhow!("{e}"))?;
    let mut pplan = persist::plan(&new_config, root)
        .with_context(|| format!("planning persistence into '{}'", root.display()))?;
    pplan.entries.retain(|e| e.target == plan.path);
    let live = RootDir::open(root)?;
    let aside = if plan.how == How::Symlink {
        let (dir, name) = open_parent(live.fd.as_fd(), &plan.path)?;
        let tmp = PathBuf::from(format!(".tabula-add-{}", std::process::id()));
        match crate::fsx::rename_noreplace_at(dir.as_fd(), &name, dir.as_fd(), &tmp) {
            Ok(()) => {
                // Re-plan now that the target is free.
                pplan = persist::plan(&new_config, root)?;
                pplan.entries.retain(|e| e.target == plan.path);
                Some((dir, name, tmp))
            }
            // Nothing live to replace (copied `--from` a retired root): the symlink is just made.
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                return Err(e).with_context(|| format!("moving '{}' aside", plan.path.display()));
            }
        }
    } else {
        None
    };
    // "The mount hides what the root has there": expected here, that is what was just copied.
    for e in &mut pplan.entries {
        e.warnings.clear();
    }
    let outcome = persist::apply(&pplan);
    let failure = outcome
        .entries
        .iter()
        .find(|e| !matches!(e.state, persist::State::Done | persist::State::InPlace))
        .map(|e| {
            e.message
                .clone()
                .unwrap_or_else(|| format!("{:?}", e.state))
        });
    let failure = failure.or_else(|| {
        outcome
            .entries
            .is_empty()
            .then(|| "the entry was not planned".to_string())
    });
    if let Some((dir, name, tmp)) = aside {
        if let Some(why) = failure {
            // Put the live file back where it was (over the symlink, if one was made).
            let _ = unlinkat(dir.as_fd(), name.as_os_str(), AtFlags::empty());
            crate::fsx::rename_noreplace_at(dir.as_fd(), &tmp, dir.as_fd(), &name)
                .with_context(|| format!("putting '{}' back", plan.path.display()))?;
            bail!("putting '{}' in place: {why}", plan.path.display());
        }
        unlinkat(dir.as_fd(), tmp.as_os_str(), AtFlags::empty())
            .with_context(|| format!("removing the old '{}'", plan.path.display()))?;
    } else if let Some(why) = failure {
        bail!("putting '{}' in place: {why}", plan.path.display());
    }
    Ok(AddReport {
        path: plan.path.clone(),
        reflinked_files: report.reflinked_files,
        copied_files: report.copied_files,
        restart: plan.restart.clone(),
        warnings: report.warnings,
    })
}

/// Removes `path` (inside `root`) and everything beneath it ([`fsx::remove_tree_at`]: iterative, never
/// following a symlink, never entering a mount or another filesystem).
fn remove_beneath(root: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let (parent, name) = open_parent(root, path)?;
    Ok(fsx::remove_tree_at(parent.as_fd(), &name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMENTED: &str = "# tabula configuration\n[layout]\ndevice = \"/dev/vda2\" # the disk\n\n\
        # what survives\n[persist]\n# directories, one per line\ndirectories = [\n    \"/var/log\", # logs\n    \
        # ssh keys next\n    \"/etc/ssh\", # keys\n]\nfiles = [\"/etc/machine-id\"] # id\n\n\
        [[persist.users]]\nname = \"alice\" # me\ndirectories = [\"Documents\"]\n# end\n";

    #[test]
    fn adding_keeps_every_comment() {
        let out = add_entry(COMMENTED, Kind::Directory, How::Bind, None, "/var/lib/foo").unwrap();
        for line in COMMENTED.lines().filter(|l| l.contains('#')) {
            assert!(out.contains(line), "lost {line:?}:\n{out}");
        }
        assert!(
            out.contains("    \"/etc/ssh\", # keys\n    \"/var/lib/foo\",\n]"),
            "{out}"
        );
        let out = add_entry(&out, Kind::File, How::Symlink, None, "/etc/adjtime").unwrap();
        assert!(
            out.contains(
                "files = [\"/etc/machine-id\", { path = \"/etc/adjtime\", how = \"symlink\" }] # id"
            ),
            "{out}"
        );
        let out = add_entry(&out, Kind::Directory, How::Bind, Some("alice"), ".ssh").unwrap();
        assert!(
            out.contains("directories = [\"Documents\", \".ssh\"]"),
            "{out}"
        );
        let c = Config::parse(Path::new("/t.toml"), &out).unwrap();
        let targets: Vec<PathBuf> = c.persist.entries().iter().map(|e| e.target()).collect();
        for t in ["/var/lib/foo", "/etc/adjtime", "/home/alice/.ssh"] {
            assert!(targets.contains(&PathBuf::from(t)), "{t}");
        }
        assert!(add_entry(&out, Kind::File, How::Bind, Some("bob"), "x").is_err());
    }

    #[test]
    fn adding_to_a_config_without_persist() {
        let out = add_entry(
            "[layout]\ndevice = \"/dev/vda2\"\n",
            Kind::File,
            How::Bind,
            None,
            "/etc/machine-id",
        )
        .unwrap();
        let c = Config::parse(Path::new("/t.toml"), &out).unwrap();
        assert_eq!(c.persist.files[0].path, Path::new("/etc/machine-id"));
    }

    #[test]
    fn units_from_cgroups() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/foo.service\n").as_deref(),
            Some("foo.service")
        );
        assert_eq!(
            unit_of_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(
            unit_of_cgroup(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n"
            )
            .as_deref(),
            Some("x.service")
        );
        assert_eq!(unit_of_cgroup("0::/\n"), None);
    }

    #[test]
    fn nix_lines() {
        assert_eq!(
            nix_line(Kind::Directory, How::Bind, None, "/var/lib/foo"),
            "services.tabula.persist.directories = [ \"/var/lib/foo\" ];"
        );
        assert_eq!(
            nix_line(Kind::File, How::Symlink, Some("alice"), ".zsh_history"),
            "services.tabula.persist.users.alice.files = [ { path = \".zsh_history\"; how = \"symlink\"; } ];"
        );
    }
}
