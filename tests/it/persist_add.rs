//! `tabula persist add` on a real loop btrfs (needs root): a booted root with persistent storage mounted,
//! then directories and files made persistent now, refusals, a commented config, injected failures.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::{MountGuard, Scratch, assert_refused, stderr};
use nix::mount::{MsFlags, mount};
use tabula::btrfs;

const CONFIG_TAIL: &str = "\n# What survives a reboot.\n[persist]\n# one per line\ndirectories = [\n    \
                           \"/var/log\", # logs\n]\nfiles = [] # none yet\n# the end\n";

struct Booted {
    s: Scratch,
    sysroot: PathBuf,
    guards: Vec<MountGuard>,
}

impl Booted {
    fn tabula(&self, args: &[&str]) -> std::process::Output {
        self.s.tabula(args)
    }
    fn live(&self, p: &str) -> PathBuf {
        self.sysroot.join(p.trim_start_matches('/'))
    }
    fn stored(&self, p: &str) -> PathBuf {
        self.sysroot.join("persist").join(p.trim_start_matches('/'))
    }
    fn add(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["persist", "add", "--root", self.sysroot.to_str().unwrap()];
        a.extend_from_slice(args);
        self.tabula(&a)
    }
    fn config(&self) -> String {
        fs::read_to_string(&self.s.config).unwrap()
    }
}

impl Drop for Booted {
    /// Unmounts everything under sysroot, deepest first, before the scratch filesystem goes.
    fn drop(&mut self) {
        let mounts = tabula::mountinfo::read().unwrap_or_default();
        let mut under: Vec<&Path> = mounts
            .iter()
            .map(|m| m.mount_point.as_path())
            .filter(|p| p.starts_with(&self.sysroot) && *p != self.sysroot)
            .collect();
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in under {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        self.guards.clear();
    }
}

/// A root booted once: rolled back, mounted on sysroot with persistent storage, allowlist in place.
fn booted(test: &str) -> Option<Booted> {
    booted_with(test, |_| {})
}

/// [`booted`], with `before` writing into the root of the boot that gets retired.
fn booted_with(test: &str, before: impl Fn(&Path)) -> Option<Booted> {
    let s = Scratch::new(test, 400)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    fs::create_dir_all(s.top.join("root/var/lib")).unwrap();
    fs::create_dir(s.top.join("root/persist")).unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        format!("# tabula for the tests\n{cfg}{CONFIG_TAIL}"),
    )
    .unwrap();
    before(&s.top.join("root"));
    s.tabula_ok(&["rollback"]);
    let sysroot = s.dir.path().join("sysroot");
    fs::create_dir_all(&sysroot).unwrap();
    let m = |src: &str, at: &Path| {
        mount(
            Some(&s.dev.path),
            at,
            Some("btrfs"),
            MsFlags::empty(),
            Some(src),
        )
        .unwrap();
        MountGuard {
            target: at.to_path_buf(),
        }
    };
    let root = m("subvol=root", &sysroot);
    let persist = m("subvol=persist", &sysroot.join("persist"));
    s.tabula_ok(&["persist", "--root", sysroot.to_str().unwrap()]);
    Some(Booted {
        s,
        sysroot,
        guards: vec![persist, root],
    })
}

