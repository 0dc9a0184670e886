//! `tabula blank …` on real loop-mounted btrfs (needs root): transactional updates of the blank, their
//! crash safety, rollback, history and the deletion rules for retired blanks.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use common::{Scratch, assert_refused, ls, open_dir, stderr};
use serde_json::Value;
use tabula::btrfs;

const BUSYBOX: &str = "/bin/busybox";

/// A scratch fs whose root (and blank) is a minimal tree with a static busybox.
fn setup(test: &str) -> Option<Scratch> {
    let s = Scratch::new(test, 300)?;
    assert!(
        Path::new(BUSYBOX).exists(),
        "{test}: needs a static busybox at {BUSYBOX} (apt-get install busybox-static)"
    );
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    for d in ["bin", "proc", "sys", "dev", "run", "etc"] {
        fs::create_dir_all(s.top.join("root").join(d)).unwrap();
    }
    fs::copy(BUSYBOX, s.top.join("root/bin/busybox")).unwrap();
    fs::write(s.top.join("root/etc/version"), "1").unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    Some(s)
}

fn sh(script: &str) -> Vec<&str> {
    vec!["--", "/bin/busybox", "sh", "-c", script]
}

fn update(s: &Scratch, script: &str) -> std::process::Output {
    let mut args = vec!["blank", "update"];
    args.extend(sh(script));
    s.tabula(&args)
}

fn info(p: &Path) -> btrfs::SubvolumeInfo {
    btrfs::subvolume_info(open_dir(p).as_fd()).unwrap()
}

/// Retired blanks in old_roots (subvolumes named blank-…).
fn retired_blanks(s: &Scratch) -> Vec<String> {
    ls(&s.top.join("old_roots"))
        .into_iter()
        .filter(|n| tabula::blank::parse_name(n).is_some())
        .collect()
}

