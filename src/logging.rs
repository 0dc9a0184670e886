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
        builder.with_ansi(false).with_writer(Stderr).try_init()
    };
    // Already initialised (tests calling twice): keep the first.
    drop(result);
    kmsg
}

/// `text` with its control characters (newline, escape, bell, …) written as `\xNN`, the diff's escape:
/// a path in a log or error line can then neither forge a second line nor drive the terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Writes each event to stderr as one line, control characters escaped.
struct Stderr;

/// One stderr line in the making; written, escaped, in one write on drop.
struct StderrLine(Vec<u8>);

impl Write for StderrLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let line = format!("{}\n", escape_controls(text.trim_end_matches('\n')));
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrLine;
    fn make_writer(&'a self) -> StderrLine {
        StderrLine(Vec::new())
    }
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
        let line = format!(
            "<{}>tabula: {}\n",
            self.prio,
            escape_controls(text.trim_end())
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("/var/log"), "/var/log");
        assert_eq!(
            escape_controls("a\x1b[2J\nb\u{7}\u{85}é"),
            "a\\x1b[2J\\x0ab\\x07\\xc2\\x85é"
        );
    }
}
