//! `tabula advise`: what the last boots wrote that the allowlist does not keep, and what to add.
//!
//! The advisor consumes the diff engine's output ([`crate::diff::Diff`], one retired root against the
//! blank, children of added directories listed) one boot at a time and keeps only per-group totals, so
//! its own cost grows with what the boots wrote; the walk's cost is the diff engine's.
//!
//! # Grouping
//! Every written path is attributed to a *group*, the level at which one would persist it:
//! - in a home (`/home/<user>`, `/root`, or a `[[persist.users]]` home): the first component
//!   (`~/.bash_history`, `~/.ssh`), one deeper under `.config` and `.var/app`, two deeper under
//!   `.local/share` and `.local/state`;
//! - `/var/lib/private/<name>`, `/var/lib/systemd/<name>`, and `/var/<dir>/<name>` (`/var/lib/<service>`,
//!   `/var/log/journal`);
//! - `/etc/<name>`, and `/etc/<dir>/<name>` when `/etc/<dir>` is a directory (`/etc/ssh/ssh_host_ed25519_key`);
//! - elsewhere, the first two components (`/srv/git`).
//!
//! A directory shallower than its group level (`/var`, `/home/alice`) is a container, not a group.
//! Only what a boot added or changed counts (`added`, `modified`, `type_changed`), never deletions or
//! metadata-only changes. A group is ranked by how many of the boots wrote it, then by size. A group
//! that exists in the blank is listed but not suggested: a bind mount would hide the blank's version.
//!
//! # Noise
//! Paths matching [`DEFAULT_IGNORE`] (unless `[advise] default_ignore = false`), `[advise] ignore`,
//! and symlinks into `/nix/store` or `/etc/static` (NixOS activation writes them at every boot) are
//! counted as noise and not shown. Globs are absolute; `*` and `?` match within one component, `**`
//! any number of components; a glob that matches a directory also covers everything beneath it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, Persist};
use crate::diff::{self, ChangeKind, Diff, FileType};

/// Per-boot noise filtered by default: caches, temporary files, and what NixOS regenerates at every
/// activation.
pub const DEFAULT_IGNORE: &[&str] = &[
    "/tmp",
    "/var/tmp",
    "/var/cache",
    "/home/*/.cache",
    "/root/.cache",
    "/var/lib/systemd/coredump",
    // NixOS activation and boot: regenerated from the configuration every time.
    "/etc/static",
    "/etc/.clean",
    "/etc/.updated",
    "/var/.updated",
    "/etc/NIXOS",
    "/etc/mtab",
    "/etc/resolv.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
    "/etc/.pwd.lock",
    "/etc/sudoers",
    "/bin/sh",
    "/usr/bin/env",
    "/lib64",
];

/// Checks that `glob` is usable in `[advise] ignore` (the rule lives with the configuration schema).
pub use crate::config::check_glob;

/// The noise filter: a set of globs.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    globs: Vec<Vec<Vec<u8>>>,
}

impl Ignore {
    /// The filter `[advise]` describes.
    pub fn from_config(config: &Config) -> Ignore {
        let mut all: Vec<&str> = Vec::new();
        if config.advise.default_ignore {
            all.extend(DEFAULT_IGNORE);
        }
        all.extend(config.advise.ignore.iter().map(String::as_str));
        Ignore::new(&all)
    }

    /// A filter of these globs.
    pub fn new(globs: &[&str]) -> Ignore {
        Ignore {
            globs: globs.iter().map(|g| split(g.as_bytes())).collect(),
        }
    }

    /// Whether `path` (absolute) is a match, or beneath one.
    pub fn matches(&self, path: &Path) -> bool {
        let comps = split(path.as_os_str().as_bytes());
        self.globs.iter().any(|g| prefix_match(g, &comps))
    }

    /// Whether something beneath the directory `path` (absolute) could match: a walk that removes
    /// matches descends only where this holds.
    pub fn may_match_below(&self, path: &Path) -> bool {
        let comps = split(path.as_os_str().as_bytes());
        self.globs.iter().any(|g| leads_into(g, &comps))
    }
}

