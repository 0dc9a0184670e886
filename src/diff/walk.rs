//! The synchronized, sorted, fd-relative walk behind [`super::diff_trees`].
//!
//! Every object is reached as (open parent directory fd, name) and `fstatat`-ed with
//! `AT_SYMLINK_NOFOLLOW`; directories are opened with `O_NOFOLLOW|O_DIRECTORY` and checked to be the
//! inode that was stat-ed, so a tree that changes under the walk yields an `error` entry, never a
//! comparison of the wrong object.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use rustix::fs::{AtFlags, fstat, major, minor, readlinkat, statat};
use rustix::io::Errno;

use super::xattr::{self, Xattrs};
use super::{
    Change, ChangeKind, ChangedPath, Diff, DiffOptions, FileType, Node, RawName, SCHEMA_VERSION,
    Summary, XattrDiff,
};
use crate::error::UsageError;
use crate::fsx::{self, Flags as OFlags};
use crate::limits::{MAX_DEPTH, too_deep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

/// The part of `struct stat` the walk uses.
#[derive(Debug, Clone, Copy)]
struct Stat {
    ft: FileType,
    perm: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
    nlink: u64,
    rdev: u64,
}

impl Stat {
    // The field types of `struct stat` differ between architectures: widen (or keep) each.
    #[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
    fn from_raw(st: &rustix::fs::Stat) -> Result<Stat, String> {
        let mode = u32::from(st.st_mode);
        let ft = FileType::from_mode(mode)
            .ok_or_else(|| format!("unknown file type in mode {mode:o}"))?;
        let nsec = |n| i64::try_from(n).unwrap_or(0);
        Ok(Stat {
            ft,
            perm: mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (i64::from(st.st_mtime), nsec(st.st_mtime_nsec)),
            ctime: (i64::from(st.st_ctime), nsec(st.st_ctime_nsec)),
            ino: u64::from(st.st_ino),
            dev: u64::from(st.st_dev),
            nlink: u64::from(st.st_nlink),
            rdev: u64::from(st.st_rdev),
        })
    }
}

/// Where an object is, for the calls that need more than its stat.
#[derive(Clone, Copy)]
enum ObjectRef<'a> {
    /// `name` in the open directory.
    At(BorrowedFd<'a>, &'a [u8]),
    /// The open object itself (the tree roots).
    Fd(BorrowedFd<'a>),
}

struct TreeState {
    dev: u64,
    /// Names met by the walk for each inode with more than one link.
    links: HashMap<u64, Names>,
}

/// The names of one hard-linked inode in one tree: the first met, and the first met that exists in
/// both trees (an old name of the inode, where its bytes already were).
#[derive(Default)]
struct Names {
    first: Option<Vec<u8>>,
    first_shared: Option<Vec<u8>>,
}

impl Names {
    /// Where the inode's bytes are counted.
    fn representative(&self) -> Option<&Vec<u8>> {
        self.first_shared.as_ref().or(self.first.as_ref())
    }
}

#[derive(Default)]
struct Summ {
    entries: u64,
    bytes: u64,
    /// Entries that are not mere scaffolding around ignored paths.
    meaningful: u64,
}

/// The state of one synchronized walk of an old and a new tree.
struct PairWalk<'a> {
    opts: &'a DiffOptions,
    ignore: HashSet<Vec<u8>>,
    /// Proper ancestors of ignored paths.
    scaffold: HashSet<Vec<u8>>,
    old: TreeState,
    new: TreeState,
    entries: Vec<ChangedPath>,
    content_cache: HashMap<(u64, u64), bool>,
    /// Where to descend, when guided by a send stream.
    guide: Option<&'a super::send::Guide>,
}

pub(super) fn run(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    opts: &DiffOptions,
) -> anyhow::Result<Diff> {
    run_guided(old, new, opts, None)
}

