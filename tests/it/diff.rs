//! The diff engine on real directory trees. Every fixture is diffed both ways: B→A must be the mirror
//! image of A→B (added ↔ deleted, old ↔ new).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::mount::{MsFlags, mount};
use proptest::prelude::*;
use tabula::diff::{
    Change, ChangeKind, ChangedPath, Diff, DiffOptions, FileType, diff_paths, render_human,
    render_tsv,
};

struct Fixture {
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("tabula-diff-")
        .tempdir()
        .unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    Fixture { _dir: dir, a, b }
}

/// Write `rel` under `root`, creating parents.
fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
}

/// The same file in both trees with the same mtime (as a snapshot would have it).
fn put_both(f: &Fixture, rel: &str, content: &str) {
    put(&f.a, rel, content);
    put(&f.b, rel, content);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for root in [&f.a, &f.b] {
        fs::File::options()
            .write(true)
            .open(root.join(rel))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

fn mirror(d: &Diff) -> Diff {
    let mut m = d.clone();
    for e in &mut m.entries {
        e.kind = match e.kind {
            ChangeKind::Added => ChangeKind::Deleted,
            ChangeKind::Deleted => ChangeKind::Added,
            k => k,
        };
        std::mem::swap(&mut e.old, &mut e.new);
        if let Some(x) = &mut e.xattrs {
            std::mem::swap(&mut x.added, &mut x.removed);
        }
    }
    let s = &mut m.summary;
    std::mem::swap(&mut s.added, &mut s.deleted);
    std::mem::swap(&mut s.objects_added, &mut s.objects_deleted);
    std::mem::swap(&mut s.bytes_added, &mut s.bytes_deleted);
    m
}

/// A→B, checked against the mirror of B→A.
fn both_ways(f: &Fixture, opts: &DiffOptions) -> Diff {
    let ab = diff_paths(&f.a, &f.b, opts).unwrap();
    let ba = diff_paths(&f.b, &f.a, opts).unwrap();
    assert_eq!(
        mirror(&ba),
        ab,
        "B→A is not the mirror image of A→B:\nA→B:\n{}\nB→A:\n{}",
        render_tsv(&ab),
        render_tsv(&ba)
    );
    ab
}

fn entry<'a>(d: &'a Diff, path: &str) -> &'a ChangedPath {
    d.entries
        .iter()
        .find(|e| e.path == Path::new(path))
        .unwrap_or_else(|| panic!("no entry for {path} in\n{}", render_tsv(d)))
}

fn listed(d: &Diff) -> Vec<(String, ChangeKind)> {
    d.entries
        .iter()
        .map(|e| (e.path.display().to_string(), e.kind))
        .collect()
}

#[test]
fn identical_trees_have_no_entries() {
    let f = fixture();
    put_both(&f, "etc/hostname", "box\n");
    put_both(&f, "usr/bin/tool", "#!/bin/sh\n");
    let d = both_ways(&f, &DiffOptions::default());
    assert!(d.is_empty(), "{}", render_tsv(&d));
    assert_eq!(render_human(&d), "no changes\n");
}

#[test]
fn added_directory_is_one_entry_with_size_and_count() {
    let f = fixture();
    put_both(&f, "etc/hostname", "box\n");
    put(&f.b, "srv/data/a", "abc");
    put(&f.b, "srv/data/sub/c", "hello");
    fs::create_dir(f.b.join("srv/data/empty")).unwrap();

    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(listed(&d), [("/srv".to_string(), ChangeKind::Added)]);
    let n = d.entries[0].new.as_ref().unwrap();
    assert_eq!(n.file_type, FileType::Dir);
    assert_eq!(n.entries, Some(5), "data, a, sub, sub/c, empty");
    assert_eq!(n.size, 8);
    assert_eq!(d.summary.added, 1);
    assert_eq!(d.summary.objects_added, 6);
    assert_eq!(d.summary.bytes_added, 8);

    // With children: the directory first, then everything beneath it, flagged.
    let d = both_ways(
        &f,
        &DiffOptions {
            list_children: true,
            ..Default::default()
        },
    );
    let paths: Vec<_> = d
        .entries
        .iter()
        .map(|e| (e.path.display().to_string(), e.implied))
        .collect();
    assert_eq!(
        paths,
        [
            ("/srv".to_string(), false),
            ("/srv/data".to_string(), true),
            ("/srv/data/a".to_string(), true),
            ("/srv/data/empty".to_string(), true),
            ("/srv/data/sub".to_string(), true),
            ("/srv/data/sub/c".to_string(), true),
        ]
    );
    assert_eq!(
        entry(&d, "/srv/data/sub").new.as_ref().unwrap().entries,
        Some(1)
    );
    assert_eq!(d.summary.added, 1, "implied entries are not counted again");
}

