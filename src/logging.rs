//! Where tabula's log goes: `/dev/kmsg` in the initrd (terse: the kernel rate-limits), stderr elsewhere.
//! `journalctl -b` shows it either way.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// `/dev/kmsg` when `/etc/initrd-release` exists, stderr otherwise.
    Auto,
    /// The kernel log.
    Kmsg,
    /// Standard error.
    Stderr,
}

/// Whether we run in an initrd (the systemd convention, also followed by dracut/mkinitcpio/our hooks).
pub fn in_initrd() -> bool {
    Path::new("/etc/initrd-release").exists()
}

/// Installs the global subscriber. `debug` lowers the level to DEBUG. Returns whether the log goes to
/// the kernel log (then stderr is free for the user-facing error line).
pub fn init(target: LogTarget, debug: bool) -> bool {
    let level = if debug { Level::DEBUG } else { Level::INFO };
    let use_kmsg = match target {
        LogTarget::Kmsg => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => in_initrd(),
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .without_time()
        .with_target(false);
    let kmsg = use_kmsg && OpenOptions::new().write(true).open("/dev/kmsg").is_ok();
    let result = if kmsg {
        builder
            .with_ansi(false)
            .with_level(false)
            .with_writer(Kmsg)
            .try_init()
    } else {
        builder.with_ansi(false).with_writer(io::stderr).try_init()
    };
    // Already initialised (tests calling twice): keep the first.
    drop(result);
    kmsg
}

/// Writes each event as one `<prio>tabula: …` record.
struct Kmsg;

/// One record in the making; flushed to /dev/kmsg in a single write on drop.
struct KmsgLine {
    prio: u8,
    buf: Vec<u8>,
}

impl Write for KmsgLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for KmsgLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let line = format!("<{}>tabula: {}\n", self.prio, text.trim_end());
        if let Ok(mut f) = OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

impl<'a> MakeWriter<'a> for Kmsg {
    type Writer = KmsgLine;
    fn make_writer(&'a self) -> KmsgLine {
        KmsgLine {
            prio: 6,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> KmsgLine {
        // Syslog priorities; facility 1 (user) so the kernel does not mistake us for itself.
        let prio = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        KmsgLine {
            prio: 8 + prio,
            buf: Vec::new(),
        }
    }
}
