//! `tabula roots …` on real loop-mounted btrfs (needs root): listing, pins, guarded deletion, prune.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use common::{Scratch, assert_refused, ls, open_dir, retired, stderr};
use serde_json::Value;
use tabula::btrfs;

/// A scratch fs with `boots` retired roots (each holding `boot-N`).
fn with_boots(test: &str, boots: usize) -> Option<Scratch> {
    let s = Scratch::new(test, 400)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    for b in 1..=boots {
        fs::write(s.top.join(format!("root/boot-{b}")), "x").unwrap();
        s.tabula_ok(&["rollback"]);
    }
    Some(s)
}

fn json(s: &Scratch, args: &[&str]) -> Value {
    serde_json::from_str(&s.tabula_ok(args)).unwrap()
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn list_and_show() {
    let Some(s) = with_boots("list_and_show", 3) else {
        return;
    };
    let v = json(&s, &["roots", "list", "--json"]);
    assert_eq!(v["version"], 1);
    let roots = v["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 3);
    let refs: Vec<&str> = roots.iter().map(|r| r["ref"].as_str().unwrap()).collect();
    assert_eq!(refs, ["-1", "-2", "-3"], "newest first");
    let seqs: Vec<u64> = roots.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 2, 1]);
    for r in roots {
        assert_eq!(r["managed"], true);
        assert_eq!(r["read_only"], true);
        assert!(r["retired_at"].is_string() && r["kernel"].is_null() == (r["seq"] == 1));
    }
    // Not a terminal: tab-separated, one line per root.
    let tsv = s.tabula_ok(&["roots", "list"]);
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("-1\t3\t00003-"), "{tsv}");
    // On a terminal: an aligned table with a bold header, unless NO_COLOR; never escapes in a pipe.
    assert!(!tsv.contains('\x1b'), "{tsv}");
    let on_tty = |no_color: bool| {
        let cmd = format!(
            "{} --config {} --log stderr roots list",
            env!("CARGO_BIN_EXE_tabula"),
            s.config.display()
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]);
        if no_color {
            c.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&common::run(&mut c).stdout).into_owned()
    };
    let table = on_tty(false);
    assert!(table.contains("\x1b[1mREF  SEQ  NAME"), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("-1   3    00003-"),
        "{table}"
    );
    let plain = on_tty(true);
    assert!(
        plain.starts_with("REF  SEQ") && !plain.contains('\x1b'),
        "{plain}"
    );
    let shown = s.tabula_ok(&["roots", "show", "-2"]);
    assert!(
        shown.contains("seq:           2") && shown.contains(&retired(&s)[1]),
        "{shown}"
    );
    let v = json(&s, &["roots", "show", "1", "--json"]);
    assert_eq!(v["name"], retired(&s)[0]);
    let out = s.tabula(&["roots", "show", "-9"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no retired root '-9'"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn pins_and_the_newest_are_protected() {
    let Some(s) = with_boots("pins_and_the_newest_are_protected", 3) else {
        return;
    };
    let names = retired(&s);
    s.tabula_ok(&["roots", "pin", "-3", "--note", "known good"]);
    let v = json(&s, &["roots", "list", "--json"]);
    assert_eq!(v["roots"][2]["pinned"], true);
    assert_eq!(v["roots"][2]["note"], "known good");
    assert_refused(&s.tabula(&["roots", "delete", "-3"]), "pinned");
    assert_refused(&s.tabula(&["roots", "delete", "-1"]), "newest");
    assert_eq!(retired(&s), names, "refusals deleted nothing");
    let out = s.tabula_ok(&["roots", "delete", "-2", "--dry-run"]);
    assert!(out.contains("would delete"), "{out}");
    assert_eq!(retired(&s), names);
    s.tabula_ok(&["roots", "delete", "-2"]);
    assert_eq!(retired(&s), [names[0].clone(), names[2].clone()]);
    assert!(
        !s.top.join(format!("old_roots/{}.json", names[1])).exists(),
        "metadata removed too"
    );
    s.tabula_ok(&["roots", "unpin", names[0].as_str()]);
    s.tabula_ok(&["roots", "delete", names[0].as_str()]);
    s.tabula_ok(&["roots", "delete", "-1", "--force"]);
    assert!(retired(&s).is_empty());
    assert!(s.top.join("root").exists() && s.top.join("root-blank").exists());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn deletion_traps() {
    let Some(s) = with_boots("deletion_traps", 0) else {
        return;
    };
    let root = s.top.join("root");
    // Boot 1's root holds nested subvolumes, one read-only, and 300 nested children.
    fs::create_dir_all(root.join("var/lib")).unwrap();
    let lib = open_dir(&root.join("var/lib"));
    btrfs::create_subvolume(lib.as_fd(), "machines").unwrap();
    let machines = open_dir(&root.join("var/lib/machines"));
    btrfs::create_subvolume(machines.as_fd(), "inner").unwrap();
    btrfs::snapshot(machines.as_fd(), lib.as_fd(), "ro-snap", true).unwrap();
    btrfs::create_subvolume(lib.as_fd(), "docker").unwrap();
    let docker = open_dir(&root.join("var/lib/docker"));
    for i in 0..300 {
        btrfs::create_subvolume(docker.as_fd(), &format!("layer{i}")).unwrap();
    }
    drop((lib, machines, docker));
    s.tabula_ok(&["rollback"]); // seq 1: the nested one
    for b in 2..=5 {
        fs::write(root.join(format!("boot-{b}")), "x").unwrap();
        s.tabula_ok(&["rollback"]);
    }
    let names = retired(&s);
    assert_eq!(names.len(), 5);
    let old = s.top.join("old_roots");

    // A subvolume placed in old_roots by hand, named like ours, without metadata.
    let old_fd = open_dir(&old);
    btrfs::create_subvolume(old_fd.as_fd(), "00000-2020-01-01T000000Z").unwrap();
    assert_refused(
        &s.tabula(&["roots", "delete", "00000-2020-01-01T000000Z", "--force"]),
        "no-metadata",
    );
    // Metadata that names another subvolume.
    let meta2 = old.join(format!("{}.json", names[1]));
    let saved = fs::read(&meta2).unwrap();
    let mut v: Value = serde_json::from_slice(&saved).unwrap();
    v["subvolume_id"] = 5.into();
    fs::write(&meta2, serde_json::to_vec(&v).unwrap()).unwrap();
    assert_refused(&s.tabula(&["roots", "delete", "2"]), "identity-mismatch");
    fs::write(&meta2, &saved).unwrap();
    // A retired root mounted somewhere (here: a directory inside it, bind-style).
    let mnt = s.dir.path().join("peek");
    fs::create_dir(&mnt).unwrap();
    let id3 = btrfs::subvolume_info(open_dir(&old.join(&names[2])).as_fd())
        .unwrap()
        .id;
    nix::mount::mount(
        Some(&s.dev.path),
        &mnt,
        Some("btrfs"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("subvolid={id3}").as_str()),
    )
    .unwrap();
    let peek = common::MountGuard {
        target: mnt.clone(),
    };
    assert_refused(&s.tabula(&["roots", "delete", "3"]), "mounted");
    // The default subvolume set to a retired root.
    common::run(
        std::process::Command::new("btrfs")
            .args(["subvolume", "set-default"])
            .arg(old.join(&names[3])),
    );
    assert_refused(&s.tabula(&["roots", "delete", "4"]), "default-subvolume");

    // Prune with keep_last = 1: only the nested root (seq 1) and root 2 may go.
    fs::write(
        &s.config,
        format!(
            "{}[retention]\nkeep_last = 1\n",
            fs::read_to_string(&s.config).unwrap()
        ),
    )
    .unwrap();
    let plan = json(&s, &["roots", "prune", "--dry-run", "--json"]);
    let held: Vec<(String, String)> = plan["plan"]["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                h["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        held.contains(&("00000-2020-01-01T000000Z".into(), "no-metadata".into())),
        "{held:?}"
    );
    assert!(
        held.contains(&(names[2].clone(), "mounted".into())),
        "{held:?}"
    );
    assert!(
        held.contains(&(names[3].clone(), "default-subvolume".into())),
        "{held:?}"
    );
    let to_delete: Vec<&str> = plan["plan"]["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(to_delete, [names[1].as_str(), names[0].as_str()]);
    for r in plan["plan"]["retention"]["roots"].as_array().unwrap() {
        assert!(
            !r["reasons"].as_array().unwrap().is_empty(),
            "every decision has a reason: {r}"
        );
    }
    let out = s.tabula_ok(&["roots", "prune"]);
    assert!(out.contains("2 deleted by policy"), "{out}");
    let left = retired(&s);
    assert_eq!(
        left,
        [
            "00000-2020-01-01T000000Z",
            names[2].as_str(),
            names[3].as_str(),
            names[4].as_str()
        ]
    );
    assert_eq!(ls(&mnt), ["boot-3", "etc"], "the mounted root is intact");
    // Applying the policy again deletes nothing more.
    let out = s.tabula_ok(&["roots", "prune"]);
    assert!(out.contains("0 deleted by policy"), "{out}");
    assert_eq!(retired(&s), left);
    drop(peek);
    // Nothing outside old_roots was touched.
    assert!(
        s.top.join("root").exists()
            && s.top.join("root-blank").exists()
            && s.top.join("persist").exists()
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn prune_dry_run_changes_nothing_and_explains() {
    let Some(s) = with_boots("prune_dry_run_changes_nothing_and_explains", 4) else {
        return;
    };
    fs::write(
        &s.config,
        format!(
            "{}[retention]\nkeep_last = 2\n",
            fs::read_to_string(&s.config).unwrap()
        ),
    )
    .unwrap();
    let before = retired(&s);
    let out = s.tabula_ok(&["roots", "prune", "--dry-run"]);
    assert_eq!(retired(&s), before);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("keep") && lines[0].contains(&before[3]),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("would delete"))
            .count()
            == 2,
        "{out}"
    );
    s.tabula_ok(&["roots", "prune"]);
    assert_eq!(retired(&s), before[2..]);
}

/// Prune deletes every planned root's subvolumes first, then their metadata, then commits once.
/// Interrupted between roots it leaves a deleted root's metadata behind (never a root without its
/// metadata), which no command counts as a root and the next prune removes.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn an_interrupted_prune_is_finished_by_the_next() {
    let test = "an_interrupted_prune_is_finished_by_the_next";
    let Some(s) = with_boots(test, 5) else {
        return;
    };
    fs::write(
        &s.config,
        format!(
            "{}[retention]\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n",
            fs::read_to_string(&s.config).unwrap()
        ),
    )
    .unwrap();
    let old = s.top.join("old_roots");
    let metadata = || -> Vec<String> {
        ls(&old)
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .filter(|n| tabula::layout::RetiredName::parse(n).is_some())
            .collect()
    };
    let before = retired(&s);
    assert_eq!(before.len(), 5);
    assert_eq!(metadata(), before);
    if !cfg!(feature = "fault-injection") {
        let msg = format!("{test}: build with --features fault-injection");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    }
    let out = common::tabula_cmd(&s.config)
        .env("TABULA_FAULT", "prune-after-root")
        .args(["roots", "prune"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault point aborts the prune");
    // One root's subvolumes are gone, every metadata file is still there.
    let left = retired(&s);
    assert_eq!(left.len(), 4, "{left:?}");
    assert_eq!(left.last(), before.last(), "the newest is kept");
    assert_eq!(metadata(), before, "metadata goes after every subvolume");
    // The leftover metadata is no root.
    let v = json(&s, &["roots", "list", "--json"]);
    assert_eq!(v["roots"].as_array().unwrap().len(), 4);
    let plan = json(&s, &["roots", "prune", "--dry-run", "--json"]);
    let gone: Vec<&String> = before.iter().filter(|n| !left.contains(n)).collect();
    assert_eq!(plan["plan"]["leftover_metadata"], serde_json::json!(gone));
    s.tabula_ok(&["roots", "prune"]);
    assert_eq!(retired(&s), before[4..]);
    assert_eq!(metadata(), before[4..], "the leftover metadata is removed");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn mount_and_umount() {
    let Some(s) = with_boots("mount_and_umount", 2) else {
        return;
    };
    let dir = s.dir.path().join("look");
    let out = s.tabula_ok(&["roots", "mount", "-1", dir.to_str().unwrap()]);
    assert!(out.contains("mounted read-only"), "{out}");
    assert_eq!(ls(&dir), ["boot-2", "etc"]);
    assert!(fs::write(dir.join("x"), "x").is_err(), "read-only");
    assert_refused(&s.tabula(&["roots", "delete", "-1"]), "newest");
    // Refuses to unmount what it did not mount.
    let other = s.dir.path().join("tmpfs");
    fs::create_dir(&other).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &other,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let _g = common::MountGuard {
        target: other.clone(),
    };
    assert_refused(
        &s.tabula(&["roots", "umount", other.to_str().unwrap()]),
        "not-a-retired-root-mount",
    );
    s.tabula_ok(&["roots", "umount", dir.to_str().unwrap()]);
    assert!(ls(&dir).is_empty());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn initrd_failure_policy() {
    let Some(s) = with_boots("initrd_failure_policy", 1) else {
        return;
    };
    fs::write(s.top.join("root/keep"), "k").unwrap();
    btrfs::set_read_only(open_dir(&s.top.join("root-blank")).as_fd(), false).unwrap();
    // continue (default): loud, exit 0, old root untouched.
    let out = s.tabula(&["rollback", "--initrd"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rollback FAILED: booting the old root as it is"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("blank-writable"), "{}", stderr(&out));
    assert!(Path::new(&s.top.join("root/keep")).exists());
    // emergency: non-zero.
    fs::write(
        &s.config,
        format!(
            "{}[boot]\non_failure = \"emergency\"\n",
            fs::read_to_string(&s.config).unwrap()
        ),
    )
    .unwrap();
    let out = s.tabula(&["rollback", "--initrd"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(retired(&s).len(), 1);
}

#[test]
fn completions_and_man_page() {
    // No root needed.
    let out = common::tabula_cmd(Path::new("/nonexistent"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("roots"));
    let out = common::tabula_cmd(Path::new("/nonexistent"))
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH"),
        "{}",
        &page[..100.min(page.len())]
    );
    assert!(page.contains("EXIT STATUS"));
    let out = common::tabula_cmd(Path::new("/nonexistent"))
        .args(["roots", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