#[test]
fn renamed_directory_is_a_deletion_and_an_addition() {
    let f = fixture();
    put(&f.a, "opt/old/f", "same");
    put(&f.b, "opt/new/f", "same");
    fs::create_dir_all(f.a.join("opt")).unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(
        listed(&d),
        [
            ("/opt/new".to_string(), ChangeKind::Added),
            ("/opt/old".to_string(), ChangeKind::Deleted)
        ]
    );
    assert_eq!(entry(&d, "/opt/old").old.as_ref().unwrap().entries, Some(1));
}

#[test]
fn type_changes() {
    let f = fixture();
    put(&f.a, "file-to-dir", "x");
    put(&f.b, "file-to-dir/child", "yy");
    put(&f.a, "dir-to-file/child", "zzz");
    put(&f.b, "dir-to-file", "x");
    put(&f.a, "file-to-link", "x");
    symlink("target", f.b.join("file-to-link")).unwrap();
    symlink("target", f.a.join("link-to-file")).unwrap();
    put(&f.b, "link-to-file", "x");

    let d = both_ways(&f, &DiffOptions::default());
    for p in [
        "/dir-to-file",
        "/file-to-dir",
        "/file-to-link",
        "/link-to-file",
    ] {
        assert_eq!(entry(&d, p).kind, ChangeKind::TypeChanged, "{p}");
    }
    assert_eq!(d.entries.len(), 4, "{}", render_tsv(&d));
    let e = entry(&d, "/file-to-dir");
    assert_eq!(e.old.as_ref().unwrap().file_type, FileType::File);
    let n = e.new.as_ref().unwrap();
    assert_eq!(
        (n.file_type, n.entries, n.size),
        (FileType::Dir, Some(1), 2)
    );
    let e = entry(&d, "/file-to-link");
    assert_eq!(
        e.new.as_ref().unwrap().target.as_deref(),
        Some(Path::new("target"))
    );
    assert_eq!(e.symbols(), "t....");
}

#[test]
fn symlink_target_change() {
    let f = fixture();
    symlink("/etc/one", f.a.join("l")).unwrap();
    symlink("/etc/two", f.b.join("l")).unwrap();
    symlink("same", f.a.join("same")).unwrap();
    symlink("same", f.b.join("same")).unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(listed(&d), [("/l".to_string(), ChangeKind::Modified)]);
    let e = &d.entries[0];
    assert_eq!(e.what, [Change::Target]);
    assert_eq!(
        e.old.as_ref().unwrap().target.as_deref(),
        Some(Path::new("/etc/one"))
    );
    assert_eq!(
        e.new.as_ref().unwrap().target.as_deref(),
        Some(Path::new("/etc/two"))
    );
}

#[test]
fn hardlink_added_is_not_new_content() {
    let f = fixture();
    put_both(&f, "m/file", "0123456789");
    fs::hard_link(f.b.join("m/file"), f.b.join("m/link")).unwrap();
    // A new link whose name sorts before the old name: still the old name carries the bytes.
    put_both(&f, "z/old", "abcdef");
    fs::hard_link(f.b.join("z/old"), f.b.join("z/a-new")).unwrap();

    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(
        listed(&d),
        [
            ("/m/link".to_string(), ChangeKind::Added),
            ("/z/a-new".to_string(), ChangeKind::Added)
        ],
        "the old names are not changed"
    );
    let link = entry(&d, "/m/link").new.as_ref().unwrap();
    assert_eq!(link.link_to.as_deref(), Some(Path::new("/m/file")));
    let link = entry(&d, "/z/a-new").new.as_ref().unwrap();
    assert_eq!(link.link_to.as_deref(), Some(Path::new("/z/old")));
    assert_eq!(d.summary.bytes_added, 0);

    // Two new names of one new file: its bytes count once.
    let f = fixture();
    put(&f.b, "n1", "12345");
    fs::hard_link(f.b.join("n1"), f.b.join("n2")).unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(entry(&d, "/n1").new.as_ref().unwrap().link_to, None);
    assert_eq!(
        entry(&d, "/n2").new.as_ref().unwrap().link_to.as_deref(),
        Some(Path::new("/n1"))
    );
    assert_eq!(d.summary.bytes_added, 5);
}

