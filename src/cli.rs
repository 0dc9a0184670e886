//! The command line, defined once with clap derive: help, man page and completions all come from here.
// The doc comments below are `--help` text, written for a terminal ("[advise]" is a config section,
// "<name>" a placeholder), not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

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
    Status(StatusArgs),
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
    /// What the last boots wrote that the allowlist does not keep, ranked, with entries to add.
    ///
    /// Compares each of the last N retired roots with the blank, groups what they wrote (a service's
    /// directory under /var/lib, a dotfile directory in a home), filters per-boot noise ([advise] in
    /// the config) and names the systemd units that declare those directories. Ends with the
    /// allowlist to paste. Read-only.
    Advise(AdviseArgs),
    /// Data in persistent storage that no allowlist entry covers any more, with sizes and times.
    ///
    /// For cleaning up after removing an entry: lists, never deletes.
    Orphans(JsonArg),
    /// Change the blank (the installed system on Debian, Fedora, Arch) transactionally, keeping the
    /// previous one.
    #[command(subcommand)]
    Blank(BlankCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `tabula man | man -l -`.
    Man,
    /// Write the initrd's systemd drop-ins for the config into DIR, as `tabula-generator DIR` does in
    /// an initrd (for tests and for inspecting them).
    #[command(hide = true)]
    GenerateUnits {
        /// The output directory (a generator's normal directory).
        dir: PathBuf,
    },
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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PersistArgs {
    /// Subcommands on the running system (`add`, `sync`, `units`).
    #[command(subcommand)]
    pub action: Option<PersistCommand>,
    /// The new root (in the initrd: /sysroot; on a running system: /).
    // Required unless a subcommand is given; the default only fills the field then.
    #[arg(long, required = true, default_value = "/", hide_default_value = true)]
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

/// `tabula persist …` subcommands on the running system.
#[derive(Debug, Subcommand)]
pub enum PersistCommand {
    /// Make a path persistent now: copy it into persistent storage, put it in place, add the entry.
    ///
    /// Copies the live path (or, with --from, a retired root's copy) with owner, mode, xattrs and
    /// times (reflinked where possible), adds it to the configuration keeping its comments, and
    /// bind-mounts it (or symlinks a file) over the live path. Refuses a path already covered, a
    /// path processes are using (unless --force), and a configuration it cannot edit (then prints the
    /// NixOS line). A failure half-way leaves the live path as it was.
    Add(PersistAddArgs),
    /// Copy `how = "copy"` files that changed on the live system back into persistent storage.
    ///
    /// Atomic per file (temporary file, fsync, rename, fsync of the directory), never through a
    /// symlink. A file deleted on the live system keeps its persistent copy unless --prune; a file
    /// replaced by a symlink or a non-regular file is refused (exit 1). Run by
    /// tabula-persist-sync.service when a watched file changes, and once more at shutdown.
    Sync(SyncArgs),
    /// Print the systemd path unit that runs `tabula persist sync` when a copied file changes, or
    /// write it (with its paths.target.wants link) into --dir, as a generator does.
    Units {
        /// Write the unit here (a generator's output directory, or /etc/systemd/system).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Options of `tabula persist add`.
#[derive(Debug, Args)]
pub struct PersistAddArgs {
    /// The absolute path to make persistent (a directory or a regular file).
    pub path: PathBuf,
    /// How it is put in place: `bind` (default) or `symlink` (files only).
    #[arg(long, value_parser = ["bind", "symlink"], default_value = "bind")]
    pub how: String,
    /// Copy from a retired root (-1: last boot's frozen copy) instead of the live path.
    #[arg(long, allow_negative_numbers = true)]
    pub from: Option<String>,
    /// The live root (as for `tabula persist`).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Go on although processes use the path (restart them after: their open files are the old ones).
    #[arg(long)]
    pub force: bool,
    /// Print the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan (and the outcome) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `tabula persist sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only these files (each a `how = "copy"` entry, as the live system sees it); default all.
    pub paths: Vec<PathBuf>,
    /// Remove the persistent copy of a file that was deleted on the live system.
    #[arg(long)]
    pub prune: bool,
    /// The running system's root.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Print what would be copied, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
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

/// Options of `tabula advise`.
#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// How many of the newest retired roots to look at.
    #[arg(long, default_value_t = 10)]
    pub boots: usize,
    /// Suggest what at least this many of those boots wrote (default: 2, or 1 when one boot is looked at).
    #[arg(long)]
    pub min_boots: Option<usize>,
    /// Show noise too (no [advise] ignore filtering).
    #[arg(long)]
    pub all: bool,
    /// Read systemd units from this directory instead of the usual ones (repeatable; for chroots).
    #[arg(long)]
    pub unit_dir: Vec<PathBuf>,
    /// As JSON (schema in the README).
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

/// Options of `tabula status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// As JSON (schema in the README).
    #[arg(long)]
    pub json: bool,
    /// The root whose allowlist is judged: `/` on the running system, or a root mounted elsewhere
    /// (from a rescue system, or before switch-root) with its persistent storage mounted in it.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
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
        let cli =
            Cli::try_parse_from(["tabula", "persist", "sync", "/etc/shadow", "--prune"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Persist(PersistArgs {
                action: Some(PersistCommand::Sync(SyncArgs { prune: true, ref paths, .. })),
                ..
            }) if paths == &[PathBuf::from("/etc/shadow")]
        ));
        let cli = Cli::try_parse_from(["tabula", "persist", "--root", "/sysroot"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Persist(PersistArgs {
                action: None,
                ref root,
                ..
            }) if root == &PathBuf::from("/sysroot")
        ));
        assert!(Cli::try_parse_from(["tabula", "persist"]).is_err());
        assert!(Cli::try_parse_from(["tabula", "persist", "units", "--dir", "/run/x"]).is_ok());
        assert!(Cli::try_parse_from(["tabula", "completions", "bash"]).is_ok());
    }
}

/// Where `tabula blank update` starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateFrom {
    /// The current blank.
    Blank,
    /// The live root (minus what is persisted): keep what this boot did.
    Current,
}

/// `tabula blank …`.
#[derive(Debug, Subcommand)]
pub enum BlankCommand {
    /// Run COMMAND in a writable copy of the blank and, if it succeeds, make that the blank for the next
    /// boot; the previous blank is kept (`blank_history`) and `tabula blank rollback` brings it back.
    ///
    /// COMMAND runs chrooted in the copy with /proc, /sys, /dev, a fresh /run and the persisted paths
    /// mounted, in a private mount namespace. A failing COMMAND changes nothing. A power cut at any step
    /// leaves a read-only blank, the old or the new one; the next `blank` command finishes the switch.
    /// Example: `tabula blank update -- apt-get -y full-upgrade`.
    Update {
        /// Start from the blank (default) or the live root (`current`).
        #[arg(long, value_enum, default_value_t = UpdateFrom::Blank)]
        from: UpdateFrom,
        /// Print what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Make the newest retired blank (or NAME) the blank again; the current one is retired.
    Rollback {
        /// A retired blank's name (default: the newest).
        name: Option<String>,
        /// Print what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The current blank and the retired ones, newest first.
    List(JsonArg),
    /// What an update changed: the blank compared with a retired blank (default: the newest).
    Diff {
        /// A retired blank's name.
        old: Option<String>,
        /// As JSON (schema as for `tabula roots diff`).
        #[arg(long)]
        json: bool,
    },
    /// Internal: run a command chrooted in a staged blank (used by `blank update`).
    #[command(hide = true)]
    Exec {
        /// The btrfs device.
        #[arg(long)]
        device: PathBuf,
        /// The staged subvolume's id.
        #[arg(long)]
        subvolid: u64,
        /// Mount with `-o degraded`.
        #[arg(long)]
        degraded: bool,
        /// Live paths to bind at the same place in the chroot.
        #[arg(long)]
        bind: Vec<PathBuf>,
        /// The command.
        #[arg(required = true, last = true, num_args = 1..)]
        command: Vec<String>,
    },
}
