//! Retention: which retired roots to keep, which to delete, and why.
//!
//! [`plan`] is a pure function of the retired roots, the [`Policy`] and the current time: it reads
//! no disk and no clock, so the same inputs always give the same [`RetentionPlan`], and an executor
//! (or `--dry-run --json`) consumes that plan.
//!
//! # Semantics
//!
//! **Order.** Roots are ordered by boot sequence number, never by clock: the root with the highest
//! `seq` is the *newest*. Sequence numbers are expected to be unique; ties are broken by name (then
//! by the remaining fields) so the result never depends on the order of the input slice. The plan
//! lists roots newest first.
//!
//! **Always kept.** The newest root is always kept (it is the previous boot, the last state the
//! user saw). Pinned roots are always kept, and they *count towards no rule*: they take no
//! `keep_last` slot, they are not bucketed into days, weeks or months, and they are never anyone's
//! "first root of the period".
//!
//! **`keep_last` N** keeps the N newest unpinned roots. N defaults to 10; 0 is raised to 1, so
//! together with the newest rule at least one root always survives.
//!
//! **`keep_daily` / `keep_weekly` / `keep_monthly` N** count *periods that contain boots*, not
//! calendar periods back from now: a laptop that was off for two weeks keeps its last days of use.
//! The periods that contain at least one time-judged unpinned root (see below) are ranked from the
//! most recent calendar period backwards, and the first N of them are kept, each represented by its
//! *first* root, the one with the lowest sequence number. (A representative never changes as later
//! boots arrive, so a root kept as "daily" stays that day's daily.) Days, ISO weeks (starting
//! Monday, labelled `2025-W11`, the ISO week-numbering year may differ from the calendar year
//! around New Year) and months are taken in [`Policy::timezone`] (UTC by default), daylight-saving
//! shifts included. The tiers overlap: one root may be kept as newest, `keep_last`, daily, weekly
//! and monthly all at once, and every rule it satisfies is listed. `None` and `Some(0)` disable a
//! tier; `Some(usize::MAX)` keeps every period ("all").
//!
//! **`keep_within` D** keeps the time-judged unpinned roots whose `retired_at` is no earlier than
//! *reference − D*. The reference is the `retired_at` of the newest (highest sequence) time-judged
//! root, pinned or not, never the wall clock: the clock in the initrd may be wrong, and a machine
//! that was off for a month must not lose its history on the first boot back. Roots dated after the
//! reference (possible after a clock step) are within. `now` is used only to spot future-dated
//! roots.
//!
//! **Time-judged roots.** A root is judged by time rules only if its clock was trusted when it was
//! retired (`clock_trusted`: not before 2025), it is not dated more than [`FUTURE_SLACK`] after
//! `now`, and its time is *in step* with its neighbours by sequence. Every other root is invisible
//! to the time rules: they neither keep it nor delete it, they do not bucket it (so it cannot make a
//! period "contain boots" or be its first root), and it is never the `keep_within` reference. Only
//! the newest rule, pins and `keep_last` decide it, and its reasons say so (`time_untrusted`,
//! `future_dated` or `out_of_step`; the counter `time_untrusted` counts the first and the last).
//!
//! **In step: one wrong clock affects at most its own root.** Boots happen in sequence order, so
//! true retirement times grow with the sequence number. Of the roots that pass the two checks
//! above (pinned ones included: their times are evidence too), the in-step ones are the longest
//! run, in sequence order, whose times never go back by more than [`STEP_SLACK`] from one to the
//! next; among equally long runs, the one spanning the least time (a wrong clock stretches its run),
//! then the one starting earliest. The rest are `out_of_step`. A
//! boot at 2099 among correct ones is thus the outlier, not every later boot (they outnumber it);
//! a clock that jumps back a year for one boot marks that boot; the next boots, correct again,
//! stay in step. Judging against neighbours rather than against the latest time ever seen is what
//! keeps one bad clock from disabling daily, weekly and monthly retention for good. The judgement
//! is redone at every plan from all roots present, so it needs no state.
//!
//! **Delete** is what happens to a root that no rule keeps. Its reasons start with `no_rule` and
//! may add `superseded` notes ("daily 2025-03-10 is represented by #8") that explain why a root in
//! a kept period still goes.
//!
//! **Free-space floor.** [`RetentionPlan::space_candidates`] lists, when [`Policy::min_free`] is
//! set, the kept roots a free-space floor may still delete, oldest (lowest sequence) first: every
//! kept root except pinned ones and the newest. The executor deletes the planned roots first, then
//! deletes candidates one at a time, re-checking free space (`statvfs`) after each, until
//! [`MinFree::is_met`] (snapper's two-pass cleanup). The floor overrides `keep_last` and the time
//! tiers, never pins or the newest root.
//!
//! **Properties** (property-tested): the newest and the pinned roots are never deleted; every root
//! has at least one reason and every kept root at least one keeping reason; the result does not
//! depend on the order of the input; and the plan is idempotent: removing the deleted roots and
//! planning again with the same `now` deletes nothing more, whenever that removal changes no root's
//! in-step judgement (deleting roots removes evidence: a wrong clock whose step was ambiguous may be
//! judged again).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::tz::Tz;
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::config::format_duration;
pub use crate::config::{DEFAULT_KEEP_LAST, MinFree, Policy};

