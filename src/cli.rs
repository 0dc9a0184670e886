//! The command line, defined once with clap derive: help, man page and completions all come from here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::init::BlankFrom;
use crate::logging::LogTarget;

/// A clean slate at every boot: btrfs root rollback, a persistence allowlist, and old roots you can
/// inspect, diff, restore from and prune.
#[derive(Debug, Parser)]
#[command(
    name = "tabula",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "TABULA_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Where log messages go: `auto` is the kernel log in an initrd (/etc/initrd-release exists),
    /// stderr elsewhere.
    #[arg(long, global = true, value_enum, default_value_t = LogTarget::Auto)]
    pub log: LogTarget,
    /// Log debug detail (also turned on by `tabula.debug` on the kernel command line).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// How long to wait for another tabula process working on the same filesystem.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "10s")]
    pub lock_wait: std::time::Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// tabula's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the read-only blank, `persist` and `old_roots` subvolumes where missing.
    ///
    /// Runs on a btrfs that already has the root subvolume. Never overwrites or deletes anything.
    Init(InitArgs),
    /// The boot step: retire the live root into `old_roots/` and create a fresh root from the blank.
    ///
    /// Meant for the initrd, before the root is mounted. Crash-safe: rerunning after a power cut at any
    /// point finishes the job. Honours `tabula.skip` and `tabula.boot=<root>` on the kernel command line.
    Rollback(RollbackArgs),
    /// The initrd step after the new root is mounted: bind-mount (or symlink) the allowlist into it.
    ///
    /// Run with `--root /sysroot` after `/sysroot` and `/sysroot/persist` are mounted. Every path is
    /// resolved without following symlinks; one failing entry does not stop the others (exit 1 then).
    Persist(PersistArgs),
    /// Validate the configuration without changing anything; exit 0 only when it is clean.
    ///
    /// Errors exit 2, warnings only exit 1. Also warns when a persisted target already has content in
    /// the blank snapshot that a mount would hide (the blank is found through [layout] when tabula can
    /// read the device, or given with --blank).
    Check(CheckArgs),
    /// The layout found and, per allowlist entry, whether it is correctly in place.
    Status(JsonArg),
    /// Inspect and manage retired roots (previous boots).
    #[command(subcommand)]
    Roots(RootsCommand),
    /// What the live root holds that the blank does not: what the next boot erases.
    ///
    /// The same as `tabula roots diff current`.
    Diff {
        /// As JSON (schema in the README).
        #[arg(long)]
        json: bool,
    },
    /// Copy a file, symlink or directory from a retired root back to the live system.
    ///
    /// Mode, owner, timestamps and xattrs are kept; files are reflinked (sharing their data) when the
    /// destination is on the same btrfs, copied otherwise. Never overwrites without --force, never
    /// follows a symlink at or above the destination.
    Restore(RestoreArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `tabula man | man -l -`.
    Man,
}

