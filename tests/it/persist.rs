//! Persistence against real mounts: each test that mounts runs in a private mount namespace and
//! unmounts what it mounted (guard), even on failure. Most need only mounts, and run as any user in a
//! user namespace of their own ([`enter_user_namespace`]); those that chown to other uids or need btrfs
//! need root ([`enter_private_namespace`], marked `needs root`).

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tabula::check::{CheckOptions, Severity};
use tabula::config::Config;
use tabula::persist::{self, PlanOptions, Report, Shadow, State};

// The harness's guard that unmounts everything under a directory, under the name these tests use.
use crate::common::{
    MountsUnder as MountGuard, enter_private_namespace, enter_user_namespace, mount_points,
};

// ------------------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------------------

/// A temp dir holding one persistent store and any number of "new roots". Fields drop in order: mounts
/// go before the directory is deleted.
struct Env {
    guard: MountGuard,
    _tmp: tempfile::TempDir,
    store: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = fs::canonicalize(tmp.path()).expect("canonical tempdir");
        let store = dir.join("store");
        fs::create_dir(&store).expect("store");
        Env {
            guard: MountGuard {
                dir,
                extra: Vec::new(),
            },
            _tmp: tmp,
            store,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.guard.dir.join(rel)
    }

    /// A fresh "new root" with the store bind-mounted at /persist, as the initrd would have it.
    fn boot(&self, name: &str) -> PathBuf {
        let root = self.path(name);
        fs::create_dir_all(root.join("persist")).expect("mkdir root/persist");
        mount(
            Some(&self.store),
            &root.join("persist"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind-mounting the store");
        root
    }

    /// Unmounts everything under `root` ("shutdown").
    fn shutdown(&self, root: &Path) {
        let mut ours: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(root))
            .collect();
        ours.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in ours {
            umount2(&m, MntFlags::MNT_DETACH).expect("unmounting");
        }
    }

    fn mounts_under(&self, root: &Path) -> usize {
        mount_points()
            .iter()
            .filter(|m| m.starts_with(root))
            .count()
    }
}

fn config(persist: &str) -> Config {
    let text = format!("[layout]\ndevice = \"/dev/vda2\"\n\n{persist}");
    match Config::parse(Path::new("/etc/tabula/tabula.toml"), &text) {
        Ok(c) => c,
        Err(e) => panic!("config: {e}\n{text}"),
    }
}

fn run(cfg: &Config, root: &Path) -> Report {
    let plan = persist::plan(cfg, root).expect("planning");
    persist::apply(&plan)
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir -p");
    fs::write(path, content).expect("write");
}

/// (uid, gid, permission bits)
fn own(path: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn same_inode(a: &Path, b: &Path) -> bool {
    let (a, b) = (
        fs::metadata(a).expect("stat a"),
        fs::metadata(b).expect("stat b"),
    );
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn outcome<'r>(report: &'r Report, target: &str) -> &'r persist::PlannedEntry {
    report
        .entries
        .iter()
        .find(|e| e.target == Path::new(target))
        .unwrap_or_else(|| panic!("no entry {target} in {report:#?}"))
}

fn assert_all(report: &Report, expected: State) {
    for e in &report.entries {
        assert_eq!(e.state, expected, "{}: {:?}", e.target.display(), e);
    }
}

/// Everything observable about a would-be victim: owner, mode and content, recursively.
fn snapshot(path: &Path) -> BTreeSet<(PathBuf, u32, u32, u32, Vec<u8>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).expect("stat victim");
        let content = if m.is_file() {
            fs::read(&p).expect("read victim")
        } else {
            Vec::new()
        };
        out.insert((p.clone(), m.uid(), m.gid(), m.mode(), content));
        if m.is_dir() {
            for e in fs::read_dir(&p).expect("list victim") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    out
}

fn victim(env: &Env, name: &str, mode: u32) -> PathBuf {
    let v = env.path(name);
    write(&v.join("secret"), "do not touch\n");
    fs::set_permissions(v.join("secret"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(&v, fs::Permissions::from_mode(mode)).expect("chmod");
    v
}

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100:Alice:/home/alice:/bin/bash\n";
const GROUP: &str = "root:x:0:\nusers:x:100:alice\nwheel:x:10:alice\n";

// ------------------------------------------------------------------------------------------------------
// Behaviour
// ------------------------------------------------------------------------------------------------------

#[test]
// Real root: chowns to uids other than 0, which a user namespace of one user cannot map.
#[ignore = "needs root: run as root with -- --include-ignored"]
fn directories_files_and_users_get_the_right_owners() {
    if !enter_private_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root1");
    // alice is named in the new root's passwd; bob only in the persistent copy; carol only by uid.
    write(&root.join("etc/passwd"), PASSWD);
    write(&root.join("etc/group"), GROUP);
    write(
        &env.store.join("etc/passwd"),
        "bob:x:1001:1001::/home/bob:/bin/sh\n",
    );
    write(&env.store.join("etc/group"), "bob:x:1001:\n");
    // Existing sources: a key that must stay 0600 (no mode in the config), one whose mode the config sets.
    write(&env.store.join("etc/ssh/ssh_host_ed25519_key"), "KEY\n");
    fs::set_permissions(
        env.store.join("etc/ssh/ssh_host_ed25519_key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write(&env.store.join("etc/ssh/ssh_host_rsa_key"), "RSA\n");
    write(&env.store.join("home/alice/.bash_history"), "ls\n");
    // alice's home exists already (from an earlier boot): it is left as it is.
    nix::unistd::chown(
        &env.store.join("home/alice"),
        Some(1000.into()),
        Some(100.into()),
    )
    .unwrap();
    fs::set_permissions(
        env.store.join("home/alice"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let cfg = config(
        r#"[persist]
directories = [
  "/var/log",
  { path = "/var/lib/private", mode = "0700" },
  { path = "/srv/git", user = 1234, group = "wheel", mode = "2750" },
  { path = "/srv/bob", user = "bob", group = "bob" },
]
files = [
  "/etc/ssh/ssh_host_ed25519_key",
  { path = "/etc/ssh/ssh_host_rsa_key", mode = "0600" },
]

[[persist.users]]
name = "alice"
directories = ["Downloads", { path = ".gnupg/private-keys-v1.d", mode = "0700" }]
files = [".bash_history"]

[[persist.users]]
name = "carol"
uid = 2000
gid = 100
home = "/home/carol"
directories = [".config/Signal"]
"#,
    );
    let report = run(&cfg, &root);
    assert_all(&report, State::Done);
    let s = |p: &str| env.store.join(p);
    let t = |p: &str| root.join(p);

    // Sources created with the configured owner/mode; their missing parents with the defaults.
    assert_eq!(own(&s("var")), (0, 0, 0o755));
    assert_eq!(own(&s("var/lib")), (0, 0, 0o755));
    assert_eq!(own(&s("var/log")), (0, 0, 0o755));
    assert_eq!(own(&s("var/lib/private")), (0, 0, 0o700));
    assert_eq!(own(&s("srv/git")), (1234, 10, 0o2750));
    assert_eq!(own(&s("srv/bob")), (1001, 1001, 0o755));
    assert_eq!(own(&s("home")), (0, 0, 0o755));
    assert_eq!(own(&s("home/alice")), (1000, 100, 0o750));
    assert_eq!(own(&s("home/alice/Downloads")), (1000, 100, 0o755));
    assert_eq!(own(&s("home/alice/.gnupg")), (1000, 100, 0o700));
    assert_eq!(
        own(&s("home/alice/.gnupg/private-keys-v1.d")),
        (1000, 100, 0o700)
    );
    assert_eq!(own(&s("home/carol")), (2000, 100, 0o700));
    assert_eq!(own(&s("home/carol/.config")), (2000, 100, 0o700));
    assert_eq!(own(&s("home/carol/.config/Signal")), (2000, 100, 0o755));
    // Existing sources: the default never loosens a mode, an explicit mode is enforced.
    assert_eq!(own(&s("etc/ssh/ssh_host_ed25519_key")), (0, 0, 0o600));
    assert_eq!(own(&s("etc/ssh/ssh_host_rsa_key")), (0, 0, 0o600));

    // Targets and their missing parents copy the sources.
    for p in [
        "var",
        "var/lib",
        "srv",
        "home",
        "home/alice",
        "home/alice/.gnupg",
        "home/carol",
        "home/carol/.config",
    ] {
        assert_eq!(own(&t(p)), own(&s(p)), "{p}");
    }
    // Everything is bound: same inode, and writes land in persistent storage.
    for p in [
        "var/log",
        "var/lib/private",
        "srv/git",
        "srv/bob",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_rsa_key",
        "home/alice/Downloads",
        "home/alice/.gnupg/private-keys-v1.d",
        "home/alice/.bash_history",
        "home/carol/.config/Signal",
    ] {
        assert!(same_inode(&t(p), &s(p)), "{p} is not bound");
    }
    assert_eq!(
        fs::read_to_string(t("etc/ssh/ssh_host_ed25519_key")).unwrap(),
        "KEY\n"
    );
    write(&t("home/alice/Downloads/film.mkv"), "bunny");
    assert_eq!(
        fs::read_to_string(s("home/alice/Downloads/film.mkv")).unwrap(),
        "bunny"
    );
}

#[test]
// Real root: alice's directories are chowned to uid 1000.
#[ignore = "needs root: run as root with -- --include-ignored"]
fn boot_one_then_boot_two_keeps_only_persisted_writes() {
    if !enter_private_namespace() {
        return;
    }
    let env = Env::new();
    let cfg = config(
        "[persist]\ndirectories = [\"/var/log\", \"/var/lib/nixos\"]\nfiles = [\"/etc/adjtime\"]\n\n\
         [[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 100\ndirectories = [\"persist\"]\n",
    );
    write(&env.store.join("etc/adjtime"), "0.0 0 0.0\n");

    let boot1 = env.boot("boot1");
    assert_all(&run(&cfg, &boot1), State::Done);
    write(&boot1.join("var/log/journal.log"), "boot 1 log\n");
    write(&boot1.join("home/alice/persist/notes.txt"), "keep me\n");
    fs::write(boot1.join("etc/adjtime"), "1.5 0 0.0\n").unwrap();
    write(&boot1.join("var/cache/junk"), "gone at reboot\n");
    write(&boot1.join("home/alice/.cache/junk"), "gone at reboot\n");
    env.shutdown(&boot1);

    // A fresh root (what rollback gives), same persistent storage.
    let boot2 = env.boot("boot2");
    assert_all(&run(&cfg, &boot2), State::Done);
    assert_eq!(
        fs::read_to_string(boot2.join("var/log/journal.log")).unwrap(),
        "boot 1 log\n"
    );
    assert_eq!(
        fs::read_to_string(boot2.join("home/alice/persist/notes.txt")).unwrap(),
        "keep me\n"
    );
    assert_eq!(
        fs::read_to_string(boot2.join("etc/adjtime")).unwrap(),
        "1.5 0 0.0\n"
    );
    assert!(!boot2.join("var/cache").exists());
    assert!(!boot2.join("home/alice/.cache").exists());
    assert!(boot2.join("var/lib/nixos").is_dir());
}

#[test]
fn machine_id_recipe_first_boot_generates_later_boots_keep() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let cfg = config("[persist]\nfiles = [\"/etc/machine-id\"]\n");

    // Boot 1, in the initrd: no source yet, so nothing is mounted and the entry says what to do.
    let boot1 = env.boot("boot1");
    let report = run(&cfg, &boot1);
    let e = outcome(&report, "/etc/machine-id");
    assert_eq!(e.state, State::SourceMissing);
    assert!(
        e.message.as_deref().is_some_and(|m| m.contains("--adopt")),
        "{e:?}"
    );
    assert_eq!(report.failed(), 0);
    assert!(
        !boot1.join("etc/machine-id").exists(),
        "tabula must not create an empty machine-id"
    );
    assert!(!env.store.join("etc/machine-id").exists());

    // systemd generates the id during boot 1 (0444, as systemd-machine-id-setup writes it).
    let id = format!(
        "{:032x}",
        std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15 + 42
    );
    write(&boot1.join("etc/machine-id"), &format!("{id}\n"));
    fs::set_permissions(
        boot1.join("etc/machine-id"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();

    // Later in boot 1, on the running system: `tabula persist --root / --adopt`.
    let plan = persist::plan_with(&cfg, &boot1, PlanOptions { adopt: true }).unwrap();
    let report = persist::apply(&plan);
    assert_all(&report, State::Done);
    assert_eq!(
        fs::read_to_string(env.store.join("etc/machine-id")).unwrap(),
        format!("{id}\n")
    );
    assert_eq!(own(&env.store.join("etc/machine-id")), (0, 0, 0o444));
    assert!(same_inode(
        &boot1.join("etc/machine-id"),
        &env.store.join("etc/machine-id")
    ));
    env.shutdown(&boot1);

    // Boots 2 and 3: the same id, bind-mounted before the system starts.
    for name in ["boot2", "boot3"] {
        let root = env.boot(name);
        assert_all(&run(&cfg, &root), State::Done);
        assert_eq!(
            fs::read_to_string(root.join("etc/machine-id")).unwrap(),
            format!("{id}\n"),
            "{name}"
        );
        env.shutdown(&root);
    }
}

#[test]
fn second_run_mounts_nothing_twice() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    write(&env.store.join("etc/machine-id"), "abc\n");
    let cfg = config(
        "[persist]\ndirectories = [\"/var/log\", { path = \"/var/lib/private\", mode = \"0700\" }]\n\
         files = [\"/etc/machine-id\", { path = \"/etc/hostid\", how = \"symlink\" }]\n",
    );
    assert_all(&run(&cfg, &root), State::Done);
    let mounts = env.mounts_under(&root);
    assert_eq!(mounts, 1 + 3, "persist + 3 binds");
    assert_eq!(
        fs::read_link(root.join("etc/hostid")).unwrap(),
        Path::new("/persist/etc/hostid")
    );

    let plan = persist::plan(&cfg, &root).unwrap();
    for e in &plan.entries {
        assert_eq!(e.state, State::InPlace, "{e:?}");
        assert!(e.ops.is_empty());
    }
    assert_all(&persist::apply(&plan), State::InPlace);
    assert_eq!(env.mounts_under(&root), mounts);

    // A plan made before the first apply, applied twice: the executor itself skips what is done.
    let root2 = env.boot("root2");
    let plan = persist::plan(&cfg, &root2).unwrap();
    assert_all(&persist::apply(&plan), State::Done);
    assert_all(&persist::apply(&plan), State::InPlace);
    assert_eq!(env.mounts_under(&root2), 4);
}

#[test]
fn a_thousand_entries() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    let mut dirs = String::new();
    for i in 0..1000 {
        dirs.push_str(&format!("\"/srv/d{:02}/e{i:04}\",\n", i % 37));
    }
    let cfg = config(&format!("[persist]\ndirectories = [\n{dirs}]\n"));
    let plan = persist::plan(&cfg, &root).unwrap();
    assert_eq!(plan.entries.len(), 1000);
    // Parents before children: the plan is ordered by path.
    assert!(plan.entries.windows(2).all(|w| w[0].target < w[1].target));
    let report = persist::apply(&plan);
    assert_all(&report, State::Done);
    assert_eq!(env.mounts_under(&root), 1001);
    assert!(same_inode(
        &root.join("srv/d05/e0005"),
        &env.store.join("srv/d05/e0005")
    ));
    assert_all(&run(&cfg, &root), State::InPlace);
    assert_eq!(env.mounts_under(&root), 1001);
}

#[test]
fn one_failing_entry_does_not_stop_the_others() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    write(
        &env.store.join("var/lib/broken"),
        "a file where a directory should be",
    );
    let cfg =
        config("[persist]\ndirectories = [\"/var/lib/broken\", \"/var/lib/ok\", \"/var/log\"]\n");
    let report = run(&cfg, &root);
    assert_eq!(outcome(&report, "/var/lib/broken").state, State::Failed);
    assert!(
        outcome(&report, "/var/lib/broken")
            .message
            .as_deref()
            .unwrap()
            .contains("not a directory")
    );
    assert_eq!(outcome(&report, "/var/lib/ok").state, State::Done);
    assert_eq!(outcome(&report, "/var/log").state, State::Done);
    let pf = report.partial_failure().expect("partial failure");
    assert_eq!((pf.failed, pf.total), (1, 3));
    assert!(!root.join("var/lib/broken").exists());
}

#[test]
fn unmounted_persistent_storage_is_refused() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.path("root");
    fs::create_dir_all(root.join("persist")).unwrap();
    let cfg = config("[persist]\ndirectories = [\"/var/log\"]\n");
    let err = persist::plan(&cfg, &root).unwrap_err();
    assert_eq!(
        tabula::error::exit_status(&err),
        tabula::error::ExitStatus::Refused,
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("not a mount point"), "{err:#}");
    assert!(!root.join("persist/var").exists());
    fs::remove_dir(root.join("persist")).unwrap();
    let err = persist::plan(&cfg, &root).unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

/// A nested subvolume at the persistent storage path has its own device number but is no mount: data
/// written there stays in the root's tree and is erased with it. Only a mount counts.
#[test]
// Real root: a loop-mounted btrfs.
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_nested_subvolume_is_not_mounted_persistent_storage() {
    let Some(s) = crate::common::Scratch::new("persist_nested_subvolume_is_not_storage", 300)
    else {
        return;
    };
    let top = s.top_fd();
    tabula::btrfs::create_subvolume(top.as_fd(), "root").unwrap();
    let root = s.top.join("root");
    tabula::btrfs::create_subvolume(crate::common::open_dir(&root).as_fd(), "persist").unwrap();
    let cfg = config("[persist]\ndirectories = [\"/var/log\"]\n");
    let err = persist::plan(&cfg, &root).unwrap_err();
    assert_eq!(
        tabula::error::exit_status(&err),
        tabula::error::ExitStatus::Refused,
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("not a mount point"), "{err:#}");
}

#[test]
fn existing_content_under_a_target_is_reported() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    write(&root.join("var/log/from-blank.log"), "x");
    write(&root.join("etc/issue"), "Welcome\n");
    write(&env.store.join("etc/issue"), "Persistent welcome\n");
    let cfg = config("[persist]\ndirectories = [\"/var/log\"]\nfiles = [\"/etc/issue\"]\n");
    let plan = persist::plan(&cfg, &root).unwrap();
    let warn = |t: &str| {
        plan.entries
            .iter()
            .find(|e| e.target == Path::new(t))
            .unwrap()
            .warnings
            .join(" ")
    };
    assert!(
        warn("/var/log").contains("1 entry in the root"),
        "{plan:#?}"
    );
    assert!(warn("/etc/issue").contains("8 bytes"), "{plan:#?}");
    assert!(plan.to_text().contains("warning:"));
    assert_all(&persist::apply(&plan), State::Done);

    // status sees the hidden data under the mounts, without changing anything.
    let status = persist::status(&cfg, &root).unwrap();
    let log = status
        .iter()
        .find(|s| s.target == Path::new("/var/log"))
        .unwrap();
    assert_eq!(log.state, State::InPlace);
    assert_eq!(log.shadow, Some(Shadow::HiddenEntries { count: 1 }));
    let issue = status
        .iter()
        .find(|s| s.target == Path::new("/etc/issue"))
        .unwrap();
    assert_eq!(issue.shadow, Some(Shadow::HiddenBytes { count: 8 }));
    assert_eq!(
        env.mounts_under(&root),
        3,
        "status must not unmount anything here"
    );
    assert!(same_inode(
        &root.join("var/log"),
        &env.store.join("var/log")
    ));
}

#[test]
fn status_reports_each_state() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    let cfg = config(
        "[persist]\ndirectories = [\"/var/log\", { path = \"/var/lib/private\", mode = \"0700\" }, \"/srv\"]\n\
         files = [\"/etc/machine-id\", { path = \"/etc/hostid\", how = \"symlink\" }]\n",
    );
    assert_eq!(run(&cfg, &root).failed(), 0);
    // Drift: wrong mode on a source, a bind that went away.
    fs::set_permissions(
        env.store.join("var/lib/private"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    umount2(&root.join("srv"), MntFlags::MNT_DETACH).unwrap();

    let status = persist::status(&cfg, &root).unwrap();
    let get = |t: &str| status.iter().find(|s| s.target == Path::new(t)).unwrap();
    assert_eq!(get("/var/log").state, State::InPlace);
    assert_eq!(get("/var/log").shadow, Some(Shadow::Clear));
    assert_eq!(get("/var/lib/private").state, State::InPlace);
    assert_eq!(
        get("/var/lib/private").problems,
        vec!["mode is 0755, the config says 0700".to_string()]
    );
    assert_eq!(get("/srv").state, State::Ready);
    assert_eq!(get("/etc/machine-id").state, State::SourceMissing);
    assert_eq!(
        get("/etc/hostid").state,
        State::SourceMissing,
        "dangling link"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json[0]["target"], "/etc/hostid");
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|e| e["state"] == "ready")
    );
}

#[test]
fn plan_is_printable_and_serialisable() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    let cfg =
        config("[persist]\ndirectories = [{ path = \"/var/lib/private\", mode = \"0700\" }]\n");
    let plan = persist::plan(&cfg, &root).unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    let ops = json["entries"][0]["ops"].as_array().unwrap();
    let kinds: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["mkdir", "mkdir", "mkdir", "mkdir", "mkdir", "mkdir", "bind"]
    );
    assert_eq!(ops[2]["path"], "/persist/var/lib/private");
    assert_eq!(ops[2]["mode"], "0700");
    assert_eq!(ops[5]["path"], "/var/lib/private");
    assert_eq!(json["entries"][0]["state"], "ready");
    // A dry run changes nothing.
    assert!(!env.store.join("var").exists());
    assert!(!root.join("var").exists());
    assert!(
        plan.to_text()
            .contains("bind-mount '/persist/var/lib/private' on '/var/lib/private'")
    );
}

// ------------------------------------------------------------------------------------------------------
// Planted symlinks and hard links: each entry refused, nothing outside touched
// ------------------------------------------------------------------------------------------------------

fn assert_refused(report: &Report, target: &str, rule: &str) {
    let e = outcome(report, target);
    assert_eq!(e.state, State::Refused, "{e:?}");
    assert_eq!(e.rule, Some(rule), "{e:?}");
    assert!(e.done.is_empty(), "{e:?}");
}

#[test]
fn symlink_at_a_source_component_is_refused() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let victim = victim(&env, "victim", 0o755);
    let before = snapshot(&victim);
    symlink(&victim, env.store.join("var")).unwrap();
    let root = env.boot("root");
    let cfg = config("[persist]\ndirectories = [\"/var/lib/nixos\", \"/srv/ok\"]\n");
    let report = run(&cfg, &root);
    assert_refused(&report, "/var/lib/nixos", "symlink-in-path");
    assert_eq!(outcome(&report, "/srv/ok").state, State::Done);
    assert_eq!(snapshot(&victim), before);
    assert!(!root.join("var").exists());
    assert_eq!(env.mounts_under(&root), 2, "persist + /srv/ok only");
}

