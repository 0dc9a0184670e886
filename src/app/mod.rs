//! The command layer: turns parsed arguments into observe → plan → apply, prints results, and logs each
//! failure once. Everything below this module returns errors instead of printing them.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::info;

mod files;
mod persist;
mod roots;

use crate::cli::{Cli, Command, InitArgs, RollbackArgs};
use crate::config::Config;
use crate::error::{ExitStatus, UsageError};
use crate::{device, fault, init, lock, mount, rollback};

/// Runs one command.
pub fn run(cli: Cli) -> Result<ExitStatus> {
    match &cli.command {
        Command::Init(args) => cmd_init(&cli, args),
        Command::Rollback(args) => cmd_rollback(&cli, args),
        Command::Roots(crate::cli::RootsCommand::Diff {
            root,
            against,
            json,
        }) => files::diff(&cli, root, against, *json),
        Command::Roots(cmd) => roots::run(&cli, cmd),
        Command::Persist(args) => persist::persist(&cli, args),
        Command::Check(args) => persist::check(&cli, args),
        Command::Status(args) => persist::status(&cli, args.json),
        Command::Diff { json } => files::diff(&cli, "current", "blank", *json),
        Command::Restore(args) => files::restore(&cli, args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "tabula", &mut std::io::stdout());
            Ok(ExitStatus::Success)
        }
        Command::GenerateUnits { dir } => {
            crate::generator::write_units(&cli.config, dir)?;
            Ok(ExitStatus::Success)
        }
        Command::Man => {
            let page = crate::docs::man_page().context("rendering the man page")?;
            std::io::stdout()
                .write_all(&page)
                .context("writing the man page")?;
            Ok(ExitStatus::Success)
        }
    }
}

/// The btrfs filesystem opened for a command: top level mounted privately, optionally locked.
pub struct Filesystem {
    /// The validated configuration.
    pub config: Config,
    /// The device it lives on.
    pub device: PathBuf,
    /// The top level (subvolid=5), private to this process.
    pub top: OwnedFd,
    _lock: Option<lock::FsLock>,
}

/// Loads the configuration named on the command line.
pub fn load_config(cli: &Cli) -> Result<Config> {
    Ok(Config::load(&cli.config)?)
}

/// Finds the device, enters a private mount namespace, mounts the top level and (if `lock_wait`) locks it.
pub fn open_filesystem(config: Config, lock_wait: Option<Duration>) -> Result<Filesystem> {
    open_filesystem_in(config, lock_wait, true)
}

/// As [`open_filesystem`]; with `private` false the process stays in the caller's mount namespace (for
/// commands that mount something the user must see), and the top level is only mounted transiently.
pub fn open_filesystem_in(
    config: Config,
    lock_wait: Option<Duration>,
    private: bool,
) -> Result<Filesystem> {
    let device = device::resolve(&config.layout.device, config.layout.device_timeout)?;
    if private {
        mount::enter_private_namespace()?;
    }
    let top = mount::open_top_level(&device)?;
    let lock = match lock_wait {
        Some(wait) => Some(lock::lock_filesystem(
            top.as_fd(),
            &device.display().to_string(),
            wait,
        )?),
        None => None,
    };
    Ok(Filesystem {
        config,
        device,
        top,
        _lock: lock,
    })
}

/// Prints `value` as one JSON document with a top-level `"version": 1`.
pub fn print_json<T: Serialize>(kind: &str, value: &T) -> Result<()> {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        version: u32,
        kind: &'a str,
        #[serde(flatten)]
        value: &'a T,
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(
        &mut out,
        &Envelope {
            version: 1,
            kind,
            value,
        },
    )
    .context("writing JSON")?;
    writeln!(out).context("writing JSON")?;
    Ok(())
}

