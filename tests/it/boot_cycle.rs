//! Whole boot cycles through the CLI on a real loop btrfs (needs root): rollback, mount the new root and
//! persistent storage as an initrd would, `tabula persist`, write, reboot; then look back with
//! `roots diff` and `restore`.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use common::{Booted, Scratch, rollback_and_mount};
use tabula::btrfs;

fn boot(s: &Scratch) -> Booted {
    let b = rollback_and_mount(s);
    s.tabula_ok(&["persist", "--root", b.sysroot.to_str().unwrap()]);
    b
}

/// Unmounts everything under sysroot (persisted binds first), as a shutdown would.
fn shutdown(b: Booted) {
    let mounts = tabula::mountinfo::read().unwrap();
    let mut under: Vec<&Path> = mounts
        .iter()
        .map(|m| m.mount_point.as_path())
        .filter(|p| p.starts_with(&b.sysroot) && *p != b.sysroot && !p.ends_with("persist"))
        .collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in under {
        nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    drop(b);
}

fn setup(test: &str) -> Option<Scratch> {
    let s = Scratch::new(test, 400)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    fs::write(s.top.join("root/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(
        s.top.join("root/etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(s.top.join("root/etc/group"), "root:x:0:\nusers:x:100:\n").unwrap();
    fs::create_dir(s.top.join("root/persist")).unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        format!(
            "{cfg}[persist]\ndirectories = [\"/var/log\"]\nfiles = [\"/etc/machine-id\"]\n\
             [[persist.users]]\nname = \"alice\"\ndirectories = [\"Documents\"]\n"
        ),
    )
    .unwrap();
    Some(s)
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn three_boots_keep_only_the_allowlist() {
    let Some(s) = setup("three_boots_keep_only_the_allowlist") else {
        return;
    };
    let out = s.tabula_ok(&["check", "--root", s.top.join("root").to_str().unwrap()]);
    assert!(out.contains(": ok"), "{out}");

    let b1 = boot(&s);
    let r = &b1.sysroot;
    fs::write(r.join("var/log/boot1.log"), "1").unwrap();
    fs::write(r.join("home/alice/Documents/thesis.txt"), "chapter 1").unwrap();
    fs::write(
        r.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    fs::write(
        r.join("etc/hosts"),
        "127.0.0.1 localhost\n10.0.0.1 gateway\n",
    )
    .unwrap();
    fs::write(r.join("junk"), "ephemeral").unwrap();
    // machine-id recipe: the first boot made it; adopt it into persistent storage.
    s.tabula_ok(&["persist", "--root", r.to_str().unwrap(), "--adopt"]);
    assert!(s.top.join("persist/etc/machine-id").exists());
    let st = common::tabula_cmd(&s.config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["retired_roots"], 1);
    shutdown(b1);

    let b2 = boot(&s);
    let r = &b2.sysroot;
    assert_eq!(
        fs::read_to_string(r.join("var/log/boot1.log")).unwrap(),
        "1",
        "persisted dir kept"
    );
    assert_eq!(
        fs::read_to_string(r.join("home/alice/Documents/thesis.txt")).unwrap(),
        "chapter 1"
    );
    assert_eq!(
        fs::read_to_string(r.join("etc/machine-id")).unwrap(),
        "0123456789abcdef0123456789abcdef\n",
        "stable machine id"
    );
    assert!(!r.join("junk").exists(), "ephemeral write gone");
    assert_eq!(
        fs::read_to_string(r.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n",
        "edit outside the allowlist gone"
    );
    use std::os::unix::fs::MetadataExt;
    let home = fs::metadata(r.join("home/alice")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 100, 0o700)
    );

    // What did boot 1 write? The retired root compared with the blank; persisted paths are not changes.
    let diff = s.tabula_ok(&["roots", "diff", "-1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&diff).unwrap();
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/junk") && paths.contains(&"/etc/hosts"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.starts_with("/var/log")
            || p.starts_with("/home")
            || p.starts_with("/persist")),
        "{paths:?}"
    );
    let tsv = s.tabula_ok(&["roots", "diff"]);
    assert!(tsv.lines().any(|l| l.ends_with("/junk")), "{tsv}");
    fs::write(r.join("now-live"), "x").unwrap();
    let live = s.tabula_ok(&["diff", "--json"]);
    assert!(live.contains("/now-live"), "{live}");

    // Get boot 1's /etc/hosts back, next to the live one; then over it with --force.
    let dest = s.dir.path().join("hosts.boot1");
    let out = s.tabula_ok(&["restore", "/etc/hosts", "--to", dest.to_str().unwrap()]);
    assert!(out.contains("restored '/etc/hosts'"), "{out}");
    assert_eq!(
        fs::read_to_string(&dest).unwrap(),
        "127.0.0.1 localhost\n10.0.0.1 gateway\n"
    );
    let again = s.tabula(&["restore", "/etc/hosts", "--to", dest.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(3), "no overwrite without --force");
    s.tabula_ok(&[
        "restore",
        "/etc/hosts",
        "--to",
        dest.to_str().unwrap(),
        "--force",
        "--from",
        "1",
    ]);
    let out = s.tabula(&[
        "restore",
        "/var/log/boot1.log",
        "--to",
        s.dir.path().join("x").to_str().unwrap(),
        "--dry-run",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is persisted") && err.contains("/persist/var/log/boot1.log"),
        "{err}"
    );
    shutdown(b2);

    let b3 = boot(&s);
    assert_eq!(
        fs::read_to_string(b3.sysroot.join("var/log/boot1.log")).unwrap(),
        "1"
    );
    shutdown(b3);
    let list = s.tabula_ok(&["roots", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn planted_symlink_in_a_home_is_refused_and_the_boot_goes_on() {
    let Some(s) = setup("planted_symlink_in_a_home_is_refused_and_the_boot_goes_on") else {
        return;
    };
    let victim = s.dir.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("secret"), "s").unwrap();
    fs::create_dir_all(s.top.join("persist/home/alice")).unwrap();
    std::os::unix::fs::symlink(&victim, s.top.join("persist/home/alice/Documents")).unwrap();
    let booted = rollback_and_mount(&s);
    let sysroot = booted.sysroot.clone();
    let out = s.tabula(&["persist", "--root", sysroot.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("symlink"), "{err}");
    // The other entries are in place; the victim is untouched.
    assert!(
        tabula::mountinfo::read()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == sysroot.join("var/log"))
    );
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(&victim).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
    assert_eq!(common::ls(&victim), ["secret"]);
    shutdown(booted);
}
