//! tabula's integration tests: one test binary (`cargo test --test it`), one harness ([`common`]), one
//! module per area. A test's full name is `<module>::<test>`, so `cargo test --test it persist::` runs one area.
//!
//! A new test file `tests/it/<area>.rs` is added with a `mod <area>;` line below; it reaches the harness
//! through `use crate::common;`.

mod common;

mod advise;
mod blank;
mod boot_cycle;
mod btrfs;
mod clock;
mod diff;
mod diff_send;
mod initrd;
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
