//! `tabula advise` on a real loop btrfs (needs root): a series of boots, some paths written every boot,
//! some once, some noise; the ranking, the units named, and the suggested allowlist passing `check`.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::Scratch;
use serde_json::Value;
use tabula::btrfs;

const PERSIST: &str = "[persist]\ndirectories = [\"/var/log\"]\n\
                       [[persist.users]]\nname = \"alice\"\ndirectories = [\"Documents\"]\n";

fn setup(test: &str) -> Option<Scratch> {
    let s = Scratch::new(test, 400)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    fs::write(
        s.top.join("root/etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(s.top.join("root/etc/group"), "root:x:0:\nusers:x:100:\n").unwrap();
    fs::write(s.top.join("root/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::create_dir(s.top.join("root/persist")).unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(&s.config, format!("{cfg}{PERSIST}")).unwrap();
    Some(s)
}

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// Four boots: what every boot writes, what one boot wrote, noise, and a persisted path.
fn four_boots(s: &Scratch) {
    let root = s.top.join("root");
    for b in 1..=4 {
        put(&root, "var/lib/foo/state.db", &"x".repeat(100 * b));
        put(&root, "home/alice/.bash_history", "ls\n");
        put(&root, "root/.bash_history", "ls\n");
        put(&root, "home/alice/.config/app/settings", "a=1\n");
        put(&root, "etc/machine-id", "0123456789abcdef\n");
        // In the blank, changed by every boot.
        put(&root, "etc/hosts", &format!("10.0.0.{b} me\n"));
        // Noise: caches, temporary files, activation symlinks.
        put(&root, "tmp/x", "t");
        put(&root, "var/cache/foo/big", &"c".repeat(5000));
        put(&root, "home/alice/.cache/thumbs/1", "c");
        symlink("/etc/static/zshrc", root.join("etc/zshrc")).unwrap();
        // Persisted: under a mount point at run time, never a change.
        put(&root, "var/log/boot.log", "log");
        if b == 2 {
            put(&root, "srv/once/data", "once");
        }
        if b >= 3 {
            put(&root, "var/lib/bar/x", "bar");
        }
        s.tabula_ok(&["rollback"]);
    }
}

fn units(s: &Scratch) -> std::path::PathBuf {
    let dir = s.dir.path().join("units");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("foo.service"),
        "[Service]\nExecStart=/bin/foo\nStateDirectory=foo\n",
    )
    .unwrap();
    dir
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn ranks_what_boots_wrote_and_suggests_lines_that_pass_check() {
    let Some(s) = setup("advise_ranks") else {
        return;
    };
    four_boots(&s);
    let unit_dir = units(&s);
    let out = s.tabula_ok(&["advise", "--json", "--unit-dir", unit_dir.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "advise");
    assert_eq!(v["boots"].as_array().unwrap().len(), 4);
    let groups: Vec<(String, u64)> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["path"].as_str().unwrap().to_string(),
                g["boots"].as_u64().unwrap(),
            )
        })
        .collect();
    // Every boot first (biggest first), then the last two boots, then once.
    assert_eq!(
        groups,
        [
            ("/var/lib/foo".to_string(), 4),
            ("/etc/machine-id".to_string(), 4),
            ("/etc/hosts".to_string(), 4),
            ("/home/alice/.config/app".to_string(), 4),
            ("/home/alice/.bash_history".to_string(), 4),
            ("/root/.bash_history".to_string(), 4),
            ("/var/lib/bar".to_string(), 2),
            ("/srv/once".to_string(), 1),
        ],
        "{out}"
    );
    let foo = &v["groups"][0];
    assert_eq!(foo["units"], serde_json::json!(["foo.service"]));
    assert_eq!(foo["bytes"], 400, "last boot's size");
    assert_eq!(foo["type"], "dir");
    assert_eq!(foo["first"]["seq"], 1);
    assert_eq!(foo["last"]["seq"], 4);
    assert_eq!(v["groups"][6]["first"]["seq"], 3);
    assert_eq!(v["groups"][2]["in_blank"], true, "{out}");
    assert!(
        v["groups"][1].get("in_blank").is_none(),
        "new: not in the blank"
    );
    assert!(v["ignored_objects"].as_u64().unwrap() >= 4 * 4, "{out}");
    // Suggested: what two or more boots wrote.
    let sugg: Vec<&str> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        sugg,
        [
            "/var/lib/foo",
            "/etc/machine-id",
            "/home/alice/.config/app",
            "/home/alice/.bash_history",
            "/root/.bash_history",
            "/var/lib/bar"
        ]
    );

    // The fragment, put in place of the [persist] part, passes `tabula check`.
    let fragment = v["config_fragment"].as_str().unwrap();
    // Histories are replaced by rename: suggested with the copy method, which `check` accepts.
    assert!(
        fragment.contains("{ path = \".bash_history\", how = \"copy\" },  # suggested"),
        "{fragment}"
    );
    let cfg = fs::read_to_string(&s.config).unwrap();
    let head = cfg.split("[persist]").next().unwrap();
    let new_cfg = s.dir.path().join("suggested.toml");
    fs::write(&new_cfg, format!("{head}{fragment}")).unwrap();
    let check = common::tabula_cmd(&new_cfg)
        .args(["check", "--root"])
        .arg(s.top.join("root"))
        .arg("--blank")
        .arg(s.top.join("root-blank"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{}\n{fragment}",
        String::from_utf8_lossy(&check.stdout),
        common::stderr(&check)
    );
    let parsed = tabula::config::Config::load(&new_cfg).unwrap();
    let targets: Vec<String> = parsed
        .persist
        .entries()
        .iter()
        .map(|e| e.target().display().to_string())
        .collect();
    for p in [
        "/var/log",
        "/home/alice/Documents",
        "/var/lib/foo",
        "/etc/machine-id",
    ] {
        assert!(targets.contains(&p.to_string()), "{p} in {targets:?}");
    }

    // The text form: a table and the same fragment at the end.
    let text = s.tabula_ok(&["advise", "--unit-dir", unit_dir.to_str().unwrap()]);
    assert!(text.contains("/var/lib/foo/"), "{text}");
    assert!(text.contains("/etc/hosts *"), "{text}");
    assert!(text.contains("* also in the blank"), "{text}");
    assert!(text.contains("foo.service"), "{text}");
    assert!(text.ends_with(fragment), "{text}");
    assert!(!text.contains("/var/cache"), "{text}");

    // --boots narrows the window; --all shows the noise; [advise] ignore hides more.
    let v: Value =
        serde_json::from_str(&s.tabula_ok(&["advise", "--json", "--boots", "1"])).unwrap();
    assert_eq!(v["boots"].as_array().unwrap().len(), 1);
    assert_eq!(v["groups"][0]["boots"], 1);
    let all = s.tabula_ok(&["advise", "--all"]);
    assert!(all.contains("/var/cache/foo"), "{all}");
    assert!(all.contains("/tmp/x"), "{all}");
    fs::write(
        &s.config,
        format!("{cfg}[advise]\nignore = [\"/var/lib/b*\", \"/home/*/.config/**\"]\n"),
    )
    .unwrap();
    let text = s.tabula_ok(&["advise"]);
    assert!(!text.contains("/var/lib/bar"), "{text}");
    assert!(!text.contains(".config/app"), "{text}");
    assert!(text.contains("/var/lib/foo"), "{text}");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn advise_with_no_retired_roots_says_so() {
    let Some(s) = setup("advise_empty") else {
        return;
    };
    let text = s.tabula_ok(&["advise"]);
    assert!(text.contains("No retired roots yet"), "{text}");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn orphans_are_found_after_an_entry_is_removed() {
    let Some(s) = setup("orphans") else {
        return;
    };
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        cfg.replace("[\"/var/log\"]", "[\"/var/log\", \"/var/lib/foo\"]"),
    )
    .unwrap();
    let p = s.top.join("persist");
    put(&p, "var/log/boot.log", "log");
    put(&p, "var/lib/foo/db", &"d".repeat(1000));
    put(&p, "home/alice/Documents/a.txt", "doc");
    put(&p, "home/alice/.oldapp/conf", "12345");
    put(&p, "home/alice/.oldapp/sub/more", "123");
    symlink("/etc", p.join("var/lib/planted")).unwrap();
    fs::create_dir(p.join("opt")).unwrap();
    let v: Value = serde_json::from_str(&s.tabula_ok(&["orphans", "--json"])).unwrap();
    let paths = |v: &Value| -> Vec<String> {
        v["orphans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        paths(&v),
        ["/home/alice/.oldapp", "/opt", "/var/lib/planted"],
        "{v}"
    );
    let old = &v["orphans"][0];
    assert_eq!(old["bytes"], 8);
    assert_eq!(old["objects"], 4);
    assert_eq!(old["type"], "dir");
    assert_eq!(old["source"], "/persist/home/alice/.oldapp");
    assert!(old["modified"].as_str().is_some(), "{v}");
    assert_eq!(v["orphans"][2]["type"], "symlink", "not followed");

    // The entry goes: its data is an orphan now, and nothing was deleted.
    fs::write(&s.config, &cfg).unwrap();
    let v: Value = serde_json::from_str(&s.tabula_ok(&["orphans", "--json"])).unwrap();
    assert_eq!(
        paths(&v),
        [
            "/home/alice/.oldapp",
            "/opt",
            "/var/lib/foo",
            "/var/lib/planted"
        ]
    );
    assert_eq!(v["orphans"][2]["bytes"], 1000);
    assert_eq!(v["total_bytes"], 1008);
    let text = s.tabula_ok(&["orphans"]);
    assert!(text.contains("/persist/var/lib/foo/"), "{text}");
    assert!(p.join("var/lib/foo/db").exists());
    assert!(p.join("home/alice/.oldapp/conf").exists());
}