/// [`run`], descending into a directory present on both sides only where `guide` says (the send fast
/// path); `None` walks everything.
pub(super) fn run_guided(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    opts: &DiffOptions,
    guide: Option<&super::send::Guide>,
) -> anyhow::Result<Diff> {
    let od = reopen(old).context("opening the old tree's root")?;
    let nd = reopen(new).context("opening the new tree's root")?;
    let os = fstat(od.as_fd())
        .map_err(|e| e.to_string())
        .and_then(|s| Stat::from_raw(&s))
        .map_err(anyhow::Error::msg)
        .context("reading the old tree's root")?;
    let ns = fstat(nd.as_fd())
        .map_err(|e| e.to_string())
        .and_then(|s| Stat::from_raw(&s))
        .map_err(anyhow::Error::msg)
        .context("reading the new tree's root")?;
    let mut w = PairWalk::new(opts, os.dev, ns.dev)?;
    w.guide = guide;

    // The roots' own metadata.
    let on = w
        .node(Side::Old, ObjectRef::Fd(od.as_fd()), &os)
        .map_err(anyhow::Error::msg)?;
    let nn = w
        .node(Side::New, ObjectRef::Fd(nd.as_fd()), &ns)
        .map_err(anyhow::Error::msg)?;
    match w.compare(
        ObjectRef::Fd(od.as_fd()),
        ObjectRef::Fd(nd.as_fd()),
        &os,
        &ns,
        &on,
        &nn,
    ) {
        Ok((what, xattrs)) if !what.is_empty() => w.push_changed(b"", what, xattrs, on, nn),
        Ok(_) => {}
        Err(msg) => w.push_error(b"", msg),
    }
    w.pair(od.as_fd(), nd.as_fd(), b"")
        .map_err(anyhow::Error::msg)
        .context("listing the tree roots")?;
    Ok(w.finish())
}

impl<'a> PairWalk<'a> {
    fn new(opts: &'a DiffOptions, old_dev: u64, new_dev: u64) -> anyhow::Result<Self> {
        let mut ignore = HashSet::new();
        let mut scaffold = HashSet::new();
        for p in &opts.ignore {
            let norm = normalize(p).ok_or_else(|| {
                UsageError(format!(
                    "ignored path '{}' must be a path below the root without '..'",
                    p.display()
                ))
            })?;
            for (i, &b) in norm.iter().enumerate().skip(1) {
                if b == b'/' {
                    scaffold.insert(norm[..i].to_vec());
                }
            }
            ignore.insert(norm);
        }
        Ok(PairWalk {
            opts,
            ignore,
            scaffold,
            old: TreeState {
                dev: old_dev,
                links: HashMap::new(),
            },
            new: TreeState {
                dev: new_dev,
                links: HashMap::new(),
            },
            entries: Vec::new(),
            content_cache: HashMap::new(),
            guide: None,
        })
    }

    fn tree(&self, side: Side) -> &TreeState {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// Walk two directories that exist on both sides.
    fn pair(&mut self, od: BorrowedFd<'_>, nd: BorrowedFd<'_>, path: &[u8]) -> Result<(), String> {
        let onames =
            names_in(od).map_err(|e| format!("listing '{}' in the old tree: {e}", show(path)))?;
        let nnames =
            names_in(nd).map_err(|e| format!("listing '{}' in the new tree: {e}", show(path)))?;
        let (mut i, mut j) = (0, 0);
        loop {
            let (o, n) = match (onames.get(i), nnames.get(j)) {
                (None, None) => break,
                (Some(a), None) => (Some(a), None),
                (None, Some(b)) => (None, Some(b)),
                (Some(a), Some(b)) => match a.cmp(b) {
                    std::cmp::Ordering::Less => (Some(a), None),
                    std::cmp::Ordering::Greater => (None, Some(b)),
                    std::cmp::Ordering::Equal => (Some(a), Some(b)),
                },
            };
            i += usize::from(o.is_some());
            j += usize::from(n.is_some());
            let Some(name) = o.or(n) else { break };
            self.child(o.map(|_| od), n.map(|_| nd), path, name);
        }
        Ok(())
    }

    fn child(
        &mut self,
        od: Option<BorrowedFd<'_>>,
        nd: Option<BorrowedFd<'_>>,
        parent: &[u8],
        name: &[u8],
    ) {
        let path = join(parent, name);
        if self.ignore.contains(&path) {
            return;
        }
        let stat = |d: Option<BorrowedFd<'_>>| match d {
            Some(d) => stat_at(d, name),
            None => Ok(None),
        };
        let (o, n) = match (stat(od), stat(nd)) {
            (Ok(o), Ok(n)) => (o, n),
            (Err(e), _) | (_, Err(e)) => {
                return self.push_error(&path, format!("reading '{}': {e}", show(&path)));
            }
        };
        match (od.zip(o), nd.zip(n)) {
            (Some((d, o)), None) => self.one_side(Side::Old, d, name, &path, &o),
            (None, Some((d, n))) => self.one_side(Side::New, d, name, &path, &n),
            (Some((od, o)), Some((nd, n))) => self.both(od, nd, name, &path, &o, &n),
            (None, None) => {}
        }
    }

