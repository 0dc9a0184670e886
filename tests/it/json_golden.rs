//! The `--json` documents, one golden file per kind (`tests/golden/json/<kind>.json`): a change of shape
//! (a field renamed, added or dropped, an enum value respelled, the envelope) fails here. The documents
//! come from the real binary on a loop-mounted btrfs (needs root); times, ids, uuids, the device and
//! the temporary directory are masked first. `UPDATE_GOLDEN=1` rewrites the files.
//!
//! The convention itself (every golden has `version` 1 and its `kind`, snake_case keys, no kebab-case
//! enum value) is checked on the golden files without root.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{MountGuard, Scratch};
use serde_json::Value;
use tabula::btrfs;

const BUSYBOX: &str = "/bin/busybox";

const PERSIST: &str = "[persist]\ndirectories = [\"/var/log\"]\nfiles = [{ path = \"/etc/machine-info\", how = \"copy\" }]\n";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/json")
}

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// Numbers that differ between runs: subvolume ids and generations, times, ages.
const VOLATILE_NUMBERS: &[&str] = &[
    "id",
    "subvolume_id",
    "parent_id",
    "generation",
    "ctransid",
    "otransid",
    "mtime",
    "age_seconds",
];

/// Masks what differs between runs, keeping the shape (keys, types, nulls).
struct Masker {
    /// (text, placeholder), longest first.
    literals: Vec<(String, &'static str)>,
}

impl Masker {
    fn value(&self, key: &str, v: &mut Value) {
        match v {
            Value::Number(_) if VOLATILE_NUMBERS.contains(&key) => *v = Value::from(0),
            Value::String(s) => *s = self.text(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(key, x)),
            Value::Object(m) => m.iter_mut().for_each(|(k, x)| self.value(k, x)),
            _ => {}
        }
    }

    fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (lit, mask) in &self.literals {
            s = s.replace(lit.as_str(), mask);
        }
        mask_patterns(&s)
    }
}

