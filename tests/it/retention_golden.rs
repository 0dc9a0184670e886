//! Golden tests of the retention planner (restic style): one fixed, irregular list of retired roots
//! planned under many policies; the expected plans, with reasons, are committed as JSON under
//! `tests/golden/retention/`. Run with `UPDATE_GOLDEN=1` to rewrite them after an intended change,
//! then review the diff: the files are the specification, not a recording.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tabula::retention::{Candidate, MinFree, Policy, RetentionPlan, plan};
use tabula::tz::Tz;

/// When every case is planned.
const NOW: &str = "2025-04-02T12:00:00Z";

const DAY: u64 = 86_400;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("fixture time")
}

/// Forty retired roots. Gaps in `seq` (24, 25) are roots deleted earlier.
fn roots() -> Vec<Candidate> {
    // (seq, retired_at, clock trusted, pinned)
    let list: &[(u64, &str, bool, bool)] = &[
        (1, "2024-11-03T09:12:00Z", true, false), // a Sunday
        (2, "2024-11-18T08:00:00Z", true, false),
        (3, "1970-01-01T00:00:07Z", false, false), // RTC lost: untrusted
        (4, "2024-12-02T07:55:00Z", true, false),  // Monday, twice that day
        (5, "2024-12-02T19:30:00Z", true, false),
        (6, "2024-12-24T10:00:00Z", true, true),  // pinned
        (7, "2024-12-31T23:59:59Z", true, false), // ISO 2025-W01; Berlin: already 2025-01-01
        (8, "2025-01-01T00:00:01Z", true, false),
        (9, "2025-01-15T12:00:00Z", true, false),
        (10, "1970-01-01T00:00:12Z", false, false), // untrusted
        (11, "2025-01-16T08:00:00Z", false, false), // plausible time, but flagged untrusted
        // Three weeks off, then a reboot loop on Monday morning.
        (12, "2025-02-10T08:00:00Z", true, false),
        (13, "2025-02-10T08:03:00Z", true, false),
        (14, "2025-02-10T08:05:00Z", true, false), // same second as #15
        (15, "2025-02-10T08:05:00Z", true, false),
        (16, "2025-02-10T08:07:00Z", true, false),
        (17, "2025-02-10T23:30:00Z", true, false), // Berlin: 02-11
        (18, "2025-02-11T07:00:00Z", true, false),
        (19, "2025-02-14T18:00:00Z", true, false),
        (20, "2025-02-28T23:45:00Z", true, false), // Berlin: 03-01, i.e. March
        (21, "2025-03-01T10:00:00Z", true, false),
        (22, "2025-03-03T07:00:00Z", true, false), // Monday, 2025-W10
        (23, "2025-03-07T12:00:00Z", true, false),
        (26, "2025-03-10T07:00:00Z", true, false), // Monday, 2025-W11
        (27, "2025-03-10T21:00:00Z", true, false),
        (28, "2025-03-11T09:00:00Z", true, false),
        (29, "2025-03-12T08:00:00Z", true, false),
        (30, "2025-03-12T18:00:00Z", true, false),
        // Two weeks off.
        (31, "2025-03-26T08:00:00Z", true, false),
        (32, "2025-03-27T08:00:00Z", true, false), // same second as #33
        (33, "2025-03-27T08:00:00Z", true, false),
        (34, "2025-03-30T00:30:00Z", true, false), // Berlin 01:30 CET, Sunday of the DST switch
        (35, "2025-03-30T01:30:00Z", true, false), // Berlin 03:30 CEST, same local day
        (36, "1970-01-01T00:00:05Z", false, false), // untrusted
        (37, "2025-03-31T22:30:00Z", true, false), // Berlin: 04-01
        (38, "2025-04-01T09:00:00Z", true, true),  // pinned
        (39, "2025-04-02T09:00:00Z", true, false),
        (40, "2025-04-02T11:00:00Z", true, false),
        (41, "2025-04-09T10:00:00Z", true, false), // clock a week ahead: future-dated
        (42, "2025-04-02T11:58:00Z", true, false), // newest
    ];
    list.iter()
        .map(|&(seq, at, trusted, pinned)| Candidate {
            seq,
            // DESIGN.md naming: sequence, then the colon-free UTC retirement time.
            name: format!("{seq:05}-{}", t(at).format("%Y-%m-%dT%H%M%SZ")),
            retired_at: t(at),
            clock_trusted: trusted,
            pinned,
        })
        .collect()
}

fn tz(name: &str) -> Tz {
    name.parse().expect("IANA zone name")
}