#[cfg(test)]
mod tests;

/// How far past `now` a root may be dated and still count as "not in the future": covers small
/// clock differences between the initrd that stamped the root and the system that plans.
pub const FUTURE_SLACK: Duration = Duration::from_secs(5 * 60);

/// How far a root's time may go back from the previous root's and still be in step: NTP steps,
/// and an RTC kept in local time (dual boot) read as UTC, move the clock by hours, not days.
pub const STEP_SLACK: Duration = Duration::from_secs(86_400);

/// One retired root, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Boot sequence number: orders roots (higher is newer).
    pub seq: u64,
    /// Subvolume name under `old_roots`.
    pub name: String,
    /// When the root was retired, by the clock of the initrd that retired it.
    pub retired_at: DateTime<Utc>,
    /// Whether that clock looked trustworthy at the time.
    pub clock_trusted: bool,
    /// Pinned by the user: always kept, counts towards no rule.
    pub pinned: bool,
}

/// What happens to a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// At least one rule keeps it.
    Keep,
    /// No rule keeps it.
    Delete,
}

/// Whether time rules may judge a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// Trusted clock, not in the future: time rules apply.
    Trusted,
    /// The clock was not trusted at retirement: time rules skip it.
    Untrusted,
    /// Dated more than [`FUTURE_SLACK`] after `now`: time rules skip it.
    Future,
    /// Out of step with the roots retired before and after it (a wrong clock): time rules skip it.
    OutOfStep,
}

/// Stable machine code of a [`Reason`] (serialized in snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Keeps: the newest root.
    Newest,
    /// Keeps: pinned.
    Pinned,
    /// Keeps: one of the `keep_last` newest unpinned roots.
    KeepLast,
    /// Keeps: within `keep_within` of the reference.
    KeepWithin,
    /// Keeps: first root of one of the last `keep_daily` days with boots.
    Daily,
    /// Keeps: first root of one of the last `keep_weekly` ISO weeks with boots.
    Weekly,
    /// Keeps: first root of one of the last `keep_monthly` months with boots.
    Monthly,
    /// Delete: no rule keeps the root.
    NoRule,
    /// Note on a deleted root: its period is kept, but by an earlier root.
    Superseded,
    /// Note: clock untrusted, time rules skipped.
    TimeUntrusted,
    /// Note: dated in the future, time rules skipped.
    FutureDated,
    /// Note: time out of step with the neighbouring roots, time rules skipped.
    OutOfStep,
}

impl ReasonCode {
    /// Whether this reason keeps the root.
    pub fn keeps(self) -> bool {
        matches!(
            self,
            ReasonCode::Newest
                | ReasonCode::Pinned
                | ReasonCode::KeepLast
                | ReasonCode::KeepWithin
                | ReasonCode::Daily
                | ReasonCode::Weekly
                | ReasonCode::Monthly
        )
    }

    /// Whether this reason comes from a time rule (`keep_within` or a calendar tier).
    pub fn is_time_rule(self) -> bool {
        matches!(
            self,
            ReasonCode::KeepWithin
                | ReasonCode::Daily
                | ReasonCode::Weekly
                | ReasonCode::Monthly
                | ReasonCode::Superseded
        )
    }
}

/// Why a root is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable machine code.
    pub code: ReasonCode,
    /// Human text, e.g. `daily 2025-03-10 (#1 of 7)`.
    pub text: String,
}

impl Reason {
    fn new(code: ReasonCode, text: impl Into<String>) -> Self {
        Reason {
            code,
            text: text.into(),
        }
    }
}

