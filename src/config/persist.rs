//! `[persist]`: the allowlist bind-mounted (or symlinked, or copied) into every fresh root.

use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::paths::{
    check_name, forbidden_prefix, normalised_absolute, normalised_relative, parse_mode,
};
use super::{Loc, Source};
use crate::error::ConfigError;

/// Where `[persist] path` points unless set: the persistent subvolume's mount point inside the new root.
pub const DEFAULT_PERSIST_PATH: &str = "/persist";

/// `[persist]`, validated: paths are absolute (user entries: relative to the home) and normalised,
/// nothing is listed twice or inside a directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// Where the persistent subvolume is mounted inside the new root (`/persist`).
    pub path: PathBuf,
    /// System directories (absolute paths).
    pub directories: Vec<PersistEntry>,
    /// System files (absolute paths).
    pub files: Vec<PersistEntry>,
    /// `[[persist.users]]`: per-user entries, relative to each home.
    pub users: Vec<PersistUser>,
    /// Where `path` was written, if it was.
    pub path_loc: Option<Loc>,
}

impl Default for Persist {
    fn default() -> Self {
        Persist {
            path: PathBuf::from(DEFAULT_PERSIST_PATH),
            directories: Vec::new(),
            files: Vec::new(),
            users: Vec::new(),
            path_loc: None,
        }
    }
}

/// Whether an entry is a directory or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A directory, always bind-mounted.
    Directory,
    /// A single file.
    File,
}

/// How an entry is made visible in the new root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// A bind mount of the source on the target (the default).
    #[default]
    Bind,
    /// A symlink at the target pointing at the source (files only).
    Symlink,
    /// A copy of the source at the target (files only), for files that programs replace by rename
    /// (`/etc/shadow`, shell histories); `tabula persist sync` copies changes back.
    Copy,
}

/// A user or group given by name or by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSpec {
    /// A name, resolved against the new root's `/etc/passwd` (`/etc/group`), then the persistent copies.
    Name(String),
    /// A numeric id, used as is.
    Id(u32),
}

impl std::fmt::Display for IdSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdSpec::Name(n) => f.write_str(n),
            IdSpec::Id(i) => write!(f, "{i}"),
        }
    }
}

/// One allowlist entry: a string or a table `{ path, user, group, mode, how }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistEntry {
    /// Absolute for system entries; relative to the home for a user's entries.
    pub path: PathBuf,
    /// Owner of the source when tabula creates it (and enforced on every run when set).
    pub user: Option<IdSpec>,
    /// Where `user` was written.
    pub user_loc: Option<Loc>,
    /// Group of the source when tabula creates it (and enforced on every run when set).
    pub group: Option<IdSpec>,
    /// Where `group` was written.
    pub group_loc: Option<Loc>,
    /// Permission bits (`0o7777` at most) of the source when tabula creates it (enforced when set).
    pub mode: Option<u32>,
    /// Bind mount or symlink.
    pub how: How,
    /// Where the entry was written.
    pub loc: Loc,
}

/// `[[persist.users]]`: one user's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistUser {
    /// The user name; its uid and primary group come from `passwd` unless `uid`/`gid` are given.
    pub name: String,
    /// The home directory (default `/home/<name>`).
    pub home: PathBuf,
    /// Numeric uid, for systems whose initrd cannot see `/etc/passwd` yet (NixOS creates it later).
    pub uid: Option<u32>,
    /// Numeric primary gid, with `uid`.
    pub gid: Option<u32>,
    /// Directories relative to the home.
    pub directories: Vec<PersistEntry>,
    /// Files relative to the home.
    pub files: Vec<PersistEntry>,
    /// Where its `name` was written.
    pub loc: Loc,
}

/// One entry with everything needed to act on it, as listed by [`Persist::entries`].
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// The entry as written.
    pub entry: &'a PersistEntry,
    /// Directory or file.
    pub kind: Kind,
    /// The user it belongs to, for `[[persist.users]]` entries.
    pub user: Option<&'a PersistUser>,
}

impl EntryRef<'_> {
    /// The absolute target path in the new root.
    pub fn target(&self) -> PathBuf {
        match self.user {
            Some(u) => u.home.join(&self.entry.path),
            None => self.entry.path.clone(),
        }
    }
}

