//! Every row of the policy table in DOMAIN.md, written as tenant data (JSON) and run on
//! simulated time: each callback is assumed reached at its due time, and the test lists when
//! each callback of the policy falls due and its deadline, in the tenant's local time.

#![allow(clippy::unwrap_used)]

use callback_calendar::{Calendar, CalendarSpec};
use callback_scheduling::domain::{next_attempt, BusinessFact, Finished, PlannedCallback, Policy};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

fn calendar(windows: serde_json::Value, weekdays: serde_json::Value) -> Calendar {
    let spec: CalendarSpec = serde_json::from_value(json!({
        "time_zone": "Asia/Shanghai",
        "windows": windows,
        "working_weekdays": weekdays,
        // National Day 2026 with the adjusted working days around it (调休).
        "holidays": ["2026-10-01","2026-10-02","2026-10-03","2026-10-04","2026-10-05","2026-10-06","2026-10-07"],
        "extra_working_days": ["2026-09-27", "2026-10-10"],
    }))
    .unwrap();
    Calendar::new(&spec).unwrap()
}

fn hospital() -> Calendar {
    calendar(
        json!([{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]),
        json!(["Mon", "Tue", "Wed", "Thu", "Fri"]),
    )
}

fn sales() -> Calendar {
    calendar(
        json!([{"start": "09:00", "end": "11:00"}, {"start": "15:00", "end": "17:00"}]),
        json!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
    )
}

fn real_estate() -> Calendar {
    calendar(
        json!([{"start": "10:00", "end": "11:30"}, {"start": "15:30", "end": "17:00"}]),
        json!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
    )
}

fn policy(value: serde_json::Value) -> Policy {
    let policy: Policy = serde_json::from_value(value).unwrap();
    policy.validate().unwrap();
    policy
}

fn shanghai(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn fact(
    event_type: &str,
    at: DateTime<Utc>,
    id: &str,
    attributes: serde_json::Value,
) -> BusinessFact {
    BusinessFact {
        tenant_id: "t1".into(),
        source: "his".into(),
        source_event_id: id.into(),
        event_type: event_type.into(),
        occurred_at: at,
        subject_id: format!("subject-{id}"),
        attributes: attributes.as_object().cloned().unwrap_or_default(),
    }
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// (step name, occurrence, due, deadline) for every callback of the policy, each reached at
/// its due time. Sampled-out and missed callbacks are listed with a marker.
fn describe(policy: &Policy, p: &PlannedCallback) -> String {
    let marker = if p.window_missed {
        " missed"
    } else if !p.sampled {
        " not sampled"
    } else {
        ""
    };
    format!(
        "{} #{} due {} by {}{marker}",
        policy.steps[p.step].name,
        p.occurrence,
        local(p.due_at),
        local(p.deadline)
    )
}

/// What a fact that arrives at `arrived` plans at once: the callbacks whose windows had
/// closed (skipped) and the first whose window is still open.
fn arriving_late(
    policy: &Policy,
    fact: &BusinessFact,
    cal: &Calendar,
    arrived: DateTime<Utc>,
) -> Vec<String> {
    policy
        .first_callbacks(fact, cal, arrived)
        .iter()
        .map(|p| describe(policy, p))
        .collect()
}

fn run(policy: &Policy, fact: &BusinessFact, cal: &Calendar) -> Vec<String> {
    assert!(policy.matches(fact), "the fact must trigger the policy");
    let mut out = Vec::new();
    let mut planned = policy.first_callback(fact, cal, fact.occurred_at);
    while let Some(p) = planned {
        out.push(describe(policy, &p));
        assert!(out.len() < 60, "runaway policy: {out:#?}");
        let finished = Finished {
            step: p.step,
            occurrence: p.occurrence,
            anchor_at: p.anchor_at,
            ended_at: p.due_at,
        };
        planned = policy.next_callback(fact, cal, finished);
    }
    out
}

fn owner(pool: &str) -> serde_json::Value {
    json!({"kind": "subject_owner", "fallback_pool": pool, "pool_after_hours": 24})
}

fn pool(name: &str) -> serde_json::Value {
    json!({"kind": "pool", "pool": name})
}

fn within(earliest_days: i32, latest: serde_json::Value) -> serde_json::Value {
    json!({"kind": "window", "anchor": "trigger", "earliest": {"days": earliest_days}, "latest": latest})
}

fn f_late() -> BusinessFact {
    fact(
        "patient.discharged",
        shanghai(2026, 9, 8, 10, 0),
        "late",
        json!({"visit_type": "inpatient"}),
    )
}

#[test]
fn hospital_ward_discharge_first_call_within_7_days_second_within_2_months() {
    let p = policy(json!({
        "policy_id": "ward-discharge", "name": "出院回访",
        "trigger": {"event_type": "patient.discharged", "filters": [{"attribute": "visit_type", "equals": "inpatient"}]},
        "cancel_on": ["patient.discharge_cancelled", "patient.deceased"],
        "steps": [
            {"name": "first", "owner": owner("ward-nurses"), "questionnaire_id": "discharge-v3",
             "timing": within(1, json!({"days": 7}))},
            {"name": "second", "owner": owner("ward-nurses"), "timing": within(8, json!({"months": 2}))}
        ]
    }));
    // Discharged Tuesday Sep 8, 10:00: first call the next working morning, by the end of
    // Sep 15; the second from day 8 until two months after discharge.
    let f = fact(
        "patient.discharged",
        shanghai(2026, 9, 8, 10, 0),
        "d1",
        json!({"visit_type": "inpatient"}),
    );
    assert_eq!(
        run(&p, &f, &hospital()),
        [
            "first #1 due 2026-09-09 08:00 by 2026-09-16 00:00",
            "second #1 due 2026-09-16 08:00 by 2026-11-09 00:00",
        ]
    );
    // Discharged the evening before National Day: the 7-day window lies entirely in the
    // holiday week, so the first call cannot be made in time (recorded as missed, a lost
    // callback with its reason, never silently dropped); the second is due after the holiday.
    let f = fact(
        "patient.discharged",
        shanghai(2026, 9, 30, 18, 0),
        "d2",
        json!({"visit_type": "inpatient"}),
    );
    assert_eq!(
        run(&p, &f, &hospital()),
        [
            "first #1 due 2026-10-01 00:00 by 2026-10-08 00:00 missed",
            "second #1 due 2026-10-08 08:00 by 2026-12-01 00:00",
        ]
    );
    // Entered twelve days late: the first call's window has closed (skipped), and the series
    // goes on: the second step is planned, due when its window opened.
    assert_eq!(
        arriving_late(&p, &f_late(), &hospital(), shanghai(2026, 9, 20, 9, 0)),
        [
            "first #1 due 2026-09-09 08:00 by 2026-09-16 00:00 missed",
            "second #1 due 2026-09-16 08:00 by 2026-11-09 00:00",
        ]
    );
    // Outpatients do not trigger the ward policy.
    let outpatient = fact(
        "patient.discharged",
        shanghai(2026, 9, 8, 10, 0),
        "d3",
        json!({"visit_type": "outpatient"}),
    );
    assert!(!p.matches(&outpatient));
}

#[test]
fn hospital_outpatients_are_sampled_at_5_percent_deterministically() {
    let p = policy(json!({
        "policy_id": "outpatient-sample", "name": "门诊抽样回访",
        "trigger": {"event_type": "patient.outpatient_visit"},
        "steps": [{"name": "survey", "owner": pool("call-center"), "sample_rate": 0.05,
                   "timing": within(1, json!({"days": 7}))}]
    }));
    let cal = hospital();
    let picked = || -> Vec<u32> {
        (0..4000)
            .filter(|i| {
                let f = fact(
                    "patient.outpatient_visit",
                    shanghai(2026, 9, 8, 9, 0),
                    &format!("visit-{i}"),
                    json!({}),
                );
                let planned = p.first_callback(&f, &cal, f.occurred_at).unwrap();
                planned.sampled
            })
            .collect()
    };
    let first = picked();
    assert!(
        (140..260).contains(&first.len()),
        "{} of 4000 sampled",
        first.len()
    );
    assert_eq!(first, picked(), "a rebuild picks exactly the same visits");
}

fn dental() -> Calendar {
    calendar(
        json!([{"start": "09:00", "end": "12:00"}, {"start": "13:30", "end": "18:00"}]),
        json!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
    )
}

#[test]
fn dental_reminder_the_afternoon_before_and_same_day_call_on_no_show() {
    let reminder = policy(json!({
        "policy_id": "dental-reminder", "name": "预约提醒",
        "trigger": {"event_type": "appointment.booked"},
        "cancel_on": ["appointment.cancelled"],
        "steps": [{"name": "reminder", "owner": pool("front-desk"), "channel": "phone", "calendar": "every_day",
                   "timing": {"kind": "window", "anchor": {"attribute": "appointment_at"},
                              "earliest": {"days": -1, "at": "13:30"}, "latest": {"days": -1, "at": "17:30"}}}]
    }));
    let booked = fact(
        "appointment.booked",
        shanghai(2026, 9, 7, 10, 0),
        "b1",
        json!({"appointment_at": "2026-09-10T09:30:00+08:00"}),
    );
    assert_eq!(
        run(&reminder, &booked, &dental()),
        ["reminder #1 due 2026-09-09 13:30 by 2026-09-09 17:30"]
    );
    // Booked in the evening for the next morning: the afternoon before has passed.
    let late = fact(
        "appointment.booked",
        shanghai(2026, 9, 9, 19, 0),
        "b2",
        json!({"appointment_at": "2026-09-10T09:30:00+08:00"}),
    );
    assert_eq!(
        run(&reminder, &late, &dental()),
        ["reminder #1 due 2026-09-09 13:30 by 2026-09-09 17:30 missed"]
    );

    let no_show = policy(json!({
        "policy_id": "dental-no-show", "name": "爽约回访",
        "trigger": {"event_type": "appointment.missed"},
        "steps": [{"name": "same-day", "owner": pool("front-desk"), "priority": 1, "calendar": "every_day",
                   "timing": within(0, json!({"days": 0}))}]
    }));
    let missed = fact(
        "appointment.missed",
        shanghai(2026, 9, 10, 10, 0),
        "m1",
        json!({}),
    );
    assert_eq!(
        run(&no_show, &missed, &dental()),
        ["same-day #1 due 2026-09-10 10:00 by 2026-09-11 00:00"]
    );
}

#[test]
fn dental_consultation_without_a_date_follows_a_growing_interval_until_its_stop() {
    let p = policy(json!({
        "policy_id": "dental-consult", "name": "咨询未定诊回访",
        "trigger": {"event_type": "consultation.done", "filters": [{"attribute": "date_fixed", "equals": false}]},
        "cancel_on": ["appointment.booked"],
        "steps": [{"name": "follow-up", "owner": owner("consultants"), "calendar": "every_day",
                   "timing": {"kind": "growing", "anchor": "trigger", "intervals_days": [2, 4, 7],
                              "repeat_last": true, "max_occurrences": 5}}]
    }));
    let f = fact(
        "consultation.done",
        shanghai(2026, 9, 7, 16, 0),
        "c1",
        json!({"date_fixed": false}),
    );
    // Day 2, then +4, then +7, and so on (the last interval repeats) until five calls.
    assert_eq!(
        run(&p, &f, &dental()),
        [
            "follow-up #1 due 2026-09-09 09:00 by 2026-09-10 00:00",
            "follow-up #2 due 2026-09-13 09:00 by 2026-09-14 00:00",
            "follow-up #3 due 2026-09-20 09:00 by 2026-09-21 00:00",
            "follow-up #4 due 2026-09-27 09:00 by 2026-09-28 00:00",
            "follow-up #5 due 2026-10-04 09:00 by 2026-10-05 00:00",
        ]
    );
    // Entered three days late: the day-2 call is skipped, the +4 call is planned.
    assert_eq!(
        arriving_late(&p, &f, &dental(), shanghai(2026, 9, 10, 12, 0)),
        [
            "follow-up #1 due 2026-09-09 09:00 by 2026-09-10 00:00 missed",
            "follow-up #2 due 2026-09-13 09:00 by 2026-09-14 00:00",
        ]
    );
}

#[test]
fn car_dealer_sale_and_repair_order() {
    let sold = policy(json!({
        "policy_id": "vehicle-sold", "name": "新车交付回访",
        "trigger": {"event_type": "vehicle.sold"},
        "steps": [
            {"name": "advisor", "owner": owner("sales"), "timing": within(1, json!({"days": 7}))},
            {"name": "information-officer", "owner": pool("info-office"), "timing": within(8, json!({"months": 1}))}
        ]
    }));
    let f = fact(
        "vehicle.sold",
        shanghai(2026, 9, 12, 14, 0),
        "s1",
        json!({}),
    );
    assert_eq!(
        run(&sold, &f, &sales()),
        [
            "advisor #1 due 2026-09-13 09:00 by 2026-09-20 00:00",
            "information-officer #1 due 2026-09-20 09:00 by 2026-10-13 00:00",
        ]
    );
    let repair = policy(json!({
        "policy_id": "repair-order", "name": "维修回访",
        "trigger": {"event_type": "repair_order.closed"},
        "steps": [{"name": "within-week", "owner": owner("service-advisors"), "timing": within(1, json!({"days": 7}))}]
    }));
    let r = fact(
        "repair_order.closed",
        shanghai(2026, 9, 11, 17, 30),
        "r1",
        json!({}),
    );
    assert_eq!(
        run(&repair, &r, &sales()),
        ["within-week #1 due 2026-09-12 09:00 by 2026-09-19 00:00"]
    );
}

#[test]
fn appliance_purchase_and_installation_or_repair() {
    let purchase = policy(json!({
        "policy_id": "appliance-purchase", "name": "购机回访",
        "trigger": {"event_type": "appliance.purchased"},
        "steps": [{"name": "purchase", "owner": pool("service"), "timing": within(1, json!({"days": 3}))}]
    }));
    let service = policy(json!({
        "policy_id": "appliance-service", "name": "安装维修回访",
        "trigger": {"event_type": "appliance.service_done", "filters": [{"attribute": "job", "in": ["install", "repair"]}]},
        "steps": [{"name": "service", "owner": pool("service"), "timing": within(2, json!({"days": 5}))}]
    }));
    let bought = fact(
        "appliance.purchased",
        shanghai(2026, 9, 14, 11, 30),
        "p1",
        json!({}),
    );
    assert_eq!(
        run(&purchase, &bought, &sales()),
        ["purchase #1 due 2026-09-15 09:00 by 2026-09-18 00:00"]
    );
    let installed = fact(
        "appliance.service_done",
        shanghai(2026, 9, 14, 11, 30),
        "i1",
        json!({"job": "install"}),
    );
    assert_eq!(
        run(&service, &installed, &sales()),
        ["service #1 due 2026-09-16 09:00 by 2026-09-20 00:00"]
    );
    let cleaned = fact(
        "appliance.service_done",
        shanghai(2026, 9, 14, 11, 30),
        "i2",
        json!({"job": "cleaning"}),
    );
    assert!(!service.matches(&cleaned));
}

#[test]
fn property_repairs_by_kind_and_an_unsatisfied_slip_at_once() {
    let by_kind = |id: &str, filter: serde_json::Value, days: i32| {
        policy(json!({
            "policy_id": id, "name": "报修回访",
            "trigger": {"event_type": "repair.done", "filters": [filter]},
            "steps": [{"name": id, "owner": pool("service-desk"), "timing": within(0, json!({"days": days}))}]
        }))
    };
    let safety = by_kind(
        "safety",
        json!({"attribute": "repair_type", "equals": "safety"}),
        2,
    );
    let leak = by_kind(
        "leak",
        json!({"attribute": "repair_type", "equals": "water_leak"}),
        3,
    );
    let other = by_kind(
        "other",
        json!({"attribute": "repair_type", "not_in": ["safety", "water_leak"]}),
        7,
    );
    let unsatisfied = policy(json!({
        "policy_id": "unsatisfied", "name": "不满意即时回访",
        "trigger": {"event_type": "repair.done", "filters": [{"attribute": "satisfaction", "equals": "unsatisfied"}]},
        "steps": [{"name": "at-once", "owner": pool("service-desk"), "priority": 0, "timing": within(0, json!({"days": 0}))}]
    }));
    let cal = hospital();
    let done = |kind: &str, satisfaction: &str| {
        fact(
            "repair.done",
            shanghai(2026, 9, 15, 14, 0),
            kind,
            json!({"repair_type": kind, "satisfaction": satisfaction}),
        )
    };
    assert_eq!(
        run(&safety, &done("safety", "ok"), &cal),
        ["safety #1 due 2026-09-15 14:00 by 2026-09-18 00:00"]
    );
    assert_eq!(
        run(&leak, &done("water_leak", "ok"), &cal),
        ["leak #1 due 2026-09-15 14:00 by 2026-09-19 00:00"]
    );
    assert_eq!(
        run(&other, &done("door", "ok"), &cal),
        ["other #1 due 2026-09-15 14:00 by 2026-09-23 00:00"]
    );
    let upset = done("water_leak", "unsatisfied");
    assert_eq!(
        run(&unsatisfied, &upset, &cal),
        ["at-once #1 due 2026-09-15 14:00 by 2026-09-16 00:00"]
    );
    assert!(!safety.matches(&upset) && !other.matches(&upset) && leak.matches(&upset));
    assert_eq!(unsatisfied.steps[0].priority, 0);
}

#[test]
fn renovation_warranty_quarterly_then_half_yearly_then_yearly_until_the_warranty_ends() {
    let p = policy(json!({
        "policy_id": "renovation-warranty", "name": "保修期回访",
        "trigger": {"event_type": "job.finished"},
        "steps": [{"name": "warranty", "owner": pool("after-sales"),
                   "timing": {"kind": "cadence", "anchor": "trigger", "window_days": 14, "phases": [
                       {"every_months": 3, "until_months": 12},
                       {"every_months": 6, "until_months": 24},
                       {"every_months": 12, "until_attribute": "warranty_end"}]}}]
    }));
    let f = fact(
        "job.finished",
        shanghai(2026, 9, 1, 10, 0),
        "j1",
        json!({"warranty_end": "2031-09-01"}),
    );
    // Weekend dates move to the Monday after (2029-09-01 is a Saturday, 2030-09-01 a Sunday).
    assert_eq!(
        run(&p, &f, &hospital()),
        [
            "warranty #1 due 2026-12-01 08:00 by 2026-12-16 00:00",
            "warranty #2 due 2027-03-01 08:00 by 2027-03-16 00:00",
            "warranty #3 due 2027-06-01 08:00 by 2027-06-16 00:00",
            "warranty #4 due 2027-09-01 08:00 by 2027-09-16 00:00",
            "warranty #5 due 2028-03-01 08:00 by 2028-03-16 00:00",
            "warranty #6 due 2028-09-01 08:00 by 2028-09-16 00:00",
            "warranty #7 due 2029-09-03 08:00 by 2029-09-16 00:00",
            "warranty #8 due 2030-09-02 08:00 by 2030-09-16 00:00",
            "warranty #9 due 2031-09-01 08:00 by 2031-09-16 00:00",
        ]
    );
    // The job reported seven months late: the two quarterly calls whose windows closed are
    // skipped, and the series continues with the next one whose window is open.
    assert_eq!(
        arriving_late(&p, &f, &hospital(), shanghai(2027, 4, 10, 9, 0)),
        [
            "warranty #1 due 2026-12-01 08:00 by 2026-12-16 00:00 missed",
            "warranty #2 due 2027-03-01 08:00 by 2027-03-16 00:00 missed",
            "warranty #3 due 2027-06-01 08:00 by 2027-06-16 00:00",
        ]
    );
}

#[test]
fn real_estate_visitors_by_class() {
    let class_ab = policy(json!({
        "policy_id": "visitor-ab", "name": "A/B类来访客户",
        "trigger": {"event_type": "visitor.registered", "filters": [{"attribute": "class", "in": ["A", "B"]}]},
        "cancel_on": ["visitor.purchased"],
        "steps": [
            {"name": "same-day", "owner": owner("sales"), "timing": within(0, json!({"days": 0}))},
            {"name": "within-3-days", "owner": owner("sales"),
             "timing": {"kind": "window", "anchor": "previous_step_end", "earliest": {"days": 1}, "latest": {"days": 3}}},
            {"name": "every-3-days", "owner": owner("sales"),
             "timing": {"kind": "growing", "anchor": "previous_step_end", "intervals_days": [3], "repeat_last": true, "max_occurrences": 3}}
        ]
    }));
    let cal = real_estate();
    let a = fact(
        "visitor.registered",
        shanghai(2026, 9, 12, 14, 0),
        "v1",
        json!({"class": "A"}),
    );
    assert_eq!(
        run(&class_ab, &a, &cal),
        [
            "same-day #1 due 2026-09-12 15:30 by 2026-09-13 00:00",
            "within-3-days #1 due 2026-09-13 10:00 by 2026-09-16 00:00",
            // Every 3 days from the end of the previous step (Sep 13), not from each call.
            "every-3-days #1 due 2026-09-16 10:00 by 2026-09-17 00:00",
            "every-3-days #2 due 2026-09-19 10:00 by 2026-09-20 00:00",
            "every-3-days #3 due 2026-09-22 10:00 by 2026-09-23 00:00",
        ]
    );
    let class_c = policy(json!({
        "policy_id": "visitor-c", "name": "C类来访客户",
        "trigger": {"event_type": "visitor.registered", "filters": [{"attribute": "class", "equals": "C"}]},
        "steps": [{"name": "weekly", "owner": owner("sales"), "calendar": "every_day",
                   "timing": {"kind": "growing", "anchor": "trigger", "intervals_days": [7], "repeat_last": true, "max_occurrences": 3}}]
    }));
    let c = fact(
        "visitor.registered",
        shanghai(2026, 9, 12, 14, 0),
        "v2",
        json!({"class": "C"}),
    );
    assert_eq!(
        run(&class_c, &c, &cal),
        [
            "weekly #1 due 2026-09-19 10:00 by 2026-09-20 00:00",
            "weekly #2 due 2026-09-26 10:00 by 2026-09-27 00:00",
            "weekly #3 due 2026-10-03 10:00 by 2026-10-04 00:00",
        ]
    );
    let class_d = policy(json!({
        "policy_id": "visitor-d", "name": "D类来访客户",
        "trigger": {"event_type": "visitor.registered", "filters": [{"attribute": "class", "equals": "D"}]},
        "steps": [{"name": "holidays", "owner": pool("sales"), "channel": "sms", "calendar": "every_day",
                   "timing": {"kind": "holidays", "anchor": "trigger", "max_occurrences": 2}}]
    }));
    let d = fact(
        "visitor.registered",
        shanghai(2026, 9, 12, 14, 0),
        "v3",
        json!({"class": "D"}),
    );
    assert_eq!(
        run(&class_d, &d, &cal),
        [
            "holidays #1 due 2026-10-01 10:00 by 2026-10-02 00:00",
            "holidays #2 due 2026-10-02 10:00 by 2026-10-03 00:00",
        ]
    );
}

#[test]
fn insurer_calls_during_the_cooling_off_period() {
    let p = policy(json!({
        "policy_id": "new-policy", "name": "新契约回访",
        "trigger": {"event_type": "insurance_policy.issued"},
        "cancel_on": ["insurance_policy.cancelled"],
        "steps": [{"name": "cooling-off", "owner": pool("callback-center"), "questionnaire_id": "new-policy-v2",
                   "retry": {"max_attempts": 5, "default_spacing_minutes": 240, "spacing_minutes": {"busy": 30}},
                   "timing": within(1, json!({"days": 15}))}]
    }));
    let f = fact(
        "insurance_policy.issued",
        shanghai(2026, 9, 18, 16, 0),
        "ip1",
        json!({}),
    );
    // Issued on a Friday: the weekend passes; the 15-day cooling-off period ends Oct 3.
    assert_eq!(
        run(&p, &f, &hospital()),
        ["cooling-off #1 due 2026-09-21 08:00 by 2026-10-04 00:00"]
    );
    let retry = &p.steps[0].retry;
    let t = shanghai(2026, 9, 21, 9, 0);
    assert_eq!(
        next_attempt(retry, "busy", 1, t),
        Some(t + chrono::Duration::minutes(30))
    );
    assert_eq!(
        next_attempt(retry, "no_answer", 1, t),
        Some(t + chrono::Duration::minutes(240))
    );
    assert_eq!(
        next_attempt(retry, "no_answer", 5, t),
        None,
        "attempts used up"
    );
}

#[test]
fn logistics_weekly_or_fortnightly_calls_and_a_monthly_written_survey() {
    let cadence = |id: &str, class: &str, every_days: u32| {
        policy(json!({
            "policy_id": id, "name": "客户回访",
            "trigger": {"event_type": "contract.signed", "filters": [{"attribute": "client_class", "equals": class}]},
            "steps": [{"name": id, "owner": owner("account-managers"),
                       "timing": {"kind": "cadence", "anchor": "trigger", "window_days": 2,
                                  "phases": [{"every_days": every_days, "until_days": 28}]}}]
        }))
    };
    let cal = hospital();
    let key = fact(
        "contract.signed",
        shanghai(2026, 9, 7, 9, 0),
        "k1",
        json!({"client_class": "key"}),
    );
    assert_eq!(
        run(&cadence("key-weekly", "key", 7), &key, &cal),
        [
            "key-weekly #1 due 2026-09-14 08:00 by 2026-09-17 00:00",
            "key-weekly #2 due 2026-09-21 08:00 by 2026-09-24 00:00",
            "key-weekly #3 due 2026-09-28 08:00 by 2026-10-01 00:00",
            // Oct 5-7 are all National Day holidays: no allowed time in the window.
            "key-weekly #4 due 2026-10-05 00:00 by 2026-10-08 00:00 missed",
        ]
    );
    let other = fact(
        "contract.signed",
        shanghai(2026, 9, 7, 9, 0),
        "o1",
        json!({"client_class": "other"}),
    );
    assert_eq!(
        run(&cadence("fortnightly", "other", 14), &other, &cal),
        [
            "fortnightly #1 due 2026-09-21 08:00 by 2026-09-24 00:00",
            "fortnightly #2 due 2026-10-05 00:00 by 2026-10-08 00:00 missed",
        ]
    );
    let survey = policy(json!({
        "policy_id": "monthly-survey", "name": "月度书面调查",
        "trigger": {"event_type": "contract.signed"},
        "steps": [{"name": "letter", "owner": pool("quality"), "channel": "letter",
                   "timing": {"kind": "cadence", "anchor": "trigger", "window_days": 5,
                              "phases": [{"every_months": 1, "until_months": 3}]}}]
    }));
    assert_eq!(
        survey.steps[0].channel,
        callback_scheduling::domain::Channel::Letter
    );
    assert_eq!(
        run(&survey, &key, &cal),
        [
            "letter #1 due 2026-10-08 08:00 by 2026-10-13 00:00",
            "letter #2 due 2026-11-09 08:00 by 2026-11-13 00:00",
            "letter #3 due 2026-12-07 08:00 by 2026-12-13 00:00",
        ]
    );
}

#[test]
fn policies_that_cannot_be_satisfied_are_rejected_naming_the_field() {
    let base = json!({
        "policy_id": "p", "name": "n", "trigger": {"event_type": "e"},
        "steps": [{"name": "s", "owner": pool("x"), "timing": within(0, json!({"days": 7}))}]
    });
    let error = |patch: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut value = base.clone();
        patch(&mut value);
        let policy: Policy = serde_json::from_value(value).unwrap();
        policy.validate().unwrap_err().to_string()
    };
    assert!(error(&|v| v["steps"] = json!([])).starts_with("steps:"));
    assert!(error(&|v| v["policy_id"] = json!("has space")).starts_with("policy_id:"));
    assert!(
        error(&|v| v["steps"][0]["timing"] = within(3, json!({"days": 1})))
            .starts_with("steps[0].timing.latest:")
    );
    assert!(error(&|v| v["steps"][0]["timing"] =
        json!({"kind": "cadence", "anchor": "trigger", "phases": [{"every_months": 3}]}))
    .contains("no stop"));
    assert!(error(&|v| v["steps"][0]["timing"] = json!({"kind": "growing", "anchor": "trigger", "intervals_days": [2], "max_occurrences": 0}))
        .starts_with("steps[0].timing.max_occurrences:"));
    assert!(
        error(&|v| v["steps"][0]["timing"]["anchor"] = json!("previous_step_end"))
            .starts_with("steps[0].timing.anchor:")
    );
    assert!(
        error(&|v| v["steps"][0]["sample_rate"] = json!(0)).starts_with("steps[0].sample_rate:")
    );
    assert!(error(&|v| v["steps"][0]["owner"] = pool(" ")).starts_with("steps[0].owner.pool:"));
    // Unknown fields are refused at parse time rather than silently ignored.
    let mut typo = base.clone();
    typo["steps"][0]["timming"] = json!({});
    assert!(serde_json::from_value::<Policy>(typo).is_err());
}

/// `PolicyPublished` carries the policy document as JSON (`callback-contracts`); the golden
/// document there must stay a policy this domain reads, unchanged by a round trip.
#[test]
fn the_contracts_golden_policy_document_is_a_policy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/contracts/tests/documents/policy.json"
    );
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let policy: Policy = serde_json::from_value(document.clone()).unwrap();
    policy.validate().unwrap();
    assert_eq!(serde_json::to_value(&policy).unwrap(), document);
}

#[test]
fn hour_bounds_are_exact_and_day_bounds_round_to_the_end_of_the_day() {
    let p = policy(json!({
        "policy_id": "quick", "name": "24小时回访", "trigger": {"event_type": "repair_order.closed"},
        "steps": [
            {"name": "within-24h", "owner": pool("call-center"), "calendar": "every_day",
             "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"hours": 24}}},
            {"name": "day-2-plus-3h", "owner": pool("call-center"), "calendar": "every_day",
             "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 1, "hours": 3}}},
            {"name": "within-2-days", "owner": pool("call-center"), "calendar": "every_day",
             "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 2}}}
        ]
    }));
    let f = fact(
        "repair_order.closed",
        shanghai(2026, 9, 8, 10, 0),
        "r1",
        json!({}),
    );
    assert_eq!(
        run(&p, &f, &sales()),
        [
            // Exactly 24 hours, not to the end of the next day.
            "within-24h #1 due 2026-09-08 10:00 by 2026-09-09 10:00",
            // The next day at the anchor's time plus three hours.
            "day-2-plus-3h #1 due 2026-09-09 09:00 by 2026-09-09 13:00",
            "within-2-days #1 due 2026-09-08 10:00 by 2026-09-11 00:00",
        ]
    );
}
