//! The initrd side of tabula without a VM: the generator as systemd runs it, its drop-ins verified by
//! `systemd-analyze verify` in a fake initrd root, and `tabula persist --root` doing the mounts the
//! shell glue used to do (persistent storage, a separate /home from the new root's fstab, `ro`).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn tool_or_fail(name: &str) -> bool {
    match Command::new(name).arg("--version").output() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{name} is needed (Debian package systemd): {e}")
        }
        Err(e) => {
            eprintln!("skipped: {name}: {e}");
            false
        }
    }
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary through a `tabula-generator` link, as systemd does.
fn run_generator(dir: &Path, config: &Path, in_initrd: &str, out: &Path) -> std::process::Output {
    let link = dir.join("tabula-generator");
    if !link.exists() {
        symlink(env!("CARGO_BIN_EXE_tabula"), &link).unwrap();
    }
    Command::new(&link)
        .arg(out)
        .arg(dir.join("early"))
        .arg(dir.join("late"))
        .env("TABULA_CONFIG", config)
        .env("SYSTEMD_IN_INITRD", in_initrd)
        .output()
        .unwrap()
}

#[test]
fn the_generator_link_writes_drop_ins_in_an_initrd_only() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tabula.toml");
    write(
        &conf,
        "[layout]\ndevice = \"UUID=01234567-89AB-CDEF-0123-456789ABCDEF\"\n",
    );
    let out = dir.path().join("normal");
    let o = run_generator(dir.path(), &conf, "0", &out);
    assert!(o.status.success(), "{o:?}");
    assert!(!out.exists(), "nothing outside an initrd");
    // On the running system it writes only the sync path unit of copy entries.
    write(
        &conf,
        "[layout]\ndevice = \"/dev/vda\"\n[persist]\nfiles = [{ path = \"/etc/shadow\", how = \"copy\" }]\n",
    );
    let running = dir.path().join("running");
    let o = run_generator(dir.path(), &conf, "0", &running);
    assert!(o.status.success(), "{o:?}");
    let path_unit = fs::read_to_string(running.join("tabula-persist-sync.path")).unwrap();
    assert!(path_unit.contains("PathChanged=/etc/shadow"), "{path_unit}");
    assert!(!running.join("tabula-rollback.service.d").exists());
    write(
        &conf,
        "[layout]\ndevice = \"UUID=01234567-89AB-CDEF-0123-456789ABCDEF\"\n",
    );
    let o = run_generator(dir.path(), &conf, "1", &out);
    assert!(o.status.success(), "{o:?}");
    let dropin =
        fs::read_to_string(out.join("tabula-rollback.service.d/50-tabula-device.conf")).unwrap();
    let unit = "dev-disk-by\\x2duuid-01234567\\x2d89ab\\x2dcdef\\x2d0123\\x2d456789abcdef.device";
    assert!(dropin.contains(&format!("\nWants={unit}\n")), "{dropin}");
    assert!(dropin.contains(&format!("\nAfter={unit}\n")), "{dropin}");
    assert!(!dropin.contains("Requires="), "{dropin}");
    // No drop-in for the device unit itself: other units share it.
    assert_eq!(fs::read_dir(&out).unwrap().count(), 2);
    // A broken config: an error on stderr (the kernel log), exit 1, nothing half-written.
    write(&conf, "[layout]\ndevice = 'sda'\n");
    let out2 = dir.path().join("normal2");
    let o = run_generator(dir.path(), &conf, "1", &out2);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("device"),
        "{o:?}"
    );
    assert!(!out2.exists());
}