fn split(s: &[u8]) -> Vec<Vec<u8>> {
    s.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Whether the glob components match a prefix of the path components.
fn prefix_match(glob: &[Vec<u8>], path: &[Vec<u8>]) -> bool {
    match glob.split_first() {
        None => true,
        Some((g, rest)) if g.as_slice() == b"**" => {
            (0..=path.len()).any(|skip| prefix_match(rest, &path[skip..]))
        }
        Some((g, rest)) => match path.split_first() {
            Some((p, prest)) => component_match(g, p) && prefix_match(rest, prest),
            None => false,
        },
    }
}

/// Whether the path components can be the start of a longer path that the glob matches.
fn leads_into(glob: &[Vec<u8>], path: &[Vec<u8>]) -> bool {
    match (glob.split_first(), path.split_first()) {
        (_, None) => !glob.is_empty(),
        (None, Some(_)) => false,
        (Some((g, _)), Some(_)) if g.as_slice() == b"**" => true,
        (Some((g, rest)), Some((p, prest))) => component_match(g, p) && leads_into(rest, prest),
    }
}

/// `*` and `?` within one component.
fn component_match(g: &[u8], p: &[u8]) -> bool {
    match g.split_first() {
        None => p.is_empty(),
        Some((b'*', grest)) => (0..=p.len()).any(|i| component_match(grest, &p[i..])),
        Some((b'?', grest)) => !p.is_empty() && component_match(grest, &p[1..]),
        Some((c, grest)) => p.first() == Some(c) && component_match(grest, &p[1..]),
    }
}

/// Where homes are: `/root`, `/home/<name>`, and the homes of `[[persist.users]]`.
fn home_of<'a>(path: &Path, persist: &'a Persist) -> Option<(PathBuf, Option<&'a str>)> {
    for u in &persist.users {
        if path.starts_with(&u.home) && path != u.home {
            return Some((u.home.clone(), Some(u.name.as_str())));
        }
    }
    let c: Vec<&OsStr> = normal(path);
    match c.as_slice() {
        [first, ..] if *first == "root" && c.len() > 1 => Some((PathBuf::from("/root"), None)),
        [first, user, _, ..] if *first == "home" => Some((Path::new("/home").join(user), None)),
        _ => None,
    }
}

fn normal(path: &Path) -> Vec<&OsStr> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// How many components the group of `path` has. `parent_is_dir` says whether `/etc/<dir>` (for
/// paths under it) is a directory; the walk order guarantees the caller saw it first.
fn group_depth(path: &Path, persist: &Persist) -> usize {
    if let Some((home, _)) = home_of(path, persist) {
        let base = normal(&home).len();
        let c = normal(path);
        let at = |i: usize| c.get(base + i).map(|s| s.as_bytes());
        return match (at(0), at(1)) {
            (Some(b".config"), _) => base + 2,
            (Some(b".var"), Some(b"app")) => base + 3,
            (Some(b".local"), Some(b"share" | b"state")) => base + 3,
            _ => base + 1,
        };
    }
    let c = normal(path);
    match c.as_slice() {
        [v, l, p, ..] if *v == "var" && *l == "lib" && *p == "private" => 4,
        // systemd's own state is persisted piecemeal (`timers`, `timesync`), never whole.
        [v, l, p, ..] if *v == "var" && *l == "lib" && *p == "systemd" => 4,
        [v, ..] if *v == "var" => 3,
        [e, ..] if *e == "etc" => 3,
        // A home itself (its contents are handled above).
        [h, _] if *h == "home" => 3,
        _ => 2,
    }
}

fn truncate(path: &Path, depth: usize) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in normal(path).into_iter().take(depth) {
        out.push(c);
    }
    out
}

/// The group `path` belongs to; `None` for a container directory above group level.
pub fn group_of(path: &Path, is_dir: bool, persist: &Persist) -> Option<PathBuf> {
    let n = normal(path).len();
    let mut depth = group_depth(path, persist);
    // `/etc/<file>` is its own group; `/etc/<dir>/<x>` groups one deeper.
    if n == 2 && normal(path).first().is_some_and(|c| *c == "etc") && !is_dir {
        depth = 2;
    }
    if n < depth {
        return if is_dir {
            None
        } else {
            Some(path.to_path_buf())
        };
    }
    Some(truncate(path, depth))
}

