//! Before the binds: what the initrd glue used to do in shell with its own reading of the config.
//!
//! `tabula persist --root R` (R other than `/`) first
//! - makes R writable for the call when it is mounted read-only (the kernel command line's `ro`), and
//!   gives it its read-only mount flag back afterwards;
//! - mounts the persistent subvolume (`[layout] persist`) of the filesystem R is mounted from at
//!   `R<[persist] path>`, unless something is mounted there already (fstab `x-initrd.mount`, NixOS);
//! - mounts every btrfs entry of `R/etc/fstab` whose mount point holds a target (a separate `/home`,
//!   `/var`, `/srv`) and is not mounted yet, so that the system's own mount of it after switch-root
//!   finds it mounted and never lands on top of a bind. Other filesystem types need their fsck first:
//!   tabula leaves them to the initrd (`x-initrd.mount`) and refuses the entries under them meanwhile.
//!
//! [`plan`] is pure (mount table and fstab text in, steps out); [`apply`] performs the steps.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};
use serde::Serialize;

use crate::config::{Config, DeviceSpec};
use crate::mountinfo::Mount;

/// One mount to make before the binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreMount {
    /// What to mount: a device path or an fstab spec (`UUID=…`, `LABEL=…`), resolved when applied.
    pub source: String,
    /// The absolute mount point (under the root).
    pub target: PathBuf,
    /// Filesystem type.
    pub fs_type: String,
    /// Options as written (flags and filesystem data).
    pub options: String,
    /// Why: `persistent storage` or `fstab`.
    pub reason: &'static str,
}

/// A mount point that holds targets but that tabula does not mount: entries under it are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The mount point, as in fstab.
    pub mount_point: PathBuf,
    /// Why, and what to do.
    pub message: String,
}

/// What happens before the binds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Prepare {
    /// The root is mounted read-only: remount it read-write for the call, read-only again after.
    pub remount_rw: bool,
    /// Mounts, outermost first.
    pub mounts: Vec<PreMount>,
    /// Mount points left alone; entries under them are refused.
    pub blocked: Vec<Blocked>,
}

/// One line of an fstab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// First field.
    pub spec: String,
    /// Second field.
    pub mount_point: PathBuf,
    /// Third field.
    pub fs_type: String,
    /// Fourth field.
    pub options: String,
}

/// Parses an fstab: comments and malformed lines are skipped.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 2 {
                return None;
            }
            Some(FstabEntry {
                spec: crate::mountinfo::unescape(f[0]),
                mount_point: PathBuf::from(crate::mountinfo::unescape(f[1])),
                fs_type: f.get(2).map_or("auto", |s| s).to_string(),
                options: f.get(3).map_or("defaults", |s| s).to_string(),
            })
        })
        .collect()
}

fn has_option(options: &str, name: &str) -> bool {
    options.split(',').any(|o| o == name)
}

