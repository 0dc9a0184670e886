//! Extended attributes, read and written without following symlinks.
//!
//! nix has no xattr calls; rustix's are safe wrappers. An object we do not hold open (a symlink, a
//! device, a fifo) is named `/proc/self/fd/<dirfd>/<name>` and used with the `l*` calls: the magic link
//! resolves to exactly the directory we hold open, and the final component is not followed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

/// Name → value.
pub(crate) type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// `/proc/self/fd/<dir>/<name>`: `name` relative to an open directory, as a path.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

/// The attributes of `name` in `dir`, not following it if it is a symlink.
pub(crate) fn list_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Xattrs, Errno> {
    let path = proc_path(dir, name);
    read_all(
        || rustix::fs::llistxattr_query(&path),
        |buf| rustix::fs::llistxattr(&path, buf),
        |n| rustix::fs::lgetxattr_query(&path, n),
        |n, buf| rustix::fs::lgetxattr(&path, n, buf),
    )
}

/// The attributes of an open file or directory.
pub(crate) fn list_fd(fd: BorrowedFd<'_>) -> Result<Xattrs, Errno> {
    read_all(
        || rustix::fs::flistxattr_query(fd),
        |buf| rustix::fs::flistxattr(fd, buf),
        |n| rustix::fs::fgetxattr_query(fd, n),
        |n, buf| rustix::fs::fgetxattr(fd, n, buf),
    )
}

/// Set every attribute on an open file or directory; returns the names that failed, with why.
pub(crate) fn set_fd(fd: BorrowedFd<'_>, attrs: &Xattrs) -> Vec<(Vec<u8>, Errno)> {
    let mut failed = Vec::new();
    for (name, value) in attrs {
        if let Err(e) = rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
            failed.push((name.clone(), e));
        }
    }
    failed
}

/// Set every attribute on `name` in `dir` without following it; returns the failures.
pub(crate) fn set_at(dir: BorrowedFd<'_>, name: &[u8], attrs: &Xattrs) -> Vec<(Vec<u8>, Errno)> {
    let path = proc_path(dir, name);
    let mut failed = Vec::new();
    for (key, value) in attrs {
        if let Err(e) = rustix::fs::lsetxattr(&path, key.as_slice(), value, XattrFlags::empty()) {
            failed.push((key.clone(), e));
        }
    }
    failed
}

/// Reads a variable-size value: ask the size, fetch, retry when it grew in between (ERANGE).
fn read_sized(
    query: impl Fn() -> Result<usize, Errno>,
    fetch: impl Fn(&mut [u8]) -> Result<usize, Errno>,
) -> Result<Vec<u8>, Errno> {
    for _ in 0..8 {
        let size = query()?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match fetch(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

fn read_all(
    list_query: impl Fn() -> Result<usize, Errno>,
    list: impl Fn(&mut [u8]) -> Result<usize, Errno>,
    get_query: impl Fn(&[u8]) -> Result<usize, Errno>,
    get: impl Fn(&[u8], &mut [u8]) -> Result<usize, Errno>,
) -> Result<Xattrs, Errno> {
    let names = match read_sized(list_query, list) {
        Ok(names) => names,
        // No xattr support on this filesystem: nothing to compare or copy.
        Err(Errno::NOTSUP) => return Ok(Xattrs::new()),
        Err(e) => return Err(e),
    };
    let mut out = Xattrs::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match read_sized(|| get_query(name), |buf| get(name, buf)) {
            Ok(value) => {
                out.insert(name.to_vec(), value);
            }
            // Removed between list and get.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