    /// An object that exists on one side only.
    fn one_side(&mut self, side: Side, dir: BorrowedFd<'_>, name: &[u8], path: &[u8], st: &Stat) {
        self.register(side, st, path, false);
        let mut node = match self.node(side, ObjectRef::At(dir, name), st) {
            Ok(n) => n,
            Err(msg) => return self.push_error(path, msg),
        };
        let mut below = Vec::new();
        if st.ft == FileType::Dir && !node.other_fs {
            let mut seen = HashSet::new();
            match self.summarize(side, dir, name, path, st, &mut below, &mut seen) {
                Ok(sum) => {
                    if sum.meaningful == 0 && self.scaffold.contains(path) {
                        // Only parents of persisted mount points: tabula's own doing.
                        return;
                    }
                    node.size = sum.bytes;
                    node.entries = Some(sum.entries);
                }
                Err(msg) => return self.push_error(path, msg),
            }
        }
        let (kind, old, new) = match side {
            Side::Old => (ChangeKind::Deleted, Some(node), None),
            Side::New => (ChangeKind::Added, None, Some(node)),
        };
        self.entries.push(entry(path, kind, Vec::new(), old, new));
        self.entries.extend(below);
    }

    /// Count (and with `list_children`, list) what is beneath a directory that exists on one side.
    #[allow(clippy::too_many_arguments)]
    fn summarize(
        &mut self,
        side: Side,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        expected: &Stat,
        out: &mut Vec<ChangedPath>,
        seen: &mut HashSet<u64>,
    ) -> Result<Summ, String> {
        if depth(path) >= MAX_DEPTH {
            return Err(too_deep());
        }
        let dir = open_dir_at(parent, name, expected)
            .map_err(|e| format!("opening '{}': {e}", show(path)))?;
        let names = names_in(dir.as_fd()).map_err(|e| format!("listing '{}': {e}", show(path)))?;
        let dir = dir.as_fd();
        let mut sum = Summ::default();
        for child in &names {
            let cpath = join(path, child);
            if self.ignore.contains(&cpath) {
                continue;
            }
            let st = match stat_at(dir, child) {
                Ok(Some(st)) => st,
                Ok(None) => continue,
                Err(e) => {
                    out.push(error_entry(
                        &cpath,
                        format!("reading '{}': {e}", show(&cpath)),
                    ));
                    sum.meaningful += 1;
                    continue;
                }
            };
            self.register(side, &st, &cpath, false);
            let mut node = match self.node(side, ObjectRef::At(dir, child), &st) {
                Ok(n) => n,
                Err(msg) => {
                    out.push(error_entry(&cpath, msg));
                    sum.meaningful += 1;
                    continue;
                }
            };
            let mut entries = 1;
            let mut bytes = 0;
            if st.ft == FileType::File && (st.nlink <= 1 || seen.insert(st.ino)) {
                bytes = st.size;
            }
            let mark = out.len();
            if self.opts.list_children {
                out.push(implied_entry(&cpath, side, node.clone()));
            }
            let mut meaningful = true;
            if st.ft == FileType::Dir && !node.other_fs {
                match self.summarize(side, dir, child, &cpath, &st, out, seen) {
                    Ok(sub) => {
                        if sub.meaningful == 0 && self.scaffold.contains(&cpath) {
                            meaningful = false;
                            out.truncate(mark);
                        } else {
                            entries += sub.entries;
                            bytes += sub.bytes;
                            node.size = sub.bytes;
                            node.entries = Some(sub.entries);
                            // Only when pushed above: else `mark` is the first entry from below (an error).
                            if self.opts.list_children
                                && let Some(e) = out.get_mut(mark)
                            {
                                *e = implied_entry(&cpath, side, node);
                            }
                        }
                    }
                    Err(msg) => out.push(error_entry(&cpath, msg)),
                }
            }
            if meaningful {
                sum.entries += entries;
                sum.bytes += bytes;
                sum.meaningful += 1;
            }
        }
        Ok(sum)
    }