fn cmd_init(cli: &Cli, args: &InitArgs) -> Result<ExitStatus> {
    let fs = open_filesystem(load_config(cli)?, (!args.dry_run).then_some(cli.lock_wait))?;
    let plan = init::plan(fs.top.as_fd(), &fs.config, args.blank_from)?;
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            device: &'a PathBuf,
            dry_run: bool,
            plan: &'a init::Plan,
        }
        print_json(
            "init",
            &Out {
                device: &fs.device,
                dry_run: args.dry_run,
                plan: &plan,
            },
        )?;
    }
    if !args.dry_run {
        init::apply(fs.top.as_fd(), &plan)?;
    }
    if !args.json {
        let verb = if args.dry_run { "would" } else { "did" };
        for a in &plan.actions {
            println!("{verb}: {a}");
        }
        for n in &plan.notes {
            println!("{n}");
        }
        if plan.actions.is_empty() {
            println!(
                "nothing to do: the layout on {} is complete",
                fs.device.display()
            );
        }
    }
    Ok(ExitStatus::Success)
}

fn cmd_rollback(cli: &Cli, args: &RollbackArgs) -> Result<ExitStatus> {
    if args.list_fault_points {
        if !fault::ENABLED {
            return Err(UsageError(
                "this build has no fault points (they exist only with the `fault-injection` cargo feature)".into(),
            )
            .into());
        }
        for p in rollback::fault_points() {
            println!("{p}");
        }
        return Ok(ExitStatus::Success);
    }
    let in_initrd = args.initrd || crate::logging::in_initrd();
    let config = load_config(cli);
    let on_failure = config
        .as_ref()
        .map(|c| c.boot.on_failure)
        .unwrap_or_default();
    let result = config.and_then(|config| rollback_with(config, cli, args));
    match result {
        Err(e)
            if in_initrd && !args.dry_run && on_failure == crate::config::OnFailure::Continue =>
        {
            tracing::error!("{e:#}");
            tracing::error!(
                "rollback FAILED: booting the old root as it is (on_failure = \"continue\")"
            );
            eprintln!(
                "tabula: error: {e:#}\ntabula: rollback FAILED: booting the old root as it is (on_failure = \"continue\")"
            );
            Ok(ExitStatus::Success)
        }
        other => other,
    }
}

fn rollback_with(config: Config, cli: &Cli, args: &RollbackArgs) -> Result<ExitStatus> {
    let flags = fault::boot_flags();
    let fs = open_filesystem(config, (!args.dry_run).then_some(cli.lock_wait))?;
    let layout = &fs.config.layout;
    let ctx = rollback::BootContext {
        now: fault::now(),
        boot_id: device::boot_id(),
        kernel: device::kernel_release(),
        flags: flags.clone(),
    };
    let observed = rollback::observe(fs.top.as_fd(), layout, &flags)?;
    let plan = rollback::plan(&observed, layout, &ctx)?;
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            device: &'a PathBuf,
            dry_run: bool,
            plan: &'a rollback::Plan,
        }
        print_json(
            "rollback",
            &Out {
                device: &fs.device,
                dry_run: args.dry_run,
                plan: &plan,
            },
        )?;
    } else if args.dry_run {
        for n in &plan.notes {
            println!("{n}");
        }
        for a in &plan.actions {
            println!("would: {}", describe(a, layout));
        }
    }
    for n in &plan.notes {
        info!("{n}");
    }
    if !args.dry_run {
        rollback::apply(fs.top.as_fd(), layout, &plan)
            .with_context(|| format!("rolling back the root on {}", fs.device.display()))?;
        if !args.json {
            match &plan.retire_as {
                Some(name) => println!(
                    "retired '{}' as '{}/{name}'; '{}' is fresh from '{}'",
                    layout.root, layout.old_roots, layout.root, layout.blank
                ),
                None if plan.actions.is_empty() => println!("nothing to do"),
                None => println!(
                    "finished an interrupted rollback; '{}' is in place",
                    layout.root
                ),
            }
        }
    }
    Ok(ExitStatus::Success)
}

fn describe(a: &rollback::Action, layout: &crate::config::Layout) -> String {
    use rollback::Action::*;
    match a {
        Snapshot { source, staging } => format!("snapshot '{source}' as '{staging}' (writable)"),
        Retire { root, name } => format!("move '{root}' to '{}/{name}'", layout.old_roots),
        Promote { staging, root } => format!("rename '{staging}' to '{root}'"),
        WriteMetadata { meta } => {
            format!("write metadata '{}/{}.json'", layout.old_roots, meta.name)
        }
        Freeze { name } => format!("make '{}/{name}' read-only", layout.old_roots),
        Sync => "commit".to_string(),
    }
}