fn assert_valid_blank(s: &Scratch) {
    let b = info(&s.top.join("root-blank"));
    assert!(b.read_only, "the blank must be read-only");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn update_reaches_the_next_root() {
    let Some(s) = setup("update_reaches_the_next_root") else {
        return;
    };
    let before = info(&s.top.join("root-blank"));
    // The chroot has /proc mounted and a fresh /run; what COMMAND writes lands in the new blank.
    let out = update(
        &s,
        "test -e /proc/self/stat && echo 2 > /etc/version && echo new > /added",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after = info(&s.top.join("root-blank"));
    assert!(after.read_only);
    assert_ne!(before.uuid, after.uuid);
    assert_eq!(
        fs::read_to_string(s.top.join("root-blank/added")).unwrap(),
        "new\n"
    );
    // Nothing the chroot mounted stays behind in the blank.
    assert!(ls(&s.top.join("root-blank/proc")).is_empty());
    assert!(!s.top.join("root-blank.tabula-update").exists());
    let old = retired_blanks(&s);
    assert_eq!(old.len(), 1, "{old:?}");
    let r = info(&s.top.join("old_roots").join(&old[0]));
    assert_eq!((r.id, r.read_only), (before.id, true));
    // The retired blank is not a retired root: roots list ignores it.
    let roots: Value = serde_json::from_str(&s.tabula_ok(&["roots", "list", "--json"])).unwrap();
    assert_eq!(roots["roots"].as_array().unwrap().len(), 0, "{roots}");
    s.tabula_ok(&["rollback"]);
    assert_eq!(
        fs::read_to_string(s.top.join("root/added")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(s.top.join("root/etc/version")).unwrap(),
        "2\n"
    );
    // list and diff show the update.
    let list: Value = serde_json::from_str(&s.tabula_ok(&["blank", "list", "--json"])).unwrap();
    assert_eq!(list["retired"][0]["name"], old[0].as_str());
    assert_eq!(list["retired"][0]["managed"], true);
    let d: Value = serde_json::from_str(&s.tabula_ok(&["blank", "diff", "--json"])).unwrap();
    let paths: Vec<&str> = d["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/added") && paths.contains(&"/etc/version"),
        "{d}"
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn failing_command_changes_nothing() {
    let Some(s) = setup("failing_command_changes_nothing") else {
        return;
    };
    let before = info(&s.top.join("root-blank"));
    let out = update(&s, "echo x > /added; exit 3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the blank is unchanged"),
        "{}",
        stderr(&out)
    );
    assert_eq!(info(&s.top.join("root-blank")).uuid, before.uuid);
    assert!(!s.top.join("root-blank.tabula-update").exists());
    assert!(retired_blanks(&s).is_empty());
    assert!(!s.top.join("root-blank/added").exists());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn fault_at_every_step_leaves_a_blank() {
    for point in tabula::blank::FAULT_POINTS {
        let Some(s) = setup(&format!("fault_{point}")) else {
            return;
        };
        let before = info(&s.top.join("root-blank"));
        let mut args = vec!["blank", "update"];
        args.extend(sh("echo new > /added"));
        let out = common::tabula_cmd(&s.config)
            .env("TABULA_FAULT", point)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the fault must abort");
        // A power cut here: a read-only blank exists, the old or the new one, and a boot works.
        assert_valid_blank(&s);
        s.tabula_ok(&["rollback"]);
        let booted_new = s.top.join("root/added").exists();
        let committed = tabula::blank::FAULT_POINTS
            .iter()
            .position(|p| p == point)
            .unwrap()
            >= 4; // from blank-after-exchange on, the new blank is in place
        assert_eq!(booted_new, committed, "{point}");
        // The next blank command finishes (or discards) what was interrupted.
        s.tabula_ok(&["blank", "list"]);
        let out = common::tabula_cmd(&s.config)
            .args(["blank", "update", "--", "/bin/busybox", "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{point}: {}", stderr(&out));
        assert!(!s.top.join("root-blank.tabula-update").exists(), "{point}");
        let list: Value = serde_json::from_str(&s.tabula_ok(&["blank", "list", "--json"])).unwrap();
        let retired = list["retired"].as_array().unwrap();
        for r in retired {
            assert_eq!(r["managed"], true, "{point}: {list}");
            assert_eq!(r["info"]["read_only"], true, "{point}: {list}");
        }
        let ids: Vec<u64> = retired
            .iter()
            .map(|r| r["info"]["id"].as_u64().unwrap())
            .collect();
        if committed {
            assert!(
                ids.contains(&before.id),
                "{point}: the old blank is kept: {list}"
            );
        }
        assert_valid_blank(&s);
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn rollback_and_history() {
    let Some(s) = setup("rollback_and_history") else {
        return;
    };
    let first = info(&s.top.join("root-blank"));
    for v in 2..=4 {
        let out = update(&s, &format!("echo {v} > /etc/version"));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // blank_history = 2: the first blank is gone, versions 2 and 3 are kept.
    let old = retired_blanks(&s);
    assert_eq!(old.len(), 2, "{old:?}");
    assert!(
        old.iter()
            .all(|n| info(&s.top.join("old_roots").join(n)).id != first.id)
    );
    let version = || fs::read_to_string(s.top.join("root-blank/etc/version")).unwrap();
    assert_eq!(version(), "4\n");
    s.tabula_ok(&["blank", "rollback"]);
    assert_eq!(version(), "3\n");
    assert_valid_blank(&s);
    // Twice goes back to where it was: the replaced blank is the newest retired one.
    s.tabula_ok(&["blank", "rollback"]);
    assert_eq!(version(), "4\n");
    s.tabula_ok(&["rollback"]);
    assert_eq!(
        fs::read_to_string(s.top.join("root/etc/version")).unwrap(),
        "4\n"
    );
    assert!(retired_blanks(&s).len() <= 2);
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn refusals() {
    let Some(s) = setup("refusals") else {
        return;
    };
    for v in 2..=3 {
        assert!(
            update(&s, &format!("echo {v} > /etc/version"))
                .status
                .success()
        );
    }
    let old = retired_blanks(&s);
    assert_eq!(old.len(), 2);
    // A hand-placed subvolume named like a retired blank is never ours: never picked, never deleted.
    let fake = "blank-00099-2026-01-01T000000Z";
    btrfs::create_subvolume(open_dir(&s.top.join("old_roots")).as_fd(), fake).unwrap();
    let out = s.tabula(&["blank", "rollback", fake]);
    assert_refused(&out, "no-metadata");
    // Mounted somewhere: the oldest retired blank is kept though history says it goes.
    let oldest = s.top.join("old_roots").join(&old[0]);
    let mnt = s.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some(&s.dev.path),
        &mnt,
        Some("btrfs"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("subvolid={}", info(&oldest).id).as_str()),
    )
    .unwrap();
    let _guard = common::MountGuard {
        target: mnt.clone(),
    };
    let out = update(&s, "echo 4 > /etc/version");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(oldest.exists(), "a mounted retired blank is never deleted");
    assert!(stderr(&out).contains("mounted"), "{}", stderr(&out));
    assert!(s.top.join("old_roots").join(fake).exists());
    let list: Value = serde_json::from_str(&s.tabula_ok(&["blank", "list", "--json"])).unwrap();
    let fake_entry = list["retired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == fake)
        .unwrap();
    assert_eq!(fake_entry["managed"], false);
    drop(_guard);
    // Unmounted: the next update prunes it; the hand-placed one stays.
    assert!(update(&s, "echo 5 > /etc/version").status.success());
    assert!(!oldest.exists());
    assert!(s.top.join("old_roots").join(fake).exists());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn from_current_keeps_this_boot_minus_persisted() {
    let Some(s) = setup("from_current_keeps_this_boot_minus_persisted") else {
        return;
    };
    let mut config = fs::read_to_string(&s.config).unwrap();
    config.push_str(
        "blank_history = 1\n[persist]\ndirectories = [\"/var/keep\"]\n\
         [advise]\nignore = [\"/var/cache\", \"/home/*/.cache\", \"/etc/noise.conf\"]\n",
    );
    fs::write(&s.config, config).unwrap();
    s.tabula_ok(&["rollback"]);
    // This boot installed something, and wrote under a persisted mount point (hidden by the mount).
    fs::write(s.top.join("root/installed"), "pkg").unwrap();
    // …and per-boot noise that `[advise] ignore` names, beside what it does not.
    for d in [
        "root/var/cache/apt",
        "root/home/alice/.cache/x",
        "root/home/alice/docs",
    ] {
        fs::create_dir_all(s.top.join(d)).unwrap();
    }
    fs::write(s.top.join("root/var/cache/apt/pkgcache.bin"), "c").unwrap();
    fs::write(s.top.join("root/home/alice/.cache/x/y"), "c").unwrap();
    fs::write(s.top.join("root/home/alice/docs/note"), "n").unwrap();
    fs::write(s.top.join("root/etc/noise.conf"), "n").unwrap();
    fs::create_dir_all(s.top.join("root/var/keep/sub")).unwrap();
    fs::write(s.top.join("root/var/keep/sub/secret"), "s").unwrap();
    let out = s.tabula(&[
        "blank",
        "update",
        "--from",
        "current",
        "--",
        "/bin/busybox",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let blank = s.top.join("root-blank");
    assert_eq!(fs::read_to_string(blank.join("installed")).unwrap(), "pkg");
    assert!(blank.join("var/keep").is_dir(), "the mount point stays");
    assert!(
        ls(&blank.join("var/keep")).is_empty(),
        "what it hid does not"
    );
    // What `[advise] ignore` names is left out: directories stay empty, files go.
    assert!(ls(&blank.join("var/cache")).is_empty());
    assert!(ls(&blank.join("home/alice/.cache")).is_empty());
    assert!(!blank.join("etc/noise.conf").exists());
    assert_eq!(
        fs::read_to_string(blank.join("home/alice/docs/note")).unwrap(),
        "n"
    );
    // The live root itself is untouched.
    assert!(s.top.join("root/var/keep/sub/secret").exists());
    // blank_history = 1: a second update keeps one retired blank.
    assert!(update(&s, "echo 2 > /etc/version").status.success());
    assert_eq!(retired_blanks(&s).len(), 1);
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn persisted_paths_are_bound_in_the_chroot() {
    let Some(s) = setup("persisted_paths_are_bound_in_the_chroot") else {
        return;
    };
    // A persisted directory that exists live (here: in the test's temp dir) and in the blank.
    let live = s.dir.path().join("shared");
    fs::create_dir(&live).unwrap();
    let rel = live.strip_prefix("/").unwrap();
    let mut config = fs::read_to_string(&s.config).unwrap();
    config.push_str(&format!(
        "[persist]\ndirectories = [\"{}\"]\n",
        live.display()
    ));
    fs::write(&s.config, config).unwrap();
    fs::create_dir_all(s.top.join("root").join(rel)).unwrap();
    s.tabula_ok(&[
        "blank",
        "update",
        "--from",
        "current",
        "--",
        "/bin/busybox",
        "true",
    ]);
    let out = update(&s, &format!("echo kept > {}/log", live.display()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(live.join("log")).unwrap(), "kept\n");
    assert!(
        ls(&s.top.join("root-blank").join(rel)).is_empty(),
        "not in the blank"
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn prune_after_boot_finishes_an_interrupted_switch() {
    let Some(s) = setup("prune_after_boot_finishes_an_interrupted_switch") else {
        return;
    };
    let mut args = vec!["blank", "update"];
    args.extend(sh("echo new > /added"));
    let out = common::tabula_cmd(&s.config)
        .env("TABULA_FAULT", "blank-after-intent")
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !s.top.join("root-blank/added").exists(),
        "the old blank until the switch"
    );
    // The boot, then the after-boot prune service, which finishes the switch the intent proves.
    s.tabula_ok(&["rollback"]);
    s.tabula_ok(&["roots", "prune"]);
    assert!(s.top.join("root-blank/added").exists());
    assert_valid_blank(&s);
    assert!(!s.top.join("root-blank.tabula-update").exists());
    assert_eq!(retired_blanks(&s).len(), 1);
}