/// The decision for one root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootPlan {
    /// Boot sequence number.
    pub seq: u64,
    /// Subvolume name.
    pub name: String,
    /// Retirement time as recorded.
    pub retired_at: DateTime<Utc>,
    /// Whether time rules judged it.
    pub clock: Clock,
    /// Keep or delete.
    pub decision: Decision,
    /// Never empty. Keeping reasons first (newest, pinned, keep_last, keep_within, daily, weekly,
    /// monthly), or `no_rule` then `superseded` notes; a clock note last.
    pub reasons: Vec<Reason>,
}

/// A kept root the free-space floor may delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpaceCandidate {
    /// Boot sequence number.
    pub seq: u64,
    /// Subvolume name.
    pub name: String,
}

/// The root whose time anchors `keep_within`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// Its sequence number.
    pub seq: u64,
    /// Its retirement time.
    pub retired_at: DateTime<Utc>,
}

/// How many roots each rule keeps (rules overlap, so these may add up to more than `kept`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Roots considered.
    pub total: usize,
    /// Roots kept.
    pub kept: usize,
    /// Roots to delete.
    pub deleted: usize,
    /// Kept as the newest (0 or 1).
    pub newest: usize,
    /// Kept as pinned.
    pub pinned: usize,
    /// Kept by `keep_last`.
    pub keep_last: usize,
    /// Kept by `keep_within`.
    pub keep_within: usize,
    /// Kept by `keep_daily`.
    pub daily: usize,
    /// Kept by `keep_weekly`.
    pub weekly: usize,
    /// Kept by `keep_monthly`.
    pub monthly: usize,
    /// Roots skipped by time rules because their clock was untrusted.
    pub time_untrusted: usize,
    /// Roots skipped by time rules because they are dated in the future.
    pub future_dated: usize,
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// The `now` the plan was made for.
    pub now: DateTime<Utc>,
    /// Anchor of `keep_within` (`None` when it is off or no root is time-judged).
    pub reference: Option<Reference>,
    /// Every root, newest (highest sequence) first.
    pub roots: Vec<RootPlan>,
    /// Kept roots a free-space floor may delete, oldest first; empty unless `min_free` is set.
    pub space_candidates: Vec<SpaceCandidate>,
    /// Per-rule counts.
    pub counters: Counters,
}

impl RetentionPlan {
    /// Roots to delete, newest first.
    pub fn to_delete(&self) -> impl Iterator<Item = &RootPlan> {
        self.roots.iter().filter(|r| r.decision == Decision::Delete)
    }

    /// Roots to keep, newest first.
    pub fn to_keep(&self) -> impl Iterator<Item = &RootPlan> {
        self.roots.iter().filter(|r| r.decision == Decision::Keep)
    }
}

/// Calendar tiers, in the order their reasons are listed.
#[derive(Debug, Clone, Copy)]
enum Tier {
    Daily,
    Weekly,
    Monthly,
}

impl Tier {
    fn code(self) -> ReasonCode {
        match self {
            Tier::Daily => ReasonCode::Daily,
            Tier::Weekly => ReasonCode::Weekly,
            Tier::Monthly => ReasonCode::Monthly,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Tier::Daily => "daily",
            Tier::Weekly => "weekly",
            Tier::Monthly => "monthly",
        }
    }

    /// A sort key (chronological) and a label for the period holding `t` in `tz`.
    fn period(self, t: DateTime<Utc>, tz: Tz) -> ((i32, u32), String) {
        let date = t.with_timezone(&tz).date_naive();
        match self {
            Tier::Daily => (
                (date.year(), date.ordinal()),
                date.format("%Y-%m-%d").to_string(),
            ),
            Tier::Weekly => {
                let w = date.iso_week();
                (
                    (w.year(), w.week()),
                    format!("{:04}-W{:02}", w.year(), w.week()),
                )
            }
            Tier::Monthly => (
                (date.year(), date.month()),
                format!("{:04}-{:02}", date.year(), date.month()),
            ),
        }
    }
}

