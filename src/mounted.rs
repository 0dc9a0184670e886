//! Which subvolumes of a btrfs filesystem are mounted anywhere on the machine.
//!
//! Deleting or retiring a mounted subvolume succeeds and pulls it out from under whoever uses it (a
//! container, another namespace, the running system), so both must know what is mounted *anywhere*, not
//! just in tabula's own namespace. Mounts are matched by filesystem and subvolume id, never by device
//! path: the source path in mountinfo may name another member device of a multi-device filesystem, or a
//! device node that no longer exists (`/dev/root`).
//!
//! The filesystem is identified by its superblock's device number, the `major:minor` field of mountinfo.
//! btrfs gives each mounted filesystem one anonymous device, shared by every mount of it in every
//! namespace and whichever member device it was mounted through, and unique while it is mounted (it is:
//! tabula holds a mount of it). It is found from tabula's own mount, by mount id. The subvolume is the
//! `subvolid=` of the mount's super options, which names the subvolume holding the mount's root, so a
//! bind mount of a directory deep inside a root counts as that root.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use anyhow::{Context, Result};
use tracing::warn;

use crate::btrfs;
use crate::error::Refusal;
use crate::mountinfo;

/// Subvolumes of one filesystem mounted anywhere, each with one place it is mounted (for messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounted {
    /// Subvolume id → where ("'/mnt/x' in the mount namespace of pid 123").
    pub by_id: BTreeMap<u64, String>,
}

impl Mounted {
    /// Scans every mount namespace for mounts of the filesystem of `top` (the top level, opened from
    /// `device`).
    pub fn scan(top: BorrowedFd<'_>, device: &Path) -> Result<Mounted> {
        let dev = superblock_dev(top, device)?;
        let all = mountinfo::read_all_namespaces()
            .context("reading the mounts of every mount namespace")?;
        if let Some(first) = all.denied.first() {
            // Real root on a host reads every process; only an LSM or a container denies it.
            warn!(
                "cannot read the mount namespace of {} process(es) (permission denied, e.g. pid {first}): \
                 a retired root mounted only there is not seen",
                all.denied.len()
            );
        }
        Ok(Mounted::of(dev, &all.namespaces))
    }

    /// The subvolumes of the filesystem with superblock device `dev` mounted in `namespaces`.
    pub fn of(dev: (u32, u32), namespaces: &[mountinfo::Namespace]) -> Mounted {
        let mut by_id = BTreeMap::new();
        for ns in namespaces {
            for m in &ns.mounts {
                if m.dev != dev || m.fs_type != "btrfs" {
                    continue;
                }
                if let Some(id) = m.subvol_id {
                    by_id.entry(id).or_insert_with(|| {
                        format!(
                            "'{}' in the mount namespace of pid {}",
                            m.mount_point.display(),
                            ns.pid
                        )
                    });
                }
            }
        }
        Mounted { by_id }
    }

    /// The first of `ids` that is mounted, with where.
    pub fn find<'a>(&'a self, ids: &[u64]) -> Option<(u64, &'a str)> {
        ids.iter()
            .find_map(|id| self.by_id.get(id).map(|w| (*id, w.as_str())))
    }
}

