//! The command layer: turns parsed arguments into observe → plan → apply, prints results, and logs each
//! failure once. Everything below this module returns errors instead of printing them.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::info;

mod advise;
mod blank;
mod files;
mod persist;
mod persist_sync;
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
        Command::Roots(cmd) => roots::run(&cli, cmd),
        Command::Persist(crate::cli::PersistArgs {
            action: Some(crate::cli::PersistCommand::Add(add)),
            ..
        }) => advise::persist_add(&cli, add),
        Command::Persist(crate::cli::PersistArgs {
            action: Some(crate::cli::PersistCommand::Sync(sync)),
            ..
        }) => persist_sync::sync(&cli, sync),
        Command::Persist(crate::cli::PersistArgs {
            action: Some(crate::cli::PersistCommand::Units { dir }),
            ..
        }) => persist_sync::units(&cli, dir.as_deref()),
        Command::Persist(args) => persist::persist(&cli, args),
        Command::Check(args) => persist::check(&cli, args),
        Command::Status(args) => persist::status(&cli, args),
        Command::Diff { json } => files::diff(&cli, "current", "blank", *json, true),
        Command::Restore(args) => files::restore(&cli, args),
        Command::Advise(args) => advise::advise(&cli, args),
        Command::Orphans(args) => advise::orphans(&cli, args.json),
        Command::Blank(cmd) => blank::run(&cli, cmd),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into a buffer: clap_complete panics when its writer fails (a closed stdout).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "tabula", &mut script);
            std::io::stdout()
                .write_all(&script)
                .context("writing the completion script")?;
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

/// Opens the `old_roots` subvolume of `fs` (refusing when there is none).
pub(crate) fn open_old_roots(fs: &Filesystem) -> Result<OwnedFd> {
    crate::roots::open_old_roots(fs.top.as_fd(), &fs.config.layout)
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
    let found = device::find_filesystem(
        &config.layout.device,
        config.layout.device_timeout,
        config.layout.allow_degraded,
    )?;
    let device = found.device;
    if private {
        mount::enter_private_namespace()?;
    }
    let top = if found.degraded {
        mount::open_detached(&device, "subvolid=5,degraded")?
    } else {
        mount::open_top_level(&device)?
    };
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

/// Standard output behind one buffer: a listing of many lines goes out in a few large writes instead of
/// one per line (stdout's own buffer flushes at every newline). Callers must `flush()` and pass its error
/// on: dropping the buffer would swallow a broken pipe, which `main` turns into a quiet exit 141.
pub(crate) fn buffered_stdout() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock())
}

/// Prints `value` as one `--json` document of `kind` (the envelope of [`crate::json`]).
pub fn print_json<T: Serialize>(kind: &str, value: &T) -> Result<()> {
    let mut out = buffered_stdout();
    crate::json::Document::new(kind, value)
        .write_to(&mut out)
        .context("writing JSON")?;
    out.flush().context("writing JSON")?;
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
    let Err(e) = result else {
        return result;
    };
    if !in_initrd || args.dry_run {
        return Err(e);
    }
    // Say the state the machine is actually in; stop the boot only when there is no fresh root to boot.
    let state = e
        .downcast_ref::<rollback::Failed>()
        .map_or(rollback::State::OldRoot, |f| f.state);
    let default_on_old = e
        .downcast_ref::<rollback::Failed>()
        .is_some_and(|f| f.default_on_old);
    let emergency = on_failure == crate::config::OnFailure::Emergency;
    let (verdict, boots) = match state {
        rollback::State::FreshRoot if default_on_old => (
            format!(
                "rollback incomplete: a fresh root is in place, but the default subvolume is still the old root: \
                 a boot without subvol= lands on the old root as it is; {} (on_failure = \"{}\")",
                if emergency { "stopping the boot" } else { "booting" },
                if emergency { "emergency" } else { "continue" }
            ),
            !emergency,
        ),
        rollback::State::FreshRoot => (
            "rollback incomplete: a fresh root is in place: booting it; the next rollback or prune completes \
             the retirement"
                .to_string(),
            true,
        ),
        rollback::State::NoRoot => (
            "rollback FAILED: there is NO root to boot: stopping the boot".to_string(),
            false,
        ),
        rollback::State::OldRoot | rollback::State::PutBack => {
            let what = if state == rollback::State::PutBack {
                "the old root is back in place: booting it as it is"
            } else {
                "booting the old root as it is"
            };
            if emergency {
                (
                    format!(
                        "rollback FAILED: {}: stopping the boot (on_failure = \"emergency\")",
                        if state == rollback::State::PutBack {
                            "the old root is back in place"
                        } else {
                            "the old root is in place, untouched"
                        }
                    ),
                    false,
                )
            } else {
                (
                    format!("rollback FAILED: {what} (on_failure = \"continue\")"),
                    true,
                )
            }
        }
    };
    tracing::error!("{e:#}");
    tracing::error!("{verdict}");
    if boots {
        eprintln!("tabula: error: {e:#}\ntabula: {verdict}");
        Ok(ExitStatus::Success)
    } else {
        eprintln!("tabula: {verdict}");
        Err(e)
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
    let plan = rollback::observe_and_plan(fs.top.as_fd(), &fs.device, layout, &ctx)?;
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
                Some(name) => {
                    let source = plan.actions.iter().find_map(|a| match a {
                        rollback::Action::Snapshot { source, .. } => Some(source.path()),
                        _ => None,
                    });
                    let how = match source {
                        Some(src) if !plan.fresh => format!("a writable snapshot of '{src}'"),
                        Some(src) => format!("fresh from '{src}'"),
                        None if plan.fresh => format!("fresh from '{}'", layout.blank),
                        None => "the staging root left by an interrupted run".to_string(),
                    };
                    println!(
                        "retired '{}' as '{}/{name}'; '{}' is {how}",
                        layout.root, layout.old_roots, layout.root
                    )
                }
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
        Snapshot { source, staging } => {
            format!("snapshot '{}' as '{staging}' (writable)", source.path())
        }
        Retire { root, name } => format!("move '{root}' to '{}/{name}'", layout.old_roots),
        Promote { staging, root } => format!("rename '{staging}' to '{root}'"),
        WriteMetadata { meta } => {
            format!("write metadata '{}/{}.json'", layout.old_roots, meta.name)
        }
        Freeze { name, .. } => format!("make '{}/{name}' read-only", layout.old_roots),
        DiscardStaging { staging } => format!("delete '{staging}' (not what this run would make)"),
        RecordIntent { intent } => format!(
            "record the intent to retire subvolume {} ({}) as '{}/{}'",
            intent.subvolume_id, intent.uuid, layout.old_roots, intent.name
        ),
        SetDefault { root } => format!("make '{root}' the default subvolume"),
        Sync => "commit".to_string(),
    }
}