#[test]
fn chmod_only() {
    let f = fixture();
    put_both(&f, "etc/secret", "s");
    fs::set_permissions(f.a.join("etc/secret"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(f.b.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(
        listed(&d),
        [("/etc/secret".to_string(), ChangeKind::Metadata)]
    );
    let e = &d.entries[0];
    assert_eq!(e.what, [Change::Mode]);
    assert_eq!(e.symbols(), ".p...");
    assert_eq!(
        (e.old.as_ref().unwrap().mode, e.new.as_ref().unwrap().mode),
        (0o644, 0o600)
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["entries"][0]["new"]["mode"], "0600");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn chown_only() {
    if !common::require_root("chown_only") {
        return;
    }
    let f = fixture();
    put_both(&f, "home/u/file", "x");
    put_both(&f, "home/u/grp", "x");
    std::os::unix::fs::chown(f.b.join("home/u/file"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(f.b.join("home/u/grp"), None, Some(5678)).unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(
        listed(&d),
        [
            ("/home/u/file".to_string(), ChangeKind::Metadata),
            ("/home/u/grp".to_string(), ChangeKind::Metadata)
        ]
    );
    assert_eq!(
        entry(&d, "/home/u/file").what,
        [Change::Owner, Change::Group]
    );
    assert_eq!(entry(&d, "/home/u/file").symbols(), "..ug.");
    assert_eq!(entry(&d, "/home/u/grp").what, [Change::Group]);
    assert_eq!(entry(&d, "/home/u/file").new.as_ref().unwrap().uid, 1234);
}

/// user.* xattrs on a tmpfs mounted in this test's private mount namespace.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn xattr_only() {
    if !common::require_root("xattr_only") {
        return;
    }
    common::private_mount_namespace();
    let dir = tempfile::Builder::new()
        .prefix("tabula-diff-")
        .tempdir()
        .unwrap();
    mount(
        Some("tmpfs"),
        dir.path(),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=16m"),
    )
    .unwrap();
    let _guard = common::MountGuard {
        target: dir.path().to_path_buf(),
    };
    let f = Fixture {
        a: dir.path().join("a"),
        b: dir.path().join("b"),
        _dir: tempfile::tempdir().unwrap(),
    };
    fs::create_dir(&f.a).unwrap();
    fs::create_dir(&f.b).unwrap();
    put_both(&f, "f", "content");
    fs::create_dir(f.a.join("d")).unwrap();
    fs::create_dir(f.b.join("d")).unwrap();
    let set = |p: &Path, k: &str, v: &str| {
        rustix::fs::setxattr(p, k, v.as_bytes(), rustix::fs::XattrFlags::empty()).unwrap()
    };
    set(&f.a.join("f"), "user.changed", "1");
    set(&f.b.join("f"), "user.changed", "2");
    set(&f.a.join("f"), "user.removed", "x");
    set(&f.b.join("f"), "user.added", "y");
    set(&f.a.join("f"), "user.same", "s");
    set(&f.b.join("f"), "user.same", "s");
    set(&f.b.join("d"), "user.on-dir", "1");

    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(
        listed(&d),
        [
            ("/d".to_string(), ChangeKind::Metadata),
            ("/f".to_string(), ChangeKind::Metadata)
        ]
    );
    let e = entry(&d, "/f");
    assert_eq!(e.what, [Change::Xattr]);
    assert_eq!(e.symbols(), "....x");
    let v = serde_json::to_value(e).unwrap();
    assert_eq!(v["xattrs"]["added"], serde_json::json!(["user.added"]));
    assert_eq!(v["xattrs"]["removed"], serde_json::json!(["user.removed"]));
    assert_eq!(v["xattrs"]["changed"], serde_json::json!(["user.changed"]));
    assert_eq!(entry(&d, "/d").what, [Change::Xattr]);
}

#[test]
fn empty_file_and_empty_directory_count() {
    let f = fixture();
    fs::write(f.b.join("empty-file"), "").unwrap();
    fs::create_dir(f.b.join("empty-dir")).unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(
        listed(&d),
        [
            ("/empty-dir".to_string(), ChangeKind::Added),
            ("/empty-file".to_string(), ChangeKind::Added)
        ]
    );
    let dir = entry(&d, "/empty-dir").new.as_ref().unwrap();
    assert_eq!((dir.entries, dir.size), (Some(0), 0));
    assert_eq!(entry(&d, "/empty-file").new.as_ref().unwrap().size, 0);
}

#[test]
fn persisted_mount_points_are_not_changes() {
    let f = fixture();
    put_both(&f, "etc/machine-id", "aaaa\n");
    fs::create_dir_all(f.a.join("var/log")).unwrap();
    // What persistence leaves in the new root: bind-mount targets and the parents made for them.
    fs::write(f.b.join("etc/machine-id"), "bbbb\n").unwrap();
    put(&f.b, "var/log/journal/x", "log");
    put(&f.b, "var/lib/foo/data", "db");
    fs::create_dir_all(f.b.join("var/cache/pkg")).unwrap();
    let ignore: Vec<PathBuf> = [
        "/etc/machine-id",
        "/var/log",
        "/var/lib/foo",
        "/var/cache/pkg/",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let opts = DiffOptions {
        ignore,
        list_children: true,
        ..Default::default()
    };
    let d = both_ways(&f, &opts);
    assert!(d.is_empty(), "{}", render_tsv(&d));

    // Something real next to a mount point is reported; the mount point is not counted in it.
    put(&f.b, "var/lib/real", "1234");
    let d = both_ways(&f, &opts);
    assert_eq!(listed(&d)[0], ("/var/lib".to_string(), ChangeKind::Added));
    assert_eq!(
        d.entries.iter().filter(|e| !e.implied).count(),
        1,
        "{}",
        render_tsv(&d)
    );
    let n = d.entries[0].new.as_ref().unwrap();
    assert_eq!((n.entries, n.size), (Some(1), 4));
    assert!(
        d.entries
            .iter()
            .all(|e| !e.path.starts_with("/var/lib/foo"))
    );
}

#[test]
fn content_rules() {
    let f = fixture();
    // Same size, different mtime: the bytes decide.
    put(&f.a, "differs", "aaaa");
    put(&f.b, "differs", "bbbb");
    put(&f.a, "rewritten", "same");
    put(&f.b, "rewritten", "same");
    put(&f.a, "grew", "a");
    put(&f.b, "grew", "aa");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for p in ["differs", "rewritten", "grew"] {
        fs::File::options()
            .write(true)
            .open(f.a.join(p))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let d = both_ways(&f, &DiffOptions::default());
    assert_eq!(
        listed(&d),
        [
            ("/differs".to_string(), ChangeKind::Modified),
            ("/grew".to_string(), ChangeKind::Modified)
        ],
        "an mtime-only change is not reported"
    );
    assert_eq!(entry(&d, "/differs").what, [Change::Content]);
    assert_eq!(entry(&d, "/differs").symbols(), "c....");

    let d = both_ways(
        &f,
        &DiffOptions {
            report_mtime: true,
            ..Default::default()
        },
    );
    assert_eq!(entry(&d, "/rewritten").kind, ChangeKind::Metadata);
    assert_eq!(entry(&d, "/rewritten").what, [Change::Mtime]);
    assert_eq!(entry(&d, "/differs").what, [Change::Content, Change::Mtime]);
    assert!(d.mtime_reported);
}

/// snapper's rule, documented: equal size and equal mtime are taken as equal content.
#[test]
fn equal_size_and_mtime_are_assumed_equal() {
    let f = fixture();
    put_both(&f, "f", "aaaa");
    fs::write(f.b.join("f"), "bbbb").unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    fs::File::options()
        .write(true)
        .open(f.b.join("f"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    assert!(d.is_empty(), "{}", render_tsv(&d));
}

/// A mount point (like a nested subvolume: another st_dev) is one entry and never descended.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn other_filesystems_are_not_descended() {
    if !common::require_root("other_filesystems_are_not_descended") {
        return;
    }
    common::private_mount_namespace();
    let f = fixture();
    fs::create_dir(f.b.join("mnt")).unwrap();
    fs::create_dir(f.a.join("was-dir")).unwrap();
    fs::create_dir(f.b.join("was-dir")).unwrap();
    fs::create_dir(f.a.join("both")).unwrap();
    fs::create_dir(f.b.join("both")).unwrap();
    let mut guards = Vec::new();
    for p in [
        f.b.join("mnt"),
        f.b.join("was-dir"),
        f.a.join("both"),
        f.b.join("both"),
    ] {
        mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        guards.push(common::MountGuard { target: p.clone() });
        put(&p, "inside/file", "hidden");
    }
    let d = both_ways(
        &f,
        &DiffOptions {
            list_children: true,
            ..Default::default()
        },
    );
    assert_eq!(
        listed(&d),
        [
            ("/mnt".to_string(), ChangeKind::Added),
            ("/was-dir".to_string(), ChangeKind::TypeChanged)
        ],
        "{}",
        render_tsv(&d)
    );
    let n = entry(&d, "/mnt").new.as_ref().unwrap();
    assert!(n.other_fs);
    assert_eq!(n.mtime, 0, "an other filesystem's time is not reported");
    assert_eq!(n.entries, None);
    let e = entry(&d, "/was-dir");
    assert!(!e.old.as_ref().unwrap().other_fs && e.new.as_ref().unwrap().other_fs);
    drop(guards);
}

#[test]
fn non_utf8_paths_are_kept_exactly() {
    let f = fixture();
    let name = OsStr::from_bytes(b"caf\xe9\tx");
    fs::write(f.b.join(name), "x").unwrap();
    let d = both_ways(&f, &DiffOptions::default());
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v["entries"][0]["path"],
        serde_json::json!({ "bytes_base64": "L2NhZukJeA==" })
    );
    assert_eq!(d.entries[0].path.as_os_str().as_bytes(), b"/caf\xe9\tx");
    assert_eq!(
        render_tsv(&d),
        "+....\tadded\t-\tfile\t-\t1\t/caf\\xe9\\x09x\n"
    );
}

#[test]
fn renderings() {
    let f = fixture();
    put_both(&f, "var/log/keep", "k");
    put(&f.b, "var/log/journal/a", &"x".repeat(2048));
    put(&f.b, "var/log/new.log", "12");
    put_both(&f, "etc/conf", "c");
    fs::set_permissions(f.b.join("etc/conf"), fs::Permissions::from_mode(0o600)).unwrap();
    put(&f.a, "gone", "bye");
    let d = both_ways(&f, &DiffOptions::default());
    let human = render_human(&d);
    assert!(human.contains("/var/log  +3 (2.0 KiB)\n"), "{human}");
    assert!(
        human.contains("  +....  /var/log/journal  dir, 1 entries, 2.0 KiB\n"),
        "{human}"
    );
    assert!(
        human.contains("/etc  1 metadata\n  .p...  /etc/conf  mode "),
        "{human}"
    );
    assert!(
        human.contains("/  -1 (3 B)\n  -....  /gone  file, 3 B\n"),
        "{human}"
    );
    assert!(human.ends_with(
        "total: 2 added (2.0 KiB), 1 deleted (3 B), 0 modified, 0 type changed, 1 metadata only\n"
    ));
    let tsv = render_tsv(&d);
    assert_eq!(tsv.lines().count(), 4);
    assert!(
        tsv.contains("-....\tdeleted\tfile\t-\t3\t-\t/gone\n"),
        "{tsv}"
    );

    let v = tabula::json::Document::new("diff", &d).to_value().unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["kind"], "diff");
    assert_eq!(v["mtime_reported"], false);
    assert_eq!(v["summary"]["added"], 2);
    let first = &v["entries"][0];
    assert_eq!(first["path"], "/etc/conf");
    assert_eq!(first["kind"], "metadata");
    assert_eq!(first["what"], serde_json::json!(["mode"]));
    assert_eq!(first["old"]["type"], "file");
    assert!(first.get("implied").is_none() && first.get("error").is_none());
}

// A small random tree: name → file(content, mode) | dir | symlink(target).
#[derive(Debug, Clone)]
enum Spec {
    File(Vec<u8>, u32),
    Dir(Vec<(String, Spec)>),
    Link(String),
}

fn spec() -> impl Strategy<Value = Spec> {
    let leaf = prop_oneof![
        (
            prop::collection::vec(0u8..3, 0..4),
            prop::sample::select(vec![0o644u32, 0o600, 0o755])
        )
            .prop_map(|(c, m)| Spec::File(c, m)),
        prop::sample::select(vec!["a", "b", "/etc"]).prop_map(|t| Spec::Link(t.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c", "d"]), inner, 0..4)
            .prop_map(|m| Spec::Dir(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    })
}

fn build(root: &Path, children: &[(String, Spec)]) {
    for (name, s) in children {
        let p = root.join(name);
        match s {
            Spec::File(c, m) => {
                fs::write(&p, c).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(*m)).unwrap();
            }
            Spec::Dir(kids) => {
                fs::create_dir(&p).unwrap();
                build(&p, kids);
            }
            Spec::Link(t) => symlink(t, &p).unwrap(),
        }
    }
}

/// Whether `rel` exists under `root` as the diff sees it: no symlink followed on the way (a symlink to a
/// directory is a symlink, not a way into that directory).
fn exists_beneath(root: &Path, rel: &Path) -> bool {
    let mut at = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.next() {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if parts.peek().is_none() || m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn top(s: Spec) -> Vec<(String, Spec)> {
    match s {
        Spec::Dir(kids) => kids,
        other => vec![("x".to_string(), other)],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any two trees: B→A mirrors A→B; a tree built twice from one spec (other mtimes, same
    /// content) has no differences; and every reported path exists on the side(s) it claims.
    #[test]
    fn random_trees_mirror(a in spec(), b in spec()) {
        check_mirror(top(a), top(b))?;
    }
}

/// The property of `random_trees_mirror` for two given trees.
fn check_mirror(
    a: Vec<(String, Spec)>,
    b: Vec<(String, Spec)>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let f = fixture();
    build(&f.a, &a);
    build(&f.b, &b);
    let d = both_ways(
        &f,
        &DiffOptions {
            list_children: true,
            ..Default::default()
        },
    );
    for e in &d.entries {
        let rel = e.path.strip_prefix("/").unwrap();
        prop_assert_eq!(e.old.is_some(), exists_beneath(&f.a, rel), "{:?}", e.path);
        prop_assert_eq!(e.new.is_some(), exists_beneath(&f.b, rel), "{:?}", e.path);
    }
    let g = fixture();
    build(&g.a, &a);
    build(&g.b, &a);
    let same = both_ways(&g, &DiffOptions::default());
    prop_assert!(same.is_empty(), "{}", render_tsv(&same));
    Ok(())
}

/// Found by the property test: `c -> b` beside a directory `b` holding `x`. The diff does not go through
/// the symlink (`/c/x` is not on that side); the check must not either.
#[test]
fn a_symlink_to_a_directory_is_no_way_in() {
    let a = vec![
        (
            "b".to_string(),
            Spec::Dir(vec![("x".to_string(), Spec::File(vec![1], 0o644))]),
        ),
        ("c".to_string(), Spec::Link("b".to_string())),
    ];
    let b = vec![(
        "c".to_string(),
        Spec::Dir(vec![("x".to_string(), Spec::File(vec![2], 0o644))]),
    )];
    check_mirror(a.clone(), b.clone()).unwrap();
    check_mirror(b, a).unwrap();
}

/// The real setting: a root snapshotted from a read-only blank, then written to, with a nested
/// subvolume created in it. Untouched files share inode numbers and ctimes with the blank.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn snapshot_against_its_blank_on_btrfs() {
    let Some(s) = common::Scratch::new("snapshot_against_its_blank_on_btrfs", 256) else {
        return;
    };
    let (blank, root) = (s.top.join("root-blank"), s.top.join("root"));
    common::run(
        std::process::Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&blank),
    );
    put(&blank, "etc/hostname", "blank\n");
    put(&blank, "etc/keep", "unchanged\n");
    put(&blank, "usr/lib/os-release", "ID=test\n");
    rustix::fs::setxattr(
        blank.join("etc/keep"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::create_dir_all(blank.join("var/log")).unwrap();
    common::run(
        std::process::Command::new("btrfs")
            .args(["-q", "subvolume", "snapshot", "-r"])
            .arg(&blank)
            .arg(s.top.join("blank-ro")),
    );
    let blank = s.top.join("blank-ro");
    common::run(
        std::process::Command::new("btrfs")
            .args(["-q", "subvolume", "snapshot"])
            .arg(&blank)
            .arg(&root),
    );
    // What a boot writes.
    fs::write(root.join("etc/hostname"), "booted\n").unwrap();
    rustix::fs::setxattr(
        root.join("usr/lib/os-release"),
        "user.x",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    put(&root, "var/log/journal/j", "journal");
    put(&root, "root/.bash_history", "ls\n");
    common::run(
        std::process::Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(root.join("var/lib-machines")),
    );
    put(&root, "var/lib-machines/inside", "not descended");

    let opts = DiffOptions {
        ignore: vec![PathBuf::from("/var/log")],
        ..Default::default()
    };
    let d = diff_paths(&blank, &root, &opts).unwrap();
    assert_eq!(
        listed(&d),
        [
            ("/etc/hostname".to_string(), ChangeKind::Modified),
            ("/root".to_string(), ChangeKind::Added),
            ("/usr/lib/os-release".to_string(), ChangeKind::Metadata),
            ("/var/lib-machines".to_string(), ChangeKind::Added),
        ],
        "{}",
        render_tsv(&d)
    );
    assert!(
        entry(&d, "/var/lib-machines")
            .new
            .as_ref()
            .unwrap()
            .other_fs
    );
    assert_eq!(entry(&d, "/usr/lib/os-release").what, [Change::Xattr]);
    let back = diff_paths(&root, &blank, &opts).unwrap();
    assert_eq!(mirror(&back), d);
}

/// `depth` nested directories named `d` under `top` (fd by fd: beyond PATH_MAX); `leaf` at the bottom.
fn chain(top: &Path, depth: usize, leaf: Option<&str>) {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, mkdirat};
    use std::os::fd::AsFd;
    let mut dir = common::open_dir(top);
    for _ in 0..depth {
        mkdirat(dir.as_fd(), "d", Mode::from_bits_truncate(0o755)).unwrap();
        dir = openat(
            dir.as_fd(),
            "d",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .unwrap();
    }
    if let Some(name) = leaf {
        drop(
            openat(
                dir.as_fd(),
                name,
                OFlag::O_WRONLY | OFlag::O_CREAT,
                Mode::from_bits_truncate(0o644),
            )
            .unwrap(),
        );
    }
}

/// A chain deeper than any real tree, on both sides and on one side (run on a 2 MiB test thread):
/// one error entry where the walk stopped, everything above it compared, no stack overflow.
#[test]
fn deep_chains_stop_with_an_error_entry() {
    // Two fds per level on each side: raise the soft limit to the hard one, as `main` does (an
    // ordinary user's soft limit is often 1024).
    tabula::limits::raise_fd_limit();
    let f = fixture();
    let deep = tabula::limits::MAX_DEPTH + 50;
    chain(&f.a, deep, None);
    chain(&f.b, deep, Some("bottom"));
    fs::create_dir(f.b.join("added")).unwrap();
    chain(&f.b.join("added"), deep, None);
    put_both(&f, "z/same", "x");
    put(&f.b, "z/new", "y");
    let d = both_ways(&f, &DiffOptions::default());
    let errors: Vec<&ChangedPath> = d
        .entries
        .iter()
        .filter(|e| e.kind == ChangeKind::Error)
        .collect();
    assert_eq!(errors.len(), 2, "{}", render_tsv(&d));
    for e in &errors {
        let msg = e.error.as_deref().unwrap();
        assert!(msg.contains("2048 directories deep"), "{msg}");
        assert_eq!(
            e.path.components().count() - 1,
            tabula::limits::MAX_DEPTH,
            "the error is at the bound"
        );
    }
    assert_eq!(entry(&d, "/added").kind, ChangeKind::Added);
    assert_eq!(entry(&d, "/z/new").kind, ChangeKind::Added);
    assert_eq!(d.summary.errors, 2);
}
