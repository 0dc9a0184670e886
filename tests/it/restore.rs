//! Restore on real trees: an "old root" and a "live root" as directories (or btrfs subvolumes for the
//! reflink test). The copy is checked with the diff engine itself, mtimes included.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MsFlags, mount};
use tabula::diff::{DiffOptions, diff_paths, render_tsv};
use tabula::error::Refusal;
use tabula::restore::{
    PlanListing, RestoreOp, RestorePlan, RestoreReport, apply_restore, list_plan,
};

struct Trees {
    dir: tempfile::TempDir,
    old: PathBuf,
    live: PathBuf,
}

impl Trees {
    fn new() -> Trees {
        let dir = tempfile::Builder::new()
            .prefix("tabula-restore-")
            .tempdir()
            .unwrap();
        let (old, live) = (dir.path().join("old"), dir.path().join("live"));
        fs::create_dir(&old).unwrap();
        fs::create_dir(&live).unwrap();
        Trees { dir, old, live }
    }

    fn fds(&self) -> (OwnedFd, OwnedFd) {
        (common::open_dir(&self.old), common::open_dir(&self.live))
    }

    fn plan(&self, source: &str, dest: &str, force: bool) -> anyhow::Result<PlanListing> {
        let (o, l) = self.fds();
        list_plan(
            o.as_fd(),
            Path::new(source),
            l.as_fd(),
            Path::new(dest),
            force,
        )
    }

    fn apply(&self, plan: &RestorePlan) -> anyhow::Result<RestoreReport> {
        let (o, l) = self.fds();
        apply_restore(plan, o.as_fd(), l.as_fd())
    }

    fn restore(&self, source: &str, dest: &str, force: bool) -> anyhow::Result<RestoreReport> {
        let plan = self.plan(source, dest, force)?;
        self.apply(&plan)
    }
}

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
}

/// Fixed atime and mtime (nanoseconds included), without opening anything (fifos would block).
fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 123_456_789);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn refusal(err: &anyhow::Error) -> &'static str {
    err.chain()
        .find_map(|c| c.downcast_ref::<Refusal>())
        .unwrap_or_else(|| panic!("not a refusal: {err:#}"))
        .rule
}

/// No `.tabula-restore-*` leftovers in `dir`.
fn no_leftovers(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name();
        assert!(
            !name.to_string_lossy().starts_with(".tabula-restore-"),
            "leftover {name:?} in {}",
            dir.display()
        );
    }
}

