//! One tabula at a time per filesystem.
//!
//! The lock is a `flock` on the top-level directory itself: every mount of a btrfs filesystem (in any
//! namespace) shares the same inode, so two tabula processes see the same lock without any state file.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use crate::error::LockHeld;

/// Held for as long as it lives; released when dropped (closing the only fd of its open file
/// description drops the lock) or when the process dies.
#[derive(Debug)]
pub struct FsLock {
    _locked: OwnedFd,
}

/// Takes the exclusive lock on the filesystem of `top`, waiting up to `wait` for another tabula.
pub fn lock_filesystem(top: BorrowedFd<'_>, what: &str, wait: Duration) -> Result<FsLock> {
    // A fresh open file description each try: flock locks belong to it, not to the inode alone.
    lock_exclusive(what, wait, || {
        crate::fsx::open_dir_beneath(top.as_fd(), ".".as_ref())
            .map_err(|e| e.errno())
            .context("opening the top level to lock it")
    })
}

/// Takes an exclusive `flock` on what `open` opens (afresh for each try), waiting up to `wait` for the
/// holder; [`LockHeld`] names `what` when it does not let go in time.
pub fn lock_exclusive(
    what: &str,
    wait: Duration,
    mut open: impl FnMut() -> Result<OwnedFd>,
) -> Result<FsLock> {
    let deadline = crate::wait::Deadline::after(wait);
    loop {
        let fd = open()?;
        match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(FsLock { _locked: fd }),
            Err(Errno::WOULDBLOCK) if !deadline.passed() => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(LockHeld {
                    what: what.to_string(),
                }
                .into());
            }
            Err(e) => return Err(e).with_context(|| format!("locking {what}")),
        }
    }
}