    /// An object that exists on both sides.
    fn both(
        &mut self,
        od: BorrowedFd<'_>,
        nd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        o: &Stat,
        n: &Stat,
    ) {
        self.register(Side::Old, o, path, true);
        self.register(Side::New, n, path, true);
        let (on, nn) = match (
            self.node(Side::Old, ObjectRef::At(od, name), o),
            self.node(Side::New, ObjectRef::At(nd, name), n),
        ) {
            (Ok(on), Ok(nn)) => (on, nn),
            (Err(msg), _) | (_, Err(msg)) => return self.push_error(path, msg),
        };
        if o.ft != n.ft || on.other_fs != nn.other_fs {
            return self.type_changed(od, nd, name, path, (o, on), (n, nn));
        }
        if on.other_fs {
            // Both sides are other filesystems: nothing here can be compared.
            return;
        }
        match self.compare(
            ObjectRef::At(od, name),
            ObjectRef::At(nd, name),
            o,
            n,
            &on,
            &nn,
        ) {
            Ok((what, xattrs)) => {
                if !what.is_empty() {
                    self.push_changed(path, what, xattrs, on, nn);
                }
            }
            Err(msg) => self.push_error(path, msg),
        }
        if o.ft == FileType::Dir && self.guide.is_some_and(|g| !g.descend(path)) {
            // The send stream names nothing below: unchanged.
        } else if o.ft == FileType::Dir && depth(path) >= MAX_DEPTH {
            self.push_error(path, too_deep());
        } else if o.ft == FileType::Dir {
            let dirs =
                open_dir_at(od, name, o).and_then(|a| open_dir_at(nd, name, n).map(|b| (a, b)));
            match dirs {
                Ok((a, b)) => {
                    if let Err(msg) = self.pair(a.as_fd(), b.as_fd(), path) {
                        self.push_error(path, msg);
                    }
                }
                Err(e) => self.push_error(path, format!("opening '{}': {e}", show(path))),
            }
        }
    }

    fn type_changed(
        &mut self,
        od: BorrowedFd<'_>,
        nd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        (o, mut on): (&Stat, Node),
        (n, mut nn): (&Stat, Node),
    ) {
        let mut below = Vec::new();
        for (side, dir, st, node) in [(Side::Old, od, o, &mut on), (Side::New, nd, n, &mut nn)] {
            if st.ft == FileType::Dir && !node.other_fs {
                let mut seen = HashSet::new();
                match self.summarize(side, dir, name, path, st, &mut below, &mut seen) {
                    Ok(sum) => {
                        node.size = sum.bytes;
                        node.entries = Some(sum.entries);
                    }
                    Err(msg) => below.push(error_entry(path, msg)),
                }
            }
        }
        self.entries.push(entry(
            path,
            ChangeKind::TypeChanged,
            Vec::new(),
            Some(on),
            Some(nn),
        ));
        self.entries.extend(below);
    }