/// One boot looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootRef {
    /// The retired root's name.
    pub name: String,
    /// Its sequence number.
    pub seq: u64,
}

/// A group as seen in one boot.
#[derive(Debug, Clone, Default)]
struct Seen {
    objects: u64,
    bytes: u64,
    is_dir: bool,
    /// The place itself was added (it is not in the blank).
    added: bool,
}

/// One place the boots wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The group's path.
    #[serde(serialize_with = "diff::serialize_path")]
    pub path: PathBuf,
    /// `dir` or `file` (as in the last boot that wrote it).
    #[serde(rename = "type")]
    pub file_type: &'static str,
    /// How many of the boots looked at wrote it.
    pub boots: usize,
    /// Objects written beneath it in the last boot that wrote it.
    pub objects: u64,
    /// Bytes of regular files written beneath it in the last boot that wrote it.
    pub bytes: u64,
    /// The largest `bytes` of any boot.
    pub max_bytes: u64,
    /// The first boot (oldest) that wrote it.
    pub first: BootRef,
    /// The last boot (newest) that wrote it.
    pub last: BootRef,
    /// systemd units whose `StateDirectory=`/`LogsDirectory=`/`CacheDirectory=` is at, in or above it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// The place exists in the blank (the boots changed it, or something in it): persisting it hides
    /// the blank's version from then on, so it is not suggested.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_blank: bool,
    /// The `[[persist.users]]` name (or, for `/home/<name>`, the directory name) when in a home.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The allowlist entry inside it that keeps it from being suggested whole.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "diff::serialize_opt_path"
    )]
    pub contains_entry: Option<PathBuf>,
}

/// An allowlist entry to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    /// The absolute path.
    #[serde(serialize_with = "diff::serialize_path")]
    pub path: PathBuf,
    /// `directories` or `files`.
    pub list: &'static str,
    /// For a home: the user whose `[[persist.users]]` table gets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The home, for a user entry.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "diff::serialize_opt_path"
    )]
    pub home: Option<PathBuf>,
    /// The entry as written in the list (relative to the home for a user).
    pub entry: String,
}

/// What `tabula advise` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The boots looked at, oldest first.
    pub boots: Vec<BootRef>,
    /// Places written, most boots first.
    pub groups: Vec<Group>,
    /// Objects filtered as noise, over all boots.
    pub ignored_objects: u64,
    /// Bytes filtered as noise, over all boots.
    pub ignored_bytes: u64,
    /// Entries the diff could not read (over all boots).
    pub errors: u64,
    /// Groups written in at least `min_boots` boots become suggestions.
    pub min_boots: usize,
    /// Entries to add.
    pub suggestions: Vec<Suggestion>,
    /// The `[persist]` part of the configuration with the suggestions added (valid TOML).
    pub config_fragment: String,
}

/// Folds the diffs of the boots (oldest first) into a [`Report`].
pub struct Advisor<'a> {
    persist: &'a Persist,
    ignore: Ignore,
    filter: bool,
    units: Units,
    boots: Vec<BootRef>,
    seen: BTreeMap<PathBuf, BTreeMap<usize, Seen>>,
    ignored_objects: u64,
    ignored_bytes: u64,
    errors: u64,
}

