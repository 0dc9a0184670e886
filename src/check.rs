//! `tabula check`: validate the configuration without touching disks.
//!
//! Besides what parsing checks (paths absolute and normalised, no `..`, no duplicates, nothing inside a
//! directory entry, nothing under /proc /sys /dev /run, octal modes), this resolves user and group names
//! against the `passwd`/`group` of a root directory, and, given the blank snapshot, warns about targets
//! whose content a bind mount would hide. Everything is reported, not just the first problem.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::EntryRef;
use crate::config::{Config, How, Kind, Loc};
use crate::error::ConfigError;
use crate::persist::observe::{Eyes, ObservedEntry, observe_entry};
use crate::persist::walk::Walker;
use crate::persist::{Hidden, InTheWay, in_the_way, parents_of, resolve};
use crate::users::Resolver;

/// What to check against.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Root whose `/etc/passwd`, `/etc/group` (and persistent copies under `[persist] path`) resolve
    /// names; `/` when unset.
    pub root: Option<PathBuf>,
    /// A directory holding the blank snapshot (mounted read-only somewhere): targets with content there
    /// get a warning.
    pub blank: Option<PathBuf>,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The configuration is wrong or cannot work.
    Error,
    /// It works, but probably not as intended.
    Warning,
}

/// One problem, located in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl Diagnostic {
    fn from_error(severity: Severity, e: ConfigError) -> Diagnostic {
        Diagnostic {
            severity,
            file: e.file,
            line: e.line,
            column: e.column,
            message: e.message,
        }
    }

    fn at(severity: Severity, file: &Path, loc: Loc, message: String) -> Diagnostic {
        Diagnostic {
            severity,
            file: file.to_path_buf(),
            line: Some(loc.line),
            column: Some(loc.column),
            message,
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: {}", self.message)
    }
}

/// Everything `tabula check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// In file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckReport {
    /// Whether there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// No errors and no warnings: the only case in which `tabula check` exits 0.
    pub fn is_clean(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Checks the configuration file at `path`.
pub fn check_file(path: &Path, opts: &CheckOptions) -> CheckReport {
    match std::fs::read_to_string(path) {
        Ok(text) => check_text(path, &text, opts),
        Err(e) => CheckReport {
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: format!("cannot read the configuration: {e}"),
            }],
        },
    }
}

/// Checks configuration `text` read from `file`.
pub fn check_text(file: &Path, text: &str, opts: &CheckOptions) -> CheckReport {
    let config = match Config::parse_all(file, text) {
        Ok(c) => c,
        Err(errors) => {
            return CheckReport {
                diagnostics: errors
                    .into_iter()
                    .map(|e| Diagnostic::from_error(Severity::Error, e))
                    .collect(),
            };
        }
    };
    let mut out = Vec::new();
    let root = opts.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    check_users(&config, &root, &mut out);
    check_rename_replaced(&config, &mut out);
    if let Some(blank) = &opts.blank {
        check_blank(&config, blank, &mut out);
    }
    out.sort_by_key(|d| (d.line.is_some(), d.line, d.column));
    CheckReport { diagnostics: out }
}

fn check_users(config: &Config, root: &Path, out: &mut Vec<Diagnostic>) {
    let resolver = Resolver::for_root(root, &config.persist);
    let file = &config.file;
    for u in &config.persist.users {
        if let Err(m) = resolver.account(u) {
            out.push(Diagnostic::at(Severity::Error, file, u.loc, m));
        }
    }
    for e in config.persist.entries() {
        if let Some(spec) = &e.entry.user
            && let Err(m) = resolver.uid(spec)
        {
            out.push(Diagnostic::at(
                Severity::Error,
                file,
                e.entry.user_loc.unwrap_or(e.entry.loc),
                m,
            ));
        }
        if let Some(spec) = &e.entry.group
            && let Err(m) = resolver.gid(spec)
        {
            out.push(Diagnostic::at(
                Severity::Error,
                file,
                e.entry.group_loc.unwrap_or(e.entry.loc),
                m,
            ));
        }
    }
}

