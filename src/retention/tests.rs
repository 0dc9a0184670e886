//! Unit and property tests of the retention planner.

use super::*;
use proptest::prelude::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn root(seq: u64, at: &str) -> Candidate {
    Candidate {
        seq,
        name: format!("{seq:05}"),
        retired_at: t(at),
        clock_trusted: true,
        pinned: false,
    }
}

fn pinned(mut c: Candidate) -> Candidate {
    c.pinned = true;
    c
}

fn untrusted(mut c: Candidate) -> Candidate {
    c.clock_trusted = false;
    c
}

fn policy(keep_last: usize) -> Policy {
    Policy {
        keep_last,
        ..Policy::default()
    }
}

fn kept(p: &RetentionPlan) -> Vec<u64> {
    p.to_keep().map(|r| r.seq).collect()
}

fn codes(p: &RetentionPlan, seq: u64) -> Vec<ReasonCode> {
    let r = p.roots.iter().find(|r| r.seq == seq).unwrap();
    r.reasons.iter().map(|r| r.code).collect()
}

fn texts(p: &RetentionPlan, seq: u64) -> Vec<String> {
    let r = p.roots.iter().find(|r| r.seq == seq).unwrap();
    r.reasons.iter().map(|r| r.text.clone()).collect()
}

const NOW: &str = "2025-04-01T12:00:00Z";

/// The ten roots of the worked example in the research note (§3): ISO weeks W09–W11 of 2025.
fn worked_example() -> Vec<Candidate> {
    vec![
        root(12, "2025-03-12T18:00:00Z"),
        root(11, "2025-03-12T08:00:00Z"),
        root(10, "2025-03-11T09:00:00Z"),
        root(9, "2025-03-10T21:00:00Z"),
        root(8, "2025-03-10T07:00:00Z"),
        root(7, "2025-03-07T12:00:00Z"),
        root(6, "2025-03-04T12:00:00Z"),
        root(5, "2025-03-03T12:00:00Z"),
        root(4, "2025-02-27T12:00:00Z"),
        root(3, "2025-02-24T12:00:00Z"),
    ]
}

#[test]
fn worked_example_first_of_period_overlapping() {
    let p = Policy {
        keep_last: 3,
        keep_daily: Some(3),
        keep_weekly: Some(2),
        ..Policy::default()
    };
    let plan = plan(&worked_example(), &p, t(NOW));
    assert_eq!(kept(&plan), vec![12, 11, 10, 8, 5]);
    assert_eq!(
        codes(&plan, 12),
        vec![ReasonCode::Newest, ReasonCode::KeepLast]
    );
    assert_eq!(
        codes(&plan, 11),
        vec![ReasonCode::KeepLast, ReasonCode::Daily]
    );
    assert_eq!(
        texts(&plan, 11),
        vec!["keep_last #2 of 3", "daily 2025-03-12 (#1 of 3)"]
    );
    assert_eq!(
        texts(&plan, 10),
        vec!["keep_last #3 of 3", "daily 2025-03-11 (#2 of 3)"]
    );
    assert_eq!(
        texts(&plan, 8),
        vec!["daily 2025-03-10 (#3 of 3)", "weekly 2025-W11 (#1 of 2)"]
    );
    assert_eq!(texts(&plan, 5), vec!["weekly 2025-W10 (#2 of 2)"]);
    assert_eq!(
        texts(&plan, 9),
        vec![
            "matched no keep rule",
            "daily 2025-03-10 is represented by #8",
            "weekly 2025-W11 is represented by #8"
        ]
    );
    assert_eq!(texts(&plan, 3), vec!["matched no keep rule"]);
    let c = &plan.counters;
    assert_eq!((c.total, c.kept, c.deleted), (10, 5, 5));
    assert_eq!(
        (c.newest, c.keep_last, c.daily, c.weekly, c.monthly),
        (1, 3, 3, 2, 0)
    );
}

#[test]
fn downtime_keeps_the_last_days_of_use() {
    // Powered off from 03-12 to 03-26: counting days *with boots* keeps the last days of real use,
    // where a calendar window back from the new boot (btrbk) would keep only the latest.
    let mut roots = worked_example();
    roots.push(root(13, "2025-03-26T08:00:00Z"));
    let p = Policy {
        keep_last: 1,
        keep_daily: Some(3),
        ..Policy::default()
    };
    let plan = plan(&roots, &p, t("2025-03-26T08:01:00Z"));
    assert_eq!(kept(&plan), vec![13, 11, 10]);
    assert_eq!(texts(&plan, 11), vec!["daily 2025-03-12 (#2 of 3)"]);

    // keep_within is a window anchored at the newest trusted root, so it does not save them...
    let p = Policy {
        keep_last: 1,
        keep_within: Some(Duration::from_secs(3 * 86_400)),
        ..Policy::default()
    };
    let plan_w = super::plan(&roots, &p, t("2025-03-26T08:01:00Z"));
    assert_eq!(kept(&plan_w), vec![13]);
    // ...but a root retired with an untrusted clock is not the reference: the window stays anchored
    // at the last trusted boot instead of jumping to 1970 or to the wall clock.
    roots.retain(|c| c.seq != 13);
    roots.push(untrusted(root(13, "1970-01-01T00:00:09Z")));
    let plan_u = super::plan(&roots, &p, t("2025-03-26T08:01:00Z"));
    assert_eq!(
        plan_u.reference,
        Some(Reference {
            seq: 12,
            retired_at: t("2025-03-12T18:00:00Z")
        })
    );
    assert_eq!(kept(&plan_u), vec![13, 12, 11, 10, 9, 8]);
    assert_eq!(
        codes(&plan_u, 13),
        vec![
            ReasonCode::Newest,
            ReasonCode::KeepLast,
            ReasonCode::TimeUntrusted
        ]
    );
    assert_eq!(
        texts(&plan_u, 9),
        vec!["within 3d of newest trusted root #12 (2025-03-12T18:00:00Z)"]
    );
}

