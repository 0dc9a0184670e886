//! One tabula at a time per filesystem.
//!
//! The lock is a `flock` on the top-level directory itself: every mount of a btrfs filesystem (in any
//! namespace) shares the same inode, so two tabula processes see the same lock without any state file.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::LockHeld;

/// Held for as long as it lives; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FsLock {
    _lock: Flock<OwnedFd>,
}

/// Takes the exclusive lock on the filesystem of `top`, waiting up to `wait` for another tabula.
pub fn lock_filesystem(top: BorrowedFd<'_>, what: &str, wait: Duration) -> Result<FsLock> {
    let deadline = crate::wait::Deadline::after(wait);
    loop {
        // A fresh open file description: flock locks belong to it, not to the inode alone.
        let fd = crate::btrfs::open_dir_at(top.as_fd(), ".")
            .context("opening the top level to lock it")?;
        match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(FsLock { _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) if !deadline.passed() => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(LockHeld {
                    what: what.to_string(),
                }
                .into());
            }
            Err((_, e)) => return Err(e).context("locking the filesystem"),
        }
    }
}