fn same_inode(a: &Path, b: &Path) -> bool {
    let (a, b) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn is_mount_point(p: &Path) -> bool {
    tabula::mountinfo::read()
        .unwrap()
        .iter()
        .any(|m| m.mount_point == p)
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn directory_and_files_become_persistent_keeping_comments() {
    let Some(b) = booted("persist_add_dir_file") else {
        return;
    };
    let dir = b.live("/var/lib/foo");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("db"), "data").unwrap();
    fs::write(dir.join("sub/x"), "x").unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&dir, Some(123), Some(456)).unwrap();
    let before = b.config();

    // The plan changes nothing.
    let out = b.add(&["/var/lib/foo", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("bind-mount"), "{plan}");
    assert_eq!(b.config(), before);
    assert!(!b.stored("/var/lib").exists());

    let out = b.add(&["/var/lib/foo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("rebuild it"), "the initrd's copy: {said}");
    assert!(
        said.contains("is not persisted"),
        "the config itself: {said}"
    );
    // Copied with parents, contents, owner and mode; mounted over the live path.
    let stored = b.stored("/var/lib/foo");
    assert_eq!(fs::read_to_string(stored.join("db")).unwrap(), "data");
    assert_eq!(fs::read_to_string(stored.join("sub/x")).unwrap(), "x");
    let m = fs::metadata(&stored).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 123, 456));
    assert!(b.stored("/var/lib").is_dir());
    assert!(is_mount_point(&dir));
    assert!(same_inode(&dir, &stored));
    fs::write(dir.join("new"), "written after").unwrap();
    assert!(
        stored.join("new").exists(),
        "writes go to persistent storage"
    );

    // Files: bind-mounted and symlinked.
    fs::write(b.live("/etc/machine-id"), "0123\n").unwrap();
    fs::write(b.live("/etc/adjtime"), "0.0 0 0.0\n").unwrap();
    let out = b.add(&["/etc/machine-id"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(same_inode(
        &b.live("/etc/machine-id"),
        &b.stored("/etc/machine-id")
    ));
    let out = b.add(&["/etc/adjtime", "--how", "symlink"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_link(b.live("/etc/adjtime")).unwrap(),
        Path::new("/persist/etc/adjtime")
    );
    assert_eq!(
        fs::read_to_string(b.stored("/etc/adjtime")).unwrap(),
        "0.0 0 0.0\n"
    );

    // The configuration keeps every comment and lists all three; it passes check.
    let after = b.config();
    for comment in before.lines().filter_map(|l| l.find('#').map(|i| &l[i..])) {
        assert!(after.contains(comment), "lost {comment:?}:\n{after}");
    }
    assert!(
        after.contains(
            "files = [\"/etc/machine-id\", { path = \"/etc/adjtime\", how = \"symlink\" }] # none yet"
        ),
        "{after}"
    );
    assert!(
        after.contains("    \"/var/log\", # logs\n    \"/var/lib/foo\",\n]"),
        "{after}"
    );
    assert!(after.contains("\"/etc/machine-id\""), "{after}");
    assert!(
        after.contains("{ path = \"/etc/adjtime\", how = \"symlink\" }"),
        "{after}"
    );
    let c = tabula::config::Config::load(&b.s.config).unwrap();
    assert_eq!(c.persist.entries().len(), 4);

    // Already covered, or holding an entry: refused, nothing changes.
    let out = b.add(&["/var/lib/foo/sub"]);
    assert_refused(&out, "already-covered");
    let out = b.add(&["/var/lib"]);
    assert_refused(&out, "holds-an-entry");
    assert_eq!(b.config(), after);
}

fn writer(path: &Path) -> Child {
    // Holds the file open and appends a numbered line every 20 ms.
    Command::new("sh")
        .arg("-c")
        .arg("i=0; exec 3>>\"$1\"; while :; do i=$((i+1)); echo \"line $i\" >&3; sleep 0.02 3>&-; done")
        .arg("sh")
        .arg(path)
        .spawn()
        .unwrap()
}

fn stop(mut c: Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_path_in_use_is_refused_unless_forced() {
    let Some(b) = booted("persist_add_in_use") else {
        return;
    };
    let log = b.live("/var/lib/w/log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    let w = writer(&log);
    std::thread::sleep(Duration::from_millis(200));
    let before = b.config();
    let out = b.add(&["/var/lib/w"]);
    assert_refused(&out, "path-in-use");
    assert!(
        stderr(&out).contains(&format!("process {} (sh)", w.id())),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.config(), before);
    assert!(!b.stored("/var/lib/w").exists());
    assert!(!is_mount_point(&b.live("/var/lib/w")));

    // Stopped, added, restarted: every line is in persistent storage.
    stop(w);
    let written = fs::read_to_string(&log).unwrap();
    let out = b.add(&["/var/lib/w"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let w = writer(&log);
    std::thread::sleep(Duration::from_millis(200));
    stop(w);
    let kept = fs::read_to_string(b.stored("/var/lib/w/log")).unwrap();
    assert!(kept.starts_with(&written), "no line lost");
    assert!(
        kept.len() > written.len(),
        "the restarted writer writes there"
    );

    // A memory-mapped file counts too (here: a program run from the path, mapped, no fd open).
    let bin = b.live("/var/lib/m/prog");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy("/bin/sleep", &bin).unwrap();
    let mut prog = Command::new(&bin).arg("30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let out = b.add(&["/var/lib/m"]);
    prog.kill().unwrap();
    prog.wait().unwrap();
    assert_refused(&out, "path-in-use");
    assert!(stderr(&out).contains("(mmap)"), "{}", stderr(&out));

    // --force goes on and names the process.
    let other = b.live("/var/lib/v/log");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    let w = writer(&other);
    std::thread::sleep(Duration::from_millis(100));
    let out = b.add(&["/var/lib/v", "--force"]);
    let pid = w.id();
    stop(w);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("process {pid}")),
        "{}",
        stderr(&out)
    );
    assert!(is_mount_point(&b.live("/var/lib/v")));
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_failure_half_way_leaves_the_live_path_as_it_was() {
    let Some(b) = booted("persist_add_failure") else {
        return;
    };
    let dir = b.live("/var/lib/foo");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("db"), "data").unwrap();
    fs::write(b.live("/etc/adjtime"), "adj\n").unwrap();
    let before = b.config();
    for (step, path, how) in [
        ("persist-add-copy", "/var/lib/foo", "bind"),
        ("persist-add-config", "/var/lib/foo", "bind"),
        ("persist-add-mount", "/var/lib/foo", "bind"),
        ("persist-add-mount", "/etc/adjtime", "symlink"),
    ] {
        let out = common::tabula_cmd(&b.s.config)
            .env("TABULA_FAIL", step)
            .args(["persist", "add", "--root", b.sysroot.to_str().unwrap()])
            .args([path, "--how", how])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{step}: must fail");
        assert!(stderr(&out).contains(step), "{step}: {}", stderr(&out));
        assert_eq!(b.config(), before, "{step}: config restored");
        assert!(
            !b.stored("/var/lib").exists(),
            "{step}: copy and parents removed"
        );
        assert!(
            !b.stored("/etc").exists(),
            "{step}: copy and parents removed"
        );
        assert!(!is_mount_point(&dir), "{step}: not mounted");
        assert_eq!(fs::read_to_string(dir.join("db")).unwrap(), "data");
        let adj = b.live("/etc/adjtime");
        assert!(!adj.is_symlink(), "{step}: the live file is back");
        assert_eq!(fs::read_to_string(&adj).unwrap(), "adj\n");
    }
    // A crash (abort, no cleanup) after the copy: the live path and the config are as they were, the
    // copy is an orphan, and a second try says so instead of overwriting it.
    let out = common::tabula_cmd(&b.s.config)
        .env("TABULA_FAULT", "persist-add-after-copy")
        .args([
            "persist",
            "add",
            "--root",
            b.sysroot.to_str().unwrap(),
            "/var/lib/foo",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "aborted");
    assert_eq!(b.config(), before);
    assert!(!is_mount_point(&dir));
    assert_eq!(fs::read_to_string(dir.join("db")).unwrap(), "data");
    assert!(b.stored("/var/lib/foo/db").exists(), "the copy is left");
    assert!(b.tabula(&["orphans"]).status.success());
    let orphans = String::from_utf8_lossy(&b.tabula(&["orphans"]).stdout).into_owned();
    assert!(orphans.contains("/persist/var/lib/foo/"), "{orphans}");
    let out = b.add(&["/var/lib/foo"]);
    assert_refused(&out, "already-in-storage");
    fs::remove_dir_all(b.stored("/var/lib")).unwrap();

    // And then it works.
    let out = b.add(&["/var/lib/foo"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Persistent storage not mounted: refused before anything is copied into the root's directory.
    nix::mount::umount2(&b.live("/persist"), nix::mount::MntFlags::MNT_DETACH).unwrap();
    let out = b.add(&["/etc/adjtime"]);
    assert_refused(&out, "persist-not-mounted");
    assert!(
        stderr(&out).contains("erased at the next boot"),
        "refused at planning: {}",
        stderr(&out)
    );
    assert!(!b.live("/persist/etc").exists());

    // Nor is a nested subvolume there (a device of its own, but no mount).
    fs::remove_dir(b.live("/persist")).unwrap();
    let live_root = fs::File::open(b.live("/")).unwrap();
    tabula::btrfs::create_subvolume(std::os::fd::AsFd::as_fd(&live_root), "persist").unwrap();
    let out = b.add(&["/etc/adjtime"]);
    assert_refused(&out, "persist-not-mounted");
    assert!(!b.live("/persist/etc").exists());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn from_last_boot_and_a_config_it_cannot_edit() {
    let Some(b) = booted_with("persist_add_from", |root| {
        fs::write(root.join("etc/hostname"), "last boot\n").unwrap();
        fs::create_dir_all(root.join("var/lib/gone")).unwrap();
        fs::write(root.join("var/lib/gone/db"), "erased by the rollback\n").unwrap();
    }) else {
        return;
    };
    // Last boot wrote /etc/hostname; the live one differs: --from -1 takes last boot's frozen copy.
    fs::write(b.live("/etc/hostname"), "live\n").unwrap();
    let out = b.add(&["/etc/adjtime", "--from", "-1"]);
    assert!(!out.status.success(), "not in last boot's root");
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = b.add(&["/etc/hostname", "--from", "-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(b.stored("/etc/hostname")).unwrap(),
        "last boot\n"
    );
    assert_eq!(
        fs::read_to_string(b.live("/etc/hostname")).unwrap(),
        "last boot\n"
    );

    // What the rollback erased comes back from last boot's root, and is bound in.
    assert!(!b.live("/var/lib/gone").exists());
    let out = b.add(&["/var/lib/gone", "--from", "-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(b.live("/var/lib/gone/db")).unwrap(),
        "erased by the rollback\n"
    );
    assert!(is_mount_point(&b.live("/var/lib/gone")));

    // A bind-mounted (persisted) configuration cannot be renamed over: it is rewritten in place.
    mount(
        Some(&b.s.config),
        &b.s.config,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let cfg_mount = MountGuard {
        target: b.s.config.clone(),
    };
    fs::write(b.live("/etc/timezone"), "UTC\n").unwrap();
    let out = b.add(&["/etc/timezone"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(b.config().contains("\"/etc/timezone\""), "{}", b.config());
    drop(cfg_mount);
    assert!(
        b.config().contains("\"/etc/timezone\""),
        "written through the mount"
    );

    // A configuration that is a symlink (as NixOS generates it) is not edited: the Nix line is given.
    let real = b.s.dir.path().join("real.toml");
    fs::rename(&b.s.config, &real).unwrap();
    std::os::unix::fs::symlink(&real, &b.s.config).unwrap();
    fs::write(b.live("/etc/machine-id"), "id\n").unwrap();
    let out = b.add(&["/etc/machine-id"]);
    assert_refused(&out, "config-not-editable");
    assert!(
        stderr(&out).contains("services.tabula.persist.files = [ \"/etc/machine-id\" ];"),
        "{}",
        stderr(&out)
    );
    assert!(!b.stored("/etc/machine-id").exists());
}

#[test]
fn the_command_line_of_persist_add() {
    use clap::Parser;
    use tabula::cli::{Cli, Command, PersistCommand};
    let cli = Cli::try_parse_from([
        "tabula",
        "persist",
        "add",
        "/var/lib/x",
        "--how",
        "symlink",
        "--from",
        "-1",
        "--force",
    ])
    .unwrap();
    let Command::Persist(p) = cli.command else {
        panic!("not persist")
    };
    let Some(PersistCommand::Add(a)) = p.action else {
        panic!("not add")
    };
    assert_eq!(a.path, Path::new("/var/lib/x"));
    assert_eq!(a.how, "symlink");
    assert_eq!(a.from.as_deref(), Some("-1"));
    assert_eq!(a.root, Path::new("/"));
    assert!(a.force && !a.dry_run);
    // `tabula persist` itself still needs --root; options of both do not mix.
    assert!(Cli::try_parse_from(["tabula", "persist"]).is_err());
    assert!(Cli::try_parse_from(["tabula", "persist", "--root", "/sysroot"]).is_ok());
    assert!(Cli::try_parse_from(["tabula", "persist", "--root", "/", "add", "/x"]).is_err());
    assert!(Cli::try_parse_from(["tabula", "persist", "add", "/x", "--how", "copy"]).is_err());
    assert!(Cli::try_parse_from(["tabula", "advise", "--boots", "3", "--json"]).is_ok());
    assert!(Cli::try_parse_from(["tabula", "orphans", "--json"]).is_ok());
}