impl Persist {
    /// Every entry, system and per-user, ordered by target path so that parents come before children.
    pub fn entries(&self) -> Vec<EntryRef<'_>> {
        let system = [
            (&self.directories, Kind::Directory, None),
            (&self.files, Kind::File, None),
        ];
        let users = self.users.iter().flat_map(|u| {
            [
                (&u.directories, Kind::Directory, Some(u)),
                (&u.files, Kind::File, Some(u)),
            ]
        });
        let mut all: Vec<(PathBuf, EntryRef<'_>)> = system
            .into_iter()
            .chain(users)
            .flat_map(|(list, kind, user)| {
                list.iter().map(move |entry| EntryRef { entry, kind, user })
            })
            .map(|r| (r.target(), r))
            .collect();
        // Path ordering compares component by component: "/var" < "/var/lib" < "/var/lib/nixos" < "/var-x".
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(_, r)| r).collect()
    }

    /// Where the source of `target` lives in the new root: `path` joined with `target`.
    pub fn source_of(&self, target: &Path) -> PathBuf {
        self.path.join(target.strip_prefix("/").unwrap_or(target))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPersist {
    path: Option<Spanned<String>>,
    directories: Option<Vec<Spanned<RawEntry>>>,
    files: Option<Vec<Spanned<RawEntry>>>,
    users: Option<Vec<Spanned<RawUser>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Option<Spanned<String>>,
    home: Option<Spanned<String>>,
    uid: Option<Spanned<RawId>>,
    gid: Option<Spanned<RawId>>,
    directories: Option<Vec<Spanned<RawEntry>>>,
    files: Option<Vec<Spanned<RawEntry>>>,
}

#[derive(Debug)]
enum RawEntry {
    Plain(String),
    Table(RawEntryTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntryTable {
    path: Option<Spanned<String>>,
    user: Option<Spanned<RawId>>,
    group: Option<Spanned<RawId>>,
    mode: Option<Spanned<RawId>>,
    how: Option<Spanned<String>>,
}

/// A string or an integer (ids, and modes written without quotes so we can say why that is wrong).
#[derive(Debug)]
enum RawId {
    Text(String),
    Number(i64),
}

// An entry is a string or a table. serde's untagged enums buffer their input and lose the spans
// that every error message needs, so the two shapes are told apart by hand.
impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path string or a table { path, user, group, mode, how }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEntry, E> {
                Ok(RawEntry::Plain(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEntry, A::Error> {
                RawEntryTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawEntry::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawId, E> {
                Ok(RawId::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawId, E> {
                Ok(RawId::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawId, E> {
                Ok(RawId::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn validate_persist(
    src: &Source<'_>,
    raw: RawPersist,
    errors: &mut Vec<ConfigError>,
) -> Persist {
    let mut persist = Persist::default();
    if let Some(p) = &raw.path {
        match normalised_absolute(p.get_ref()) {
            Ok(path) if path == Path::new("/") => errors.push(src.error(
                Some(p.span()),
                "`path`: persistent storage cannot be mounted on '/': use a directory such as \"/persist\"",
            )),
            Ok(path) => {
                if let Some(prefix) = forbidden_prefix(&path) {
                    errors.push(src.error(
                        Some(p.span()),
                        format!("`path`: '{}' is in '{prefix}', which the kernel or init manages", path.display()),
                    ));
                }
                persist.path = path;
            }
            Err(why) => errors.push(src.error(Some(p.span()), format!("`path`: {why}"))),
        }
    }
    let path_loc = raw.path.as_ref().map(|p| src.loc(&p.span()));
    persist.path_loc = path_loc;
    persist.directories = entries(src, raw.directories, Kind::Directory, None, errors);
    persist.files = entries(src, raw.files, Kind::File, None, errors);
    let mut names_seen: Vec<(String, Loc)> = Vec::new();
    for u in raw.users.unwrap_or_default() {
        let span = u.span();
        let u = u.into_inner();
        let Some(name) = u.name else {
            errors.push(src.error(
                Some(span),
                "[[persist.users]] needs `name`: the user whose files these are",
            ));
            continue;
        };
        let loc = src.loc(&name.span());
        if let Err(why) = check_name(name.get_ref()) {
            errors.push(src.error(Some(name.span()), format!("`name`: {why}")));
            continue;
        }
        let name_str = name.get_ref().clone();
        if let Some(first) = names_seen.iter().find(|(n, _)| *n == name_str) {
            errors.push(src.error(
                Some(name.span()),
                format!(
                    "user '{name_str}' already has a [[persist.users]] table (line {}): merge the two",
                    first.1.line
                ),
            ));
            continue;
        }
        names_seen.push((name_str.clone(), loc));
        let home = match &u.home {
            Some(h) => match normalised_absolute(h.get_ref()) {
                Ok(p) if p == Path::new("/") => {
                    errors.push(src.error(
                        Some(h.span()),
                        "`home`: '/' cannot be a home here: name the real home",
                    ));
                    continue;
                }
                Ok(p) => p,
                Err(why) => {
                    errors.push(src.error(Some(h.span()), format!("`home`: {why}")));
                    continue;
                }
            },
            None => PathBuf::from("/home").join(name.get_ref()),
        };
        let uid = u.uid.and_then(|v| numeric_id(src, "uid", &v, errors));
        let gid = u.gid.and_then(|v| numeric_id(src, "gid", &v, errors));
        let directories = entries(src, u.directories, Kind::Directory, Some(&home), errors);
        let files = entries(src, u.files, Kind::File, Some(&home), errors);
        persist.users.push(PersistUser {
            name: name_str,
            home,
            uid,
            gid,
            directories,
            files,
            loc,
        });
    }
    check_overlaps(src, &persist, path_loc, errors);
    persist
}

fn numeric_id(
    src: &Source<'_>,
    key: &str,
    v: &Spanned<RawId>,
    errors: &mut Vec<ConfigError>,
) -> Option<u32> {
    match v.get_ref() {
        RawId::Number(n) => match u32::try_from(*n) {
            Ok(n) if n != u32::MAX => Some(n),
            _ => {
                errors.push(src.error(
                    Some(v.span()),
                    format!("`{key}`: {n} is not a valid id (0 to 4294967294)"),
                ));
                None
            }
        },
        RawId::Text(_) => {
            errors.push(src.error(
                Some(v.span()),
                format!("`{key}` takes a number, such as {key} = 1000"),
            ));
            None
        }
    }
}

fn entries(
    src: &Source<'_>,
    list: Option<Vec<Spanned<RawEntry>>>,
    kind: Kind,
    home: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Vec<PersistEntry> {
    let mut out = Vec::new();
    for raw in list.unwrap_or_default() {
        let span = raw.span();
        let loc = src.loc(&span);
        let (path_text, path_span, table) = match raw.into_inner() {
            RawEntry::Plain(p) => (p, span.clone(), None),
            RawEntry::Table(t) => match t.path.clone() {
                Some(p) => (p.get_ref().clone(), p.span(), Some(t)),
                None => {
                    errors.push(src.error(Some(span), "this entry needs `path`"));
                    continue;
                }
            },
        };
        let path = match home {
            None => match normalised_absolute(&path_text) {
                Ok(p) => p,
                Err(why) => {
                    errors.push(src.error(Some(path_span), why));
                    continue;
                }
            },
            Some(home) => match normalised_relative(&path_text) {
                Ok(p) => p,
                Err(why) => {
                    errors.push(src.error(
                        Some(path_span),
                        format!(
                            "{why} (user entries are relative to the home '{}')",
                            home.display()
                        ),
                    ));
                    continue;
                }
            },
        };
        let mut entry = PersistEntry {
            path,
            user: None,
            user_loc: None,
            group: None,
            group_loc: None,
            mode: None,
            how: How::Bind,
            loc,
        };
        if let Some(t) = table {
            if let Some(u) = t.user {
                entry.user_loc = Some(src.loc(&u.span()));
                entry.user = id_spec(src, "user", &u, errors);
            }
            if let Some(g) = t.group {
                entry.group_loc = Some(src.loc(&g.span()));
                entry.group = id_spec(src, "group", &g, errors);
            }
            if let Some(m) = t.mode {
                match m.get_ref() {
                    RawId::Text(s) => match parse_mode(s) {
                        Ok(v) => entry.mode = Some(v),
                        Err(why) => {
                            errors.push(src.error(Some(m.span()), format!("`mode`: {why}")))
                        }
                    },
                    RawId::Number(n) => errors.push(src.error(
                        Some(m.span()),
                        format!(
                            "`mode`: write the octal mode as a string, such as mode = \"0{n}\""
                        ),
                    )),
                }
            }
            if let Some(h) = t.how {
                match (h.get_ref().as_str(), kind) {
                    ("bind", _) => entry.how = How::Bind,
                    ("symlink", Kind::File) => entry.how = How::Symlink,
                    ("copy", Kind::File) => entry.how = How::Copy,
                    (m @ ("symlink" | "copy"), Kind::Directory) => errors.push(src.error(
                        Some(h.span()),
                        format!(
                            "`how = \"{m}\"` is for files only: directories are always bind-mounted"
                        ),
                    )),
                    (other, _) => errors.push(src.error(
                        Some(h.span()),
                        format!(
                            "`how`: unknown method '{other}': use \"bind\", \"copy\" or \"symlink\""
                        ),
                    )),
                }
            }
        }
        out.push(entry);
    }
    out
}

fn id_spec(
    src: &Source<'_>,
    key: &str,
    v: &Spanned<RawId>,
    errors: &mut Vec<ConfigError>,
) -> Option<IdSpec> {
    let bad = |msg: String| src.error(Some(v.span()), format!("`{key}`: {msg}"));
    match v.get_ref() {
        RawId::Number(n) => match u32::try_from(*n) {
            Ok(n) if n != u32::MAX => Some(IdSpec::Id(n)),
            _ => {
                errors.push(bad(format!("{n} is not a valid id (0 to 4294967294)")));
                None
            }
        },
        RawId::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            match s.parse::<u32>() {
                Ok(n) if n != u32::MAX => Some(IdSpec::Id(n)),
                _ => {
                    errors.push(bad(format!("{s} is not a valid id (0 to 4294967294)")));
                    None
                }
            }
        }
        RawId::Text(s) => match check_name(s) {
            Ok(()) => Some(IdSpec::Name(s.clone())),
            Err(why) => {
                errors.push(bad(why));
                None
            }
        },
    }
}

/// Duplicates, nesting, forbidden places and persistent storage itself, across system and user entries.
fn check_overlaps(
    src: &Source<'_>,
    persist: &Persist,
    path_loc: Option<Loc>,
    errors: &mut Vec<ConfigError>,
) {
    use std::collections::BTreeMap;
    let at = |loc: Loc, message: String| ConfigError {
        file: src.file.to_path_buf(),
        line: Some(loc.line),
        column: Some(loc.column),
        message,
    };
    // Check in file order so that the later of two conflicting entries gets the error.
    let mut all: Vec<(PathBuf, EntryRef<'_>)> = persist
        .entries()
        .into_iter()
        .map(|e| (e.target(), e))
        .collect();
    all.sort_by_key(|(_, e)| (e.entry.loc.line, e.entry.loc.column));
    let mut seen: BTreeMap<PathBuf, (Kind, Loc)> = BTreeMap::new();
    let mut valid: Vec<(&PathBuf, &EntryRef<'_>)> = Vec::new();
    for (target, e) in &all {
        let shown = target.display();
        if target == Path::new("/") {
            errors.push(at(
                e.entry.loc,
                "'/' cannot be persisted: list the directories under it instead".into(),
            ));
        } else if let Some(prefix) = forbidden_prefix(target) {
            errors.push(at(
                e.entry.loc,
                format!("'{shown}' is in '{prefix}', which the kernel or init manages: it cannot be persisted"),
            ));
        } else if target.starts_with(&persist.path) {
            errors.push(at(
                e.entry.loc,
                format!(
                    "'{shown}' is inside persistent storage '{}' itself",
                    persist.path.display()
                ),
            ));
        } else if persist.path.starts_with(target) {
            let where_ = path_loc.map_or_else(
                || "by default".to_string(),
                |l| format!("at line {}", l.line),
            );
            errors.push(at(
                e.entry.loc,
                format!(
                    "'{shown}' contains persistent storage '{}' (set {where_}): a bind mount there would hide it",
                    persist.path.display()
                ),
            ));
        } else if let Some((_, first)) = seen.get(target) {
            errors.push(at(
                e.entry.loc,
                format!(
                    "'{shown}' is listed twice (first at line {}, column {})",
                    first.line, first.column
                ),
            ));
        } else {
            seen.insert(target.clone(), (e.kind, e.entry.loc));
            valid.push((target, e));
        }
    }
    // Nesting, once every path is known: the inner entry gets the error, whatever the order they were written in.
    for (target, e) in valid {
        let Some((ancestor, (kind, loc))) = target
            .ancestors()
            .skip(1)
            .find_map(|a| seen.get(a).map(|found| (a, found)))
        else {
            continue;
        };
        let msg = match kind {
            Kind::Directory => format!(
                "'{}' is inside the directory entry '{}' (line {}): persisting '{}' already keeps it; \
                 remove one of the two",
                target.display(),
                ancestor.display(),
                loc.line,
                ancestor.display()
            ),
            Kind::File => format!(
                "'{}' is below the file entry '{}' (line {}): a file cannot contain anything",
                target.display(),
                ancestor.display(),
                loc.line
            ),
        };
        errors.push(at(e.entry.loc, msg));
    }
}
