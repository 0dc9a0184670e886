//! The configuration file (`/etc/tabula/tabula.toml`): schema, defaults and validation.
//!
//! Parsing never touches the system. Every error names the file, line and column, because the user
//! who reads it may be sitting at an initrd emergency shell.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::ConfigError;

/// Where the configuration lives unless `--config` or `TABULA_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/tabula/tabula.toml";

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// `[layout]`: where the btrfs filesystem is and how its subvolumes are named.
    pub layout: Layout,
    /// `[retention]`: which retired roots `tabula roots prune` keeps.
    pub retention: crate::retention::Policy,
    /// `[boot]`: what the initrd does when the rollback fails.
    pub boot: Boot,
    /// `[persist]`: the allowlist bind-mounted (or symlinked) into every fresh root.
    pub persist: Persist,
    /// `[advise]`: what `tabula advise` treats as per-boot noise.
    pub advise: Advise,
}

/// `[advise]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advise {
    /// Extra globs (absolute; `*`, `?`, `**`) whose matches, and everything beneath them, are noise.
    pub ignore: Vec<String>,
    /// Whether the built-in noise list ([`crate::advise::DEFAULT_IGNORE`]) applies too.
    pub default_ignore: bool,
}

impl Default for Advise {
    fn default() -> Self {
        Advise {
            ignore: Vec::new(),
            default_ignore: true,
        }
    }
}

/// `[boot]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Boot {
    /// What to do in the initrd when the rollback fails.
    pub on_failure: OnFailure,
}

/// The initrd's failure policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Boot the untouched old root and log loudly (exit 0 so the boot goes on).
    #[default]
    Continue,
    /// Stop in the initrd's emergency shell (exit non-zero).
    Emergency,
}

/// How the btrfs filesystem is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A device node path, such as `/dev/vda2` or `/dev/mapper/crypt`.
    Path(PathBuf),
    /// `UUID=…`: the btrfs filesystem UUID (what `blkid` shows as UUID).
    Uuid(String),
    /// `LABEL=…`: the btrfs label.
    Label(String),
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
            DeviceSpec::Uuid(u) => write!(f, "UUID={u}"),
            DeviceSpec::Label(l) => write!(f, "LABEL={l}"),
        }
    }
}

/// `[layout]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The btrfs device.
    pub device: DeviceSpec,
    /// How long to wait for the device to appear.
    pub device_timeout: Duration,
    /// Name of the live root subvolume in the top level.
    pub root: String,
    /// Name of the read-only blank snapshot in the top level.
    pub blank: String,
    /// Name of the subvolume holding retired roots.
    pub old_roots: String,
    /// Name of the persistent subvolume.
    pub persist: String,
    /// Mount a multi-device filesystem with a member missing (`-o degraded`) instead of failing.
    pub allow_degraded: bool,
    /// How many retired blanks `tabula blank update` keeps (at least 1).
    pub blank_history: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    layout: Option<Spanned<RawLayout>>,
    retention: Option<RawRetention>,
    boot: Option<RawBoot>,
    persist: Option<Spanned<RawPersist>>,
    advise: Option<RawAdvise>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdvise {
    ignore: Option<Vec<Spanned<String>>>,
    default_ignore: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    on_failure: Option<OnFailure>,
}

/// A tier count: a number, or "all".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCount {
    Number(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<Spanned<i64>>,
    keep_within: Option<Spanned<String>>,
    keep_daily: Option<Spanned<RawCount>>,
    keep_weekly: Option<Spanned<RawCount>>,
    keep_monthly: Option<Spanned<RawCount>>,
    timezone: Option<Spanned<String>>,
    min_free: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    device: Option<Spanned<String>>,
    device_timeout: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
    blank: Option<Spanned<String>>,
    old_roots: Option<Spanned<String>>,
    persist: Option<Spanned<String>>,
    allow_degraded: Option<bool>,
    blank_history: Option<Spanned<i64>>,
}

