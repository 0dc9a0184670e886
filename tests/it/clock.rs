//! One wrong clock affects at most its own root (issue 10, item 4): real rollbacks stamped by the clocks
//! of a boot history (`TABULA_TEST_NOW`), then `roots prune --dry-run --json` with daily retention.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::os::fd::AsFd;

use common::{Scratch, stderr};
use serde_json::Value;
use tabula::btrfs;

/// Boots (rollbacks) whose initrd clocks read `clocks`, in order; returns the scratch filesystem with
/// `keep_last = 1` and `keep_daily = 7` configured.
fn history(test: &str, clocks: &[&str]) -> Option<Scratch> {
    let s = Scratch::new(test, 300)?;
    btrfs::create_subvolume(s.top_fd().as_fd(), "root").unwrap();
    s.tabula_ok(&["init", "--blank-from", "current"]);
    for (i, now) in clocks.iter().enumerate() {
        // A root that was never written to is not retired: each boot writes something.
        fs::write(s.top.join(format!("root/boot-{i}")), now).unwrap();
        let out = common::tabula_cmd(&s.config)
            .env("TABULA_TEST_NOW", now)
            .arg("rollback")
            .output()
            .unwrap();
        assert!(out.status.success(), "rollback at {now}: {}", stderr(&out));
    }
    let mut config = fs::read_to_string(&s.config).unwrap();
    config.push_str("\n[retention]\nkeep_last = 1\nkeep_daily = 7\n");
    fs::write(&s.config, config).unwrap();
    Some(s)
}

/// (seq, decision, reason codes) per root, oldest first.
fn decisions(s: &Scratch) -> Vec<(u64, String, Vec<String>)> {
    let v: Value =
        serde_json::from_str(&s.tabula_ok(&["roots", "prune", "--dry-run", "--json"])).unwrap();
    let roots = v["plan"]["retention"]["roots"]
        .as_array()
        .unwrap_or_else(|| panic!("no roots in {v:#}"));
    let mut out: Vec<_> = roots
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["decision"].as_str().unwrap().to_string(),
                r["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["code"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

fn has(d: &[(u64, String, Vec<String>)], seq: u64, code: &str) -> bool {
    d.iter()
        .any(|(s, _, codes)| *s == seq && codes.iter().any(|c| c == code))
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn one_boot_in_2099_among_correct_ones() {
    let Some(s) = history(
        "one_boot_in_2099_among_correct_ones",
        &[
            "2025-03-01T08:00:00Z",
            "2025-03-02T08:00:00Z",
            "2099-01-01T00:00:00Z", // stamps root #3
            "2025-03-04T08:00:00Z",
            "2025-03-05T08:00:00Z",
            "2025-03-06T08:00:00Z",
        ],
    ) else {
        return;
    };
    let d = decisions(&s);
    assert_eq!(d.len(), 6, "{d:?}");
    for seq in [1, 2, 4, 5] {
        assert!(has(&d, seq, "daily"), "#{seq} is its day's daily: {d:?}");
    }
    assert!(!has(&d, 3, "daily") && d[2].1 == "delete", "{d:?}");
    assert!(has(&d, 6, "newest"), "{d:?}");
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn first_boots_in_1970_then_a_clock() {
    let Some(s) = history(
        "first_boots_in_1970_then_a_clock",
        &[
            "1970-01-01T00:00:09Z",
            "1970-01-01T00:00:11Z",
            "2025-03-01T08:00:00Z",
            "2025-03-02T08:00:00Z",
            "2025-03-03T08:00:00Z",
        ],
    ) else {
        return;
    };
    let d = decisions(&s);
    for seq in [1, 2] {
        assert!(has(&d, seq, "time_untrusted"), "{d:?}");
        assert!(!has(&d, seq, "daily"), "{d:?}");
    }
    for seq in [3, 4] {
        assert!(has(&d, seq, "daily"), "#{seq}: {d:?}");
    }
}

#[test]
#[ignore = "needs root: run as root with -- --include-ignored"]
fn a_clock_behind_then_correct_again() {
    // Months, not a year, behind: a year back from these dates is before 2025, which the retirement
    // itself already distrusts; this must be caught by the order of the boots alone.
    let Some(s) = history(
        "a_clock_behind_then_correct_again",
        &[
            "2025-06-01T08:00:00Z",
            "2025-06-02T08:00:00Z",
            "2025-01-03T08:00:00Z", // stamps root #3 five months early
            "2025-06-04T08:00:00Z",
            "2025-06-05T08:00:00Z",
            "2025-06-06T08:00:00Z",
        ],
    ) else {
        return;
    };
    let d = decisions(&s);
    for seq in [1, 2, 4, 5] {
        assert!(has(&d, seq, "daily"), "#{seq}: {d:?}");
    }
    assert!(!has(&d, 3, "daily"), "{d:?}");
    assert!(has(&d, 3, "out_of_step"), "{d:?}");
    // `roots list` marks the same clock, and only that one.
    let v: Value = serde_json::from_str(&s.tabula_ok(&["roots", "list", "--json"])).unwrap();
    let trusted: Vec<(u64, bool)> = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["clock_trusted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trusted,
        [
            (6, true),
            (5, true),
            (4, true),
            (3, false),
            (2, true),
            (1, true)
        ]
    );
}