/// Files that programs replace by rename break under a bind mount (`EBUSY`) and lose their changes
/// through a symlink (the link is replaced by a plain file the next boot erases).
fn check_rename_replaced(config: &Config, out: &mut Vec<Diagnostic>) {
    for e in config.persist.entries() {
        let target = e.target();
        if e.kind != Kind::File || !crate::persist::replaced_by_rename(&target) {
            continue;
        }
        let why = match e.entry.how {
            How::Copy => continue,
            How::Bind => "a bind-mounted file cannot be renamed over, so they fail (EBUSY)",
            How::Symlink => {
                "the rename replaces the symlink with a plain file that the next boot erases"
            }
        };
        out.push(Diagnostic::at(
            Severity::Warning,
            &config.file,
            e.entry.loc,
            format!(
                "'{}' is replaced by rename when programs save it ({why}): use {{ path = \"{}\", how = \"copy\" }} \
                 and let `tabula persist sync` copy changes back",
                target.display(),
                e.entry.path.display()
            ),
        ));
    }
}

fn check_blank(config: &Config, blank: &Path, out: &mut Vec<Diagnostic>) {
    let file = &config.file;
    // The blank is observed as `tabula persist` observes a fresh root; the rules below are pure. It is
    // often a detached subvolume reached through /proc/self/fd, which has no canonical path and no
    // mount table entry: nothing in it is a mount point.
    let eyes = match Walker::open(blank) {
        Ok(walker) => Eyes {
            walker,
            root_canon: blank.to_path_buf(),
            mounts: None,
            resolver: Resolver::for_root(blank, &config.persist),
        },
        Err(e) => {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: file.clone(),
                line: None,
                column: None,
                message: format!("{e:#}"),
            });
            return;
        }
    };
    let walker = &eyes.walker;
    // The initrd mounts persistent storage on this directory of the fresh root: the blank must have it.
    let persist = &config.persist.path;
    match walker.stat(persist) {
        Ok(Some(st)) if st.is_dir() => {}
        other => {
            let why = match other {
                Err(e) => format!("{e:#}"),
                Ok(Some(_)) => "is not a directory".into(),
                _ => "does not exist".into(),
            };
            let message = format!(
                "'{}' {why} in the blank snapshot: persistent storage cannot be mounted there; create the \
                 directory in the blank snapshot",
                persist.display()
            );
            out.push(match config.persist.path_loc {
                Some(loc) => Diagnostic::at(Severity::Warning, file, loc, message),
                None => Diagnostic {
                    severity: Severity::Warning,
                    file: file.clone(),
                    line: None,
                    column: None,
                    message,
                },
            });
        }
    }
    for e in config.persist.entries() {
        let observed = observe_entry(&eyes, config, &e);
        let shown_parents: Vec<PathBuf> = parents_of(&e.target())
            .iter()
            .map(|p| walker.shown(p))
            .collect();
        if let Some((severity, message)) = in_the_blank_snapshot(&e, &observed, &shown_parents) {
            out.push(Diagnostic::at(severity, file, e.entry.loc, message));
        }
    }
}

/// What one entry's observation in the blank snapshot means for every boot to come: the planner's
/// rules ([`in_the_way`], [`Hidden::of`]) in the blank's words. Pure: `shown_parents` are the target's
/// parents as messages show them.
fn in_the_blank_snapshot(
    e: &EntryRef<'_>,
    o: &ObservedEntry,
    shown_parents: &[PathBuf],
) -> Option<(Severity, String)> {
    // The messages say "in the blank snapshot": show the path inside it, not where it is mounted.
    let shown = e.target();
    let st = match resolve(&o.target_chain, shown_parents) {
        Ok(Some(st)) => st,
        Ok(None) => return None,
        Err(failure) => {
            return Some((
                Severity::Error,
                format!(
                    "{}: `tabula persist` will refuse this entry at every boot",
                    failure.message
                ),
            ));
        }
    };
    if let Some(w) = in_the_way(e.kind, e.entry.how, &st) {
        return Some((Severity::Error, in_the_blank(w, &shown)));
    }
    // A copy replaces the blank's file (that is the point), a symlink is the link itself: only a bind
    // mount hides something.
    if e.entry.how != How::Bind {
        return None;
    }
    let entries = || match &o.target_entries {
        Some(Ok(n)) => Ok(*n),
        Some(Err(failure)) => Err(anyhow::anyhow!(failure.message.clone())),
        None => Ok(0),
    };
    match Hidden::of(e.kind, &st, entries) {
        Ok(None) => None,
        Ok(Some(Hidden::Entries(n))) => Some((
            Severity::Warning,
            format!(
                "'{}' has {n} {} in the blank snapshot: the bind mount will hide them",
                shown.display(),
                crate::persist::entries_word(n)
            ),
        )),
        Ok(Some(Hidden::Bytes(n))) => Some((
            Severity::Warning,
            format!(
                "'{}' has {n} bytes in the blank snapshot: the bind mount will hide them",
                shown.display(),
            ),
        )),
        Err(err) => Some((Severity::Error, format!("{err:#}"))),
    }
}