#[test]
fn symlink_at_a_source_leaf_is_refused() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let victim = victim(&env, "victim", 0o750);
    let victim_file = env.path("victim-file");
    write(&victim_file, "root-only\n");
    fs::set_permissions(&victim_file, fs::Permissions::from_mode(0o600)).unwrap();
    let before = (snapshot(&victim), snapshot(&victim_file));
    fs::create_dir_all(env.store.join("var")).unwrap();
    fs::create_dir_all(env.store.join("etc")).unwrap();
    symlink(&victim, env.store.join("var/log")).unwrap();
    symlink(&victim_file, env.store.join("etc/shadow")).unwrap();
    let root = env.boot("root");
    // Explicit owner/mode: a followed symlink would chown/chmod the victims.
    let cfg = config(
        "[persist]\ndirectories = [{ path = \"/var/log\", user = 4242, mode = \"0777\" }]\n\
         files = [{ path = \"/etc/shadow\", user = 4242, mode = \"0666\" }]\n",
    );
    let report = run(&cfg, &root);
    assert_refused(&report, "/var/log", "symlink-in-path");
    assert_refused(&report, "/etc/shadow", "symlink-in-path");
    assert_eq!((snapshot(&victim), snapshot(&victim_file)), before);
    assert_eq!(env.mounts_under(&root), 1);
    assert!(!root.join("var/log").exists());
}