/// Plans retention for `roots` under `policy` at `now`. Pure: reads no disk and no clock.
///
/// `policy` should have passed [`Policy::validate`]; an invalid `min_free` only affects whether
/// [`RetentionPlan::space_candidates`] is filled.
pub fn plan(roots: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> RetentionPlan {
    // Newest first by sequence; the remaining fields only make ties deterministic.
    let mut order: Vec<&Candidate> = roots.iter().collect();
    order.sort_by_key(|c| Reverse((c.seq, &c.name, c.retired_at, c.clock_trusted, c.pinned)));

    // An unrepresentable now + slack means nothing can be in the future.
    let future_after = TimeDelta::from_std(FUTURE_SLACK)
        .ok()
        .and_then(|s| now.checked_add_signed(s));
    let clocks: Vec<Clock> = order
        .iter()
        .map(|c| {
            if !c.clock_trusted {
                Clock::Untrusted
            } else if future_after.is_some_and(|limit| c.retired_at > limit) {
                Clock::Future
            } else {
                Clock::Trusted
            }
        })
        .collect();
    // Oldest first for the sequence judgement.
    let times: Vec<Option<DateTime<Utc>>> = order
        .iter()
        .zip(&clocks)
        .rev()
        .map(|(c, clock)| (*clock == Clock::Trusted).then_some(c.retired_at))
        .collect();
    let mut clocks = clocks;
    for (i, ok) in in_step(&times).into_iter().rev().enumerate() {
        if clocks[i] == Clock::Trusted && !ok {
            clocks[i] = Clock::OutOfStep;
        }
    }
    // Candidates for the rules: unpinned; for time rules, also time-judged.
    let unpinned = |i: &usize| !order[*i].pinned;
    let judged = |i: &usize| !order[*i].pinned && clocks[*i] == Clock::Trusted;

    let mut keeps: Vec<Vec<Reason>> = vec![Vec::new(); order.len()];
    let mut superseded: Vec<Vec<Reason>> = vec![Vec::new(); order.len()];
    let mut counters = Counters {
        total: order.len(),
        ..Counters::default()
    };

    if let Some(first) = keeps.first_mut() {
        first.push(Reason::new(ReasonCode::Newest, "newest root: always kept"));
        counters.newest = 1;
    }
    for (i, c) in order.iter().enumerate() {
        if c.pinned {
            keeps[i].push(Reason::new(
                ReasonCode::Pinned,
                "pinned: always kept, counts towards no rule",
            ));
            counters.pinned += 1;
        }
    }

    let keep_last = policy.effective_keep_last();
    for (rank, i) in (0..order.len())
        .filter(unpinned)
        .take(keep_last)
        .enumerate()
    {
        keeps[i].push(Reason::new(
            ReasonCode::KeepLast,
            format!("keep_last #{} of {keep_last}", rank + 1),
        ));
        counters.keep_last += 1;
    }

    let mut reference = None;
    if let Some(within) = policy.keep_within {
        // The reference may be pinned: it is an anchor in time, not a rule's pick.
        let anchor = (0..order.len()).find(|i| clocks[*i] == Clock::Trusted);
        if let Some(a) = anchor {
            let ref_time = order[a].retired_at;
            reference = Some(Reference {
                seq: order[a].seq,
                retired_at: ref_time,
            });
            // A window too large to represent reaches back to the beginning of time.
            let cutoff = TimeDelta::from_std(within)
                .ok()
                .and_then(|d| ref_time.checked_sub_signed(d));
            let text = format!(
                "within {} of newest trusted root #{} ({})",
                format_duration(within),
                order[a].seq,
                format_time(ref_time)
            );
            for i in (0..order.len()).filter(judged) {
                if cutoff.is_none_or(|cut| order[i].retired_at >= cut) {
                    keeps[i].push(Reason::new(ReasonCode::KeepWithin, text.clone()));
                    counters.keep_within += 1;
                }
            }
        }
    }

    for (tier, limit) in [
        (Tier::Daily, policy.keep_daily),
        (Tier::Weekly, policy.keep_weekly),
        (Tier::Monthly, policy.keep_monthly),
    ] {
        let Some(limit) = limit.filter(|n| *n > 0) else {
            continue;
        };
        // Period key -> (label, members newest first): the last member is the period's first root.
        let mut periods: BTreeMap<(i32, u32), (String, Vec<usize>)> = BTreeMap::new();
        for i in (0..order.len()).filter(judged) {
            let (key, label) = tier.period(order[i].retired_at, policy.timezone);
            periods
                .entry(key)
                .or_insert_with(|| (label, Vec::new()))
                .1
                .push(i);
        }
        let of = if limit == usize::MAX {
            "all".to_string()
        } else {
            limit.to_string()
        };
        for (rank, (label, members)) in periods.values().rev().take(limit).enumerate() {
            let Some((&first, later)) = members.split_last() else {
                continue;
            };
            keeps[first].push(Reason::new(
                tier.code(),
                format!("{} {label} (#{} of {of})", tier.word(), rank + 1),
            ));
            match tier {
                Tier::Daily => counters.daily += 1,
                Tier::Weekly => counters.weekly += 1,
                Tier::Monthly => counters.monthly += 1,
            }
            for &i in later {
                superseded[i].push(Reason::new(
                    ReasonCode::Superseded,
                    format!(
                        "{} {label} is represented by #{}",
                        tier.word(),
                        order[first].seq
                    ),
                ));
            }
        }
    }

    let mut plans = Vec::with_capacity(order.len());
    for (i, ((c, mut reasons), notes)) in order.iter().zip(keeps).zip(superseded).enumerate() {
        let decision = if reasons.is_empty() {
            reasons.push(Reason::new(ReasonCode::NoRule, "matched no keep rule"));
            reasons.extend(notes);
            counters.deleted += 1;
            Decision::Delete
        } else {
            counters.kept += 1;
            Decision::Keep
        };
        match clocks[i] {
            Clock::Trusted => {}
            Clock::Untrusted => {
                reasons.push(Reason::new(
                    ReasonCode::TimeUntrusted,
                    "time untrusted: time rules skipped",
                ));
                counters.time_untrusted += 1;
            }
            Clock::OutOfStep => {
                reasons.push(Reason::new(
                    ReasonCode::OutOfStep,
                    "time out of step with the roots retired before and after it (a wrong clock): \
                     time rules skipped",
                ));
                counters.time_untrusted += 1;
            }
            Clock::Future => {
                let ahead = (c.retired_at - now).to_std().unwrap_or_default();
                reasons.push(Reason::new(
                    ReasonCode::FutureDated,
                    format!(
                        "dated {} in the future: time rules skipped",
                        format_duration(ahead)
                    ),
                ));
                counters.future_dated += 1;
            }
        }
        plans.push(RootPlan {
            seq: c.seq,
            name: c.name.clone(),
            retired_at: c.retired_at,
            clock: clocks[i],
            decision,
            reasons,
        });
    }

    let space_candidates = match policy.min_free {
        None => Vec::new(),
        Some(_) => plans
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, p)| *i != 0 && p.decision == Decision::Keep && !order[*i].pinned)
            .map(|(_, p)| SpaceCandidate {
                seq: p.seq,
                name: p.name.clone(),
            })
            .collect(),
    };

    RetentionPlan {
        now,
        reference,
        roots: plans,
        space_candidates,
        counters,
    }
}

