//! The fast path of [`super::diff_trees`] for two read-only subvolumes of one filesystem: ask btrfs
//! what changed instead of stat-ing both trees whole.
//!
//! `BTRFS_IOC_SEND` of the new tree with the old one as its parent, with `BTRFS_SEND_FLAG_NO_FILE_DATA`,
//! yields a stream of the commands that would turn the old tree into the new one (writes become
//! `update_extent` commands without bytes). The kernel computes it by comparing the two trees' b-trees,
//! skipping every block they still share, so its cost follows the size of the change, not of the tree.
//!
//! The stream is not turned into the change list directly: it only tells where to look. Every path
//! it names (and every directory above one) is *dirty*; both ends of every rename are *whole* (a moved
//! directory's new and old places are compared entry by entry, since the stream says nothing about
//! their unchanged children). The reference walk then runs, descending only into dirty or whole
//! directories. Since every entry it reports comes from the same comparison code as the full walk, the
//! two agree whenever every change lies below a directory the stream named, which the property test
//! in `tests/it/diff_send.rs` checks on random trees.
//!
//! Where the guided walk could still differ, it is not trusted and the full walk runs:
//! - a reported regular file with more than one link: `link_to` names the inode's first name met in
//!   the *whole* walk, which may lie in a directory the guided walk skips;
//! - the stream names a temporary name (`o<ino>-<gen>-<n>`, where send parks an inode between two
//!   renames) it never resolves to a real place.
//!
//! Known difference, by design: a directory nested deeper than [`crate::limits::MAX_DEPTH`] inside an
//! unchanged directory is reported as an `error` entry by the full walk only (the guided walk never
//! gets there).
//!
//! # The stream (version 1), as documented in the kernel's `fs/btrfs/send.h`
//! A header: the magic `btrfs-stream\0` and a little-endian u32 version. Then commands, each a header
//! (u32 length of its attributes, u16 command, u32 crc32c) followed by attributes, each a u16 type, a
//! u16 length and that many bytes. All paths are relative to the subvolume and name the state of a
//! receiver that has applied the commands so far.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{Context, anyhow, bail};
use tracing::debug;

use super::{Diff, DiffOptions, FileType};

const MAGIC: &[u8; 13] = b"btrfs-stream\0";
const CMD_HEADER: usize = 10;

// Commands (send.h, version 1).
const C_SUBVOL: u16 = 1;
const C_SNAPSHOT: u16 = 2;
const C_RENAME: u16 = 9;
const C_LINK: u16 = 10;
const C_END: u16 = 21;
const C_UPDATE_EXTENT: u16 = 22;

// Attributes.
const A_PATH: u16 = 15;
const A_PATH_TO: u16 = 16;
const A_PATH_LINK: u16 = 17;

/// What the stream named: the paths it touched and the renames, relative to the subvolume.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Paths of created, deleted, written, chmod/chown/utimes-ed or xattr-changed objects.
    pub(crate) touched: HashSet<Vec<u8>>,
    /// Renames, from → to.
    pub(crate) renames: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads a whole send stream (version 1) from `r`.
pub(crate) fn parse(mut r: impl Read) -> anyhow::Result<Changes> {
    let mut head = [0u8; 17];
    r.read_exact(&mut head)
        .context("reading the stream header")?;
    if &head[..13] != MAGIC {
        bail!("not a btrfs send stream");
    }
    let version = u32::from_le_bytes([head[13], head[14], head[15], head[16]]);
    if version != 1 {
        bail!("send stream version {version}, only version 1 is read");
    }
    let mut changes = Changes::default();
    let mut body = Vec::new();
    loop {
        let mut h = [0u8; CMD_HEADER];
        match read_full(&mut r, &mut h)? {
            0 => bail!("the stream ended without its end command"),
            CMD_HEADER => {}
            _ => bail!("the stream ended inside a command header"),
        }
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let cmd = u16::from_le_bytes([h[4], h[5]]);
        body.resize(len, 0);
        r.read_exact(&mut body).context("reading a command")?;
        if cmd == C_END {
            return Ok(changes);
        }
        let (mut path, mut to, mut link) = (None, None, None);
        let mut at = 0;
        while at < body.len() {
            let t = body
                .get(at..at + 4)
                .ok_or_else(|| anyhow!("truncated attribute"))?;
            let ty = u16::from_le_bytes([t[0], t[1]]);
            let n = usize::from(u16::from_le_bytes([t[2], t[3]]));
            let data = body
                .get(at + 4..at + 4 + n)
                .ok_or_else(|| anyhow!("truncated attribute"))?;
            match ty {
                A_PATH => path = Some(data.to_vec()),
                A_PATH_TO => to = Some(data.to_vec()),
                A_PATH_LINK => link = Some(data.to_vec()),
                _ => {}
            }
            at += 4 + n;
        }
        match cmd {
            C_SUBVOL | C_SNAPSHOT => {}
            C_RENAME => {
                let (Some(from), Some(to)) = (path, to) else {
                    bail!("a rename without both paths");
                };
                changes.renames.push((from, to));
            }
            3..=8 | C_LINK..=20 | C_UPDATE_EXTENT => {
                let path = path.ok_or_else(|| anyhow!("command {cmd} without a path"))?;
                changes.touched.insert(path);
                if cmd == C_LINK {
                    changes
                        .touched
                        .insert(link.ok_or_else(|| anyhow!("a link without its target"))?);
                }
            }
            _ => bail!("unknown send command {cmd}"),
        }
    }
}