impl<'a> Advisor<'a> {
    /// An advisor for this allowlist, noise filter (`filter` false: report everything) and units.
    pub fn new(persist: &'a Persist, ignore: Ignore, filter: bool, units: Units) -> Advisor<'a> {
        Advisor {
            persist,
            ignore,
            filter,
            units,
            boots: Vec::new(),
            seen: BTreeMap::new(),
            ignored_objects: 0,
            ignored_bytes: 0,
            errors: 0,
        }
    }

    /// Adds one boot's diff against the blank (made with `list_children`). Boots come oldest first.
    pub fn add_boot(&mut self, boot: BootRef, d: &Diff) {
        let b = self.boots.len();
        self.boots.push(boot);
        for e in &d.entries {
            let Some(node) = &e.new else {
                if e.kind == ChangeKind::Error {
                    self.errors += 1;
                }
                continue;
            };
            if !matches!(
                e.kind,
                ChangeKind::Added | ChangeKind::Modified | ChangeKind::TypeChanged
            ) {
                continue;
            }
            let is_dir = node.file_type == FileType::Dir;
            // Directories' sizes are the sum of the files beneath, which are listed too.
            let bytes = match node.file_type {
                FileType::File if node.link_to.is_none() => node.size,
                _ => 0,
            };
            if self.filter && (self.ignore.matches(&e.path) || activation_symlink(node)) {
                self.ignored_objects += 1;
                self.ignored_bytes += bytes;
                continue;
            }
            let Some(group) = group_of(&e.path, is_dir, self.persist) else {
                continue;
            };
            let s = self
                .seen
                .entry(group.clone())
                .or_default()
                .entry(b)
                .or_default();
            s.objects += 1;
            s.bytes += bytes;
            if group == e.path {
                s.is_dir = is_dir;
                s.added = e.kind == ChangeKind::Added;
            } else {
                s.is_dir = true;
            }
        }
    }

    /// The report; groups written in at least `min_boots` boots are suggested.
    pub fn finish(self, min_boots: usize) -> Report {
        let entries: Vec<PathBuf> = self.persist.entries().iter().map(|e| e.target()).collect();
        let mut groups: Vec<Group> = self
            .seen
            .into_iter()
            .filter_map(|(path, per_boot)| {
                let (&first, _) = per_boot.first_key_value()?;
                let (&last, last_seen) = per_boot.last_key_value()?;
                let user = home_of(&path, self.persist).map(|(home, name)| {
                    name.map(str::to_string).unwrap_or_else(|| {
                        home.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    })
                });
                Some(Group {
                    units: self.units.for_path(&path),
                    contains_entry: entries.iter().find(|e| e.starts_with(&path)).cloned(),
                    file_type: if last_seen.is_dir { "dir" } else { "file" },
                    in_blank: !last_seen.added,
                    boots: per_boot.len(),
                    objects: last_seen.objects,
                    bytes: last_seen.bytes,
                    max_bytes: per_boot.values().map(|s| s.bytes).max().unwrap_or(0),
                    first: self.boots[first].clone(),
                    last: self.boots[last].clone(),
                    user,
                    path,
                })
            })
            .collect();
        groups.sort_by(|a, b| {
            b.boots
                .cmp(&a.boots)
                .then(b.max_bytes.cmp(&a.max_bytes))
                .then(a.path.cmp(&b.path))
        });
        let suggestions: Vec<Suggestion> = groups
            .iter()
            .filter(|g| g.boots >= min_boots && g.contains_entry.is_none() && !g.in_blank)
            .filter_map(|g| suggestion(g, self.persist))
            .collect();
        let config_fragment = render_fragment(self.persist, &suggestions);
        Report {
            boots: self.boots,
            groups,
            ignored_objects: self.ignored_objects,
            ignored_bytes: self.ignored_bytes,
            errors: self.errors,
            min_boots,
            suggestions,
            config_fragment,
        }
    }
}

/// A symlink NixOS activation (re)creates: into the store or `/etc/static`.
fn activation_symlink(node: &diff::Node) -> bool {
    node.file_type == FileType::Symlink
        && node
            .target
            .as_ref()
            .is_some_and(|t| t.starts_with("/nix/store") || t.starts_with("/etc/static"))
}

fn suggestion(g: &Group, persist: &Persist) -> Option<Suggestion> {
    let list = if g.file_type == "dir" {
        "directories"
    } else {
        "files"
    };
    // Only a home with its own [[persist.users]] table gets a user entry: a new table would need the
    // user resolvable in the initrd (not so on NixOS without `uid`), an absolute entry does not.
    match home_of(&g.path, persist) {
        Some((home, Some(name))) => {
            let rel = g.path.strip_prefix(&home).ok()?;
            Some(Suggestion {
                entry: rel.to_str()?.to_string(),
                path: g.path.clone(),
                list,
                user: Some(name.to_string()),
                home: Some(home),
            })
        }
        _ => Some(Suggestion {
            entry: g.path.to_str()?.to_string(),
            path: g.path.clone(),
            list,
            user: None,
            home: None,
        }),
    }
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_entry(e: &crate::config::PersistEntry) -> String {
    let path = e.path.to_string_lossy();
    let mut fields = Vec::new();
    if let Some(u) = &e.user {
        fields.push(format!("user = {}", quote(&u.to_string())));
    }
    if let Some(g) = &e.group {
        fields.push(format!("group = {}", quote(&g.to_string())));
    }
    if let Some(m) = e.mode {
        fields.push(format!("mode = \"{m:04o}\""));
    }
    match e.how {
        crate::config::How::Bind => {}
        crate::config::How::Symlink => fields.push("how = \"symlink\"".into()),
        crate::config::How::Copy => fields.push("how = \"copy\"".into()),
    }
    if fields.is_empty() {
        quote(&path)
    } else {
        format!("{{ path = {}, {} }}", quote(&path), fields.join(", "))
    }
}

fn render_list(out: &mut String, key: &str, old: &[String], new: &[&Suggestion]) {
    if old.is_empty() && new.is_empty() {
        return;
    }
    out.push_str(&format!("{key} = [\n"));
    for o in old {
        out.push_str(&format!("    {o},\n"));
    }
    for n in new {
        // A file programs replace by rename cannot be bind-mounted: suggest the copy method.
        let entry = if n.list == "files" && crate::persist::replaced_by_rename(&n.path) {
            format!("{{ path = {}, how = \"copy\" }}", quote(&n.entry))
        } else {
            quote(&n.entry)
        };
        out.push_str(&format!("    {entry},  # suggested\n"));
    }
    out.push_str("]\n");
}

/// The `[persist]` and `[[persist.users]]` tables: the allowlist with `add` appended.
pub fn render_fragment(persist: &Persist, add: &[Suggestion]) -> String {
    let pick = |user: Option<&str>, list: &str| -> Vec<&Suggestion> {
        add.iter()
            .filter(|s| s.user.as_deref() == user && s.list == list)
            .collect()
    };
    let mut out = String::from("[persist]\n");
    if persist.path_loc.is_some() {
        out.push_str(&format!(
            "path = {}\n",
            quote(&persist.path.to_string_lossy())
        ));
    }
    let old =
        |l: &[crate::config::PersistEntry]| -> Vec<String> { l.iter().map(render_entry).collect() };
    render_list(
        &mut out,
        "directories",
        &old(&persist.directories),
        &pick(None, "directories"),
    );
    render_list(
        &mut out,
        "files",
        &old(&persist.files),
        &pick(None, "files"),
    );
    for u in &persist.users {
        out.push_str(&format!("\n[[persist.users]]\nname = {}\n", quote(&u.name)));
        if u.home != Path::new("/home").join(&u.name) {
            out.push_str(&format!("home = {}\n", quote(&u.home.to_string_lossy())));
        }
        if let Some(uid) = u.uid {
            out.push_str(&format!("uid = {uid}\n"));
        }
        if let Some(gid) = u.gid {
            out.push_str(&format!("gid = {gid}\n"));
        }
        let d = pick(Some(&u.name), "directories");
        let f = pick(Some(&u.name), "files");
        render_list(&mut out, "directories", &old(&u.directories), &d);
        render_list(&mut out, "files", &old(&u.files), &f);
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// systemd units
// ---------------------------------------------------------------------------------------------------------

/// The unit directories read by default, highest precedence first.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/run/current-system/sw/lib/systemd/system",
];

/// Directories systemd units declare, by absolute path.
#[derive(Debug, Clone, Default)]
pub struct Units {
    by_path: BTreeMap<PathBuf, BTreeSet<String>>,
}

impl Units {
    /// Reads `*.service` files (and their `.d/*.conf` drop-ins) from `dirs`, highest precedence first.
    /// Unreadable directories and files are skipped: this only names units beside paths.
    pub fn read(dirs: &[PathBuf]) -> Units {
        // unit name → its main file (first directory wins) and drop-ins (all directories).
        let mut main: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut dropins: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".service") {
                    main.entry(name).or_insert_with(|| e.path());
                } else if let Some(unit) = name.strip_suffix(".d")
                    && unit.ends_with(".service")
                    && let Ok(confs) = std::fs::read_dir(e.path())
                {
                    for c in confs.flatten() {
                        let cname = c.file_name().to_string_lossy().into_owned();
                        if cname.ends_with(".conf") {
                            dropins
                                .entry(unit.to_string())
                                .or_default()
                                .entry(cname)
                                .or_insert_with(|| c.path());
                        }
                    }
                }
            }
        }
        let mut units = Units::default();
        for (name, file) in main {
            let mut texts = Vec::new();
            if let Ok(t) = std::fs::read_to_string(&file) {
                texts.push(t);
            }
            for f in dropins.get(&name).into_iter().flat_map(|m| m.values()) {
                if let Ok(t) = std::fs::read_to_string(f) {
                    texts.push(t);
                }
            }
            for p in declared_dirs(&texts) {
                units.by_path.entry(p).or_default().insert(name.clone());
            }
        }
        units
    }

