//! The user-namespace harness ([`common::enter_user_namespace`]) itself: a test it runs is root in a
//! user and mount namespace of its own where tabula sees a mount as a mount point, and a failure in
//! that namespace fails the test. These run as any user.

use std::fs;

use nix::mount::{MsFlags, mount};

use crate::common::{self, USERNS_CHILD, enter_user_namespace};

/// The child is root of a namespace that maps one uid (the caller's), has left the caller's user
/// and mount namespaces, and may mount: a tmpfs there is a mount point by tabula's own test.
#[test]
fn a_test_runs_as_root_of_a_user_namespace_where_it_may_mount() {
    if !enter_user_namespace() {
        return;
    }
    assert!(nix::unistd::geteuid().is_root());
    let uid_map = fs::read_to_string("/proc/self/uid_map").unwrap();
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(
        (fields.len(), fields[0], fields[2]),
        (3, "0", "1"),
        "{uid_map}"
    );
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("store")).unwrap();
    let dir = common::open_dir(tmp.path());
    assert!(!tabula::fsx::is_mount_point_at(common::fd(&dir), "store").unwrap());
    mount(
        Some("tmpfs"),
        &tmp.path().join("store"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let _guard = common::MountGuard {
        target: tmp.path().join("store"),
    };
    assert!(tabula::fsx::is_mount_point_at(common::fd(&dir), "store").unwrap());
}

/// A test that fails in its namespace fails, and says why: the child's panic is in the message.
#[test]
fn a_failure_in_the_namespace_fails_the_test_with_its_output() {
    if std::env::var_os(USERNS_CHILD).is_some() {
        panic!("deliberate failure in the child");
    }
    let failure = std::panic::catch_unwind(enter_user_namespace).expect_err("the child failed");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("failed in its user namespace")
            && message.contains("deliberate failure in the child"),
        "{message}"
    );
}