#[test]
// Real root: counts the entries of the real /root, which only root may list.
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_users_home_pointing_elsewhere_is_refused() {
    if !enter_private_namespace() {
        return;
    }
    let env = Env::new();
    let victim_etc = victim(&env, "victim-etc", 0o755);
    let victim_root = victim(&env, "victim-root", 0o700);
    // Protect the real /etc and /root in this namespace: if the code followed the symlinks, the change
    // would fail with EROFS instead of damaging the machine, and the rule asserted below would differ.
    let mut guard_extra = Vec::new();
    for real in ["/etc", "/root"] {
        mount(
            Some(real),
            real,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        guard_extra.push(PathBuf::from(real));
        mount(
            None::<&str>,
            real,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
    }
    let _real_guard = MountGuard {
        dir: env.path("none"),
        extra: guard_extra,
    };
    let real_before: Vec<_> = ["/etc", "/root"]
        .iter()
        .map(|p| (own(Path::new(p)), fs::read_dir(p).unwrap().count()))
        .collect();
    let before = (snapshot(&victim_etc), snapshot(&victim_root));

    fs::create_dir_all(env.store.join("home")).unwrap();
    symlink(&victim_etc, env.store.join("home/alice")).unwrap();
    symlink(&victim_root, env.store.join("home/bob")).unwrap();
    symlink("/etc", env.store.join("home/eve")).unwrap();
    symlink("/root", env.store.join("home/mallory")).unwrap();
    let root = env.boot("root");
    let mut users = String::new();
    for (i, name) in ["alice", "bob", "eve", "mallory"].iter().enumerate() {
        users.push_str(&format!(
            "[[persist.users]]\nname = \"{name}\"\nuid = {}\ngid = {}\ndirectories = [\"Downloads\", \".ssh\"]\n\
             files = [{{ path = \".bash_history\", mode = \"0666\" }}]\n\n",
            5000 + i,
            5000 + i
        ));
    }
    let cfg = config(&format!(
        "[persist]\ndirectories = [\"/var/log\"]\n\n{users}"
    ));
    let report = run(&cfg, &root);
    for name in ["alice", "bob", "eve", "mallory"] {
        for leaf in ["Downloads", ".ssh", ".bash_history"] {
            assert_refused(&report, &format!("/home/{name}/{leaf}"), "symlink-in-path");
        }
    }
    assert_eq!(outcome(&report, "/var/log").state, State::Done);
    assert_eq!((snapshot(&victim_etc), snapshot(&victim_root)), before);
    let real_after: Vec<_> = ["/etc", "/root"]
        .iter()
        .map(|p| (own(Path::new(p)), fs::read_dir(p).unwrap().count()))
        .collect();
    assert_eq!(real_after, real_before);
    assert!(!Path::new("/etc/Downloads").exists() && !Path::new("/root/Downloads").exists());
    assert_eq!(env.mounts_under(&root), 2);
    assert!(
        !root.join("home").exists(),
        "no target created for refused entries"
    );
}

#[test]
fn symlink_at_a_target_parent_is_refused() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let victim = victim(&env, "victim", 0o755);
    let before = snapshot(&victim);
    let root = env.boot("root");
    symlink(&victim, root.join("var")).unwrap();
    fs::create_dir_all(root.join("home")).unwrap();
    symlink(&victim, root.join("home/alice")).unwrap();
    let cfg = config(
        "[persist]\ndirectories = [\"/var/log\"]\nfiles = [\"/var/x\"]\n\n\
         [[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 100\ndirectories = [\"Downloads\"]\n",
    );
    write(&env.store.join("var/x"), "x");
    let report = run(&cfg, &root);
    assert_refused(&report, "/var/log", "symlink-in-path");
    assert_refused(&report, "/var/x", "symlink-in-path");
    assert_refused(&report, "/home/alice/Downloads", "symlink-in-path");
    assert_eq!(snapshot(&victim), before);
    assert_eq!(env.mounts_under(&root), 1);
}

#[test]
fn a_symlink_planted_after_planning_is_refused_at_apply() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let victim = victim(&env, "victim", 0o755);
    let before = snapshot(&victim);
    let root = env.boot("root");
    fs::create_dir_all(env.store.join("home")).unwrap();
    let cfg = config(
        "[persist]\ndirectories = [\"/var/log\"]\n\n[[persist.users]]\nname = \"alice\"\nuid = 1000\n\
         gid = 100\ndirectories = [\"Downloads\"]\n",
    );
    let plan = persist::plan(&cfg, &root).unwrap();
    assert!(plan.entries.iter().all(|e| e.state == State::Ready));
    // Between plan and apply: the source side and the target side are swapped for symlinks.
    symlink(&victim, env.store.join("home/alice")).unwrap();
    symlink(&victim, root.join("var")).unwrap();
    let report = persist::apply(&plan);
    assert_eq!(
        outcome(&report, "/home/alice/Downloads").state,
        State::Refused
    );
    assert_eq!(outcome(&report, "/var/log").state, State::Refused);
    assert_eq!(snapshot(&victim), before);
    assert_eq!(env.mounts_under(&root), 1);
}

