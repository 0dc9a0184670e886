//! The module graph stays layered: foundation, then `config`, then the domain modules, then the command
//! layer. A module imports from its own level or below, and no import cycle joins two modules, so a
//! maintainer can read the crate bottom-up. The graph is read from the source text (`crate::` paths), which
//! is what a reader follows too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules by level, bottom first. A new module must be placed here, on purpose.
const LEVELS: &[&[&str]] = &[
    &[
        "error",
        "limits",
        "fault",
        "cmdline",
        "logging",
        "fsx",
        "btrfs",
        "mount",
        "mountinfo",
        "wait",
        "lock",
        "json",
        "tz",
    ],
    &["config"],
    &[
        "layout",
        "mounted",
        "device",
        "users",
        "diff",
        "retention",
        "roots",
        "rollback",
        "blank",
        "persist",
        "restore",
        "advise",
        "orphans",
        "persist_add",
        "generator",
        "check",
        "init",
    ],
    &["cli", "app", "docs"],
];

fn level(module: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.contains(&module))
}

/// The module path of a source file: `src/persist/plan.rs` is `["persist", "plan"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module (tests may import anything).
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line.split(" //").next().unwrap_or(line));
        code.push('\n');
    }
    code
}

/// Every `crate::…` path a file names, as its first two segments (`use crate::{a, b::c}` included).
fn imports(code: &str) -> BTreeSet<Vec<String>> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segs: Vec<String> = item.trim().split("::").take(2).map(ident).collect();
                if segs.first().is_some_and(|s| !s.is_empty()) {
                    found.insert(segs);
                }
            }
        } else {
            let segs: Vec<String> = after.split("::").take(2).map(ident).collect();
            if segs.first().is_some_and(|s| !s.is_empty()) {
                found.insert(segs);
            }
        }
        rest = after;
    }
    found
}

