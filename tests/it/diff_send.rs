//! Property test on a real btrfs image (needs root): the send-stream fast path of `roots diff`
//! (`diff_subvolumes`) gives exactly the reference walk's result (`diff_trees`) on random trees changed
//! by random creates, deletes, renames (over existing names too), chmod, chown, xattrs, hard links,
//! type changes, content and mtime changes, and nested subvolumes.
//!
//! One image for the whole run; each case snapshots a fresh base. `TABULA_PROPERTY_CASES` overrides
//! the 200 cases.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Scratch, open_dir};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tabula::btrfs;
use tabula::diff::{DiffOptions, diff_subvolumes, diff_trees};

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

#[derive(Debug, Clone)]
enum Op {
    File {
        dir: usize,
        name: usize,
        size: u8,
    },
    Mkdir {
        dir: usize,
        name: usize,
    },
    Symlink {
        dir: usize,
        name: usize,
        target: usize,
    },
    Delete {
        path: usize,
    },
    Rename {
        path: usize,
        dir: usize,
        name: usize,
    },
    Chmod {
        path: usize,
        mode: u16,
    },
    Chown {
        path: usize,
        uid: u8,
    },
    SetXattr {
        path: usize,
        name: usize,
        value: u8,
    },
    RemoveXattr {
        path: usize,
        name: usize,
    },
    HardLink {
        path: usize,
        dir: usize,
        name: usize,
    },
    TypeChange {
        path: usize,
    },
    Rewrite {
        path: usize,
        byte: u8,
    },
    Touch {
        path: usize,
    },
    Subvolume {
        dir: usize,
        name: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0usize..64;
    let n = || 0usize..NAMES.len();
    prop_oneof![
        (i(), n(), any::<u8>()).prop_map(|(dir, name, size)| Op::File { dir, name, size }),
        (i(), n()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        (i(), n(), i()).prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
        i().prop_map(|path| Op::Delete { path }),
        (i(), i(), n()).prop_map(|(path, dir, name)| Op::Rename { path, dir, name }),
        (i(), 0u16..0o7777).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        (i(), 0u8..3).prop_map(|(path, uid)| Op::Chown { path, uid }),
        (i(), 0usize..3, 0u8..3).prop_map(|(path, name, value)| Op::SetXattr { path, name, value }),
        (i(), 0usize..3).prop_map(|(path, name)| Op::RemoveXattr { path, name }),
        (i(), i(), n()).prop_map(|(path, dir, name)| Op::HardLink { path, dir, name }),
        i().prop_map(|path| Op::TypeChange { path }),
        (i(), any::<u8>()).prop_map(|(path, byte)| Op::Rewrite { path, byte }),
        i().prop_map(|path| Op::Touch { path }),
        (i(), n()).prop_map(|(dir, name)| Op::Subvolume { dir, name }),
    ]
}

/// Everything below `root` (not descending into nested subvolumes), sorted; `root` itself first.
fn paths(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() && (p == root || !btrfs::is_subvolume(open_dir(&p).as_fd()).unwrap_or(false))
        {
            let mut kids: Vec<PathBuf> = fs::read_dir(&p)
                .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            kids.sort();
            out.extend(kids);
        }
    }
    out
}

fn pick(all: &[PathBuf], i: usize) -> PathBuf {
    all[i % all.len()].clone()
}

fn dirs(all: &[PathBuf]) -> Vec<PathBuf> {
    all.iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .cloned()
        .collect()
}

fn remove(p: &Path) {
    let Ok(md) = fs::symlink_metadata(p) else {
        return;
    };
    if md.is_dir() {
        if btrfs::is_subvolume(open_dir(p).as_fd()).unwrap_or(false) {
            let parent = open_dir(p.parent().unwrap());
            let _ =
                btrfs::delete_subvolume(parent.as_fd(), p.file_name().unwrap().to_str().unwrap());
        } else {
            let _ = fs::remove_dir_all(p);
        }
    } else {
        let _ = fs::remove_file(p);
    }
}

/// Applies one operation; failures (renaming a directory into itself, …) are part of the game.
fn apply(root: &Path, op: &Op) {
    let all = paths(root);
    let ds = dirs(&all);
    let below = |d: usize, n: usize| pick(&ds, d).join(NAMES[n]);
    let xname = |n: usize| ["user.one", "user.two", "trusted.three"][n];
    match *op {
        Op::File { dir, name, size } => {
            let _ = fs::write(below(dir, name), vec![b'x'; usize::from(size)]);
        }
        Op::Mkdir { dir, name } => {
            let _ = fs::create_dir(below(dir, name));
        }
        Op::Symlink { dir, name, target } => {
            let _ = symlink(pick(&all, target), below(dir, name));
        }
        Op::Delete { path } => {
            let p = pick(&all, path);
            if p != root {
                remove(&p);
            }
        }
        Op::Rename { path, dir, name } => {
            let _ = fs::rename(pick(&all, path), below(dir, name));
        }
        Op::Chmod { path, mode } => {
            let p = pick(&all, path);
            if !fs::symlink_metadata(&p).unwrap().is_symlink() {
                let _ = fs::set_permissions(&p, fs::Permissions::from_mode(u32::from(mode)));
            }
        }
        Op::Chown { path, uid } => {
            let _ = lchown(
                pick(&all, path),
                Some(u32::from(uid) * 1000),
                Some(u32::from(uid)),
            );
        }
        Op::SetXattr { path, name, value } => {
            let _ = rustix::fs::lsetxattr(
                pick(&all, path),
                xname(name),
                &[value],
                rustix::fs::XattrFlags::empty(),
            );
        }
        Op::RemoveXattr { path, name } => {
            let _ = rustix::fs::lremovexattr(pick(&all, path), xname(name));
        }
        Op::HardLink { path, dir, name } => {
            let p = pick(&all, path);
            if fs::symlink_metadata(&p).unwrap().is_file() {
                let _ = fs::hard_link(p, below(dir, name));
            }
        }
        Op::TypeChange { path } => {
            let p = pick(&all, path);
            if p == root {
                return;
            }
            let was_dir = fs::symlink_metadata(&p).unwrap().is_dir();
            remove(&p);
            if was_dir {
                let _ = fs::write(&p, b"now a file");
            } else {
                let _ = fs::create_dir(&p);
            }
        }
        Op::Rewrite { path, byte } => {
            let p = pick(&all, path);
            if fs::symlink_metadata(&p).unwrap().is_file() {
                let len = fs::metadata(&p).unwrap().len();
                let _ = fs::write(&p, vec![byte; len as usize]);
            }
        }
        Op::Touch { path } => {
            let p = pick(&all, path);
            let t = rustix::fs::Timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 7,
            };
            let _ = rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
        }
        Op::Subvolume { dir, name } => {
            let d = pick(&ds, dir);
            if let Ok(fd) = fs::File::open(&d) {
                let _ = btrfs::create_subvolume(fd.as_fd(), NAMES[name]);
            }
        }
    }
}

