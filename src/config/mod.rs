//! The configuration file (`/etc/tabula/tabula.toml`): schema, defaults and validation.
//!
//! Parsing never touches the system. Every error names the file, line and column, because the user
//! who reads it may be sitting at an initrd emergency shell.
//!
//! Split by concern: `source` turns byte offsets into positions, `layout`, `retention`, `persist`
//! and `advise` hold each section's schema and validation, `paths` the path and name rules they share.
//! This module imports only the foundation (errors); the domain modules import it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;

mod advise;
mod layout;
mod paths;
mod persist;
mod retention;
mod source;
#[cfg(test)]
mod tests;

pub use advise::{Advise, check_glob};
pub use layout::{DeviceSpec, Layout, STAGING_SUFFIX, check_subvolume_name};
pub use paths::{FORBIDDEN_PREFIXES, normalised_absolute, normalised_relative, parse_mode};
pub use persist::{
    DEFAULT_PERSIST_PATH, EntryRef, How, IdSpec, Kind, Persist, PersistEntry, PersistUser,
};
pub use retention::{DEFAULT_KEEP_LAST, MinFree, Policy, format_duration, parse_min_free};
pub use source::Loc;
pub(crate) use source::Source;
#[cfg(test)]
pub(crate) use source::line_column;

use advise::{RawAdvise, validate_advise};
use layout::{RawLayout, validate_layout};
use persist::{RawPersist, validate_persist};
use retention::{RawRetention, validate_retention};

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
    pub retention: Policy,
    /// `[boot]`: what the initrd does when the rollback fails.
    pub boot: Boot,
    /// `[persist]`: the allowlist bind-mounted (or symlinked) into every fresh root.
    pub persist: Persist,
    /// `[advise]`: what `tabula advise` treats as per-boot noise.
    pub advise: Advise,
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
struct RawBoot {
    on_failure: Option<OnFailure>,
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
            None => Some(Policy::default()),
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