#[test]
fn empty_input_gives_empty_plan() {
    let plan = plan(&[], &Policy::default(), t(NOW));
    assert!(plan.roots.is_empty() && plan.space_candidates.is_empty() && plan.reference.is_none());
    assert_eq!(plan.counters, Counters::default());
}

#[test]
fn keep_last_zero_is_raised_to_one() {
    let roots = [
        root(1, "2025-01-01T00:00:00Z"),
        root(2, "2025-01-02T00:00:00Z"),
        root(3, "2025-01-03T00:00:00Z"),
    ];
    let plan = plan(&roots, &policy(0), t(NOW));
    assert_eq!(kept(&plan), vec![3]);
    assert_eq!(
        texts(&plan, 3),
        vec!["newest root: always kept", "keep_last #1 of 1"]
    );
    assert_eq!(codes(&plan, 1), vec![ReasonCode::NoRule]);
}

#[test]
fn keep_last_keeps_the_newest_by_sequence_not_by_time() {
    // #3 carries an older time than #1 (clock stepped back): sequence still decides.
    let roots = [
        root(1, "2025-01-05T00:00:00Z"),
        root(2, "2025-01-06T00:00:00Z"),
        root(3, "2025-01-01T00:00:00Z"),
    ];
    let plan = plan(&roots, &policy(2), t(NOW));
    assert_eq!(
        plan.roots.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(kept(&plan), vec![3, 2]);
}

#[test]
fn pinned_roots_are_kept_and_count_towards_no_rule() {
    let roots = [
        root(1, "2025-01-01T08:00:00Z"),
        root(2, "2025-01-02T08:00:00Z"),
        pinned(root(3, "2025-01-03T08:00:00Z")),
        root(4, "2025-01-03T09:00:00Z"),
        pinned(root(5, "2025-01-04T08:00:00Z")),
    ];
    // The newest is pinned: still newest, and keep_last 2 skips both pins.
    let plan = plan(&roots, &policy(2), t(NOW));
    assert_eq!(kept(&plan), vec![5, 4, 3, 2]);
    assert_eq!(
        codes(&plan, 5),
        vec![ReasonCode::Newest, ReasonCode::Pinned]
    );
    assert_eq!(codes(&plan, 3), vec![ReasonCode::Pinned]);
    assert_eq!(texts(&plan, 2), vec!["keep_last #2 of 2"]);
    // Daily: 01-04 holds only a pin, so it is not a day with boots; 01-03 is represented by #4,
    // its first unpinned root.
    let p = Policy {
        keep_last: 1,
        keep_daily: Some(2),
        ..Policy::default()
    };
    let plan = super::plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![5, 4, 3, 2]);
    assert_eq!(
        texts(&plan, 4),
        vec!["keep_last #1 of 1", "daily 2025-01-03 (#1 of 2)"]
    );
    assert_eq!(texts(&plan, 2), vec!["daily 2025-01-02 (#2 of 2)"]);
}

#[test]
fn daily_counts_days_with_boots_and_keeps_the_first_of_each() {
    let roots = [
        root(1, "2025-01-01T08:00:00Z"),
        root(2, "2025-01-20T08:00:00Z"),
        root(3, "2025-01-20T09:00:00Z"),
        root(4, "2025-01-20T09:00:00Z"),
        root(5, "2025-02-15T10:00:00Z"),
    ];
    let p = Policy {
        keep_last: 1,
        keep_daily: Some(2),
        ..Policy::default()
    };
    let plan = plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![5, 2]);
    assert_eq!(
        texts(&plan, 5),
        vec![
            "newest root: always kept",
            "keep_last #1 of 1",
            "daily 2025-02-15 (#1 of 2)"
        ]
    );
    assert_eq!(
        texts(&plan, 4),
        vec![
            "matched no keep rule",
            "daily 2025-01-20 is represented by #2"
        ]
    );
    // "all"
    let p = Policy {
        keep_last: 1,
        keep_daily: Some(usize::MAX),
        ..Policy::default()
    };
    let plan = super::plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![5, 2, 1]);
    assert_eq!(texts(&plan, 1), vec!["daily 2025-01-01 (#3 of all)"]);
    // Some(0) disables the tier.
    let p = Policy {
        keep_last: 1,
        keep_daily: Some(0),
        ..Policy::default()
    };
    assert_eq!(kept(&super::plan(&roots, &p, t(NOW))), vec![5]);
}

