//! Text renderings of a [`Diff`]: grouped by directory for people, tab-separated for scripts.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Change, ChangeKind, ChangedPath, Diff, FileType, Node};

/// Entries are grouped under their parent directory cut to this many components (`/var/log`).
pub const GROUP_DEPTH: usize = 2;

/// Bytes as text: valid UTF-8 stays (except controls and `\`), anything else becomes `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn esc(p: &Path) -> String {
    escape_bytes(p.as_os_str().as_bytes())
}

/// `1536` → `1.5 KiB` (IEC units; plain bytes below 1 KiB).
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One line per entry, for scripts and pipes:
/// `status<TAB>kind<TAB>old_type<TAB>new_type<TAB>old_size<TAB>new_size<TAB>path`, `-` for a missing
/// side, status as in [`ChangedPath::symbols`], path escaped as in [`escape_bytes`].
pub fn render_tsv(diff: &Diff) -> String {
    let mut out = String::new();
    for e in &diff.entries {
        let ty = |n: &Option<Node>| {
            n.as_ref()
                .map_or("-".to_string(), |n| n.file_type.name().to_string())
        };
        let size = |n: &Option<Node>| n.as_ref().map_or("-".to_string(), |n| n.size.to_string());
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            e.symbols(),
            kind_name(e.kind),
            ty(&e.old),
            ty(&e.new),
            size(&e.old),
            size(&e.new),
            esc(&e.path)
        ));
    }
    out
}

fn kind_name(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Added => "added",
        ChangeKind::Deleted => "deleted",
        ChangeKind::Modified => "modified",
        ChangeKind::Metadata => "metadata",
        ChangeKind::TypeChanged => "type_changed",
        ChangeKind::Error => "error",
    }
}

#[derive(Default)]
struct Group<'a> {
    added: u64,
    deleted: u64,
    bytes_added: u64,
    bytes_deleted: u64,
    changed: u64,
    metadata: u64,
    errors: u64,
    entries: Vec<&'a ChangedPath>,
}

/// For a terminal: entries grouped by directory (see [`GROUP_DEPTH`]), each group headed by its
/// counts and sizes, each entry with its status symbols and what changed; then a total line.
pub fn render_human(diff: &Diff) -> String {
    if diff.entries.is_empty() {
        return "no changes\n".to_string();
    }
    let mut groups: BTreeMap<Vec<u8>, Group<'_>> = BTreeMap::new();
    let mut current = Vec::new();
    for e in &diff.entries {
        // Children of a reported directory stay with it.
        if !e.implied {
            current = group_key(&e.path);
        }
        let g = groups.entry(current.clone()).or_default();
        g.entries.push(e);
        if e.implied {
            continue;
        }
        match e.kind {
            ChangeKind::Added | ChangeKind::Deleted => {
                g.added += Node::objects(&e.new);
                g.deleted += Node::objects(&e.old);
                g.bytes_added += Node::counted_bytes(&e.new);
                g.bytes_deleted += Node::counted_bytes(&e.old);
            }
            ChangeKind::Modified | ChangeKind::TypeChanged => g.changed += 1,
            ChangeKind::Metadata => g.metadata += 1,
            ChangeKind::Error => g.errors += 1,
        }
    }
    let mut out = String::new();
    for (key, g) in &groups {
        let mut parts = Vec::new();
        if g.added > 0 {
            parts.push(format!("+{} ({})", g.added, format_bytes(g.bytes_added)));
        }
        if g.deleted > 0 {
            parts.push(format!(
                "-{} ({})",
                g.deleted,
                format_bytes(g.bytes_deleted)
            ));
        }
        if g.changed > 0 {
            parts.push(format!("{} changed", g.changed));
        }
        if g.metadata > 0 {
            parts.push(format!("{} metadata", g.metadata));
        }
        if g.errors > 0 {
            parts.push(format!("{} errors", g.errors));
        }
        out.push_str(&format!("{}  {}\n", escape_bytes(key), parts.join("  ")));
        for e in &g.entries {
            let indent = if e.implied { "    " } else { "  " };
            out.push_str(&format!(
                "{indent}{}  {}  {}\n",
                e.symbols(),
                esc(&e.path),
                detail(e)
            ));
        }
        out.push('\n');
    }
    let s = &diff.summary;
    out.push_str(&format!(
        "total: {} added ({}), {} deleted ({}), {} modified, {} type changed, {} metadata only",
        s.added,
        format_bytes(s.bytes_added),
        s.deleted,
        format_bytes(s.bytes_deleted),
        s.modified,
        s.type_changed,
        s.metadata
    ));
    if s.errors > 0 {
        out.push_str(&format!(", {} errors", s.errors));
    }
    out.push('\n');
    out
}