#[test]
fn a_hard_linked_source_file_is_never_chmodded() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    // alice links root's key into her home: same filesystem, so a hard link is possible.
    let key = env.store.join("etc/ssh/ssh_host_ed25519_key");
    write(&key, "PRIVATE\n");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir_all(env.store.join("home/alice")).unwrap();
    fs::hard_link(&key, env.store.join("home/alice/.bash_history")).unwrap();
    let cfg = config(
        "[persist]\n\n[[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 100\n\
         files = [{ path = \".bash_history\", user = \"alice\", mode = \"0644\" }]\n",
    );
    let report = run(&cfg, &root);
    assert_refused(&report, "/home/alice/.bash_history", "hard-linked-file");
    assert_eq!(own(&key), (0, 0, 0o600));
    assert_eq!(fs::read_to_string(&key).unwrap(), "PRIVATE\n");
}

#[test]
// Real root: the link is chowned to uid 1000.
#[ignore = "needs root: run as root with -- --include-ignored"]
fn symlink_method_for_files() {
    if !enter_private_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    let cfg = config(
        "[[persist.users]]\nname = \"alice\"\nuid = 1000\ngid = 100\n\
         files = [{ path = \".emacs.d/init.el\", how = \"symlink\" }]\n",
    );
    let report = run(&cfg, &root);
    assert_all(&report, State::Done);
    let link = root.join("home/alice/.emacs.d/init.el");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("/persist/home/alice/.emacs.d/init.el")
    );
    let m = fs::symlink_metadata(&link).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 100));
    // The source's directory exists so a program can write through the link.
    assert_eq!(
        own(&env.store.join("home/alice/.emacs.d")),
        (1000, 100, 0o700)
    );
    assert_all(&run(&cfg, &root), State::InPlace);

    // A real file already at the target: refused with advice, not deleted.
    let root2 = env.boot("root2");
    write(&root2.join("home/alice/.emacs.d/init.el"), "(setq x 1)\n");
    let report = run(&cfg, &root2);
    let e = outcome(&report, "/home/alice/.emacs.d/init.el");
    assert_eq!(e.state, State::Failed);
    assert!(
        e.message.as_deref().unwrap().contains("already exists"),
        "{e:?}"
    );
    assert_eq!(
        fs::read_to_string(root2.join("home/alice/.emacs.d/init.el")).unwrap(),
        "(setq x 1)\n"
    );
}

