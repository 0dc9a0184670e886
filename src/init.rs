//! `tabula init`: create the blank, `persist` and `old_roots` subvolumes where they are missing.
//! Never overwrites or deletes anything.

use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::btrfs;
use crate::config::Layout;
use crate::error::Refusal;
use crate::layout::{self, Entry, STAGING_SUFFIX};

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
pub fn plan(top: BorrowedFd<'_>, layout: &Layout, blank_from: BlankFrom) -> Result<Plan> {
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
        Entry::Missing => actions.push(match blank_from {
            BlankFrom::Empty => Action::CreateEmptyBlank { name: layout.blank.clone() },
            BlankFrom::Current => Action::SnapshotBlank { root: layout.root.clone(), name: layout.blank.clone() },
        }),
        Entry::Subvolume { info } if info.read_only => notes.push(format!("'{}' exists and is read-only: kept", layout.blank)),
        Entry::Subvolume { .. } => notes.push(format!(
            "'{}' exists but is writable: kept as it is, but `tabula rollback` will refuse it until it is \
             read-only (`btrfs property set -ts <top>/{} ro true` if it really is your blank)",
            layout.blank, layout.blank
        )),
        Entry::Other => notes.push(format!("'{}' exists and is not a subvolume: left alone, move it aside", layout.blank)),
    }
    for name in [&layout.persist, &layout.old_roots] {
        match layout::entry_at(top, name)? {
            Entry::Missing => actions.push(Action::CreateSubvolume { name: name.clone() }),
            Entry::Subvolume { .. } => notes.push(format!("'{name}' exists: kept")),
            Entry::Other => notes.push(format!(
                "'{name}' exists and is not a subvolume: left alone, move it aside"
            )),
        }
    }
    Ok(Plan { actions, notes })
}

/// Executes the plan.
pub fn apply(top: BorrowedFd<'_>, plan: &Plan) -> Result<()> {
    for a in &plan.actions {
        match a {
            Action::CreateEmptyBlank { name } => {
                let staging = format!("{name}{STAGING_SUFFIX}");
                if layout::entry_at(top, &staging)?.subvolume().is_none() {
                    btrfs::create_subvolume(top, &staging)?;
                }
                let sub = layout::open_subvolume(top, &staging)?;
                btrfs::set_read_only(sub.as_fd(), true)?;
                drop(sub);
                layout::rename_noreplace(top, &staging, top, name)
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
            Action::CreateEmptyBlank { name } => {
                write!(f, "create '{name}': empty, read-only blank")
            }
            Action::SnapshotBlank { root, name } => {
                write!(f, "create '{name}': read-only snapshot of '{root}'")
            }
            Action::CreateSubvolume { name } => write!(f, "create subvolume '{name}'"),
        }
    }
}
