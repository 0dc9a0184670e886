//! The `tabula` binary: parse, set up logging, call the library, map the outcome to an exit status.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
        Err(err) => {
            if to_kmsg {
                tracing::error!("{err:#}");
            }
            eprintln!("tabula: error: {err:#}");
            ExitCode::from(tabula::error::exit_status(&err) as u8)
        }
    }
}