#[test]
fn weekly_uses_iso_weeks_starting_monday() {
    let roots = [
        root(1, "2024-12-29T10:00:00Z"), // Sunday: 2024-W52
        root(2, "2024-12-30T10:00:00Z"), // Monday: 2025-W01 although still 2024
        root(3, "2025-01-05T23:59:59Z"), // Sunday: 2025-W01
        root(4, "2025-01-06T00:00:00Z"), // Monday: 2025-W02
    ];
    let p = Policy {
        keep_last: 1,
        keep_weekly: Some(3),
        ..Policy::default()
    };
    let plan = plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![4, 2, 1]);
    assert_eq!(texts(&plan, 2), vec!["weekly 2025-W01 (#2 of 3)"]);
    assert_eq!(texts(&plan, 1), vec!["weekly 2024-W52 (#3 of 3)"]);
    assert_eq!(
        texts(&plan, 3),
        vec![
            "matched no keep rule",
            "weekly 2025-W01 is represented by #2"
        ]
    );
}

#[test]
fn monthly_keeps_the_first_root_of_each_month_with_boots() {
    let roots = [
        root(1, "2024-10-31T23:00:00Z"),
        root(2, "2024-11-30T12:00:00Z"),
        root(3, "2025-01-01T00:00:00Z"),
        root(4, "2025-01-31T00:00:00Z"),
    ];
    let p = Policy {
        keep_last: 1,
        keep_monthly: Some(2),
        ..Policy::default()
    };
    let plan = plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![4, 3, 2]);
    assert_eq!(texts(&plan, 2), vec!["monthly 2024-11 (#2 of 2)"]);
}

#[test]
fn periods_are_delimited_in_the_policy_timezone() {
    // 2025-02-28T23:30Z is 2025-03-01 00:30 in Berlin; 2025-03-30 is the spring-forward day there
    // (01:00Z), and both of its roots fall on the same local day.
    let roots = [
        root(1, "2025-02-28T22:30:00Z"),
        root(2, "2025-02-28T23:30:00Z"),
        root(3, "2025-03-29T23:30:00Z"),
        root(4, "2025-03-30T21:30:00Z"),
    ];
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let p = Policy {
        keep_last: 1,
        keep_monthly: Some(5),
        keep_daily: Some(5),
        timezone: berlin,
        ..Policy::default()
    };
    let plan = plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![4, 3, 2, 1]);
    assert_eq!(texts(&plan, 3), vec!["daily 2025-03-30 (#1 of 5)"]);
    assert_eq!(
        texts(&plan, 2),
        vec!["daily 2025-03-01 (#2 of 5)", "monthly 2025-03 (#1 of 5)"]
    );
    assert_eq!(
        texts(&plan, 1),
        vec!["daily 2025-02-28 (#3 of 5)", "monthly 2025-02 (#2 of 5)"]
    );
    assert_eq!(
        codes(&plan, 4),
        vec![ReasonCode::Newest, ReasonCode::KeepLast]
    );
    // In UTC, #2 belongs to February and #3/#4 to different days.
    let p = Policy {
        timezone: Tz::UTC,
        ..p
    };
    let plan = super::plan(&roots, &p, t(NOW));
    assert_eq!(
        texts(&plan, 2),
        vec![
            "matched no keep rule",
            "daily 2025-02-28 is represented by #1",
            "monthly 2025-02 is represented by #1"
        ]
    );
    assert_eq!(
        texts(&plan, 3),
        vec!["daily 2025-03-29 (#2 of 5)", "monthly 2025-03 (#1 of 5)"]
    );
}

#[test]
fn untrusted_roots_are_invisible_to_time_rules() {
    let roots = [
        untrusted(root(1, "2025-01-10T08:00:00Z")), // would be the first of 01-10
        root(2, "2025-01-10T09:00:00Z"),
        untrusted(root(3, "1970-01-01T00:00:03Z")),
        untrusted(root(4, "2025-01-11T08:00:00Z")), // alone on its day: the day has no judged boot
        root(5, "2025-01-12T08:00:00Z"),
    ];
    let p = Policy {
        keep_last: 1,
        keep_daily: Some(10),
        keep_within: Some(Duration::from_secs(100 * 365 * 86_400)),
        ..Policy::default()
    };
    let plan = plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![5, 2]);
    assert_eq!(texts(&plan, 2)[1], "daily 2025-01-10 (#2 of 10)");
    for seq in [1, 3, 4] {
        assert_eq!(
            texts(&plan, seq),
            vec!["matched no keep rule", "time untrusted: time rules skipped"]
        );
    }
    let r = plan.roots.iter().find(|r| r.seq == 4).unwrap();
    assert_eq!((r.clock, r.decision), (Clock::Untrusted, Decision::Delete));
    assert_eq!(plan.counters.time_untrusted, 3);
    // keep_last still decides them.
    let plan = super::plan(&roots, &Policy { keep_last: 3, ..p }, t(NOW));
    assert_eq!(kept(&plan), vec![5, 4, 3, 2]);
    assert_eq!(
        texts(&plan, 3),
        vec!["keep_last #3 of 3", "time untrusted: time rules skipped"]
    );
}

