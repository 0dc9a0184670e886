//! The btrfs ioctl layer on a real loop-mounted btrfs (needs root; fails loudly under CI=true otherwise).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use common::{Scratch, open_dir};
use nix::errno::Errno;
use tabula::btrfs;

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn create_snapshot_info_flags_delete() {
    let Some(s) = Scratch::new("create_snapshot_info_flags_delete", 256) else {
        return;
    };
    let top = s.top_fd();
    btrfs::create_subvolume(top.as_fd(), "a").unwrap();
    fs::write(s.top.join("a/file"), b"hello").unwrap();
    assert!(btrfs::is_subvolume_at(top.as_fd(), "a").unwrap());
    fs::create_dir(s.top.join("plain")).unwrap();
    assert!(!btrfs::is_subvolume_at(top.as_fd(), "plain").unwrap());
    assert!(!btrfs::is_subvolume_at(top.as_fd(), "missing").unwrap());

    let a = open_dir(&s.top.join("a"));
    let a_info = btrfs::subvolume_info(a.as_fd()).unwrap();
    assert_eq!(a_info.parent_id, btrfs::TOP_LEVEL_ID);
    assert_eq!(a_info.name, "a");
    assert!(!a_info.read_only);
    assert!(a_info.otime.is_some());

    btrfs::snapshot(a.as_fd(), top.as_fd(), "a-ro", true).unwrap();
    let ro = open_dir(&s.top.join("a-ro"));
    let ro_info = btrfs::subvolume_info(ro.as_fd()).unwrap();
    assert!(ro_info.read_only);
    assert!(btrfs::is_read_only(ro.as_fd()).unwrap());
    assert_eq!(ro_info.parent_uuid.as_deref(), Some(a_info.uuid.as_str()));
    assert_ne!(ro_info.uuid, a_info.uuid);
    assert_eq!(fs::read(s.top.join("a-ro/file")).unwrap(), b"hello");
    assert_eq!(
        fs::write(s.top.join("a-ro/new"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(Errno::EROFS as i32)
    );

    btrfs::set_read_only(ro.as_fd(), false).unwrap();
    btrfs::set_read_only(ro.as_fd(), false).unwrap(); // idempotent
    assert!(!btrfs::is_read_only(ro.as_fd()).unwrap());
    btrfs::set_read_only(ro.as_fd(), true).unwrap();
    drop(ro);

    btrfs::snapshot(a.as_fd(), top.as_fd(), "a-rw", false).unwrap();
    fs::write(s.top.join("a-rw/new"), b"x").unwrap();
    drop(a);

    let e = btrfs::delete_subvolume(top.as_fd(), "plain").unwrap_err();
    assert_eq!(e.op, "deleting subvolume");
    btrfs::delete_subvolume(top.as_fd(), "a-rw").unwrap();
    btrfs::delete_subvolume(top.as_fd(), "a-ro").unwrap();
    assert!(!s.top.join("a-rw").exists() && !s.top.join("a-ro").exists());
    btrfs::sync(top.as_fd()).unwrap();
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn children_are_listed_by_id_past_the_255_item_page() {
    let Some(s) = Scratch::new("children_are_listed_by_id_past_the_255_item_page", 512) else {
        return;
    };
    let top = s.top_fd();
    btrfs::create_subvolume(top.as_fd(), "parent").unwrap();
    fs::create_dir_all(s.top.join("parent/deep/er")).unwrap();
    let parent = open_dir(&s.top.join("parent"));
    let deep = open_dir(&s.top.join("parent/deep/er"));
    for i in 0..300 {
        let dir = if i % 2 == 0 {
            parent.as_fd()
        } else {
            deep.as_fd()
        };
        btrfs::create_subvolume(dir, &format!("c{i:03}")).unwrap();
    }
    let children = btrfs::child_subvolumes(parent.as_fd()).unwrap();
    assert_eq!(children.len(), 300);
    let mut paths: Vec<String> = children
        .iter()
        .map(|c| c.path.display().to_string())
        .collect();
    paths.sort();
    assert!(paths.contains(&"c000".to_string()), "{:?}", &paths[..3]);
    assert!(paths.contains(&"deep/er/c001".to_string()));
    // Children of the top level are the top level's, not the parent's.
    let top_children = btrfs::child_subvolumes(top.as_fd()).unwrap();
    assert_eq!(top_children.len(), 1);
    assert_eq!(top_children[0].path, Path::new("parent"));
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn recursive_delete_clears_read_only_only_where_allowed() {
    let Some(s) = Scratch::new("recursive_delete_clears_read_only_only_where_allowed", 256) else {
        return;
    };
    let top = s.top_fd();
    btrfs::create_subvolume(top.as_fd(), "victim").unwrap();
    fs::create_dir_all(s.top.join("victim/var/lib")).unwrap();
    let lib = open_dir(&s.top.join("victim/var/lib"));
    btrfs::create_subvolume(lib.as_fd(), "machines").unwrap();
    let machines = open_dir(&s.top.join("victim/var/lib/machines"));
    btrfs::create_subvolume(machines.as_fd(), "inner").unwrap();
    btrfs::snapshot(machines.as_fd(), lib.as_fd(), "machines-ro", true).unwrap();
    let victim = open_dir(&s.top.join("victim"));
    btrfs::set_read_only(victim.as_fd(), true).unwrap();
    btrfs::set_read_only(machines.as_fd(), true).unwrap();
    drop((lib, machines, victim));

    // Not allowed to thaw: refused with EROFS before anything is deleted.
    let mut seen = Vec::new();
    let e = btrfs::delete_subvolume_recursive(top.as_fd(), "victim", &|_| false, &mut |p| {
        seen.push(p.to_path_buf())
    })
    .unwrap_err();
    assert_eq!(e.errno, Errno::EROFS);
    assert!(seen.is_empty());
    assert!(s.top.join("victim/var/lib/machines/inner").exists());

    let mut seen = Vec::new();
    btrfs::delete_subvolume_recursive(top.as_fd(), "victim", &|_| true, &mut |p| {
        seen.push(p.to_path_buf())
    })
    .unwrap();
    assert!(!s.top.join("victim").exists());
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(
        seen.last().unwrap(),
        Path::new("victim"),
        "parent deleted last: {seen:?}"
    );
    let inner = seen.iter().position(|p| p.ends_with("inner")).unwrap();
    let machines = seen.iter().position(|p| p.ends_with("machines")).unwrap();
    assert!(inner < machines, "post-order: {seen:?}");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn default_subvolume_and_reflink() {
    let Some(s) = Scratch::new("default_subvolume_and_reflink", 256) else {
        return;
    };
    let top = s.top_fd();
    assert_eq!(
        btrfs::default_subvolume_id(top.as_fd()).unwrap(),
        btrfs::TOP_LEVEL_ID
    );
    btrfs::create_subvolume(top.as_fd(), "d").unwrap();
    let d = open_dir(&s.top.join("d"));
    let id = btrfs::subvolume_info(d.as_fd()).unwrap().id;
    common::run(
        std::process::Command::new("btrfs")
            .args(["subvolume", "set-default"])
            .arg(s.top.join("d")),
    );
    assert_eq!(btrfs::default_subvolume_id(top.as_fd()).unwrap(), id);
    // The kernel refuses to delete the default subvolume; we surface its errno.
    assert_eq!(
        btrfs::delete_subvolume(top.as_fd(), "d").unwrap_err().errno,
        Errno::EPERM
    );

    fs::write(s.top.join("src"), vec![7u8; 1 << 20]).unwrap();
    let src = fs::File::open(s.top.join("src")).unwrap();
    let dst = fs::File::create(s.top.join("d/dst")).unwrap();
    btrfs::clone_file(dst.as_fd(), src.as_fd()).unwrap();
    assert_eq!(fs::read(s.top.join("d/dst")).unwrap(), vec![7u8; 1 << 20]);
}

#[test]
fn ioctls_refuse_non_btrfs() {
    // No root needed: /proc is not btrfs, so every call must stop before the ioctl.
    let proc_fd = open_dir(Path::new("/proc"));
    assert_eq!(
        btrfs::create_subvolume(proc_fd.as_fd(), "x")
            .unwrap_err()
            .errno,
        Errno::ENOTTY
    );
    assert!(!btrfs::is_subvolume(proc_fd.as_fd()).unwrap());
    assert_eq!(
        btrfs::subvolume_info(proc_fd.as_fd()).unwrap_err().errno,
        Errno::ENOTTY
    );
}
