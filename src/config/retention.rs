//! `[retention]`: the policy `tabula roots prune` applies. The policy types live here, with their
//! parser, so that configuration does not import the retention planner (which re-exports them).

use std::fmt;
use std::time::Duration;

use crate::tz::Tz;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::Source;
use crate::error::ConfigError;

/// `keep_last` when the configuration does not say.
pub const DEFAULT_KEEP_LAST: usize = 10;

/// A retention policy. See `crate::retention` for the exact semantics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Keep the N newest unpinned roots; values below 1 are raised to 1.
    pub keep_last: usize,
    /// Keep time-judged roots retired within this duration of the newest time-judged root.
    #[serde(serialize_with = "serialize_opt_duration")]
    pub keep_within: Option<Duration>,
    /// Keep the first root of each of the last N days that contain boots.
    pub keep_daily: Option<usize>,
    /// Keep the first root of each of the last N ISO weeks (Monday first) that contain boots.
    pub keep_weekly: Option<usize>,
    /// Keep the first root of each of the last N months that contain boots.
    pub keep_monthly: Option<usize>,
    /// Time zone in which days, weeks and months are delimited, from the system's zoneinfo (see
    /// [`crate::tz`]; the initrd, which never buckets, needs none).
    pub timezone: Tz,
    /// Free-space floor: beyond the policy, delete the oldest kept roots while free space is below
    /// it.
    pub min_free: Option<MinFree>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_last: DEFAULT_KEEP_LAST,
            keep_within: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            timezone: Tz::UTC,
            min_free: None,
        }
    }
}

impl Policy {
    /// Refuses values that make no sense. `keep_last = 0` is not an error (it is raised to 1).
    pub fn validate(&self) -> Result<(), String> {
        match self.min_free {
            Some(MinFree::Percent(p)) if !(p.is_finite() && (0.0..100.0).contains(&p)) => Err(
                format!("min_free must be a percentage from 0 up to (not including) 100, got {p}%"),
            ),
            _ => Ok(()),
        }
    }

    /// `keep_last` as applied: at least 1.
    pub fn effective_keep_last(&self) -> usize {
        self.keep_last.max(1)
    }
}

/// A free-space floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MinFree {
    /// Percentage of the filesystem size that must be free, in `[0, 100)`.
    Percent(f64),
    /// Bytes that must be free.
    Bytes(u64),
}

impl MinFree {
    /// Whether `free` bytes available out of `total` satisfy the floor.
    pub fn is_met(&self, free: u64, total: u64) -> bool {
        match *self {
            MinFree::Bytes(b) => free >= b,
            // f64 is exact enough: a rounding error of a few bytes on a floor is irrelevant.
            MinFree::Percent(p) => free as f64 >= total as f64 * p / 100.0,
        }
    }
}

impl fmt::Display for MinFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinFree::Percent(p) => write!(f, "{p}%"),
            MinFree::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

/// Compact duration: `2w`, `1d12h`, `90s` -> `1m30s`; sub-second parts fall back to humantime.
/// Parseable by `humantime::parse_duration`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return humantime::format_duration(d).to_string().replace(' ', "");
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("w", 7 * 86_400),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

fn serialize_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCount {
    Number(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    keep_last: Option<Spanned<i64>>,
    keep_within: Option<Spanned<String>>,
    keep_daily: Option<Spanned<RawCount>>,
    keep_weekly: Option<Spanned<RawCount>>,
    keep_monthly: Option<Spanned<RawCount>>,
    timezone: Option<Spanned<String>>,
    min_free: Option<Spanned<String>>,
}

pub(super) fn validate_retention(
    src: &Source<'_>,
    raw: RawRetention,
) -> Result<Policy, ConfigError> {
    let mut p = Policy::default();
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
pub fn parse_min_free(s: &str) -> Option<MinFree> {
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