#[test]
fn future_roots_are_invisible_to_time_rules() {
    let now = t("2025-01-12T12:00:00Z");
    let roots = [
        root(1, "2025-01-10T08:00:00Z"),
        root(2, "2025-01-13T12:00:00Z"), // a day ahead
        root(3, "2025-01-12T12:05:00Z"), // within the slack: judged
        root(4, "2025-01-12T11:00:00Z"),
    ];
    let p = Policy {
        keep_last: 1,
        keep_daily: Some(5),
        keep_within: Some(Duration::from_secs(3600)),
        ..Policy::default()
    };
    let plan = plan(&roots, &p, now);
    // The reference is #4 (newest judged); #3 is after it, hence within.
    assert_eq!(plan.reference.as_ref().map(|r| r.seq), Some(4));
    assert_eq!(kept(&plan), vec![4, 3, 1]);
    assert_eq!(
        texts(&plan, 2),
        vec![
            "matched no keep rule",
            "dated 1d in the future: time rules skipped"
        ]
    );
    assert_eq!(
        plan.roots.iter().find(|r| r.seq == 2).unwrap().clock,
        Clock::Future
    );
    assert_eq!(
        texts(&plan, 3),
        vec![
            "within 1h of newest trusted root #4 (2025-01-12T11:00:00Z)",
            "daily 2025-01-12 (#1 of 5)"
        ]
    );
    assert_eq!(plan.counters.future_dated, 1);
}

#[test]
fn keep_within_boundary_is_inclusive_and_the_reference_may_be_pinned() {
    let roots = [
        root(1, "2025-01-01T00:00:00Z"),
        root(2, "2025-01-07T23:59:59Z"),
        root(3, "2025-01-08T00:00:00Z"),
        pinned(root(4, "2025-01-15T00:00:00Z")),
    ];
    let p = Policy {
        keep_last: 1,
        keep_within: Some(Duration::from_secs(7 * 86_400)),
        ..Policy::default()
    };
    let plan = plan(&roots, &p, t(NOW));
    assert_eq!(
        plan.reference,
        Some(Reference {
            seq: 4,
            retired_at: t("2025-01-15T00:00:00Z")
        })
    );
    assert_eq!(kept(&plan), vec![4, 3]);
    assert_eq!(
        texts(&plan, 3),
        vec![
            "keep_last #1 of 1",
            "within 1w of newest trusted root #4 (2025-01-15T00:00:00Z)"
        ]
    );
    // Pins are not kept by the rule itself.
    assert_eq!(
        codes(&plan, 4),
        vec![ReasonCode::Newest, ReasonCode::Pinned]
    );
    assert_eq!(plan.counters.keep_within, 1);
}

#[test]
fn extreme_durations_and_times_do_not_panic() {
    let roots = [
        root(1, "1971-01-01T00:00:00Z"),
        root(2, "2025-01-01T00:00:00Z"),
    ];
    let p = Policy {
        keep_last: 1,
        keep_within: Some(Duration::MAX),
        ..Policy::default()
    };
    assert_eq!(kept(&plan(&roots, &p, t(NOW))), vec![2, 1]);
    assert_eq!(
        kept(&plan(&roots, &p, DateTime::<Utc>::MAX_UTC)),
        vec![2, 1]
    );
    assert_eq!(kept(&plan(&roots, &p, DateTime::<Utc>::MIN_UTC)), vec![2]);
}

#[test]
fn space_candidates_are_kept_unpinned_non_newest_oldest_first() {
    let roots = [
        root(1, "2025-01-01T00:00:00Z"),
        pinned(root(2, "2025-01-02T00:00:00Z")),
        root(3, "2025-01-03T00:00:00Z"),
        root(4, "2025-01-04T00:00:00Z"),
        root(5, "2025-01-05T00:00:00Z"),
    ];
    let mut p = policy(3);
    assert!(plan(&roots, &p, t(NOW)).space_candidates.is_empty());
    p.min_free = Some(MinFree::Percent(10.0));
    let plan = plan(&roots, &p, t(NOW));
    assert_eq!(kept(&plan), vec![5, 4, 3, 2]);
    let seqs: Vec<u64> = plan.space_candidates.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(plan.space_candidates[0].name, "00003");
}

#[test]
fn validate_refuses_nonsense() {
    assert!(Policy::default().validate().is_ok());
    for ok in [0.0, 10.0, 99.9] {
        assert!(
            Policy {
                min_free: Some(MinFree::Percent(ok)),
                ..Policy::default()
            }
            .validate()
            .is_ok()
        );
    }
    for bad in [f64::NAN, -1.0, 100.0, 150.0, f64::INFINITY] {
        let e = Policy {
            min_free: Some(MinFree::Percent(bad)),
            ..Policy::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("min_free"), "{e}");
    }
    assert!(
        Policy {
            min_free: Some(MinFree::Bytes(0)),
            ..Policy::default()
        }
        .validate()
        .is_ok()
    );
    assert!(
        Policy {
            keep_last: 0,
            ..Policy::default()
        }
        .validate()
        .is_ok()
    );
    assert_eq!(
        Policy {
            keep_last: 0,
            ..Policy::default()
        }
        .effective_keep_last(),
        1
    );
}

#[test]
fn min_free_is_met() {
    assert!(MinFree::Bytes(100).is_met(100, 1000));
    assert!(!MinFree::Bytes(101).is_met(100, 1000));
    assert!(MinFree::Percent(10.0).is_met(100, 1000));
    assert!(!MinFree::Percent(10.1).is_met(100, 1000));
    assert!(MinFree::Percent(0.0).is_met(0, 0));
    assert_eq!(MinFree::Percent(12.5).to_string(), "12.5%");
}

