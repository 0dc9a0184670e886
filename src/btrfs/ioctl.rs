//! Raw btrfs ioctls: the only place in tabula that uses `unsafe`.
//!
//! Struct layouts mirror `<linux/btrfs.h>`; sizes and offsets are pinned at compile time so a typo cannot
//! silently change the request numbers (nix derives them from `size_of::<T>()`). Every wrapper is safe to
//! call: it takes a borrowed fd and plain Rust values, and the kernel only reads/writes the struct we own.
#![allow(unsafe_code)]

use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

const MAGIC: u8 = 0x94;
/// `BTRFS_SUBVOL_NAME_MAX`.
pub const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_PATH_NAME_MAX`.
pub const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_VOL_NAME_MAX`.
pub const VOL_NAME_MAX: usize = 255;
/// `BTRFS_SUBVOL_RDONLY`, as used in vol_args_v2.flags and SUBVOL_{GET,SET}FLAGS.
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_MAX_ROOTREF_BUFFER_NUM`.
pub const MAX_ROOTREF_BUFFER_NUM: usize = 255;
const INO_LOOKUP_USER_PATH_MAX: usize = 4080 - VOL_NAME_MAX - 1;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
pub struct VolArgs {
    pub fd: i64,
    pub name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (the qgroup-inherit union is left zeroed: we never pass one).
#[repr(C)]
pub struct VolArgsV2 {
    pub fd: i64,
    pub transid: u64,
    pub flags: u64,
    pub unused: [u64; 4],
    /// Union of `name[SUBVOL_NAME_MAX + 1]`, `devid` and `subvolid`.
    pub name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_timespec`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Timespec {
    pub sec: u64,
    pub nsec: u32,
}

/// `struct btrfs_ioctl_get_subvol_info_args`.
#[repr(C)]
pub struct GetSubvolInfoArgs {
    pub treeid: u64,
    pub name: [u8; VOL_NAME_MAX + 1],
    pub parent_id: u64,
    pub dirid: u64,
    pub generation: u64,
    pub flags: u64,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub received_uuid: [u8; 16],
    pub ctransid: u64,
    pub otransid: u64,
    pub stransid: u64,
    pub rtransid: u64,
    pub ctime: Timespec,
    pub otime: Timespec,
    pub stime: Timespec,
    pub rtime: Timespec,
    pub reserved: [u64; 8],
}

/// One `rootref` item: a child subvolume and the directory (in the parent) that holds it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RootRef {
    pub treeid: u64,
    pub dirid: u64,
}

/// `struct btrfs_ioctl_get_subvol_rootref_args`.
#[repr(C)]
pub struct GetSubvolRootrefArgs {
    pub min_treeid: u64,
    pub rootref: [RootRef; MAX_ROOTREF_BUFFER_NUM],
    pub num_items: u8,
    pub align: [u8; 7],
}

/// `struct btrfs_ioctl_ino_lookup_user_args`.
#[repr(C)]
pub struct InoLookupUserArgs {
    pub dirid: u64,
    pub treeid: u64,
    pub name: [u8; VOL_NAME_MAX + 1],
    pub path: [u8; INO_LOOKUP_USER_PATH_MAX],
}

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SearchKey {
    pub tree_id: u64,
    pub min_objectid: u64,
    pub max_objectid: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub min_transid: u64,
    pub max_transid: u64,
    pub min_type: u32,
    pub max_type: u32,
    pub nr_items: u32,
    pub unused: u32,
    pub unused1: u64,
    pub unused2: u64,
    pub unused3: u64,
    pub unused4: u64,
}

/// `struct btrfs_ioctl_search_args`.
#[repr(C)]
pub struct SearchArgs {
    pub key: SearchKey,
    pub buf: [u8; 4096 - size_of::<SearchKey>()],
}

/// `struct btrfs_ioctl_qgroup_create_args`.
#[repr(C)]
pub struct QgroupCreateArgs {
    pub create: u64,
    pub qgroupid: u64,
}

/// `struct btrfs_ioctl_send_args`.
#[repr(C)]
pub struct SendArgs {
    pub send_fd: i64,
    pub clone_sources_count: u64,
    pub clone_sources: *const u64,
    pub parent_root: u64,
    pub flags: u64,
    pub version: u32,
    pub reserved: [u8; 28],
}

/// `BTRFS_SEND_FLAG_NO_FILE_DATA`: writes become `update_extent` commands carrying no bytes.
pub const SEND_FLAG_NO_FILE_DATA: u64 = 0x1;