#[test]
fn unresolvable_user_fails_only_its_entries() {
    if !enter_user_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    let cfg = config(
        "[persist]\ndirectories = [\"/var/log\", { path = \"/srv\", user = \"nobody-here\" }]\n\n\
         [[persist.users]]\nname = \"ghost\"\ndirectories = [\"Downloads\"]\n",
    );
    let report = run(&cfg, &root);
    assert_eq!(outcome(&report, "/var/log").state, State::Done);
    let srv = outcome(&report, "/srv");
    assert_eq!(srv.state, State::Failed);
    assert!(
        srv.message
            .as_deref()
            .unwrap()
            .starts_with("/etc/tabula/tabula.toml:5:52:"),
        "{srv:?}"
    );
    assert!(
        srv.message.as_deref().unwrap().contains("'nobody-here'"),
        "{srv:?}"
    );
    let ghost = outcome(&report, "/home/ghost/Downloads");
    assert_eq!(ghost.state, State::Failed);
    assert!(
        ghost
            .message
            .as_deref()
            .unwrap()
            .contains("user 'ghost' not found"),
        "{ghost:?}"
    );
}

// ------------------------------------------------------------------------------------------------------
// tabula check (no root needed)
// ------------------------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_configs")
}

#[test]
fn check_reports_each_malformed_config_with_its_position() {
    let dir = fixtures();
    let opts = CheckOptions {
        root: Some(dir.join("root")),
        blank: None,
    };
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        // "# expect: error 5:16 message substring", listed in file order.
        let expected: Vec<(Severity, usize, usize, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| {
                let (sev, rest) = l.split_once(' ').unwrap();
                let (pos, msg) = rest.split_once(' ').unwrap();
                let (line, col) = pos.split_once(':').unwrap();
                let sev = if sev == "error" {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                (sev, line.parse().unwrap(), col.parse().unwrap(), msg)
            })
            .collect();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!expected.is_empty(), "{name} has no expectations");
        let report = tabula::check::check_text(&f, &text, &opts);
        let shown: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            report.diagnostics.len(),
            expected.len(),
            "{name}:\n{}",
            shown.join("\n")
        );
        for (d, (sev, line, col, msg)) in report.diagnostics.iter().zip(&expected) {
            assert_eq!(d.file, f);
            assert_eq!(
                (d.severity, d.line, d.column),
                (*sev, Some(*line), Some(*col)),
                "{name}: {d}"
            );
            assert!(
                d.message.contains(msg),
                "{name}: {d}\n  expected to contain: {msg}"
            );
        }
        assert!(report.has_errors() && !report.is_clean());
    }
}

