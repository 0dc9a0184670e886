//! The plan: both ends resolved and checked up front ([`plan_restore`]), then the items, one at a time,
//! from an iterative walk of the source ([`PlanWalk`]). Nothing here writes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::Stat;
use rustix::io::Errno;

use super::resolve::{
    check_destination, components, is_btrfs, lstat_at, open_dest_parent, open_source_parent,
    read_names, readlink_at,
};
use super::{PlanItem, PlanListing, RestoreOp, RestorePlan, SCHEMA_VERSION, SourceStat, Totals};
use crate::diff::FileType;
use crate::limits::{MAX_DEPTH, too_deep};

/// Compute a restore of `source` (absolute, inside the tree `source_root`) to `dest` (absolute, inside
/// `dest_root`, normally an fd of `/`). Checks every refusal rule; changes nothing. The items are not
/// listed here: [`RestorePlan::walk`] yields them.
pub fn plan_restore(
    source_root: BorrowedFd<'_>,
    source: &Path,
    dest_root: BorrowedFd<'_>,
    dest: &Path,
    force: bool,
) -> anyhow::Result<RestorePlan> {
    let src_parts = components(source, "the path to restore")?;
    let dst_parts = components(dest, "the destination")?;
    let (src_parent, src_name) = open_source_parent(source_root, &src_parts, source)?;
    let top = stat_top(src_parent.as_fd(), &src_name, source)?;
    let (dst_parent, dst_name) = open_dest_parent(dest_root, &dst_parts, dest)?;
    let replaces = check_destination(dst_parent.as_fd(), &dst_name, dest, force)?;
    // The top alone decides whether there is anything to restore (the walk skips, never refuses,
    // what lies below).
    if let (RestoreOp::Skip, reason) = classify(&top) {
        bail!(
            "'{}' cannot be restored: {}",
            source.display(),
            reason.unwrap_or("unsupported file type")
        );
    }
    let reflink_expected = is_btrfs(src_parent.as_fd()) && is_btrfs(dst_parent.as_fd());
    Ok(RestorePlan {
        version: SCHEMA_VERSION,
        source: source.to_path_buf(),
        dest: dest.to_path_buf(),
        force,
        replaces,
        reflink_expected,
        top: (top.st_ino, top.st_dev),
    })
}

/// [`plan_restore`] with every item collected: memory grows with the tree, so for small trees and
/// tests; the command streams them instead.
pub fn list_plan(
    source_root: BorrowedFd<'_>,
    source: &Path,
    dest_root: BorrowedFd<'_>,
    dest: &Path,
    force: bool,
) -> anyhow::Result<PlanListing> {
    let plan = plan_restore(source_root, source, dest_root, dest, force)?;
    let mut walk = plan.walk(source_root)?;
    let items = walk.by_ref().collect::<anyhow::Result<Vec<_>>>()?;
    let totals = walk.totals().clone();
    Ok(PlanListing {
        plan,
        items,
        totals,
    })
}

impl RestorePlan {
    /// Start walking the source (in `source_root`, the tree it was planned in): the items, in creation
    /// order (a directory before its contents, names sorted bytewise).
    pub fn walk(&self, source_root: BorrowedFd<'_>) -> anyhow::Result<PlanWalk> {
        let parts = components(&self.source, "the path to restore")?;
        let (parent, name) = open_source_parent(source_root, &parts, &self.source)?;
        Ok(PlanWalk {
            source: self.source.clone(),
            dest: self.dest.clone(),
            top: Some((parent, name, self.top)),
            top_parent: None,
            stack: Vec::new(),
            state: State {
                entered: None,
                links: HashMap::new(),
                dev: self.top.1,
                totals: Totals::default(),
            },
            done: false,
        })
    }
}

/// The items of a plan, one at a time: an iterative depth-first walk that holds, per directory level,
/// one open fd and the sorted names still to visit, and per hard-linked file met, its first name.
/// Memory is bounded by the depth (at most [`MAX_DEPTH`]) and the largest directory, not the tree.
/// After an error it yields nothing more.
pub struct PlanWalk {
    source: PathBuf,
    dest: PathBuf,
    /// The source's parent, its name and planned (inode, device): taken by the first call.
    top: Option<(OwnedFd, Vec<u8>, (u64, u64))>,
    /// The source's parent, once the top is yielded.
    top_parent: Option<OwnedFd>,
    /// The directories being walked, outermost first.
    stack: Vec<Level>,
    state: State,
    done: bool,
}

/// What visiting an entry updates (apart from the stack, so that both can be borrowed at once).
struct State {
    /// The directory just yielded, entered at the next call.
    entered: Option<Level>,
    /// Source inode → destination path of its first name, for files with more than one link.
    links: HashMap<u64, PathBuf>,
    /// The source top's filesystem: the walk does not leave it.
    dev: u64,
    totals: Totals,
}

/// One directory being walked.
struct Level {
    fd: OwnedFd,
    /// Names still to visit, in reverse order (the next is last).
    names: Vec<Vec<u8>>,
    /// Its destination path.
    path: PathBuf,
    depth: usize,
}

impl PlanWalk {
    /// Counts of what was yielded so far (of the whole plan once the walk is over).
    pub fn totals(&self) -> &Totals {
        &self.state.totals
    }