/// `read` until `buf` is full or the stream ends; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> anyhow::Result<usize> {
    crate::fsx::read_full(r, buf).context("reading the send stream")
}

/// Whether a top-level name is one send parks inodes under (`o<ino>-<gen>-<n>`).
fn is_temporary(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b"o") else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

/// Where the guided walk must look, in the walk's path terms (`/a/b`; the root is empty).
#[derive(Debug, Default)]
pub(crate) struct Guide {
    /// Directories to list and compare entry by entry (their subdirectories only when dirty too).
    dirty: HashSet<Vec<u8>>,
    /// Directories compared whole, everything beneath them.
    whole: HashSet<Vec<u8>>,
}

impl Guide {
    /// The guide for `changes`; `None` when a temporary name cannot be resolved to a real place.
    pub(crate) fn new(changes: &Changes) -> Option<Guide> {
        // Each temporary name ↔ the places it was renamed from or to.
        let mut aliases: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
        for (from, to) in &changes.renames {
            if is_temporary(from) {
                aliases.entry(from).or_default().push(to);
            }
            if is_temporary(to) {
                aliases.entry(to).or_default().push(from);
            }
        }
        let mut g = Guide::default();
        g.dirty.insert(Vec::new());
        for (from, to) in &changes.renames {
            for p in [from, to] {
                for real in resolve(&aliases, p)? {
                    g.mark(&real, true);
                }
            }
        }
        for p in &changes.touched {
            for real in resolve(&aliases, p)? {
                g.mark(&real, false);
            }
        }
        Some(g)
    }

    /// Marks `rel` (relative to the subvolume) and every directory above it dirty; `whole` too.
    fn mark(&mut self, rel: &[u8], whole: bool) {
        let mut path = Vec::with_capacity(rel.len() + 1);
        for part in rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            path.push(b'/');
            path.extend_from_slice(part);
            if !self.dirty.contains(&path) {
                self.dirty.insert(path.clone());
            }
        }
        if whole {
            self.whole.insert(path);
        }
    }

    /// Whether the walk descends into the directory at `path` (present in both trees).
    pub(crate) fn descend(&self, path: &[u8]) -> bool {
        if self.dirty.contains(path) {
            return true;
        }
        let mut p = path;
        loop {
            if self.whole.contains(p) {
                return true;
            }
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => return false,
            }
        }
    }
}

/// The real places a stream path stands for: itself and, when it starts with a temporary name, the
/// same path below every place that name was renamed from or to. `None` when a temporary name that
/// was renamed leads to no real place.
fn resolve(aliases: &HashMap<&[u8], Vec<&[u8]>>, path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let first = |p: &[u8]| -> Vec<u8> { p.split(|&b| b == b'/').next().unwrap_or(&[]).to_vec() };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![path.to_vec()];
    while let Some(p) = todo.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let head = first(&p);
        if is_temporary(&head)
            && let Some(places) = aliases.get(&head[..])
        {
            for place in places {
                let mut q = place.to_vec();
                q.extend_from_slice(&p[head.len()..]);
                todo.push(q);
            }
        }
        out.push(p);
    }
    // A name that only looks temporary and was never renamed is a real top-level name.
    let parked = |p: &Vec<u8>| {
        let h = first(p);
        is_temporary(&h) && aliases.contains_key(&h[..])
    };
    if parked(&path.to_vec()) && out.iter().all(parked) {
        return None;
    }
    Some(out)
}

/// Runs `BTRFS_IOC_SEND` of `new` against `old` (both read-only subvolumes of one filesystem) and
/// returns what the stream names. Errors when send cannot apply (a writable side, send refused).
pub(crate) fn changes(old: BorrowedFd<'_>, new: BorrowedFd<'_>) -> anyhow::Result<Changes> {
    for (fd, side) in [(old, "old"), (new, "new")] {
        if !crate::btrfs::is_subvolume(fd).unwrap_or(false) {
            bail!("the {side} tree is not a subvolume's root directory");
        }
    }
    let oi = crate::btrfs::subvolume_info(old).context("the old tree is not a subvolume")?;
    let ni = crate::btrfs::subvolume_info(new).context("the new tree is not a subvolume")?;
    if !oi.read_only || !ni.read_only {
        bail!("send needs both trees read-only");
    }
    // std's pipe is `O_CLOEXEC`.
    let (r, w) = std::io::pipe().context("making a pipe")?;
    let (r, w) = (OwnedFd::from(r), OwnedFd::from(w));
    std::thread::scope(|s| {
        let sender = s.spawn(move || {
            let res = crate::btrfs::send_no_data(new, w.as_fd(), oi.id);
            drop(w); // EOF for the reader
            res
        });
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, std::fs::File::from(r));
        let parsed = parse(&mut reader);
        // Drain whatever is left so the sender never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        let sent = sender
            .join()
            .map_err(|_| anyhow!("the send thread panicked"))?;
        sent.context("BTRFS_IOC_SEND")?;
        parsed
    })
}