#[test]
fn durations_format_compactly_and_parse_back() {
    for (secs, want) in [
        (0, "0s"),
        (90, "1m30s"),
        (14 * 86_400, "2w"),
        (86_400 + 12 * 3600, "1d12h"),
        (3600, "1h"),
    ] {
        let d = Duration::from_secs(secs);
        assert_eq!(format_duration(d), want);
        assert_eq!(humantime::parse_duration(want).unwrap(), d);
    }
    let d = Duration::from_millis(1500);
    assert_eq!(humantime::parse_duration(&format_duration(d)).unwrap(), d);
}

#[test]
fn json_shape_is_stable() {
    let p = Policy {
        keep_within: Some(Duration::from_secs(14 * 86_400)),
        min_free: Some(MinFree::Bytes(5)),
        timezone: "Europe/Berlin".parse().unwrap(),
        ..policy(1)
    };
    let roots = [
        root(1, "2025-01-01T00:00:00Z"),
        untrusted(root(2, "1970-01-01T00:00:00Z")),
    ];
    let v = serde_json::to_value(plan(&roots, &p, t(NOW))).unwrap();
    assert_eq!(v["roots"][0]["decision"], "keep");
    assert_eq!(v["roots"][0]["clock"], "untrusted");
    assert_eq!(v["roots"][0]["reasons"][2]["code"], "time_untrusted");
    assert_eq!(v["roots"][1]["reasons"][0]["code"], "keep_within");
    assert_eq!(v["roots"][1]["retired_at"], "2025-01-01T00:00:00Z");
    assert_eq!(v["reference"]["seq"], 1);
    let pv = serde_json::to_value(&p).unwrap();
    assert_eq!(pv["keep_within"], "2w");
    assert_eq!(pv["timezone"], "Europe/Berlin");
    assert_eq!(pv["min_free"]["bytes"], 5);
}

#[test]
fn duplicate_sequence_numbers_are_ordered_deterministically() {
    let a = Candidate {
        name: "a".into(),
        ..root(7, "2025-01-01T00:00:00Z")
    };
    let b = Candidate {
        name: "b".into(),
        ..root(7, "2025-01-01T00:00:00Z")
    };
    let p1 = plan(&[a.clone(), b.clone()], &policy(1), t(NOW));
    let p2 = plan(&[b, a], &policy(1), t(NOW));
    assert_eq!(p1, p2);
    assert_eq!(p1.roots[0].name, "b");
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_candidates() -> impl Strategy<Value = (Vec<Candidate>, DateTime<Utc>)> {
    let now = t("2025-06-01T00:00:00Z");
    let base = t("2024-10-01T00:00:00Z").timestamp();
    let span = now.timestamp() - base;
    // Kinds: 0..=6 trusted and in order (times grow with the sequence, as boots do), 7 trusted but
    // out of order (a wrong clock: anywhere in the span), 8 untrusted (plausible or 1970), 9 future.
    let attrs = (0..10u8, 0..span, any::<bool>(), 0..40u8, 0..50_000i64);
    (
        proptest::collection::btree_set(1u64..400, 0..28),
        proptest::collection::vec(attrs, 28),
        proptest::collection::vec(0..span / 10, 28),
    )
        .prop_map(move |(seqs, attrs, steps)| {
            // The in-order clock: a sorted walk through the span.
            let mut clock = base;
            let roots = seqs
                .into_iter()
                .zip(attrs)
                .zip(steps)
                .map(|((seq, (kind, off, in_1970, pin, ahead)), step)| {
                    clock = (clock + step).min(now.timestamp());
                    let (at, trusted) = match kind {
                        0..=6 => (clock, true),
                        7 => (base + off, true),
                        8 if in_1970 => (ahead % 100, false),
                        8 => (base + off, false),
                        _ => (now.timestamp() + 301 + ahead * 60, true),
                    };
                    Candidate {
                        seq,
                        name: format!("{seq:05}"),
                        retired_at: DateTime::from_timestamp(at, 0).unwrap(),
                        clock_trusted: trusted,
                        pinned: pin < 4,
                    }
                })
                .collect();
            (roots, now)
        })
        .prop_flat_map(|(roots, now): (Vec<Candidate>, _)| (Just(roots).prop_shuffle(), Just(now)))
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    let tz = prop_oneof![
        Just("UTC"),
        Just("Europe/Berlin"),
        Just("America/New_York"),
        Just("Pacific/Chatham"),
        Just("Asia/Kolkata")
    ]
    .prop_map(|z| z.parse::<Tz>().unwrap());
    let tier = || proptest::option::of(prop_oneof![0usize..6, Just(usize::MAX)]);
    (
        0usize..6,
        proptest::option::of(0u64..(40 * 86_400)),
        tier(),
        tier(),
        tier(),
        tz,
        proptest::option::of(Just(MinFree::Percent(15.0))),
    )
        .prop_map(|(keep_last, within, d, w, m, timezone, min_free)| Policy {
            keep_last,
            keep_within: within.map(Duration::from_secs),
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            timezone,
            min_free,
        })
}

/// The roots the count rules alone keep: newest, pinned, or among the keep_last newest unpinned.
fn count_rules_keep(roots: &[Candidate], p: &Policy) -> Vec<u64> {
    let mut sorted: Vec<&Candidate> = roots.iter().collect();
    sorted.sort_by_key(|c| Reverse(c.seq));
    let last: Vec<u64> = sorted
        .iter()
        .filter(|c| !c.pinned)
        .take(p.effective_keep_last())
        .map(|c| c.seq)
        .collect();
    sorted
        .iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || c.pinned || last.contains(&c.seq))
        .map(|(_, c)| c.seq)
        .collect()
}

