//! Fault points for the crash-safety tests.
//!
//! Built only with the `fault-injection` cargo feature: `TABULA_FAULT=<step>` aborts the process right
//! after that step (no cleanup, no unwinding: as close to a power cut as a process can get), and
//! `TABULA_FAIL=<step>` makes that step return an error (to exercise the put-back paths). Release builds
//! compile these calls to nothing.

/// Every fault point, in the order the rollback reaches them.
pub const ROLLBACK_POINTS: &[&str] = &[
    "after-snapshot",
    "after-intent",
    "after-retire",
    "after-promote",
    "after-set-default",
    "after-metadata-tmp",
    "after-metadata",
    "after-freeze",
];

/// Fault points of `tabula persist sync`, in order (each copies through a temporary file).
pub const SYNC_POINTS: &[&str] = &[
    "sync-created",
    "sync-data",
    "sync-before-rename",
    "sync-renamed",
];

/// Aborts here when `TABULA_FAULT` names this point (fault-injection builds only).
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("TABULA_FAULT").as_deref() == Ok(name) {
        eprintln!("tabula: fault injection: aborting at {name}");
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// An injected error when `TABULA_FAIL` names this step (fault-injection builds only).
#[inline]
pub fn fail(name: &str) -> anyhow::Result<()> {
    #[cfg(feature = "fault-injection")]
    if std::env::var("TABULA_FAIL").as_deref() == Ok(name) {
        anyhow::bail!("fault injection: step {name} fails");
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
    Ok(())
}

/// Whether `TABULA_BREAK` names this durability step (fault-injection builds only): the caller then skips
/// it, breaking crash safety on purpose so that the crash-prefix vm-test (scenario 17) can show it notices.
#[inline]
pub fn broken(name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    if std::env::var("TABULA_BREAK").as_deref() == Ok(name) {
        eprintln!("tabula: fault injection: skipping {name}");
        return true;
    }
    let _ = name;
    false
}

/// Whether this build has fault points.
pub const ENABLED: bool = cfg!(feature = "fault-injection");

/// The clock: `TABULA_TEST_NOW` (RFC 3339) overrides it in fault-injection builds, so tests can boot
/// "in 1970" or twice in the same second.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    #[cfg(feature = "fault-injection")]
    if let Ok(s) = std::env::var("TABULA_TEST_NOW")
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(&s)
    {
        return t.with_timezone(&chrono::Utc);
    }
    chrono::Utc::now()
}

/// The kernel command line: `TABULA_TEST_CMDLINE` overrides `/proc/cmdline` in fault-injection builds.
pub fn boot_flags() -> crate::cmdline::BootFlags {
    #[cfg(feature = "fault-injection")]
    if let Ok(s) = std::env::var("TABULA_TEST_CMDLINE") {
        return crate::cmdline::BootFlags::parse(&s);
    }
    crate::cmdline::BootFlags::from_proc()
}
