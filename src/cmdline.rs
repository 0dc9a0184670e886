//! tabula's switches on the kernel command line: `tabula.skip`, `tabula.boot=<root>`, `tabula.debug`.

use serde::Serialize;

/// What the kernel command line asks of tabula.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootFlags {
    /// `tabula.skip`: no rollback this boot.
    pub skip: bool,
    /// `tabula.boot=<root>`: boot that retired root once, as a writable snapshot.
    pub boot: Option<String>,
    /// `tabula.debug`: verbose logging.
    pub debug: bool,
}

impl BootFlags {
    /// Parses a command line (space-separated; quoted values are not used by our switches).
    pub fn parse(cmdline: &str) -> BootFlags {
        let mut f = BootFlags::default();
        for word in cmdline.split_ascii_whitespace() {
            match word.split_once('=') {
                None if word == "tabula.skip" => f.skip = true,
                None if word == "tabula.debug" => f.debug = true,
                Some(("tabula.skip", v)) => f.skip = !matches!(v, "0" | "no" | "false"),
                Some(("tabula.debug", v)) => f.debug = !matches!(v, "0" | "no" | "false"),
                Some(("tabula.boot", v)) if !v.is_empty() => f.boot = Some(v.to_string()),
                _ => {}
            }
        }
        f
    }

    /// Reads `/proc/cmdline` (empty flags when unreadable, e.g. outside Linux).
    pub fn from_proc() -> BootFlags {
        std::fs::read_to_string("/proc/cmdline")
            .map(|s| BootFlags::parse(&s))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches() {
        let f = BootFlags::parse(
            "root=/dev/vda rootflags=subvol=root tabula.skip quiet tabula.boot=-1",
        );
        assert!(f.skip && !f.debug);
        assert_eq!(f.boot.as_deref(), Some("-1"));
        let f = BootFlags::parse("tabula.debug tabula.skip=0 notabula.skip");
        assert!(f.debug && !f.skip);
        assert_eq!(BootFlags::parse("tabula.boot="), BootFlags::default());
    }
}