fn is_judged(c: &Candidate, now: DateTime<Utc>) -> bool {
    c.clock_trusted && c.retired_at <= now + TimeDelta::from_std(FUTURE_SLACK).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_deletes_pinned_or_newest((roots, now) in arb_candidates(), p in arb_policy()) {
        let plan = plan(&roots, &p, now);
        let newest = roots.iter().map(|c| c.seq).max();
        for r in plan.to_delete() {
            prop_assert!(Some(r.seq) != newest);
            prop_assert!(!roots.iter().any(|c| c.seq == r.seq && c.pinned));
        }
        for s in &plan.space_candidates {
            prop_assert!(Some(s.seq) != newest);
            prop_assert!(!roots.iter().any(|c| c.seq == s.seq && c.pinned));
        }
    }

    #[test]
    fn idempotent((roots, now) in arb_candidates(), p in arb_policy()) {
        let first = plan(&roots, &p, now);
        let survivors: Vec<Candidate> =
            roots.iter().filter(|c| first.to_keep().any(|r| r.seq == c.seq)).cloned().collect();
        let second = plan(&survivors, &p, now);
        // Deleting roots removes evidence of which clocks were in step: a wrong clock whose step
        // was ambiguous may be judged again. Whenever no judgement changes, nothing more goes.
        let clock = |pl: &RetentionPlan, seq: u64| {
            pl.roots.iter().find(|r| r.seq == seq).map(|r| r.clock)
        };
        if survivors.iter().all(|c| clock(&first, c.seq) == clock(&second, c.seq)) {
            prop_assert_eq!(second.counters.deleted, 0, "{:#?}", second);
            prop_assert_eq!(kept(&first), kept(&second));
        }
    }

    #[test]
    fn every_root_is_explained((roots, now) in arb_candidates(), p in arb_policy()) {
        let plan = plan(&roots, &p, now);
        prop_assert_eq!(plan.roots.len(), roots.len());
        prop_assert!(plan.roots.windows(2).all(|w| w[0].seq > w[1].seq));
        for r in &plan.roots {
            let keeping = r.reasons.iter().filter(|x| x.code.keeps()).count();
            match r.decision {
                Decision::Keep => prop_assert!(keeping > 0, "{:?}", r),
                Decision::Delete => {
                    prop_assert_eq!(keeping, 0);
                    prop_assert_eq!(r.reasons[0].code, ReasonCode::NoRule);
                }
            }
            prop_assert!(r.reasons.iter().all(|x| !x.text.is_empty()));
        }
        let c = &plan.counters;
        prop_assert_eq!(c.kept + c.deleted, c.total);
    }

    #[test]
    fn time_rules_never_touch_untrusted_or_future_roots(
        (roots, now) in arb_candidates(),
        p in arb_policy(),
        shift in -1_000_000_000i64..1_000_000_000,
    ) {
        let plan = plan(&roots, &p, now);
        let by_count = count_rules_keep(&roots, &p);
        for r in &plan.roots {
            let c = roots.iter().find(|c| c.seq == r.seq).unwrap();
            if !is_judged(c, now) {
                prop_assert!(r.clock != Clock::Trusted);
                prop_assert!(r.reasons.iter().all(|x| !x.code.is_time_rule()), "{:?}", r);
                prop_assert_eq!(r.decision == Decision::Keep, by_count.contains(&r.seq));
                let note = match c.clock_trusted {
                    true => ReasonCode::FutureDated,
                    false => ReasonCode::TimeUntrusted,
                };
                prop_assert_eq!(r.reasons.last().map(|x| x.code), Some(note));
            }
        }
        // Moving untrusted roots around in time changes no decision and no time reason of anyone.
        let moved: Vec<Candidate> = roots
            .iter()
            .cloned()
            .map(|mut c| {
                if !c.clock_trusted {
                    c.retired_at += TimeDelta::seconds(shift);
                }
                c
            })
            .collect();
        let again = super::plan(&moved, &p, now);
        let summary = |pl: &RetentionPlan| -> Vec<(u64, Decision, Vec<Reason>)> {
            pl.roots.iter().map(|r| (r.seq, r.decision, r.reasons.clone())).collect()
        };
        prop_assert_eq!(summary(&plan), summary(&again));
    }

    #[test]
    fn keep_last_floor_is_honoured((roots, now) in arb_candidates(), p in arb_policy()) {
        let plan = plan(&roots, &p, now);
        let k = kept(&plan);
        for seq in count_rules_keep(&roots, &p) {
            prop_assert!(k.contains(&seq));
        }
    }

    #[test]
    fn independent_of_input_order((roots, now) in arb_candidates(), p in arb_policy()) {
        let mut reversed = roots.clone();
        reversed.reverse();
        let mut sorted = roots.clone();
        sorted.sort_by_key(|c| c.seq);
        let a = plan(&roots, &p, now);
        prop_assert_eq!(&a, &plan(&reversed, &p, now));
        prop_assert_eq!(&a, &plan(&sorted, &p, now));
    }

    #[test]
    fn daily_matches_a_brute_force_model(
        (roots, now) in arb_candidates(), n in 1usize..8, p in arb_policy()
    ) {
        // With only keep_daily on, a judged unpinned root is kept by "daily" exactly when it has
        // the lowest sequence among judged unpinned roots of its local day, and fewer than n
        // later days hold such roots.
        let p = Policy {
            keep_daily: Some(n), keep_weekly: None, keep_monthly: None, keep_within: None, ..p
        };
        let plan = plan(&roots, &p, now);
        // Which roots are in step is the in-step rule's business (tested on its own); given them,
        // the tier must behave as the model says.
        let in_step = |c: &Candidate| {
            plan.roots.iter().any(|r| r.seq == c.seq && r.clock == Clock::Trusted)
        };
        let pool: Vec<&Candidate> =
            roots.iter().filter(|c| !c.pinned && is_judged(c, now) && in_step(c)).collect();
        let day = |c: &Candidate| c.retired_at.with_timezone(&p.timezone).date_naive();
        for c in &pool {
            let first = pool.iter().filter(|o| day(o) == day(c)).all(|o| o.seq >= c.seq);
            let mut later: Vec<_> = pool.iter().map(|o| day(o)).filter(|d| *d > day(c)).collect();
            later.sort();
            later.dedup();
            let expect = first && later.len() < n;
            let got = codes(&plan, c.seq).contains(&ReasonCode::Daily);
            prop_assert_eq!(expect, got, "root {:?}", c);
        }
    }

    #[test]
    fn space_candidates_are_the_unprotected_kept_roots(
        (roots, now) in arb_candidates(), p in arb_policy()
    ) {
        let plan = plan(&roots, &p, now);
        let got: Vec<u64> = plan.space_candidates.iter().map(|c| c.seq).collect();
        let mut want: Vec<u64> = plan
            .to_keep()
            .skip_while(|r| Some(r.seq) == plan.roots.first().map(|f| f.seq))
            .filter(|r| !r.reasons.iter().any(|x| x.code == ReasonCode::Pinned))
            .map(|r| r.seq)
            .collect();
        want.reverse();
        if p.min_free.is_none() {
            want.clear();
        }
        prop_assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------------------------------------
// In step: one wrong clock affects at most its own root.

/// `n` daily boots at 08:00 from 2026-03-01, with `wrong` replacing the time of the boots it names.
fn boots(n: u64, wrong: &[(u64, &str)]) -> Vec<Candidate> {
    (1..=n)
        .map(|seq| {
            let at = wrong
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, at)| t(at))
                .unwrap_or_else(|| t("2026-02-28T08:00:00Z") + TimeDelta::days(seq as i64));
            Candidate {
                seq,
                name: format!("{seq:05}"),
                retired_at: at,
                // As the retiring boot judged it on its own (see `layout::clock_trusted`).
                clock_trusted: crate::layout::clock_trusted(at),
                pinned: false,
            }
        })
        .collect()
}