    /// Units whose declared directory is `path`, beneath it or above it.
    pub fn for_path(&self, path: &Path) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for (p, names) in &self.by_path {
            if p.starts_with(path) || path.starts_with(p) {
                out.extend(names.iter().cloned());
            }
        }
        out.into_iter().collect()
    }
}

/// The absolute directories a unit's `[Service]` sections (main file then drop-ins) declare.
fn declared_dirs(texts: &[String]) -> Vec<PathBuf> {
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut dynamic = false;
    for text in texts {
        let mut in_service = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "StateDirectory" | "LogsDirectory" | "CacheDirectory" => {
                    let l = lists.entry(k).or_default();
                    if v.is_empty() {
                        l.clear();
                    }
                    // `name:mode`-style suffixes (systemd ≥ 255 symlink specs) are not part of the path.
                    l.extend(
                        v.split_whitespace()
                            .map(|d| d.split(':').next().unwrap_or(d).to_string()),
                    );
                }
                "DynamicUser" => dynamic = matches!(v, "yes" | "true" | "1" | "on"),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for (k, dirs) in lists {
        let base = match k {
            "StateDirectory" => "/var/lib",
            "LogsDirectory" => "/var/log",
            _ => "/var/cache",
        };
        for d in dirs {
            let d = d.trim_matches('/');
            if d.is_empty() || d.split('/').any(|c| c == ".." || c == ".") {
                continue;
            }
            out.push(Path::new(base).join(d));
            if dynamic {
                out.push(Path::new(base).join("private").join(d));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// text
// ---------------------------------------------------------------------------------------------------------

/// The report for people: a table, then the fragment to paste.
pub fn render_text(r: &Report, config_file: &Path) -> String {
    let mut out = String::new();
    let n = r.boots.len();
    match (r.boots.first(), r.boots.last()) {
        (Some(a), Some(b)) if n > 1 => out.push_str(&format!(
            "What the last {n} boots wrote that the allowlist does not keep (boots {} to {}):\n\n",
            a.seq, b.seq
        )),
        (Some(a), _) => out.push_str(&format!(
            "What the last boot ({}) wrote that the allowlist does not keep:\n\n",
            a.name
        )),
        _ => {
            out.push_str(
                "No retired roots yet: advise looks at what past boots wrote. Reboot once.\n",
            );
            return out;
        }
    }
    if r.groups.is_empty() {
        out.push_str("  nothing: every write was to a persisted path or noise\n");
    } else {
        let shown = |g: &Group| {
            let mut path = diff::escape_bytes(g.path.as_os_str().as_bytes());
            if g.file_type == "dir" {
                path.push('/');
            }
            if g.in_blank {
                path.push_str(" *");
            }
            path
        };
        let width = r
            .groups
            .iter()
            .map(|g| shown(g).chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 60);
        out.push_str(&format!(
            "  {:>5}  {:>10}  {:<width$}  {:>5}  {:>5}  {}\n",
            "BOOTS", "SIZE", "PATH", "FIRST", "LAST", "UNIT"
        ));
        for g in &r.groups {
            let path = shown(g);
            out.push_str(&format!(
                "  {:>5}  {:>10}  {:<width$}  {:>5}  {:>5}  {}\n",
                format!("{}/{n}", g.boots),
                diff::format_bytes(g.bytes),
                path,
                g.first.seq,
                g.last.seq,
                g.units.join(", ")
            ));
        }
    }
    if r.groups.iter().any(|g| g.in_blank) {
        out.push_str(
            "\n* also in the blank, changed by the boots: not suggested, since a bind mount would hide the \
             blank's\n  version from then on (`tabula check` warns); `tabula persist add` does it if you \
             mean it\n",
        );
    }
    if r.ignored_objects > 0 {
        out.push_str(&format!(
            "\n{} object(s), {} filtered as noise (caches, temporary files, NixOS activation;\n\
             see [advise] in the README; --all shows them)\n",
            r.ignored_objects,
            diff::format_bytes(r.ignored_bytes)
        ));
    }
    if r.errors > 0 {
        out.push_str(&format!(
            "{} path(s) could not be read (see `tabula roots diff`)\n",
            r.errors
        ));
    }
    for g in r.groups.iter().filter(|g| g.boots >= r.min_boots) {
        if let Some(e) = &g.contains_entry {
            out.push_str(&format!(
                "not suggested: '{}' holds the persisted '{}'; persist what is beside it\n",
                g.path.display(),
                e.display()
            ));
        }
    }
    if r.suggestions.is_empty() {
        if !r.groups.is_empty() {
            out.push_str(&format!(
                "\nNothing was written in {} or more boots; nothing to suggest (--min-boots 1 suggests all).\n",
                r.min_boots
            ));
        }
        return out;
    }
    out.push_str(&format!(
        "\nTo keep what {} or more boots wrote: `tabula persist add PATH` for each, or replace the\n\
         [persist] part of {} with this (`# suggested` marks what is new):\n\n",
        r.min_boots,
        config_file.display()
    ));
    out.push_str(&r.config_fragment);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_walk_descends_only_where_an_ignore_glob_can_match() {
        let i = Ignore::new(&["/var/cache", "/home/*/.cache", "/srv/**/tmp"]);
        for (p, below) in [
            ("/", true),
            ("/var", true),
            ("/usr", false),
            ("/home", true),
            ("/home/alice", true),
            ("/home/alice/docs", false),
            ("/srv/a/b", true),
        ] {
            assert_eq!(i.may_match_below(Path::new(p)), below, "{p}");
        }
        assert!(i.matches(Path::new("/home/alice/.cache/x")));
        assert!(!i.matches(Path::new("/home/alice/docs")));
    }

    use super::*;

    fn persist(text: &str) -> Persist {
        let t = format!("[layout]\ndevice = \"/dev/vda2\"\n{text}");
        Config::parse(Path::new("/t.toml"), &t)
            .unwrap_or_else(|e| panic!("{e}"))
            .persist
    }

    #[test]
    fn globs() {
        let i = Ignore::new(&["/var/cache", "/home/*/.cache", "/srv/**/tmp", "/a/b?c"]);
        assert!(i.matches(Path::new("/var/cache")));
        assert!(i.matches(Path::new("/var/cache/x/y")));
        assert!(!i.matches(Path::new("/var/cached")));
        assert!(!i.matches(Path::new("/var")));
        assert!(i.matches(Path::new("/home/alice/.cache/fontconfig")));
        assert!(!i.matches(Path::new("/home/alice/x/.cache")));
        assert!(i.matches(Path::new("/srv/tmp/x")));
        assert!(i.matches(Path::new("/srv/a/b/tmp")));
        assert!(!i.matches(Path::new("/srv/a/b")));
        assert!(i.matches(Path::new("/a/bxc")));
        assert!(!i.matches(Path::new("/a/bc")));
    }

    #[test]
    fn grouping() {
        let p = persist("[[persist.users]]\nname = \"bob\"\nhome = \"/srv/bob\"\n");
        let g = |s: &str, d: bool| group_of(Path::new(s), d, &p).map(|p| p.display().to_string());
        assert_eq!(g("/var", true), None);
        assert_eq!(g("/var/lib", true), None);
        assert_eq!(g("/var/lib/foo", true).as_deref(), Some("/var/lib/foo"));
        assert_eq!(
            g("/var/lib/foo/db/x", false).as_deref(),
            Some("/var/lib/foo")
        );
        assert_eq!(
            g("/var/lib/systemd/timers/stamp-x", false).as_deref(),
            Some("/var/lib/systemd/timers")
        );
        assert_eq!(g("/var/lib/systemd", true), None);
        assert_eq!(
            g("/var/lib/private/kea/l", false).as_deref(),
            Some("/var/lib/private/kea")
        );
        assert_eq!(
            g("/var/log/journal/a/b", false).as_deref(),
            Some("/var/log/journal")
        );
        assert_eq!(g("/var/foo", false).as_deref(), Some("/var/foo"));
        assert_eq!(
            g("/etc/machine-id", false).as_deref(),
            Some("/etc/machine-id")
        );
        assert_eq!(g("/etc/ssh", true), None);
        assert_eq!(
            g("/etc/ssh/ssh_host_ed25519_key", false).as_deref(),
            Some("/etc/ssh/ssh_host_ed25519_key")
        );
        assert_eq!(g("/srv/git/a/b", false).as_deref(), Some("/srv/git"));
        assert_eq!(g("/home/alice", true), None);
        assert_eq!(
            g("/home/alice/.bash_history", false).as_deref(),
            Some("/home/alice/.bash_history")
        );
        assert_eq!(
            g("/home/alice/.config/Signal/x", false).as_deref(),
            Some("/home/alice/.config/Signal")
        );
        assert_eq!(
            g("/home/alice/.local/share/app/x", false).as_deref(),
            Some("/home/alice/.local/share/app")
        );
        assert_eq!(
            g("/root/.ssh/known_hosts", false).as_deref(),
            Some("/root/.ssh")
        );
        assert_eq!(
            g("/srv/bob/.config/x/y", false).as_deref(),
            Some("/srv/bob/.config/x")
        );
    }

    #[test]
    fn units_are_parsed_with_dropins_and_dynamic_users() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let lib = dir.path().join("lib");
        std::fs::create_dir_all(etc.join("kea.service.d")).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(
            lib.join("foo.service"),
            "[Unit]\nStateDirectory=nope\n[Service]\nStateDirectory=foo foo/sub:x\nLogsDirectory=foo\n",
        )
        .unwrap();
        std::fs::write(lib.join("kea.service"), "[Service]\nDynamicUser=yes\n").unwrap();
        std::fs::write(
            etc.join("kea.service.d/state.conf"),
            "[Service]\nStateDirectory=kea\n",
        )
        .unwrap();
        let u = Units::read(&[etc, lib]);
        assert_eq!(u.for_path(Path::new("/var/lib/foo")), ["foo.service"]);
        assert_eq!(u.for_path(Path::new("/var/log/foo")), ["foo.service"]);
        assert_eq!(
            u.for_path(Path::new("/var/lib/private/kea")),
            ["kea.service"]
        );
        assert!(u.for_path(Path::new("/var/lib/nope")).is_empty());
    }

    #[test]
    fn fragment_parses_and_keeps_old_entries() {
        let p = persist(
            "[persist]\npath = \"/p\"\ndirectories = [{ path = \"/var/lib/x\", mode = \"0700\" }]\n\
             [[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 100\nfiles = [\".zsh_history\"]\n",
        );
        let add = vec![
            Suggestion {
                path: "/var/lib/foo".into(),
                list: "directories",
                user: None,
                home: None,
                entry: "/var/lib/foo".into(),
            },
            Suggestion {
                path: "/home/alice/.ssh".into(),
                list: "directories",
                user: Some("alice".into()),
                home: Some("/home/alice".into()),
                entry: ".ssh".into(),
            },
            Suggestion {
                path: "/root/.bash_history".into(),
                list: "files",
                user: None,
                home: None,
                entry: "/root/.bash_history".into(),
            },
        ];
        let frag = render_fragment(&p, &add);
        let back = persist(&frag);
        assert_eq!(back.path, Path::new("/p"));
        let targets: Vec<String> = back
            .entries()
            .iter()
            .map(|e| e.target().display().to_string())
            .collect();
        assert_eq!(
            targets,
            [
                "/home/alice/.ssh",
                "/home/alice/.zsh_history",
                "/root/.bash_history",
                "/var/lib/foo",
                "/var/lib/x"
            ]
        );
        assert_eq!(back.directories[0].mode, Some(0o700));
        assert_eq!(back.users[0].uid, Some(1000));
    }
}
