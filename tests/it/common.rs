//! Shared harness for integration tests on real btrfs: scratch images on loop devices, private mount
//! namespaces, and guards that always unmount and detach what *this test* created.
#![allow(dead_code)]

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Whether this run asked for the tests marked `#[ignore = "needs root: …"]` (`--include-ignored` or
/// `--ignored`). Only then does a root-needing test run at all.
pub fn root_tests_requested() -> bool {
    std::env::args().any(|a| a == "--include-ignored" || a == "--ignored")
}

/// Whether this is a CI run (`CI=true`), which must run the root-needing tests.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Checks that a root-needing test can do root things, and fails it when it cannot: it only runs when
/// asked for (it is marked `#[ignore = "needs root: run as root with -- --include-ignored"]`, so a run
/// without root reports it as ignored, never as passed). Returns `true`; callers keep their
/// `if !require_root(..) { return; }` shape.
pub fn require_root(test: &str) -> bool {
    assert!(
        root_tests_requested(),
        "{test} needs root but ran in a run that did not ask for root tests: mark it \
         #[ignore = \"needs root: run as root with -- --include-ignored\"] (see tests/it/main.rs)"
    );
    let why = if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if !Path::new("/dev/loop-control").exists() {
        Some("no /dev/loop-control")
    } else if Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("mkfs.btrfs not installed (apt-get install btrfs-progs)")
    } else {
        None
    };
    if let Some(why) = why {
        panic!("{test} needs root, loop devices and mkfs.btrfs, and cannot run: {why}");
    }
    true
}

/// Moves the calling test thread into its own private mount namespace, so nothing it mounts leaks.
pub fn private_mount_namespace() {
    tabula::mount::enter_private_namespace().expect("a private mount namespace for this test");
}

/// [`require_root`] (named after the test's thread), then [`private_mount_namespace`].
pub fn enter_private_namespace() -> bool {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    require_root(&test);
    private_mount_namespace();
    true
}

/// Mount points of this thread's mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/thread-self/mountinfo").expect("reading mountinfo");
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

/// Unmounts on drop, deepest first, every mount under `dir` and the `extra` mount points a test made
/// (for tests whose code under test mounts things of its own there).
pub struct MountsUnder {
    pub dir: PathBuf,
    pub extra: Vec<PathBuf>,
}

