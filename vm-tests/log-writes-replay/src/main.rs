//! log-writes-replay: reads a dm-log-writes log (see `log.rs` for the format) and replays prefixes of
//! it onto a disk image. A vm-tests tool (scenario 17), not part of tabula.
//!
//! ```text
//! log-writes-replay list LOG                      one line per entry: index flags sector blocks [mark]
//! log-writes-replay mark LOG TEXT                 entries up to and including mark TEXT
//! log-writes-replay points LOG SEED MAX RANDOM    prefixes to check: "n kind last-mark", in order
//! log-writes-replay replay LOG IMAGE FROM TO      write entries FROM..TO onto IMAGE (in place)
//! ```

mod log;

use std::fs::{File, OpenOptions};
use std::process::ExitCode;

use log::Log;

fn usage() -> ExitCode {
    eprintln!(
        "usage: log-writes-replay list LOG | mark LOG TEXT | points LOG SEED MAX_BARRIERS RANDOM | \
         replay LOG IMAGE FROM TO"
    );
    ExitCode::from(2)
}

fn num(s: &str, what: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{what} must be a number, not '{s}'"))
}

fn open_log(path: &str) -> Result<(File, Log), String> {
    let mut f = File::open(path).map_err(|e| format!("opening log '{path}': {e}"))?;
    let log = Log::read(&mut f).map_err(|e| format!("log '{path}': {e}"))?;
    Ok((f, log))
}

fn run(args: &[String]) -> Result<Option<ExitCode>, String> {
    match args {
        [cmd, logp] if cmd == "list" => {
            let (_, log) = open_log(logp)?;
            for e in &log.entries {
                let mark = e.mark.as_deref().unwrap_or("");
                println!(
                    "{} {} {} {} {mark}",
                    e.index,
                    e.flag_names(),
                    e.sector,
                    e.nr_sectors
                );
            }
        }
        [cmd, logp, text] if cmd == "mark" => {
            let (_, log) = open_log(logp)?;
            match log.after_mark(text) {
                Some(n) => println!("{n}"),
                None => return Err(format!("log '{logp}' has no mark '{text}'")),
            }
        }
        [cmd, logp, seed, max, random] if cmd == "points" => {
            let (_, log) = open_log(logp)?;
            let seed = num(seed, "SEED")?;
            let max = num(max, "MAX_BARRIERS")? as usize;
            let random = num(random, "RANDOM")? as usize;
            for p in log::points(&log, seed, max, random) {
                println!("{} {} {}", p.n, p.kind, p.after_mark);
            }
        }
        [cmd, logp, image, from, to] if cmd == "replay" => {
            let (lf, log) = open_log(logp)?;
            let (from, to) = (num(from, "FROM")?, num(to, "TO")?);
            if from > to || to > log.entries.len() as u64 {
                return Err(format!(
                    "entries {from}..{to} are not within the log's {}",
                    log.entries.len()
                ));
            }
            let target = OpenOptions::new()
                .write(true)
                .open(image)
                .map_err(|e| format!("opening image '{image}': {e}"))?;
            log.replay(&lf, &target, from, to)
                .map_err(|e| format!("replaying onto '{image}': {e}"))?;
            target
                .sync_data()
                .map_err(|e| format!("syncing '{image}': {e}"))?;
        }
        _ => return Ok(Some(usage())),
    }
    Ok(None)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(Some(code)) => code,
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("log-writes-replay: {e}");
            ExitCode::FAILURE
        }
    }
}