/// What is in the way, in the words of the blank snapshot.
fn in_the_blank(w: InTheWay, shown: &Path) -> String {
    let s = shown.display();
    match w {
        InTheWay::Symlink => {
            format!(
                "'{s}' is a symlink in the blank snapshot: `tabula persist` will refuse this entry"
            )
        }
        InTheWay::NotASymlink => format!(
            "'{s}' exists in the blank snapshot: `tabula persist` will not replace it with a symlink"
        ),
        InTheWay::NotADirectory => format!("'{s}' is not a directory in the blank snapshot"),
        InTheWay::NotARegularFile => format!("'{s}' is not a regular file in the blank snapshot"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::observe::{FileType, Probe, Stat};

    fn found(file_type: FileType, size: u64) -> Probe {
        Probe::Found(Stat {
            file_type,
            uid: 0,
            gid: 0,
            mode: 0o755,
            dev: 1,
            ino: 2,
            nlink: 1,
            size,
        })
    }

    /// Target, observed chain, entries counted in it, and the diagnostic expected (severity, words).
    type Case = (
        &'static str,
        Vec<Probe>,
        Option<Result<u64, ()>>,
        Option<(Severity, &'static str)>,
    );

    /// The blank's rules without a disk: one observed target chain per case, and what check says.
    #[test]
    fn what_the_blank_holds_decides_the_diagnostic() {
        let text = "[layout]\ndevice = \"/dev/vda2\"\n[persist]\ndirectories = [\"/var/log\"]\n\
                    files = [\"/etc/issue\", { path = \"/etc/hostid\", how = \"symlink\" }]\n";
        let config = match Config::parse(Path::new("/t.toml"), text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let entries = config.persist.entries();
        let by_target = |t: &str| {
            entries
                .iter()
                .find(|e| e.target() == Path::new(t))
                .unwrap_or_else(|| panic!("no entry {t}"))
        };
        let dir = || found(FileType::Directory, 0);
        let parents = |t: &str| -> Vec<PathBuf> { parents_of(Path::new(t)) };
        let cases: Vec<Case> = vec![
            // Nothing there, or the parent missing: nothing to say.
            ("/var/log", vec![dir(), Probe::Missing], None, None),
            ("/var/log", vec![Probe::Missing], None, None),
            // An empty directory hides nothing; a full one is a warning.
            ("/var/log", vec![dir(), dir()], Some(Ok(0)), None),
            (
                "/var/log",
                vec![dir(), dir()],
                Some(Ok(3)),
                Some((Severity::Warning, "has 3 entries in the blank snapshot")),
            ),
            // A file where a directory is bound, a symlink on the way: every boot refuses.
            (
                "/var/log",
                vec![dir(), found(FileType::File, 1)],
                None,
                Some((Severity::Error, "is not a directory in the blank snapshot")),
            ),
            (
                "/var/log",
                vec![found(FileType::Symlink, 0)],
                None,
                Some((Severity::Error, "will refuse this entry at every boot")),
            ),
            (
                "/etc/issue",
                vec![dir(), found(FileType::File, 8)],
                None,
                Some((Severity::Warning, "has 8 bytes")),
            ),
            (
                "/etc/hostid",
                vec![dir(), found(FileType::File, 8)],
                None,
                Some((Severity::Error, "will not replace it with a symlink")),
            ),
        ];
        for (target, chain, count, want) in cases {
            let o = ObservedEntry {
                target_chain: chain.clone(),
                target_entries: count.map(|c| {
                    c.map_err(|()| crate::persist::observe::Failure {
                        rule: None,
                        message: "unreadable".into(),
                    })
                }),
                ..ObservedEntry::default()
            };
            let got = in_the_blank_snapshot(by_target(target), &o, &parents(target));
            match (want, &got) {
                (None, None) => {}
                (Some((severity, text)), Some((s, message))) => {
                    assert_eq!(*s, severity, "{target} {chain:?}: {message}");
                    assert!(message.contains(text), "{target} {chain:?}: {message}");
                }
                _ => panic!("{target} {chain:?}: expected {want:?}, got {got:?}"),
            }
        }
    }
}