fn cases() -> Vec<(&'static str, Policy)> {
    let d = Policy::default;
    let base = |keep_last| Policy { keep_last, ..d() };
    let combined = Policy {
        keep_last: 2,
        keep_within: Some(Duration::from_secs(3 * DAY)),
        keep_daily: Some(3),
        keep_weekly: Some(3),
        keep_monthly: Some(3),
        ..d()
    };
    vec![
        ("01-default", d()),
        ("02-keep-last-0", base(0)),
        ("03-keep-last-1", base(1)),
        ("04-keep-last-3", base(3)),
        ("05-keep-last-100", base(100)),
        (
            "06-daily-7",
            Policy {
                keep_daily: Some(7),
                ..base(1)
            },
        ),
        (
            "07-weekly-4",
            Policy {
                keep_weekly: Some(4),
                ..base(1)
            },
        ),
        (
            "08-monthly-6",
            Policy {
                keep_monthly: Some(6),
                ..base(1)
            },
        ),
        (
            "09-research-example",
            Policy {
                keep_daily: Some(3),
                keep_weekly: Some(2),
                ..base(3)
            },
        ),
        (
            "10-within-7d",
            Policy {
                keep_within: Some(Duration::from_secs(7 * DAY)),
                ..base(1)
            },
        ),
        (
            "11-within-2w",
            Policy {
                keep_within: Some(Duration::from_secs(14 * DAY)),
                ..base(1)
            },
        ),
        (
            "12-within-1d",
            Policy {
                keep_within: Some(Duration::from_secs(DAY)),
                ..base(1)
            },
        ),
        (
            "13-within-0s",
            Policy {
                keep_within: Some(Duration::ZERO),
                ..base(1)
            },
        ),
        (
            "14-daily-7-berlin",
            Policy {
                keep_daily: Some(7),
                timezone: tz("Europe/Berlin"),
                ..base(1)
            },
        ),
        (
            "15-monthly-12-berlin",
            Policy {
                keep_monthly: Some(12),
                timezone: tz("Europe/Berlin"),
                ..base(1)
            },
        ),
        (
            "16-weekly-52-new-york",
            Policy {
                keep_weekly: Some(52),
                timezone: tz("America/New_York"),
                ..base(1)
            },
        ),
        (
            "17-daily-all",
            Policy {
                keep_daily: Some(usize::MAX),
                ..base(1)
            },
        ),
        ("18-combined", combined.clone()),
        (
            "19-combined-min-free-percent",
            Policy {
                min_free: Some(MinFree::Percent(10.0)),
                ..combined
            },
        ),
        (
            "20-default-min-free-bytes",
            Policy {
                min_free: Some(MinFree::Bytes(20 << 30)),
                ..d()
            },
        ),
        (
            "21-all-tiers-10-auckland",
            Policy {
                keep_daily: Some(10),
                keep_weekly: Some(10),
                keep_monthly: Some(10),
                timezone: tz("Pacific/Auckland"),
                ..base(10)
            },
        ),
        (
            "22-weekly-2",
            Policy {
                keep_weekly: Some(2),
                ..base(1)
            },
        ),
        (
            "23-daily-5-kolkata",
            Policy {
                keep_daily: Some(5),
                timezone: tz("Asia/Kolkata"),
                ..base(1)
            },
        ),
        (
            "24-weekly-and-monthly-all",
            Policy {
                keep_weekly: Some(usize::MAX),
                keep_monthly: Some(usize::MAX),
                ..base(1)
            },
        ),
    ]
}

#[derive(Serialize)]
struct Golden<'a> {
    case: &'a str,
    now: DateTime<Utc>,
    policy: &'a Policy,
    /// One line per root, for reviewing diffs by eye; `plan` is the authority.
    summary: Vec<String>,
    plan: &'a RetentionPlan,
}

fn summary(plan: &RetentionPlan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .roots
        .iter()
        .map(|r| {
            let reasons: Vec<&str> = r.reasons.iter().map(|x| x.text.as_str()).collect();
            let verdict = match r.decision {
                tabula::retention::Decision::Keep => "keep  ",
                tabula::retention::Decision::Delete => "DELETE",
            };
            format!(
                "#{:02} {} {verdict} {}",
                r.seq,
                r.retired_at.format("%Y-%m-%dT%H:%M:%SZ"),
                reasons.join("; ")
            )
        })
        .collect();
    if !plan.space_candidates.is_empty() {
        let seqs: Vec<String> = plan
            .space_candidates
            .iter()
            .map(|c| format!("#{}", c.seq))
            .collect();
        out.push(format!(
            "space candidates (oldest first): {}",
            seqs.join(" ")
        ));
    }
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/retention")
}

#[test]
fn retention_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = golden_dir();
    let roots = roots();
    assert_eq!(roots.len(), 40);
    let now = t(NOW);
    let mut failures = String::new();
    let mut expected_files = Vec::new();
    for (case, policy) in cases() {
        policy.validate().unwrap();
        let plan = plan(&roots, &policy, now);
        let golden = Golden {
            case,
            now,
            policy: &policy,
            summary: summary(&plan),
            plan: &plan,
        };
        let text = serde_json::to_string_pretty(&golden).unwrap() + "\n";
        let file = dir.join(format!("{case}.json"));
        expected_files.push(file.clone());
        crate::common::compare_golden(case, &file, &text, update, &mut failures);
    }
    // A golden file without a case is a case that was dropped by mistake.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !expected_files.contains(&path) {
            writeln!(
                failures,
                "stale golden file '{}': no case produces it",
                path.display()
            )
            .unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (rerun with UPDATE_GOLDEN=1 and review the diff):\n{failures}"
    );
}

/// Same-second pairs and duplicates of the fixture must not depend on input order.
#[test]
fn goldens_do_not_depend_on_input_order() {
    let mut shuffled = roots();
    shuffled.reverse();
    shuffled.swap(3, 17);
    for (_, policy) in cases() {
        assert_eq!(
            plan(&roots(), &policy, t(NOW)),
            plan(&shuffled, &policy, t(NOW))
        );
    }
}
