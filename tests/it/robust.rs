//! The CLI never crashes on what a user can create (issue 9, rule 9): directory chains tens of
//! thousands deep, a closed stdout, control characters in paths.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{Scratch, stderr};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use tabula::btrfs;

/// Depth of the chains: what any user can make in their home directory in a second.
const DEEP: usize = 50_000;

/// Makes `top/d/d/d/…` (`depth` directories), fd by fd: the path is far beyond PATH_MAX.
/// With `leaf`, writes that file at the bottom. Returns nothing; the chain is found by name.
fn chain(top: &Path, depth: usize, leaf: Option<&str>) {
    let mut dir: OwnedFd = common::open_dir(top);
    for _ in 0..depth {
        match mkdirat(dir.as_fd(), "d", Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => panic!("mkdirat: {e}"),
        }
        dir = openat(
            dir.as_fd(),
            "d",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
    }
    if let Some(name) = leaf {
        let f = openat(
            dir.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        drop(f);
    }
}

/// The process ended on its own (no signal: no stack overflow, no abort) and printed no panic.
fn did_not_crash(what: &str, out: &Output) {
    assert!(
        out.status.signal().is_none() && out.status.code() != Some(101),
        "{what} crashed ({}): {}",
        out.status,
        stderr(out)
    );
    assert!(!stderr(out).contains("panicked"), "{what}: {}", stderr(out));
    assert!(!stderr(out).contains("overflow"), "{what}: {}", stderr(out));
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn deep_directory_chains_are_an_error_not_a_crash() {
    let Some(s) = Scratch::new("deep_directory_chains_are_an_error_not_a_crash", 512) else {
        return;
    };
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    // In the blank too, so that the walk descends on both sides (`both`), not only one (`summarize`).
    chain(&s.top.join("root"), DEEP, None);
    s.tabula_ok(&["init", "--blank-from", "current"]);
    chain(&s.top.join("root"), DEEP, Some("new-at-the-bottom"));
    fs::create_dir(s.top.join("root/added")).unwrap();
    chain(&s.top.join("root/added"), DEEP, None);

    for args in [
        &["diff"][..],
        &["diff", "--json"],
        &["roots", "diff", "current", "--json"],
    ] {
        let out = s.tabula(args);
        did_not_crash(&format!("{args:?}"), &out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let says = if args.contains(&"--json") {
            "directories deep"
        } else {
            "\terror\t"
        };
        assert!(
            text.contains(says),
            "{args:?} says where it stopped: {}",
            &text[..text.len().min(2000)]
        );
    }

    s.tabula_ok(&["rollback"]);
    let out = s.tabula(&["roots", "diff", "-1"]);
    did_not_crash("roots diff -1", &out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let dest = s.dir.path().join("restored");
    let out = s.tabula(&[
        "restore",
        "/added",
        "--from",
        "-1",
        "--to",
        dest.to_str().unwrap(),
    ]);
    did_not_crash("restore", &out);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("directories deep"),
        "restore says why: {}",
        stderr(&out)
    );
    assert!(!dest.exists(), "nothing was created");
    let leftovers: Vec<_> = fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.as_bytes().starts_with(b".tabula-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A shallower tree restores fine (the bound is far above real trees).
    fs::create_dir(s.top.join("root/ok")).unwrap();
    chain(&s.top.join("root/ok"), 1000, Some("leaf"));
    s.tabula_ok(&["rollback"]);
    let dest = s.dir.path().join("ok");
    s.tabula_ok(&[
        "restore",
        "/ok",
        "--from",
        "-1",
        "--to",
        dest.to_str().unwrap(),
    ]);
    let mut p = dest.clone();
    for _ in 0..10 {
        p.push("d");
    }
    assert!(p.is_dir());
}

/// Runs tabula with its stdout a pipe whose reader is already gone.
fn with_closed_stdout(config: &Path, args: &[&str]) -> Output {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    common::tabula_cmd(config)
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Quiet, and the conventional status of a writer whose reader left (128 + SIGPIPE), never an abort.
fn quiet_exit(what: &str, out: &Output) {
    did_not_crash(what, out);
    assert!(
        matches!(out.status.code(), Some(0 | 141)),
        "{what}: {}: {}",
        out.status,
        stderr(out)
    );
    // The one line allowed: this sandbox hides some processes' mount namespaces even from root, and the
    // deletion guard says so (see src/mounted.rs); it is about the machine, not the pipe.
    let err = stderr(out);
    let noise: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("cannot read the mount namespace of"))
        .collect();
    assert!(noise.is_empty(), "{what} is quiet: {noise:?}");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_closed_stdout_ends_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let out = with_closed_stdout(Path::new("/nonexistent"), &["completions", shell]);
        quiet_exit(&format!("completions {shell}"), &out);
    }
    let out = with_closed_stdout(Path::new("/nonexistent"), &["man"]);
    quiet_exit("man", &out);

    let Some(s) = Scratch::new("a_closed_stdout_ends_quietly", 300) else {
        return;
    };
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    for i in 0..2 {
        fs::write(s.top.join(format!("root/f{i}")), "x").unwrap();
        s.tabula_ok(&["rollback"]);
    }
    // Large outputs too: many entries in a diff.
    for i in 0..3000 {
        fs::write(s.top.join(format!("root/file-{i:05}")), "x").unwrap();
    }
    for args in [
        &["roots", "list"][..],
        &["roots", "list", "--json"],
        &["roots", "show", "-1"],
        &["roots", "prune", "--dry-run"],
        &["status"],
        &["diff"],
        &["diff", "--json"],
        &["roots", "diff", "current", "--against", "-1", "--json"],
    ] {
        let out = with_closed_stdout(&s.config, args);
        quiet_exit(&format!("{args:?}"), &out);
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn control_characters_in_paths_are_escaped() {
    let Some(s) = Scratch::new("control_characters_in_paths_are_escaped", 300) else {
        return;
    };
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    s.tabula_ok(&["rollback"]);
    // A name that would clear the terminal and forge a log line.
    let evil = "/etc/x\x1b[2J\nFAKE: all good\x07";
    let out = s.tabula(&["restore", evil, "--from", "-1", "--dry-run"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(!err.contains("\nFAKE"), "one line per message: {err:?}");
    assert!(err.contains("x\\x1b[2J\\x0aFAKE"), "escaped: {err:?}");

    // Human output: a note written to drive the terminal and break the TSV.
    s.tabula_ok(&["roots", "pin", "-1", "--note", "evil\x1b[2J\tnote\nFAKE"]);
    let list = s.tabula_ok(&["roots", "list"]);
    assert!(!list.contains('\x1b'), "{list:?}");
    assert!(list.contains("evil\\x1b[2J\\x09note\\x0aFAKE"), "{list:?}");
    assert!(
        list.lines().all(|l| l.split('\t').count() == 10),
        "one TSV record per line, ten fields: {list:?}"
    );

    // Log lines (tracing), here from persist, which logs every entry with its path.
    let persist = s.dir.path().join("persist");
    let newroot = s.dir.path().join("newroot");
    fs::create_dir_all(&newroot).unwrap();
    let dir_name = OsStr::from_bytes(b"srv\x1b[31mred\nFAKE");
    fs::create_dir_all(persist.join(dir_name)).unwrap();
    fs::create_dir_all(newroot.join("persist")).unwrap();
    fs::write(
        &s.config,
        format!(
            "[layout]\ndevice = \"{}\"\n[persist]\npath = \"/persist\"\ndirectories = [\"/srv\\u001b[31mred\\nFAKE\"]\n",
            s.dev.path.display()
        ),
    )
    .unwrap();
    nix::mount::mount(
        Some(&persist),
        &newroot.join("persist"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _bind = common::MountGuard {
        target: newroot.join("persist"),
    };
    let out = s.tabula(&["persist", "--root", newroot.to_str().unwrap()]);
    // The bind mount tabula made, undone before the temporary directory goes.
    let _made = common::MountGuard {
        target: newroot.join(dir_name),
    };
    let err = stderr(&out);
    assert!(
        err.contains("srv\\x1b[31mred\\x0aFAKE"),
        "the log line names the path, escaped: {err:?}"
    );
    assert!(!err.contains('\x1b') && !err.contains("\nFAKE"), "{err:?}");
}
