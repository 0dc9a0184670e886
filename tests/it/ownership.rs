//! Issue 9 (rules 1, 4, 6, 7) and issue 10 (items 2, 3) on real loop-mounted btrfs (needs root): tabula
//! completes, freezes, counts and deletes only what it can prove it retired; staging is reused only when it
//! is what this run would make; metadata is read defensively; the default subvolume follows `root`; every
//! failure says the state the machine is in.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Scratch, assert_refused, ls, open_dir, stderr};
use serde_json::Value;
use tabula::btrfs::{self, SubvolumeInfo};

/// A scratch fs with `root` (holding /etc) and `tabula init` done, and `boots` rollbacks, boot N writing
/// `boot-N` into the root it retires.
fn booted(test: &str, boots: usize) -> Option<Scratch> {
    let s = Scratch::new(test, 400)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    for b in 1..=boots {
        boot(&s, b);
    }
    Some(s)
}

/// One boot's writes and the next boot's rollback.
fn boot(s: &Scratch, b: usize) {
    fs::write(s.top.join(format!("root/boot-{b}")), "x").unwrap();
    s.tabula_ok(&["rollback"]);
}

fn fault_build(test: &str) -> bool {
    if cfg!(feature = "fault-injection") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: build with --features fault-injection"
    );
    false
}

fn info(p: &Path) -> SubvolumeInfo {
    btrfs::subvolume_info(open_dir(p).as_fd()).unwrap()
}

fn old(s: &Scratch, name: &str) -> std::path::PathBuf {
    s.top.join("old_roots").join(name)
}

/// Names in old_roots that parse as retired roots (managed or not), in sequence order.
fn names(s: &Scratch) -> Vec<String> {
    common::retired(s)
}

fn json(s: &Scratch, args: &[&str]) -> Value {
    serde_json::from_str(&s.tabula_ok(args)).unwrap()
}