/// The parent directory, cut to [`GROUP_DEPTH`] components (`/` for top-level entries).
fn group_key(path: &Path) -> Vec<u8> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let mut key = Vec::new();
    for c in parent.components().skip(1).take(GROUP_DEPTH) {
        key.push(b'/');
        key.extend_from_slice(c.as_os_str().as_bytes());
    }
    if key.is_empty() {
        key.push(b'/');
    }
    key
}

fn describe(n: &Node) -> String {
    let mut s = match n.file_type {
        FileType::Dir if n.other_fs => "nested subvolume or mount point, not compared".to_string(),
        FileType::Dir => match n.entries {
            Some(count) => format!("dir, {count} entries, {}", format_bytes(n.size)),
            None => "dir".to_string(),
        },
        FileType::File => format!("file, {}", format_bytes(n.size)),
        FileType::Symlink => format!(
            "symlink -> {}",
            n.target.as_deref().map(esc).unwrap_or_default()
        ),
        FileType::Block | FileType::Char => {
            format!(
                "{} device {}",
                n.file_type.name(),
                n.device.as_deref().unwrap_or("?")
            )
        }
        FileType::Fifo | FileType::Socket => n.file_type.name().to_string(),
    };
    if let Some(first) = &n.link_to {
        s.push_str(&format!(", hard link to {}", esc(first)));
    }
    s
}

fn detail(e: &ChangedPath) -> String {
    let (o, n) = (e.old.as_ref(), e.new.as_ref());
    match (e.kind, o, n) {
        (ChangeKind::Error, ..) => format!("error: {}", e.error.as_deref().unwrap_or("unknown")),
        (ChangeKind::Added, _, Some(n)) => describe(n),
        (ChangeKind::Deleted, Some(o), _) => describe(o),
        (ChangeKind::TypeChanged, Some(o), Some(n)) => format!("{} → {}", describe(o), describe(n)),
        (ChangeKind::Modified | ChangeKind::Metadata, Some(o), Some(n)) => {
            let mut parts = Vec::new();
            for c in &e.what {
                parts.push(match c {
                    Change::Content if o.size == n.size => {
                        format!("content ({})", format_bytes(n.size))
                    }
                    Change::Content if format_bytes(o.size) == format_bytes(n.size) => {
                        format!("{} B → {} B", o.size, n.size)
                    }
                    Change::Content => {
                        format!("{} → {}", format_bytes(o.size), format_bytes(n.size))
                    }
                    Change::Target => format!(
                        "-> {} → -> {}",
                        o.target.as_deref().map(esc).unwrap_or_default(),
                        n.target.as_deref().map(esc).unwrap_or_default()
                    ),
                    Change::Device => format!(
                        "device {} → {}",
                        o.device.as_deref().unwrap_or("?"),
                        n.device.as_deref().unwrap_or("?")
                    ),
                    Change::Mode => format!("mode {:04o} → {:04o}", o.mode, n.mode),
                    Change::Owner => format!("owner {} → {}", o.uid, n.uid),
                    Change::Group => format!("group {} → {}", o.gid, n.gid),
                    Change::Xattr => {
                        let mut x = vec!["xattrs".to_string()];
                        if let Some(d) = &e.xattrs {
                            x.extend(d.added.iter().map(|k| format!("+{}", escape_bytes(&k.0))));
                            x.extend(d.removed.iter().map(|k| format!("-{}", escape_bytes(&k.0))));
                            x.extend(d.changed.iter().map(|k| format!("~{}", escape_bytes(&k.0))));
                        }
                        x.join(" ")
                    }
                    Change::Mtime => "mtime".to_string(),
                });
            }
            parts.join(", ")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_utf8_and_hexes_the_rest() {
        assert_eq!(escape_bytes("/é/ok".as_bytes()), "/é/ok");
        assert_eq!(escape_bytes(b"/a\xffb"), "/a\\xffb");
        assert_eq!(escape_bytes(b"/tab\there\n"), "/tab\\x09here\\x0a");
        assert_eq!(escape_bytes(b"back\\slash"), "back\\\\slash");
    }

    #[test]
    fn bytes_format_in_iec_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
    }

    #[test]
    fn groups_cut_parents_to_two_levels() {
        assert_eq!(group_key(Path::new("/foo")), b"/");
        assert_eq!(group_key(Path::new("/etc/foo")), b"/etc");
        assert_eq!(group_key(Path::new("/var/log/journal/x/y")), b"/var/log");
        assert_eq!(group_key(Path::new("/")), b"/");
    }
}
