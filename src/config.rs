//! The configuration file (`/etc/tabula/tabula.toml`): schema, defaults and validation.
//!
//! Parsing never touches the system. Every error names the file, line and column, because the user
//! who reads it may be sitting at an initrd emergency shell.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    layout: Option<Spanned<RawLayout>>,
    retention: Option<RawRetention>,
    boot: Option<RawBoot>,
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
}

/// Turns byte offsets into line/column for error messages.
pub(crate) struct Source<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// An error at `span` (or at no position).
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_column(self.text, span.start);
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

/// 1-based line and column (in characters) of byte `offset` in `text`.
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

    /// Parses and validates configuration `text` read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let src = Source { file, text };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| src.error(e.span(), e.message().to_string()))?;
        let layout = match raw.layout {
            Some(l) => {
                let span = l.span();
                validate_layout(&src, l.into_inner(), span)?
            }
            None => return Err(src.error(None, "missing [layout] section: set at least `device`")),
        };
        let retention = match raw.retention {
            Some(r) => validate_retention(&src, r)?,
            None => crate::retention::Policy::default(),
        };
        let boot = Boot {
            on_failure: raw.boot.and_then(|b| b.on_failure).unwrap_or_default(),
        };
        Ok(Config {
            file: file.to_path_buf(),
            layout,
            retention,
            boot,
        })
    }
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
                if let Err(why) = check_subvolume_name(v.get_ref()) {
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
    Ok(Layout {
        device,
        device_timeout,
        root: take("root"),
        blank: take("blank"),
        old_roots: take("old_roots"),
        persist: take("persist"),
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
        assert_eq!(c.retention.timezone, chrono_tz::Tz::Europe__Berlin);
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
}
