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

/// What a btrfs superblock says about its filesystem and about the device it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The filesystem UUID (`fsid`), lowercase with dashes.
    pub fsid: String,
    /// The label, possibly empty.
    pub label: String,
    /// This device's id within the filesystem (`dev_item.devid`): members of one multi-device
    /// filesystem share the fsid and differ by devid.
    pub devid: u64,
    /// How many devices the filesystem has (`num_devices`).
    pub num_devices: u64,
    /// The superblock's transaction generation (the newest member's view wins).
    pub generation: u64,
}

fn le_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
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
        // `struct btrfs_super_block`: generation at 72, num_devices at 136, dev_item (devid first) at 201.
        devid: le_u64(buf, 201)?,
        num_devices: le_u64(buf, 136)?,
        generation: le_u64(buf, 72)?,
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

/// A btrfs filesystem found for `[layout] device`, ready to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The device to mount: the configured path, or the member with the lowest devid.
    pub device: PathBuf,
    /// The filesystem UUID.
    pub fsid: String,
    /// Members present, by devid.
    pub members: Vec<(u64, PathBuf)>,
    /// Members the filesystem has.
    pub num_devices: u64,
    /// Some member is missing and `allow_degraded` let it through: mount with `-o degraded`.
    pub degraded: bool,
}

/// What the devices carrying one filesystem say, before it is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Members {
    fsid: String,
    /// (devid, path, rdev), sorted by devid.
    present: Vec<(u64, PathBuf, u64)>,
    num_devices: u64,
}

impl Members {
    fn complete(&self) -> bool {
        self.present.len() as u64 >= self.num_devices
    }

    /// Devids that are not present: the filesystem's are usually 1..=N (a replaced or removed device
    /// leaves gaps, so this names the likely ones).
    fn missing(&self) -> Vec<u64> {
        let want = self.num_devices.saturating_sub(self.present.len() as u64);
        (1..)
            .filter(|d| !self.present.iter().any(|(p, _, _)| p == d))
            .take(usize::try_from(want).unwrap_or(usize::MAX).min(64))
            .collect()
    }