fn documented_example() -> String {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("reading README.md");
    let start = doc
        .find("<!-- example: nixos-desktop -->")
        .expect("example marker");
    let block = &doc[start..];
    let block = &block[block.find("```toml\n").expect("toml block") + 8..];
    block[..block.find("```").expect("end of block")].to_string()
}

/// The complete example of the README is a valid configuration.
#[test]
fn check_passes_the_documented_example() {
    let block = &documented_example();
    let file = Path::new("/etc/tabula/tabula.toml");
    let opts = CheckOptions {
        root: Some(fixtures().join("root")),
        blank: None,
    };
    let report = tabula::check::check_text(file, block, &opts);
    assert!(report.is_clean(), "{:#?}", report.diagnostics);
    let cfg = Config::parse(file, block).unwrap();
    assert!(cfg.persist.entries().len() > 15);
}

#[test]
fn check_warns_about_what_a_mount_would_hide_in_the_blank() {
    let tmp = tempfile::tempdir().unwrap();
    let blank = tmp.path();
    write(&blank.join("var/log/README"), "from the blank\n");
    write(&blank.join("etc/issue"), "Welcome\n");
    write(&blank.join("etc/hostid"), "x");
    fs::create_dir_all(blank.join("var/empty")).unwrap();
    let text = "[layout]\ndevice = \"/dev/vda2\"\n\n[persist]\n\
                directories = [\"/var/log\", \"/var/empty\", \"/srv\"]\n\
                files = [\"/etc/issue\", { path = \"/etc/hostid\", how = \"symlink\" }]\n";
    let opts = CheckOptions {
        root: Some(fixtures().join("root")),
        blank: Some(blank.to_path_buf()),
    };
    let report = tabula::check::check_text(Path::new("t.toml"), text, &opts);
    let got: Vec<(Severity, Option<usize>, Option<usize>, &str)> = report
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(got.len(), 4, "{got:#?}");
    // No position: `path` was not written; the blank has no /persist to mount on.
    assert_eq!((got[0].0, got[0].1), (Severity::Warning, None));
    assert!(
        got[0]
            .3
            .contains("persistent storage cannot be mounted there"),
        "{got:#?}"
    );
    assert_eq!(
        (got[1].0, got[1].1, got[1].2),
        (Severity::Warning, Some(5), Some(16))
    );
    assert!(
        got[1].3.contains("has 1 entry in the blank snapshot"),
        "{got:#?}"
    );
    assert_eq!(
        (got[2].0, got[2].1, got[2].2),
        (Severity::Warning, Some(6), Some(10))
    );
    assert!(got[2].3.contains("has 8 bytes"), "{got:#?}");
    assert_eq!(
        (got[3].0, got[3].1, got[3].2),
        (Severity::Error, Some(6), Some(24))
    );
    assert!(
        got[3].3.contains("will not replace it with a symlink"),
        "{got:#?}"
    );
    assert!(report.has_errors());

    // With /persist present and nothing in the way, the same targets are clean.
    let tmp2 = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp2.path().join("persist")).unwrap();
    let opts = CheckOptions {
        root: Some(fixtures().join("root")),
        blank: Some(tmp2.path().to_path_buf()),
    };
    assert!(tabula::check::check_text(Path::new("t.toml"), text, &opts).is_clean());
}

