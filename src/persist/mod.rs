//! Persistence: bind-mount (or symlink, or copy) the allowlist from persistent storage into a fresh root.
//!
//! The `rollback` shape: [`observe()`] reads the new root and persistent storage (never writes) into plain
//! data ([`Observed`]: per entry, the stat chains of source and target, mount flags, resolved users);
//! [`plan_observed`] decides from that alone, per entry, one [`State`] and the operations needed (every
//! rule is a unit test without a disk); [`apply`] performs them one entry at a time, resolving each path
//! again before each change, so a failing entry does not stop the others. [`status`] judges the same
//! observation of a running system and [`plan_sync`] decides from it what to copy back, both into the
//! same record ([`PlannedEntry`], one [`State`]); `check --blank` asks the same rules ([`in_the_way`],
//! [`Hidden`]) of the blank snapshot. Every path is resolved without following symlinks ([`walk`]):
//! persistent storage holds user-writable trees, and a planted symlink must never redirect a root-owned
//! chown, chmod, mkdir or mount.
//!
//! Ownership rules (documented in `docs/persistence.md`):
//! - a source tabula creates gets the entry's `user`/`group`/`mode`, by default root:root (a user's entries:
//!   the user and their primary group) with 0755 for directories and 0644 for files; `user`, `group` and
//!   `mode` written in the config are also enforced on an existing source at every run; defaults are not
//!   (an existing `0600` key is never loosened to `0644`);
//! - missing parents of a source: root:root 0755, except a configured home (the user, 0700) and anything
//!   inside a home (the user, 0700);
//! - missing parents of a target, and the target itself, copy owner and mode of the matching source path,
//!   so the view is right before the mount makes it visible.

mod apply;
mod copy;
pub(crate) mod mountinfo;
pub mod observe;
mod plan;
pub mod prepare;
mod status;
mod sync;
mod units;
pub mod walk;

use std::path::PathBuf;

use serde::{Serialize, Serializer};

pub use crate::config::{How, Kind};
pub use apply::{Report, apply};
pub use copy::replaced_by_rename;
pub use observe::{Observed, observe};
pub use plan::{
    Hidden, InTheWay, PlanOptions, in_the_way, plan, plan_observed, plan_running_system, plan_with,
};
pub(crate) use plan::{entries_word, parents_of, resolve};
pub use status::{Shadow, status, status_label, status_observed};
pub use sync::{
    Found, RULE_NOT_REGULAR, SyncOptions, SyncPlan, apply_sync, decide, plan_sync, sync_action,
};
pub use units::{PATH_UNIT, copy_path_units, write_units};

/// Permission bits, serialised as an octal string such as `"0755"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms(pub u32);

impl Serialize for Perms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// One operation of a plan. Paths are absolute inside the new root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a directory with this owner and mode (left alone if one exists by then).
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Permission bits.
        mode: Perms,
    },
    /// Create an empty regular file to mount a file on.
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Permission bits.
        mode: Perms,
    },
    /// Bring an existing source to the owner/mode written in the config.
    SetOwnerMode {
        /// The source.
        path: PathBuf,
        /// New owner, if it changes.
        uid: Option<u32>,
        /// New group, if it changes.
        gid: Option<u32>,
        /// New permission bits, if they change.
        mode: Option<Perms>,
    },
    /// Copy a file that exists only in the root into persistent storage (`--adopt`).
    Adopt {
        /// The file in the root.
        from: PathBuf,
        /// The new source.
        to: PathBuf,
        /// Owner of the copy.
        uid: u32,
        /// Group of the copy.
        gid: u32,
        /// Permission bits of the copy.
        mode: Perms,
    },
    /// Bind-mount the source on the target.
    Bind {
        /// In persistent storage.
        source: PathBuf,
        /// In the new root.
        target: PathBuf,
    },
    /// Replace the target with a copy of the source (`how = "copy"`): owner, mode, xattrs and times of the
    /// source, reflinked where possible, renamed into place.
    CopyIn {
        /// In persistent storage.
        source: PathBuf,
        /// In the new root.
        target: PathBuf,
    },
    /// `tabula persist sync`: copy the live file over its persistent copy (owner, mode, xattrs, times),
    /// through a temporary file renamed into place.
    CopyBack {
        /// The live file (the entry's target).
        from: PathBuf,
        /// Its persistent copy (the entry's source).
        to: PathBuf,
    },
    /// `tabula persist sync --prune`: remove the persistent copy of a file deleted on the live system.
    RemoveCopy {
        /// The persistent copy.
        path: PathBuf,
    },
    /// Create a symlink at `path` pointing at `points_to` (the source as the running system sees it).
    Symlink {
        /// The link.
        path: PathBuf,
        /// Where it points.
        points_to: PathBuf,
        /// Owner of the link.
        uid: u32,
        /// Group of the link.
        gid: u32,
    },
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Mkdir {
                path,
                uid,
                gid,
                mode,
            } => write!(
                f,
                "create directory '{}' ({uid}:{gid} {mode})",
                path.display()
            ),
            Op::CreateFile {
                path,
                uid,
                gid,
                mode,
            } => {
                write!(
                    f,
                    "create empty file '{}' ({uid}:{gid} {mode})",
                    path.display()
                )
            }
            Op::SetOwnerMode {
                path,
                uid,
                gid,
                mode,
            } => {
                write!(f, "set")?;
                if let Some(u) = uid {
                    write!(f, " owner {u}")?;
                }
                if let Some(g) = gid {
                    write!(f, " group {g}")?;
                }
                if let Some(m) = mode {
                    write!(f, " mode {m}")?;
                }
                write!(f, " on '{}'", path.display())
            }
            Op::Adopt {
                from,
                to,
                uid,
                gid,
                mode,
            } => {
                write!(
                    f,
                    "copy '{}' to '{}' ({uid}:{gid} {mode})",
                    from.display(),
                    to.display()
                )
            }
            Op::Bind { source, target } => write!(
                f,
                "bind-mount '{}' on '{}'",
                source.display(),
                target.display()
            ),
            Op::CopyIn { source, target } => write!(
                f,
                "copy '{}' to '{}' (owner, mode, xattrs, times)",
                source.display(),
                target.display()
            ),
            Op::CopyBack { from, to } => write!(
                f,
                "copy '{}' back to '{}' (owner, mode, xattrs, times)",
                from.display(),
                to.display()
            ),
            Op::RemoveCopy { path } => write!(f, "remove '{}'", path.display()),
            Op::Symlink {
                path, points_to, ..
            } => {
                write!(
                    f,
                    "symlink '{}' -> '{}'",
                    path.display(),
                    points_to.display()
                )
            }
        }
    }
}