/// `tabula roots …`.
///
/// A root is named by its full name (00042-2025-02-08T101503Z), its sequence number (42), -1 (last
/// boot's root), -2, …
#[derive(Debug, Subcommand)]
pub enum RootsCommand {
    /// One line per retired root, newest first.
    ///
    /// Columns: ref (-1…), seq, name, booted, retired, age, pinned, note, kernel. Times from an
    /// untrusted clock are marked with `?`. A table on a terminal, tab-separated otherwise.
    List(JsonArg),
    /// All metadata of one retired root.
    Show {
        /// The root.
        #[arg(allow_negative_numbers = true)]
        root: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mount a retired root read-only where you can look at it (default /run/tabula/roots/<name>).
    Mount {
        /// The root.
        #[arg(allow_negative_numbers = true)]
        root: String,
        /// Where to mount it.
        dir: Option<PathBuf>,
    },
    /// Unmount a retired root mounted by `tabula roots mount`.
    Umount {
        /// The root, or the directory it is mounted on.
        #[arg(allow_negative_numbers = true)]
        target: String,
    },
    /// What a boot wrote: a retired root compared with the blank (or with another root).
    ///
    /// Added, deleted, content changed, metadata changed (mode, owner, xattrs), type changed; mount
    /// points of persisted paths are not changes. Grouped by directory with sizes on a terminal.
    Diff {
        /// The root to look at (default -1, last boot's root; `current` is the live root).
        #[arg(allow_negative_numbers = true, default_value = "-1")]
        root: String,
        /// What to compare it with: `blank` (default) or another root.
        #[arg(long, allow_negative_numbers = true, default_value = "blank")]
        against: String,
        /// As JSON (schema in the README).
        #[arg(long)]
        json: bool,
        /// Stat both trees whole (the reference walk) instead of asking btrfs what changed.
        #[arg(long)]
        walk: bool,
    },
    /// Pin a retired root: pruning never deletes it.
    Pin {
        /// The root.
        #[arg(allow_negative_numbers = true)]
        root: String,
        /// Why (shown by `roots list`).
        #[arg(long)]
        note: Option<String>,
    },
    /// Unpin a retired root.
    Unpin {
        /// The root.
        #[arg(allow_negative_numbers = true)]
        root: String,
    },
    /// Delete one retired root (refuses the newest and pinned ones unless --force).
    Delete {
        /// The root.
        #[arg(allow_negative_numbers = true)]
        root: String,
        /// Delete even if it is the newest or pinned (never if it is mounted or the default subvolume).
        #[arg(long)]
        force: bool,
        /// Say what would be deleted, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete retired roots by the `[retention]` policy; every decision comes with its reasons.
    Prune {
        /// Print the decisions, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the decisions (and outcome) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `tabula persist`.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// The new root (in the initrd: /sysroot; on a running system: /).
    #[arg(long)]
    pub root: PathBuf,
    /// Print the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan (and the outcome) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Copy bind-mounted files that exist in the root but not yet in persistent storage into it, then
    /// mount them (the /etc/machine-id recipe: first boot generates it, `tabula persist --root / --adopt`
    /// keeps it).
    #[arg(long)]
    pub adopt: bool,
}

/// Options of `tabula check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Where users and groups are looked up (its /etc/passwd, /etc/group, then the persistent copies).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// A directory holding the blank snapshot, for the "a mount would hide this" warnings.
    #[arg(long)]
    pub blank: Option<PathBuf>,
}

/// Options of `tabula restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The absolute path to restore, as it was in that boot (e.g. /etc/hosts).
    pub path: PathBuf,
    /// The retired root to restore from (default -1, last boot's root).
    #[arg(long, allow_negative_numbers = true, default_value = "-1")]
    pub from: String,
    /// Where to put it (default: PATH itself on the live system).
    #[arg(long)]
    pub to: Option<PathBuf>,
    /// Replace what is at the destination.
    #[arg(long)]
    pub force: bool,
    /// Print what would be copied, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
}

/// Just `--json`.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// As JSON (schema in the README).
    #[arg(long)]
    pub json: bool,
}

/// Options of `tabula init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// What the blank starts as: `empty` (NixOS) or `current` (a read-only snapshot of the root now).
    #[arg(long, value_enum, default_value_t = BlankFrom::Empty)]
    pub blank_from: BlankFrom,
    /// Print what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `tabula rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Print the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan (and the outcome) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the names of the fault points (test builds with the `fault-injection` feature only).
    #[arg(long)]
    pub list_fault_points: bool,
    /// Apply `[boot] on_failure` to a failure (automatic when /etc/initrd-release exists): "continue"
    /// logs loudly and exits 0 so the untouched old root boots; "emergency" exits non-zero.
    #[arg(long)]
    pub initrd: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_table_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_rollback() {
        let cli = Cli::try_parse_from([
            "tabula",
            "--config",
            "/x.toml",
            "rollback",
            "--dry-run",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.config, PathBuf::from("/x.toml"));
        assert!(matches!(
            cli.command,
            Command::Rollback(RollbackArgs {
                dry_run: true,
                json: true,
                ..
            })
        ));
        let cli = Cli::try_parse_from(["tabula", "init", "--blank-from", "current"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Init(InitArgs {
                blank_from: BlankFrom::Current,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["tabula", "init", "--blank-from", "nope"]).is_err());
    }

    #[test]
    fn parses_roots() {
        let cli = Cli::try_parse_from(["tabula", "roots", "pin", "-1", "--note", "good"]).unwrap();
        assert!(
            matches!(cli.command, Command::Roots(RootsCommand::Pin { ref root, note: Some(_) }) if root == "-1")
        );
        let cli = Cli::try_parse_from(["tabula", "roots", "prune", "--dry-run", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Roots(RootsCommand::Prune {
                dry_run: true,
                json: true
            })
        ));
        assert!(Cli::try_parse_from(["tabula", "roots", "delete"]).is_err());
        assert!(Cli::try_parse_from(["tabula", "completions", "bash"]).is_ok());
    }
}