/// `root` joined with the absolute `path`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Plans what `tabula persist --root root` mounts first. `mounts` is the mount table, `fstab` the text
/// of `root/etc/fstab` (if any), `root_read_only` whether `root` is mounted read-only.
pub fn plan(
    config: &Config,
    root: &Path,
    mounts: &[Mount],
    fstab: Option<&str>,
    root_read_only: bool,
) -> Prepare {
    let mounted = |p: &Path| mounts.iter().any(|m| m.mount_point == p);
    let mut out = Prepare {
        remount_rw: root_read_only,
        ..Prepare::default()
    };
    let persist_at = under(root, &config.persist.path);
    let root_mount = mounts.iter().rev().find(|m| m.mount_point == root);
    if !mounted(&persist_at)
        && let Some(rm) = root_mount
        && rm.fs_type == "btrfs"
    {
        out.mounts.push(PreMount {
            source: rm.source.clone(),
            target: persist_at.clone(),
            fs_type: "btrfs".into(),
            options: format!("subvol=/{}", config.layout.persist),
            reason: "persistent storage",
        });
    }
    let mut targets = vec![config.persist.path.clone()];
    targets.extend(config.persist.entries().iter().map(|e| e.target()));
    let mut fstab_mounts = Vec::new();
    for e in fstab.map(parse_fstab).unwrap_or_default() {
        let mp = &e.mount_point;
        if !mp.is_absolute()
            || mp == Path::new("/")
            || e.fs_type == "swap"
            || has_option(&e.options, "noauto")
            || !targets.iter().any(|t| t.starts_with(mp))
        {
            continue;
        }
        let at = under(root, mp);
        if mounted(&at) || out.mounts.iter().any(|m| m.target == at) {
            continue;
        }
        if e.fs_type != "btrfs" || has_option(&e.options, "bind") || has_option(&e.options, "rbind")
        {
            out.blocked.push(Blocked {
                mount_point: mp.clone(),
                message: format!(
                    "'{}' ({}, from the new root's fstab) is not mounted yet and would later be mounted on \
                     top of this entry: add x-initrd.mount to its fstab options (systemd, dracut), or mount it \
                     before `tabula persist` (tabula itself mounts only btrfs entries: others need their fsck)",
                    mp.display(),
                    e.fs_type
                ),
            });
            continue;
        }
        fstab_mounts.push(PreMount {
            source: e.spec.clone(),
            target: at,
            fs_type: e.fs_type.clone(),
            options: e.options.clone(),
            reason: "fstab",
        });
    }
    // Outermost first: /home before /home/alice/data.
    fstab_mounts.sort_by_key(|m| m.target.components().count());
    out.mounts.extend(fstab_mounts);
    out
}

impl Prepare {
    /// Lines for `--dry-run`.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if self.remount_rw {
            s.push_str("remount the root read-write for the call (read-only again after)\n");
        }
        for m in &self.mounts {
            s.push_str(&format!(
                "mount {} '{}' ({}) at '{}' ({})\n",
                m.fs_type,
                m.source,
                m.options,
                m.target.display(),
                m.reason
            ));
        }
        for b in &self.blocked {
            s.push_str(&format!(
                "refuse entries under '{}': {}\n",
                b.mount_point.display(),
                b.message
            ));
        }
        s
    }
}

