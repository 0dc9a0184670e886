//! The persist rules as a table: hand-built observations, no disk, no root.

use std::path::{Path, PathBuf};

use super::*;
use crate::persist::observe::{FileType, ObservedEntry, PersistDir, Probe, Stat};
use crate::persist::walk;

const DEV: u64 = 7;

fn stat(file_type: FileType, ino: u64) -> Stat {
    Stat {
        file_type,
        uid: 0,
        gid: 0,
        mode: if file_type == FileType::File {
            0o644
        } else {
            0o755
        },
        dev: DEV,
        ino,
        nlink: 1,
        size: 0,
    }
}

/// A directory (each one a different inode).
fn d(ino: u64) -> Probe {
    Probe::Found(stat(FileType::Directory, ino))
}
/// A regular file of `size` bytes.
fn f(ino: u64, size: u64) -> Probe {
    Probe::Found(Stat {
        size,
        ..stat(FileType::File, ino)
    })
}
/// A symlink.
fn l(ino: u64) -> Probe {
    Probe::Found(stat(FileType::Symlink, ino))
}
fn m() -> Probe {
    Probe::Missing
}
fn with(p: Probe, change: impl FnOnce(&mut Stat)) -> Probe {
    match p {
        Probe::Found(mut st) => {
            change(&mut st);
            Probe::Found(st)
        }
        other => other,
    }
}

fn config(persist: &str) -> Config {
    let text = format!("[layout]\ndevice = \"/dev/vda2\"\n\n{persist}");
    match Config::parse(Path::new("/etc/tabula/tabula.toml"), &text) {
        Ok(c) => c,
        Err(e) => panic!("config: {e}\n{text}"),
    }
}

fn entry(src: Vec<Probe>, tgt: Vec<Probe>) -> ObservedEntry {
    ObservedEntry {
        source_chain: src,
        target_chain: tgt,
        target_is_mount: Some(false),
        ..ObservedEntry::default()
    }
}

fn observed(entries: Vec<ObservedEntry>) -> Observed {
    Observed {
        root: PathBuf::from("/sysroot"),
        running: false,
        root_mnt_id: 1,
        persist_dir: Some(PersistDir {
            mnt_id: DEV,
            is_mount: Some(true),
        }),
        accounts: [("alice".to_string(), Ok((1000, 100)))]
            .into_iter()
            .collect(),
        entries,
    }
}

/// One rule: a one-entry config, what is on disk, and the verdict.
struct Case {
    name: &'static str,
    persist: &'static str,
    adopt: bool,
    running: bool,
    obs: ObservedEntry,
    state: State,
    ops: &'static [&'static str],
    rule: Option<&'static str>,
    message: Option<&'static str>,
    warning: Option<&'static str>,
}

const DIR_LOG: &str = "[persist]\ndirectories = [\"/var/log\"]\n";
const FILE_ID: &str = "[persist]\nfiles = [\"/etc/machine-id\"]\n";
const COPY_SHADOW: &str = "[persist]\nfiles = [{ path = \"/etc/shadow\", how = \"copy\" }]\n";
const LINK_RC: &str = "[persist]\nfiles = [{ path = \"/etc/foo.conf\", how = \"symlink\" }]\n";

fn case(name: &'static str, persist: &'static str, obs: ObservedEntry, state: State) -> Case {
    Case {
        name,
        persist,
        adopt: false,
        running: false,
        obs,
        state,
        ops: &[],
        rule: None,
        message: None,
        warning: None,
    }
}

impl Case {
    fn ops(mut self, ops: &'static [&'static str]) -> Case {
        self.ops = ops;
        self
    }
    fn rule(mut self, rule: &'static str) -> Case {
        self.rule = Some(rule);
        self
    }
    fn message(mut self, m: &'static str) -> Case {
        self.message = Some(m);
        self
    }
    fn warning(mut self, w: &'static str) -> Case {
        self.warning = Some(w);
        self
    }
    fn adopt(mut self) -> Case {
        self.adopt = true;
        self
    }
    fn running(mut self) -> Case {
        self.running = true;
        self
    }
}