/// The strongly connected components with more than one node (Tarjan, iterative enough for a crate).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit(s: &mut State, v: &str) {
        s.index.insert(v.to_string(), s.next);
        s.low.insert(v.to_string(), s.next);
        s.next += 1;
        s.stack.push(v.to_string());
        let targets: Vec<String> = s.graph.get(v).into_iter().flatten().cloned().collect();
        for w in targets {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.to_string(), low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.to_string(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                let done = w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

struct Graph {
    /// Top-level module -> top-level modules it imports.
    top: BTreeMap<String, BTreeSet<String>>,
    /// `app` submodule -> `app` submodules it imports (the command layer must not be a knot either).
    app: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut app: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let path = module_path(&src, &file);
        let Some(me) = path.first().cloned() else {
            continue;
        };
        if me == "main" || me == "lib" {
            continue;
        }
        let code = code_of(&fs::read_to_string(&file).expect("reading a source file"));
        let edges = top.entry(me.clone()).or_default();
        for target in imports(&code) {
            if target[0] != me {
                edges.insert(target[0].clone());
            }
        }
        if me == "app"
            && let Some(sub) = path.get(1)
        {
            let subs = app.entry(sub.clone()).or_default();
            for target in imports(&code) {
                if target[0] == "app"
                    && let Some(other) = target.get(1)
                    && other != sub
                {
                    subs.insert(other.clone());
                }
            }
            let mut rest = code.as_str();
            while let Some(at) = rest.find("super::") {
                rest = &rest[at + "super::".len()..];
                let other: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if &other != sub && app_submodule_exists(&src, &other) {
                    subs.insert(other);
                }
            }
        }
    }
    Graph { top, app }
}

fn app_submodule_exists(src: &Path, name: &str) -> bool {
    src.join("app").join(format!("{name}.rs")).exists() || src.join("app").join(name).is_dir()
}

#[test]
fn every_module_has_a_level() {
    let g = graph();
    let unplaced: Vec<&String> = g.top.keys().filter(|m| level(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "place these modules in tests/layers.rs LEVELS: {unplaced:?}"
    );
}

#[test]
fn no_module_imports_from_a_higher_level() {
    let g = graph();
    let mut upward = Vec::new();
    for (from, targets) in &g.top {
        for to in targets {
            if let (Some(a), Some(b)) = (level(from), level(to))
                && b > a
            {
                upward.push(format!("{from} (level {a}) imports {to} (level {b})"));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn no_import_cycle_between_modules() {
    let g = graph();
    let top = cycles(&g.top);
    let app = cycles(&g.app);
    assert!(
        top.is_empty() && app.is_empty(),
        "import cycles: between top-level modules {top:?}; between app modules {app:?}"
    );
}

#[test]
fn the_cycle_finder_finds_a_known_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let parsed =
        imports("use crate::{btrfs, persist::walk};\nlet x = crate::config::Config::default();");
    let names: Vec<&str> = parsed.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(names, ["btrfs", "config", "persist"]);
}

/// Every `<krate>::…` path a file names, whole (`use nix::{a::b, c}` gives `a::b` and `c`). A path is
/// only counted where `krate` starts a path (`std::os::unix::fs` does not name `nix`).
fn paths_of(code: &str, krate: &str) -> BTreeSet<String> {
    let head = format!("{krate}::");
    let path = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_string()
    };
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(rel) = code[from..].find(&head) {
        let at = from + rel;
        from = at + head.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let after = &code[from..];
        // `nix::sys::stat::{fstat, Mode}`: the prefix before the brace, then each item.
        let prefix_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        let prefix = &after[..prefix_len];
        if after[prefix_len..].starts_with('{') && (prefix.is_empty() || prefix.ends_with("::")) {
            let group = &after[prefix_len + 1..];
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = path(item);
                if !item.is_empty() {
                    found.insert(format!("{prefix}{item}"));
                }
            }
        } else {
            let p = path(prefix);
            if !p.is_empty() {
                found.insert(p);
            }
        }
    }
    found
}

/// What `nix` is still used for. Every syscall on files, directories, inodes and their names goes
/// through rustix (mostly through `fsx`), so that no syscall is reached through two crates.
const NIX_ALLOWED: &[&str] = &[
    "ioctl_",          // the btrfs ioctl macros (src/btrfs/ioctl.rs)
    "request_code_",   // their request numbers
    "errno::Errno",    // the errors of the calls below
    "mount::",         // mount(2), umount2(2)
    "sched::",         // unshare(2)
    "sys::resource::", // rlimits
    "sys::utsname::",  // uname(2)
    "unistd::pipe",
    "unistd::chroot",
    "unistd::chdir",
    "unistd::geteuid",
];

fn nix_paths_not_allowed(code: &str) -> Vec<String> {
    paths_of(code, "nix")
        .into_iter()
        .filter(|p| !NIX_ALLOWED.iter().any(|a| p.starts_with(a)))
        .collect()
}

#[test]
fn file_syscalls_go_through_one_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in &files {
        // The ioctl layer is nix's by design: its macros, their libc types and errors.
        if file.ends_with("btrfs/ioctl.rs") {
            continue;
        }
        let text = fs::read_to_string(file).expect("reading a source file");
        for p in nix_paths_not_allowed(&code_of(&text)) {
            found.push(format!(
                "{}: nix::{p}",
                file.strip_prefix(&src).unwrap_or(file).display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "file-system syscalls go through rustix (see crate::fsx); nix is only for ioctls, mounts, \
         namespaces and rlimits. Found:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_syscall_check_sees_nix_file_calls() {
    let code = "use nix::sys::stat::{fstat, Mode};\nuse std::os::unix::fs::MetadataExt;\n\
                let e = nix::errno::Errno::EBUSY; nix::mount::umount2(p, f); nix::unistd::fsync(fd);\n\
                use nix::{unistd::chroot, dir::Dir};";
    assert_eq!(
        nix_paths_not_allowed(code),
        [
            "dir::Dir",
            "sys::stat::Mode",
            "sys::stat::fstat",
            "unistd::fsync"
        ]
    );
}