/// Splits mount options into flags and filesystem data; options only mount(8) reads are dropped.
fn split_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        let (set, clear) = match o {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "defaults" | "auto" | "nofail" | "user" | "users" | "nouser" | "owner" | "group"
            | "_netdev" => (MsFlags::empty(), MsFlags::empty()),
            o if o.starts_with("x-") || o.starts_with("X-") || o.starts_with("comment=") => {
                (MsFlags::empty(), MsFlags::empty())
            }
            o => {
                data.push(o);
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

/// A tag value (label, uuid) encoded as blkid encodes it for udev's `/dev/disk/by-*` link names
/// (`ID_FS_LABEL_ENC`): valid multi-byte UTF-8 characters and ASCII alphanumerics and `#+-.:=@_` stay,
/// every other byte becomes `\xNN`. It lives here, not in the generator (which re-exports it), so that the
/// generator depends on persist and not the other way round.
pub fn encode_devnode_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let keep = if c.is_ascii() {
            c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c)
        } else {
            // Non-characters are not "valid unichars" to udev/blkid: their bytes are escaped.
            let u = c as u32;
            !((0xfdd0..=0xfdef).contains(&u) || (u & 0xfffe) == 0xfffe)
        };
        if keep {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

/// The device node for an fstab spec: udev's `/dev/disk/by-*` link when it exists, else (no udev, as
/// in a busybox initrd) the btrfs device carrying that UUID or label.
fn resolve_source(spec: &str) -> Result<PathBuf> {
    let by =
        |dir: &str, v: &str| PathBuf::from(format!("/dev/disk/{dir}/{}", encode_devnode_name(v)));
    let (link, btrfs) = if let Some(u) = spec.strip_prefix("UUID=") {
        let u = u.to_ascii_lowercase();
        (by("by-uuid", &u), Some(DeviceSpec::Uuid(u)))
    } else if let Some(l) = spec.strip_prefix("LABEL=") {
        (by("by-label", l), Some(DeviceSpec::Label(l.to_string())))
    } else if let Some(p) = spec.strip_prefix("PARTUUID=") {
        (by("by-partuuid", &p.to_ascii_lowercase()), None)
    } else if let Some(p) = spec.strip_prefix("PARTLABEL=") {
        (by("by-partlabel", p), None)
    } else {
        return Ok(PathBuf::from(spec));
    };
    if link.exists() {
        return Ok(link);
    }
    match btrfs {
        Some(d) => crate::device::resolve(&d, std::time::Duration::ZERO),
        None => bail!("'{}' does not exist", link.display()),
    }
}

/// What [`apply`] did, for [`finish`] and for refusing entries.
#[derive(Debug, Default)]
pub struct Applied {
    /// The root was remounted read-write.
    pub remounted: bool,
    /// Mount points that should have been mounted and are not, with why: entries under them are
    /// refused (the later mount would hide them).
    pub blocked: Vec<Blocked>,
}

/// Performs `prep` on `root`. Never stops at a failure: what failed is in [`Applied::blocked`] or logged.
pub fn apply(prep: &Prepare, root: &Path) -> Applied {
    let mut applied = Applied {
        remounted: false,
        blocked: prep.blocked.clone(),
    };
    if prep.remount_rw {
        let keep = kept_flags(root);
        match mount(
            None::<&str>,
            root,
            None::<&str>,
            MsFlags::MS_REMOUNT | keep,
            None::<&str>,
        ) {
            Ok(()) => applied.remounted = true,
            Err(e) => tracing::warn!(
                "remounting '{}' read-write failed ({e}): persistent paths may be missing",
                root.display()
            ),
        }
    }
    for m in &prep.mounts {
        if let Err(e) = do_mount(m) {
            tracing::warn!("{e:#}");
            let mp = m
                .target
                .strip_prefix(root)
                .map_or(m.target.clone(), |p| Path::new("/").join(p));
            applied.blocked.push(Blocked {
                mount_point: mp,
                message: format!("{e:#}"),
            });
        } else {
            tracing::info!(
                "mounted '{}' at '{}' ({})",
                m.source,
                m.target.display(),
                m.reason
            );
        }
    }
    applied
}

fn do_mount(m: &PreMount) -> Result<()> {
    match std::fs::symlink_metadata(&m.target) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => bail!(
            "'{}' is not a directory (a symlink?): not mounting {} there",
            m.target.display(),
            m.reason
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&m.target)
                .with_context(|| format!("creating the mount point '{}'", m.target.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting '{}'", m.target.display())),
    }
    let source = resolve_source(&m.source)
        .with_context(|| format!("finding '{}' for '{}'", m.source, m.target.display()))?;
    let (flags, data) = split_options(&m.options);
    mount(
        Some(&source),
        &m.target,
        Some(m.fs_type.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .with_context(|| {
        format!(
            "mounting '{}' ({}) at '{}' ({})",
            source.display(),
            m.options,
            m.target.display(),
            m.reason
        )
    })
}

/// The per-mount flags of `path` that a remount must repeat to keep them.
fn kept_flags(path: &Path) -> MsFlags {
    use rustix::fs::StatVfsMountFlags as FsFlags;
    let Ok(st) = rustix::fs::statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.f_flag;
    let mut out = MsFlags::empty();
    for (from, to) in [
        (FsFlags::NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::NODEV, MsFlags::MS_NODEV),
        (FsFlags::NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(from) {
            out |= to;
        }
    }
    out
}

/// Whether `path` is mounted read-only.
pub fn is_read_only(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .is_ok_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// Gives the root back its read-only mount flag (only the flag: the filesystem stays writable under
/// the binds).
pub fn finish(applied: &Applied, root: &Path) {
    if applied.remounted {
        let keep = kept_flags(root);
        if let Err(e) = mount(
            None::<&str>,
            root,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | keep,
            None::<&str>,
        ) {
            tracing::warn!("remounting '{}' read-only failed: {e}", root.display());
        }
    }
}

/// Whether `target` lies under one of the blocked mount points, and why.
pub fn blocked_reason<'a>(blocked: &'a [Blocked], target: &Path) -> Option<&'a str> {
    blocked
        .iter()
        .find(|b| target.starts_with(&b.mount_point))
        .map(|b| b.message.as_str())
}

/// Fails every entry of `plan` under a mount point that is still to come (`blocked`): the later mount
/// would hide what the entry puts there. Its operations go; the message says what to do. Pure.
pub fn refuse_blocked(plan: &mut super::Plan, blocked: &[Blocked]) {
    for e in &mut plan.entries {
        if let Some(why) = blocked_reason(blocked, &e.target) {
            e.state = super::State::Failed;
            e.message = Some(why.to_string());
            e.ops.clear();
        }
    }
}

/// Reads what [`plan`] needs from the running system.
pub fn observe(config: &Config, root: &Path) -> Result<Prepare> {
    let mounts = crate::mountinfo::read().context("reading the mount table")?;
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).ok();
    Ok(plan(
        config,
        root,
        &mounts,
        fstab.as_deref(),
        is_read_only(root),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("/t.toml"), text).expect("config")
    }

    fn m(point: &str, fs: &str, source: &str) -> Mount {
        Mount {
            id: 0,
            dev: (0, 0),
            mount_point: PathBuf::from(point),
            root: "/root".into(),
            fs_type: fs.into(),
            source: source.into(),
            subvol_id: None,
        }
    }

    const CFG: &str = "[layout]\ndevice = \"/dev/vda\"\npersist = \"keep\"\n[persist]\npath = \"/persist\"\n\
                       directories = [\"/var/lib/x\", \"/srv/www\"]\n[[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 1000\n\
                       directories = [\".ssh\"]\n";

    #[test]
    fn mounts_persistent_storage_from_the_roots_device() {
        let p = plan(
            &config(CFG),
            Path::new("/sysroot"),
            &[m("/sysroot", "btrfs", "/dev/vda")],
            None,
            false,
        );
        assert_eq!(
            p.mounts,
            vec![PreMount {
                source: "/dev/vda".into(),
                target: "/sysroot/persist".into(),
                fs_type: "btrfs".into(),
                options: "subvol=/keep".into(),
                reason: "persistent storage"
            }]
        );
        assert!(!p.remount_rw && p.blocked.is_empty());
        // Already mounted (fstab x-initrd.mount, NixOS): left alone.
        let p = plan(
            &config(CFG),
            Path::new("/sysroot"),
            &[
                m("/sysroot", "btrfs", "/dev/vda"),
                m("/sysroot/persist", "btrfs", "/dev/vdb"),
            ],
            None,
            true,
        );
        assert!(p.mounts.is_empty());
        assert!(p.remount_rw);
    }

    #[test]
    fn fstab_mounts_under_targets_come_first_outermost_first() {
        let fstab = "# comment\n\
            UUID=ABCD /               btrfs subvol=root 0 0\n\
            UUID=abcd /var/lib        btrfs subvol=varlib 0 0\n\
            UUID=abcd /home/alice/big btrfs subvol=big  0 0\n\
            UUID=abcd /home           btrfs subvol=home,noatime,x-systemd.device-timeout=5 0 0\n\
            LABEL=data /srv\\040data  btrfs defaults 0 0\n\
            /dev/vdb  /srv            ext4  defaults 0 2\n\
            /dev/vdc  /opt            btrfs defaults 0 0\n\
            /dev/vdd  /var/lib/x      btrfs noauto 0 0\n\
            /swap     none            swap  sw 0 0\n\
            tmpfs     /tmp            tmpfs defaults 0 0\n";
        let mounts = [
            m("/sysroot", "btrfs", "/dev/vda"),
            m("/sysroot/persist", "btrfs", "/dev/vda"),
        ];
        let p = plan(
            &config(CFG),
            Path::new("/sysroot"),
            &mounts,
            Some(fstab),
            false,
        );
        let got: Vec<_> = p
            .mounts
            .iter()
            .map(|m| (m.target.display().to_string(), m.options.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "/sysroot/home".to_string(),
                    "subvol=home,noatime,x-systemd.device-timeout=5"
                ),
                ("/sysroot/var/lib".to_string(), "subvol=varlib"),
            ]
        );
        // A non-btrfs /srv holds /srv/www: its entries are refused, with what to do.
        assert_eq!(p.blocked.len(), 1);
        assert_eq!(p.blocked[0].mount_point, Path::new("/srv"));
        assert!(p.blocked[0].message.contains("x-initrd.mount"));
        assert!(blocked_reason(&p.blocked, Path::new("/srv/www")).is_some());
        assert!(blocked_reason(&p.blocked, Path::new("/srvx")).is_none());
        // Already mounted (systemd mounted the x-initrd.mount entry): nothing to do.
        let mut mounts = mounts.to_vec();
        mounts.push(m("/sysroot/home", "btrfs", "/dev/vda"));
        mounts.push(m("/sysroot/var/lib", "btrfs", "/dev/vda"));
        mounts.push(m("/sysroot/srv", "ext4", "/dev/vdb"));
        let p = plan(
            &config(CFG),
            Path::new("/sysroot"),
            &mounts,
            Some(fstab),
            false,
        );
        assert!(p.mounts.is_empty() && p.blocked.is_empty(), "{p:?}");
    }

    #[test]
    fn entries_under_a_blocked_mount_point_fail_with_its_reason() {
        use super::super::{How, Kind, Op, PlannedEntry, State};
        let entry = |target: &str| {
            let mut e = PlannedEntry::new(
                target.into(),
                Path::new("/persist").join(&target[1..]),
                Kind::Directory,
                How::Bind,
            );
            e.ops.push(Op::Bind {
                source: e.source.clone(),
                target: e.target.clone(),
            });
            e
        };
        let mut plan = super::super::Plan {
            root: "/sysroot".into(),
            persist: "/persist".into(),
            entries: vec![entry("/srv/www"), entry("/srvx"), entry("/var/lib/x")],
        };
        let blocked = [Blocked {
            mount_point: "/srv".into(),
            message: "mount /srv first".into(),
        }];
        let untouched = plan.entries[1..].to_vec();
        refuse_blocked(&mut plan, &blocked);
        let www = &plan.entries[0];
        assert_eq!(www.state, State::Failed);
        assert_eq!(www.message.as_deref(), Some("mount /srv first"));
        assert!(www.ops.is_empty(), "{:?}", www.ops);
        assert_eq!(plan.entries[1..], untouched[..]);
        // Nothing blocked: nothing changes.
        let before = plan.clone();
        refuse_blocked(&mut plan, &[]);
        assert_eq!(plan, before);
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (f, d) = split_options(
            "defaults,ro,noatime,subvol=home,compress=zstd:1,x-systemd.automount,nofail,comment=x",
        );
        assert_eq!(f, MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
        assert_eq!(d, "subvol=home,compress=zstd:1");
        let (f, d) = split_options("ro,rw,nosuid");
        assert_eq!((f, d.as_str()), (MsFlags::MS_NOSUID, ""));
    }

    #[test]
    fn fstab_parsing() {
        let e = parse_fstab("  LABEL=my\\040root\t/a\\040b btrfs\n/dev/x /y\nbad\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].spec, "LABEL=my root");
        assert_eq!(e[0].mount_point, Path::new("/a b"));
        assert_eq!(e[0].options, "defaults");
        assert_eq!(e[1].fs_type, "auto");
    }
}