fn daily(n: usize) -> Policy {
    Policy {
        keep_last: 1,
        keep_daily: Some(n),
        ..Policy::default()
    }
}

fn clock_of(p: &RetentionPlan, seq: u64) -> Clock {
    p.roots.iter().find(|r| r.seq == seq).unwrap().clock
}

#[test]
fn one_outlier_in_2099_affects_only_its_own_root() {
    let roots = boots(8, &[(3, "2099-01-01T00:00:00Z")]);
    // Planned from the future too (the bad boot itself may run prune): the outlier is then not
    // "future", only out of step.
    for now in [t("2026-03-20T12:00:00Z"), t("2099-06-01T00:00:00Z")] {
        let plan = plan(&roots, &daily(30), now);
        for seq in [1, 2, 4, 5, 6, 7, 8] {
            assert_eq!(clock_of(&plan, seq), Clock::Trusted, "#{seq} at {now}");
            assert!(codes(&plan, seq).contains(&ReasonCode::Daily), "#{seq}");
        }
        assert_ne!(clock_of(&plan, 3), Clock::Trusted);
        assert!(!codes(&plan, 3).contains(&ReasonCode::Daily));
    }
    let plan = super::plan(&roots, &daily(30), t("2099-06-01T00:00:00Z"));
    assert_eq!(clock_of(&plan, 3), Clock::OutOfStep);
    assert_eq!(
        texts(&plan, 3),
        vec![
            "matched no keep rule",
            "time out of step with the roots retired before and after it (a wrong clock): time \
             rules skipped"
        ]
    );
    assert_eq!(plan.counters.time_untrusted, 1);
}

#[test]
fn first_boots_in_1970_are_untrusted_not_the_later_ones() {
    let roots = boots(
        6,
        &[(1, "1970-01-01T00:00:09Z"), (2, "1970-01-01T00:00:12Z")],
    );
    let plan = plan(&roots, &daily(30), t("2026-03-20T12:00:00Z"));
    assert_eq!(clock_of(&plan, 1), Clock::Untrusted);
    assert_eq!(clock_of(&plan, 2), Clock::Untrusted);
    for seq in 3..=6 {
        assert_eq!(clock_of(&plan, seq), Clock::Trusted, "#{seq}");
        assert!(codes(&plan, seq).contains(&ReasonCode::Daily), "#{seq}");
    }
}