/// The drop-ins with the real units, in a fake initrd root holding this machine's systemd units:
/// `systemd-analyze verify` of initrd.target (which pulls in everything) reports nothing, no ordering
/// cycle included.
#[test]
fn generated_units_verify_in_a_fake_initrd() {
    if !tool_or_fail("systemd-analyze") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let sys = r.join("usr/lib/systemd/system");
    fs::create_dir_all(&sys).unwrap();
    let host = Path::new("/usr/lib/systemd/system");
    assert!(
        host.join("initrd-parse-etc.service").exists(),
        "no systemd units on this machine"
    );
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", host.display()))
        .arg(&sys));
    for u in ["tabula-rollback.service", "tabula-persist.service"] {
        fs::copy(repo().join("initrd/systemd").join(u), sys.join(u)).unwrap();
    }
    // What the initrd's fstab-generator makes from root= on the command line.
    write(
        &sys.join("sysroot.mount"),
        "[Unit]\nBefore=initrd-root-fs.target\n[Mount]\nWhat=/dev/vda\nWhere=/sysroot\nType=btrfs\n",
    );
    write(&r.join("etc/initrd-release"), "ID=test\n");
    fs::create_dir_all(r.join("usr/bin")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_tabula"), r.join("usr/bin/tabula")).unwrap();
    let etc = r.join("etc/systemd/system");
    for (dir, unit) in [
        ("initrd.target.wants", "tabula-rollback.service"),
        ("initrd.target.wants", "tabula-persist.service"),
        ("sysroot.mount.requires", "tabula-rollback.service"),
    ] {
        fs::create_dir_all(etc.join(dir)).unwrap();
        symlink(
            format!("/usr/lib/systemd/system/{unit}"),
            etc.join(dir).join(unit),
        )
        .unwrap();
    }
    for (name, config) in [
        (
            "label",
            "[layout]\ndevice = 'LABEL=my root'\n[persist]\ndirectories = ['/home/alice/data', '/srv/a b', '/var/lib/100%']\nfiles = ['/etc/machine-id']\n",
        ),
        (
            "uuid",
            "[layout]\ndevice = \"UUID=01234567-89AB-CDEF-0123-456789ABCDEF\"\ndevice_timeout = \"1min\"\n",
        ),
        (
            "mapper",
            "[layout]\ndevice = \"/dev/mapper/vg0-root\"\n[[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 1000\ndirectories = [\".ssh\"]\n",
        ),
    ] {
        let conf = r.join(format!("etc/tabula/{name}.toml"));
        write(&conf, config);
        let gen_dir = r.join("run/systemd/generator.late-test");
        let _ = fs::remove_dir_all(&gen_dir);
        let o = run_generator(root.path(), &conf, "1", &gen_dir);
        assert!(o.status.success(), "{o:?}");
        // The drop-ins where systemd-analyze --root reads them.
        for d in ["tabula-rollback.service.d", "tabula-persist.service.d"] {
            let _ = fs::remove_dir_all(etc.join(d));
            run(Command::new("cp").arg("-a").arg(gen_dir.join(d)).arg(&etc));
        }
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", r.display()))
            .args([
                "initrd.target",
                "tabula-rollback.service",
                "tabula-persist.service",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "{name}: systemd-analyze verify:\n{err}"
        );
    }
    // The check bites: an ordering cycle (the old unit's Before=initrd-root-fs.target with the new
    // After=initrd-parse-etc.service) is reported.
    write(
        &etc.join("tabula-persist.service.d/99-cycle.conf"),
        "[Unit]\nBefore=initrd-root-fs.target\n",
    );
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", r.display()))
        .args(["initrd.target"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ordering cycle"),
        "{o:?}"
    );
}

fn mounted_at(p: &Path) -> Option<tabula::mountinfo::Mount> {
    tabula::mountinfo::read()
        .unwrap()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == p)
}

/// A new root mounted read-only with a separate /home subvolume in its fstab: `tabula persist --root`
/// mounts the persistent subvolume and /home itself, binds into /home after, and puts `ro` back.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn persist_mounts_storage_and_fstab_home_before_binding() {
    let Some(s) = Scratch::new("persist_mounts_storage_and_fstab_home_before_binding", 256) else {
        return;
    };
    for sv in ["root", "persist", "home"] {
        run(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(s.top.join(sv)));
    }
    let fsid = tabula::device::read_superblock(&s.dev.path)
        .unwrap()
        .unwrap()
        .fsid;
    write(
        &s.top.join("root/etc/fstab"),
        &format!(
            "UUID={} / btrfs subvol=root 0 0\nUUID={} /home btrfs subvol=home,noatime 0 0\n",
            fsid.to_ascii_uppercase(),
            fsid
        ),
    );
    fs::create_dir_all(s.top.join("root/home")).unwrap();
    fs::create_dir_all(s.top.join("home/alice")).unwrap();
    write(&s.top.join("persist/home/alice/.ssh/known_hosts"), "kept\n");
    write(&s.top.join("persist/var/lib/x/state"), "state\n");
    let sysroot = s.dir.path().join("sysroot");
    fs::create_dir(&sysroot).unwrap();
    nix::mount::mount(
        Some(&s.dev.path),
        &sysroot,
        Some("btrfs"),
        nix::mount::MsFlags::MS_RDONLY,
        Some("subvol=root"),
    )
    .unwrap();
    let _root_guard = MountGuard {
        target: sysroot.clone(),
    };
    write(
        &s.config,
        &format!(
            "[layout]\ndevice = \"{}\"\n[persist]\ndirectories = [\"/var/lib/x\"]\n[[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 1000\ndirectories = [\".ssh\"]\n",
            s.dev.path.display()
        ),
    );
    let root = sysroot.to_str().unwrap();
    let dry = s.tabula_ok(&["persist", "--root", root, "--dry-run"]);
    assert!(dry.contains("remount the root read-write"), "{dry}");
    assert!(
        dry.contains(&format!("at '{root}/persist' (persistent storage)")),
        "{dry}"
    );
    assert!(dry.contains(&format!("at '{root}/home' (fstab)")), "{dry}");
    assert!(
        mounted_at(&sysroot.join("persist")).is_none(),
        "dry run mounted nothing"
    );
    let out = s.tabula_ok(&["persist", "--root", root]);
    assert!(out.contains("2 mounted"), "{out}");
    let home = mounted_at(&sysroot.join("home")).expect("/home mounted");
    assert_eq!(home.root, "/home");
    assert_eq!(
        mounted_at(&sysroot.join("persist"))
            .expect("persist mounted")
            .root,
        "/persist"
    );
    let ssh = mounted_at(&sysroot.join("home/alice/.ssh")).expect(".ssh bound");
    assert_eq!(ssh.root, "/persist/home/alice/.ssh");
    // The bind's mount point was made in the /home subvolume, under the /home mount.
    assert!(s.top.join("home/alice/.ssh").is_dir());
    assert!(!s.top.join("root/home/alice").exists());
    assert_eq!(
        fs::read_to_string(sysroot.join("home/alice/.ssh/known_hosts")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        fs::read_to_string(sysroot.join("var/lib/x/state")).unwrap(),
        "state\n"
    );
    // The root has its read-only flag back.
    assert!(tabula::persist::prepare::is_read_only(&sysroot));
    // Again: everything is in place, nothing is mounted twice.
    let out = s.tabula_ok(&["persist", "--root", root]);
    assert!(out.contains("0 mounted, 2 already in place"), "{out}");
    let count = |p: &Path| {
        tabula::mountinfo::read()
            .unwrap()
            .iter()
            .filter(|m| m.mount_point == p)
            .count()
    };
    assert_eq!(count(&sysroot.join("home")), 1);
    assert_eq!(count(&sysroot.join("persist")), 1);
    for p in ["home/alice/.ssh", "var/lib/x", "home", "persist"] {
        let _ = nix::mount::umount2(&sysroot.join(p), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A non-btrfs fstab entry over a target is not mounted by tabula (it needs its fsck): the entries under
/// it are refused with what to do, the others go on.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn entries_under_a_foreign_fstab_mount_are_refused() {
    let Some(s) = Scratch::new("entries_under_a_foreign_fstab_mount_are_refused", 256) else {
        return;
    };
    for sv in ["root", "persist"] {
        run(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(s.top.join(sv)));
    }
    write(
        &s.top.join("root/etc/fstab"),
        "/dev/disk/by-label/srv /srv ext4 defaults 0 2\n",
    );
    let sysroot = s.dir.path().join("sysroot");
    fs::create_dir(&sysroot).unwrap();
    nix::mount::mount(
        Some(&s.dev.path),
        &sysroot,
        Some("btrfs"),
        nix::mount::MsFlags::empty(),
        Some("subvol=root"),
    )
    .unwrap();
    let _root_guard = MountGuard {
        target: sysroot.clone(),
    };
    write(
        &s.config,
        &format!(
            "[layout]\ndevice = \"{}\"\n[persist]\ndirectories = [\"/srv/www\", \"/var/lib/y\"]\n",
            s.dev.path.display()
        ),
    );
    let o = s.tabula(&["persist", "--root", sysroot.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("x-initrd.mount"), "{err}");
    assert!(mounted_at(&sysroot.join("srv/www")).is_none());
    assert!(
        !s.top.join("root/srv").exists(),
        "nothing created under /srv"
    );
    assert!(mounted_at(&sysroot.join("var/lib/y")).is_some());
    for p in ["var/lib/y", "persist"] {
        let _ = nix::mount::umount2(&sysroot.join(p), nix::mount::MntFlags::MNT_DETACH);
    }
}