    /// What differs between two objects of the same type.
    fn compare(
        &mut self,
        o_loc: ObjectRef<'_>,
        n_loc: ObjectRef<'_>,
        o: &Stat,
        n: &Stat,
        on: &Node,
        nn: &Node,
    ) -> Result<(Vec<Change>, Option<XattrDiff>), String> {
        let mut what = Vec::new();
        match o.ft {
            FileType::File => {
                if let (ObjectRef::At(od, name), ObjectRef::At(nd, _)) = (o_loc, n_loc)
                    && !self.same_content(od, nd, name, o, n)?
                {
                    what.push(Change::Content);
                }
            }
            FileType::Symlink if on.target != nn.target => what.push(Change::Target),
            FileType::Block | FileType::Char if o.rdev != n.rdev => what.push(Change::Device),
            _ => {}
        }
        // Linux symlinks have no mode of their own (always 0777).
        if o.ft != FileType::Symlink && o.perm != n.perm {
            what.push(Change::Mode);
        }
        if o.uid != n.uid {
            what.push(Change::Owner);
        }
        if o.gid != n.gid {
            what.push(Change::Group);
        }
        let mut xattrs = None;
        let untouched =
            o.ino == n.ino && o.ctime == n.ctime && o.mtime == n.mtime && o.size == n.size;
        if !untouched {
            let ox = read_xattrs(o_loc)
                .map_err(|e| format!("reading extended attributes (old tree): {e}"))?;
            let nx = read_xattrs(n_loc)
                .map_err(|e| format!("reading extended attributes (new tree): {e}"))?;
            let d = diff_xattrs(&ox, &nx);
            if !(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty()) {
                what.push(Change::Xattr);
                xattrs = Some(d);
            }
        }
        if self.opts.report_mtime && o.mtime != n.mtime {
            what.push(Change::Mtime);
        }
        Ok((what, xattrs))
    }

    /// snapper's rule: different sizes differ, equal size and mtime are equal, else compare bytes.
    fn same_content(
        &mut self,
        od: BorrowedFd<'_>,
        nd: BorrowedFd<'_>,
        name: &[u8],
        o: &Stat,
        n: &Stat,
    ) -> Result<bool, String> {
        if o.size != n.size {
            return Ok(false);
        }
        if o.mtime == n.mtime || o.size == 0 {
            return Ok(true);
        }
        // Hard links of one inode pair are compared once.
        if let Some(&same) = self.content_cache.get(&(o.ino, n.ino)) {
            return Ok(same);
        }
        let mut a = open_file_at(od, name, o).map_err(|e| format!("opening the old file: {e}"))?;
        let mut b = open_file_at(nd, name, n).map_err(|e| format!("opening the new file: {e}"))?;
        let same = crate::fsx::same_content(&mut a, &mut b)
            .map_err(|e| format!("reading the files: {e}"))?;
        self.content_cache.insert((o.ino, n.ino), same);
        Ok(same)
    }

    fn node(&self, side: Side, loc: ObjectRef<'_>, st: &Stat) -> Result<Node, String> {
        let target = match (st.ft, loc) {
            (FileType::Symlink, ObjectRef::At(dir, name)) => {
                Some(PathBuf::from(OsString::from_vec(
                    readlinkat(dir, name, Vec::new())
                        .map_err(|e| format!("reading the symlink: {e}"))?
                        .into_bytes(),
                )))
            }
            _ => None,
        };
        let size = match st.ft {
            FileType::File => st.size,
            FileType::Symlink => target.as_ref().map_or(0, |t| t.as_os_str().len() as u64),
            _ => 0,
        };
        let device = matches!(st.ft, FileType::Block | FileType::Char)
            .then(|| format!("{}:{}", major(st.rdev), minor(st.rdev)));
        let other_fs = st.dev != self.tree(side).dev;
        Ok(Node {
            file_type: st.ft,
            size,
            mode: st.perm,
            uid: st.uid,
            gid: st.gid,
            // Not compared, and in a snapshot btrfs makes up the directory standing for a nested
            // subvolume (inode 2) at each lookup, stamped with the current time: two reads of one
            // tree would differ.
            mtime: if other_fs { 0 } else { st.mtime.0 },
            target,
            device,
            entries: None,
            link_to: None,
            other_fs,
            ino: st.ino,
            nlink: st.nlink,
        })
    }

    /// Note a name of a hard-linked file; `shared`: the name exists in both trees.
    fn register(&mut self, side: Side, st: &Stat, path: &[u8], shared: bool) {
        if st.ft == FileType::File && st.nlink > 1 {
            let tree = match side {
                Side::Old => &mut self.old,
                Side::New => &mut self.new,
            };
            let names = tree.links.entry(st.ino).or_default();
            names.first.get_or_insert_with(|| path.to_vec());
            if shared {
                names.first_shared.get_or_insert_with(|| path.to_vec());
            }
        }
    }