/// `struct fiemap_extent` (the generic `FS_IOC_FIEMAP`, used to see whether a small file's data is
/// already an inline extent in the filesystem tree).
#[repr(C)]
pub struct FiemapExtent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub reserved64: [u64; 2],
    pub flags: u32,
    pub reserved: [u32; 3],
}

/// `struct fiemap` with room for two extents (one is all a metadata file may have).
#[repr(C)]
pub struct Fiemap {
    pub start: u64,
    pub length: u64,
    pub flags: u32,
    pub mapped_extents: u32,
    pub extent_count: u32,
    pub reserved: u32,
    pub extents: [FiemapExtent; 2],
}

/// `FIEMAP_EXTENT_LAST`, `FIEMAP_EXTENT_UNKNOWN`, `FIEMAP_EXTENT_DELALLOC`, `FIEMAP_EXTENT_DATA_INLINE`.
pub const FIEMAP_EXTENT_LAST: u32 = 0x1;
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
/// `sizeof(struct fiemap)` in the kernel's request code (the extent array is a flexible member).
const FIEMAP_HEADER: usize = 32;

// Layouts pinned against <linux/btrfs.h> (values from a C program printing sizeof/offsetof).
const _: () = assert!(size_of::<VolArgs>() == 4096);
const _: () = assert!(size_of::<VolArgsV2>() == 4096);
const _: () = assert!(offset_of!(VolArgsV2, name) == 56);
const _: () = assert!(size_of::<Timespec>() == 16);
const _: () = assert!(size_of::<GetSubvolInfoArgs>() == 504);
const _: () = assert!(offset_of!(GetSubvolInfoArgs, parent_id) == 264);
const _: () = assert!(offset_of!(GetSubvolInfoArgs, uuid) == 296);
const _: () = assert!(offset_of!(GetSubvolInfoArgs, ctransid) == 344);
const _: () = assert!(offset_of!(GetSubvolInfoArgs, otime) == 392);
const _: () = assert!(size_of::<GetSubvolRootrefArgs>() == 4096);
const _: () = assert!(offset_of!(GetSubvolRootrefArgs, num_items) == 4088);
const _: () = assert!(size_of::<InoLookupUserArgs>() == 4096);
const _: () = assert!(offset_of!(InoLookupUserArgs, path) == 272);
const _: () = assert!(size_of::<SearchKey>() == 104);
const _: () = assert!(size_of::<SearchArgs>() == 4096);
const _: () = assert!(size_of::<QgroupCreateArgs>() == 16);
const _: () = assert!(size_of::<SendArgs>() == 72);
const _: () = assert!(offset_of!(SendArgs, flags) == 32);
const _: () = assert!(size_of::<FiemapExtent>() == 56);
const _: () = assert!(offset_of!(Fiemap, extents) == FIEMAP_HEADER);

