//! `/proc/self/mountinfo`: which btrfs subvolumes are mounted, and where.
//!
//! Deleting a mounted subvolume succeeds and leaves the mount showing an empty `//deleted` tree, so the
//! deletion guard must look here first. Parsing is pure and tested on captured lines.

use std::path::{Path, PathBuf};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's id (unique while it exists; what `statx(STATX_MNT_ID)` reports).
    pub id: u64,
    /// `st_dev` of the filesystem's superblock (major, minor). For btrfs this is an anonymous device
    /// shared by every mount of the filesystem in every namespace, whichever member device it was mounted
    /// through: the identity to match on, not the source path.
    pub dev: (u32, u32),
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

/// Undoes the octal escapes of mountinfo and fstab (`\040` for a space, …).
pub fn unescape(s: &str) -> String {
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
    let id = fields[0].parse().ok()?;
    let (major, minor) = fields[2].split_once(':')?;
    let dev = (major.parse().ok()?, minor.parse().ok()?);
    let super_opts = fields[sep + 3];
    let subvol_id = super_opts
        .split(',')
        .find_map(|o| o.strip_prefix("subvolid="))
        .and_then(|v| v.parse().ok());
    Some(Mount {
        id,
        dev,
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

/// The mounts of one mount namespace, as read through one of its threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// A process in it (for messages: "mounted in the namespace of pid N").
    pub pid: u32,
    /// Its mounts.
    pub mounts: Vec<Mount>,
}

/// A process or thread that exited while we looked: not an error, its namespace is gone or seen elsewhere.
fn vanished(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(e) if e == rustix::io::Errno::NOENT.raw_os_error() || e == rustix::io::Errno::SRCH.raw_os_error()
    )
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("reading '{}': {e}", path.display()))
}

/// What [`read_all_namespaces`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllNamespaces {
    /// Each namespace read, once.
    pub namespaces: Vec<Namespace>,
    /// Processes whose namespace we may not inspect (ptrace access denied, e.g. by an LSM, or tabula
    /// without `CAP_SYS_PTRACE`): what is mounted only there is not seen.
    pub denied: Vec<u32>,
}

/// Access refused to another process's `/proc` entries.
fn denied(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(e) if e == rustix::io::Errno::ACCESS.raw_os_error() || e == rustix::io::Errno::PERM.raw_os_error()
    )
}

/// The mounts of every mount namespace this process's procfs shows, each namespace once.
///
/// Every thread of every process is visited (a thread can have a namespace of its own, as tabula's own
/// commands and tests do) and namespaces are told apart by the identity (device, inode) of
/// `/proc/<pid>/task/<tid>/ns/mnt`, so a machine with thousands of processes in a few namespaces reads a
/// few mountinfo files. Processes that exit during the walk are skipped; processes we may not inspect
/// are listed in [`AllNamespaces::denied`] for the caller to report; any other failure is an error: a
/// caller proving that nothing is mounted cannot skip a namespace it could not read.
pub fn read_all_namespaces() -> std::io::Result<AllNamespaces> {
    let mut seen = std::collections::HashSet::new();
    let mut out = AllNamespaces::default();
    visit(
        Path::new("/proc/thread-self"),
        std::process::id(),
        &mut seen,
        &mut out,
    )?;
    let proc = Path::new("/proc");
    for entry in std::fs::read_dir(proc).map_err(|e| with_path(e, proc))? {
        let entry = entry.map_err(|e| with_path(e, proc))?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let task = entry.path().join("task");
        let threads = match std::fs::read_dir(&task) {
            Ok(t) => t,
            Err(e) if vanished(&e) => continue,
            Err(e) if denied(&e) => {
                out.denied.push(pid);
                continue;
            }
            Err(e) => return Err(with_path(e, &task)),
        };
        for t in threads {
            match t {
                Ok(t) => visit(&t.path(), pid, &mut seen, &mut out)?,
                Err(e) if vanished(&e) => {}
                Err(e) => return Err(with_path(e, &task)),
            }
        }
    }
    Ok(out)
}

/// Reads the namespace of the thread at `dir` (`/proc/<pid>/task/<tid>`) unless already `seen`.
fn visit(
    dir: &Path,
    pid: u32,
    seen: &mut std::collections::HashSet<(u64, u64)>,
    out: &mut AllNamespaces,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let deny = |out: &mut AllNamespaces| {
        if out.denied.last() != Some(&pid) {
            out.denied.push(pid);
        }
    };
    let ns = dir.join("ns/mnt");
    let key = match std::fs::metadata(&ns) {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) if vanished(&e) => return Ok(()),
        Err(e) if denied(&e) => {
            deny(out);
            return Ok(());
        }
        Err(e) => return Err(with_path(e, &ns)),
    };
    if seen.contains(&key) {
        return Ok(());
    }
    let file = dir.join("mountinfo");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            seen.insert(key);
            out.namespaces.push(Namespace {
                pid,
                mounts: parse(&text),
            });
            Ok(())
        }
        Err(e) if vanished(&e) => Ok(()),
        Err(e) if denied(&e) => {
            deny(out);
            Ok(())
        }
        Err(e) => Err(with_path(e, &file)),
    }
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
        assert_eq!((m[0].id, m[0].dev), (22, (0, 21)));
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
