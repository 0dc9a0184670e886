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
}