/// The superblock device (`major:minor` in mountinfo) of the filesystem of `top`, which was opened from
/// `device`.
///
/// tabula's own mount of the top level is detached (see [`crate::mount`]), so it has no mountinfo line:
/// the device is mounted once more on a throwaway directory (the same superblock, so the same device
/// number), its line read, and the mount dropped. That it is the same filesystem is checked by the
/// identity of the top-level directory. Call only in tabula's private mount namespace.
pub fn superblock_dev(top: BorrowedFd<'_>, device: &Path) -> Result<(u32, u32)> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let base = crate::mount::scratch_base();
    let template = base.join("tabula-dev.XXXXXX");
    let dir = crate::fsx::make_temp_dir(&base.join("tabula-dev."))
        .map_err(|e| e.errno())
        .with_context(|| format!("creating a temporary mount point '{}'", template.display()))?;
    let result = (|| -> Result<(u32, u32)> {
        mount(
            Some(device),
            &dir,
            Some("btrfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("subvolid=5"),
        )
        .with_context(|| format!("mounting '{}' to identify it", device.display()))?;
        let found = (|| -> Result<(u32, u32)> {
            let here = rustix::fs::stat(&dir).context("reading the temporary mount")?;
            let there = rustix::fs::fstat(top).context("reading the top level")?;
            anyhow::ensure!(
                (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino),
                "'{}' now holds another filesystem than the one opened",
                device.display()
            );
            let own = mountinfo::read().context("reading /proc/thread-self/mountinfo")?;
            own.iter()
                .rev()
                .find(|m| m.mount_point == dir)
                .map(|m| m.dev)
                .context("the temporary mount is not in this thread's mountinfo")
        })();
        let _ = umount2(&dir, MntFlags::MNT_DETACH);
        found
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Refuses (rule `root-mounted`) when subvolume `root` of the top level, or any subvolume nested in it,
/// is mounted anywhere: a mounted root is in use, and retiring it would freeze it read-only under the
/// programs running on it. In the initrd nothing of it is mounted yet and this costs one /proc walk.
pub fn refuse_mounted_root(top: BorrowedFd<'_>, device: &Path, root: &str) -> Result<()> {
    let mounted = Mounted::scan(top, device)?;
    // Only the top level (tabula's own mount) mounted: nothing inside `root` can be, no need to list it.
    if mounted.by_id.keys().all(|id| *id == btrfs::TOP_LEVEL_ID) {
        return Ok(());
    }
    let Some(info) = crate::layout::entry_at(top, root)?.subvolume().cloned() else {
        return Ok(());
    };
    let ids = subvolume_tree(top, root, info.id)?;
    if let Some((id, place)) = mounted.find(&ids) {
        let what = if id == info.id {
            format!("'{root}' (subvolume {id}) is mounted at {place}")
        } else {
            format!("subvolume {id} inside '{root}' is mounted at {place}")
        };
        return Err(Refusal::new(
            "root-mounted",
            format!(
                "{what}: a root in use is never retired (the rollback runs in the initrd, before the \
                 root is mounted)"
            ),
        )
        .into());
    }
    Ok(())
}

/// Ids of subvolume `dir/name` (whose id is `id`) and every subvolume nested in it, found by id (never
/// by path): what must not be mounted for `name` to be retired or deleted.
pub fn subvolume_tree(dir: BorrowedFd<'_>, name: &str, id: u64) -> Result<Vec<u64>> {
    fn walk(dir: BorrowedFd<'_>, out: &mut Vec<u64>, depth: usize) -> Result<()> {
        anyhow::ensure!(depth < 4096, "subvolumes nested too deep");
        for c in btrfs::child_subvolumes(dir)? {
            out.push(c.id);
            let fd = crate::fsx::open_dir_beneath(dir, &c.path)
                .map_err(|e| e.errno())
                .with_context(|| format!("opening '{}'", c.path.display()))?;
            walk(fd.as_fd(), out, depth + 1)?;
        }
        Ok(())
    }
    let fd = crate::layout::open_subvolume(dir, name)?;
    let mut out = vec![id];
    walk(fd.as_fd(), &mut out, 0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_by_superblock_and_subvolume_not_by_source() {
        let ns = |pid, text: &str| mountinfo::Namespace {
            pid,
            mounts: mountinfo::parse(text),
        };
        let namespaces = [
            ns(
                1,
                "22 1 0:47 / / rw - btrfs /dev/root rw,subvolid=256,subvol=/root\n\
                 23 22 0:47 /old_roots/x/var /v rw - btrfs /dev/vdb rw,subvolid=300,subvol=/old_roots/x\n\
                 24 22 0:48 / /other rw - btrfs /dev/vda rw,subvolid=301,subvol=/\n\
                 25 22 0:47 / /t rw - tmpfs tmpfs rw\n",
            ),
            ns(
                77,
                "40 39 0:47 /old_roots/y /c rw - btrfs /gone rw,subvolid=302,subvol=/old_roots/y\n",
            ),
        ];
        let m = Mounted::of((0, 47), &namespaces);
        assert_eq!(m.by_id.keys().copied().collect::<Vec<_>>(), [256, 300, 302]);
        assert_eq!(
            m.find(&[1, 302]),
            Some((302, "'/c' in the mount namespace of pid 77"))
        );
        assert_eq!(m.find(&[301]), None, "another filesystem's subvolume 301");
    }
}
