//! Where tabula's log goes: `/dev/kmsg` in the initrd (terse: the kernel rate-limits), stderr elsewhere.
//! `journalctl -b` shows it either way.

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber, span};

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
    let max = if debug { Level::DEBUG } else { Level::INFO };
    let use_kmsg = match target {
        LogTarget::Kmsg => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => in_initrd(),
    };
    let kmsg = use_kmsg && OpenOptions::new().write(true).open("/dev/kmsg").is_ok();
    // Already initialised (tests calling twice): keep the first.
    let _ = tracing::subscriber::set_global_default(Logger { max, kmsg });
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

/// The global subscriber: one line per event, no spans, no time (the journal and the kernel log
/// stamp lines themselves). A few dozen lines instead of tracing-subscriber's formatting machinery,
/// for the size of the static binary; the lines read as tracing-subscriber's `fmt` wrote them.
struct Logger {
    max: Level,
    /// Kernel log records (`<prio>tabula: message`) instead of stderr lines (`LEVEL message`).
    kmsg: bool,
}

impl Subscriber for Logger {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= self.max
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.max))
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = self.render(event);
        if self.kmsg {
            if let Ok(mut f) = OpenOptions::new().write(true).open("/dev/kmsg") {
                let _ = f.write_all(line.as_bytes());
            }
        } else {
            let _ = io::stderr().write_all(line.as_bytes());
        }
    }
}

impl Logger {
    /// The event as one line (written in a single write), control characters escaped.
    fn render(&self, event: &Event<'_>) -> String {
        let mut text = String::new();
        event.record(&mut Fields(&mut text));
        let level = *event.metadata().level();
        if self.kmsg {
            // Syslog priorities; facility 1 (user) so the kernel does not mistake us for itself.
            let prio = match level {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                _ => 7,
            };
            format!(
                "<{}>tabula: {}\n",
                8 + prio,
                escape_controls(text.trim_end())
            )
        } else {
            let line = format!("{:>5} {}", level.as_str(), text);
            format!("{}\n", escape_controls(line.trim_end_matches('\n')))
        }
    }
}

/// An event's fields: the message, then ` name=value` for the others.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = match name {
            "message" => write!(self.0, "{value:?}"),
            name => write!(
                self.0,
                "{}={value:?}",
                name.strip_prefix("r#").unwrap_or(name)
            ),
        };
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what the logger would write.
    struct Capture(Logger, std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Subscriber for Capture {
        fn enabled(&self, meta: &Metadata<'_>) -> bool {
            self.0.enabled(meta)
        }
        fn new_span(&self, a: &span::Attributes<'_>) -> span::Id {
            self.0.new_span(a)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            self.1.lock().unwrap().push(self.0.render(event));
        }
    }

    fn lines(kmsg: bool, max: Level, log: impl FnOnce()) -> Vec<String> {
        let out = std::sync::Arc::default();
        let sub = Capture(Logger { max, kmsg }, std::sync::Arc::clone(&out));
        tracing::subscriber::with_default(sub, log);
        out.lock().unwrap().clone()
    }

    /// The lines tracing-subscriber's `fmt` wrote (without time and target), and the kernel log's.
    #[test]
    fn lines_read_as_before() {
        let log = || {
            tracing::info!("rolled back to '{}'", "root");
            tracing::warn!(count = 3, name = "x", "two\nlines");
            tracing::debug!("hidden at INFO");
            tracing::error!("failed");
        };
        assert_eq!(
            lines(false, Level::INFO, log),
            [
                " INFO rolled back to 'root'\n",
                " WARN two\\x0alines count=3 name=\"x\"\n",
                "ERROR failed\n"
            ]
        );
        assert_eq!(
            lines(true, Level::DEBUG, log),
            [
                "<14>tabula: rolled back to 'root'\n",
                "<12>tabula: two\\x0alines count=3 name=\"x\"\n",
                "<15>tabula: hidden at INFO\n",
                "<11>tabula: failed\n"
            ]
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("/var/log"), "/var/log");
        assert_eq!(
            escape_controls("a\x1b[2J\nb\u{7}\u{85}é"),
            "a\\x1b[2J\\x0ab\\x07\\xc2\\x85é"
        );
    }
}