/// Which of `times` (oldest boot first; `None`: not judged) are in step (see the module
/// documentation): members of the longest run whose times never go back by more than
/// [`STEP_SLACK`] from one member to the next. Among equally long runs, the one spanning the least
/// time (a wrong clock stretches its run: a boot dated ahead pushes the end later, one dated behind
/// pulls the start earlier); then the one starting earliest. Quadratic in the number of roots, which
/// stays in the hundreds.
fn in_step(times: &[Option<DateTime<Utc>>]) -> Vec<bool> {
    let slack = TimeDelta::from_std(STEP_SLACK).unwrap_or(TimeDelta::zero());
    // Whether `b` may come after `a` in a run.
    let follows = |a: DateTime<Utc>, b: DateTime<Utc>| {
        a.checked_sub_signed(slack).is_none_or(|floor| b >= floor)
    };
    let n = times.len();
    // best[i]: the longest run starting at root i, and the earliest time such a run can end at.
    let mut best: Vec<Option<(usize, DateTime<Utc>)>> = vec![None; n];
    for i in (0..n).rev() {
        let Some(ti) = times[i] else { continue };
        let mut b = (1, ti);
        for j in i + 1..n {
            if let (Some(tj), Some((len, end))) = (times[j], best[j])
                && follows(ti, tj)
                && (len + 1 > b.0 || (len + 1 == b.0 && end < b.1))
            {
                b = (len + 1, end);
            }
        }
        best[i] = Some(b);
    }
    // The start: longest, then shortest span, then earliest.
    let mut start: Option<(usize, usize, TimeDelta)> = None;
    for (i, b) in best.iter().enumerate() {
        let (Some((len, end)), Some(ti)) = (*b, times[i]) else {
            continue;
        };
        let span = end.signed_duration_since(ti);
        if start.is_none_or(|(_, l, s)| len > l || (len == l && span < s)) {
            start = Some((i, len, span));
        }
    }
    let mut out = vec![false; n];
    let Some((mut i, _, _)) = start else {
        return out;
    };
    // Walk that run, taking each time the earliest root that continues it as planned.
    loop {
        out[i] = true;
        let (Some(ti), Some((len, end))) = (times[i], best[i]) else {
            break;
        };
        if len == 1 {
            break;
        }
        let next = (i + 1..n).find(|&j| {
            times[j].is_some_and(|tj| follows(ti, tj)) && best[j] == Some((len - 1, end))
        });
        match next {
            Some(j) => i = j,
            None => break,
        }
    }
    out
}

/// `2025-03-12T18:00:00Z`.
fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
