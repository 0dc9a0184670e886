//! Unit tests of the fsx layer on a temp dir (no root needed).

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};

fn open(path: &Path) -> OwnedFd {
    rustix::fs::open(path, DIR | OFlags::CLOEXEC, Mode::empty()).expect("opening the test dir")
}

/// A tree with a symlink planted at every level:
/// `a/b/c/file`, `a/link -> b`, `a/b/link -> c`, `a/b/c/link -> file`, `top -> a`, `abs -> /`,
/// `a/dangling -> nowhere`, `a/file`.
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let p = t.path();
    std::fs::create_dir_all(p.join("a/b/c")).expect("mkdir");
    std::fs::write(p.join("a/b/c/file"), "x").expect("write");
    std::fs::write(p.join("a/file"), "y").expect("write");
    symlink("b", p.join("a/link")).expect("symlink");
    symlink("c", p.join("a/b/link")).expect("symlink");
    symlink("file", p.join("a/b/c/link")).expect("symlink");
    symlink("a", p.join("top")).expect("symlink");
    symlink("/", p.join("abs")).expect("symlink");
    symlink("nowhere", p.join("a/dangling")).expect("symlink");
    t
}

/// What an open gave, comparable across the two implementations.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Opened { ino: u64, dev: u64, symlink: bool },
    Failed(Error),
}

fn outcome(r: Result<OwnedFd>) -> Outcome {
    match r {
        Ok(fd) => {
            let st = stat_fd(fd.as_fd()).expect("fstat");
            Outcome::Opened {
                ino: st.ino,
                dev: st.dev,
                symlink: st.is_symlink(),
            }
        }
        Err(e) => Outcome::Failed(e),
    }
}

const CASES: &[&str] = &[
    "",
    ".",
    "a",
    "a/b",
    "a/b/c",
    "a/b/c/file",
    "a/./b/c/file",
    "a/b/c/",
    "top",
    "top/b",
    "a/link",
    "a/link/c",
    "a/b/link",
    "a/b/link/file",
    "a/b/c/link",
    "abs",
    "abs/etc",
    "a/dangling",
    "a/dangling/x",
    "a/missing",
    "a/missing/deeper",
    "a/file/x",
    "a/file",
    "..",
    "a/../a",
    "a/b/../../..",
    "/etc",
];

/// The resolver and its fallback walk give the same answer for every case and open mode, and
/// `openat2` itself is what answers the successful cases.
#[test]
fn openat2_and_walk_agree() {
    let t = tree();
    let dir = open(t.path());
    for flags in [
        DIR,
        OFlags::RDONLY,
        PATH,
        PATH | OFlags::DIRECTORY,
        OFlags::RDONLY | OFlags::NONBLOCK,
    ] {
        for rel in CASES {
            let rel = Path::new(rel);
            let full = open_beneath(dir.as_fd(), rel, flags);
            let walked = components(rel).and_then(|parts| {
                open_beneath_walk(
                    dir.as_fd(),
                    &parts,
                    flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                )
            });
            let (a, b) = (outcome(full), outcome(walked));
            assert_eq!(a, b, "{rel:?} with {flags:?}");
            if matches!(a, Outcome::Opened { .. }) {
                let parts = components(rel).expect("valid");
                let direct = open_beneath_openat2(
                    dir.as_fd(),
                    &parts,
                    flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                );
                assert_eq!(
                    outcome(direct.map_err(Error::io("opening", rel))),
                    a,
                    "openat2 itself answers {rel:?} with {flags:?}"
                );
            }
        }
    }
}

#[test]
fn symlinks_are_refused_at_every_component() {
    let t = tree();
    let dir = open(t.path());
    for (rel, at) in [
        ("top", "top"),
        ("top/b/c", "top"),
        ("a/link/c", "a/link"),
        ("a/b/link", "a/b/link"),
        ("a/b/link/file", "a/b/link"),
        ("a/b/c/link", "a/b/c/link"),
        ("abs/etc", "abs"),
        ("a/dangling", "a/dangling"),
    ] {
        for flags in [DIR, OFlags::RDONLY] {
            let err = open_beneath(dir.as_fd(), Path::new(rel), flags).expect_err(rel);
            assert_eq!(
                err,
                Error::Symlink {
                    path: PathBuf::from(at)
                },
                "{rel}"
            );
            assert_eq!(err.errno(), Errno::LOOP);
        }
    }
    // O_PATH on a final symlink opens the symlink itself, never its target.
    let fd = open_beneath(dir.as_fd(), Path::new("a/b/c/link"), PATH).expect("O_PATH symlink");
    assert!(stat_fd(fd.as_fd()).expect("stat").is_symlink());
}