/// The documented example at a first boot behaves as the README says.
#[test]
// Real root: alice's directories are chowned to uid 1000.
#[ignore = "needs root: run as root with -- --include-ignored"]
fn documented_example_first_boot() {
    if !enter_private_namespace() {
        return;
    }
    let env = Env::new();
    let root = env.boot("root");
    let cfg = Config::parse(Path::new("/etc/tabula/tabula.toml"), &documented_example()).unwrap();
    let report = run(&cfg, &root);
    assert_eq!(report.failed(), 0, "{report:#?}");
    for e in &report.entries {
        let expected = match e.kind {
            tabula::config::Kind::Directory => State::Done,
            tabula::config::Kind::File => State::SourceMissing,
        };
        assert_eq!(e.state, expected, "{e:?}");
    }
    let s = |p: &str| env.store.join(p);
    assert_eq!(own(&s("var/lib/private")), (0, 0, 0o700));
    assert_eq!(own(&s("srv/git")), (0, 0, 0o755));
    assert_eq!(own(&s("home/alice")), (1000, 100, 0o700));
    for p in [".cache", ".config", ".emacs.d", ".gnupg"] {
        assert_eq!(
            own(&s(&format!("home/alice/{p}"))),
            (1000, 100, 0o700),
            "{p}"
        );
    }
    assert_eq!(
        own(&s("home/alice/.gnupg/private-keys-v1.d")),
        (1000, 100, 0o700)
    );
    assert_eq!(own(&s("home/alice/Downloads")), (1000, 100, 0o755));
    assert!(!s("home/alice/.ssh").exists());
    assert_eq!(own(&root.join("home/alice")), (1000, 100, 0o700));
}
