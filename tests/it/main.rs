//! tabula's integration tests: one test binary (`cargo test --test it`), one harness ([`common`]), one
//! module per area. A test's full name is `<module>::<test>`, so `cargo test --test it persist::` runs one area.
//!
//! A new test file `tests/it/<area>.rs` is added with a `mod <area>;` line below; it reaches the harness
//! through `use crate::common;`.
//!
//! Tests that need root (loop devices, btrfs, chown to other uids) carry
//! `#[ignore = "needs root: run as root with -- --include-ignored"]`, so a run that does not ask for
//! them lists each as `ignored, needs root` instead of reporting it passed. Tests that only need mounts
//! carry no mark and run as any user in a user namespace of their own ([`common::enter_user_namespace`]). The full run, as root:
//! `CI=true unshare -m --propagation private cargo test --features fault-injection -- --include-ignored`.
//! Asked for without root, they fail ([`common::require_root`]); a root-needing test without the
//! attribute fails in every run that does not ask for them, so a forgotten attribute shows at once.

mod common;

mod advise;
mod blank;
mod boot_cycle;
mod btrfs;
mod clock;
mod diff;
mod diff_send;
mod fsx;
mod initrd;
mod json_golden;
mod layers;
mod mounts;
mod multidevice;
mod ownership;
mod ownership_property;
mod persist;
mod persist_add;
mod persist_copy;
mod restore;
mod retention_golden;
mod robust;
mod rollback;
mod roots;
mod userns;

/// A CI run must run the root-needing tests: without `--include-ignored` it would pass having run none.
#[test]
fn ci_runs_the_root_tests() {
    assert!(
        !common::ci() || common::root_tests_requested(),
        "CI=true, but the root-needing tests were not asked for: \
         run `cargo test --features fault-injection -- --include-ignored` as root"
    );
}

/// Some root-needing tests cut tabula at its fault points, and built without them they return early
/// (failing only under CI=true): a run that asks for the root tests must be built with them.
#[test]
fn root_runs_are_built_with_fault_points() {
    assert!(
        !common::root_tests_requested() || cfg!(feature = "fault-injection"),
        "the root-needing tests were asked for in a build without fault points, so the fault tests \
         would do nothing: add --features fault-injection"
    );
}

/// Every test file is a module of this one binary: a `tests/<name>.rs` would build a test binary of its
/// own, and a `tests/it/<name>.rs` without `mod <name>;` above would not be built at all. Both happen
/// when a branch that adds a test file is merged, so this says what to do.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = include_str!("main.rs");
    let mut problems = Vec::new();
    for (dir, top) in [(tests.clone(), true), (tests.join("it"), false)] {
        for entry in std::fs::read_dir(&dir).expect("listing tests/") {
            let name = entry.expect("entry of tests/").file_name();
            let name = name.to_string_lossy();
            let Some(module) = name.strip_suffix(".rs") else {
                continue;
            };
            let declared = main.lines().any(|l| l.trim() == format!("mod {module};"));
            let how = "replace its `mod common;` with `use crate::common;` and mark its root-needing \
                       tests #[ignore = \"needs root: run as root with -- --include-ignored\"]";
            if top {
                problems.push(format!(
                    "tests/{name}: git mv it to tests/it/{name}, add `mod {module};` to \
                     tests/it/main.rs, {how}"
                ));
            } else if module != "main" && !declared {
                problems.push(format!(
                    "tests/it/{name}: add `mod {module};` to tests/it/main.rs, {how}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