    /// The source directory that holds the item last yielded.
    pub(crate) fn source_dir(&self) -> Option<BorrowedFd<'_>> {
        match self.stack.last() {
            Some(level) => Some(level.fd.as_fd()),
            None => self.top_parent.as_ref().map(AsFd::as_fd),
        }
    }

    /// For a directory item just yielded: the directory itself, open for reading.
    pub(crate) fn entered_dir(&self) -> Option<BorrowedFd<'_>> {
        self.state.entered.as_ref().map(|l| l.fd.as_fd())
    }

    fn step(&mut self) -> anyhow::Result<Option<PlanItem>> {
        if let Some((parent, name, planned)) = self.top.take() {
            let st = stat_top(parent.as_fd(), &name, &self.source)?;
            if (st.st_ino, st.st_dev) != planned {
                bail!("the source changed since the plan was made");
            }
            let dest = self.dest.clone();
            let item = self.state.visit(parent.as_fd(), &name, &st, dest, 0);
            self.top_parent = Some(parent);
            return item.map(Some);
        }
        if let Some(level) = self.state.entered.take() {
            self.stack.push(level);
        }
        while let Some(level) = self.stack.last_mut() {
            let Some(name) = level.names.pop() else {
                self.stack.pop();
                continue;
            };
            let path = level.path.join(OsStr::from_bytes(&name));
            let depth = level.depth + 1;
            let st = lstat_at(level.fd.as_fd(), &name)
                .with_context(|| format!("reading '{}'", path.display()))?;
            return self
                .state
                .visit(level.fd.as_fd(), &name, &st, path, depth)
                .map(Some);
        }
        Ok(None)
    }
}

impl State {
    /// The item for `name` in `dir`; a directory is opened and read, to be entered next.
    fn visit(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        dest: PathBuf,
        depth: usize,
    ) -> anyhow::Result<PlanItem> {
        // The field types of `struct stat` differ between architectures: widen (or keep) each.
        #[allow(clippy::useless_conversion)]
        let nlink = u64::from(st.st_nlink);
        let nsec = |n| i64::try_from(n).unwrap_or(0);
        let mut item = PlanItem {
            path: dest,
            op: RestoreOp::Skip,
            size: 0,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            target: None,
            link_to: None,
            reason: None,
            src: SourceStat {
                depth,
                name: name.to_vec(),
                ino: st.st_ino,
                dev: st.st_dev,
                rdev: st.st_rdev,
                atime: (st.st_atime, nsec(st.st_atime_nsec)),
                mtime: (st.st_mtime, nsec(st.st_mtime_nsec)),
                nlink,
            },
        };
        if depth > 0 && st.st_dev != self.dev {
            item.reason = Some("a nested subvolume or mount point: not restored".into());
        } else {
            let (op, reason) = classify(st);
            item.op = op;
            item.reason = reason.map(str::to_string);
            match op {
                RestoreOp::Dir if depth >= MAX_DEPTH => {
                    bail!(
                        "{}; restore a directory further down on its own",
                        too_deep()
                    )
                }
                RestoreOp::Dir => {
                    let fd = super::resolve::open_checked_fd(dir, name, st)?;
                    let mut names = read_names(fd.as_fd())?;
                    names.reverse();
                    self.entered = Some(Level {
                        fd,
                        names,
                        path: item.path.clone(),
                        depth,
                    });
                }
                RestoreOp::File if nlink > 1 => match self.links.get(&st.st_ino) {
                    Some(first) => {
                        item.op = RestoreOp::Hardlink;
                        item.link_to = Some(first.clone());
                    }
                    None => {
                        self.links.insert(st.st_ino, item.path.clone());
                    }
                },
                RestoreOp::Symlink => {
                    item.target = Some(PathBuf::from(
                        readlink_at(dir, name).context("reading a symlink")?,
                    ));
                }
                _ => {}
            }
            if item.op == RestoreOp::File {
                item.size = u64::try_from(st.st_size).unwrap_or(0);
            }
        }
        self.totals.count(item.op, item.size);
        Ok(item)
    }
}

impl Iterator for PlanWalk {
    type Item = anyhow::Result<PlanItem>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.stack.clear();
                self.state.entered = None;
                let source = self.source.display();
                Some(Err(e.context(format!("reading '{source}' in the old root"))))
            }
        }
    }
}

/// What a source object becomes, by its type alone; for a skip, why.
fn classify(st: &Stat) -> (RestoreOp, Option<&'static str>) {
    match FileType::from_mode(st.st_mode) {
        Some(FileType::Dir) => (RestoreOp::Dir, None),
        Some(FileType::File) => (RestoreOp::File, None),
        Some(FileType::Symlink) => (RestoreOp::Symlink, None),
        Some(FileType::Fifo) => (RestoreOp::Fifo, None),
        Some(FileType::Char) => (RestoreOp::Char, None),
        Some(FileType::Block) => (RestoreOp::Block, None),
        Some(FileType::Socket) => (
            RestoreOp::Skip,
            Some("a socket: recreated by its program, not restored"),
        ),
        None => (RestoreOp::Skip, Some("an unknown file type")),
    }
}

/// The top of the source, not following it.
fn stat_top(parent: BorrowedFd<'_>, name: &[u8], source: &Path) -> anyhow::Result<Stat> {
    match lstat_at(parent, name) {
        Ok(st) => Ok(st),
        Err(Errno::NOENT) => bail!("'{}' does not exist in the old root", source.display()),
        Err(e) => Err(e).with_context(|| format!("reading '{}' in the old root", source.display())),
    }
}