    fn describe_present(&self) -> String {
        self.present
            .iter()
            .map(|(d, p, _)| format!("devid {d} on {}", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Groups the btrfs devices `seen` (path, rdev, superblock) that carry the filesystem `spec` names.
///
/// Refuses (`device-ambiguous`) a label or UUID on two filesystems, and two devices with the same fsid
/// *and* devid: a cloned disk (mounting the wrong one would roll back the wrong machine).
/// `Ok(None)`: nothing matches (yet).
fn group(
    spec: &DeviceSpec,
    primary: Option<&Superblock>,
    seen: &[(PathBuf, u64, Superblock)],
) -> Result<Option<Members>> {
    let matching: Vec<&(PathBuf, u64, Superblock)> = seen
        .iter()
        .filter(|(_, _, sb)| match primary {
            Some(p) => sb.fsid == p.fsid,
            None => matches(spec, sb),
        })
        .collect();
    let Some(first) = matching.first() else {
        return Ok(None);
    };
    let ambiguous = |what: String| -> anyhow::Error {
        Refusal::new(
            "device-ambiguous",
            format!("{spec} {what}: name the device by path in [layout] device"),
        )
        .into()
    };
    if let Some(other) = matching.iter().find(|(_, _, sb)| sb.fsid != first.2.fsid) {
        return Err(ambiguous(format!(
            "is carried by two filesystems ({} on {}, {} on {})",
            first.2.fsid,
            first.0.display(),
            other.2.fsid,
            other.0.display()
        )));
    }
    let mut present: Vec<(u64, PathBuf, u64)> = Vec::new();
    for (path, rdev, sb) in &matching {
        if present.iter().any(|(_, _, r)| r == rdev) {
            continue; // One device under two names.
        }
        if let Some((_, twin, _)) = present.iter().find(|(d, _, _)| *d == sb.devid) {
            return Err(ambiguous(format!(
                "has devid {} of filesystem {} on two devices ({} and {}): one is a copy of the \
                 other (a cloned disk)",
                sb.devid,
                sb.fsid,
                twin.display(),
                path.display()
            )));
        }
        present.push((sb.devid, path.clone(), *rdev));
    }
    present.sort();
    let newest = matching
        .iter()
        .max_by_key(|(_, _, sb)| sb.generation)
        .map(|(_, _, sb)| sb.num_devices)
        .unwrap_or(1);
    Ok(Some(Members {
        fsid: first.2.fsid.clone(),
        present,
        num_devices: newest.max(1),
    }))
}

/// Every btrfs block device the kernel lists: (path, rdev, superblock).
fn btrfs_devices(sys: &Path, dev: &Path) -> Vec<(PathBuf, u64, Superblock)> {
    let mut out = Vec::new();
    for d in block_devices(sys, dev) {
        // Unreadable devices (empty CD drives, busy dm targets) simply do not match.
        if let Ok(Some(sb)) = read_superblock(&d)
            && let Ok(meta) = std::fs::metadata(&d)
        {
            use std::os::unix::fs::MetadataExt;
            out.push((d, meta.rdev(), sb));
        }
    }
    out
}

/// Resolves `spec` to a btrfs filesystem with all its members present, waiting up to `timeout`, and
/// registers every member with the kernel (`BTRFS_IOC_SCAN_DEV`: a busybox initrd has no udev to do
/// it, and a multi-device filesystem mounts only when the kernel knows all its members).
///
/// Members of one filesystem share its fsid and differ by devid; the wait ends when the superblock's
/// `num_devices` members are present. A member still missing at the deadline is an error naming it,
/// unless `allow_degraded`: then the filesystem is returned with [`Found::degraded`] set.
/// Refuses as [`resolve`] does, and (`device-ambiguous`) a clone (same fsid and devid on two devices).
pub fn find_filesystem(
    spec: &DeviceSpec,
    timeout: Duration,
    allow_degraded: bool,
) -> Result<Found> {
    let deadline = crate::wait::Deadline::after(timeout);
    let (sys, dev) = (Path::new("/sys/class/block"), Path::new("/dev"));
    loop {
        if let Some(primary) = try_resolve(spec, sys, dev)? {
            let sb = read_superblock(&primary)
                .with_context(|| format!("reading the superblock of '{}'", primary.display()))?;
            // A single-device filesystem named by path needs no search (and a clone of it elsewhere
            // does not matter: the path says which one).
            let single_by_path = matches!(spec, DeviceSpec::Path(_))
                && sb.as_ref().is_none_or(|s| s.num_devices <= 1);
            let members = if single_by_path {
                None
            } else {
                group(spec, sb.as_ref(), &btrfs_devices(sys, dev))?
            };
            let members = match members {
                Some(m) => m,
                // The device itself, when /sys/class/block does not list it (or it is not btrfs:
                // try_resolve refused that already).
                None => Members {
                    fsid: sb.as_ref().map(|s| s.fsid.clone()).unwrap_or_default(),
                    present: vec![(sb.as_ref().map_or(1, |s| s.devid), primary.clone(), 0)],
                    num_devices: sb.as_ref().map_or(1, |s| s.num_devices.max(1)),
                },
            };
            let complete = members.complete();
            if complete || (allow_degraded && deadline.passed()) {
                for (_, p, _) in &members.present {
                    // Without /dev/btrfs-control (btrfs not loaded yet) the mount loads it and a
                    // single device needs no registration; a multi-device mount then says why.
                    if let Err(e) = crate::btrfs::register_device(p) {
                        tracing::debug!("registering {} with the kernel: {e}", p.display());
                    }
                }
                if !complete {
                    tracing::warn!(
                        "btrfs {} is missing {} of its {} devices (devid {}); mounting degraded as \
                         allow_degraded says",
                        members.fsid,
                        members.num_devices - members.present.len() as u64,
                        members.num_devices,
                        join_ids(&members.missing())
                    );
                }
                let device = match spec {
                    DeviceSpec::Path(_) => primary,
                    _ => members
                        .present
                        .first()
                        .map(|(_, p, _)| p.clone())
                        .unwrap_or(primary),
                };
                return Ok(Found {
                    device,
                    fsid: members.fsid.clone(),
                    members: members
                        .present
                        .iter()
                        .map(|(d, p, _)| (*d, p.clone()))
                        .collect(),
                    num_devices: members.num_devices,
                    degraded: !complete,
                });
            }
            if deadline.passed() {
                bail!(
                    "btrfs filesystem {} ({spec}) has {} devices, {} present ({}); missing: devid {}. \
                     Attach the missing disk (check its LUKS/LVM layer and cabling), raise \
                     `device_timeout`, or set `allow_degraded = true` in [layout] to mount without it",
                    members.fsid,
                    members.num_devices,
                    members.present.len(),
                    members.describe_present(),
                    join_ids(&members.missing())
                );
            }
        } else if deadline.passed() {
            bail!(
                "device {spec} did not appear within {}: check the `device` setting in [layout], that the \
                 disk (and any LUKS/LVM layer) is available, or raise `device_timeout`",
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", devid ")
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

/// Resolves `spec` to a btrfs block device, waiting up to `timeout` for it to appear. (For mounting,
/// [`find_filesystem`] also waits for and registers every member of a multi-device filesystem.)
///
/// Refuses (`not-btrfs`) a path whose superblock is not btrfs, and (`device-ambiguous`) a UUID/label
/// that two filesystems carry, or the same member (fsid and devid) on two devices (a cloned disk:
/// mounting the wrong one would roll back the wrong machine).
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
            // Several devices are fine when they are the members of one filesystem.
            let seen = btrfs_devices(sys, dev);
            Ok(
                group(spec, None, &seen)?
                    .and_then(|m| m.present.first().map(|(_, p, _)| p.clone())),
            )
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
        b[72..80].copy_from_slice(&7u64.to_le_bytes());
        b[136..144].copy_from_slice(&2u64.to_le_bytes());
        b[201..209].copy_from_slice(&2u64.to_le_bytes());
        b[299..299 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    fn sb(fsid: &str, label: &str, devid: u64, num_devices: u64) -> Superblock {
        Superblock {
            fsid: fsid.into(),
            label: label.into(),
            devid,
            num_devices,
            generation: 1,
        }
    }

    fn rule(e: &anyhow::Error) -> &'static str {
        e.downcast_ref::<Refusal>().map_or("", |r| r.rule)
    }

    #[test]
    fn members_differ_by_devid_clones_do_not() {
        let label = DeviceSpec::Label("nixos".into());
        let seen = vec![
            ("/dev/vdb".into(), 11, sb("aa", "nixos", 2, 2)),
            ("/dev/vda".into(), 10, sb("aa", "nixos", 1, 2)),
            ("/dev/vdc".into(), 12, sb("bb", "other", 1, 1)),
        ];
        let m = group(&label, None, &seen).unwrap().unwrap();
        assert!(m.complete());
        assert_eq!(
            m.present,
            [(1, "/dev/vda".into(), 10), (2, "/dev/vdb".into(), 11)]
        );
        // One member only: incomplete, and the missing one is named.
        let m = group(&label, None, &seen[1..]).unwrap().unwrap();
        assert!(!m.complete());
        assert_eq!(m.missing(), [2]);
        assert_eq!(m.describe_present(), "devid 1 on /dev/vda");
        // The same device under two names is one member.
        let mut twice = seen.clone();
        twice.push((
            "/dev/disk/by-label/nixos".into(),
            10,
            sb("aa", "nixos", 1, 2),
        ));
        assert!(group(&label, None, &twice).unwrap().unwrap().complete());
        // A clone: devid 1 of "aa" on another device.
        let mut cloned = seen.clone();
        cloned.push(("/dev/sdz".into(), 99, sb("aa", "nixos", 1, 2)));
        let e = group(&label, None, &cloned).unwrap_err();
        assert_eq!(rule(&e), "device-ambiguous");
        assert!(
            format!("{e:#}").contains("devid 1 of filesystem aa"),
            "{e:#}"
        );
        // One label on two filesystems.
        let mut two = seen.clone();
        two.push(("/dev/sdy".into(), 98, sb("cc", "nixos", 1, 1)));
        assert_eq!(
            rule(&group(&label, None, &two).unwrap_err()),
            "device-ambiguous"
        );
        // By UUID, or by a member's superblock (a path): the fsid decides.
        let uuid = DeviceSpec::Uuid("aa".into());
        assert!(group(&uuid, None, &seen).unwrap().unwrap().complete());
        let by_path = DeviceSpec::Path("/dev/vda".into());
        let m = group(&by_path, Some(&seen[1].2), &seen).unwrap().unwrap();
        assert_eq!(m.present.len(), 2);
        assert_eq!(
            group(&DeviceSpec::Label("none".into()), None, &seen).unwrap(),
            None
        );
    }

    #[test]
    fn superblock_fields() {
        let mut fsid = [0u8; 16];
        fsid[0] = 0x12;
        fsid[15] = 0xef;
        let sb = parse_superblock(&superblock(fsid, "nixos")).unwrap();
        assert_eq!(sb.fsid, "12000000-0000-0000-0000-0000000000ef");
        assert_eq!(sb.label, "nixos");
        assert_eq!((sb.devid, sb.num_devices, sb.generation), (2, 2, 7));
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