#[test]
fn escapes_and_missing_paths() {
    let t = tree();
    let dir = open(t.path());
    for rel in ["..", "a/../a", "/etc", "a/b/../../.."] {
        assert_eq!(
            open_beneath(dir.as_fd(), Path::new(rel), DIR).expect_err(rel),
            Error::Escapes {
                path: PathBuf::from(rel)
            }
        );
    }
    let err = open_beneath(dir.as_fd(), Path::new("a/missing/deeper"), DIR).expect_err("missing");
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        err.path(),
        Path::new("a/missing"),
        "names the missing component"
    );
    assert!(
        open_beneath_optional(dir.as_fd(), Path::new("a/missing/deeper"), DIR)
            .expect("optional")
            .is_none()
    );
    let err = open_beneath(dir.as_fd(), Path::new("a/file/x"), DIR).expect_err("not a dir");
    assert_eq!(err.errno(), Errno::NOTDIR);
    assert_eq!(err.path(), Path::new("a/file"));
    assert!(err.to_string().contains("'a/file'"), "{err}");
}

#[test]
fn stat_has_the_mount_id_and_a_plain_directory_is_no_mount_point() {
    let t = tree();
    let dir = open(t.path());
    let top = stat_fd(dir.as_fd()).expect("stat");
    assert_ne!(top.mnt_id, 0, "statx gives a mount id");
    let a = stat_at(dir.as_fd(), "a").expect("stat a");
    assert!(a.is_dir());
    assert_eq!(a.mnt_id, top.mnt_id);
    assert_eq!(
        mount_id_from_fdinfo(dir.as_fd()).expect("fdinfo"),
        top.mnt_id,
        "the pre-5.8 fallback agrees"
    );
    let link = stat_at(dir.as_fd(), "a/b/c/link").expect("lstat");
    assert!(
        link.is_symlink(),
        "stat_at never follows the last component"
    );
    assert!(!is_mount_point_at(dir.as_fd(), "a").expect("a"));
    assert!(!is_mount_point_at(dir.as_fd(), "top").expect("a symlink is no mount point"));
    assert!(
        is_mount_point_at(dir.as_fd(), "a/b").is_err(),
        "one component only"
    );
    assert_eq!(
        stat_at(dir.as_fd(), "top/b").expect_err("through a symlink"),
        Error::Symlink {
            path: PathBuf::from("top")
        }
    );
    assert!(
        stat_at_optional(dir.as_fd(), "a/missing")
            .expect("optional")
            .is_none()
    );
}

#[test]
fn rename_never_replaces_and_exchange_swaps() {
    let t = tree();
    let dir = open(t.path());
    let a = open(&t.path().join("a"));
    let err = rename_noreplace_at(a.as_fd(), "file", dir.as_fd(), "top").expect_err("exists");
    assert!(err.is_exists(), "{err}");
    assert_eq!(std::fs::read(t.path().join("a/file")).expect("kept"), b"y");
    rename_noreplace_at(a.as_fd(), "file", dir.as_fd(), "moved").expect("rename");
    assert_eq!(std::fs::read(t.path().join("moved")).expect("moved"), b"y");
    exchange_at(dir.as_fd(), "moved", a.as_fd(), "b").expect("exchange");
    assert!(t.path().join("moved/c/file").exists());
    assert_eq!(std::fs::read(t.path().join("a/b")).expect("swapped"), b"y");
}

#[test]
fn remove_tree_never_follows_symlinks() {
    let t = tree();
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("precious"), "keep").expect("write");
    symlink(outside.path(), t.path().join("a/b/out")).expect("symlink");
    let dir = open(t.path());
    remove_tree_at(dir.as_fd(), "a").expect("removing a");
    assert!(!t.path().join("a").exists());
    assert!(outside.path().join("precious").exists(), "not followed");
    // A symlink itself is removed, not its target.
    remove_tree_at(dir.as_fd(), "top").expect("removing a symlink");
    assert!(std::fs::symlink_metadata(t.path().join("top")).is_err());
    assert!(
        remove_tree_at(dir.as_fd(), "nothing")
            .expect_err("missing")
            .is_not_found()
    );
}

#[test]
fn empty_dir_keeps_the_directory() {
    let t = tree();
    let a = open(&t.path().join("a"));
    empty_dir(a.as_fd()).expect("emptying");
    assert!(t.path().join("a").is_dir());
    assert_eq!(
        std::fs::read_dir(t.path().join("a")).expect("ls").count(),
        0
    );
    assert!(t.path().join("abs").exists(), "outside untouched");
}

/// 50,000 levels: far more than any recursion on a test thread's 2 MiB stack or the default 1024 fds
/// would survive.
#[test]
fn remove_tree_is_iterative() {
    const DEPTH: usize = 50_000;
    let t = tempfile::tempdir().expect("tempdir");
    let dir = open(t.path());
    rustix::fs::mkdirat(&dir, "deep", Mode::from_raw_mode(0o700)).expect("mkdir");
    let mut cur =
        rustix::fs::openat(&dir, "deep", DIR | OFlags::CLOEXEC, Mode::empty()).expect("open");
    for i in 0..DEPTH {
        rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o700)).expect("mkdir");
        if i % 1000 == 0 {
            std::fs::write(format!("/proc/self/fd/{}/f", cur.as_raw_fd()), "x").expect("file");
        }
        cur = rustix::fs::openat(&cur, "d", DIR | OFlags::CLOEXEC, Mode::empty()).expect("open");
    }
    drop(cur);
    remove_tree_at(dir.as_fd(), "deep").expect("removing 50,000 levels");
    assert!(!t.path().join("deep").exists());
}