    fn push_changed(
        &mut self,
        path: &[u8],
        what: Vec<Change>,
        xattrs: Option<XattrDiff>,
        on: Node,
        nn: Node,
    ) {
        let kind = if what.iter().any(|c| c.is_content()) {
            ChangeKind::Modified
        } else {
            ChangeKind::Metadata
        };
        let mut e = entry(path, kind, what, Some(on), Some(nn));
        e.xattrs = xattrs;
        self.entries.push(e);
    }

    fn push_error(&mut self, path: &[u8], msg: String) {
        self.entries.push(error_entry(path, msg));
    }

    /// Resolve hard links and count.
    fn finish(mut self) -> Diff {
        let mut summary = Summary::default();
        for e in &mut self.entries {
            let path = e.path.as_os_str().as_bytes().to_vec();
            for (node, tree) in [(e.old.as_mut(), &self.old), (e.new.as_mut(), &self.new)] {
                if let Some(node) = node
                    && node.file_type == FileType::File
                    && node.nlink > 1
                    && let Some(first) = tree
                        .links
                        .get(&node.ino)
                        .and_then(Names::representative)
                        .filter(|f| **f != path)
                {
                    node.link_to = Some(PathBuf::from(OsStr::from_bytes(first)));
                }
            }
            if e.implied {
                continue;
            }
            match e.kind {
                ChangeKind::Added => summary.added += 1,
                ChangeKind::Deleted => summary.deleted += 1,
                ChangeKind::Modified => summary.modified += 1,
                ChangeKind::Metadata => summary.metadata += 1,
                ChangeKind::TypeChanged => summary.type_changed += 1,
                ChangeKind::Error => summary.errors += 1,
            }
            if matches!(e.kind, ChangeKind::Added | ChangeKind::Deleted) {
                summary.objects_added += Node::objects(&e.new);
                summary.objects_deleted += Node::objects(&e.old);
                summary.bytes_added += Node::counted_bytes(&e.new);
                summary.bytes_deleted += Node::counted_bytes(&e.old);
            }
        }
        Diff {
            version: SCHEMA_VERSION,
            old_tree: None,
            new_tree: None,
            mtime_reported: self.opts.report_mtime,
            summary,
            entries: self.entries,
        }
    }
}

fn entry(
    path: &[u8],
    kind: ChangeKind,
    what: Vec<Change>,
    old: Option<Node>,
    new: Option<Node>,
) -> ChangedPath {
    ChangedPath {
        path: to_path(path),
        kind,
        what,
        old,
        new,
        xattrs: None,
        implied: false,
        error: None,
    }
}

fn implied_entry(path: &[u8], side: Side, node: Node) -> ChangedPath {
    let mut e = match side {
        Side::Old => entry(path, ChangeKind::Deleted, Vec::new(), Some(node), None),
        Side::New => entry(path, ChangeKind::Added, Vec::new(), None, Some(node)),
    };
    e.implied = true;
    e
}

fn error_entry(path: &[u8], msg: String) -> ChangedPath {
    let mut e = entry(path, ChangeKind::Error, Vec::new(), None, None);
    e.error = Some(msg);
    e
}

fn diff_xattrs(old: &Xattrs, new: &Xattrs) -> XattrDiff {
    let mut d = XattrDiff::default();
    for (k, v) in old {
        match new.get(k) {
            None => d.removed.push(RawName(k.clone())),
            Some(nv) if nv != v => d.changed.push(RawName(k.clone())),
            Some(_) => {}
        }
    }
    for k in new.keys() {
        if !old.contains_key(k) {
            d.added.push(RawName(k.clone()));
        }
    }
    d
}

fn read_xattrs(loc: ObjectRef<'_>) -> Result<Xattrs, rustix::io::Errno> {
    match loc {
        ObjectRef::At(dir, name) => xattr::list_at(dir, name),
        ObjectRef::Fd(fd) => xattr::list_fd(fd),
    }
}

/// Absolute path bytes (`""` is the root) → `PathBuf`.
fn to_path(path: &[u8]) -> PathBuf {
    if path.is_empty() {
        PathBuf::from("/")
    } else {
        PathBuf::from(OsStr::from_bytes(path))
    }
}