/// Replaces RFC 3339 times, the compact times in root names (`2026-03-01T080000Z`), uuids and boot ids
/// (32 hex digits).
fn mask_patterns(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(n) = time_at(&b[i..]) {
            out.push_str("<time>");
            i += n;
        } else if let Some(n) = uuid_at(&b[i..]) {
            out.push_str("<uuid>");
            i += n;
        } else if matches(&b[i..], &"h".repeat(32)) {
            out.push_str("<id>");
            i += 32;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `shape`: `d` a digit, `h` a hex digit, anything else itself.
fn matches(b: &[u8], shape: &str) -> bool {
    b.len() >= shape.len()
        && shape.bytes().zip(b).all(|(p, &c)| match p {
            b'd' => c.is_ascii_digit(),
            b'h' => c.is_ascii_hexdigit(),
            _ => p == c,
        })
}

fn time_at(b: &[u8]) -> Option<usize> {
    if !matches(b, "dddd-dd-ddT") {
        return None;
    }
    // Then digits, ':' and '.' up to the zone.
    let mut n = 11;
    while n < b.len() && (b[n].is_ascii_digit() || b[n] == b':' || b[n] == b'.') {
        n += 1;
    }
    if b.get(n) == Some(&b'Z') {
        Some(n + 1)
    } else if matches(&b[n..], "+dd:dd") || matches(&b[n..], "-dd:dd") {
        Some(n + 6)
    } else {
        Some(n)
    }
}

fn uuid_at(b: &[u8]) -> Option<usize> {
    let shape = "hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh";
    matches(b, shape).then_some(shape.len())
}

/// Compares (or with UPDATE_GOLDEN=1 writes) `tests/golden/json/<kind>.json`; a mismatch goes to
/// `failures`.
fn check_golden(kind: &str, doc: &Value, failures: &mut String) {
    let text = serde_json::to_string_pretty(doc).unwrap() + "\n";
    let file = golden_dir().join(format!("{kind}.json"));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    common::compare_golden(kind, &file, &text, update, failures);
}

/// Every document kind the commands print, from one small history: three boots, a blank update,
/// persistent data nothing covers.
#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn documents_match_their_goldens() {
    let Some(s) = Scratch::new("json_documents_match_their_goldens", 400) else {
        return;
    };
    assert!(
        Path::new(BUSYBOX).exists(),
        "needs a static busybox at {BUSYBOX} (apt-get install busybox-static)"
    );
    let root = s.top.join("root");
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    for d in ["bin", "proc", "sys", "dev", "run", "persist"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    put(&root, "etc/hosts", "127.0.0.1 localhost\n");
    put(&root, "etc/old.conf", "old\n");
    put(&root, "etc/mode.conf", "mode\n");
    let mut docs: BTreeMap<&str, Value> = BTreeMap::new();
    let json = |args: &[&str]| -> Value { serde_json::from_str(&s.tabula_ok(args)).unwrap() };

    docs.insert(
        "init",
        json(&["init", "--blank-from", "current", "--dry-run", "--json"]),
    );
    s.tabula_ok(&["init", "--blank-from", "current"]);
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(&s.config, format!("{cfg}{PERSIST}")).unwrap();
    for b in 1..=3 {
        put(&root, "var/lib/app/state", &"s".repeat(10 * b));
        put(&root, "etc/hosts", &format!("10.0.0.{b} me\n"));
        put(&root, "var/log/boot.log", "persisted: not a change\n");
        if b == 2 {
            fs::remove_file(root.join("etc/old.conf")).unwrap();
            fs::set_permissions(
                root.join("etc/mode.conf"),
                fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::os::unix::fs::symlink("hosts", root.join("etc/link")).unwrap();
        }
        if b == 3 {
            docs.insert("rollback", json(&["rollback", "--dry-run", "--json"]));
        }
        s.tabula_ok(&["rollback"]);
    }
    docs.insert("roots-list", json(&["roots", "list", "--json"]));
    docs.insert("roots-show", json(&["roots", "show", "-1", "--json"]));
    docs.insert(
        "roots-prune",
        json(&["roots", "prune", "--dry-run", "--json"]),
    );
    docs.insert("diff", json(&["roots", "diff", "-2", "--json"]));
    docs.insert("advise", json(&["advise", "--json", "--boots", "3"]));

    put(&s.top.join("persist"), "var/log/boot.log", "log\n");
    put(&s.top.join("persist"), "var/lib/gone/db", "12345");
    docs.insert("orphans", json(&["orphans", "--json"]));

    let restored = s.dir.path().join("restored");
    fs::create_dir(&restored).unwrap();
    let to = restored.join("hosts");
    let to = to.to_str().unwrap();
    let restore = [
        "restore",
        "/etc/hosts",
        "--from",
        "-1",
        "--to",
        to,
        "--json",
    ];
    docs.insert(
        "restore-plan",
        json(&[&restore[..], &["--dry-run"]].concat()),
    );
    docs.insert("restore", json(&restore));

    let out = s.tabula(&[
        "blank",
        "update",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo new > /etc/added",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    docs.insert("blank-list", json(&["blank", "list", "--json"]));
    // `blank diff` prints the same kind as `roots diff`: checked against the same convention.
    let blank_diff = json(&["blank", "diff", "--json"]);
    assert_eq!(blank_diff["kind"], "diff");
    assert_eq!(blank_diff["version"], 1);
    assert_eq!(
        blank_diff["entries"][0]["path"], "/etc/added",
        "{blank_diff}"
    );

    // `persist add` on the booted root, persistent storage mounted in it.
    let sysroot = s.dir.path().join("sysroot");
    fs::create_dir(&sysroot).unwrap();
    let mount = |src: &str, at: &Path| {
        nix::mount::mount(
            Some(&s.dev.path),
            at,
            Some("btrfs"),
            nix::mount::MsFlags::empty(),
            Some(src),
        )
        .unwrap();
        MountGuard {
            target: at.to_path_buf(),
        }
    };
    let _root = mount("subvol=root", &sysroot);
    let _persist = mount("subvol=persist", &sysroot.join("persist"));
    put(&sysroot, "var/lib/new/db", "data");
    let sys = sysroot.to_str().unwrap();
    let add = ["persist", "add", "/var/lib/new", "--root", sys, "--json"];
    docs.insert(
        "persist-add-plan",
        json(&[&add[..], &["--dry-run"]].concat()),
    );
    docs.insert("persist-add", json(&add));
    docs.insert(
        "persist-plan",
        json(&["persist", "--root", sys, "--dry-run", "--json"]),
    );
    // Declared after the root's guard, so dropped first: it unmounts what `persist` mounts in there.
    let _persisted = common::MountsUnder {
        dir: sysroot.clone(),
        extra: Vec::new(),
    };
    docs.insert("persist", json(&["persist", "--root", sys, "--json"]));
    // Exit 1: the copied file is not in place until the sync below (and that is in the document).
    let status = s.tabula(&["status", "--root", sys, "--json"]);
    assert_eq!(status.status.code(), Some(1), "{}", common::stderr(&status));
    docs.insert("status", serde_json::from_slice(&status.stdout).unwrap());
    put(&sysroot, "etc/machine-info", "PRETTY_HOSTNAME=golden\n");
    let sync = ["persist", "sync", "--root", sys, "--json"];
    docs.insert(
        "persist-sync-plan",
        json(&[&sync[..], &["--dry-run"]].concat()),
    );
    docs.insert("persist-sync", json(&sync));

    let kernel = tabula::device::kernel_release().unwrap_or_default();
    let mut literals = vec![
        (s.dir.path().display().to_string(), "<tmp>"),
        (s.dev.path.display().to_string(), "<dev>"),
    ];
    if !kernel.is_empty() {
        literals.push((kernel, "<kernel>"));
    }
    literals.sort_by_key(|(l, _)| std::cmp::Reverse(l.len()));
    let masker = Masker { literals };
    let mut failures = String::new();
    for (kind, mut doc) in docs {
        assert_eq!(doc["version"], 1, "{kind}: {doc}");
        assert_eq!(doc["kind"], kind, "{doc}");
        masker.value("", &mut doc);
        check_golden(kind, &doc, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{failures}(UPDATE_GOLDEN=1 rewrites the goldens after a deliberate change; say so in the README)"
    );
}

/// Keys whose identifier-like values are names (subvolumes, refusal rules), not enum values.
const NAME_KEYS: &[&str] = &[
    "rule", "name", "old_tree", "new_tree", "source", "staging", "root",
];

/// Walks `v`: every key snake_case, no kebab-case word as an enum value.
fn check_convention(file: &str, key: &str, v: &Value, problems: &mut Vec<String>) {
    match v {
        Value::String(s) if !NAME_KEYS.contains(&key) => {
            let word = s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if word && s.contains('-') {
                problems.push(format!("{file}: \"{key}\": \"{s}\" is kebab-case"));
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|x| check_convention(file, key, x, problems)),
        Value::Object(m) => {
            for (k, x) in m {
                let snake = k.starts_with(|c: char| c.is_ascii_lowercase())
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !snake {
                    problems.push(format!("{file}: key \"{k}\" is not snake_case"));
                }
                check_convention(file, k, x, problems);
            }
        }
        _ => {}
    }
}

#[test]
fn every_golden_follows_the_convention() {
    let mut kinds = Vec::new();
    let mut problems = Vec::new();
    for e in fs::read_dir(golden_dir()).unwrap() {
        let path = e.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let kind = file.strip_suffix(".json").expect("only .json goldens");
        let doc: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["version"], tabula::json::VERSION, "{file}");
        assert_eq!(doc["kind"], kind, "{file}: kind names the file");
        assert!(tabula::json::is_kind(kind), "{file}");
        let Value::Object(m) = &doc else {
            panic!("{file}: not an object")
        };
        for (k, x) in m.iter().filter(|(k, _)| *k != "kind") {
            check_convention(&file, k, x, &mut problems);
        }
        kinds.push(kind.to_string());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for k in &kinds {
        assert!(
            tabula::json::KINDS.contains(&k.as_str()),
            "{k}.json: not in json::KINDS"
        );
    }
    let missing: Vec<&str> = tabula::json::KINDS
        .iter()
        .copied()
        .filter(|k| !kinds.iter().any(|g| g == k))
        .collect();
    assert_eq!(missing, WITHOUT_GOLDEN, "a golden per kind");
}

/// Kinds without a golden from a real run (none: every kind has one).
const WITHOUT_GOLDEN: &[&str] = &[];

/// The masking keeps what is not volatile.
#[test]
fn masking() {
    assert_eq!(
        mask_patterns("00003-2026-03-01T080000Z at 2026-03-01T08:00:00.5+01:00"),
        "00003-<time> at <time>"
    );
    assert_eq!(
        mask_patterns("1a24c0de-0000-4000-8000-00000000abcd!"),
        "<uuid>!"
    );
    assert_eq!(mask_patterns("4c8300964ec243dd95221d036ffb4059"), "<id>");
    assert_eq!(mask_patterns("/etc/hosts-2"), "/etc/hosts-2");
}