fn cases() -> Vec<Case> {
    use crate::persist::State::*;
    let same = f(50, 3);
    vec![
        case(
            "nothing exists yet",
            DIR_LOG,
            entry(vec![m()], vec![m()]),
            Ready,
        )
        .ops(&["mkdir", "mkdir", "mkdir", "mkdir", "bind"]),
        case(
            "all there, not mounted",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![d(3), d(4)]),
            Ready,
        )
        .ops(&["bind"]),
        case(
            "already bound",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![d(3), d(2)]),
            InPlace,
        ),
        case(
            "symlink at a source parent",
            DIR_LOG,
            entry(vec![l(1)], vec![d(3), d(4)]),
            Refused,
        )
        .rule(walk::RULE_SYMLINK)
        .message("'/sysroot/persist/var' is a symlink"),
        case(
            "symlink at the source",
            DIR_LOG,
            entry(vec![d(1), l(2)], vec![d(3), d(4)]),
            Refused,
        )
        .rule(walk::RULE_SYMLINK),
        case(
            "symlink at a target parent",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![l(3)]),
            Refused,
        )
        .rule(walk::RULE_SYMLINK)
        .message("'/sysroot/var' is a symlink"),
        case(
            "symlink at the target",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![d(3), l(4)]),
            Refused,
        )
        .rule(walk::RULE_SYMLINK),
        case(
            "file in the way of a source parent",
            DIR_LOG,
            entry(vec![f(1, 0)], vec![]),
            Failed,
        )
        .message("'/sysroot/persist/var' is in the way and is not a directory"),
        case(
            "file in the way of a target parent",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![f(3, 0)]),
            Failed,
        )
        .message("'/sysroot/var' is in the way and is not a directory"),
        case(
            "source is a file, entry a directory",
            DIR_LOG,
            entry(vec![d(1), f(2, 0)], vec![]),
            Failed,
        )
        .message("exists and is not a directory"),
        case(
            "target is a file, entry a directory",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![d(3), f(4, 1)]),
            Failed,
        )
        .message("'/sysroot/var/log' exists in the root and is not a directory"),
        case(
            "a mount of something else at the target",
            DIR_LOG,
            ObservedEntry {
                target_is_mount: Some(true),
                ..entry(vec![d(1), d(2)], vec![d(3), d(4)])
            },
            Failed,
        )
        .message("already a mount point of something else"),
        case(
            "the mount would hide entries",
            DIR_LOG,
            ObservedEntry {
                target_entries: Some(Ok(3)),
                ..entry(vec![d(1), d(2)], vec![d(3), d(4)])
            },
            Ready,
        )
        .ops(&["bind"])
        .warning("'/sysroot/var/log' already has 3 entries in the root: the bind mount hides them"),
        case(
            "an observation that failed fails the entry with its rule",
            DIR_LOG,
            entry(
                vec![Probe::Failed(Failure {
                    rule: Some("some-rule"),
                    message: "no".into(),
                })],
                vec![],
            ),
            Refused,
        )
        .rule("some-rule")
        .message("no"),
        case(
            "a file: no target yet",
            FILE_ID,
            entry(vec![d(1), f(2, 1)], vec![d(3), m()]),
            Ready,
        )
        .ops(&["create_file", "bind"]),
        case(
            "a file: the mount would hide bytes",
            FILE_ID,
            entry(vec![d(1), f(2, 1)], vec![d(3), f(4, 33)]),
            Ready,
        )
        .ops(&["bind"])
        .warning("'/sysroot/etc/machine-id' already has 33 bytes in the root"),
        case(
            "a file: bound",
            FILE_ID,
            entry(vec![d(1), same.clone()], vec![d(3), same.clone()]),
            InPlace,
        ),
        case(
            "a file without a source",
            FILE_ID,
            entry(vec![d(1), m()], vec![d(3), f(4, 33)]),
            SourceMissing,
        )
        .message("nothing is mounted this boot"),
        case(
            "adopt a file generated this boot",
            FILE_ID,
            entry(vec![d(1), m()], vec![d(3), f(4, 33)]),
            Ready,
        )
        .adopt()
        .ops(&["adopt", "bind"]),
        case(
            "never adopt a hard-linked file",
            FILE_ID,
            entry(vec![d(1), m()], vec![d(3), with(f(4, 33), |s| s.nlink = 2)]),
            SourceMissing,
        )
        .adopt()
        .message("has no regular file to adopt"),
        case(
            "adopt refuses a symlink at the target",
            FILE_ID,
            entry(vec![d(1), m()], vec![d(3), l(4)]),
            Refused,
        )
        .adopt()
        .rule(walk::RULE_SYMLINK),
        case(
            "an explicit mode is enforced on an existing source",
            "[persist]\ndirectories = [{ path = \"/var/log\", mode = \"0700\" }]\n",
            entry(vec![d(1), d(2)], vec![d(3), d(2)]),
            Ready,
        )
        .ops(&["set_owner_mode"]),
        case(
            "an explicit mode is never set on a hard-linked file",
            "[persist]\nfiles = [{ path = \"/etc/machine-id\", mode = \"0600\" }]\n",
            entry(vec![d(1), with(f(2, 1), |s| s.nlink = 2)], vec![d(3), m()]),
            Refused,
        )
        .rule(walk::RULE_HARDLINK),
        case(
            "a default mode is never enforced",
            DIR_LOG,
            entry(vec![d(1), with(d(2), |s| s.mode = 0o700)], vec![d(3), d(2)]),
            InPlace,
        ),
        case(
            "an unknown user fails its entry",
            "[persist]\ndirectories = [{ path = \"/srv\", user = \"nobody-here\" }]\n",
            ObservedEntry {
                explicit_uid: Some(Err("user 'nobody-here' not found".into())),
                ..entry(vec![m()], vec![m()])
            },
            Failed,
        )
        .message("/etc/tabula/tabula.toml:5:40: user 'nobody-here' not found"),
        case(
            "a user's missing home is created as theirs",
            "[[persist.users]]\nname = \"alice\"\ndirectories = [\".ssh\"]\n",
            entry(vec![d(1), m()], vec![d(3), d(4), m()]),
            Ready,
        )
        .ops(&["mkdir", "mkdir", "mkdir", "bind"]),
        case(
            "copy: no source",
            COPY_SHADOW,
            entry(vec![d(1), m()], vec![d(3), f(4, 9)]),
            SourceMissing,
        )
        .message("nothing is copied this boot"),
        case(
            "copy: no target",
            COPY_SHADOW,
            entry(vec![d(1), f(2, 9)], vec![d(3), m()]),
            Ready,
        )
        .ops(&["copy_in"]),
        case(
            "copy: equal",
            COPY_SHADOW,
            ObservedEntry {
                copy_current: Some(Ok(true)),
                ..entry(vec![d(1), f(2, 9)], vec![d(3), f(4, 9)])
            },
            InPlace,
        ),
        case(
            "copy: differs in the initrd, the persistent copy wins",
            COPY_SHADOW,
            ObservedEntry {
                copy_current: Some(Ok(false)),
                ..entry(vec![d(1), f(2, 9)], vec![d(3), f(4, 9)])
            },
            Ready,
        )
        .ops(&["copy_in"]),
        case(
            "copy: differs on a running system, the live file wins",
            COPY_SHADOW,
            ObservedEntry {
                copy_current: Some(Ok(false)),
                ..entry(vec![d(1), f(2, 9)], vec![d(3), f(4, 9)])
            },
            InPlace,
        )
        .running()
        .warning("on a running system the live file is kept"),
        case(
            "copy: a hard-linked source is refused",
            COPY_SHADOW,
            entry(vec![d(1), with(f(2, 9), |s| s.nlink = 3)], vec![d(3), m()]),
            Refused,
        )
        .rule(walk::RULE_HARDLINK),
        case(
            "copy: never over a mount",
            COPY_SHADOW,
            ObservedEntry {
                target_is_mount: Some(true),
                ..entry(vec![d(1), f(2, 9)], vec![d(3), f(4, 9)])
            },
            Failed,
        )
        .message("is a mount point"),
        case(
            "symlink: none yet",
            LINK_RC,
            entry(vec![d(1), f(2, 1)], vec![d(3), m()]),
            Ready,
        )
        .ops(&["symlink"]),
        case(
            "symlink: source missing, it dangles",
            LINK_RC,
            entry(vec![d(1), m()], vec![d(3), m()]),
            Ready,
        )
        .ops(&["symlink"])
        .message("the symlink dangles"),
        case(
            "symlink: in place",
            LINK_RC,
            ObservedEntry {
                target_link: Some(Ok(Some("/persist/etc/foo.conf".into()))),
                ..entry(vec![d(1), f(2, 1)], vec![d(3), l(4)])
            },
            InPlace,
        ),
        case(
            "symlink: pointing elsewhere",
            LINK_RC,
            ObservedEntry {
                target_link: Some(Ok(Some("/tmp/x".into()))),
                ..entry(vec![d(1), f(2, 1)], vec![d(3), l(4)])
            },
            Failed,
        )
        .message("is a symlink to '/tmp/x'"),
        case(
            "symlink: a file in the way",
            LINK_RC,
            entry(vec![d(1), f(2, 1)], vec![d(3), f(4, 1)]),
            Failed,
        )
        .message("a file already exists at '/sysroot/etc/foo.conf'"),
    ]
}