fn show(path: &[u8]) -> String {
    super::escape_bytes(if path.is_empty() { b"/" } else { path })
}

/// How many directories deep `path` (`/a/b` is 2) is below the tree's root.
fn depth(path: &[u8]) -> usize {
    path.iter().filter(|&&b| b == b'/').count()
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// `/a/./b/` → `/a/b`; `None` for `..`, the root itself or an empty path.
fn normalize(p: &Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => {
                out.push(b'/');
                out.extend_from_slice(s.as_bytes());
            }
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`; `Ok(None)` when the name vanished meanwhile. Not
/// [`fsx::stat_at`]: the walk needs the ctime (to skip reading xattrs of untouched objects), not the
/// mount id, and this is its hottest call.
fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Stat>, String> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Stat::from_raw(&st).map(Some),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A fresh fd for reading the same directory (the caller's fd may be `O_PATH` or already read).
fn reopen(fd: BorrowedFd<'_>) -> anyhow::Result<OwnedFd> {
    Ok(fsx::open_dir_beneath(fd, Path::new("."))?)
}

/// The sorted names in a directory opened for reading ([`fsx::read_names_in`]), as bytes; an error
/// is the errno's text.
fn names_in(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, String> {
    fsx::read_names_in(dir)
        .map(|names| names.into_iter().map(OsString::into_vec).collect())
        .map_err(|e| e.errno().to_string())
}

/// Opens `name` in `dir` through [`fsx`] (never following a symlink), with `O_NOATIME` where allowed
/// (it keeps a diff of the live root from touching atimes).
fn open_noatime(dir: BorrowedFd<'_>, name: &[u8], flags: OFlags) -> Result<OwnedFd, String> {
    let name = Path::new(OsStr::from_bytes(name));
    match fsx::open_beneath(dir, name, flags | OFlags::NOATIME) {
        Err(e) if e.errno() == fsx::Errno::PERM => fsx::open_beneath(dir, name, flags),
        r => r,
    }
    .map_err(|e| match e {
        fsx::Error::Io { errno, .. } => errno.to_string(),
        e => e.to_string(),
    })
}

/// Open a directory stat-ed as `expected`, refusing anything else.
fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8], expected: &Stat) -> Result<OwnedFd, String> {
    let fd = open_noatime(dir, name, fsx::DIR)?;
    check_same(&fd, expected)?;
    Ok(fd)
}

/// Open a regular file stat-ed as `expected`. `O_NONBLOCK`: if it was swapped for a fifo, do not hang.
fn open_file_at(dir: BorrowedFd<'_>, name: &[u8], expected: &Stat) -> Result<File, String> {
    let fd = open_noatime(dir, name, OFlags::RDONLY | OFlags::NONBLOCK)?;
    check_same(&fd, expected)?;
    Ok(File::from(fd))
}

fn check_same(fd: &OwnedFd, expected: &Stat) -> Result<(), String> {
    let st = fstat(fd.as_fd()).map_err(|e| e.to_string())?;
    #[allow(clippy::useless_conversion)] // `ino_t`/`dev_t` differ between architectures
    if u64::from(st.st_ino) != expected.ino || u64::from(st.st_dev) != expected.dev {
        return Err("it changed during the walk".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_parent_and_root() {
        assert_eq!(
            normalize(Path::new("/var/log/")),
            Some(b"/var/log".to_vec())
        );
        assert_eq!(
            normalize(Path::new("var/./log")),
            Some(b"/var/log".to_vec())
        );
        assert_eq!(normalize(Path::new("/var/../etc")), None);
        assert_eq!(normalize(Path::new("/")), None);
    }

    #[test]
    fn scaffold_holds_proper_ancestors() {
        let opts = DiffOptions {
            ignore: vec!["/var/lib/foo".into()],
            ..Default::default()
        };
        let w = PairWalk::new(&opts, 0, 0).unwrap();
        assert!(w.scaffold.contains(b"/var".as_slice()));
        assert!(w.scaffold.contains(b"/var/lib".as_slice()));
        assert!(!w.scaffold.contains(b"/var/lib/foo".as_slice()));
        assert!(w.ignore.contains(b"/var/lib/foo".as_slice()));
    }
}
