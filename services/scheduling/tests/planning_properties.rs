//! Properties of planning over arbitrary cadences, growing intervals and trigger times, on a
//! hospital calendar with the National Day holidays and their 调休 working days: every series
//! ends, each planned call falls in a calling window before its deadline, calls follow one
//! another, a cadence stops at its stop, and planning is deterministic.

#![allow(clippy::unwrap_used)]

use callback_calendar::{Calendar, CalendarSpec};
use callback_scheduling::domain::{BusinessFact, Finished, PlannedCallback, Policy};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

fn hospital() -> Calendar {
    let spec: CalendarSpec = serde_json::from_value(json!({
        "time_zone": "Asia/Shanghai",
        "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}],
        "holidays": ["2026-10-01","2026-10-02","2026-10-03","2026-10-04","2026-10-05","2026-10-06","2026-10-07"],
        "extra_working_days": ["2026-09-27", "2026-10-10"],
    }))
    .unwrap();
    Calendar::new(&spec).unwrap()
}

fn policy(timing: serde_json::Value) -> Policy {
    let policy: Policy = serde_json::from_value(json!({
        "policy_id": "p", "name": "p",
        "trigger": {"event_type": "job.finished"},
        "steps": [{"name": "call", "owner": {"kind": "pool", "pool": "desk"}, "timing": timing}]
    }))
    .unwrap();
    policy.validate().unwrap();
    policy
}

fn fact(at: DateTime<Utc>) -> BusinessFact {
    BusinessFact {
        tenant_id: "t".into(),
        source: "crm".into(),
        source_event_id: "1".into(),
        event_type: "job.finished".into(),
        occurred_at: at,
        subject_id: "s".into(),
        attributes: Default::default(),
    }
}

/// Every callback of the series, each reached at its due time.
fn series(policy: &Policy, fact: &BusinessFact, calendar: &Calendar) -> Vec<PlannedCallback> {
    let mut out = Vec::new();
    let mut planned = policy.first_callback(fact, calendar, fact.occurred_at);
    while let Some(p) = planned {
        let finished = Finished {
            step: p.step,
            occurrence: p.occurrence,
            anchor_at: p.anchor_at,
            ended_at: p.due_at,
        };
        out.push(p);
        assert!(out.len() <= 250, "a series must end");
        planned = policy.next_callback(fact, calendar, finished);
    }
    out
}

fn trigger_time() -> impl Strategy<Value = DateTime<Utc>> {
    // Any minute from August to December 2026, around the National Day holidays.
    (0i64..(150 * 24 * 60))
        .prop_map(|m| Utc.with_ymd_and_hms(2026, 8, 1, 0, 0, 0).unwrap() + Duration::minutes(m))
}

fn check_calls(calls: &[PlannedCallback], calendar: &Calendar) -> Result<(), TestCaseError> {
    for (i, call) in calls.iter().enumerate() {
        prop_assert_eq!(call.occurrence as usize, i + 1, "occurrences count up");
        if !call.window_missed {
            prop_assert!(call.due_at < call.deadline, "{:?}", call);
            prop_assert_eq!(
                calendar.next_allowed(call.due_at),
                Some(call.due_at),
                "a call falls in a calling window on a working day"
            );
        }
        if let Some(next) = calls.get(i + 1) {
            prop_assert!(next.due_at >= call.due_at, "calls follow one another");
            prop_assert_eq!(next.anchor_at, call.anchor_at, "one anchor for the series");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn a_cadence_plans_calls_in_windows_until_its_stop(
        at in trigger_time(),
        every_days in 1u32..=30,
        until_days in 1u32..=120,
        window_days in 1u32..=10,
    ) {
        let policy = policy(json!({"kind": "cadence", "anchor": "trigger", "window_days": window_days,
                                   "phases": [{"every_days": every_days, "until_days": until_days}]}));
        let calendar = hospital();
        let calls = series(&policy, &fact(at), &calendar);
        prop_assert_eq!(&calls, &series(&policy, &fact(at), &calendar), "deterministic");
        // The first occurrence is one period after the trigger: none when the stop comes first.
        prop_assert_eq!(calls.is_empty(), until_days < every_days);
        check_calls(&calls, &calendar)?;
        // No occurrence starts after the stop (until_days after the trigger): each call falls
        // in its window, which opens by the stop.
        let stop = at + Duration::days(i64::from(until_days));
        for call in calls.iter().filter(|c| !c.window_missed) {
            prop_assert!(call.due_at <= stop + Duration::days(i64::from(window_days) + 1),
                "{:?} after the stop {}", call, stop);
        }
    }

    #[test]
    fn a_growing_interval_ends_after_its_occurrences(
        at in trigger_time(),
        intervals in proptest::collection::vec(1u32..=30, 1..=5),
        repeat_last in any::<bool>(),
        max_occurrences in 1u32..=10,
    ) {
        let policy = policy(json!({"kind": "growing", "anchor": "trigger", "intervals_days": intervals,
                                   "repeat_last": repeat_last, "max_occurrences": max_occurrences}));
        let calendar = hospital();
        let calls = series(&policy, &fact(at), &calendar);
        prop_assert!(!calls.is_empty());
        check_calls(&calls, &calendar)?;
        let most = if repeat_last { max_occurrences as usize } else { intervals.len().min(max_occurrences as usize) };
        prop_assert!(calls.len() <= most, "{} calls, at most {}", calls.len(), most);
    }
}
