//! Mount namespaces and the btrfs top level.
//!
//! tabula never mounts the top level where others can see it: the process first moves into a private
//! mount namespace of its own, mounts the top level (subvolid=5) on a throwaway directory, keeps an fd on
//! it and detaches the mount at once. Everything afterwards is fd-relative; when the process exits (or
//! dies) the kernel drops the mount, so there is nothing to clean up and nothing can leak.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use rustix::fs::{Mode, OFlags, open};

/// Moves this process into a private mount namespace (must run before any thread is started).
pub fn enter_private_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)
        .context("creating a private mount namespace (tabula must run as root)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making the mount namespace private")?;
    Ok(())
}

/// Where throwaway mount points go: `/run`, else `/tmp`, else `/`.
pub(crate) fn scratch_base() -> &'static Path {
    ["/run", "/tmp", "/"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"))
}

/// Mounts `device`'s subvolume `options` (e.g. `subvolid=5`) on a throwaway directory, returns an fd on
/// its root and detaches the mount. Call only inside a private namespace.
pub fn open_detached(device: &Path, options: &str) -> Result<OwnedFd> {
    let template = scratch_base().join("tabula-mnt.XXXXXX");
    let dir: PathBuf = crate::fsx::make_temp_dir(&scratch_base().join("tabula-mnt."))
        .map_err(|e| e.errno())
        .with_context(|| format!("creating a temporary mount point '{}'", template.display()))?;
    let result = (|| -> Result<OwnedFd> {
        mount(
            Some(device),
            &dir,
            Some("btrfs"),
            MsFlags::MS_NOATIME,
            Some(options),
        )
        .with_context(|| format!("mounting '{}' ({options})", device.display()))?;
        let fd = open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        // Detach whatever happened: the fd (if any) keeps the filesystem reachable for us alone.
        let detached = umount2(&dir, MntFlags::MNT_DETACH);
        let fd = fd.with_context(|| format!("opening the mounted '{}'", device.display()))?;
        detached
            .with_context(|| format!("detaching the temporary mount of '{}'", device.display()))?;
        Ok(fd)
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}

/// The btrfs top level (subvolid=5) of `device`, private to this process.
pub fn open_top_level(device: &Path) -> Result<OwnedFd> {
    open_detached(device, "subvolid=5")
}
