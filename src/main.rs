//! The `tabula` binary: parse, set up logging, call the library, map the outcome to an exit status.

use std::process::ExitCode;

use clap::Parser;

/// The status of a writer whose reader went away (`tabula roots list | head -1`): 128 + SIGPIPE, what
/// a shell reports for programs that die of SIGPIPE, without the noise.
const READER_GONE: u8 = 141;

fn main() -> ExitCode {
    quiet_when_stdout_is_gone();
    tabula::limits::raise_fd_limit();
    // Installed as a systemd generator link too (`tabula-generator NORMAL EARLY LATE`).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .first()
        .is_some_and(|a| tabula::generator::is_generator_name(a))
    {
        return ExitCode::from(tabula::generator::main_from_args(&args));
    }
    let cli = tabula::cli::Cli::parse();
    let debug = cli.verbose || tabula::fault::boot_flags().debug;
    let to_kmsg = tabula::logging::init(cli.log, debug);
    match tabula::app::run(cli) {
        Ok(status) => ExitCode::from(status as u8),
        Err(err) if broken_pipe(&err) && tabula::limits::reader_gone(std::io::stdout()) => {
            ExitCode::from(READER_GONE)
        }
        Err(err) => {
            if to_kmsg {
                tracing::error!("{err:#}");
            }
            let msg = format!("{err:#}");
            eprintln!("tabula: error: {}", tabula::logging::escape_controls(&msg));
            ExitCode::from(tabula::error::exit_status(&err) as u8)
        }
    }
}

/// `print!` panics when stdout fails; when that is because the reader left, end quietly instead (the
/// release build aborts on panic, and a core dump for `| head` would be absurd).
fn quiet_when_stdout_is_gone() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("stdout") && tabula::limits::reader_gone(std::io::stdout()) {
            std::process::exit(READER_GONE.into());
        }
        default(info);
    }));
}

/// Whether the error is a write that failed because the reader left (any other error is reported,
/// even when stdout is gone too: stderr may still be read).
fn broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
    })
}