/// Where one entry stands: planned (`ready`), then applied (`done`), or settled by the plan. The one
/// state of `tabula persist`, `tabula status` (see [`status_label`]) and `tabula persist sync` (see
/// [`sync_action`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Operations to perform.
    Ready,
    /// Its operations were performed; it is in place.
    Done,
    /// Already in place: nothing to do (for a sync: the persistent copy is current, or is kept after
    /// the live file was deleted, see the message).
    InPlace,
    /// A bind-mounted or copied file without a source: nothing is done this boot (see the message); for
    /// a sync, neither the live file nor a persistent copy exists.
    SourceMissing,
    /// A safety rule refused the entry (a symlink or a hard link on the way).
    Refused,
    /// The entry cannot be done (a user that does not resolve, a file where a directory should be, ...).
    Failed,
}

impl State {
    /// Refused or failed.
    pub fn is_failure(self) -> bool {
        matches!(self, State::Refused | State::Failed)
    }
}

/// One allowlist entry: of a plan, of the report of applying it, or of `tabula status` (the same rules
/// read on a running system, with the facts only a status has: `problems`, `synced`, `shadow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedEntry {
    /// Where it appears in the new root.
    pub target: PathBuf,
    /// Where it lives in persistent storage (inside the new root).
    pub source: PathBuf,
    /// Directory or file.
    pub kind: Kind,
    /// Bind mount or symlink.
    pub how: How,
    /// The verdict.
    pub state: State,
    /// The refusal rule, for refused entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// Why it failed or was refused, or how a missing source becomes persistent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What to do, in order.
    pub ops: Vec<Op>,
    /// Operations performed, for an applied entry (those that found the work already done are not
    /// listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
    /// Things the user should know (data a mount will hide).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Status only: how the source differs from what the config says (owner, mode), and a copy not
    /// synced yet; none of them makes the entry not in place.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Status and sync, for copies (`how = "copy"`) with a live file: whether it equals its persistent
    /// copy (owner, mode, content); `false` means `tabula persist sync` has changes to copy back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synced: Option<bool>,
    /// Status only, for bind mounts in place: what the mount hides in the root underneath it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
}

impl PlannedEntry {
    /// An entry with nothing decided yet: `ready`, no operations, no message.
    pub fn new(target: PathBuf, source: PathBuf, kind: Kind, how: How) -> PlannedEntry {
        PlannedEntry {
            target,
            source,
            kind,
            how,
            state: State::Ready,
            rule: None,
            message: None,
            ops: Vec::new(),
            done: Vec::new(),
            warnings: Vec::new(),
            problems: Vec::new(),
            synced: None,
            shadow: None,
        }
    }

    /// Settles the entry as refused (when a safety rule said no) or failed, with nothing to do.
    pub(crate) fn settle_failure(&mut self, f: observe::Failure) {
        self.state = if f.rule.is_some() {
            State::Refused
        } else {
            State::Failed
        };
        self.rule = f.rule;
        self.message = Some(f.message);
        self.ops.clear();
    }
}

/// Everything `tabula persist` would do (or did: [`Report`]); inside a [`SyncPlan`], what `tabula persist
/// sync` would do or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The root (`/sysroot` in the initrd, `/` on the running system).
    pub root: PathBuf,
    /// Persistent storage inside it (`/persist`).
    pub persist: PathBuf,
    /// Entries, parents before children.
    pub entries: Vec<PlannedEntry>,
}

impl Plan {
    /// Number of refused or failed entries.
    pub fn failed(&self) -> usize {
        self.entries.iter().filter(|e| e.state.is_failure()).count()
    }

    /// `Some` when some entries were refused or failed: the error for the exit status.
    pub fn partial_failure(&self) -> Option<crate::error::PartialFailure> {
        crate::error::PartialFailure::of(self.failed(), self.entries.len())
    }

    /// Human-readable listing for `--dry-run`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "persist into '{}' from '{}':",
            self.root.display(),
            self.persist.display()
        );
        for e in &self.entries {
            let state = match e.state {
                State::Ready => "to do",
                State::Done => "done",
                State::InPlace => "in place",
                State::SourceMissing => "source missing",
                State::Refused => "REFUSED",
                State::Failed => "FAILED",
            };
            let _ = writeln!(s, "{} [{state}]", e.target.display());
            for op in &e.ops {
                let _ = writeln!(s, "    {op}");
            }
            if let Some(m) = &e.message {
                let _ = writeln!(s, "    {m}");
            }
            for w in &e.warnings {
                let _ = writeln!(s, "    warning: {w}");
            }
        }
        s
    }
}
