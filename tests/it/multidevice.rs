//! Multi-device btrfs (issue 10, item 1) on real loop devices: a RAID1 filesystem over two images,
//! named by `LABEL=` and `UUID=`; a missing member; a clone. The kernel's registry of members is
//! emptied for our devices first (`btrfs device scan --forget <dev>`), as in an initrd without udev:
//! tabula must register the members itself.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{LoopDevice, MountGuard, require_root, run, stderr};
use nix::mount::{MsFlags, mount};

/// Two images, attached, formatted as one RAID1 btrfs with a unique label, holding a `root`
/// subvolume. Field order: loop devices are detached before the directory goes.
struct Raid {
    devs: Vec<LoopDevice>,
    label: String,
    fsid: String,
    dir: tempfile::TempDir,
}

impl Raid {
    fn new(test: &str) -> Option<Raid> {
        if !require_root(test) {
            return None;
        }
        common::private_mount_namespace();
        let dir = tempfile::Builder::new()
            .prefix("tabula-raid-")
            .tempdir()
            .unwrap();
        let mut devs = Vec::new();
        for i in 0..2 {
            let img = dir.path().join(format!("disk{i}.img"));
            fs::File::create(&img)
                .and_then(|f| f.set_len(300 << 20))
                .unwrap();
            devs.push(LoopDevice::attach(&img));
        }
        // Unique on the machine: other tests (and the other tests here) make filesystems meanwhile.
        let label = format!("tbl-{}-{}", std::process::id(), &test[..test.len().min(40)]);
        run(Command::new("mkfs.btrfs")
            .args(["-q", "-f", "-d", "raid1", "-m", "raid1", "-L", &label])
            .args(devs.iter().map(|d| &d.path)));
        let out = run(Command::new("blkid")
            .args(["-o", "value", "-s", "UUID"])
            .arg(&devs[0].path));
        let fsid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let raid = Raid {
            devs,
            label,
            fsid,
            dir,
        };
        // Make `root`, then leave the kernel knowing nothing of our members.
        raid.scan();
        let top = raid.dir.path().join("top");
        fs::create_dir(&top).unwrap();
        mount(
            Some(&raid.devs[0].path),
            &top,
            Some("btrfs"),
            MsFlags::empty(),
            Some("subvolid=5"),
        )
        .unwrap();
        let guard = MountGuard {
            target: top.clone(),
        };
        run(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(top.join("root")));
        fs::write(top.join("root/hello"), "raid").unwrap();
        drop(guard);
        raid.forget();
        Some(raid)
    }

    /// Writes a file into `root` (a boot that wrote something), leaving the registry empty again.
    fn touch_root(&self, name: &str) {
        self.scan();
        let top = self.dir.path().join("top");
        mount(
            Some(&self.devs[0].path),
            &top,
            Some("btrfs"),
            MsFlags::empty(),
            Some("subvolid=5"),
        )
        .unwrap();
        let guard = MountGuard {
            target: top.clone(),
        };
        fs::write(top.join("root").join(name), name).unwrap();
        drop(guard);
        self.forget();
    }

    fn paths(&self) -> Vec<&Path> {
        self.devs.iter().map(|d| d.path.as_path()).collect()
    }

    fn scan(&self) {
        run(Command::new("btrfs")
            .args(["device", "scan"])
            .args(self.paths()));
    }

    /// Unregisters exactly our devices (never a bare `--forget`: that forgets everyone's).
    fn forget(&self) {
        for d in self.paths() {
            let _ = Command::new("btrfs")
                .args(["device", "scan", "--forget"])
                .arg(d)
                .output();
        }
    }

    fn config(&self, device: &str, extra: &str) -> PathBuf {
        let c = self.dir.path().join("tabula.toml");
        fs::write(
            &c,
            format!("[layout]\ndevice = \"{device}\"\ndevice_timeout = \"2s\"\n{extra}"),
        )
        .unwrap();
        c
    }

    fn tabula(&self, config: &Path, args: &[&str]) -> Output {
        common::tabula_cmd(config).args(args).output().unwrap()
    }
}

impl Drop for Raid {
    fn drop(&mut self) {
        self.forget();
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        stderr(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn raid1_by_label_and_uuid_rolls_back() {
    let Some(r) = Raid::new("raid1_by_label_and_uuid_rolls_back") else {
        return;
    };
    let by_label = r.config(&format!("LABEL={}", r.label), "");
    ok(
        &r.tabula(&by_label, &["init", "--blank-from", "current"]),
        "init",
    );
    r.forget();
    ok(&r.tabula(&by_label, &["rollback"]), "rollback by LABEL=");
    r.touch_root("second-boot");
    let by_uuid = r.config(&format!("UUID={}", r.fsid), "");
    ok(&r.tabula(&by_uuid, &["rollback"]), "rollback by UUID=");
    r.forget();
    let list = ok(&r.tabula(&by_uuid, &["roots", "list"]), "roots list");
    assert_eq!(list.lines().count(), 2, "{list}");
    // Named by the path of either member, the same.
    r.forget();
    let by_path = r.config(&r.devs[1].path.display().to_string(), "");
    ok(&r.tabula(&by_path, &["roots", "list"]), "by member path");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_missing_member_is_named_and_degraded_only_when_allowed() {
    let Some(mut r) = Raid::new("a_missing_member_is_named_and_degraded_only_when_allowed") else {
        return;
    };
    let config = r.config(&format!("LABEL={}", r.label), "");
    ok(
        &r.tabula(&config, &["init", "--blank-from", "current"]),
        "init",
    );
    r.forget();
    // Take member 2 away.
    let gone = r.devs.pop().unwrap();
    let _ = Command::new("btrfs")
        .args(["device", "scan", "--forget"])
        .arg(&gone.path)
        .output();
    drop(gone);
    let out = r.tabula(&config, &["rollback"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("devid 2") && err.contains(&r.fsid) && err.contains("allow_degraded"),
        "names the missing member and the way out: {err}"
    );
    let config = r.config(&format!("LABEL={}", r.label), "allow_degraded = true\n");
    ok(&r.tabula(&config, &["rollback"]), "degraded rollback");
    r.forget();
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_cloned_member_is_ambiguous() {
    let Some(r) = Raid::new("a_cloned_member_is_ambiguous") else {
        return;
    };
    // A byte copy of member 1 (as `dd` to a new disk makes): same fsid, same devid.
    let clone_img = r.dir.path().join("clone.img");
    fs::copy(r.dir.path().join("disk0.img"), &clone_img).unwrap();
    let clone = LoopDevice::attach(&clone_img);
    for spec in [format!("LABEL={}", r.label), format!("UUID={}", r.fsid)] {
        let config = r.config(&spec, "");
        let out = r.tabula(&config, &["roots", "list"]);
        common::assert_refused(&out, "device-ambiguous");
        assert!(stderr(&out).contains("devid 1"), "{}", stderr(&out));
    }
    drop(clone);
}