fn with_env(s: &Scratch, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = common::tabula_cmd(&s.config);
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn set_retention(s: &Scratch, toml: &str) {
    let base = fs::read_to_string(&s.config).unwrap();
    let base = base.split("[retention]").next().unwrap().to_string();
    fs::write(&s.config, format!("{base}[retention]\n{toml}\n")).unwrap();
}

/// A hand-made subvolume in old_roots, holding one file.
fn hand_placed(s: &Scratch, name: &str) {
    btrfs::create_subvolume(open_dir(&s.top.join("old_roots")).as_fd(), name).unwrap();
    fs::write(old(s, name).join("mine"), "hands off").unwrap();
}

fn assert_untouched(s: &Scratch, name: &str) {
    let p = old(s, name);
    assert!(p.exists(), "{name} was deleted");
    assert!(!info(&p).read_only, "{name} was frozen");
    assert_eq!(fs::read_to_string(p.join("mine")).unwrap(), "hands off");
    assert!(
        !s.top.join(format!("old_roots/{name}.json")).exists(),
        "metadata written for {name}"
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn hand_placed_subvolumes_are_never_adopted_counted_or_deleted() {
    let Some(s) = booted("hand_placed_never_adopted", 2) else {
        return;
    };
    // Named like retired roots, one far ahead, one with a taken sequence number.
    hand_placed(&s, "99999-2030-01-01T000000Z");
    hand_placed(&s, "00002-1999-01-01T000000Z");
    boot(&s, 3);
    assert_untouched(&s, "99999-2030-01-01T000000Z");
    assert_untouched(&s, "00002-1999-01-01T000000Z");
    let now = names(&s);
    let ours: Vec<&String> = now.iter().filter(|n| n.starts_with("00003-")).collect();
    assert_eq!(
        ours.len(),
        1,
        "the sequence ignores hand-placed names: {now:?}"
    );
    let v = json(&s, &["roots", "list", "--json"]);
    let roots = v["roots"].as_array().unwrap();
    let managed: Vec<u64> = roots
        .iter()
        .filter(|r| r["managed"] == true)
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(managed, [3, 2, 1]);
    assert_eq!(roots.len(), 5, "unmanaged roots are listed");
    // `-1` is the newest managed root.
    let first = roots.iter().find(|r| r["ref"] == "-1").unwrap();
    assert_eq!(first["seq"], 3, "{v}");
    // prune with keep_last = 1 deletes our two older roots and nothing else.
    set_retention(&s, "keep_last = 1");
    s.tabula_ok(&["roots", "prune"]);
    assert_untouched(&s, "99999-2030-01-01T000000Z");
    assert_untouched(&s, "00002-1999-01-01T000000Z");
    let left = names(&s);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.iter().any(|n| n.starts_with("00003-")), "{left:?}");
    // delete refuses them by name, even with --force.
    for n in ["99999-2030-01-01T000000Z", "00002-1999-01-01T000000Z"] {
        let out = s.tabula(&["roots", "delete", "--force", n]);
        assert_refused(&out, "no-metadata");
        assert_untouched(&s, n);
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_subvolume_swapped_in_after_a_crash_is_not_completed() {
    let Some(s) = booted("swapped_in_after_crash", 1) else {
        return;
    };
    if !fault_build("swapped_in_after_crash") {
        return;
    }
    fs::write(s.top.join("root/boot-2"), "x").unwrap();
    let out = with_env(&s, &[("TABULA_FAULT", "after-retire")], &["rollback"]);
    assert!(!out.status.success());
    let crashed = names(&s).last().unwrap().clone();
    assert!(crashed.starts_with("00002-"), "{crashed}");
    // Between two runs someone swaps the retired root for a subvolume of their own under the same name.
    fs::rename(old(&s, &crashed), s.top.join("the-real-one")).unwrap();
    hand_placed(&s, &crashed);
    let out = s.tabula(&["rollback"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_untouched(&s, &crashed);
    assert!(
        stderr(&out).contains("not the root tabula retired"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ls(&s.top.join("root")),
        ["etc"],
        "a fresh root all the same"
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn prune_completes_a_retirement_left_without_metadata_only_when_the_intent_proves_it() {
    let Some(s) = booted("prune_completes", 1) else {
        return;
    };
    if !fault_build("prune_completes") {
        return;
    }
    fs::write(s.top.join("root/boot-2"), "x").unwrap();
    let out = with_env(&s, &[("TABULA_FAIL", "metadata")], &["rollback"]);
    assert!(!out.status.success());
    let second = names(&s).last().unwrap().clone();
    assert!(!s.top.join(format!("old_roots/{second}.json")).exists());
    hand_placed(&s, "00007-2020-01-01T000000Z");
    let out = s.tabula_ok(&["roots", "prune"]);
    let _ = out;
    let meta: Value =
        serde_json::from_slice(&fs::read(s.top.join(format!("old_roots/{second}.json"))).unwrap())
            .unwrap();
    assert_eq!(meta["uuid"], info(&old(&s, &second)).uuid);
    assert!(info(&old(&s, &second)).read_only, "completed and frozen");
    assert_untouched(&s, "00007-2020-01-01T000000Z");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn staging_from_an_interrupted_boot_of_an_old_root_is_not_promoted_as_fresh() {
    let Some(s) = booted("staging_reuse", 1) else {
        return;
    };
    if !fault_build("staging_reuse") {
        return;
    }
    for point in ["after-snapshot", "after-retire"] {
        fs::write(s.top.join("root/scratch"), point).unwrap();
        let out = with_env(
            &s,
            &[
                ("TABULA_FAULT", point),
                ("TABULA_TEST_CMDLINE", "tabula.boot=1"),
            ],
            &["rollback"],
        );
        assert!(!out.status.success(), "{point}: expected the abort");
        assert!(s.top.join("root.tabula-new").exists(), "{point}");
        // The next normal boot comes up on a fresh root, not on the old root's snapshot.
        let out = with_env(&s, &[("TABULA_TEST_CMDLINE", "quiet")], &["rollback"]);
        assert!(out.status.success(), "{point}: {}", stderr(&out));
        assert_eq!(ls(&s.top.join("root")), ["etc"], "{point}: fresh root");
        let blank = info(&s.top.join("root-blank")).uuid;
        assert_eq!(
            info(&s.top.join("root")).parent_uuid.as_deref(),
            Some(blank.as_str()),
            "{point}"
        );
        assert!(!s.top.join("root.tabula-new").exists(), "{point}");
        assert!(
            stderr(&out).contains("discarding 'root.tabula-new'"),
            "{point}: {}",
            stderr(&out)
        );
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn newest_and_minus_one_count_managed_roots_only() {
    let Some(s) = booted("newest_managed_only", 2) else {
        return;
    };
    // A stray directory, file and symlink named like newer roots.
    fs::create_dir(old(&s, "99997-2030-01-01T000000Z")).unwrap();
    fs::write(old(&s, "99998-2030-01-01T000000Z"), "f").unwrap();
    std::os::unix::fs::symlink("/", old(&s, "99999-2030-01-01T000000Z")).unwrap();
    let newest = names(&s)[1].clone();
    assert!(newest.starts_with("00002-"));
    // The newest guard still protects our newest root, by sequence and by -1.
    assert_refused(&s.tabula(&["roots", "delete", "2"]), "newest");
    assert_refused(&s.tabula(&["roots", "delete", "-1"]), "newest");
    // -2 is our older root.
    let out = s.tabula_ok(&["roots", "delete", "--dry-run", "-2"]);
    assert!(out.contains("00001-"), "{out}");
    assert!(old(&s, &newest).exists());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn sequence_numbers_never_go_back_and_never_wrap() {
    let Some(s) = booted("sequence_high_water", 3) else {
        return;
    };
    // Deleting the newest root does not free its number.
    s.tabula_ok(&["roots", "delete", "--force", "-1"]);
    assert!(names(&s).last().unwrap().starts_with("00002-"));
    boot(&s, 4);
    assert!(
        names(&s).last().unwrap().starts_with("00004-"),
        "{:?}",
        names(&s)
    );
    // A managed root at the top of the range: refused, never wrapped.
    let last = names(&s).last().unwrap().clone();
    let top = format!("{}-2030-01-01T000000Z", u64::MAX);
    fs::rename(old(&s, &last), old(&s, &top)).unwrap();
    let mut meta: Value =
        serde_json::from_slice(&fs::read(s.top.join(format!("old_roots/{last}.json"))).unwrap())
            .unwrap();
    meta["name"] = top.clone().into();
    meta["seq"] = u64::MAX.into();
    fs::write(
        s.top.join(format!("old_roots/{top}.json")),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    fs::remove_file(s.top.join(format!("old_roots/{last}.json"))).unwrap();
    fs::write(s.top.join("root/boot-5"), "x").unwrap();
    let out = s.tabula(&["rollback"]);
    assert_refused(&out, "sequence-exhausted");
    assert!(s.top.join("root/boot-5").exists(), "root untouched");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_fifo_for_metadata_does_not_hang_and_corrupt_metadata_is_never_overwritten() {
    let Some(s) = booted("defensive_metadata", 2) else {
        return;
    };
    let n = names(&s);
    // Corrupt metadata on the newest root, which is also left writable (as by a crash before the freeze).
    let newest_meta = s.top.join(format!("old_roots/{}.json", n[1]));
    fs::write(&newest_meta, "{\"pinned\": true, \"note\": \"keep me\"").unwrap();
    btrfs::set_read_only(open_dir(&old(&s, &n[1])).as_fd(), false).unwrap();
    // A FIFO in place of the older root's metadata.
    let fifo = s.top.join(format!("old_roots/{}.json", n[0]));
    fs::remove_file(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fs::write(s.top.join("root/boot-3"), "x").unwrap();
    for args in [
        &["rollback"][..],
        &["roots", "list", "--json"],
        &["roots", "prune", "--dry-run"],
    ] {
        let mut child = common::tabula_cmd(&s.config)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tabula {args:?} hangs on a FIFO");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        fs::read_to_string(&newest_meta).unwrap(),
        "{\"pinned\": true, \"note\": \"keep me\"",
        "unparseable metadata is never overwritten"
    );
    assert!(!info(&old(&s, &n[1])).read_only, "nor frozen");
    let v = json(&s, &["roots", "list", "--json"]);
    let roots = v["roots"].as_array().unwrap();
    let row = roots.iter().find(|r| r["name"] == n[1].as_str()).unwrap();
    assert_eq!(row["managed"], false);
    assert!(
        row["problem"]
            .as_str()
            .unwrap()
            .contains("parsing metadata"),
        "{row}"
    );
    let row = roots.iter().find(|r| r["name"] == n[0].as_str()).unwrap();
    assert!(
        row["problem"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{row}"
    );
    // The rollback that ran still made a fresh root and counted past the protected root.
    assert_eq!(ls(&s.top.join("root")), ["etc"]);
    assert!(names(&s).last().unwrap().starts_with("00003-"));
}

fn default_id(s: &Scratch) -> u64 {
    btrfs::default_subvolume_id(s.top_fd().as_fd()).unwrap()
}

fn set_default(s: &Scratch, id: u64) {
    common::run(
        std::process::Command::new("btrfs")
            .args(["subvolume", "set-default", &id.to_string()])
            .arg(&s.top),
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn the_default_subvolume_follows_root() {
    let Some(s) = booted("default_follows_root", 0) else {
        return;
    };
    set_default(&s, info(&s.top.join("root")).id);
    for b in 1..=2 {
        boot(&s, b);
        assert_eq!(default_id(&s), info(&s.top.join("root")).id, "boot {b}");
        assert!(!info(&s.top.join("root")).read_only);
    }
    let st = s.tabula_ok(&["status", "--json"]);
    let v: Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["default_subvolume"]["name"], "root", "{v}");
    assert!(v["default_subvolume"]["warning"].is_null(), "{v}");
    let out = s.tabula(&["check"]);
    assert!(
        stderr(&out).contains("the default subvolume is root (subvolume"),
        "{}",
        stderr(&out)
    );
    // A default that is something else is left alone.
    set_default(&s, 5);
    boot(&s, 3);
    assert_eq!(default_id(&s), 5);
    let out = s.tabula(&["check"]);
    assert!(
        stderr(&out).contains(
            "warning: booting without subvol= (no rootflags=subvol=root) lands on 'top level'"
        ),
        "{}",
        stderr(&out)
    );
    let out = s.tabula(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("default subvolume: top level"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("without subvol="),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn the_default_subvolume_is_bootable_and_writable_after_a_cut_at_any_step() {
    let Some(probe) = Scratch::new("default_power_cut", 128) else {
        return;
    };
    drop(probe);
    if !fault_build("default_power_cut") {
        return;
    }
    let out = common::tabula_cmd(Path::new("/nonexistent"))
        .args(["rollback", "--list-fault-points"])
        .output()
        .unwrap();
    let points: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        points.iter().any(|p| p == "after-set-default"),
        "{points:?}"
    );
    for point in &points {
        let s = booted(&format!("default cut {point}"), 0).unwrap();
        set_default(&s, info(&s.top.join("root")).id);
        boot(&s, 1);
        fs::write(s.top.join("root/boot-2"), "x").unwrap();
        let out = with_env(&s, &[("TABULA_FAULT", point)], &["rollback"]);
        assert!(!out.status.success(), "{point}");
        let id = default_id(&s);
        let d = btrfs::subvolume_info(
            tabula::fsx::open_dir_beneath(s.top_fd().as_fd(), &default_path(&s, id))
                .unwrap()
                .as_fd(),
        )
        .unwrap();
        assert!(!d.read_only, "{point}: default {id} is read-only");
        s.tabula_ok(&["rollback"]);
        assert_eq!(
            default_id(&s),
            info(&s.top.join("root")).id,
            "{point}: finished"
        );
        assert_eq!(ls(&s.top.join("root")), ["etc"], "{point}");
    }
}

/// The path of subvolume `id` below the top level, by walking child subvolumes.
fn default_path(s: &Scratch, id: u64) -> std::path::PathBuf {
    fn walk(dir: &Path, rel: &Path, id: u64) -> Option<std::path::PathBuf> {
        for c in btrfs::child_subvolumes(open_dir(dir).as_fd()).unwrap() {
            let p = rel.join(&c.path);
            if c.id == id {
                return Some(p);
            }
            if let Some(x) = walk(&dir.join(&c.path), &p, id) {
                return Some(x);
            }
        }
        None
    }
    walk(&s.top, Path::new(""), id).unwrap_or_else(|| panic!("subvolume {id} not found"))
}

/// Every failing step, in the initrd, with both policies: the log says the state the machine is in, and
/// `emergency` stops only a boot that has no fresh root.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn failure_messages_tell_the_truth() {
    let Some(s) = booted("failure_messages", 1) else {
        return;
    };
    if !fault_build("failure_messages") {
        return;
    }
    // (step, a fresh root is in place afterwards, what the log must say with "continue", with "emergency")
    let back = "rollback FAILED: booting the old root as it is (on_failure = \"continue\")";
    let stop = "rollback FAILED: the old root is in place, untouched: stopping the boot (on_failure = \"emergency\")";
    let fresh = "rollback incomplete: a fresh root is in place: booting it";
    let cases: &[(&str, bool, &str, &str)] = &[
        ("snapshot", false, back, stop),
        ("intent", false, back, stop),
        ("retire", false, back, stop),
        (
            "promote",
            false,
            "rollback FAILED: the old root is back in place: booting it as it is (on_failure = \"continue\")",
            "rollback FAILED: the old root is back in place: stopping the boot (on_failure = \"emergency\")",
        ),
        (
            "set-default",
            true,
            "the default subvolume is still the old root: a boot without subvol= lands on the old root as it is; booting",
            "the default subvolume is still the old root: a boot without subvol= lands on the old root as it is; stopping the boot",
        ),
        ("metadata", true, fresh, fresh),
        ("freeze", true, fresh, fresh),
        ("sync", true, fresh, fresh),
    ];
    set_default(&s, info(&s.top.join("root")).id);
    let base = fs::read_to_string(&s.config).unwrap();
    for policy in ["continue", "emergency"] {
        fs::write(
            &s.config,
            format!("{base}[boot]\non_failure = \"{policy}\"\n"),
        )
        .unwrap();
        for (step, fresh, on_continue, on_emergency) in cases {
            let says = if policy == "continue" {
                on_continue
            } else {
                on_emergency
            };
            let before = names(&s);
            fs::write(s.top.join("root/marker"), step).unwrap();
            let out = with_env(&s, &[("TABULA_FAIL", step)], &["rollback", "--initrd"]);
            let err = stderr(&out);
            assert!(err.contains(says), "{policy} {step}: {err}");
            assert!(
                err.contains(&format!("step {step} fails")),
                "{policy} {step}: {err}"
            );
            let stops = policy == "emergency" && (!fresh || *step == "set-default");
            assert_eq!(
                out.status.code() != Some(0),
                stops,
                "{policy} {step}: exit {:?}: {err}",
                out.status.code()
            );
            if *fresh {
                assert_eq!(ls(&s.top.join("root")), ["etc"], "{policy} {step}");
                assert!(
                    !err.contains("booting the old root"),
                    "{policy} {step}: {err}"
                );
                assert!(
                    err.contains("the next rollback or prune completes"),
                    "{policy} {step}: {err}"
                );
                // The next run completes the retirement.
                s.tabula_ok(&["rollback"]);
                let last = names(&s).last().unwrap().clone();
                assert!(
                    s.top.join(format!("old_roots/{last}.json")).exists(),
                    "{policy} {step}"
                );
                assert!(info(&old(&s, &last)).read_only, "{policy} {step}");
            } else {
                assert_eq!(
                    fs::read_to_string(s.top.join("root/marker")).unwrap(),
                    *step,
                    "{policy} {step}: old root in place"
                );
                assert_eq!(names(&s), before, "{policy} {step}: nothing retired");
                assert!(
                    !err.contains("fresh root is in place"),
                    "{policy} {step}: {err}"
                );
            }
        }
    }
}

/// A refusal when there is no `root` at all says so, and stops the boot whatever the policy; a failure
/// discarding a leftover staging root leaves the old root untouched.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn no_root_and_discard_failures_are_reported_as_they_are() {
    let Some(s) = booted("no_root_reported", 1) else {
        return;
    };
    if !fault_build("no_root_reported") {
        return;
    }
    // A leftover staging root from a tabula.boot= run, and discarding it fails.
    fs::write(s.top.join("root/marker"), "m").unwrap();
    let out = with_env(
        &s,
        &[
            ("TABULA_FAULT", "after-snapshot"),
            ("TABULA_TEST_CMDLINE", "tabula.boot=1"),
        ],
        &["rollback"],
    );
    assert!(!out.status.success());
    let out = with_env(
        &s,
        &[("TABULA_FAIL", "discard-staging")],
        &["rollback", "--initrd"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rollback FAILED: booting the old root as it is"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(s.top.join("root/marker")).unwrap(), "m");
    // No root and no blank: nothing to boot, and the log says so.
    let top = s.top_fd();
    btrfs::delete_subvolume(top.as_fd(), "root.tabula-new").unwrap();
    btrfs::delete_subvolume(top.as_fd(), "root").unwrap();
    btrfs::set_read_only(open_dir(&s.top.join("root-blank")).as_fd(), false).unwrap();
    btrfs::delete_subvolume(top.as_fd(), "root-blank").unwrap();
    let out = s.tabula(&["rollback", "--initrd"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("there is NO root to boot"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("booting the old root"),
        "{}",
        stderr(&out)
    );
}

/// A retirement left unfinished whose root is mounted (a system that came up on it through the default
/// subvolume): prune writes its metadata but never freezes it under running programs.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn prune_never_freezes_a_mounted_unfinished_retirement() {
    let Some(s) = booted("prune_mounted_unfinished", 1) else {
        return;
    };
    if !fault_build("prune_mounted_unfinished") {
        return;
    }
    fs::write(s.top.join("root/boot-2"), "x").unwrap();
    let out = with_env(&s, &[("TABULA_FAIL", "metadata")], &["rollback"]);
    assert!(!out.status.success());
    let second = names(&s).last().unwrap().clone();
    let target = s.dir.path().join("running");
    fs::create_dir(&target).unwrap();
    nix::mount::mount(
        Some(&s.dev.path),
        &target,
        Some("btrfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("subvolid={}", info(&old(&s, &second)).id).as_str()),
    )
    .unwrap();
    let _g = common::MountGuard { target };
    let out = s.tabula(&["roots", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        s.top.join(format!("old_roots/{second}.json")).exists(),
        "metadata written"
    );
    assert!(
        !info(&old(&s, &second)).read_only,
        "never frozen while mounted"
    );
    assert!(
        stderr(&out).contains("is mounted: only its metadata"),
        "{}",
        stderr(&out)
    );
}

/// Metadata that is a symlink or far too big is never followed, read whole, or replaced.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn symlinked_or_huge_metadata_is_refused_and_kept() {
    let Some(s) = booted("symlinked_metadata", 2) else {
        return;
    };
    let n = names(&s);
    let link = s.top.join(format!("old_roots/{}.json", n[1]));
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    let huge = s.top.join(format!("old_roots/{}.json", n[0]));
    let mut big = fs::read(&huge).unwrap();
    big.resize(1 << 20, b' ');
    fs::write(&huge, &big).unwrap();
    boot(&s, 3);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced"
    );
    assert_eq!(fs::read(&huge).unwrap().len(), 1 << 20);
    let v = json(&s, &["roots", "list", "--json"]);
    let roots = v["roots"].as_array().unwrap();
    let problem = |name: &str| {
        let r = roots.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(r["managed"], false, "{r}");
        r["problem"].as_str().unwrap().to_string()
    };
    assert!(problem(&n[1]).contains("is a symlink"), "{v}");
    assert!(problem(&n[0]).contains("more than metadata ever is"), "{v}");
}
