//! `tabula init` and `tabula rollback` on real loop-mounted btrfs images (needs root).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use common::{Scratch, assert_refused, ls, open_dir, retired, stderr};
use tabula::btrfs;
use tabula::layout::RootMeta;

/// A scratch fs with `root` (holding /etc/os-release) and `tabula init` done.
fn initialised(test: &str) -> Option<Scratch> {
    let s = Scratch::new(test, 300)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    fs::write(s.top.join("root/etc/os-release"), "ID=test\n").unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    Some(s)
}

fn meta(s: &Scratch, name: &str) -> RootMeta {
    serde_json::from_slice(&fs::read(s.top.join(format!("old_roots/{name}.json"))).unwrap())
        .unwrap()
}

fn is_ro(path: &Path) -> bool {
    btrfs::is_read_only(open_dir(path).as_fd()).unwrap()
}

/// Everything a whole layout must satisfy, whatever happened before.
fn assert_whole(s: &Scratch, expect_retired: &[String]) {
    let top = s.top_fd();
    assert!(
        btrfs::is_subvolume_at(top.as_fd(), "root").unwrap(),
        "no root subvolume"
    );
    assert!(
        is_ro(&s.top.join("root-blank")),
        "blank must stay read-only"
    );
    assert_eq!(ls(&s.top.join("root-blank")), ["etc"], "blank untouched");
    let now = retired(s);
    for name in expect_retired {
        assert!(now.contains(name), "retired root {name} lost: {now:?}");
    }
    for name in &now {
        assert!(
            is_ro(&s.top.join("old_roots").join(name)),
            "{name} not frozen"
        );
        let m = meta(s, name);
        assert_eq!(&m.name, name);
        let info =
            btrfs::subvolume_info(open_dir(&s.top.join("old_roots").join(name)).as_fd()).unwrap();
        assert_eq!(
            (m.subvolume_id, m.uuid.as_str()),
            (info.id, info.uuid.as_str()),
            "metadata identity of {name}"
        );
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn three_rollbacks_in_a_row() {
    let Some(s) = initialised("three_rollbacks_in_a_row") else {
        return;
    };
    let blank_uuid = btrfs::subvolume_info(open_dir(&s.top.join("root-blank")).as_fd())
        .unwrap()
        .uuid;
    let mut uuids = Vec::new();
    for boot in 1..=3 {
        fs::write(
            s.top.join(format!("root/written-in-boot-{boot}")),
            format!("boot {boot}"),
        )
        .unwrap();
        uuids.push(
            btrfs::subvolume_info(open_dir(&s.top.join("root")).as_fd())
                .unwrap()
                .uuid,
        );
        let out = s.tabula_ok(&["rollback"]);
        assert!(out.contains("retired 'root' as 'old_roots/0000"), "{out}");
        // The live root equals the blank: same content, and it is a fresh snapshot of it.
        assert_eq!(ls(&s.top.join("root")), ["etc"]);
        let root = btrfs::subvolume_info(open_dir(&s.top.join("root")).as_fd()).unwrap();
        assert_eq!(root.parent_uuid.as_deref(), Some(blank_uuid.as_str()));
        assert!(!root.read_only);
    }
    let names = retired(&s);
    assert_eq!(names.len(), 3, "{names:?}");
    for (i, name) in names.iter().enumerate() {
        let seq = i as u64 + 1;
        assert!(name.starts_with(&format!("{seq:05}-")), "{name}");
        let m = meta(&s, name);
        assert_eq!(m.seq, seq);
        assert_eq!(
            m.uuid, uuids[i],
            "retired root {name} is the root of boot {seq}"
        );
        assert!(m.clock_trusted && !m.pinned);
        assert!(m.booted_at.is_some() && m.booted_at.unwrap() <= m.retired_at);
        assert!(
            m.retired_by.kernel.is_some()
                && m.retired_by.boot_id.is_some()
                && m.retired_by.new_root_uuid.is_some()
        );
        // Boot 1's root was made by `init`'s caller, not by tabula: its boot is unknown. Later roots were
        // created by the previous rollback, which recorded the boot.
        if seq > 1 {
            assert_eq!(m.boot_id, meta(&s, &names[i - 1]).retired_by.boot_id);
            assert_eq!(
                meta(&s, &names[i - 1]).retired_by.new_root_uuid.as_deref(),
                Some(m.uuid.as_str())
            );
        } else {
            assert_eq!(m.boot_id, None);
        }
        let dir = s.top.join("old_roots").join(name);
        assert_eq!(
            fs::read_to_string(dir.join(format!("written-in-boot-{seq}"))).unwrap(),
            format!("boot {seq}")
        );
        assert_eq!(
            ls(&dir).len(),
            2,
            "only that boot's write and etc in {name}"
        );
    }
    assert_whole(&s, &names);
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn rerun_without_writes_changes_nothing() {
    let Some(s) = initialised("rerun_without_writes_changes_nothing") else {
        return;
    };
    fs::write(s.top.join("root/x"), "x").unwrap();
    s.tabula_ok(&["rollback"]);
    let before = subvolumes(&s);
    let out = s.tabula_ok(&["rollback"]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(subvolumes(&s), before);
}

/// All subvolumes below the top level, as (id, path).
fn subvolumes(s: &Scratch) -> Vec<(u64, String)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(u64, String)>) {
        for c in btrfs::child_subvolumes(open_dir(dir).as_fd()).unwrap() {
            let path = format!("{prefix}{}", c.path.display());
            walk(&dir.join(&c.path), &format!("{path}/"), out);
            out.push((c.id, path));
        }
    }
    let mut out = Vec::new();
    walk(&s.top, "", &mut out);
    out.sort();
    out
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn nested_subvolumes_travel_with_the_root() {
    let Some(s) = initialised("nested_subvolumes_travel_with_the_root") else {
        return;
    };
    fs::create_dir_all(s.top.join("root/var/lib")).unwrap();
    let lib = open_dir(&s.top.join("root/var/lib"));
    btrfs::create_subvolume(lib.as_fd(), "machines").unwrap();
    fs::write(s.top.join("root/var/lib/machines/state"), "m").unwrap();
    let machines = open_dir(&s.top.join("root/var/lib/machines"));
    btrfs::snapshot(machines.as_fd(), lib.as_fd(), "portables", true).unwrap();
    drop((lib, machines));
    s.tabula_ok(&["rollback"]);
    let name = &retired(&s)[0];
    let base = s.top.join("old_roots").join(name).join("var/lib");
    assert_eq!(
        fs::read_to_string(base.join("machines/state")).unwrap(),
        "m"
    );
    assert!(btrfs::is_subvolume_at(open_dir(&base).as_fd(), "machines").unwrap());
    assert!(
        is_ro(&base.join("portables")),
        "read-only nested snapshot kept read-only"
    );
    assert_eq!(
        fs::read_to_string(base.join("portables/state")).unwrap(),
        "m"
    );
    assert!(
        !s.top.join("root/var").exists(),
        "fresh root has none of it"
    );
    assert_whole(&s, std::slice::from_ref(name));
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn every_fault_point_is_recoverable() {
    let Some(probe) = Scratch::new("every_fault_point_is_recoverable", 128) else {
        return;
    };
    drop(probe);
    if !cfg!(feature = "fault-injection") {
        let msg = "every_fault_point_is_recoverable: build with --features fault-injection";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped: {msg}");
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
    assert!(points.len() >= 6, "{points:?}");
    for point in &points {
        let s = initialised(&format!("fault point {point}")).unwrap();
        // `root` is the default subvolume, so that every step (moving the default too) is reached.
        let root_id = btrfs::subvolume_info(open_dir(&s.top.join("root")).as_fd())
            .unwrap()
            .id;
        common::run(
            std::process::Command::new("btrfs")
                .args(["subvolume", "set-default", &root_id.to_string()])
                .arg(&s.top),
        );
        fs::write(s.top.join("root/boot1"), "1").unwrap();
        s.tabula_ok(&["rollback"]);
        let first = retired(&s);
        fs::write(s.top.join("root/boot2"), "2").unwrap();
        let crashed = common::tabula_cmd(&s.config)
            .env("TABULA_FAULT", point)
            .arg("rollback")
            .output()
            .unwrap();
        assert!(!crashed.status.success(), "{point}: expected an abort");
        assert!(
            stderr(&crashed).contains(&format!("aborting at {point}")),
            "{point}: {}",
            stderr(&crashed)
        );
        // The next boot's rollback finishes the job.
        let out = s.tabula_ok(&["rollback"]);
        let now = retired(&s);
        assert_eq!(now.len(), 2, "{point}: {now:?} ({out})");
        assert_whole(&s, &first);
        let second = &now[1];
        assert_eq!(
            fs::read_to_string(s.top.join("old_roots").join(second).join("boot2")).unwrap(),
            "2",
            "{point}"
        );
        assert_eq!(ls(&s.top.join("root")), ["etc"], "{point}: fresh root");
        assert!(
            !s.top.join("root.tabula-new").exists(),
            "{point}: staging left behind"
        );
        assert!(
            !ls(&s.top.join("old_roots"))
                .iter()
                .any(|n| n.ends_with(".tmp")),
            "{point}: temp file left"
        );
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn failures_leave_a_bootable_root() {
    let Some(s) = initialised("failures_leave_a_bootable_root") else {
        return;
    };
    if !cfg!(feature = "fault-injection") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "build with --features fault-injection"
        );
        return;
    }
    fs::write(s.top.join("root/precious"), "p").unwrap();
    for step in ["snapshot", "promote"] {
        let out = common::tabula_cmd(&s.config)
            .env("TABULA_FAIL", step)
            .arg("rollback")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{step}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("rolling back the root"),
            "{step}: {}",
            stderr(&out)
        );
        assert_eq!(
            fs::read_to_string(s.top.join("root/precious")).unwrap(),
            "p",
            "{step}: old root in place"
        );
        assert!(retired(&s).is_empty(), "{step}: nothing retired");
    }
    // The staging left by the failed promotion is reused by the next good run.
    s.tabula_ok(&["rollback"]);
    assert_eq!(retired(&s).len(), 1);
    assert!(!s.top.join("root.tabula-new").exists());
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn refusals_leave_the_root_untouched() {
    let Some(s) = initialised("refusals_leave_the_root_untouched") else {
        return;
    };
    fs::write(s.top.join("root/keep"), "k").unwrap();
    let top = s.top_fd();

    // Blank writable.
    btrfs::set_read_only(open_dir(&s.top.join("root-blank")).as_fd(), false).unwrap();
    assert_refused(&s.tabula(&["rollback"]), "blank-writable");
    // Blank missing.
    fs::rename(s.top.join("root-blank"), s.top.join("elsewhere")).unwrap();
    assert_refused(&s.tabula(&["rollback"]), "blank-missing");
    fs::rename(s.top.join("elsewhere"), s.top.join("root-blank")).unwrap();
    btrfs::set_read_only(open_dir(&s.top.join("root-blank")).as_fd(), true).unwrap();
    // old_roots a plain directory.
    fs::rename(s.top.join("old_roots"), s.top.join("old_roots.real")).unwrap();
    fs::create_dir(s.top.join("old_roots")).unwrap();
    assert_refused(&s.tabula(&["rollback"]), "old-roots-not-subvolume");
    fs::remove_dir(s.top.join("old_roots")).unwrap();
    assert_refused(&s.tabula(&["rollback"]), "old-roots-missing");
    fs::rename(s.top.join("old_roots.real"), s.top.join("old_roots")).unwrap();

    assert_eq!(fs::read_to_string(s.top.join("root/keep")).unwrap(), "k");
    assert!(retired(&s).is_empty());
    drop(top);
    s.tabula_ok(&["rollback"]);
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn not_btrfs_is_refused() {
    let Some(s) = Scratch::new("not_btrfs_is_refused", 128) else {
        return;
    };
    let zero = s.dir.path().join("zero.img");
    fs::File::create(&zero).unwrap().set_len(32 << 20).unwrap();
    let dev = common::LoopDevice::attach(&zero);
    let cfg = s.dir.path().join("zero.toml");
    fs::write(
        &cfg,
        format!("[layout]\ndevice = \"{}\"\n", dev.path.display()),
    )
    .unwrap();
    let out = common::tabula_cmd(&cfg).arg("rollback").output().unwrap();
    assert_refused(&out, "not-btrfs");
}

#[test]
fn config_errors_and_missing_devices() {
    // No root needed: these fail before any disk is touched.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    fs::write(
        &cfg,
        "[layout]\ndevice = \"/dev/x\"\n\n  colour = \"red\"\n",
    )
    .unwrap();
    let out = common::tabula_cmd(&cfg).arg("rollback").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}:4:3:", cfg.display())),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));

    fs::write(
        &cfg,
        "[layout]\ndevice = \"/dev/tabula-never-appears\"\ndevice_timeout = \"300ms\"\n",
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = common::tabula_cmd(&cfg).arg("rollback").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not appear within 300ms"),
        "{}",
        stderr(&out)
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "bounded wait"
    );

    fs::write(
        &cfg,
        "[layout]\ndevice = \"LABEL=tabula-no-such-label\"\ndevice_timeout = \"200ms\"\n",
    )
    .unwrap();
    let out = common::tabula_cmd(&cfg).arg("rollback").output().unwrap();
    assert!(
        stderr(&out).contains("LABEL=tabula-no-such-label did not appear"),
        "{}",
        stderr(&out)
    );

    let out = common::tabula_cmd(&dir.path().join("missing.toml"))
        .arg("rollback")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing.toml") && stderr(&out).contains("--config"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn device_found_by_label_and_uuid() {
    let Some(s) = Scratch::new("device_found_by_label_and_uuid", 300) else {
        return;
    };
    common::run(
        std::process::Command::new("btrfs")
            .args(["filesystem", "label"])
            .arg(&s.top)
            .arg("tabula-test-label"),
    );
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    let cfg = s.dir.path().join("label.toml");
    fs::write(
        &cfg,
        "[layout]\ndevice = \"LABEL=tabula-test-label\"\ndevice_timeout = \"5s\"\n",
    )
    .unwrap();
    let out = common::tabula_cmd(&cfg)
        .args(["init", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["device"], s.dev.path.display().to_string());
    let uuid = tabula::device::read_superblock(&s.dev.path)
        .unwrap()
        .unwrap()
        .fsid;
    fs::write(
        &cfg,
        format!("[layout]\ndevice = \"UUID={}\"\n", uuid.to_uppercase()),
    )
    .unwrap();
    let out = common::tabula_cmd(&cfg)
        .args(["rollback", "--dry-run", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn clock_in_1970_and_same_second_names_stay_ordered() {
    let Some(s) = initialised("clock_in_1970_and_same_second_names_stay_ordered") else {
        return;
    };
    if !cfg!(feature = "fault-injection") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "build with --features fault-injection"
        );
        return;
    }
    let at = |now: &str, file: &str| {
        fs::write(s.top.join("root").join(file), file).unwrap();
        let out = common::tabula_cmd(&s.config)
            .env("TABULA_TEST_NOW", now)
            .arg("rollback")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    at("2026-03-01T10:00:00Z", "a");
    at("1970-01-01T00:00:07Z", "b");
    at("1970-01-01T00:00:07Z", "c");
    at("2026-03-01T09:00:00Z", "d");
    let names = retired(&s);
    assert_eq!(
        names,
        [
            "00001-2026-03-01T100000Z",
            "00002-1970-01-01T000007Z",
            "00003-1970-01-01T000007Z",
            "00004-2026-03-01T090000Z"
        ]
    );
    let trusted: Vec<bool> = names.iter().map(|n| meta(&s, n).clock_trusted).collect();
    assert_eq!(
        trusted,
        [true, false, false, true],
        "1970 is not trusted; whether a clock behind an earlier one is in step is retention's call"
    );
    for (n, f) in names.iter().zip(["a", "b", "c", "d"]) {
        assert!(
            s.top.join("old_roots").join(n).join(f).exists(),
            "{n} holds {f}"
        );
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn dry_run_changes_nothing() {
    let Some(s) = initialised("dry_run_changes_nothing") else {
        return;
    };
    fs::write(s.top.join("root/x"), "x").unwrap();
    s.tabula_ok(&["rollback"]);
    fs::write(s.top.join("root/y"), "y").unwrap();
    let before = (
        subvolumes(&s),
        ls(&s.top.join("old_roots")),
        ls(&s.top.join("root")),
    );
    let out = s.tabula_ok(&["rollback", "--dry-run"]);
    assert!(
        out.contains("would: move 'root' to 'old_roots/00002-"),
        "{out}"
    );
    let json = s.tabula_ok(&["rollback", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["plan"]["actions"][1]["action"], "record_intent");
    assert_eq!(v["plan"]["actions"][2]["action"], "retire");
    let out = s.tabula_ok(&["init", "--dry-run"]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(
        (
            subvolumes(&s),
            ls(&s.top.join("old_roots")),
            ls(&s.top.join("root"))
        ),
        before
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn init_never_overwrites_and_needs_a_root() {
    let Some(s) = Scratch::new("init_never_overwrites_and_needs_a_root", 300) else {
        return;
    };
    let out = s.tabula(&["init"]);
    assert_refused(&out, "root-missing");
    let top = s.top_fd();
    btrfs::create_subvolume(top.as_fd(), "root").unwrap();
    btrfs::create_subvolume(top.as_fd(), "persist").unwrap();
    fs::write(s.top.join("persist/data"), "d").unwrap();
    let out = s.tabula_ok(&["init"]);
    assert!(out.contains("'persist' exists: kept"), "{out}");
    assert!(
        out.contains("did: create 'root-blank': empty, read-only blank"),
        "{out}"
    );
    assert_eq!(fs::read_to_string(s.top.join("persist/data")).unwrap(), "d");
    assert!(is_ro(&s.top.join("root-blank")));
    assert_eq!(
        ls(&s.top.join("root-blank")),
        ["persist"],
        "empty but for the mount point of persistent storage"
    );
    let out = s.tabula_ok(&["init"]);
    assert!(out.contains("nothing to do"), "{out}");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn lock_held_is_its_own_exit_status() {
    let Some(s) = initialised("lock_held_is_its_own_exit_status") else {
        return;
    };
    let top = s.top_fd();
    let _held = nix::fcntl::Flock::lock(top, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let out = common::tabula_cmd(&s.config)
        .args(["--lock-wait", "200ms", "rollback"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another tabula process holds the lock"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn kernel_command_line_skip_and_boot() {
    let Some(s) = initialised("kernel_command_line_skip_and_boot") else {
        return;
    };
    if !cfg!(feature = "fault-injection") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "build with --features fault-injection"
        );
        return;
    }
    let with_cmdline = |cmdline: &str| {
        let out = common::tabula_cmd(&s.config)
            .env("TABULA_TEST_CMDLINE", cmdline)
            .arg("rollback")
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmdline}: {}", stderr(&out));
    };
    fs::write(s.top.join("root/one"), "1").unwrap();
    with_cmdline("quiet tabula.skip");
    assert!(
        s.top.join("root/one").exists() && retired(&s).is_empty(),
        "skip: nothing happens"
    );
    with_cmdline("quiet");
    let first = retired(&s)[0].clone();
    // Boot last boot's root once, as a writable snapshot: the retired root stays as it was.
    fs::write(s.top.join("root/two"), "2").unwrap();
    with_cmdline("tabula.boot=-1");
    assert_eq!(ls(&s.top.join("root")), ["etc", "one"]);
    fs::write(s.top.join("root/three"), "3").unwrap();
    assert_eq!(
        ls(&s.top.join("old_roots").join(&first)),
        ["etc", "one"],
        "retired root intact"
    );
    // And the boot after that is a normal one again.
    with_cmdline("quiet");
    assert_eq!(ls(&s.top.join("root")), ["etc"]);
    assert_eq!(retired(&s).len(), 3);
    let out = common::tabula_cmd(&s.config)
        .env("TABULA_TEST_CMDLINE", "tabula.boot=99")
        .arg("rollback")
        .output()
        .unwrap();
    assert_refused(&out, "boot-root-not-found");
}

/// The rollback reads the retirement intent and the last root instead of listing `old_roots` (O(1) in
/// retired roots); it must plan exactly what the full listing plans, taken names and strays included.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn the_o1_observation_plans_what_the_listing_plans() {
    use tabula::rollback::{self, BootContext};
    let Some(s) = initialised("the_o1_observation_plans_what_the_listing_plans") else {
        return;
    };
    if !cfg!(feature = "fault-injection") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "build with --features fault-injection"
        );
        return;
    }
    let now = "2026-03-01T10:00:00Z";
    for f in ["a", "b", "c"] {
        fs::write(s.top.join("root").join(f), f).unwrap();
        let out = common::tabula_cmd(&s.config)
            .env("TABULA_TEST_NOW", now)
            .arg("rollback")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    fs::write(s.top.join("root/d"), "d").unwrap();
    let config = tabula::config::Config::load(&s.config).unwrap();
    let layout = &config.layout;
    let ctx = BootContext {
        now: chrono::DateTime::parse_from_rfc3339(now).unwrap().into(),
        boot_id: None,
        kernel: None,
        flags: Default::default(),
    };
    let top = s.top_fd();
    let both = |case: &str| {
        let fast = rollback::observe(top.as_fd(), layout, &ctx).unwrap();
        let listed = rollback::observe_listed(top.as_fd(), layout, &ctx).unwrap();
        let a = rollback::plan(&fast, layout, &ctx).unwrap();
        let b = rollback::plan(&listed, layout, &ctx).unwrap();
        assert_eq!(
            (&a.actions, &a.retire_as),
            (&b.actions, &b.retire_as),
            "{case}"
        );
        a.retire_as.unwrap()
    };
    assert_eq!(both("three boots"), "00004-2026-03-01T100000Z");
    // The next names are taken (a stray directory, a stray metadata file): both skip them.
    fs::create_dir(s.top.join("old_roots/00004-2026-03-01T100000Z")).unwrap();
    fs::write(s.top.join("old_roots/00005-2026-03-01T100000Z.json"), "{}").unwrap();
    assert_eq!(both("taken names"), "00006-2026-03-01T100000Z");
    // A stray subvolume named far above: not tabula's, so it counts for neither.
    btrfs::create_subvolume(
        open_dir(&s.top.join("old_roots")).as_fd(),
        "99999-2030-01-01T000000Z",
    )
    .unwrap();
    assert_eq!(both("a stray above"), "00006-2026-03-01T100000Z");
    // The last retired root gone: the listing is the way, and the high-water mark still holds.
    s.tabula_ok(&["roots", "delete", "--force", "-1"]);
    assert_eq!(both("last root deleted"), "00006-2026-03-01T100000Z");
}