nix::ioctl_none!(btrfs_sync, MAGIC, 8);
nix::ioctl_write_int!(ficlone, MAGIC, 9);
nix::ioctl_write_ptr!(btrfs_snap_destroy, MAGIC, 15, VolArgs);
nix::ioctl_readwrite!(btrfs_tree_search, MAGIC, 17, SearchArgs);
nix::ioctl_write_ptr!(btrfs_default_subvol, MAGIC, 19, u64);
nix::ioctl_write_ptr!(btrfs_snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_write_ptr!(btrfs_subvol_create_v2, MAGIC, 24, VolArgsV2);
nix::ioctl_read!(btrfs_subvol_getflags, MAGIC, 25, u64);
nix::ioctl_write_ptr!(btrfs_subvol_setflags, MAGIC, 26, u64);
nix::ioctl_read!(btrfs_get_subvol_info, MAGIC, 60, GetSubvolInfoArgs);
nix::ioctl_readwrite!(btrfs_get_subvol_rootref, MAGIC, 61, GetSubvolRootrefArgs);
nix::ioctl_readwrite!(btrfs_ino_lookup_user, MAGIC, 62, InoLookupUserArgs);
nix::ioctl_write_ptr!(btrfs_qgroup_create, MAGIC, 42, QgroupCreateArgs);
nix::ioctl_write_ptr!(btrfs_snap_destroy_v2, MAGIC, 63, VolArgsV2);
nix::ioctl_write_ptr!(btrfs_scan_dev, MAGIC, 4, VolArgs);
nix::ioctl_write_ptr!(btrfs_send, MAGIC, 38, SendArgs);
nix::ioctl_readwrite_bad!(
    fs_fiemap,
    nix::request_code_readwrite!(b'f', 11, FIEMAP_HEADER),
    Fiemap
);

/// A zeroed, heap-allocated ioctl argument (the 4 KiB structs do not belong on a small initrd stack).
fn zeroed<T: Zeroable>() -> Box<T> {
    // SAFETY: `Zeroable` is only implemented for the plain-integer `repr(C)` structs above, for which the
    // all-zero bit pattern is a valid value.
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

/// Marker for the argument structs above: plain integers and arrays, all-zero is valid.
///
/// # Safety
/// Implement only for `repr(C)` types made solely of integers and integer arrays.
unsafe trait Zeroable {}
// SAFETY: all of these are repr(C) structs of integers and integer arrays.
unsafe impl Zeroable for VolArgs {}
// SAFETY: as above.
unsafe impl Zeroable for Fiemap {}
// SAFETY: as above.
unsafe impl Zeroable for VolArgsV2 {}
// SAFETY: as above.
unsafe impl Zeroable for GetSubvolInfoArgs {}
// SAFETY: as above.
unsafe impl Zeroable for GetSubvolRootrefArgs {}
// SAFETY: as above.
unsafe impl Zeroable for InoLookupUserArgs {}
// SAFETY: as above.
unsafe impl Zeroable for SearchArgs {}

/// Copies `name` into a NUL-terminated fixed buffer; `EINVAL` for names that do not fit or hold NUL.
fn put_name(buf: &mut [u8], name: &[u8]) -> Result<(), Errno> {
    if name.is_empty() || name.len() >= buf.len() || name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    buf[..name.len()].copy_from_slice(name);
    Ok(())
}

/// `BTRFS_IOC_SUBVOL_CREATE_V2`: create subvolume `name` in directory `dir`.
pub fn subvol_create(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let mut args = zeroed::<VolArgsV2>();
    put_name(&mut args.name, name)?;
    // SAFETY: request number matches VolArgsV2 (derived from its size); args lives across the call.
    unsafe { btrfs_subvol_create_v2(dir.as_raw_fd(), &*args) }.map(drop)
}

/// `BTRFS_IOC_SNAP_CREATE_V2`: snapshot the subvolume open as `source` to `dir/name`.
pub fn snap_create(
    source: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &[u8],
    readonly: bool,
) -> Result<(), Errno> {
    let mut args = zeroed::<VolArgsV2>();
    args.fd = i64::from(source.as_raw_fd());
    args.flags = if readonly { SUBVOL_RDONLY } else { 0 };
    put_name(&mut args.name, name)?;
    // SAFETY: as above; the kernel only reads args.
    unsafe { btrfs_snap_create_v2(dir.as_raw_fd(), &*args) }.map(drop)
}

/// `BTRFS_IOC_SNAP_DESTROY_V2` by name, in directory `dir`.
pub fn snap_destroy_v2(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let mut args = zeroed::<VolArgsV2>();
    put_name(&mut args.name, name)?;
    // SAFETY: as above.
    unsafe { btrfs_snap_destroy_v2(dir.as_raw_fd(), &*args) }.map(drop)
}

/// `BTRFS_IOC_SNAP_DESTROY` (v1) by name, for kernels before 5.7.
pub fn snap_destroy_v1(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let mut args = zeroed::<VolArgs>();
    put_name(&mut args.name, name)?;
    // SAFETY: as above.
    unsafe { btrfs_snap_destroy(dir.as_raw_fd(), &*args) }.map(drop)
}

/// `BTRFS_IOC_DEFAULT_SUBVOL`: make subvolume `id` the default of the filesystem `fd` is on.
pub fn default_subvol(fd: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads one u64.
    unsafe { btrfs_default_subvol(fd.as_raw_fd(), &id) }.map(drop)
}

/// `BTRFS_IOC_SEND` of the read-only subvolume `subvol` as a difference from the read-only subvolume
/// `parent_root` (an id on the same filesystem), written to `out` (a pipe: the call blocks until the
/// whole stream is written, so someone must be reading it). `flags` as [`SEND_FLAG_NO_FILE_DATA`].
pub fn send(
    subvol: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    parent_root: u64,
    flags: u64,
) -> Result<(), Errno> {
    let args = SendArgs {
        send_fd: i64::from(out.as_raw_fd()),
        clone_sources_count: 0,
        clone_sources: std::ptr::null(),
        parent_root,
        flags,
        version: 0,
        reserved: [0; 28],
    };
    // SAFETY: the kernel reads the struct; no clone-source array is passed (count 0, null pointer).
    unsafe { btrfs_send(subvol.as_raw_fd(), &args) }.map(drop)
}

/// `BTRFS_IOC_SUBVOL_GETFLAGS`.
pub fn subvol_getflags(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut flags = 0u64;
    // SAFETY: the kernel writes one u64 into `flags`.
    unsafe { btrfs_subvol_getflags(fd.as_raw_fd(), &mut flags) }?;
    Ok(flags)
}

/// `BTRFS_IOC_SUBVOL_SETFLAGS`.
pub fn subvol_setflags(fd: BorrowedFd<'_>, flags: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads one u64.
    unsafe { btrfs_subvol_setflags(fd.as_raw_fd(), &flags) }.map(drop)
}

/// `BTRFS_IOC_GET_SUBVOL_INFO` for the subvolume containing `fd`.
pub fn get_subvol_info(fd: BorrowedFd<'_>) -> Result<Box<GetSubvolInfoArgs>, Errno> {
    let mut args = zeroed::<GetSubvolInfoArgs>();
    // SAFETY: the kernel fills the struct we own.
    unsafe { btrfs_get_subvol_info(fd.as_raw_fd(), &mut *args) }?;
    Ok(args)
}

/// `BTRFS_IOC_GET_SUBVOL_ROOTREF` from `min_treeid`; `Ok((items, more))`, `more` when the kernel's buffer
/// was full (EOVERFLOW) and the caller must continue past the last item.
pub fn get_subvol_rootref(
    fd: BorrowedFd<'_>,
    min_treeid: u64,
) -> Result<(Vec<RootRef>, bool), Errno> {
    let mut args = zeroed::<GetSubvolRootrefArgs>();
    args.min_treeid = min_treeid;
    // SAFETY: the kernel reads min_treeid and fills rootref/num_items of the struct we own.
    let more = match unsafe { btrfs_get_subvol_rootref(fd.as_raw_fd(), &mut *args) } {
        Ok(_) => false,
        Err(Errno::EOVERFLOW) => true,
        Err(e) => return Err(e),
    };
    let n = usize::from(args.num_items).min(MAX_ROOTREF_BUFFER_NUM);
    Ok((args.rootref[..n].to_vec(), more))
}

/// `BTRFS_IOC_INO_LOOKUP_USER`: the name of subvolume `treeid` and the path from the subvolume root of
/// `fd` to its directory `dirid`.
pub fn ino_lookup_user(
    fd: BorrowedFd<'_>,
    dirid: u64,
    treeid: u64,
) -> Result<(Vec<u8>, Vec<u8>), Errno> {
    let mut args = zeroed::<InoLookupUserArgs>();
    args.dirid = dirid;
    args.treeid = treeid;
    // SAFETY: the kernel reads dirid/treeid and writes name/path of the struct we own.
    unsafe { btrfs_ino_lookup_user(fd.as_raw_fd(), &mut *args) }?;
    Ok((c_bytes(&args.name), c_bytes(&args.path)))
}

/// `BTRFS_IOC_TREE_SEARCH` with `key`; returns the raw result buffer and the number of items.
pub fn tree_search(fd: BorrowedFd<'_>, key: SearchKey) -> Result<(Vec<u8>, u32), Errno> {
    let mut args = zeroed::<SearchArgs>();
    args.key = key;
    // SAFETY: the kernel reads the key and fills buf/key.nr_items of the struct we own.
    unsafe { btrfs_tree_search(fd.as_raw_fd(), &mut *args) }?;
    Ok((args.buf.to_vec(), args.key.nr_items))
}

/// `BTRFS_IOC_SYNC`: commit the current transaction of the filesystem.
pub fn sync(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: no argument.
    unsafe { btrfs_sync(fd.as_raw_fd()) }.map(drop)
}

/// `sync_file_range(fd, 0, 0, WAIT_BEFORE | WRITE | WAIT_AFTER)`: writes the whole file's dirty pages back
/// and waits, without a log or transaction commit.
pub fn write_back(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::libc;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain syscall on a borrowed, open fd; no memory is passed.
    Errno::result(unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags) }).map(drop)
}

