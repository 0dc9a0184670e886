//! `[layout]`: where the btrfs filesystem is and how its subvolumes are named.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use crate::error::ConfigError;

/// Suffix of the staging subvolume that becomes the next root (`root.tabula-new`). Defined here, with
/// the rule that reserves it, so that configuration does not import the layout module that uses it.
pub const STAGING_SUFFIX: &str = ".tabula-new";

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
pub(super) struct RawLayout {
    device: Option<Spanned<String>>,
    device_timeout: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
    blank: Option<Spanned<String>>,
    old_roots: Option<Spanned<String>>,
    persist: Option<Spanned<String>>,
    allow_degraded: Option<bool>,
    blank_history: Option<Spanned<i64>>,
}

pub(super) fn validate_layout(
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
            STAGING_SUFFIX
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// [persist]
