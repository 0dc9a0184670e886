//! Property test on a real btrfs image (needs root): random `old_roots` contents (managed roots, some
//! pinned, mounted, writable or with corrupt metadata; hand-placed subvolumes named like retired roots,
//! some with metadata copied from a managed root; stray directories, files and symlinks named like roots).
//! `roots prune` and `roots delete` never remove anything outside the managed, unmounted, unpinned set;
//! `rollback` never writes into anything it did not retire; sequence numbers only grow.
//!
//! One image for the whole run, reset between cases; `TABULA_PROPERTY_CASES` overrides the 200 cases.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use common::{MountGuard, Scratch, open_dir, stderr};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tabula::btrfs;
use tabula::layout::{self, Intent, RetiredName, Retirer, RootMeta};

#[derive(Debug, Clone)]
struct Managed {
    pinned: bool,
    mounted: bool,
    writable: bool,
    corrupt: bool,
}

#[derive(Debug, Clone)]
enum Other {
    /// A subvolume placed by hand, named like a retired root; `copy_meta`: with a metadata file copied
    /// from the first managed root (renamed, so its id and uuid do not match).
    Subvolume {
        seq: u64,
        copy_meta: bool,
        ro: bool,
    },
    Dir {
        seq: u64,
    },
    File {
        seq: u64,
    },
    Symlink {
        seq: u64,
    },
}

#[derive(Debug, Clone)]
enum Ref {
    Back(usize),
    ManagedSeq(usize),
    Other(usize),
}

#[derive(Debug, Clone)]
struct Case {
    managed: Vec<Managed>,
    others: Vec<Other>,
    keep_last: usize,
    delete: Ref,
    force: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let managed = prop::collection::vec(
        (
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(pinned, mounted, writable, corrupt)| Managed {
                pinned,
                mounted,
                writable,
                corrupt,
            }),
        0..6,
    );
    let seq = prop_oneof![1u64..8, 1u64..100_000];
    let other = prop_oneof![
        3 => (seq.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(seq, copy_meta, ro)| Other::Subvolume { seq, copy_meta, ro }),
        1 => seq.clone().prop_map(|seq| Other::Dir { seq }),
        1 => seq.clone().prop_map(|seq| Other::File { seq }),
        1 => seq.prop_map(|seq| Other::Symlink { seq }),
    ];
    let others = prop::collection::vec(other, 0..4);
    let delete = prop_oneof![
        (1usize..4).prop_map(Ref::Back),
        (0usize..6).prop_map(Ref::ManagedSeq),
        (0usize..4).prop_map(Ref::Other),
    ];
    (managed, others, 1usize..4, delete, any::<bool>()).prop_map(
        |(managed, others, keep_last, delete, force)| Case {
            managed,
            others,
            keep_last,
            delete,
            force,
        },
    )
}

/// What an entry of old_roots is, enough to tell whether anything changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Print {
    Subvolume {
        id: u64,
        uuid: String,
        generation: u64,
        read_only: bool,
    },
    File(Vec<u8>),
    Dir(Vec<String>),
    Symlink(PathBuf),
    Other,
}

fn census(old_roots: &Path) -> BTreeMap<String, Print> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(old_roots).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let ft = fs::symlink_metadata(&p).unwrap().file_type();
        let print = if ft.is_symlink() {
            Print::Symlink(fs::read_link(&p).unwrap())
        } else if ft.is_file() {
            Print::File(fs::read(&p).unwrap())
        } else if ft.is_dir() {
            let fd = open_dir(&p);
            if btrfs::is_subvolume(fd.as_fd()).unwrap() {
                let i = btrfs::subvolume_info(fd.as_fd()).unwrap();
                Print::Subvolume {
                    id: i.id,
                    uuid: i.uuid,
                    generation: i.generation,
                    read_only: i.read_only,
                }
            } else {
                Print::Dir(common::ls(&p))
            }
        } else {
            Print::Other
        };
        out.insert(name, print);
    }
    out
}

/// Empties old_roots (nothing is mounted any more when this runs).
fn reset(s: &Scratch) {
    let dir = s.top.join("old_roots");
    let fd = open_dir(&dir);
    for (name, print) in census(&dir) {
        match print {
            Print::Subvolume { .. } => {
                btrfs::delete_subvolume_recursive(fd.as_fd(), &name, &|_| true, &mut |_| {})
                    .unwrap();
            }
            Print::Dir(_) => fs::remove_dir_all(dir.join(&name)).unwrap(),
            _ => fs::remove_file(dir.join(&name)).unwrap(),
        }
    }
}

fn name_of(seq: u64, minute: u32) -> String {
    format!("{seq:05}-2026-01-01T00{minute:02}00Z")
}

