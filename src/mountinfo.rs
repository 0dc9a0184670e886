//! `/proc/self/mountinfo`: which btrfs subvolumes are mounted, and where.
//!
//! Deleting a mounted subvolume succeeds and leaves the mount showing an empty `//deleted` tree, so the
//! deletion guard must look here first. Parsing is pure and tested on captured lines.

use std::path::PathBuf;

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The path inside the filesystem that is the mount's root (for btrfs: the subvolume path, or a
    /// directory in it for bind mounts).
    pub root: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (a device path for block filesystems).
    pub source: String,
    /// btrfs `subvolid=` from the superblock options.
    pub subvol_id: Option<u64>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` for a malformed one.
pub fn parse_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let super_opts = fields[sep + 3];
    let subvol_id = super_opts
        .split(',')
        .find_map(|o| o.strip_prefix("subvolid="))
        .and_then(|v| v.parse().ok());
    Some(Mount {
        root: unescape(fields[3]),
        mount_point: PathBuf::from(unescape(fields[4])),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
        subvol_id,
    })
}

/// Parses a whole mountinfo text, skipping malformed lines.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The calling thread's mounts. `/proc/thread-self`, not `/proc/self`: a thread may have a mount
/// namespace of its own, and `/proc/self` shows the main thread's.
pub fn read() -> std::io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .or_else(|_| std::fs::read_to_string("/proc/self/mountinfo"))?;
    Ok(parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btrfs_lines() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - btrfs /dev/vda2 rw,space_cache=v2,subvolid=261,subvol=/root
30 22 0:21 /old_roots/00042-2025-02-08T101503Z/var /mnt/with\\040space ro,relatime - btrfs /dev/vda2 ro,subvolid=300,subvol=/old_roots/00042-2025-02-08T101503Z
40 22 0:5 / /dev rw - devtmpfs devtmpfs rw,size=4k
garbage line
";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].subvol_id, Some(261));
        assert_eq!(m[0].source, "/dev/vda2");
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].root, "/old_roots/00042-2025-02-08T101503Z/var");
        assert_eq!(m[1].subvol_id, Some(300));
        assert_eq!(m[2].fs_type, "devtmpfs");
        assert_eq!(m[2].subvol_id, None);
    }

    #[test]
    fn optional_fields_vary() {
        let line =
            "36 35 98:0 / /x rw,noatime master:1 shared:7 - btrfs /dev/sda1 rw,subvolid=5,subvol=/";
        let m = parse_line(line).unwrap();
        assert_eq!(m.subvol_id, Some(5));
        assert_eq!(m.mount_point, PathBuf::from("/x"));
    }
}
