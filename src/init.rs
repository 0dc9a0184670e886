//! `tabula init`: create the blank, `persist` and `old_roots` subvolumes where they are missing.
//! Never overwrites or deletes anything.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::btrfs;
use crate::config::Config;
use crate::error::Refusal;
use crate::fsx;
use crate::layout::{self, Occupant, STAGING_SUFFIX};

/// What the blank starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BlankFrom {
    /// An empty subvolume (NixOS: the system is rebuilt from /nix at every boot).
    Empty,
    /// A read-only snapshot of the root as it is now (distributions whose root holds the OS).
    Current,
}

/// One step of `init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create the blank as an empty read-only subvolume (via a staging name, so a crash never leaves a
    /// writable blank behind).
    CreateEmptyBlank {
        /// The blank's name.
        name: String,
        /// Directories made in it before it is frozen: where the initrd mounts persistent storage.
        mount_points: Vec<std::path::PathBuf>,
    },
    /// Snapshot the root read-only as the blank.
    SnapshotBlank {
        /// The root's name.
        root: String,
        /// The blank's name.
        name: String,
    },
    /// Create an empty subvolume.
    CreateSubvolume {
        /// Its name.
        name: String,
    },
}

/// What `init` will do, and what it leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Steps, in order.
    pub actions: Vec<Action>,
    /// What already exists and is kept (or is in the way).
    pub notes: Vec<String>,
}

/// Decides what `init` does, looking at the top level only.
pub fn plan(top: BorrowedFd<'_>, config: &Config, blank_from: BlankFrom) -> Result<Plan> {
    let layout = &config.layout;
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    if layout::entry_at(top, &layout.root)?.subvolume().is_none() {
        return Err(Refusal::new(
            "root-missing",
            format!(
                "there is no '{}' subvolume in the top level: tabula manages a root subvolume that exists \
                 (install your system into it first, or set [layout] root)",
                layout.root
            ),
        )
        .into());
    }
    match layout::entry_at(top, &layout.blank)? {
        Occupant::Missing => actions.push(match blank_from {
            BlankFrom::Empty => Action::CreateEmptyBlank {
                name: layout.blank.clone(),
                mount_points: vec![config.persist.path.clone()],
            },
            BlankFrom::Current => {
                let root = layout::open_subvolume(top, &layout.root)?;
                let rel = config.persist.path.strip_prefix("/").unwrap_or(&config.persist.path);
                if fsx::open_dir_beneath(root.as_fd(), rel).is_err() {
                    notes.push(format!(
                        "'{}' has no directory '{}': the blank will lack the mount point of persistent storage \
                         (create it in '{}' first, or let the initrd create it before mounting)",
                        layout.root,
                        config.persist.path.display(),
                        layout.root
                    ));
                }
                Action::SnapshotBlank { root: layout.root.clone(), name: layout.blank.clone() }
            }
        }),
        Occupant::Subvolume { info } if info.read_only => notes.push(format!("'{}' exists and is read-only: kept", layout.blank)),
        Occupant::Subvolume { .. } => notes.push(format!(
            "'{}' exists but is writable: kept as it is, but `tabula rollback` will refuse it until it is \
             read-only (`btrfs property set -ts <top>/{} ro true` if it really is your blank)",
            layout.blank, layout.blank
        )),
        Occupant::Other => notes.push(format!("'{}' exists and is not a subvolume: left alone, move it aside", layout.blank)),
    }
    for name in [&layout.persist, &layout.old_roots] {
        match layout::entry_at(top, name)? {
            Occupant::Missing => actions.push(Action::CreateSubvolume { name: name.clone() }),
            Occupant::Subvolume { .. } => notes.push(format!("'{name}' exists: kept")),
            Occupant::Other => notes.push(format!(
                "'{name}' exists and is not a subvolume: left alone, move it aside"
            )),
        }
    }
    Ok(Plan { actions, notes })
}

/// Creates `path` (absolute, inside the subvolume `root`) and missing parents, root:root 0755, without
/// following symlinks (the subvolume was just created empty, but stay careful).
fn make_dirs(root: BorrowedFd<'_>, path: &std::path::Path) -> Result<()> {
    use rustix::fs::{Mode, mkdirat};
    fn open(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> Result<OwnedFd, fsx::Errno> {
        fsx::open_dir_beneath(dir, std::path::Path::new(name)).map_err(|e| e.errno())
    }
    let mut cur = open(root, ".".as_ref())?;
    for c in path.components() {
        let std::path::Component::Normal(name) = c else {
            continue;
        };
        match mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(fsx::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = open(cur.as_fd(), name)?;
    }
    Ok(())
}

/// Executes the plan.
pub fn apply(top: BorrowedFd<'_>, plan: &Plan) -> Result<()> {
    for a in &plan.actions {
        match a {
            Action::CreateEmptyBlank { name, mount_points } => {
                let staging = format!("{name}{STAGING_SUFFIX}");
                if layout::entry_at(top, &staging)?.subvolume().is_none() {
                    btrfs::create_subvolume(top, &staging)?;
                }
                let sub = layout::open_subvolume(top, &staging)?;
                for dir in mount_points {
                    make_dirs(sub.as_fd(), dir)
                        .with_context(|| format!("creating '{}' in '{staging}'", dir.display()))?;
                }
                btrfs::set_read_only(sub.as_fd(), true)?;
                drop(sub);
                fsx::rename_noreplace_at(top, &staging, top, name)
                    .map_err(|e| e.errno())
                    .with_context(|| format!("renaming '{staging}' to '{name}'"))?;
            }
            Action::SnapshotBlank { root, name } => {
                let src = layout::open_subvolume(top, root)?;
                btrfs::snapshot(src.as_fd(), top, name, true)?;
            }
            Action::CreateSubvolume { name } => btrfs::create_subvolume(top, name)?,
        }
    }
    if !plan.actions.is_empty() {
        btrfs::sync(top)?;
    }
    Ok(())
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::CreateEmptyBlank { name, mount_points } => {
                write!(f, "create '{name}': empty, read-only blank")?;
                for m in mount_points {
                    write!(f, " with the mount point '{}'", m.display())?;
                }
                Ok(())
            }
            Action::SnapshotBlank { root, name } => {
                write!(f, "create '{name}': read-only snapshot of '{root}'")
            }
            Action::CreateSubvolume { name } => write!(f, "create subvolume '{name}'"),
        }
    }
}