/// The diff of two read-only subvolumes of one filesystem by the send stream (see the module doc).
/// Errors when send cannot apply, for the caller to walk instead; falls back to the full walk itself
/// where the guided one could differ (saying so at debug level).
pub(crate) fn diff(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    opts: &DiffOptions,
) -> anyhow::Result<Diff> {
    let changes = changes(old, new)?;
    debug!(
        touched = changes.touched.len(),
        renames = changes.renames.len(),
        "send stream read"
    );
    let Some(guide) = Guide::new(&changes) else {
        debug!("the send stream names a temporary path it never resolves: walking");
        return super::diff_trees(old, new, opts);
    };
    let d =
        crate::limits::with_walk_stack(|| super::walk::run_guided(old, new, opts, Some(&guide)))??;
    let linked = d.entries.iter().any(|e| {
        [&e.old, &e.new]
            .into_iter()
            .flatten()
            .any(|n| n.file_type == FileType::File && n.nlink > 1)
    });
    if linked {
        debug!(
            "a changed file has hard links: walking to name its first link as the full walk does"
        );
        return super::diff_trees(old, new, opts);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(out: &mut Vec<u8>, cmd: u16, attrs: &[(u16, &[u8])]) {
        let body: Vec<u8> = attrs
            .iter()
            .flat_map(|(t, d)| {
                let mut a = t.to_le_bytes().to_vec();
                a.extend_from_slice(&(d.len() as u16).to_le_bytes());
                a.extend_from_slice(d);
                a
            })
            .collect();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&cmd.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body);
    }

    type Attrs<'a> = &'a [(u16, &'a [u8])];

    fn stream(cmds: &[(u16, Attrs<'_>)]) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&1u32.to_le_bytes());
        for (c, a) in cmds {
            cmd(&mut s, *c, a);
        }
        s
    }

    #[test]
    fn parses_paths_renames_and_links() {
        let s = stream(&[
            (C_SNAPSHOT, &[(A_PATH, b"root"), (1, &[0; 16])]),
            (9, &[(A_PATH, b"a/b"), (A_PATH_TO, b"o260-7-0")]),
            (9, &[(A_PATH, b"o260-7-0"), (A_PATH_TO, b"c/d")]),
            (C_LINK, &[(A_PATH, b"x/l"), (A_PATH_LINK, b"y/f")]),
            (18, &[(A_PATH, b"o260-7-0/m"), (5, &[0; 8])]),
            (C_END, &[]),
        ]);
        let c = parse(&s[..]).unwrap();
        assert_eq!(c.renames.len(), 2);
        assert!(c.touched.contains(&b"x/l"[..]) && c.touched.contains(&b"y/f"[..]));
        let g = Guide::new(&c).unwrap();
        // Both places of the moved directory are compared whole; the temporary name stands for them.
        assert!(g.descend(b"/a/b") && g.descend(b"/a/b/deep/er") && g.descend(b"/c/d/z"));
        assert!(g.descend(b"/a") && g.descend(b"/x") && g.descend(b"/y"));
        assert!(!g.descend(b"/other") && !g.descend(b"/x/sub"));
    }

    #[test]
    fn rejects_bad_streams() {
        assert!(parse(&b"not-a-stream-at-all"[..]).is_err());
        let mut s = stream(&[(18, &[(A_PATH, b"a")])]);
        assert!(parse(&s[..]).is_err(), "no end command");
        s.truncate(s.len() - 1);
        assert!(parse(&s[..]).is_err(), "truncated");
        assert!(parse(&stream(&[(99, &[]), (C_END, &[])])[..]).is_err());
    }

    #[test]
    fn temporary_names() {
        assert!(is_temporary(b"o257-12-0"));
        assert!(!is_temporary(b"o257-12") && !is_temporary(b"opt") && !is_temporary(b"o1-2-x"));
        // A temporary name met only through another unresolved one is refused.
        let c = Changes {
            touched: [b"o1-1-0/x".to_vec()].into(),
            renames: vec![(b"o1-1-0".to_vec(), b"o2-1-0".to_vec())],
        };
        assert!(Guide::new(&c).is_none());
    }
}
