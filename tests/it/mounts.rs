//! Nothing mounted anywhere is deleted or retired (needs root): mounts in another mount namespace, through
//! another member device of a two-device filesystem, from a device path that no longer exists, and the
//! live root mounted while `tabula rollback` runs.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{LoopDevice, MountGuard, Scratch, assert_refused, open_dir, retired, stderr};
use nix::mount::{MsFlags, mount};
use serde_json::Value;
use tabula::btrfs;

/// A process in a mount namespace of its own (made with `unshare`) holding one mount, invisible to the
/// test's namespace. Dropping it ends the process, and with it the namespace and the mount.
struct Holder {
    child: Child,
}

impl Holder {
    fn mount(device: &Path, options: &str, target: &Path) -> Holder {
        let script = format!(
            "mount -t btrfs -o ro,{options} '{}' '{}' && echo ready && read _",
            device.display(),
            target.display()
        );
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the holder could not mount {options}");
        Holder { child }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn subvol_id(path: &Path) -> u64 {
    btrfs::subvolume_info(open_dir(path).as_fd()).unwrap().id
}

/// `root` with a nested subvolume `var/lib/machines`, initialised, then `boots` rollbacks.
fn boot(top: &Path, tabula_ok: &dyn Fn(&[&str]) -> String, boots: usize) {
    btrfs::create_subvolume(open_dir(top).as_fd(), "root").unwrap();
    fs::create_dir_all(top.join("root/etc")).unwrap();
    tabula_ok(&["init", "--blank-from", "current"]);
    for b in 1..=boots {
        fs::create_dir_all(top.join("root/var/lib")).unwrap();
        btrfs::create_subvolume(open_dir(&top.join("root/var/lib")).as_fd(), "machines").unwrap();
        fs::write(top.join(format!("root/boot-{b}")), "x").unwrap();
        tabula_ok(&["rollback"]);
    }
}

fn keep_last_1(config: &Path) {
    let text = fs::read_to_string(config).unwrap();
    fs::write(config, format!("{text}[retention]\nkeep_last = 1\n")).unwrap();
}

fn held(s: &Scratch) -> Vec<(String, String)> {
    let v: Value =
        serde_json::from_str(&s.tabula_ok(&["roots", "prune", "--dry-run", "--json"])).unwrap();
    v["plan"]["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                h["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn mounted_in_another_namespace_is_never_deleted() {
    let Some(s) = Scratch::new("mounted_in_another_namespace_is_never_deleted", 400) else {
        return;
    };
    boot(&s.top, &|a| s.tabula_ok(a), 4);
    let names = retired(&s);
    let old = s.top.join("old_roots");
    // Root 2 itself, and the subvolume nested in root 1, each mounted in a namespace of its own.
    let (peek_a, peek_b) = (s.dir.path().join("a"), s.dir.path().join("b"));
    fs::create_dir(&peek_a).unwrap();
    fs::create_dir(&peek_b).unwrap();
    let id2 = subvol_id(&old.join(&names[1]));
    let nested1 = subvol_id(&old.join(&names[0]).join("var/lib/machines"));
    let a = Holder::mount(&s.dev.path, &format!("subvolid={id2}"), &peek_a);
    let b = Holder::mount(&s.dev.path, &format!("subvolid={nested1}"), &peek_b);
    assert!(
        common::ls(&peek_a).is_empty() && common::ls(&peek_b).is_empty(),
        "the mounts are not in the test's own namespace"
    );

    let out = s.tabula(&["roots", "delete", names[1].as_str()]);
    assert_refused(&out, "mounted");
    assert!(
        stderr(&out).contains(&format!("'{}'", peek_a.display()))
            && stderr(&out).contains("mount namespace of pid"),
        "{}",
        stderr(&out)
    );
    assert_refused(
        &s.tabula(&["roots", "delete", names[0].as_str()]),
        "mounted",
    );
    keep_last_1(&s.config);
    let held = held(&s);
    assert!(
        held.contains(&(names[0].clone(), "mounted".into())),
        "{held:?}"
    );
    assert!(
        held.contains(&(names[1].clone(), "mounted".into())),
        "{held:?}"
    );
    s.tabula_ok(&["roots", "prune"]);
    assert_eq!(
        retired(&s),
        [names[0].clone(), names[1].clone(), names[3].clone()]
    );

    // Unmounted (the namespaces are gone): now they go.
    drop((a, b));
    s.tabula_ok(&["roots", "prune"]);
    assert_eq!(retired(&s), [names[3].clone()]);
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn mounted_from_a_device_path_that_no_longer_exists_is_never_deleted() {
    let Some(s) = Scratch::new(
        "mounted_from_a_device_path_that_no_longer_exists_is_never_deleted",
        400,
    ) else {
        return;
    };
    boot(&s.top, &|a| s.tabula_ok(a), 3);
    let names = retired(&s);
    // Mount root 1 through a device node of our own, then remove the node (like `/dev/root`).
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(&s.dev.path).unwrap().rdev();
    let node = s.dir.path().join("root-dev");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        rdev,
    )
    .unwrap();
    let peek = s.dir.path().join("peek");
    fs::create_dir(&peek).unwrap();
    let id1 = subvol_id(&s.top.join("old_roots").join(&names[0]));
    mount(
        Some(&node),
        &peek,
        Some("btrfs"),
        MsFlags::MS_RDONLY,
        Some(format!("subvolid={id1}").as_str()),
    )
    .unwrap();
    let _peek = MountGuard {
        target: peek.clone(),
    };
    fs::remove_file(&node).unwrap();
    let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", peek.display())))
        .unwrap();
    assert!(
        line.contains(&format!(" {} ", node.display())),
        "the mount's source is the removed node: {line}"
    );
    assert_refused(
        &s.tabula(&["roots", "delete", names[0].as_str()]),
        "mounted",
    );
    keep_last_1(&s.config);
    s.tabula_ok(&["roots", "prune"]);
    assert_eq!(retired(&s), [names[0].clone(), names[2].clone()]);
}

/// A filesystem over two loop devices, top level mounted through the first.
struct TwoDevices {
    _top: MountGuard,
    a: LoopDevice,
    b: LoopDevice,
    top: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl TwoDevices {
    fn new(test: &str) -> Option<TwoDevices> {
        if !common::require_root(test) {
            return None;
        }
        common::private_mount_namespace();
        let dir = tempfile::Builder::new()
            .prefix("tabula-test-")
            .tempdir()
            .unwrap();
        let images = [dir.path().join("a.img"), dir.path().join("b.img")];
        for i in &images {
            fs::File::create(i).unwrap().set_len(300 << 20).unwrap();
        }
        let a = LoopDevice::attach(&images[0]);
        let b = LoopDevice::attach(&images[1]);
        common::run(
            Command::new("mkfs.btrfs")
                .args(["-q", "-f", "-d", "single", "-m", "raid1"])
                .arg(&a.path)
                .arg(&b.path),
        );
        common::run(
            Command::new("btrfs")
                .args(["device", "scan"])
                .arg(&a.path)
                .arg(&b.path),
        );
        let top = dir.path().join("top");
        fs::create_dir(&top).unwrap();
        mount(
            Some(&a.path),
            &top,
            Some("btrfs"),
            MsFlags::empty(),
            Some("subvolid=5"),
        )
        .unwrap();
        let config = dir.path().join("tabula.toml");
        let t = TwoDevices {
            _top: MountGuard {
                target: top.clone(),
            },
            a,
            b,
            top,
            config,
            dir,
        };
        t.configure(&t.a.path);
        Some(t)
    }

    fn configure(&self, device: &Path) {
        fs::write(
            &self.config,
            format!(
                "[layout]\ndevice = \"{}\"\ndevice_timeout = \"2s\"\n",
                device.display()
            ),
        )
        .unwrap();
    }

    fn tabula(&self, args: &[&str]) -> std::process::Output {
        common::tabula_cmd(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn tabula_ok(&self, args: &[&str]) -> String {
        let out = self.tabula(args);
        assert!(out.status.success(), "tabula {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn mounted_through_another_member_device_is_never_deleted() {
    let Some(t) = TwoDevices::new("mounted_through_another_member_device_is_never_deleted") else {
        return;
    };
    boot(&t.top, &|a| t.tabula_ok(a), 3);
    let names: Vec<String> = common::ls(&t.top.join("old_roots"))
        .into_iter()
        .filter(|n| tabula::layout::RetiredName::parse(n).is_some())
        .collect();
    let peek = t.dir.path().join("peek");
    fs::create_dir(&peek).unwrap();
    let id1 = subvol_id(&t.top.join("old_roots").join(&names[0]));
    // Root 1 mounted through the second device, in another namespace.
    let _h = Holder::mount(&t.b.path, &format!("subvolid={id1}"), &peek);
    // Whichever member the kernel shows as the source, tabula is told the other one.
    let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", t.top.display())))
        .unwrap();
    let shown_a = line.contains(&format!(" {} ", t.a.path.display()));
    t.configure(if shown_a { &t.b.path } else { &t.a.path });
    let out = t.tabula(&["roots", "delete", names[0].as_str()]);
    assert_refused(&out, "mounted");
    keep_last_1(&t.config);
    t.tabula_ok(&["roots", "prune"]);
    let left: Vec<String> = common::ls(&t.top.join("old_roots"))
        .into_iter()
        .filter(|n| tabula::layout::RetiredName::parse(n).is_some())
        .collect();
    assert_eq!(left, [names[0].clone(), names[2].clone()]);
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_mounted_root_is_never_retired() {
    let Some(s) = Scratch::new("a_mounted_root_is_never_retired", 400) else {
        return;
    };
    boot(&s.top, &|a| s.tabula_ok(a), 1);
    fs::write(s.top.join("root/work"), "in use").unwrap();
    fs::create_dir_all(s.top.join("root/var/lib")).unwrap();
    btrfs::create_subvolume(open_dir(&s.top.join("root/var/lib")).as_fd(), "machines").unwrap();
    let root_id = subvol_id(&s.top.join("root"));
    let before = retired(&s);
    // `root` mounted here, as on a running system.
    let sysroot = s.dir.path().join("sysroot");
    fs::create_dir(&sysroot).unwrap();
    mount(
        Some(&s.dev.path),
        &sysroot,
        Some("btrfs"),
        MsFlags::empty(),
        Some("subvol=root"),
    )
    .unwrap();
    let g = MountGuard {
        target: sysroot.clone(),
    };
    let out = s.tabula(&["rollback"]);
    assert_refused(&out, "root-mounted");
    assert!(
        stderr(&out).contains(&format!("'{}'", sysroot.display())),
        "{}",
        stderr(&out)
    );
    assert_refused(&s.tabula(&["rollback", "--dry-run"]), "root-mounted");
    drop(g);
    // A subvolume nested in `root`, mounted in another namespace.
    let peek = s.dir.path().join("peek");
    fs::create_dir(&peek).unwrap();
    let nested = subvol_id(&s.top.join("root/var/lib/machines"));
    let h = Holder::mount(&s.dev.path, &format!("subvolid={nested}"), &peek);
    assert_refused(&s.tabula(&["rollback"]), "root-mounted");
    assert_eq!(retired(&s), before, "nothing retired");
    assert_eq!(subvol_id(&s.top.join("root")), root_id, "root untouched");
    assert!(!btrfs::is_read_only(open_dir(&s.top.join("root")).as_fd()).unwrap());
    drop(h);
    s.tabula_ok(&["rollback"]);
    assert_eq!(retired(&s).len(), before.len() + 1);
}

#[test]
fn layout_names_cannot_be_tabulas_own() {
    // No root needed: the configuration is refused before any device is looked at.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tabula.toml");
    for (line, why) in [
        ("persist = \"root.tabula-new\"", "is reserved"),
        ("blank = \"sys.tabula-new\"", "is reserved"),
        ("old_roots = \".x.json.tmp\"", "is reserved"),
        ("persist = \"a/b\"", "single path component"),
        ("persist = \"root\"", "name the same subvolume"),
    ] {
        fs::write(
            &config,
            format!("[layout]\ndevice = \"/dev/null\"\n{line}\n"),
        )
        .unwrap();
        let col = line.find('"').unwrap() + 1;
        for cmd in [
            &["check"][..],
            &["init"],
            &["rollback", "--dry-run"],
            &["roots", "list"],
        ] {
            let out = common::tabula_cmd(&config).args(cmd).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{cmd:?} {line}: {}",
                stderr(&out)
            );
            let at = format!("{}:3:{col}", config.display());
            assert!(
                stderr(&out).contains(&at) && stderr(&out).contains(why),
                "{cmd:?} {line}: expected {at} {why}: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn removal_never_descends_into_a_mount_and_goes_on_past_errors() {
    let Some(s) = Scratch::new(
        "removal_never_descends_into_a_mount_and_goes_on_past_errors",
        300,
    ) else {
        return;
    };
    let top = s.top_fd();
    // victim/var/lib/machines and victim/srv/b are nested subvolumes; decoy has the same shape.
    for name in ["victim", "decoy"] {
        btrfs::create_subvolume(top.as_fd(), name).unwrap();
        fs::create_dir_all(s.top.join(name).join("var/lib")).unwrap();
        btrfs::create_subvolume(
            open_dir(&s.top.join(name).join("var/lib")).as_fd(),
            "machines",
        )
        .unwrap();
    }
    fs::create_dir_all(s.top.join("victim/srv")).unwrap();
    btrfs::create_subvolume(open_dir(&s.top.join("victim/srv")).as_fd(), "b").unwrap();
    // After the tree was inspected, decoy/var appears over victim/var (a bind mount).
    mount(
        Some(&s.top.join("decoy/var")),
        &s.top.join("victim/var"),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let bind = MountGuard {
        target: s.top.join("victim/var"),
    };
    let e = btrfs::delete_subvolume_recursive(top.as_fd(), "victim", &|_| true, &mut |_| {})
        .unwrap_err();
    assert_eq!(e.errno, nix::errno::Errno::EXDEV, "{e}");
    assert!(
        s.top.join("decoy/var/lib/machines").exists(),
        "nothing behind the mount was deleted"
    );
    assert!(
        !s.top.join("victim/srv/b").exists(),
        "the sibling after the error went anyway"
    );
    assert!(
        s.top.join("victim").exists(),
        "the parent of what failed stays"
    );
    drop(bind);
    let ids =
        btrfs::delete_subvolume_recursive(top.as_fd(), "victim", &|_| true, &mut |_| {}).unwrap();
    assert_eq!(ids.len(), 2, "machines, then victim: {ids:?}");
    assert!(!s.top.join("victim").exists() && s.top.join("decoy").exists());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn deleting_removes_qgroups_and_an_interrupted_delete_shows() {
    let Some(s) = Scratch::new(
        "deleting_removes_qgroups_and_an_interrupted_delete_shows",
        400,
    ) else {
        return;
    };
    common::run(Command::new("btrfs").args(["quota", "enable"]).arg(&s.top));
    boot(&s.top, &|a| s.tabula_ok(a), 3);
    let names = retired(&s);
    let old = s.top.join("old_roots");
    let ids = [
        subvol_id(&old.join(&names[0])),
        subvol_id(&old.join(&names[0]).join("var/lib/machines")),
    ];
    let qgroups = || {
        let out = common::run(Command::new("btrfs").args(["qgroup", "show"]).arg(&s.top));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for id in ids {
        assert!(qgroups().contains(&format!("0/{id} ")), "{}", qgroups());
    }
    s.tabula_ok(&["roots", "delete", names[0].as_str()]);
    let shown = qgroups();
    for id in ids {
        assert!(
            !shown.contains(&format!("0/{id} ")),
            "0/{id} stays:\n{shown}"
        );
    }

    // Root 2 left writable, as an interrupted deletion leaves it (thawed to reach its children).
    btrfs::set_read_only(open_dir(&old.join(&names[1])).as_fd(), false).unwrap();
    let v: Value = serde_json::from_str(&s.tabula_ok(&["roots", "list", "--json"])).unwrap();
    let row = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == names[1].as_str())
        .unwrap();
    assert!(
        row["problem"].as_str().unwrap_or("").contains("writable"),
        "{row}"
    );
    s.tabula_ok(&["roots", "delete", names[1].as_str()]);
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn min_free_deletes_only_what_it_must() {
    let Some(s) = Scratch::new("min_free_deletes_only_what_it_must", 512) else {
        return;
    };
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    // Five retired roots and the live one, each holding 40 MiB of its own.
    let mut data = vec![0u8; 40 << 20];
    for b in 1..=6 {
        for (i, chunk) in data.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(
                &((i as u64) ^ (b << 40))
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .to_le_bytes(),
            );
        }
        fs::write(s.top.join("root/data"), &data).unwrap();
        if b <= 5 {
            s.tabula_ok(&["rollback"]);
        }
    }
    let names = retired(&s);
    assert_eq!(names.len(), 5);
    common::run(
        Command::new("btrfs")
            .args(["filesystem", "sync"])
            .arg(&s.top),
    );
    let st = nix::sys::statvfs::statvfs(&s.top).unwrap();
    let free = st.blocks_available() * st.fragment_size();
    // One deletion (40 MiB) reaches the floor; two would be needed only if the first looked like none.
    let floor = free + (16 << 20);
    let text = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        format!("{text}[retention]\nkeep_last = 10\nmin_free = \"{floor}\"\n"),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&s.tabula_ok(&["roots", "prune", "--json"])).unwrap();
    let outcome = &v["outcome"];
    assert_eq!(
        outcome["deleted_for_space"].as_array().unwrap().len(),
        1,
        "{outcome}"
    );
    assert_eq!(retired(&s), names[1..], "only the oldest went");
    assert!(
        outcome["free_bytes"].as_u64().unwrap() >= floor,
        "{outcome}"
    );
}
