//! Finding the btrfs device: a path, `UUID=` or `LABEL=`, waiting (bounded) for it to appear.
//!
//! A busybox initrd has no udev and so no `/dev/disk/by-uuid`: tabula reads the btrfs superblock of every
//! block device listed in `/sys/class/block` itself.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::DeviceSpec;
use crate::error::Refusal;

/// Byte offset of the primary btrfs superblock.
const SUPERBLOCK_OFFSET: u64 = 64 * 1024;
const MAGIC: &[u8; 8] = b"_BHRfS_M";

/// What a btrfs superblock says about its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The filesystem UUID (`fsid`), lowercase with dashes.
    pub fsid: String,
    /// The label, possibly empty.
    pub label: String,
}

/// Parses the first 4 KiB of a btrfs superblock; `None` when the magic is not there.
pub fn parse_superblock(buf: &[u8]) -> Option<Superblock> {
    if buf.get(64..72)? != MAGIC {
        return None;
    }
    let fsid: [u8; 16] = buf.get(32..48)?.try_into().ok()?;
    let label = buf.get(299..299 + 256)?;
    let end = label.iter().position(|b| *b == 0).unwrap_or(label.len());
    Some(Superblock {
        fsid: crate::btrfs::format_uuid(&fsid).unwrap_or_default(),
        label: String::from_utf8_lossy(&label[..end]).into_owned(),
    })
}

/// Reads the btrfs superblock of `dev`; `Ok(None)` when it is not btrfs.
pub fn read_superblock(dev: &Path) -> std::io::Result<Option<Superblock>> {
    let f = File::open(dev)?;
    let mut buf = vec![0u8; 4096];
    match f.read_exact_at(&mut buf, SUPERBLOCK_OFFSET) {
        Ok(()) => Ok(parse_superblock(&buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Block devices the kernel knows, as `/dev/<name>` paths that exist.
fn block_devices(sys_class_block: &Path, dev_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_class_block) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| dev_dir.join(e.file_name()))
        .filter(|p| {
            p.metadata()
                .map(|m| m.file_type().is_block_device())
                .unwrap_or(false)
        })
        .collect();
    out.sort();
    out
}

fn matches(spec: &DeviceSpec, sb: &Superblock) -> bool {
    match spec {
        DeviceSpec::Uuid(u) => sb.fsid == *u,
        DeviceSpec::Label(l) => sb.label == *l,
        DeviceSpec::Path(_) => false,
    }
}

/// Resolves `spec` to a btrfs block device, waiting up to `timeout` for it to appear.
///
/// Refuses (`not-btrfs`) a path whose superblock is not btrfs, and (`device-ambiguous`) a UUID/label that
/// several devices carry (a cloned disk: mounting the wrong one would roll back the wrong machine).
pub fn resolve(spec: &DeviceSpec, timeout: Duration) -> Result<PathBuf> {
    let deadline = crate::wait::Deadline::after(timeout);
    loop {
        if let Some(found) = try_resolve(spec, Path::new("/sys/class/block"), Path::new("/dev"))? {
            return Ok(found);
        }
        if deadline.passed() {
            bail!(
                "device {spec} did not appear within {}: check the `device` setting in [layout], that the \
                 disk (and any LUKS/LVM layer) is available, or raise `device_timeout`",
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn try_resolve(spec: &DeviceSpec, sys: &Path, dev: &Path) -> Result<Option<PathBuf>> {
    match spec {
        DeviceSpec::Path(p) => {
            let meta = match std::fs::metadata(p) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(e).with_context(|| format!("checking device '{}'", p.display()));
                }
            };
            if !meta.file_type().is_block_device() {
                return Err(Refusal::new(
                    "not-block-device",
                    format!(
                        "'{}' is not a block device: set [layout] device to the btrfs partition",
                        p.display()
                    ),
                )
                .into());
            }
            match read_superblock(p)
                .with_context(|| format!("reading the superblock of '{}'", p.display()))?
            {
                Some(_) => Ok(Some(p.clone())),
                None => Err(Refusal::new(
                    "not-btrfs",
                    format!(
                        "'{}' holds no btrfs filesystem: tabula only works on btrfs",
                        p.display()
                    ),
                )
                .into()),
            }
        }
        DeviceSpec::Uuid(_) | DeviceSpec::Label(_) => {
            let mut found = Vec::new();
            for d in block_devices(sys, dev) {
                // Unreadable devices (empty CD drives, busy dm targets) simply do not match.
                if let Ok(Some(sb)) = read_superblock(&d)
                    && matches(spec, &sb)
                {
                    found.push(d);
                }
            }
            match found.len() {
                0 => Ok(None),
                1 => Ok(found.pop()),
                _ => Err(Refusal::new(
                    "device-ambiguous",
                    format!(
                        "{spec} matches several devices ({}): name the device by path in [layout] device",
                        found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    ),
                )
                .into()),
            }
        }
    }
}

/// The kernel release (`uname -r`) and boot id, when known.
pub fn kernel_release() -> Option<String> {
    nix::sys::utsname::uname()
        .ok()
        .map(|u| u.release().to_string_lossy().into_owned())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), as systemd's journal knows it (without dashes).
pub fn boot_id() -> Option<String> {
    let mut s = String::new();
    File::open("/proc/sys/kernel/random/boot_id")
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    let id: String = s.trim().chars().filter(|c| *c != '-').collect();
    (id.len() == 32).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(fsid: [u8; 16], label: &str) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[32..48].copy_from_slice(&fsid);
        b[64..72].copy_from_slice(MAGIC);
        b[299..299 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    #[test]
    fn superblock_fields() {
        let mut fsid = [0u8; 16];
        fsid[0] = 0x12;
        fsid[15] = 0xef;
        let sb = parse_superblock(&superblock(fsid, "nixos")).unwrap();
        assert_eq!(sb.fsid, "12000000-0000-0000-0000-0000000000ef");
        assert_eq!(sb.label, "nixos");
        assert!(matches(&DeviceSpec::Label("nixos".into()), &sb));
        assert!(matches(
            &DeviceSpec::Uuid("12000000-0000-0000-0000-0000000000ef".into()),
            &sb
        ));
        assert!(!matches(&DeviceSpec::Label("other".into()), &sb));
        let mut not_btrfs = superblock(fsid, "x");
        not_btrfs[64] = b'X';
        assert_eq!(parse_superblock(&not_btrfs), None);
        assert_eq!(parse_superblock(&[0u8; 10]), None);
    }

    #[test]
    fn missing_path_waits_then_says_what_to_do() {
        let e = resolve(
            &DeviceSpec::Path("/dev/does-not-exist-tabula".into()),
            Duration::from_millis(250),
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("did not appear within 250ms") && msg.contains("device_timeout"),
            "{msg}"
        );
    }

    #[test]
    fn regular_file_is_refused() {
        let e = resolve(
            &DeviceSpec::Path("/proc/self/status".into()),
            Duration::from_millis(10),
        )
        .unwrap_err();
        assert_eq!(
            crate::error::exit_status(&e),
            crate::error::ExitStatus::Refused,
            "{e:#}"
        );
    }
}