/// An application's config directory: files with modes, an xattr, a symlink, a hard link, an empty
/// directory, a fifo, fixed mtimes (on directories too, set last).
fn app_tree(t: &Trees) {
    let d = t.old.join("etc/app");
    put(&t.old, "etc/app/app.conf", "key = value\n");
    put(&t.old, "etc/app/conf.d/10-local.conf", "local = 1\n");
    fs::set_permissions(d.join("app.conf"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(d.join("conf.d"), fs::Permissions::from_mode(0o750)).unwrap();
    rustix::fs::setxattr(
        d.join("app.conf"),
        "user.origin",
        b"package",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    symlink("app.conf", d.join("current")).unwrap();
    fs::hard_link(d.join("app.conf"), d.join("app.conf.hardlink")).unwrap();
    fs::create_dir(d.join("empty")).unwrap();
    nix::unistd::mkfifo(
        &d.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(d.join("conf.d/10-local.conf"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(d.join("current"), Some(1234), Some(5678)).unwrap();
    }
    for (i, p) in [
        "app.conf",
        "conf.d/10-local.conf",
        "conf.d",
        "empty",
        "fifo",
        "",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&d.join(p), 1_600_000_000 + i as i64);
    }
    fs::create_dir_all(t.live.join("etc")).unwrap();
}

/// The copy equals the source in everything the diff engine compares, mtimes included.
fn assert_same_tree(a: &Path, b: &Path) {
    let d = diff_paths(
        a,
        b,
        &DiffOptions {
            report_mtime: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(d.is_empty(), "the copy differs:\n{}", render_tsv(&d));
}

#[test]
fn restores_a_file_with_its_metadata() {
    let t = Trees::new();
    app_tree(&t);
    let report = t
        .restore("/etc/app/app.conf", "/etc/app.conf", false)
        .unwrap();
    let (src, dst) = (t.old.join("etc/app/app.conf"), t.live.join("etc/app.conf"));
    // Stat before reading: reading would move the atime (relatime, the 2020 atime is old).
    let (s, d) = (fs::metadata(&src).unwrap(), fs::metadata(&dst).unwrap());
    assert_eq!(d.mode() & 0o7777, 0o640);
    assert_eq!((d.mtime(), d.mtime_nsec()), (s.mtime(), s.mtime_nsec()));
    assert_eq!((d.atime(), d.atime_nsec()), (s.atime(), s.atime_nsec()));
    assert_eq!(fs::read_to_string(&dst).unwrap(), "key = value\n");
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(&dst, "user.origin", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"package");
    // /tmp is not btrfs here: a plain copy, and the report says so.
    assert_eq!((report.reflinked_files, report.copied_files), (0, 1));
    assert!(!report.reflink_used && !report.replaced);
    assert_eq!(report.totals.files, 1);
    no_leftovers(&t.live.join("etc"));
}

#[test]
fn restores_a_directory_tree() {
    let t = Trees::new();
    app_tree(&t);
    let plan = t.plan("/etc/app", "/etc/app", false).unwrap();
    let ops: Vec<_> = plan
        .items
        .iter()
        .map(|i| (i.path.display().to_string(), i.op))
        .collect();
    assert_eq!(
        ops,
        [
            ("/etc/app".to_string(), RestoreOp::Dir),
            ("/etc/app/app.conf".to_string(), RestoreOp::File),
            (
                "/etc/app/app.conf.hardlink".to_string(),
                RestoreOp::Hardlink
            ),
            ("/etc/app/conf.d".to_string(), RestoreOp::Dir),
            ("/etc/app/conf.d/10-local.conf".to_string(), RestoreOp::File),
            ("/etc/app/current".to_string(), RestoreOp::Symlink),
            ("/etc/app/empty".to_string(), RestoreOp::Dir),
            ("/etc/app/fifo".to_string(), RestoreOp::Fifo),
        ]
    );
    assert_eq!(plan.totals.bytes, 12 + 10);
    assert!(!t.live.join("etc/app").exists(), "planning writes nothing");

    let report = t.apply(&plan).unwrap();
    assert_eq!(report.totals, plan.totals);
    assert_same_tree(&t.old.join("etc/app"), &t.live.join("etc/app"));
    let ino = |p: &str| fs::metadata(t.live.join(p)).unwrap().ino();
    assert_eq!(
        ino("etc/app/app.conf"),
        ino("etc/app/app.conf.hardlink"),
        "hard links stay hard links"
    );
    if nix::unistd::geteuid().is_root() {
        let m = fs::symlink_metadata(t.live.join("etc/app/current")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "a symlink's owner");
    }
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    no_leftovers(&t.live.join("etc"));
}

#[test]
fn restores_a_symlink_as_a_symlink() {
    let t = Trees::new();
    app_tree(&t);
    t.restore("/etc/app/current", "/etc/current", false)
        .unwrap();
    let dst = t.live.join("etc/current");
    assert!(fs::symlink_metadata(&dst).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(&dst).unwrap(), Path::new("app.conf"));
}

/// Symlinks in the old root resolve as that root would: `/abs` → `/usr/lib` means the old root's.
#[test]
fn source_symlinks_resolve_inside_the_old_root() {
    let t = Trees::new();
    put(&t.old, "usr/lib/thing", "inside the old root");
    symlink("/usr/lib", t.old.join("abs")).unwrap();
    symlink("usr/lib", t.old.join("rel")).unwrap();
    t.restore("/abs/thing", "/a", false).unwrap();
    t.restore("/rel/thing", "/b", false).unwrap();
    for p in ["a", "b"] {
        assert_eq!(
            fs::read_to_string(t.live.join(p)).unwrap(),
            "inside the old root"
        );
    }
    let err = t.restore("/abs/missing", "/c", false).unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

#[test]
fn never_overwrites_without_force() {
    let t = Trees::new();
    app_tree(&t);
    put(&t.live, "etc/app.conf", "newer\n");
    let err = t
        .plan("/etc/app/app.conf", "/etc/app.conf", false)
        .unwrap_err();
    assert_eq!(refusal(&err), "destination-exists");
    // A destination that appears between plan and apply is refused too.
    let plan = t
        .plan("/etc/app/app.conf", "/etc/other.conf", false)
        .unwrap();
    put(&t.live, "etc/other.conf", "appeared\n");
    let err = t.apply(&plan).unwrap_err();
    assert_eq!(refusal(&err), "destination-exists");
    assert_eq!(
        fs::read_to_string(t.live.join("etc/app.conf")).unwrap(),
        "newer\n"
    );
    assert_eq!(
        fs::read_to_string(t.live.join("etc/other.conf")).unwrap(),
        "appeared\n"
    );
    no_leftovers(&t.live.join("etc"));
}

#[test]
fn force_replaces_in_one_step() {
    let t = Trees::new();
    app_tree(&t);
    put(&t.live, "etc/app.conf", "newer\n");
    let plan = t.plan("/etc/app/app.conf", "/etc/app.conf", true).unwrap();
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["replaces"]["type"], "file");
    let report = t.apply(&plan).unwrap();
    assert!(report.replaced);
    assert_eq!(
        fs::read_to_string(t.live.join("etc/app.conf")).unwrap(),
        "key = value\n"
    );

    // A directory replaced by a directory: nothing of the old one survives.
    put(&t.live, "etc/app/stale", "stale");
    put(&t.live, "etc/app/conf.d/stale", "stale");
    let plan = t.plan("/etc/app", "/etc/app", true).unwrap();
    assert_eq!(plan.replaces.as_ref().unwrap().entries, Some(3));
    t.apply(&plan).unwrap();
    assert_same_tree(&t.old.join("etc/app"), &t.live.join("etc/app"));

    // A file replaced by a directory, and back.
    put(&t.live, "x", "file");
    t.restore("/etc/app/conf.d", "/x", true).unwrap();
    assert!(t.live.join("x/10-local.conf").is_file());
    t.restore("/etc/app/app.conf", "/x", true).unwrap();
    assert!(t.live.join("x").is_file());
    no_leftovers(&t.live);
    no_leftovers(&t.live.join("etc"));
}

#[test]
fn planted_symlink_in_the_destination_is_refused() {
    let t = Trees::new();
    app_tree(&t);
    let outside = t.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::create_dir_all(t.live.join("home/user")).unwrap();
    symlink(&outside, t.live.join("home/user/link")).unwrap();
    symlink("../..", t.live.join("home/user/up")).unwrap();
    for (dest, force) in [
        ("/home/user/link/app.conf", false),
        ("/home/user/link/app.conf", true),
        ("/home/user/link/deeper/app.conf", true),
        ("/home/user/up/etc/app.conf", true),
    ] {
        let err = t.restore("/etc/app/app.conf", dest, force).unwrap_err();
        assert_eq!(refusal(&err), "symlink-in-destination", "{dest}");
        assert!(format!("{err:#}").contains("/home/user/"), "{err:#}");
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!t.live.join("etc/app.conf").exists());
    // A symlink at the destination itself is replaced with --force, never followed.
    symlink(&outside, t.live.join("home/user/dest")).unwrap();
    let err = t
        .restore("/etc/app/app.conf", "/home/user/dest", false)
        .unwrap_err();
    assert_eq!(refusal(&err), "destination-exists");
    t.restore("/etc/app/app.conf", "/home/user/dest", true)
        .unwrap();
    assert!(t.live.join("home/user/dest").is_file());
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[test]
fn missing_destination_parent_is_an_error() {
    let t = Trees::new();
    app_tree(&t);
    let err = t
        .plan("/etc/app/app.conf", "/nowhere/app.conf", false)
        .unwrap_err();
    assert!(err.chain().all(|c| c.downcast_ref::<Refusal>().is_none()));
    assert!(
        format!("{err:#}").contains("'/nowhere' does not exist"),
        "{err:#}"
    );
}

#[test]
fn dry_run_plan_is_data() {
    let t = Trees::new();
    app_tree(&t);
    let plan = t.plan("/etc/app", "/srv/app", false);
    assert!(plan.is_err(), "/srv does not exist");
    let plan = t.plan("/etc/app", "/etc/app", false).unwrap();
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["source"], "/etc/app");
    assert_eq!(v["dest"], "/etc/app");
    assert_eq!(v["reflink_expected"], false);
    assert_eq!(v["totals"]["files"], 2);
    assert_eq!(v["totals"]["hardlinks"], 1);
    assert_eq!(v["items"][1]["mode"], "0640");
    assert_eq!(v["items"][2]["link_to"], "/etc/app/app.conf");
    assert_eq!(v["items"][5]["target"], "app.conf");
    let text = tabula::restore::render_plan(&plan);
    assert!(
        text.starts_with("restore '/etc/app' to '/etc/app'\n"),
        "{text}"
    );
    assert!(
        text.contains("  /etc/app/current  symlink -> app.conf\n"),
        "{text}"
    );
    assert!(!t.live.join("etc/app").exists());
}

/// A mount point (a persisted path) is never replaced, nor a directory holding one.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn mount_points_are_never_replaced() {
    if !common::require_root("mount_points_are_never_replaced") {
        return;
    }
    common::private_mount_namespace();
    let t = Trees::new();
    app_tree(&t);
    let log = t.live.join("etc/app");
    fs::create_dir_all(&log).unwrap();
    mount(
        Some("tmpfs"),
        &log,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _guard = common::MountGuard {
        target: log.clone(),
    };
    put(&log, "persisted", "keep");
    let err = t.plan("/etc/app", "/etc/app", true).unwrap_err();
    assert_eq!(refusal(&err), "destination-is-mount-point");
    let err = t.plan("/etc", "/etc", true).unwrap_err();
    assert_eq!(refusal(&err), "destination-is-mount-point", "{err:#}");
    // Restoring into the mount point is fine.
    t.restore("/etc/app/app.conf", "/etc/app/app.conf", false)
        .unwrap();
    assert_eq!(fs::read_to_string(log.join("persisted")).unwrap(), "keep");
}

/// The real setting: a retired root and the live root are sibling subvolumes of one btrfs.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn reflinks_on_btrfs_share_extents() {
    let Some(s) = common::Scratch::new("reflinks_on_btrfs_share_extents", 256) else {
        return;
    };
    let (old, live) = (s.top.join("old_root"), s.top.join("root"));
    for sub in [&old, &live] {
        common::run(
            Command::new("btrfs")
                .args(["-q", "subvolume", "create"])
                .arg(sub),
        );
    }
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::create_dir_all(old.join("var/lib/app")).unwrap();
    fs::write(old.join("var/lib/app/big"), &data).unwrap();
    fs::write(old.join("var/lib/app/small"), "tiny").unwrap();
    common::run(
        Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(old.join("var/lib/app/nested")),
    );
    fs::write(
        old.join("var/lib/app/nested/inner"),
        "in a nested subvolume",
    )
    .unwrap();
    fs::create_dir_all(live.join("var/lib")).unwrap();

    let (o, l) = (common::open_dir(&old), common::open_dir(&live));
    let plan = list_plan(
        o.as_fd(),
        Path::new("/var/lib/app"),
        l.as_fd(),
        Path::new("/var/lib/app"),
        false,
    )
    .unwrap();
    assert!(plan.reflink_expected);
    let nested = plan
        .items
        .iter()
        .find(|i| i.path == Path::new("/var/lib/app/nested"))
        .unwrap();
    assert_eq!(nested.op, RestoreOp::Skip);
    assert!(
        nested
            .reason
            .as_deref()
            .unwrap()
            .contains("nested subvolume")
    );
    let report = apply_restore(&plan, o.as_fd(), l.as_fd()).unwrap();
    assert_eq!((report.reflinked_files, report.copied_files), (2, 0));
    assert!(report.reflink_used);
    assert_eq!(fs::read(live.join("var/lib/app/big")).unwrap(), data);
    assert!(!live.join("var/lib/app/nested").exists());

    let (a, b) = (
        extents(&old.join("var/lib/app/big")),
        extents(&live.join("var/lib/app/big")),
    );
    assert!(!a.is_empty());
    assert_eq!(a, b, "the copy shares the source's extents");
}

/// Physical start offsets of a file's extents, from `filefrag -v`; also checks they are shared.
fn extents(p: &Path) -> Vec<u64> {
    let out = common::run(Command::new("filefrag").arg("-v").arg(p));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut starts = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split(':').map(str::trim).collect();
        // "  0:        0..    1023:       3328..      4351:   1024:             last,shared,eof"
        if cols.len() >= 4 && cols[0].parse::<u64>().is_ok() {
            let physical = cols[2].split("..").next().unwrap().trim();
            starts.push(physical.parse().unwrap());
            assert!(line.contains("shared"), "extent not shared: {line}");
        }
    }
    starts
}

/// Restoring to another filesystem copies; a 2 GiB sparse file (a VM image) stays sparse, and the
/// report says per file whether it was reflinked or copied.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn copies_keep_sparse_files_sparse() {
    use std::os::unix::fs::FileExt;
    let Some(s) = common::Scratch::new("copies_keep_sparse_files_sparse", 256) else {
        return;
    };
    let old = s.top.join("old_root");
    common::run(
        Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&old),
    );
    fs::create_dir_all(old.join("var/lib/vm")).unwrap();
    const SIZE: u64 = 2 << 30;
    let img = fs::File::create(old.join("var/lib/vm/disk.img")).unwrap();
    img.set_len(SIZE).unwrap();
    let marks: [(u64, &[u8]); 3] = [(0, b"head"), (1 << 30, b"middle"), (SIZE - 4, b"tail")];
    for (at, what) in marks {
        img.write_all_at(what, at).unwrap();
    }
    drop(img);
    fs::write(old.join("var/lib/vm/notes"), "dense").unwrap();
    // The live side: a small tmpfs, another filesystem (no reflink), too small for 2 GiB.
    let live = s.dir.path().join("live");
    fs::create_dir(&live).unwrap();
    mount(
        Some("tmpfs"),
        &live,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64m"),
    )
    .unwrap();
    let _live = common::MountGuard {
        target: live.clone(),
    };

    let (o, l) = (common::open_dir(&old), common::open_dir(&live));
    let plan = list_plan(
        o.as_fd(),
        Path::new("/var/lib/vm"),
        l.as_fd(),
        Path::new("/vm"),
        false,
    )
    .unwrap();
    assert!(!plan.reflink_expected);
    let report = apply_restore(&plan, o.as_fd(), l.as_fd()).unwrap();
    assert_eq!((report.reflinked_files, report.copied_files), (0, 2));
    let how: Vec<(String, String)> = report
        .files
        .iter()
        .map(|f| {
            (
                f.path.display().to_string(),
                serde_json::to_value(f.data)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        how,
        [
            ("/vm/disk.img".to_string(), "copied".to_string()),
            ("/vm/notes".to_string(), "copied".to_string())
        ]
    );
    let copy = live.join("vm/disk.img");
    let meta = fs::metadata(&copy).unwrap();
    assert_eq!(meta.len(), SIZE);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "the copy takes {} bytes on disk",
        meta.blocks() * 512
    );
    let f = fs::File::open(&copy).unwrap();
    for (at, what) in marks {
        let mut buf = vec![0u8; what.len()];
        f.read_exact_at(&mut buf, at).unwrap();
        assert_eq!(buf, what);
    }
    let mut zeros = [1u8; 4096];
    f.read_exact_at(&mut zeros, 1 << 20).unwrap();
    assert!(zeros.iter().all(|b| *b == 0));
    assert_eq!(fs::read_to_string(live.join("vm/notes")).unwrap(), "dense");
}

/// The plan is walked as it is consumed, not computed up front: an entry added to a directory the
/// walk has not reached yet still shows up. (Memory then stays bounded by the tree's depth and its
/// largest directory, whatever its size.)
#[test]
fn the_plan_streams_from_the_walk() {
    let t = Trees::new();
    put(&t.old, "srv/a/one", "1");
    put(&t.old, "srv/b/two", "2");
    let (o, l) = t.fds();
    let plan = tabula::restore::plan_restore(
        o.as_fd(),
        Path::new("/srv"),
        l.as_fd(),
        Path::new("/srv"),
        false,
    )
    .unwrap();
    let mut walk = plan.walk(o.as_fd()).unwrap();
    let first = walk.next().unwrap().unwrap();
    assert_eq!(first.path, Path::new("/srv"));
    // `/srv` is read (its names, a and b); `/srv/b` is not yet.
    put(&t.old, "srv/b/three", "3");
    let rest: Vec<_> = walk
        .map(|i| i.unwrap().path.display().to_string())
        .collect();
    assert_eq!(
        rest,
        [
            "/srv/a",
            "/srv/a/one",
            "/srv/b",
            "/srv/b/three",
            "/srv/b/two"
        ]
    );
}

/// What `--dry-run` and `--json` write as they walk is the document the collected plan serializes
/// to, and the streamed report lists the same files as the collected one.
#[test]
fn streamed_documents_match_the_collected_ones() {
    let t = Trees::new();
    app_tree(&t);
    let listing = t.plan("/etc/app", "/etc/app", false).unwrap();
    let (o, l) = t.fds();
    let mut json = Vec::new();
    let totals = tabula::restore::write_plan_json(&mut json, &listing.plan, o.as_fd()).unwrap();
    assert_eq!(totals, listing.totals);
    let streamed: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(streamed, serde_json::to_value(&listing).unwrap());
    let mut text = Vec::new();
    tabula::restore::write_plan_text(&mut text, &listing.plan, o.as_fd()).unwrap();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        tabula::restore::render_plan(&listing)
    );

    let mut json = Vec::new();
    let report =
        tabula::restore::write_report_json(&mut json, &listing.plan, o.as_fd(), l.as_fd()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["dest"], "/etc/app");
    assert_eq!(v["replaced"], false);
    assert_eq!(v["totals"], serde_json::to_value(&listing.totals).unwrap());
    assert_eq!(v["copied_files"], 2);
    assert_eq!(
        v["files"],
        serde_json::json!([
            {"path": "/etc/app/app.conf", "data": "copied"},
            {"path": "/etc/app/conf.d/10-local.conf", "data": "copied"}
        ])
    );
    assert_eq!(report.totals, listing.totals);
    assert_same_tree(&t.old.join("etc/app"), &t.live.join("etc/app"));
}

/// Hard links across directories stay hard links (the first name is found again beneath the copy);
/// a file whose other names are outside the restored tree is a plain file.
#[test]
fn hard_links_across_directories() {
    let t = Trees::new();
    put(&t.old, "srv/a/first", "shared");
    fs::create_dir_all(t.old.join("srv/b/c")).unwrap();
    fs::hard_link(t.old.join("srv/a/first"), t.old.join("srv/b/c/second")).unwrap();
    fs::hard_link(t.old.join("srv/a/first"), t.old.join("srv/third")).unwrap();
    put(&t.old, "elsewhere/x", "outside");
    fs::hard_link(t.old.join("elsewhere/x"), t.old.join("srv/b/outside")).unwrap();
    let plan = t.plan("/srv", "/srv", false).unwrap();
    assert_eq!(plan.totals.hardlinks, 2);
    assert_eq!(plan.totals.files, 2);
    t.apply(&plan).unwrap();
    let ino = |p: &str| fs::metadata(t.live.join(p)).unwrap().ino();
    assert_eq!(ino("srv/a/first"), ino("srv/b/c/second"));
    assert_eq!(ino("srv/a/first"), ino("srv/third"));
    assert_eq!(
        fs::metadata(t.live.join("srv/b/outside")).unwrap().nlink(),
        1
    );
    assert_same_tree(&t.old.join("srv"), &t.live.join("srv"));
    no_leftovers(&t.live);
}
