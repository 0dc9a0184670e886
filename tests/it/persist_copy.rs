//! `how = "copy"` and `tabula persist sync` on a real loop btrfs (needs root): boot cycles through the
//! CLI (rollback, mount the new root and persistent storage as an initrd would, `tabula persist`), a
//! program replacing a copied file by rename, syncs interrupted at every fault point, planted symlinks.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::{Booted, Scratch, rollback_and_mount, tabula_cmd};
use tabula::btrfs;
use tabula::check::{CheckOptions, Severity};
use tabula::config::Config;
use tabula::persist::{PlanOptions, State};

const OLD: &str = "root:$6$old$OLDHASH:19000:0:99999:7:::\nalice:$6$a$ALICE:19000:0:99999:7:::\n";
const NEW: &str = "root:$6$new$NEWHASH:20000:0:99999:7:::\nalice:$6$a$ALICE:19000:0:99999:7:::\n";

/// A boot: rollback, mounts, `tabula persist --root sysroot`; returns persist's stdout too.
fn boot(s: &Scratch) -> (Booted, String) {
    let b = rollback_and_mount(s);
    let out = s.tabula_ok(&["persist", "--root", b.sysroot.to_str().unwrap()]);
    (b, out)
}

/// A blank with /etc/shadow (the distribution's), /persist and alice's home; `entries` appended to
/// the config.
fn setup(test: &str, entries: &str) -> Option<Scratch> {
    let s = Scratch::new(test, 400)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    let r = s.top.join("root");
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::create_dir_all(r.join("home/alice")).unwrap();
    fs::create_dir(r.join("persist")).unwrap();
    fs::write(r.join("etc/shadow"), "root:!:1::::::\n").unwrap();
    fs::set_permissions(r.join("etc/shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(
        r.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\nusers:x:100:\n").unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(&s.config, format!("{cfg}{entries}")).unwrap();
    Some(s)
}

/// /persist/etc/shadow, as the previous boots left it.
fn seed_shadow(s: &Scratch) -> PathBuf {
    let p = s.top.join("persist/etc/shadow");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, OLD).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    nix::unistd::chown(&p, None, Some(nix::unistd::Gid::from_raw(42))).unwrap();
    rustix::fs::setxattr(
        &p,
        "user.tabula-test",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    p
}

/// What passwd/chpasswd do: write a new file next to it, then rename it over the old one.
fn replace_by_rename(path: &Path, content: &str) {
    let tmp = path.with_file_name("nshadow");
    fs::write(&tmp, content).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o640)).unwrap();
    nix::unistd::chown(&tmp, None, Some(nix::unistd::Gid::from_raw(42))).unwrap();
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename over {}: {e}", path.display()));
}