#[test]
fn a_clock_a_year_behind_then_correct_again() {
    // #3 and #4 a year behind, then correct again.
    let roots = boots(
        8,
        &[(3, "2025-03-03T08:00:00Z"), (4, "2025-03-04T08:00:00Z")],
    );
    let plan = plan(&roots, &daily(30), t("2026-03-20T12:00:00Z"));
    for seq in [3, 4] {
        assert_eq!(clock_of(&plan, seq), Clock::OutOfStep, "#{seq}");
    }
    for seq in [1, 2, 5, 6, 7, 8] {
        assert_eq!(clock_of(&plan, seq), Clock::Trusted, "#{seq}");
        assert!(codes(&plan, seq).contains(&ReasonCode::Daily), "#{seq}");
    }
    // A clock a year ahead for two boots, the same.
    let roots = boots(
        8,
        &[(3, "2027-03-03T08:00:00Z"), (4, "2027-03-04T08:00:00Z")],
    );
    let plan = super::plan(&roots, &daily(30), t("2028-01-01T00:00:00Z"));
    for seq in [3, 4] {
        assert_eq!(clock_of(&plan, seq), Clock::OutOfStep, "#{seq}");
    }
    for seq in [1, 2, 5, 6, 7, 8] {
        assert_eq!(clock_of(&plan, seq), Clock::Trusted, "#{seq}");
    }
}

#[test]
fn small_steps_back_stay_in_step() {
    // NTP steps, an RTC in local time read as UTC: hours, not a wrong clock.
    let roots = boots(
        5,
        &[(3, "2026-03-02T20:00:00Z"), (4, "2026-03-02T19:00:00Z")],
    );
    let plan = plan(&roots, &daily(30), t("2026-03-20T12:00:00Z"));
    for seq in 1..=5 {
        assert_eq!(clock_of(&plan, seq), Clock::Trusted, "#{seq}");
    }
}

#[test]
fn an_outlier_just_before_the_newest_root_is_still_the_outlier() {
    // [1, 2, X ahead, 4]: runs {1, 2, X} and {1, 2, 4} are equally long; X's spans more time.
    let at = |s: &str| Some(t(s));
    let times = [
        at("2026-03-01T08:00:00Z"),
        at("2026-03-02T08:00:00Z"),
        at("2026-03-20T08:00:00Z"),
        at("2026-03-04T08:00:00Z"),
    ];
    assert_eq!(in_step(&times), [true, true, false, true]);
    // And a clock behind, just after the first root: [1, Y behind, 3, 4].
    let times = [
        at("2026-03-01T08:00:00Z"),
        at("2025-03-02T08:00:00Z"),
        at("2026-03-03T08:00:00Z"),
        at("2026-03-04T08:00:00Z"),
    ];
    assert_eq!(in_step(&times), [true, false, true, true]);
}

#[test]
fn in_step_prefers_the_earliest_of_equally_long_runs() {
    let at = |s: &str| Some(t(s));
    // A then a boot a year behind: either could be wrong; the earlier stands.
    assert_eq!(
        in_step(&[at("2025-06-01T00:00:00Z"), at("2024-06-02T00:00:00Z")]),
        [true, false]
    );
    assert_eq!(
        in_step(&[
            at("2025-06-01T00:00:00Z"),
            None,
            at("2099-01-01T00:00:00Z"),
            at("2025-06-03T00:00:00Z"),
            at("2025-06-04T00:00:00Z"),
        ]),
        [true, false, false, true, true]
    );
    assert_eq!(in_step(&[]), Vec::<bool>::new());
    // Extreme times do not overflow.
    let min = Some(DateTime::<Utc>::MIN_UTC);
    let max = Some(DateTime::<Utc>::MAX_UTC);
    assert_eq!(in_step(&[max, min, max]), [true, false, true]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Boots 1 to 4 days apart, in order, with one clock off by `off` days (ahead or behind, at least
    /// ten: more than the gaps and the slack): that root alone is out of step, unless its time still
    /// fits the order (ahead at the end, behind at the start).
    #[test]
    fn one_wrong_clock_is_the_only_root_out_of_step(
        n in 3usize..40, at in 0usize..40, off in prop_oneof![-4000i64..-10, 10i64..4000],
        gaps in proptest::collection::vec(1i64..5, 40),
    ) {
        let at = at % n;
        let mut day = 0;
        let mut times: Vec<Option<DateTime<Utc>>> = Vec::new();
        for g in &gaps[..n] {
            day += g;
            times.push(Some(t("2026-01-01T08:00:00Z") + TimeDelta::days(day)));
        }
        times[at] = times[at].map(|x| x + TimeDelta::days(off));
        let fits = (at == n - 1 && off > 0) || (at == 0 && off < 0);
        let got = in_step(&times);
        for (i, ok) in got.iter().enumerate() {
            prop_assert_eq!(*ok, i != at || fits, "root {} of {:?}", i, got);
        }
    }
}