/// The state one case builds: which names are tabula's, and what protects them.
struct World {
    /// Managed roots (metadata matching), by name: (seq, pinned, mounted).
    managed: BTreeMap<String, (u64, bool, bool)>,
    /// Every name a case made that tabula must not write, freeze or delete.
    foreign: BTreeSet<String>,
    /// Others by index, for delete references.
    other_names: Vec<String>,
    managed_names: Vec<String>,
    /// The highest sequence number tabula used.
    high_water: u64,
    _mounts: Vec<MountGuard>,
}

fn build(s: &Scratch, c: &Case) -> World {
    let dir = s.top.join("old_roots");
    let fd = open_dir(&dir);
    let mut w = World {
        managed: BTreeMap::new(),
        foreign: BTreeSet::new(),
        other_names: Vec::new(),
        managed_names: Vec::new(),
        high_water: 0,
        _mounts: Vec::new(),
    };
    let mut first_meta: Option<RootMeta> = None;
    for (i, m) in c.managed.iter().enumerate() {
        let seq = i as u64 + 1;
        let name = name_of(seq, i as u32);
        btrfs::create_subvolume(fd.as_fd(), &name).unwrap();
        fs::write(dir.join(&name).join("data"), &name).unwrap();
        let info = btrfs::subvolume_info(open_dir(&dir.join(&name)).as_fd()).unwrap();
        let meta = RootMeta {
            version: 1,
            seq,
            name: name.clone(),
            boot_id: None,
            kernel: None,
            booted_at: None,
            retired_at: chrono::DateTime::from_timestamp(
                1_767_225_600 + i64::from(i as u32) * 60,
                0,
            )
            .unwrap(),
            clock_trusted: true,
            clock_floor: None,
            subvolume_id: info.id,
            uuid: info.uuid.clone(),
            pinned: m.pinned,
            note: None,
            retired_by: Retirer {
                boot_id: None,
                kernel: None,
                new_root_uuid: None,
            },
        };
        if m.corrupt {
            fs::write(
                dir.join(RootMeta::file_name(&name)),
                b"{\"version\": 1, \"pinned\": fa",
            )
            .unwrap();
            w.foreign.insert(name.clone());
        } else {
            layout::write_meta(fd.as_fd(), &meta).unwrap();
            w.managed.insert(name.clone(), (seq, m.pinned, m.mounted));
        }
        first_meta.get_or_insert(meta);
        if !m.writable {
            btrfs::set_read_only(open_dir(&dir.join(&name)).as_fd(), true).unwrap();
        }
        if m.mounted {
            let target = s.dir.path().join(format!("mnt-{name}"));
            fs::create_dir_all(&target).unwrap();
            nix::mount::mount(
                Some(&s.dev.path),
                &target,
                Some("btrfs"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(format!("subvolid={}", info.id).as_str()),
            )
            .unwrap();
            w._mounts.push(MountGuard { target });
        }
        w.managed_names.push(name);
        w.high_water = seq;
    }
    if let Some(last) = w.managed_names.last() {
        let info = btrfs::subvolume_info(open_dir(&dir.join(last)).as_fd()).unwrap();
        layout::write_intent(
            fd.as_fd(),
            &Intent {
                version: 1,
                seq: w.high_water,
                name: last.clone(),
                subvolume_id: info.id,
                uuid: info.uuid,
            },
        )
        .unwrap();
    }
    for (i, o) in c.others.iter().enumerate() {
        let minute = 30 + i as u32;
        let name = match o {
            Other::Subvolume { seq, copy_meta, ro } => {
                let name = name_of(*seq, minute);
                btrfs::create_subvolume(fd.as_fd(), &name).unwrap();
                fs::write(dir.join(&name).join("mine"), "hands off").unwrap();
                if *copy_meta && let Some(m) = &first_meta {
                    let mut m = m.clone();
                    m.name = name.clone();
                    m.seq = *seq;
                    fs::write(
                        dir.join(RootMeta::file_name(&name)),
                        serde_json::to_vec(&m).unwrap(),
                    )
                    .unwrap();
                }
                if *ro {
                    btrfs::set_read_only(open_dir(&dir.join(&name)).as_fd(), true).unwrap();
                }
                name
            }
            Other::Dir { seq } => {
                let name = name_of(*seq, minute);
                fs::create_dir(dir.join(&name)).unwrap();
                fs::write(dir.join(&name).join("mine"), "hands off").unwrap();
                name
            }
            Other::File { seq } => {
                let name = name_of(*seq, minute);
                fs::write(dir.join(&name), "hands off").unwrap();
                name
            }
            Other::Symlink { seq } => {
                let name = name_of(*seq, minute);
                std::os::unix::fs::symlink("/", dir.join(&name)).unwrap();
                name
            }
        };
        w.foreign.insert(name.clone());
        w.other_names.push(name);
    }
    // Commit, so that generations only move when something writes.
    btrfs::sync(fd.as_fd()).unwrap();
    w
}

/// Names (roots and their metadata files) that must be exactly as they were.
fn protected(w: &World) -> BTreeSet<String> {
    w.foreign
        .iter()
        .flat_map(|n| [n.clone(), RootMeta::file_name(n)])
        .collect()
}

fn check_only_allowed_gone(
    what: &str,
    before: &BTreeMap<String, Print>,
    after: &BTreeMap<String, Print>,
    w: &World,
    may_delete: &dyn Fn(&str) -> bool,
) {
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        let root = name.strip_suffix(".json").unwrap_or(name);
        assert!(
            RetiredName::parse(root).is_some() && may_delete(root),
            "{what} removed '{name}', which it must not"
        );
    }
    for n in protected(w) {
        assert_eq!(before.get(&n), after.get(&n), "{what} changed '{n}'");
    }
}