fn sync(s: &Scratch, b: &Booted, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["persist", "sync", "--root", b.sysroot.to_str().unwrap()];
    args.extend_from_slice(extra);
    s.tabula(&args)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SHADOW_COPY: &str = "[persist]\nfiles = [{ path = \"/etc/shadow\", how = \"copy\" }]\n";

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_copy_survives_rename_over_it_and_the_next_boot_has_the_change() {
    let Some(s) = setup(
        "a_copy_survives_rename_over_it_and_the_next_boot_has_the_change",
        SHADOW_COPY,
    ) else {
        return;
    };
    let stored = seed_shadow(&s);
    let (b1, _) = boot(&s);
    let live = b1.sysroot.join("etc/shadow");
    assert_eq!(fs::read_to_string(&live).unwrap(), OLD);
    let (m, p) = (fs::metadata(&live).unwrap(), fs::metadata(&stored).unwrap());
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 42, 0o640));
    assert_eq!((m.mtime(), m.mtime_nsec()), (p.mtime(), p.mtime_nsec()));
    assert_ne!(m.ino(), p.ino(), "a copy, not the same file");
    assert_eq!(
        rustix::fs::getxattr(&live, "user.tabula-test", &mut [0u8; 16]).unwrap(),
        4,
        "xattrs are copied"
    );
    let mounts = tabula::mountinfo::read().unwrap();
    assert!(
        !mounts.iter().any(|x| x.mount_point == live),
        "a copy entry is not mounted"
    );
    // Running persist again (a retried initrd step) finds it in place.
    let again = s.tabula_ok(&["persist", "--root", b1.sysroot.to_str().unwrap()]);
    assert!(again.contains("0 mounted, 1 already in place"), "{again}");

    replace_by_rename(&live, NEW);
    assert_eq!(fs::read_to_string(&stored).unwrap(), OLD, "not synced yet");
    let cfg = Config::load(&s.config).unwrap();
    let st = tabula::persist::status(&cfg, &b1.sysroot).unwrap();
    assert_eq!(st[0].synced, Some(false), "{st:?}");
    assert!(
        st[0].problems.iter().any(|p| p.contains("not synced yet")),
        "{st:?}"
    );

    // `tabula persist --root /` on the running system (the --adopt recipe) must not put the old copy
    // back over a change not synced yet.
    let plan =
        tabula::persist::plan_running_system(&cfg, &b1.sysroot, PlanOptions::default()).unwrap();
    assert_eq!(plan.entries[0].state, State::InPlace, "{plan:#?}");
    assert!(
        plan.entries[0].warnings[0].contains("the live file is kept"),
        "{plan:#?}"
    );
    tabula::persist::apply(&plan);
    assert_eq!(fs::read_to_string(&live).unwrap(), NEW);
    // In the initrd the persistent copy wins.
    let plan = tabula::persist::plan(&cfg, &b1.sysroot).unwrap();
    assert_eq!(plan.entries[0].state, State::Ready, "{plan:#?}");

    let dry = sync(&s, &b1, &["--dry-run"]);
    assert!(
        dry.status.success() && text(&dry).contains("to copy"),
        "{}",
        text(&dry)
    );
    assert_eq!(
        fs::read_to_string(&stored).unwrap(),
        OLD,
        "--dry-run changes nothing"
    );
    let out = sync(&s, &b1, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("copied"), "{}", text(&out));
    assert_eq!(fs::read_to_string(&stored).unwrap(), NEW);
    let p = fs::metadata(&stored).unwrap();
    assert_eq!((p.uid(), p.gid(), p.mode() & 0o7777), (0, 42, 0o640));
    assert_eq!(
        tabula::persist::status(&cfg, &b1.sysroot).unwrap()[0].synced,
        Some(true)
    );
    let again = sync(&s, &b1, &[]);
    assert!(text(&again).contains("in sync"), "{}", text(&again));
    assert!(
        common::ls(&s.top.join("persist/etc")) == ["shadow"],
        "no temporary file left: {:?}",
        common::ls(&s.top.join("persist/etc"))
    );
    drop(b1);

    // Next boot: rollback to the blank, then the persisted copy.
    let (b2, _) = boot(&s);
    assert_eq!(
        fs::read_to_string(b2.sysroot.join("etc/shadow")).unwrap(),
        NEW
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_sync_killed_at_any_point_leaves_the_old_or_the_new_copy() {
    let Some(s) = setup(
        "a_sync_killed_at_any_point_leaves_the_old_or_the_new_copy",
        SHADOW_COPY,
    ) else {
        return;
    };
    if !cfg!(feature = "fault-injection") {
        let msg = "a_sync_killed_at_any_point: build with --features fault-injection";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    }
    let stored = seed_shadow(&s);
    let (b, _) = boot(&s);
    let live = b.sysroot.join("etc/shadow");
    // Big enough that a partial copy would be visible.
    let big_new: String = NEW.repeat(20_000);
    replace_by_rename(&live, &big_new);
    for point in tabula::fault::SYNC_POINTS {
        fs::write(&stored, OLD).unwrap();
        let out = tabula_cmd(&s.config)
            .env("TABULA_FAULT", point)
            .args(["persist", "sync", "--root", b.sysroot.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("aborting at {point}")),
            "{point}: {}",
            text(&out)
        );
        let now = fs::read_to_string(&stored).unwrap();
        let expected = if *point == "sync-renamed" {
            big_new.as_str()
        } else {
            OLD
        };
        assert!(
            now == expected,
            "{point}: {} bytes, neither old nor new",
            now.len()
        );
        // The next sync finishes the job.
        let out = sync(&s, &b, &[]);
        assert!(out.status.success(), "{point}: {}", text(&out));
        assert_eq!(fs::read_to_string(&stored).unwrap(), big_new, "{point}");
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn planted_symlinks_and_replaced_files_are_refused() {
    let Some(s) = setup(
        "planted_symlinks_and_replaced_files_are_refused",
        "[persist]\nfiles = [{ path = \"/etc/shadow\", how = \"copy\" }]\n\
         [[persist.users]]\nname = \"alice\"\nfiles = [{ path = \".bash_history\", how = \"copy\" }]\n",
    ) else {
        return;
    };
    // A file someone wants overwritten (or read into the root) through a link in persistent storage.
    let victim = s.top.join("persist/victim");
    fs::write(&victim, "victim\n").unwrap();
    fs::create_dir_all(s.top.join("persist/etc")).unwrap();
    symlink("/persist/victim", s.top.join("persist/etc/shadow")).unwrap();
    // alice's persistent home replaced by a link to a root-owned directory.
    let elsewhere = s.top.join("persist/elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::create_dir_all(s.top.join("persist/home")).unwrap();
    symlink("/persist/elsewhere", s.top.join("persist/home/alice")).unwrap();

    let b = rollback_and_mount(&s);
    let out = s.tabula(&["persist", "--root", b.sysroot.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("symlink-in-path"), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(b.sysroot.join("etc/shadow")).unwrap(),
        "root:!:1::::::\n",
        "the blank's file stays: the link was not followed"
    );

    // On the running system: the live files changed; sync must not write through either link.
    replace_by_rename(&b.sysroot.join("etc/shadow"), NEW);
    fs::write(b.sysroot.join("home/alice/.bash_history"), "ls\n").unwrap();
    let out = sync(&s, &b, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert_eq!(t.matches("REFUSED").count(), 2, "{t}");
    assert!(
        t.contains("symlink-in-path") || t.contains("symlink"),
        "{t}"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
    assert!(
        fs::symlink_metadata(s.top.join("persist/etc/shadow"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        common::ls(&elsewhere).is_empty(),
        "{:?}",
        common::ls(&elsewhere)
    );

    // A live file replaced by a symlink (or a directory) is refused, never copied or followed.
    fs::remove_file(s.top.join("persist/etc/shadow")).unwrap();
    fs::write(s.top.join("persist/etc/shadow"), OLD).unwrap();
    fs::remove_file(b.sysroot.join("etc/shadow")).unwrap();
    symlink("/persist/victim", b.sysroot.join("etc/shadow")).unwrap();
    let out = sync(&s, &b, &["/etc/shadow"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("replaced by a symlink"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read_to_string(s.top.join("persist/etc/shadow")).unwrap(),
        OLD
    );
    fs::remove_file(b.sysroot.join("etc/shadow")).unwrap();
    fs::create_dir(b.sysroot.join("etc/shadow")).unwrap();
    let out = sync(&s, &b, &["/etc/shadow", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"][0]["rule"], "not-a-regular-file", "{v}");
    assert_eq!(
        fs::read_to_string(s.top.join("persist/etc/shadow")).unwrap(),
        OLD
    );

    // A path that is not a copy entry is an error, not silently ignored.
    let out = sync(&s, &b, &["/etc/passwd"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not a `how = \"copy\"` entry"),
        "{}",
        text(&out)
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_deleted_file_keeps_its_copy_unless_pruned_and_a_new_one_is_taken_in() {
    let Some(s) = setup(
        "a_deleted_file_keeps_its_copy_unless_pruned_and_a_new_one_is_taken_in",
        "[persist]\nfiles = [{ path = \"/etc/shadow\", how = \"copy\" }]\n\
         [[persist.users]]\nname = \"alice\"\nfiles = [{ path = \".config/fish/fish_history\", how = \"copy\" }]\n",
    ) else {
        return;
    };
    let stored = seed_shadow(&s);
    let (b, out) = boot(&s);
    // No source yet for alice's history: nothing copied, not a failure.
    assert!(out.contains("1 source missing"), "{out}");
    let hist = b.sysroot.join("home/alice/.config/fish/fish_history");
    fs::create_dir_all(hist.parent().unwrap()).unwrap();
    fs::write(&hist, "- cmd: ls\n").unwrap();
    nix::unistd::chown(
        &hist,
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(100)),
    )
    .unwrap();
    fs::remove_file(b.sysroot.join("etc/shadow")).unwrap();

    let out = sync(&s, &b, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("deleted, kept"), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(&stored).unwrap(),
        OLD,
        "kept without --prune"
    );
    let copy = s.top.join("persist/home/alice/.config/fish/fish_history");
    assert_eq!(fs::read_to_string(&copy).unwrap(), "- cmd: ls\n");
    let m = fs::metadata(&copy).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 100));
    // Missing parents in a home: the user, 0700.
    for d in [
        "home/alice",
        "home/alice/.config",
        "home/alice/.config/fish",
    ] {
        let m = fs::metadata(s.top.join("persist").join(d)).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1000, 100, 0o700),
            "{d}"
        );
    }

    let out = sync(&s, &b, &["--prune"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pruned"), "{}", text(&out));
    assert!(!stored.exists());
    drop(b);

    // Next boot: the history is copied in, its missing parents made as in persistent storage; the
    // pruned shadow is not persistent any more (the blank's stays).
    let (b2, out) = boot(&s);
    assert!(out.contains("1 source missing"), "{out}");
    let hist = b2.sysroot.join("home/alice/.config/fish/fish_history");
    assert_eq!(fs::read_to_string(&hist).unwrap(), "- cmd: ls\n");
    for d in [".config", ".config/fish"] {
        let m = fs::metadata(b2.sysroot.join("home/alice").join(d)).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1000, 100, 0o700),
            "{d}"
        );
    }
    assert_eq!(
        fs::read_to_string(b2.sysroot.join("etc/shadow")).unwrap(),
        "root:!:1::::::\n"
    );
}

#[test]
fn check_warns_for_rename_replaced_files_that_are_not_copies() {
    let file = Path::new("/etc/tabula/tabula.toml");
    let text = "[layout]\ndevice = \"/dev/vda2\"\n[persist]\n\
                files = [\"/etc/shadow\", { path = \"/etc/passwd\", how = \"symlink\" }, \
                { path = \"/etc/group\", how = \"copy\" }, \"/etc/machine-id\"]\n\
                [[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 100\nfiles = [\".bash_history\"]\n";
    let report = tabula::check::check_text(file, text, &CheckOptions::default());
    let warnings: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(warnings[0].contains("tabula.toml:4:10: warning: '/etc/shadow' is replaced by rename"));
    assert!(warnings[0].contains("EBUSY") && warnings[0].contains("how = \"copy\""));
    assert!(warnings[1].contains("'/etc/passwd'") && warnings[1].contains("symlink"));
    assert!(warnings[2].contains("'/home/alice/.bash_history'"));
    assert!(warnings[2].contains("{ path = \".bash_history\", how = \"copy\" }"));
    assert!(!report.has_errors() && !report.is_clean());
}

#[test]
fn check_blank_accepts_a_file_a_copy_replaces_and_rejects_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let blank = tmp.path();
    fs::create_dir_all(blank.join("etc")).unwrap();
    fs::create_dir_all(blank.join("persist")).unwrap();
    fs::write(blank.join("etc/shadow"), "root:!:1::::::\n").unwrap();
    symlink("/persist/etc/gshadow", blank.join("etc/gshadow")).unwrap();
    let text = "[layout]\ndevice = \"/dev/vda2\"\n[persist]\n\
                files = [{ path = \"/etc/shadow\", how = \"copy\" }, \
                { path = \"/etc/gshadow\", how = \"copy\" }]\n";
    let opts = CheckOptions {
        root: None,
        blank: Some(blank.to_path_buf()),
    };
    let report = tabula::check::check_text(Path::new("/etc/tabula/tabula.toml"), text, &opts);
    let shown: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(
        shown[0].contains("error: '/etc/gshadow' is a symlink in the blank snapshot"),
        "{shown:#?}"
    );
}
