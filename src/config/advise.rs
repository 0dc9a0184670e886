//! `[advise]`: what `tabula advise` treats as per-boot noise.

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use crate::error::ConfigError;

/// `[advise]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advise {
    /// Extra globs (absolute; `*`, `?`, `**`) whose matches, and everything beneath them, are noise.
    pub ignore: Vec<String>,
    /// Whether the built-in noise list (`advise::DEFAULT_IGNORE`) applies too.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdvise {
    ignore: Option<Vec<Spanned<String>>>,
    default_ignore: Option<bool>,
}

pub(super) fn validate_advise(
    src: &Source<'_>,
    raw: Option<RawAdvise>,
    errors: &mut Vec<ConfigError>,
) -> Advise {
    let mut a = Advise::default();
    let Some(raw) = raw else { return a };
    a.default_ignore = raw.default_ignore.unwrap_or(true);
    for g in raw.ignore.unwrap_or_default() {
        match check_glob(g.get_ref()) {
            Ok(()) => a.ignore.push(g.into_inner()),
            Err(why) => errors.push(src.error(Some(g.span()), format!("[advise] `ignore`: {why}"))),
        }
    }
    a
}

/// Checks that `glob` is usable in `[advise] ignore`.
pub fn check_glob(glob: &str) -> Result<(), String> {
    if !glob.starts_with('/') {
        return Err(format!(
            "'{glob}' is not absolute: write it from '/', such as '/{glob}'"
        ));
    }
    if glob.contains('\0') {
        return Err(format!("'{glob}' contains a NUL byte"));
    }
    Ok(())
}