/// `FS_IOC_FIEMAP` over the whole file `fd`: the flags of its first extents (at most two).
pub fn fiemap_flags(fd: BorrowedFd<'_>) -> Result<Vec<u32>, Errno> {
    let mut args = zeroed::<Fiemap>();
    args.length = u64::MAX;
    args.extent_count = 2;
    // SAFETY: `args` is a valid, writable `struct fiemap` with room for `extent_count` extents.
    unsafe { fs_fiemap(fd.as_raw_fd(), &mut *args) }?;
    let n = usize::try_from(args.mapped_extents).unwrap_or(usize::MAX);
    Ok(args.extents.iter().take(n).map(|e| e.flags).collect())
}

/// `BTRFS_IOC_SCAN_DEV` on `/dev/btrfs-control` (`control`): registers the block device at `path` as a
/// member of its btrfs filesystem, what udev does with `btrfs device scan` (a multi-device filesystem
/// mounts only when the kernel knows all its members).
pub fn scan_dev(control: BorrowedFd<'_>, path: &[u8]) -> Result<(), Errno> {
    let mut args = zeroed::<VolArgs>();
    put_name(&mut args.name, path)?;
    // SAFETY: request number matches VolArgs (derived from its size); the kernel only reads args.
    unsafe { btrfs_scan_dev(control.as_raw_fd(), &*args) }.map(drop)
}

