//! The man page, generated from the clap definitions plus the sections clap cannot know.

use clap::CommandFactory;

use crate::cli::Cli;

const EXTRA: &str = r#".SH "KERNEL COMMAND LINE"
.TP
\fBtabula.skip\fR
No rollback this boot: the root of the last boot is used again.
.TP
\fBtabula.boot=\fIROOT\fR
Boot the retired root \fIROOT\fR (-1, a sequence number or a full name) once, as a writable snapshot of it;
the retired root itself stays as it is.
.TP
\fBtabula.debug\fR
Verbose log.
.SH "EXIT STATUS"
.TP
0
Success.
.TP
1
A runtime failure (I/O, ioctl, mount), or some entries of a batch failed.
.TP
2
Bad command line or configuration; nothing was changed.
.TP
3
A safety rule refused; nothing was changed. The message names the rule.
.TP
4
Another tabula process holds the lock on this filesystem.
.SH FILES
.TP
\fI/etc/tabula/tabula.toml\fR
The configuration (override with \fB--config\fR or \fBTABULA_CONFIG\fR).
.TP
\fIold_roots/<seq>-<time>.json\fR
Metadata of each retired root, beside it in the old_roots subvolume.
.SH SAFETY
tabula deletes only subvolumes directly inside the old_roots subvolume (by subvolume id, never by path)
whose metadata matches their id and uuid, that are not pinned, not the newest, not mounted anywhere and
not the default subvolume. It never follows a symlink in persistent storage.
"#;

/// Renders tabula(8) as roff.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    // Each subcommand's options, so the page is complete without `--help`.
    for sub in cmd.get_subcommands() {
        render_subcommand(&mut out, sub, "tabula")?;
    }
    out.extend_from_slice(EXTRA.as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn render_subcommand(out: &mut Vec<u8>, sub: &clap::Command, prefix: &str) -> std::io::Result<()> {
    let name = format!("{prefix} {}", sub.get_name());
    if sub.get_name() == "help" || sub.is_hide_set() {
        return Ok(());
    }
    out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
    if let Some(about) = sub.get_long_about().or(sub.get_about()) {
        out.extend_from_slice(format!("{}\n", roff_escape(&about.to_string())).as_bytes());
    }
    for arg in sub
        .get_arguments()
        .filter(|a| !a.is_global_set() && a.get_id() != "help" && a.get_id() != "version")
    {
        let flag = match (arg.get_long(), arg.get_short()) {
            (Some(l), _) => format!("\\fB--{l}\\fR"),
            (None, Some(s)) => format!("\\fB-{s}\\fR"),
            (None, None) => format!("\\fI{}\\fR", arg.get_id().as_str().to_uppercase()),
        };
        let help = arg
            .get_help()
            .map(|h| roff_escape(&h.to_string()))
            .unwrap_or_default();
        out.extend_from_slice(format!(".TP\n{flag}\n{help}\n").as_bytes());
    }
    for s in sub.get_subcommands() {
        render_subcommand(out, s, &name)?;
    }
    Ok(())
}

fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn man_page_has_every_command_and_the_exit_codes() {
        let page = String::from_utf8(super::man_page().unwrap()).unwrap();
        for needle in [
            "TABULA ROLLBACK",
            "TABULA ROOTS PRUNE",
            "EXIT STATUS",
            "tabula.skip",
            "--blank-from",
        ] {
            assert!(page.contains(needle), "{needle} missing from the man page");
        }
    }
}