static CASE: AtomicUsize = AtomicUsize::new(0);

fn run_case(s: &Scratch, base: &[Op], change: &[Op]) -> Result<(), TestCaseError> {
    let n = CASE.fetch_add(1, Ordering::Relaxed);
    let top = s.top_fd();
    let src = format!("src{n}");
    btrfs::create_subvolume(top.as_fd(), &src).unwrap();
    let src_path = s.top.join(&src);
    for op in base {
        apply(&src_path, op);
    }
    let blank = format!("blank{n}");
    btrfs::snapshot(open_dir(&src_path).as_fd(), top.as_fd(), &blank, true).unwrap();
    let work = format!("work{n}");
    btrfs::snapshot(
        open_dir(&s.top.join(&blank)).as_fd(),
        top.as_fd(),
        &work,
        false,
    )
    .unwrap();
    let work_path = s.top.join(&work);
    for op in change {
        apply(&work_path, op);
    }
    let old = open_dir(&s.top.join(&blank));
    let new = open_dir(&work_path);
    btrfs::set_read_only(new.as_fd(), true).unwrap();
    for opts in [
        DiffOptions::default(),
        DiffOptions {
            list_children: true,
            report_mtime: true,
            ignore: vec!["/a/b".into()],
        },
    ] {
        let walked = diff_trees(old.as_fd(), new.as_fd(), &opts).unwrap();
        let sent = diff_subvolumes(old.as_fd(), new.as_fd(), &opts).unwrap();
        prop_assert_eq!(&sent, &walked, "options {:?}", opts);
    }
    Ok(())
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn send_fast_path_equals_the_walk() {
    let Some(s) = Scratch::new("send_fast_path_equals_the_walk", 1024) else {
        return;
    };
    let cases = std::env::var("TABULA_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(op(), 5..40),
        prop::collection::vec(op(), 1..25),
    );
    let result = runner.run(&strategy, |(base, change)| run_case(&s, &base, &change));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_writable_side_is_refused_for_the_caller_to_walk() {
    let Some(s) = Scratch::new("a_writable_side_is_refused", 300) else {
        return;
    };
    let top = s.top_fd();
    btrfs::create_subvolume(top.as_fd(), "w").unwrap();
    let w = open_dir(&s.top.join("w"));
    btrfs::snapshot(w.as_fd(), top.as_fd(), "ro", true).unwrap();
    let ro = open_dir(&s.top.join("ro"));
    let err = diff_subvolumes(ro.as_fd(), w.as_fd(), &DiffOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("read-only"), "{err:#}");
    fs::create_dir(s.top.join("w/sub")).unwrap();
    let sub = open_dir(&s.top.join("w/sub"));
    assert!(diff_subvolumes(ro.as_fd(), sub.as_fd(), &DiffOptions::default()).is_err());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn roots_diff_uses_send_and_agrees_with_walk() {
    let Some(s) = Scratch::new("roots_diff_uses_send", 300) else {
        return;
    };
    let top = s.top_fd();
    btrfs::create_subvolume(top.as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc/keep")).unwrap();
    fs::write(s.top.join("root/etc/keep/x"), "x").unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    fs::write(s.top.join("root/etc/new"), "new").unwrap();
    fs::remove_file(s.top.join("root/etc/keep/x")).unwrap();
    fs::set_permissions(s.top.join("root/etc"), fs::Permissions::from_mode(0o700)).unwrap();
    s.tabula_ok(&["rollback"]);
    let fast = s.tabula(&["--verbose", "roots", "diff", "-1", "--json"]);
    let walked = s.tabula_ok(&["roots", "diff", "-1", "--json", "--walk"]);
    assert!(fast.status.success(), "{}", common::stderr(&fast));
    assert_eq!(String::from_utf8_lossy(&fast.stdout), walked);
    assert!(
        walked.contains("/etc/new") && walked.contains("/etc/keep/x"),
        "{walked}"
    );
    assert!(
        !common::stderr(&fast).contains("walking"),
        "{}",
        common::stderr(&fast)
    );
    // The live root is writable: said at debug level, then walked.
    let live = s.tabula(&["--verbose", "roots", "diff", "current"]);
    assert!(live.status.success());
    assert!(
        common::stderr(&live).contains("walking"),
        "{}",
        common::stderr(&live)
    );
}