impl Drop for MountsUnder {
    fn drop(&mut self) {
        loop {
            let mut ours: Vec<PathBuf> = mount_points()
                .into_iter()
                .filter(|m| m.starts_with(&self.dir) || self.extra.contains(m))
                .collect();
            if ours.is_empty() {
                break;
            }
            ours.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            let mut progress = false;
            for m in ours {
                if umount2(&m, MntFlags::MNT_DETACH).is_ok() {
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A loop device attached by this test; detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(image: &Path) -> LoopDevice {
        let out = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        LoopDevice { path }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// A mount made by this test; unmounted on drop.
pub struct MountGuard {
    pub target: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if umount2(&self.target, MntFlags::empty()).is_err() {
            let _ = umount2(&self.target, MntFlags::MNT_DETACH);
        }
    }
}

/// A scratch btrfs filesystem: image file, loop device, top level mounted at `top`.
/// Field order matters: the mount is dropped before the loop device, the temp dir last.
pub struct Scratch {
    pub top_mount: Option<MountGuard>,
    pub dev: LoopDevice,
    pub top: PathBuf,
    pub image: PathBuf,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh btrfs of `mib` MiB; fails the test when it cannot have one (see [`require_root`]), so it
    /// is never `None`. The calling thread is moved into a private mount namespace first.
    pub fn new(test: &str, mib: u64) -> Option<Scratch> {
        if !require_root(test) {
            return None;
        }
        private_mount_namespace();
        let dir = tempfile::Builder::new()
            .prefix("tabula-test-")
            .tempdir()
            .expect("tempdir");
        let image = dir.path().join("disk.img");
        fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .expect("creating image");
        run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image));
        let dev = LoopDevice::attach(&image);
        let top = dir.path().join("top");
        fs::create_dir(&top).expect("mkdir top");
        mount(
            Some(&dev.path),
            &top,
            Some("btrfs"),
            MsFlags::empty(),
            Some("subvolid=5"),
        )
        .expect("mounting scratch");
        let config = dir.path().join("tabula.toml");
        fs::write(
            &config,
            format!(
                "[layout]\ndevice = \"{}\"\ndevice_timeout = \"2s\"\n",
                dev.path.display()
            ),
        )
        .expect("writing config");
        Some(Scratch {
            top_mount: Some(MountGuard {
                target: top.clone(),
            }),
            dev,
            top,
            image,
            config,
            dir,
        })
    }

    /// An fd on the top-level directory.
    pub fn top_fd(&self) -> OwnedFd {
        open_dir(&self.top)
    }

    /// Runs the tabula binary with this scratch filesystem's config.
    pub fn tabula(&self, args: &[&str]) -> Output {
        tabula_cmd(&self.config)
            .args(args)
            .output()
            .expect("running tabula")
    }

    /// Runs tabula and asserts it succeeded; returns stdout.
    pub fn tabula_ok(&self, args: &[&str]) -> String {
        let out = self.tabula(args);
        assert!(
            out.status.success(),
            "tabula {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What an initrd has after `tabula rollback`: the new root on `sysroot`, persistent storage on
/// `sysroot/persist`. Field order matters: persist is unmounted before the root it sits on.
pub struct Booted {
    pub _persist: MountGuard,
    pub _root: MountGuard,
    pub sysroot: PathBuf,
}

/// `tabula rollback`, then the new root on `<dir>/sysroot` and the `persist` subvolume on
/// `sysroot/persist`, as an initrd mounts them.
pub fn rollback_and_mount(s: &Scratch) -> Booted {
    s.tabula_ok(&["rollback"]);
    let sysroot = s.dir.path().join("sysroot");
    fs::create_dir_all(&sysroot).expect("mkdir sysroot");
    mount(
        Some(&s.dev.path),
        &sysroot,
        Some("btrfs"),
        MsFlags::empty(),
        Some("subvol=root"),
    )
    .expect("mounting the new root");
    let root = MountGuard {
        target: sysroot.clone(),
    };
    fs::create_dir_all(sysroot.join("persist")).expect("mkdir sysroot/persist");
    mount(
        Some(&s.dev.path),
        &sysroot.join("persist"),
        Some("btrfs"),
        MsFlags::empty(),
        Some("subvol=persist"),
    )
    .expect("mounting persist");
    Booted {
        _persist: MountGuard {
            target: sysroot.join("persist"),
        },
        _root: root,
        sysroot,
    }
}

/// A `tabula` command using config `config`, logging to stderr.
pub fn tabula_cmd(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabula"));
    cmd.env("TABULA_CONFIG", config)
        .env_remove("TABULA_FAULT")
        .args(["--log", "stderr"]);
    cmd
}

/// Opens a directory (following nothing special: test-controlled paths).
pub fn open_dir(path: &Path) -> OwnedFd {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Sorted entry names of a directory.
pub fn ls(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(path)
        .unwrap_or_else(|e| panic!("listing {}: {e}", path.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Borrowed-fd helper for brevity in tests.
pub fn fd(o: &OwnedFd) -> std::os::fd::BorrowedFd<'_> {
    o.as_fd()
}

/// A command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a command was refused (exit 3) by safety rule `rule`.
pub fn assert_refused(out: &Output, rule: &str) {
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected refusal {rule}: {}",
        stderr(out)
    );
    assert!(
        stderr(out).contains(rule),
        "expected {rule}: {}",
        stderr(out)
    );
}

/// Retired root names in `old_roots`, in sequence order.
pub fn retired(s: &Scratch) -> Vec<String> {
    ls(&s.top.join("old_roots"))
        .into_iter()
        .filter(|n| tabula::layout::RetiredName::parse(n).is_some())
        .collect()
}

/// Compares `text` with the golden file `file`, or writes it when `update` (UPDATE_GOLDEN=1 after a
/// deliberate change); a mismatch is described in `failures` under `name`, with the first line that
/// differs.
pub fn compare_golden(name: &str, file: &Path, text: &str, update: bool, failures: &mut String) {
    use std::fmt::Write as _;
    if update {
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir).expect("creating the golden directory");
        }
        fs::write(file, text).expect("writing a golden file");
        return;
    }
    match fs::read_to_string(file) {
        Err(e) => writeln!(failures, "{name}: reading '{}': {e}", file.display())
            .expect("writing to a String"),
        Ok(want) if want != text => {
            let (n, (w, g)) = want
                .lines()
                .zip(text.lines())
                .enumerate()
                .find(|(_, (w, g))| w != g)
                .unwrap_or((
                    want.lines().count().min(text.lines().count()),
                    ("<end>", "<end>"),
                ));
            writeln!(
                failures,
                "{name}: differs from {} at line {}:\n  want: {w}\n  got:  {g}",
                file.display(),
                n + 1
            )
            .expect("writing to a String");
        }
        Ok(_) => {}
    }
}

// --- added by userns: tests that need mounts but not root ---

/// Set in the environment of a test re-executed by [`enter_user_namespace`]: the user and mount
/// namespaces of the parent, which the child checks it has left.
pub const USERNS_CHILD: &str = "TABULA_TEST_USERNS_PARENT";

/// This process's user and mount namespaces, e.g. `user:[4026531837] mnt:[4026531841]`.
fn namespaces() -> String {
    ["user", "mnt"]
        .iter()
        .map(|ns| {
            fs::read_link(format!("/proc/self/ns/{ns}"))
                .unwrap_or_else(|e| panic!("reading /proc/self/ns/{ns}: {e}"))
                .to_string_lossy()
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The command that gives a test a user and a mount namespace of its own, as root in it (mapped to
/// the caller's uid), with private mount propagation. Any user can make one when the kernel allows
/// unprivileged user namespaces: bind and tmpfs mounts work in it, chown to other uids does not.
fn unshare_cmd() -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
    ]);
    cmd
}

/// Whether this user can make a user namespace; `Err` says why not. Asked once per process.
fn user_namespaces_work() -> Result<(), String> {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| match unshare_cmd().arg("true").output() {
            Err(e) => Err(format!(
                "cannot run `unshare` ({e}): install util-linux (scripts/packages.sh lists it)"
            )),
            Ok(o) if !o.status.success() => Err(format!(
                "`unshare --user --map-root-user --mount true` failed ({}): {}the kernel must allow \
                 unprivileged user namespaces (user.max_user_namespaces > 0; on some kernels \
                 kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0)",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            )),
            Ok(_) => Ok(()),
        })
        .clone()
}

/// Runs the calling test in a user and mount namespace of its own, so a test that only needs mounts
/// (bind mounts, tmpfs) runs as an ordinary user as well as as root, with no `ignore` mark.
///
/// In the test process it returns `false` after re-executing the test binary for this one test under
/// `unshare --user --map-root-user --mount` and failing the test, with the child's output, when the child
/// failed; the caller then returns. In that child it returns `true` and the caller runs its body. A
/// re-execution rather than an `unshare(2)` in the test: the test harness has threads, and the kernel
/// refuses `CLONE_NEWUSER` to a multithreaded process (a fork would not be safe to go on running the
/// test in either). Where user namespaces are unavailable the test fails, saying what is missing.
///
/// Root is mapped to the caller only: a test that chowns to other uids, or loop-mounts btrfs, needs
/// real root and [`enter_private_namespace`] instead.
pub fn enter_user_namespace() -> bool {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    if let Ok(parent) = std::env::var(USERNS_CHILD) {
        // The child: check that it runs where it was meant to, never in the caller's namespaces.
        let here = namespaces();
        let (parent_ns, here_ns): (Vec<&str>, Vec<&str>) =
            (parent.split(' ').collect(), here.split(' ').collect());
        assert!(
            parent_ns.len() == 2
                && parent_ns[0].starts_with("user:[")
                && parent_ns[1].starts_with("mnt:[")
                && parent_ns.iter().zip(&here_ns).all(|(p, h)| p != h),
            "{test}: {USERNS_CHILD} is set ({parent}) but this process is not in namespaces of its own \
             ({here}); it is set only by enter_user_namespace for the process it re-executes"
        );
        return true;
    }
    if let Err(why) = user_namespaces_work() {
        panic!("{test} runs in a user namespace and cannot make one: {why}");
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = unshare_cmd()
        .arg(&exe)
        .args([
            "--exact",
            &test,
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(USERNS_CHILD, namespaces())
        .output()
        .unwrap_or_else(|e| panic!("{test}: running {} under unshare: {e}", exe.display()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{test} failed in its user namespace ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    // A filter that matched nothing would pass having run nothing.
    assert!(
        stdout.contains("test result: ok. 1 passed;"),
        "{test}: the re-executed test binary did not run it:\n{stdout}\n{stderr}"
    );
    false
}