fn run_case(s: &Scratch, c: &Case) -> Result<(), TestCaseError> {
    reset(s);
    let w = build(s, c);
    let dir = s.top.join("old_roots");
    let newest = w.managed.values().map(|v| v.0).max();

    // prune: only managed, unmounted, unpinned roots, never the newest.
    let base = fs::read_to_string(&s.config).unwrap();
    let base = base.split("[retention]").next().unwrap().to_string();
    fs::write(
        &s.config,
        format!("{base}[retention]\nkeep_last = {}\n", c.keep_last),
    )
    .unwrap();
    let before = census(&dir);
    let out = s.tabula(&["roots", "prune"]);
    prop_assert!(
        out.status.code().is_some(),
        "prune crashed: {}",
        stderr(&out)
    );
    let after = census(&dir);
    check_only_allowed_gone("prune", &before, &after, &w, &|n| {
        w.managed
            .get(n)
            .is_some_and(|(seq, pinned, mounted)| !pinned && !mounted && Some(*seq) != newest)
    });

    // delete: the same set, except that --force also allows pinned roots and the newest.
    let r = match &c.delete {
        Ref::Back(n) => format!("-{n}"),
        Ref::ManagedSeq(i) => (i + 1).to_string(),
        Ref::Other(i) => w
            .other_names
            .get(*i)
            .cloned()
            .unwrap_or_else(|| "-1".into()),
    };
    let mut args = vec!["roots", "delete"];
    if c.force {
        args.push("--force");
    }
    args.push(&r);
    let before = after;
    let out = s.tabula(&args);
    prop_assert!(
        out.status.code().is_some(),
        "delete crashed: {}",
        stderr(&out)
    );
    let after = census(&dir);
    check_only_allowed_gone("delete", &before, &after, &w, &|n| {
        w.managed.get(n).is_some_and(|(seq, pinned, mounted)| {
            !mounted && (c.force || (!pinned && Some(*seq) != newest))
        })
    });
    if let Ref::Back(n) = &c.delete {
        // `-n` names the n-th newest managed root, or nothing.
        let mut seqs: Vec<(u64, &String)> = w
            .managed
            .iter()
            .filter(|(k, _)| before.contains_key(*k))
            .map(|(k, v)| (v.0, k))
            .collect();
        seqs.sort();
        let target = seqs.iter().rev().nth(n - 1).map(|x| x.1.clone());
        for gone in before.keys().filter(|k| !after.contains_key(*k)) {
            let root = gone.strip_suffix(".json").unwrap_or(gone);
            prop_assert_eq!(
                Some(root.to_string()),
                target.clone(),
                "-{} deleted '{}'",
                n,
                gone
            );
        }
    }

    // rollback: retires `root` under a sequence number above everything tabula ever used, and writes
    // nothing it did not retire.
    fs::write(s.top.join("root/written"), "x").unwrap();
    let before = after;
    let out = s.tabula(&["rollback"]);
    prop_assert!(out.status.success(), "rollback failed: {}", stderr(&out));
    let after = census(&dir);
    for n in protected(&w) {
        prop_assert_eq!(before.get(&n), after.get(&n), "rollback changed '{}'", n);
    }
    prop_assert!(
        before.keys().all(|k| after.contains_key(k)),
        "rollback removed something"
    );
    let new: Vec<&String> = after
        .keys()
        .filter(|k| !before.contains_key(*k) && RetiredName::parse(k).is_some())
        .collect();
    prop_assert_eq!(new.len(), 1, "one new retired root: {:?}", new);
    let seq = RetiredName::parse(new[0]).unwrap().seq();
    prop_assert!(
        seq > w.high_water,
        "sequence went back: {} after {}",
        seq,
        w.high_water
    );
    prop_assert_eq!(
        seq,
        w.high_water + 1,
        "names tabula did not retire count for nothing"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn old_roots_hold_only_what_tabula_may_touch() {
    let Some(s) = Scratch::new("old_roots_property", 600) else {
        return;
    };
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    fs::create_dir_all(s.top.join("root/etc")).unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    let cases = std::env::var("TABULA_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..Config::default()
    });
    let start = std::time::Instant::now();
    let result = runner.run(&case(), |c| run_case(&s, &c));
    eprintln!("{cases} cases in {:.1?}", start.elapsed());
    if let Err(e) = result {
        panic!("{e}");
    }
}