#[test]
fn read_names_is_sorted_without_dots() {
    let t = tree();
    let dir = open(&t.path().join("a"));
    assert_eq!(
        read_names(dir.as_fd()).expect("ls"),
        ["b", "dangling", "file", "link"].map(OsString::from)
    );
}

// Listing, creating, and the access time.

#[test]
fn read_names_in_reads_the_fd_itself_sorted_without_dots() {
    let tmp = std::env::temp_dir().join(format!("fsx-dwalk-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("sub")).unwrap();
    for name in ["b", "a", "c"] {
        std::fs::write(tmp.join(name), b"").unwrap();
    }
    let fd = rustix::fs::open(&tmp, DIR | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let names = read_names_in(fd.as_fd());
    // An O_PATH fd has no directory stream: an error, never a silent empty listing.
    let path_fd = rustix::fs::open(&tmp, PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let from_path = read_names_in(path_fd.as_fd());
    std::fs::remove_dir_all(&tmp).unwrap();
    assert_eq!(names.unwrap(), ["a", "b", "c", "sub"]);
    assert_eq!(from_path.unwrap_err().errno(), Errno::BADF);
}

#[test]
fn count_names_counts_all_but_dot_entries() {
    let t = tempfile::tempdir().expect("tempdir");
    assert_eq!(count_names(open(t.path()).as_fd()), Ok(0));
    // More names than one 32 KiB getdents64 buffer holds.
    for i in 0..1500 {
        std::fs::write(t.path().join(format!("a-rather-long-file-name-{i:05}")), "")
            .expect("write");
    }
    std::os::unix::fs::symlink("nowhere", t.path().join("link")).expect("symlink");
    std::fs::create_dir(t.path().join("sub")).expect("mkdir");
    assert_eq!(count_names(open(t.path()).as_fd()), Ok(1502));
}

#[test]
fn stat_has_the_access_time() {
    let t = tempfile::tempdir().expect("tempdir");
    let f = t.path().join("f");
    std::fs::write(&f, "x").expect("write");
    let want = std::fs::symlink_metadata(&f).expect("stat");
    let st = stat_at(open(t.path()).as_fd(), "f").expect("stat_at");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        st.atime,
        (
            want.atime(),
            u32::try_from(want.atime_nsec()).expect("nsec")
        )
    );
}

#[test]
fn create_excl_at_never_replaces_nor_follows() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = open(t.path());
    let fd = create_excl_at(dir.as_fd(), "new", 0o640).expect("create");
    rustix::io::write(&fd, b"hi").expect("write");
    let meta = std::fs::symlink_metadata(t.path().join("new")).expect("stat");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777 & !0o640, 0);
    assert!(
        create_excl_at(dir.as_fd(), "new", 0o600)
            .expect_err("exists")
            .is_exists()
    );
    std::os::unix::fs::symlink("target", t.path().join("link")).expect("symlink");
    assert!(
        create_excl_at(dir.as_fd(), "link", 0o600)
            .expect_err("symlink")
            .is_exists()
    );
    assert!(!t.path().join("target").exists());
    assert_eq!(std::fs::read(t.path().join("new")).expect("read"), b"hi");
}

#[test]
fn temp_dirs_are_new_private_and_distinct() {
    let t = tempfile::tempdir().expect("tempdir");
    let prefix = t.path().join("tabula-x.");
    let a = make_temp_dir(&prefix).expect("first");
    let b = make_temp_dir(&prefix).expect("second");
    assert_ne!(a, b);
    for d in [&a, &b] {
        let name = d.file_name().unwrap().to_str().unwrap();
        let rest = name.strip_prefix("tabula-x.").expect("prefix kept");
        assert_eq!(rest.len(), 6, "{name}");
        assert!(rest.bytes().all(|c| c.is_ascii_alphanumeric()), "{name}");
        let md = std::fs::symlink_metadata(d).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o777, 0o700);
    }
    let missing = t.path().join("no/such/dir.");
    assert!(make_temp_dir(&missing).unwrap_err().is_not_found());
}

#[test]
fn same_content_compares_every_block_and_the_length() {
    let block = 128 << 10;
    let base: Vec<u8> = (0..block * 2 + 7).map(|i| (i % 251) as u8).collect();
    let mut late = base.clone();
    *late.last_mut().expect("non-empty") ^= 1;
    let mut second_block = base.clone();
    second_block[block + 3] ^= 1;
    let same = |a: &[u8], b: &[u8]| same_content(&mut &a[..], &mut &b[..]).expect("in memory");
    assert!(same(&base, &base));
    assert!(same(b"", b""));
    assert!(!same(&base, &late));
    assert!(!same(&base, &second_block));
    assert!(!same(&base, &base[..base.len() - 1]));
    assert!(!same(&base[..block], &base));
}