#[test]
fn each_rule_decides_from_the_observation_alone() {
    let mut failures = Vec::new();
    for c in cases() {
        let cfg = config(c.persist);
        let mut obs = observed(vec![c.obs]);
        obs.running = c.running;
        let plan = plan_observed(&obs, &cfg, PlanOptions { adopt: c.adopt }).unwrap();
        let e = &plan.entries[0];
        let ops: Vec<String> = e
            .ops
            .iter()
            .map(|o| {
                serde_json::to_value(o).unwrap()["op"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let ok = e.state == c.state
            && ops == c.ops
            && e.rule == c.rule
            && c.message
                .is_none_or(|m| e.message.as_deref().is_some_and(|x| x.contains(m)))
            && match c.warning {
                Some(w) => e.warnings.iter().any(|x| x.contains(w)),
                None => e.warnings.is_empty(),
            };
        if !ok {
            failures.push(format!("{}: {e:#?}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn created_parents_copy_the_source_side() {
    let cfg = config("[[persist.users]]\nname = \"alice\"\ndirectories = [\".ssh\"]\n");
    let obs = observed(vec![entry(vec![d(1), m()], vec![d(3), m()])]);
    let plan = plan_observed(&obs, &cfg, PlanOptions::default()).unwrap();
    let e = &plan.entries[0];
    let mkdir = |path: &str, uid, gid, mode| Op::Mkdir {
        path: path.into(),
        uid,
        gid,
        mode: Perms(mode),
    };
    assert_eq!(
        e.ops,
        [
            // Inside the home: the user's, 0700.
            mkdir("/persist/home/alice", 1000, 100, 0o700),
            // The entry itself: the user's, default mode.
            mkdir("/persist/home/alice/.ssh", 1000, 100, 0o755),
            // The target parent copies the source parent.
            mkdir("/home/alice", 1000, 100, 0o700),
            mkdir("/home/alice/.ssh", 1000, 100, 0o755),
            Op::Bind {
                source: "/persist/home/alice/.ssh".into(),
                target: "/home/alice/.ssh".into(),
            },
        ]
    );
}

#[test]
fn persistent_storage_must_be_a_mount() {
    let cfg = config(DIR_LOG);
    let mut obs = observed(vec![entry(vec![m()], vec![m()])]);
    obs.persist_dir = Some(PersistDir {
        mnt_id: 1,
        is_mount: Some(false),
    });
    let err = plan_observed(&obs, &cfg, PlanOptions::default()).unwrap_err();
    assert_eq!(
        crate::error::exit_status(&err),
        crate::error::ExitStatus::Refused,
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("not a mount point"), "{err:#}");
    // Another mount (a subvolume mounted there) or an entry in the mount table: fine.
    obs.persist_dir = Some(PersistDir {
        mnt_id: 1,
        is_mount: Some(true),
    });
    assert!(plan_observed(&obs, &cfg, PlanOptions::default()).is_ok());
    obs.persist_dir = None;
    let err = plan_observed(&obs, &cfg, PlanOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

#[test]
fn one_failing_entry_does_not_stop_the_others() {
    let cfg = config("[persist]\ndirectories = [\"/var/lib/broken\", \"/var/log\"]\n");
    let obs = observed(vec![
        entry(vec![d(1), d(2), f(3, 0)], vec![]),
        entry(vec![m()], vec![m()]),
    ]);
    let plan = plan_observed(&obs, &cfg, PlanOptions::default()).unwrap();
    assert_eq!(plan.entries[0].target, Path::new("/var/lib/broken"));
    assert_eq!(plan.entries[0].state, State::Failed);
    assert_eq!(plan.entries[1].state, State::Ready);
    // A failed entry plans nothing, even the operations decided before the failure.
    assert!(plan.entries[0].ops.is_empty());
}

/// The rule `persist`, `check --blank` and `status` share: what is in the way at a target.
#[test]
fn what_is_in_the_way() {
    use InTheWay::*;
    let dir = stat(FileType::Directory, 1);
    let file = stat(FileType::File, 2);
    let link = stat(FileType::Symlink, 3);
    let fifo = stat(FileType::Other, 4);
    let table = [
        (Kind::Directory, How::Bind, dir, None),
        (Kind::Directory, How::Bind, file, Some(NotADirectory)),
        (Kind::Directory, How::Bind, link, Some(Symlink)),
        (Kind::File, How::Bind, file, None),
        (Kind::File, How::Bind, dir, Some(NotARegularFile)),
        (Kind::File, How::Bind, fifo, Some(NotARegularFile)),
        (Kind::File, How::Bind, link, Some(Symlink)),
        (Kind::File, How::Copy, file, None),
        (Kind::File, How::Copy, dir, Some(NotARegularFile)),
        (Kind::File, How::Copy, link, Some(Symlink)),
        (Kind::File, How::Symlink, link, None),
        (Kind::File, How::Symlink, file, Some(NotASymlink)),
        (Kind::File, How::Symlink, dir, Some(NotASymlink)),
    ];
    for (kind, how, st, expected) in table {
        assert_eq!(
            in_the_way(kind, how, &st),
            expected,
            "{kind:?} {how:?} {:?}",
            st.file_type
        );
    }
}

/// The other shared rule: what a bind mount hides.
#[test]
fn what_a_mount_hides() {
    let dir = stat(FileType::Directory, 1);
    let empty = stat(FileType::File, 2);
    let full = Stat { size: 12, ..empty };
    let no_count = || -> anyhow::Result<u64> { panic!("counted entries of a file") };
    assert_eq!(Hidden::of(Kind::Directory, &dir, || Ok(0)).unwrap(), None);
    assert_eq!(
        Hidden::of(Kind::Directory, &dir, || Ok(4)).unwrap(),
        Some(Hidden::Entries(4))
    );
    assert_eq!(Hidden::of(Kind::File, &empty, no_count).unwrap(), None);
    assert_eq!(
        Hidden::of(Kind::File, &full, no_count).unwrap(),
        Some(Hidden::Bytes(12))
    );
    // Not the entry's type: nothing a mount of that kind would hide (the type rule speaks instead).
    assert_eq!(Hidden::of(Kind::File, &dir, no_count).unwrap(), None);
    assert!(Hidden::of(Kind::Directory, &dir, || anyhow::bail!("unreadable")).is_err());
}

/// `tabula status`: the same observation, read on a running system.
#[test]
fn status_rules() {
    use crate::persist::State::*;
    use crate::persist::status_observed;
    let same = d(2);
    let file = f(20, 5);
    let link_to = |t: &str| ObservedEntry {
        target_link: Some(Ok(Some(t.into()))),
        ..entry(vec![d(1), file.clone()], vec![d(3), l(4)])
    };
    let table: Vec<(&str, &str, ObservedEntry, State, Option<&str>)> = vec![
        (
            "bound",
            DIR_LOG,
            entry(vec![d(1), same.clone()], vec![d(3), same.clone()]),
            InPlace,
            None,
        ),
        (
            "not bound",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![d(3), d(4)]),
            Ready,
            Some("'/sysroot/var/log' is not a bind mount of '/sysroot/persist/var/log'"),
        ),
        (
            "no target",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![d(3), m()]),
            Ready,
            Some("does not exist"),
        ),
        (
            "no source",
            DIR_LOG,
            entry(vec![d(1), m()], vec![d(3), d(4)]),
            SourceMissing,
            Some("is not persistent"),
        ),
        (
            "a symlink as source",
            DIR_LOG,
            entry(vec![d(1), l(2)], vec![d(3), d(4)]),
            Refused,
            Some("is a symlink"),
        ),
        (
            "a symlink on the source's way",
            DIR_LOG,
            entry(vec![l(1)], vec![d(3), d(4)]),
            Refused,
            Some("'/sysroot/persist/var' is a symlink"),
        ),
        (
            "a symlink on the target's way",
            DIR_LOG,
            entry(vec![d(1), d(2)], vec![l(3)]),
            Refused,
            Some("'/sysroot/var' is a symlink"),
        ),
        (
            "a file as source",
            DIR_LOG,
            entry(vec![d(1), f(2, 0)], vec![]),
            Failed,
            Some("is not a directory"),
        ),
        (
            "copy in sync",
            COPY_SHADOW,
            ObservedEntry {
                copy_current: Some(Ok(true)),
                ..entry(vec![d(1), file.clone()], vec![d(3), f(4, 5)])
            },
            InPlace,
            None,
        ),
        (
            "copy without a source",
            COPY_SHADOW,
            entry(vec![d(1), m()], vec![d(3), f(4, 5)]),
            SourceMissing,
            Some("until `tabula persist sync`"),
        ),
        (
            "copy without a live file",
            COPY_SHADOW,
            entry(vec![d(1), file.clone()], vec![d(3), m()]),
            Ready,
            Some("does not exist"),
        ),
        (
            "symlink in place",
            LINK_RC,
            link_to("/persist/etc/foo.conf"),
            InPlace,
            None,
        ),
        (
            "symlink elsewhere",
            LINK_RC,
            link_to("/tmp/x"),
            Ready,
            Some("points to '/tmp/x'"),
        ),
        (
            "a file, not a symlink",
            LINK_RC,
            entry(vec![d(1), file.clone()], vec![d(3), f(4, 1)]),
            Ready,
            Some("is not a symlink to"),
        ),
        (
            "a dangling symlink",
            LINK_RC,
            ObservedEntry {
                target_link: Some(Ok(Some("/persist/etc/foo.conf".into()))),
                ..entry(vec![d(1), m()], vec![d(3), l(4)])
            },
            SourceMissing,
            Some("the symlink dangles"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, persist, obs, state, message) in table {
        let cfg = config(persist);
        let mut o = observed(vec![obs]);
        o.running = true;
        let s = &status_observed(&o, &cfg)[0];
        let ok = s.state == state
            && message.is_none_or(|m| s.message.as_deref().is_some_and(|x| x.contains(m)))
            && (message.is_some() || s.message.is_none())
            // The plan's record: a refusal names its rule, as in a plan; a status plans no operation.
            && (s.state == Refused) == s.rule.is_some()
            && s.ops.is_empty();
        if !ok {
            failures.push(format!("{name}: {s:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Drift: owner and mode the config states are reported, the entry stays in place.
    let cfg = config("[persist]\ndirectories = [{ path = \"/var/log\", mode = \"0700\" }]\n");
    let s = &status_observed(
        &observed(vec![entry(vec![d(1), same.clone()], vec![d(3), same])]),
        &cfg,
    )[0];
    assert_eq!(s.state, InPlace);
    assert_eq!(s.problems, ["mode is 0755, the config says 0700"]);
    // A copy that differs: in place, not synced.
    let cfg = config(COPY_SHADOW);
    let differs = ObservedEntry {
        copy_current: Some(Ok(false)),
        ..entry(vec![d(1), file.clone()], vec![d(3), f(4, 5)])
    };
    let s = &status_observed(&observed(vec![differs]), &cfg)[0];
    assert_eq!((s.state, s.synced), (InPlace, Some(false)));
    assert!(s.problems[0].contains("not synced yet"), "{s:#?}");
}

/// `tabula persist sync`: the same observation of a copy entry, read for copying back.
#[test]
fn sync_rules() {
    use crate::persist::State::*;
    use crate::persist::sync::{sync_action, sync_entry};
    let current = |same: Result<bool, Failure>, src: Vec<Probe>, tgt: Vec<Probe>| ObservedEntry {
        copy_current: Some(same),
        ..entry(src, tgt)
    };
    let linked = with(f(4, 5), |st| st.nlink = 2);
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        &str,
        bool,
        ObservedEntry,
        State,
        &[&str],
        &str,
        Option<&str>,
    )> = vec![
        // name, prune, observation -> state, ops, action, message
        (
            "in sync",
            false,
            current(Ok(true), vec![d(1), f(2, 5)], vec![d(3), f(4, 5)]),
            InPlace,
            &[],
            "in_sync",
            None,
        ),
        (
            "changed",
            false,
            current(Ok(false), vec![d(1), f(2, 5)], vec![d(3), f(4, 5)]),
            Ready,
            &["copy_back"],
            "copy",
            None,
        ),
        (
            "no persistent copy yet",
            false,
            entry(vec![d(1), m()], vec![d(3), f(4, 5)]),
            Ready,
            &["copy_back"],
            "copy",
            None,
        ),
        (
            "no persistent parent yet",
            false,
            entry(vec![m()], vec![d(3), f(4, 5)]),
            Ready,
            &["mkdir", "copy_back"],
            "copy",
            None,
        ),
        (
            "deleted, kept",
            false,
            entry(vec![d(1), f(2, 5)], vec![d(3), m()]),
            InPlace,
            &[],
            "kept",
            Some("is gone from the live system"),
        ),
        (
            "deleted, pruned",
            true,
            entry(vec![d(1), f(2, 5)], vec![d(3), m()]),
            Ready,
            &["remove_copy"],
            "prune",
            None,
        ),
        (
            "a symlink on the persistent side's way",
            false,
            entry(vec![l(1)], vec![d(3), f(4, 5)]),
            Refused,
            &[],
            "refused",
            Some("'/sysroot/persist/etc' is a symlink"),
        ),
        (
            "a file on the persistent side's way",
            true,
            entry(vec![f(1, 0)], vec![d(3), f(4, 5)]),
            Failed,
            &[],
            "failed",
            Some("'/sysroot/persist/etc' is in the way and is not a directory"),
        ),
        (
            "a symlink on the live side's way",
            false,
            entry(vec![d(1), f(2, 5)], vec![l(3)]),
            Refused,
            &[],
            "refused",
            Some("'/sysroot/etc' is a symlink"),
        ),
        (
            "a live file with other hard links",
            false,
            entry(vec![d(1), f(2, 5)], vec![d(3), linked]),
            Refused,
            &[],
            "refused",
            Some("has 2 hard links"),
        ),
        (
            "a live symlink",
            false,
            entry(vec![d(1), f(2, 5)], vec![d(3), l(4)]),
            Refused,
            &[],
            "refused",
            Some("'/sysroot/etc/shadow' was replaced by a symlink"),
        ),
        (
            "the comparison failed",
            false,
            current(
                Err(Failure::msg("reading: EIO")),
                vec![d(1), f(2, 5)],
                vec![d(3), f(4, 5)],
            ),
            Failed,
            &[],
            "failed",
            Some("reading: EIO"),
        ),
        (
            "the persistent copy could not be inspected",
            false,
            entry(
                vec![d(1), Probe::Failed(Failure::msg("inspecting: EIO"))],
                vec![d(3), f(4, 5)],
            ),
            Failed,
            &[],
            "failed",
            Some("inspecting: EIO"),
        ),
    ];
    let cfg = config(COPY_SHADOW);
    let e = &cfg.persist.entries()[0];
    let o = observed(Vec::new());
    let mut failures = Vec::new();
    for (name, prune, obs, state, ops, action, message) in table {
        let s = sync_entry(&o.root, &cfg, &o.accounts, e, &obs, prune);
        let kinds: Vec<String> = s
            .ops
            .iter()
            .map(|op| serde_json::to_value(op).unwrap_or_default()["op"].to_string())
            .map(|k| k.trim_matches('"').to_string())
            .collect();
        let ok = s.state == state
            && kinds == ops
            && sync_action(&s).0 == action
            && (s.state == Refused) == s.rule.is_some()
            && message.is_none_or(|m| s.message.as_deref().is_some_and(|x| x.contains(m)))
            && (message.is_some() || s.message.is_none());
        if !ok {
            failures.push(format!("{name}: {s:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Missing parents of a persistent copy in a home: the user, 0700; above it root, 0755.
    let cfg = config(
        "[[persist.users]]\nname = \"alice\"\nfiles = [{ path = \".bash_history\", how = \"copy\" }]\n",
    );
    let e = &cfg.persist.entries()[0];
    let s = sync_entry(
        &o.root,
        &cfg,
        &o.accounts,
        e,
        &entry(vec![m()], vec![d(3), d(4), f(5, 1)]),
        false,
    );
    let ops: Vec<String> = s.ops.iter().map(|op| op.to_string()).collect();
    assert_eq!(
        ops,
        [
            "create directory '/persist/home' (0:0 0755)",
            "create directory '/persist/home/alice' (1000:100 0700)",
            "copy '/home/alice/.bash_history' back to '/persist/home/alice/.bash_history' (owner, mode, xattrs, times)",
        ],
        "{s:#?}"
    );
}