/// `BTRFS_IOC_QGROUP_CREATE` with `create = 0`: remove qgroup `0/<subvolume id>`.
pub fn qgroup_destroy(fd: BorrowedFd<'_>, subvolume_id: u64) -> Result<(), Errno> {
    let args = QgroupCreateArgs {
        create: 0,
        qgroupid: subvolume_id,
    };
    // SAFETY: request number matches QgroupCreateArgs; the kernel only reads args.
    unsafe { btrfs_qgroup_create(fd.as_raw_fd(), &args) }.map(drop)
}

/// `FICLONE`: make `dst` share all of `src`'s extents (a reflink copy).
pub fn clone_file(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> Result<(), Errno> {
    let src = nix::libc::c_ulong::try_from(src.as_raw_fd()).map_err(|_| Errno::EBADF)?;
    // SAFETY: FICLONE takes the source fd by value; both fds are borrowed and open for the call.
    unsafe { ficlone(dst.as_raw_fd(), src) }.map(drop)
}

fn c_bytes(buf: &[u8]) -> Vec<u8> {
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    buf[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request numbers as printed by a C program including <linux/btrfs.h> and <linux/fs.h>.
    #[test]
    fn request_numbers_match_the_kernel_headers() {
        use nix::{
            request_code_none, request_code_read, request_code_readwrite, request_code_write,
        };
        assert_eq!(request_code_none!(MAGIC, 8), 0x9408);
        assert_eq!(
            request_code_write!(MAGIC, 9, size_of::<nix::libc::c_int>()),
            0x4004_9409
        );
        assert_eq!(
            request_code_write!(MAGIC, 15, size_of::<VolArgs>()),
            0x5000_940f
        );
        assert_eq!(
            request_code_readwrite!(MAGIC, 17, size_of::<SearchArgs>()),
            0xd000_9411
        );
        assert_eq!(
            request_code_write!(MAGIC, 23, size_of::<VolArgsV2>()),
            0x5000_9417
        );
        assert_eq!(
            request_code_write!(MAGIC, 24, size_of::<VolArgsV2>()),
            0x5000_9418
        );
        assert_eq!(request_code_read!(MAGIC, 25, size_of::<u64>()), 0x8008_9419);
        assert_eq!(
            request_code_write!(MAGIC, 26, size_of::<u64>()),
            0x4008_941a
        );
        assert_eq!(
            request_code_read!(MAGIC, 60, size_of::<GetSubvolInfoArgs>()),
            0x81f8_943c
        );
        assert_eq!(
            request_code_readwrite!(MAGIC, 61, size_of::<GetSubvolRootrefArgs>()),
            0xd000_943d
        );
        assert_eq!(
            request_code_readwrite!(MAGIC, 62, size_of::<InoLookupUserArgs>()),
            0xd000_943e
        );
        assert_eq!(
            request_code_write!(MAGIC, 42, size_of::<QgroupCreateArgs>()),
            0x4010_942a
        );
        assert_eq!(
            request_code_write!(MAGIC, 63, size_of::<VolArgsV2>()),
            0x5000_943f
        );
        assert_eq!(
            request_code_write!(MAGIC, 4, size_of::<VolArgs>()),
            0x5000_9404
        );
        assert_eq!(
            request_code_readwrite!(b'f', 11, FIEMAP_HEADER),
            0xc020_660b
        );
    }

    #[test]
    fn names_are_checked_before_the_kernel_sees_them() {
        let mut buf = [0u8; 8];
        assert_eq!(put_name(&mut buf, b""), Err(Errno::EINVAL));
        assert_eq!(put_name(&mut buf, b"a\0b"), Err(Errno::EINVAL));
        assert_eq!(put_name(&mut buf, b"12345678"), Err(Errno::EINVAL));
        assert_eq!(put_name(&mut buf, b"1234567"), Ok(()));
        assert_eq!(&buf, b"1234567\0");
    }
}
