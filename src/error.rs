//! Error kinds that decide tabula's exit status.
//!
//! Most failures travel as `anyhow::Error` with context. The few kinds a caller (or a script) must tell
//! apart are typed here and found again by walking the error chain in [`exit_status`].

use std::fmt;
use std::path::PathBuf;

/// Documented exit statuses (README, `tabula man`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success = 0,
    /// A runtime failure (I/O, ioctl, mount), or some entries of a batch failed.
    Failure = 1,
    /// Bad command line or bad configuration: nothing was changed.
    Usage = 2,
    /// A safety rule refused the operation: nothing was changed.
    Refused = 3,
    /// Another tabula process holds the lock on this filesystem.
    LockHeld = 4,
}

/// A configuration problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column, when the problem has a position.
    pub column: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A safety rule said no. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable kebab-case rule name, used in messages, JSON and tests.
    pub rule: &'static str,
    /// Why, and what the user can do.
    pub message: String,
}

impl Refusal {
    /// A refusal under `rule`.
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused ({}): {}", self.rule, self.message)
    }
}

impl std::error::Error for Refusal {}

/// Another tabula process holds the filesystem lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHeld {
    /// What was locked.
    pub what: String,
}

impl fmt::Display for LockHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "another tabula process holds the lock on {}; wait for it to finish and try again",
            self.what
        )
    }
}

impl std::error::Error for LockHeld {}

/// A usage problem found after argument parsing (a bad root reference, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Some items of a batch failed; each was already reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialFailure {
    /// How many items failed.
    pub failed: usize,
    /// How many items there were.
    pub total: usize,
}

impl PartialFailure {
    /// `Some` when any of `total` items failed: the error that sets a batch's exit status.
    pub fn of(failed: usize, total: usize) -> Option<PartialFailure> {
        (failed > 0).then_some(PartialFailure { failed, total })
    }
}

impl fmt::Display for PartialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} entries failed (see the messages above)",
            self.failed, self.total
        )
    }
}

impl std::error::Error for PartialFailure {}

/// The exit status an error maps to: the first typed kind found in its chain decides.
pub fn exit_status(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if cause.is::<ConfigError>() || cause.is::<UsageError>() {
            return ExitStatus::Usage;
        }
        if cause.is::<Refusal>() {
            return ExitStatus::Refused;
        }
        if cause.is::<LockHeld>() {
            return ExitStatus::LockHeld;
        }
    }
    ExitStatus::Failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn typed_kinds_survive_context() {
        let err = Err::<(), _>(Refusal::new("blank-writable", "x")).context("rolling back");
        assert_eq!(exit_status(&err.unwrap_err()), ExitStatus::Refused);
        let err = anyhow::Error::new(LockHeld {
            what: "/dev/x".into(),
        })
        .context("a");
        assert_eq!(exit_status(&err), ExitStatus::LockHeld);
        let err = anyhow::anyhow!("plain");
        assert_eq!(exit_status(&err), ExitStatus::Failure);
        let err = anyhow::Error::new(ConfigError {
            file: "/etc/tabula/tabula.toml".into(),
            line: Some(3),
            column: Some(1),
            message: "unknown key `foo`".into(),
        });
        assert_eq!(exit_status(&err), ExitStatus::Usage);
        assert_eq!(
            err.to_string(),
            "/etc/tabula/tabula.toml:3:1: unknown key `foo`"
        );
    }
}
