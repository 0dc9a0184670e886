//! The fsx layer on a real loop-mounted btrfs: mount points are told apart by mount id, not by device
//! (needs root; fails loudly under CI=true otherwise).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;

use common::{MountGuard, Scratch, open_dir};
use nix::mount::{MsFlags, mount};
use tabula::{btrfs, fsx};

/// A nested subvolume has its own `st_dev` but the same mount id: it is no mount point. A bind mount
/// of a directory of the same subvolume has the same `st_dev` but its own mount id: it is one.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn nested_subvolume_is_no_mount_point_but_a_bind_mount_is() {
    let Some(s) = Scratch::new(
        "nested_subvolume_is_no_mount_point_but_a_bind_mount_is",
        256,
    ) else {
        return;
    };
    let top = s.top_fd();
    btrfs::create_subvolume(top.as_fd(), "nested").unwrap();
    fs::create_dir_all(s.top.join("src/dir")).unwrap();
    fs::create_dir(s.top.join("bound")).unwrap();
    mount(
        Some(&s.top.join("src")),
        &s.top.join("bound"),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _bind = MountGuard {
        target: s.top.join("bound"),
    };

    let top_st = fsx::stat_fd(top.as_fd()).unwrap();
    let nested = fsx::stat_at(top.as_fd(), "nested").unwrap();
    assert_ne!(
        nested.dev, top_st.dev,
        "a nested subvolume has its own st_dev"
    );
    assert_eq!(nested.mnt_id, top_st.mnt_id, "but the same mount");
    assert!(!fsx::is_mount_point_at(top.as_fd(), "nested").unwrap());

    let bound = fsx::stat_at(top.as_fd(), "bound").unwrap();
    assert_eq!(
        bound.dev, top_st.dev,
        "a bind mount of the same subvolume keeps st_dev"
    );
    assert_ne!(bound.mnt_id, top_st.mnt_id);
    assert!(fsx::is_mount_point_at(top.as_fd(), "bound").unwrap());
    assert!(!fsx::is_mount_point_at(top.as_fd(), "src").unwrap());
    assert_eq!(
        fsx::mount_id(open_dir(&s.top.join("nested")).as_fd()).unwrap(),
        top_st.mnt_id
    );
}

/// The iterative remove goes on past a mount point and a nested subvolume, keeps them (and their
/// parents), removes everything else, and reports the first refusal.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn remove_tree_stops_at_mounts_and_subvolumes_and_goes_on() {
    let Some(s) = Scratch::new(
        "remove_tree_stops_at_mounts_and_subvolumes_and_goes_on",
        256,
    ) else {
        return;
    };
    let top = s.top_fd();
    fs::create_dir_all(s.top.join("outside/keep")).unwrap();
    fs::write(s.top.join("outside/keep/precious"), "x").unwrap();
    fs::create_dir_all(s.top.join("tree/a/mnt")).unwrap();
    fs::create_dir_all(s.top.join("tree/b/c")).unwrap();
    fs::write(s.top.join("tree/b/c/file"), "y").unwrap();
    fs::write(s.top.join("tree/z"), "z").unwrap();
    let sub_parent = open_dir(&s.top.join("tree/b"));
    btrfs::create_subvolume(sub_parent.as_fd(), "sub").unwrap();
    fs::write(s.top.join("tree/b/sub/inside"), "s").unwrap();
    mount(
        Some(&s.top.join("outside")),
        &s.top.join("tree/a/mnt"),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _bind = MountGuard {
        target: s.top.join("tree/a/mnt"),
    };

    let err = fsx::remove_tree_at(top.as_fd(), "tree").unwrap_err();
    assert_eq!(
        err,
        fsx::Error::MountPoint {
            path: "tree/a/mnt".into()
        },
        "{err}"
    );
    assert!(s.top.join("outside/keep/precious").exists(), "not entered");
    assert!(s.top.join("tree/a/mnt/keep/precious").exists());
    assert!(
        s.top.join("tree/b/sub/inside").exists(),
        "nested subvolume kept"
    );
    assert!(
        !s.top.join("tree/b/c").exists(),
        "went on past the refusals"
    );
    assert!(!s.top.join("tree/z").exists());
    assert_eq!(common::ls(&s.top.join("tree")), ["a", "b"]);

    // Refused at the top too.
    assert_eq!(
        fsx::remove_tree_at(sub_parent.as_fd(), "sub").unwrap_err(),
        fsx::Error::OtherFilesystem { path: "sub".into() }
    );
    let a = open_dir(&s.top.join("tree/a"));
    assert_eq!(
        fsx::remove_tree_at(a.as_fd(), "mnt").unwrap_err(),
        fsx::Error::MountPoint { path: "mnt".into() }
    );
}