/// Turns byte offsets into line/column for error messages.
pub(crate) struct Source<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
    /// Byte offset of each line's start, computed once so each lookup is a binary search (the config
    /// can hold tens of thousands of entries; scanning from the top per entry was quadratic).
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    /// Indexes `text`'s line starts once.
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Source<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            file,
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line start at or before `offset`; line_starts[0] == 0, so the index is >= 1.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line.max(1), column)
    }

    /// An error at `span` (or at no position).
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = self.position(span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`, by a scan from the top: the
/// reference [`Source::position`] is checked against.
#[cfg(test)]
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// Reads and validates the configuration at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "cannot read the configuration: {e}; create it (see the README's configuration \
                     reference) or point --config / TABULA_CONFIG at it"
                ),
                _ => format!("cannot read the configuration: {e}"),
            },
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration `text` read from `file`; the first problem found is returned.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_all(file, text).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Like [`Config::parse`], but reports every problem found (ordered by position), for `tabula check`.
    /// The error list is never empty.
    pub fn parse_all(file: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
        let src = Source::new(file, text);
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| vec![src.error(e.span(), e.message().to_string())])?;
        let mut errors = Vec::new();
        let layout = match raw.layout {
            Some(l) => {
                let span = l.span();
                validate_layout(&src, l.into_inner(), span)
                    .map_err(|e| errors.push(e))
                    .ok()
            }
            None => {
                errors.push(src.error(None, "missing [layout] section: set at least `device`"));
                None
            }
        };
        let retention = match raw.retention {
            Some(r) => validate_retention(&src, r).map_err(|e| errors.push(e)).ok(),
            None => Some(crate::retention::Policy::default()),
        };
        let boot = Boot {
            on_failure: raw.boot.and_then(|b| b.on_failure).unwrap_or_default(),
        };
        let persist = match raw.persist {
            Some(p) => validate_persist(&src, p.into_inner(), &mut errors),
            None => Persist::default(),
        };
        let advise = validate_advise(&src, raw.advise, &mut errors);
        match (layout, retention) {
            (Some(layout), Some(retention)) if errors.is_empty() => Ok(Config {
                file: file.to_path_buf(),
                layout,
                retention,
                boot,
                persist,
                advise,
            }),
            _ => {
                errors.sort_by_key(|e| (e.line.is_some(), e.line, e.column));
                Err(errors)
            }
        }
    }
}

fn validate_advise(
    src: &Source<'_>,
    raw: Option<RawAdvise>,
    errors: &mut Vec<ConfigError>,
) -> Advise {
    let mut a = Advise::default();
    let Some(raw) = raw else { return a };
    a.default_ignore = raw.default_ignore.unwrap_or(true);
    for g in raw.ignore.unwrap_or_default() {
        match crate::advise::check_glob(g.get_ref()) {
            Ok(()) => a.ignore.push(g.into_inner()),
            Err(why) => errors.push(src.error(Some(g.span()), format!("[advise] `ignore`: {why}"))),
        }
    }
    a
}

fn validate_retention(
    src: &Source<'_>,
    raw: RawRetention,
) -> Result<crate::retention::Policy, ConfigError> {
    let mut p = crate::retention::Policy::default();
    if let Some(k) = raw.keep_last {
        p.keep_last = match usize::try_from(*k.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(src.error(
                    Some(k.span()),
                    "`keep_last` must be at least 1: tabula always keeps last boot's root",
                ));
            }
        };
    }
    if let Some(w) = raw.keep_within {
        p.keep_within = Some(humantime::parse_duration(w.get_ref()).map_err(|e| {
            src.error(
                Some(w.span()),
                format!("`keep_within`: {e}: write a duration such as \"2w\" or \"30d\""),
            )
        })?);
    }
    let count = |key: &str, c: Option<Spanned<RawCount>>| -> Result<Option<usize>, ConfigError> {
        let Some(c) = c else { return Ok(None) };
        let bad = || {
            src.error(
                Some(c.span()),
                format!("`{key}` must be a count (0 turns it off) or \"all\""),
            )
        };
        match c.get_ref() {
            RawCount::Number(n) => usize::try_from(*n).map(Some).map_err(|_| bad()),
            RawCount::Word(w) if w == "all" => Ok(Some(usize::MAX)),
            RawCount::Word(_) => Err(bad()),
        }
    };
    p.keep_daily = count("keep_daily", raw.keep_daily)?;
    p.keep_weekly = count("keep_weekly", raw.keep_weekly)?;
    p.keep_monthly = count("keep_monthly", raw.keep_monthly)?;
    if let Some(tz) = raw.timezone {
        p.timezone = tz.get_ref().parse().map_err(|_| {
            src.error(
                Some(tz.span()),
                format!("`timezone`: unknown time zone '{}': use an IANA name such as \"Europe/Berlin\" or \"UTC\"", tz.get_ref()),
            )
        })?;
    }
    if let Some(m) = raw.min_free {
        p.min_free = Some(parse_min_free(m.get_ref()).ok_or_else(|| {
            src.error(Some(m.span()), "`min_free`: write a percentage of the filesystem (\"10%\") or a size (\"20GiB\", \"500M\")")
        })?);
    }
    p.validate()
        .map_err(|e| src.error(None, format!("[retention]: {e}")))?;
    Ok(p)
}

/// "10%" → a percentage; "20GiB", "500M", "1T", "4096" → bytes (K/M/G/T are powers of 1024).
pub fn parse_min_free(s: &str) -> Option<crate::retention::MinFree> {
    use crate::retention::MinFree;
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().ok()?;
        return (p.is_finite() && (0.0..100.0).contains(&p)).then_some(MinFree::Percent(p));
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0).then_some(MinFree::Bytes(bytes as u64))
}

fn validate_layout(
    src: &Source<'_>,
    raw: RawLayout,
    span: Range<usize>,
) -> Result<Layout, ConfigError> {
    let device = match raw.device {
        Some(d) => parse_device(src, &d)?,
        None => {
            return Err(src.error(
                Some(span),
                "[layout] needs `device`: a device path, `UUID=<btrfs uuid>` or `LABEL=<btrfs label>`",
            ));
        }
    };
    let device_timeout = match raw.device_timeout {
        Some(t) => humantime::parse_duration(t.get_ref()).map_err(|e| {
            src.error(
                Some(t.span()),
                format!("`device_timeout`: {e}: write a duration such as \"30s\" or \"2min\""),
            )
        })?,
        None => Duration::from_secs(30),
    };
    let mut names: Vec<(&'static str, String)> = Vec::new();
    for (key, value, default) in [
        ("root", raw.root, "root"),
        ("blank", raw.blank, "root-blank"),
        ("old_roots", raw.old_roots, "old_roots"),
        ("persist", raw.persist, "persist"),
    ] {
        let name = match value {
            Some(v) => {
                if let Err(why) =
                    check_subvolume_name(v.get_ref()).and_then(|()| check_not_reserved(v.get_ref()))
                {
                    return Err(src.error(Some(v.span()), format!("`{key}`: {why}")));
                }
                if let Some((other, _)) = names.iter().find(|(_, n)| n == v.get_ref()) {
                    return Err(src.error(
                        Some(v.span()),
                        format!("`{key}` and `{other}` name the same subvolume '{}': give each its own name", v.get_ref()),
                    ));
                }
                v.into_inner()
            }
            None => default.to_string(),
        };
        names.push((key, name));
    }
    let take = |k: &str| {
        names
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    };
    let blank_history = match &raw.blank_history {
        Some(v) if *v.get_ref() < 1 || *v.get_ref() > 1000 => {
            return Err(src.error(
                Some(v.span()),
                "`blank_history` must be between 1 and 1000: `tabula blank rollback` needs the previous blank",
            ));
        }
        Some(v) => usize::try_from(*v.get_ref()).unwrap_or(2),
        None => 2,
    };
    Ok(Layout {
        device,
        device_timeout,
        root: take("root"),
        blank: take("blank"),
        old_roots: take("old_roots"),
        persist: take("persist"),
        allow_degraded: raw.allow_degraded.unwrap_or(false),
        blank_history,
    })
}

fn parse_device(src: &Source<'_>, d: &Spanned<String>) -> Result<DeviceSpec, ConfigError> {
    let v = d.get_ref().trim();
    let bad = |msg: &str| src.error(Some(d.span()), format!("`device`: {msg}"));
    if let Some(uuid) = v.strip_prefix("UUID=") {
        let uuid = uuid.to_ascii_lowercase();
        let hex: String = uuid.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(
                "`UUID=` takes a filesystem UUID such as 01234567-89ab-cdef-0123-456789abcdef",
            ));
        }
        Ok(DeviceSpec::Uuid(uuid))
    } else if let Some(label) = v.strip_prefix("LABEL=") {
        if label.is_empty() || label.len() > 255 {
            return Err(bad("`LABEL=` takes a btrfs label of 1 to 255 bytes"));
        }
        Ok(DeviceSpec::Label(label.to_string()))
    } else if v.starts_with('/') {
        Ok(DeviceSpec::Path(PathBuf::from(v)))
    } else {
        Err(bad(
            "write an absolute device path (/dev/…), `UUID=…` or `LABEL=…`",
        ))
    }
}

/// A subvolume name must be one path component the kernel accepts.
pub fn check_subvolume_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a subvolume name cannot be empty".into());
    }
    if name.len() > 255 {
        return Err("a subvolume name is at most 255 bytes".into());
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "'{name}' is not a single path component: name a subvolume in the top level"
        ));
    }
    Ok(())
}

/// Layout names must not be names tabula itself creates and renames: a persistent subvolume named
/// `root.tabula-new` would be promoted to `root` by the next rollback, and then pruned.
fn check_not_reserved(name: &str) -> Result<(), String> {
    let temp = name.starts_with('.') && name.ends_with(".tmp");
    if name.contains(".tabula-") || temp {
        return Err(format!(
            "'{name}' is reserved: names containing '.tabula-' (such as '<root>{}') and '.<name>.tmp' are \
             tabula's own staging and temporary names; choose another",
            crate::layout::STAGING_SUFFIX
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// [persist]
// ---------------------------------------------------------------------------------------------------------

/// Where `[persist] path` points unless set: the persistent subvolume's mount point inside the new root.
pub const DEFAULT_PERSIST_PATH: &str = "/persist";

/// Paths the kernel or the init system owns: persisting them makes no sense and would break the boot.
pub const FORBIDDEN_PREFIXES: [&str; 4] = ["/proc", "/sys", "/dev", "/run"];

/// A position in the configuration file (1-based line and column, in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Loc {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

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
struct RawPersist {
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

impl Source<'_> {
    fn loc(&self, span: &Range<usize>) -> Loc {
        let (line, column) = self.position(span.start);
        Loc { line, column }
    }
}

fn validate_persist(src: &Source<'_>, raw: RawPersist, errors: &mut Vec<ConfigError>) -> Persist {
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

/// A user or group name as `useradd` accepts it (plus the `$` of machine accounts).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric()
                || c == '_'
                || c == '.'
                || c == '-'
                || (c == '$' && i == name.len() - 1)
        });
    if ok {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid user or group name"))
    }
}

/// Parses an octal mode string: 3 or 4 octal digits (`"755"`, `"0700"`, `"2770"`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "'{s}' is not an octal mode: write 3 or 4 octal digits, such as \"0755\""
        ));
    }
    u32::from_str_radix(digits, 8).map_err(|e| format!("'{s}': {e}"))
}

/// Checks that `s` is an absolute, normalised path and returns it.
pub fn normalised_absolute(s: &str) -> Result<PathBuf, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "'{s}' is not absolute: write it from '/', such as '/{s}'"
        ));
    }
    if s == "/" {
        return Ok(PathBuf::from("/"));
    }
    check_components(s, s.get(1..).unwrap_or(""))?;
    Ok(PathBuf::from(s))
}

/// Checks that `s` is a relative, normalised path (a user's entry) and returns it.
pub fn normalised_relative(s: &str) -> Result<PathBuf, String> {
    if s.starts_with('/') {
        return Err(format!("'{s}' must be relative"));
    }
    if s.is_empty() {
        return Err("an empty path names nothing".into());
    }
    check_components(s, s)?;
    Ok(PathBuf::from(s))
}

fn check_components(whole: &str, rest: &str) -> Result<(), String> {
    if whole.contains('\0') {
        return Err("a path cannot contain a NUL byte".into());
    }
    let mut clean: Vec<&str> = Vec::new();
    let mut normal = true;
    for c in rest.split('/') {
        match c {
            ".." => {
                return Err(format!(
                    "'{whole}' contains '..': write the path without it"
                ));
            }
            "" | "." => normal = false,
            c if c.len() > 255 => {
                return Err(format!("'{whole}' has a component longer than 255 bytes"));
            }
            c => clean.push(c),
        }
    }
    if !normal {
        let lead = if whole.starts_with('/') { "/" } else { "" };
        return Err(format!(
            "'{whole}' is not normalised: write '{lead}{}'",
            clean.join("/")
        ));
    }
    Ok(())
}

fn forbidden_prefix(path: &Path) -> Option<&'static str> {
    FORBIDDEN_PREFIXES.into_iter().find(|p| path.starts_with(p))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/tabula/tabula.toml"), text)
    }

    #[test]
    fn defaults() {
        let c = parse("[layout]\ndevice = \"/dev/vda2\"\n").unwrap();
        assert_eq!(c.layout.device, DeviceSpec::Path("/dev/vda2".into()));
        assert_eq!(c.layout.device_timeout, Duration::from_secs(30));
        assert_eq!(
            (
                &*c.layout.root,
                &*c.layout.blank,
                &*c.layout.old_roots,
                &*c.layout.persist
            ),
            ("root", "root-blank", "old_roots", "persist")
        );
    }

    #[test]
    fn uuid_and_label() {
        let c =
            parse("[layout]\ndevice = \"UUID=0123ABCD-89ab-cdef-0123-456789abcdef\"\n").unwrap();
        assert_eq!(
            c.layout.device,
            DeviceSpec::Uuid("0123abcd-89ab-cdef-0123-456789abcdef".into())
        );
        let c = parse("[layout]\ndevice = \"LABEL=nixos\"\ndevice_timeout = \"2min\"\n").unwrap();
        assert_eq!(c.layout.device, DeviceSpec::Label("nixos".into()));
        assert_eq!(c.layout.device_timeout, Duration::from_secs(120));
    }

    #[test]
    fn blank_history() {
        assert_eq!(
            parse("[layout]\ndevice = \"/dev/x\"\n")
                .unwrap()
                .layout
                .blank_history,
            2
        );
        let c = parse("[layout]\ndevice = \"/dev/x\"\nblank_history = 5\n").unwrap();
        assert_eq!(c.layout.blank_history, 5);
        let e = parse("[layout]\ndevice = \"/dev/x\"\nblank_history = 0\n").unwrap_err();
        assert!(e.message.contains("blank_history"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = parse("[layout]\ndevice = \"/dev/vda2\"\n  colour = \"red\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(3)), "{e}");
        assert!(e.message.contains("colour"), "{e}");
    }

    #[test]
    fn retention_and_boot() {
        let c = parse(
            "[layout]\ndevice = \"/dev/x\"\n[retention]\nkeep_last = 3\nkeep_within = \"2w\"\nkeep_daily = 7\n\
             keep_weekly = \"all\"\ntimezone = \"Europe/Berlin\"\nmin_free = \"10%\"\n[boot]\non_failure = \"emergency\"\n",
        )
        .unwrap();
        assert_eq!(c.retention.keep_last, 3);
        assert_eq!(
            c.retention.keep_within,
            Some(Duration::from_secs(14 * 86400))
        );
        assert_eq!(
            (
                c.retention.keep_daily,
                c.retention.keep_weekly,
                c.retention.keep_monthly
            ),
            (Some(7), Some(usize::MAX), None)
        );
        assert_eq!(c.retention.timezone.name(), "Europe/Berlin");
        assert_eq!(
            c.retention.min_free,
            Some(crate::retention::MinFree::Percent(10.0))
        );
        assert_eq!(c.boot.on_failure, OnFailure::Emergency);
        let d = parse("[layout]\ndevice = \"/dev/x\"\n").unwrap();
        assert_eq!(d.retention, crate::retention::Policy::default());
        assert_eq!(d.boot.on_failure, OnFailure::Continue);
        for (bad, line) in [
            ("keep_last = 0", 4),
            ("keep_daily = -1", 4),
            ("keep_weekly = \"lots\"", 4),
            ("timezone = \"Mars/Olympus\"", 4),
            ("min_free = \"lots\"", 4),
            ("keep_within = \"1 fortnight\"", 4),
            ("keep_hourly = 3", 4),
        ] {
            let e = parse(&format!(
                "[layout]\ndevice = \"/dev/x\"\n[retention]\n{bad}\n"
            ))
            .unwrap_err();
            assert_eq!(e.line, Some(line), "{bad}: {e}");
        }
        assert_eq!(
            parse_min_free("20GiB"),
            Some(crate::retention::MinFree::Bytes(20 << 30))
        );
        assert_eq!(
            parse_min_free("500M"),
            Some(crate::retention::MinFree::Bytes(500 << 20))
        );
        assert_eq!(parse_min_free("100%"), None);
        assert_eq!(parse_min_free("x"), None);
    }

    #[test]
    fn bad_values_are_located() {
        let e = parse("[layout]\ndevice = \"vda2\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("[layout]\ndevice = \"/dev/x\"\ndevice_timeout = \"soon\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = parse("[layout]\ndevice = \"/dev/x\"\nroot = \"a/b\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = parse("[layout]\ndevice = \"/dev/x\"\nblank = \"root\"\n").unwrap_err();
        assert!(e.message.contains("same subvolume"), "{e}");
        let e = parse("[layout]\n").unwrap_err();
        assert!(e.message.contains("device"), "{e}");
        let e = parse("").unwrap_err();
        assert!(e.message.contains("[layout]"), "{e}");
    }

    #[test]
    fn persist_defaults_and_entries() {
        let c = parse("[layout]\ndevice = \"/dev/vda2\"\n").unwrap();
        assert_eq!(c.persist, Persist::default());
        assert_eq!(c.persist.path, Path::new("/persist"));

        let c = parse(
            "[layout]\ndevice = \"/dev/vda2\"\n[persist]\npath = \"/state\"\n\
             directories = [\"/var/log\", { path = \"/srv\", user = \"1000\", group = \"users\", mode = \"750\" }]\n\
             files = [{ path = \"/etc/hostid\", how = \"symlink\" }, \"/etc/machine-id\"]\n\
             [[persist.users]]\nname = \"alice\"\ndirectories = [\"Downloads\"]\nfiles = [\".bash_history\"]\n\
             [[persist.users]]\nname = \"bob\"\nhome = \"/srv/home/bob\"\nuid = 1001\ngid = 100\n",
        )
        .unwrap();
        let p = &c.persist;
        assert_eq!(p.path, Path::new("/state"));
        assert_eq!(p.path_loc, Some(Loc { line: 4, column: 8 }));
        let srv = &p.directories[1];
        assert_eq!(srv.user, Some(IdSpec::Id(1000)));
        assert_eq!(srv.group, Some(IdSpec::Name("users".into())));
        assert_eq!(srv.mode, Some(0o750));
        assert_eq!(
            srv.loc,
            Loc {
                line: 5,
                column: 28
            }
        );
        assert_eq!(p.files[0].how, How::Symlink);
        assert_eq!(p.users[0].home, Path::new("/home/alice"));
        assert_eq!((p.users[1].uid, p.users[1].gid), (Some(1001), Some(100)));
        let targets: Vec<PathBuf> = p.entries().iter().map(EntryRef::target).collect();
        let want = [
            "/etc/hostid",
            "/etc/machine-id",
            "/home/alice/.bash_history",
            "/home/alice/Downloads",
            "/srv",
            "/var/log",
        ];
        assert_eq!(targets, want.iter().map(PathBuf::from).collect::<Vec<_>>());
        assert_eq!(
            p.source_of(Path::new("/var/log")),
            Path::new("/state/var/log")
        );
    }

    #[test]
    fn persist_errors_are_all_reported_in_order() {
        let text = "[layout]\ndevice = \"/dev/vda2\"\n[persist]\n\
                    directories = [\"/a\", \"/a\", \"b\", { path = \"/c\", mode = \"8\" }]\n";
        let errors = Config::parse_all(Path::new("f.toml"), text).unwrap_err();
        let got: Vec<(Option<usize>, Option<usize>)> =
            errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(
            got,
            [
                (Some(4), Some(22)),
                (Some(4), Some(28)),
                (Some(4), Some(55))
            ],
            "{errors:#?}"
        );
        let first = parse(text).unwrap_err();
        assert_eq!((first.line, first.column), (Some(4), Some(22)));
        assert!(first.message.contains("listed twice"), "{first}");
    }

    #[test]
    fn path_and_mode_helpers() {
        assert_eq!(
            normalised_absolute("/var/log"),
            Ok(PathBuf::from("/var/log"))
        );
        assert!(
            normalised_absolute("/var/log/")
                .unwrap_err()
                .contains("write '/var/log'")
        );
        assert!(normalised_absolute("/a/./b").is_err());
        assert!(normalised_absolute("/a/../b").unwrap_err().contains("'..'"));
        assert!(
            normalised_relative("a//b")
                .unwrap_err()
                .contains("write 'a/b'")
        );
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("2770"), Ok(0o2770));
        assert_eq!(parse_mode("700"), Ok(0o700));
        assert!(
            parse_mode("0o7").is_err()
                && parse_mode("08").is_err()
                && parse_mode("07777x").is_err()
        );
    }

    #[test]
    fn line_index_gives_the_scan_positions() {
        let text = "a = 1\n\n# é ü\n  [x]\r\nkey = \"värde\"\nlast";
        let src = Source::new(Path::new("/t.toml"), text);
        for (offset, _) in text.char_indices().chain([(text.len(), ' ')]) {
            assert_eq!(
                src.position(offset),
                line_column(text, offset),
                "offset {offset}"
            );
        }
        assert_eq!(
            src.position(text.len() + 10),
            line_column(text, text.len() + 10)
        );
        let empty = Source::new(Path::new("/t.toml"), "");
        assert_eq!(empty.position(0), (1, 1));
    }
}
