//! A complaint's life on simulated time: clocks, breaches, escalations, pauses, verification.

use super::*;
use crate::domain::rules::tests::property_rules;
use callback_contracts::EventContract;
use chrono::TimeZone;

fn calendar() -> Calendar {
    property_rules().validate().unwrap()
}

/// Shanghai local time in 2026.
fn local(month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, month, day, hour, minute, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn intake(category: &str, customer: &str) -> Intake {
    Intake {
        tenant_id: "estate".into(),
        source: "hotline".into(),
        source_id: format!("{customer}-{category}"),
        channel: "hotline".into(),
        customer: Customer {
            customer_id: customer.into(),
            ..Customer::default()
        },
        text: "the lift is broken again".into(),
        category: category.into(),
        ..Intake::default()
    }
}

fn fold(events: &[ComplaintEvent]) -> ComplaintState {
    let cal = calendar();
    events
        .iter()
        .fold(None, |s, e| ComplaintState::evolve(s, e, &cal))
        .unwrap()
}

fn filed(category: &str, at: DateTime<Utc>) -> (ComplaintState, Vec<ComplaintEvent>) {
    let events = file(
        Uuid::from_u128(1),
        &intake(category, "c1"),
        &property_rules(),
        1,
        &Context::default(),
        at,
    );
    (fold(&events), events)
}

fn act(state: ComplaintState, action: Action, at: DateTime<Utc>) -> ComplaintState {
    let rules = property_rules();
    let cal = calendar();
    let (state, _) = state.fire_timers(&rules, &cal, at);
    let events = state.decide(&action, "agent-7", &rules, at).unwrap();
    apply(state, &events, &cal)
}

fn apply(state: ComplaintState, events: &[ComplaintEvent], cal: &Calendar) -> ComplaintState {
    let mut state = Some(state);
    for event in events {
        state = ComplaintState::evolve(state, event, cal);
    }
    state.unwrap()
}

fn types(events: &[ComplaintEvent]) -> Vec<&'static str> {
    events.iter().map(ComplaintEvent::event_type).collect()
}

#[test]
fn class_c_first_response_breach_escalates_to_the_department_head() {
    // Monday 2026-09-28 09:00; C first response 8 working hours (08:30-12:00, 13:00-17:30).
    let (state, _) = filed("noise", local(9, 28, 9, 0));
    assert_eq!(state.class, Class::C);
    let cal = calendar();
    let (at, timer) = state.next_timer(&cal).unwrap();
    assert_eq!(timer, Timer::Breach(ClockName::FirstResponse));
    assert_eq!(at, local(9, 29, 9, 0));
    let (state, fired) = state.fire_timers(&property_rules(), &cal, local(9, 29, 9, 30));
    assert_eq!(
        types(&fired),
        [ComplaintEvent::CLOCK_BREACHED, ComplaintEvent::ESCALATED]
    );
    assert_eq!(state.level, Level::DepartmentHead);
    assert_eq!(state.escalated_to, "desk-head");
    // Nothing fires twice.
    let (_, again) = state.fire_timers(&property_rules(), &cal, local(9, 29, 9, 30));
    assert!(again.is_empty());
}

#[test]
fn every_class_breaches_its_own_first_response_target_and_escalates_one_level() {
    // Filed Monday 28 September 08:30 (office hours 08:30-12:00, 13:00-17:30: 8 per day).
    let rules = property_rules();
    let cal = calendar();
    let start = local(9, 28, 8, 30);
    for (category, hints, class, hours) in [
        ("leak", vec![], Class::A, 1),
        ("noise", vec!["media_exposure".to_owned()], Class::B, 2),
        ("noise", vec![], Class::C, 8),
        ("suggestion", vec![], Class::E, 16),
    ] {
        let mut complaint = intake(category, "c1");
        complaint.severity_hints = hints;
        let events = file(
            Uuid::from_u128(1),
            &complaint,
            &rules,
            1,
            &Context::default(),
            start,
        );
        let state = fold(&events);
        assert_eq!(state.class, class);
        let due = cal.add_working_time(start, Duration::hours(hours)).unwrap();
        let (at, timer) = state.next_timer(&cal).unwrap();
        assert_eq!(
            (at, timer),
            (due, Timer::Breach(ClockName::FirstResponse)),
            "{class:?}"
        );
        let before = state.level;
        let (state, fired) = state.fire_timers(&rules, &cal, due);
        assert_eq!(
            types(&fired[..2]),
            [ComplaintEvent::CLOCK_BREACHED, ComplaintEvent::ESCALATED],
            "{class:?}"
        );
        assert_eq!(state.level, before.next(), "{class:?}");
    }
    // D: an opinion in a group of five.
    let context = Context {
        previous_complaint: None,
        group_customers: 5,
    };
    let events = file(
        Uuid::from_u128(2),
        &intake("suggestion", "c2"),
        &rules,
        1,
        &context,
        start,
    );
    let state = fold(&events);
    assert_eq!(state.class, Class::D);
    let due = cal.add_working_time(start, Duration::hours(8)).unwrap();
    assert_eq!(state.next_timer(&cal).unwrap().0, due);
}

#[test]
fn breaches_climb_the_chain_to_the_general_manager_and_stop() {
    let (state, _) = filed("noise", local(9, 28, 9, 0));
    let (state, fired) = state.fire_timers(&property_rules(), &calendar(), local(10, 30, 12, 0));
    assert_eq!(state.level, Level::GeneralManager);
    assert_eq!(state.escalated_to, "gm");
    // First response breaches 3 times (then stops), resolution (40h) once by then too.
    assert_eq!(state.first_response.breaches, MAX_BREACHES_PER_CLOCK);
    let escalations = fired
        .iter()
        .filter(|e| matches!(e, ComplaintEvent::ComplaintEscalated { .. }))
        .count();
    assert_eq!(escalations, 3);
}

#[test]
fn class_a_is_reported_at_once_and_followed_up_daily_until_resolved() {
    let start = local(9, 28, 10, 0);
    let (state, events) = filed("leak", start);
    assert_eq!(
        types(&events),
        [ComplaintEvent::FILED, ComplaintEvent::ESCALATED]
    );
    assert_eq!(state.level, Level::Manager);
    assert_eq!(state.escalated_to, "ops-manager");
    let state = act(state, Action::Acknowledge, local(9, 28, 10, 30));
    let (state, fired) = state.fire_timers(&property_rules(), &calendar(), local(9, 30, 10, 0));
    let reminders: Vec<_> = fired
        .iter()
        .filter_map(|e| match e {
            ComplaintEvent::FollowUpReminded { number, at, .. } => Some((*number, *at)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reminders,
        [(1, local(9, 29, 10, 0)), (2, local(9, 30, 10, 0))]
    );
    let state = act(
        state,
        Action::Resolve {
            resolution: "pipe replaced".into(),
        },
        local(9, 30, 11, 0),
    );
    assert_eq!(state.next_timer(&calendar()), None);
}

#[test]
fn pause_while_waiting_on_the_customer_keeps_the_time_used() {
    // Resolution target for C: 40 working hours (8h per working day: 5 days).
    let (state, _) = filed("noise", local(9, 28, 8, 30));
    let state = act(state, Action::Acknowledge, local(9, 28, 9, 0));
    let state = act(
        state,
        Action::RequestInformation {
            question: "which floor?".into(),
        },
        local(9, 28, 12, 0),
    );
    assert_eq!(state.status, Status::WaitingOnCustomer);
    assert_eq!(state.next_timer(&calendar()), None);
    assert_eq!(state.resolution.used_seconds, 3 * 3600 + 1800);
    // The customer answers on Friday 9 October; 36.5 working hours remain from then.
    let state = act(
        state,
        Action::ReceiveInformation {
            note: "floor 12".into(),
        },
        local(10, 9, 8, 30),
    );
    assert_eq!(state.status, Status::InProgress);
    let resolution_due = state.resolution.next_breach_at(&calendar()).unwrap();
    // Fri 9 Oct 8h, Sat 10 Oct (an extra working day) 8h, Mon 12 and Tue 13 8h each, then
    // 4.5h of Wednesday 14 October.
    assert_eq!(
        calendar().working_time_between(local(10, 9, 8, 30), resolution_due),
        Duration::minutes(36 * 60 + 30)
    );
    assert_eq!(resolution_due, local(10, 14, 14, 0));
}

#[test]
fn holidays_stop_the_clock() {
    // Wednesday 30 September 16:30, C first response 8h; 1, 2 October are holidays, 3-4 a
    // weekend, 5 October a holiday: only 1 hour counts before Tuesday 6 October.
    let (state, _) = filed("noise", local(9, 30, 16, 30));
    let (at, _) = state.next_timer(&calendar()).unwrap();
    assert_eq!(at, local(10, 6, 16, 30));
}

#[test]
fn class_change_keeps_the_elapsed_time() {
    let (state, _) = filed("noise", local(9, 28, 8, 30));
    // 3 working hours later the topic becomes a group: B's first response is 2 hours.
    let events = state.join_group(&property_rules(), 5, local(9, 28, 11, 30));
    assert_eq!(
        types(&events),
        [ComplaintEvent::RECLASSIFIED, ComplaintEvent::ESCALATED]
    );
    let cal = calendar();
    let state = apply(state, &events, &cal);
    assert_eq!(state.class, Class::B);
    assert_eq!(state.department, "customer_relations");
    assert_eq!(state.level, Level::Manager);
    // Already 3h used of a 2h target: the target was used up at 10:30, found at 11:30.
    let (at, timer) = state.next_timer(&cal).unwrap();
    assert_eq!(timer, Timer::Breach(ClockName::FirstResponse));
    assert_eq!(at, local(9, 28, 10, 30));
    let (_, fired) = state
        .clone()
        .fire_timers(&property_rules(), &cal, local(9, 28, 11, 30));
    assert!(matches!(
        fired[0],
        ComplaintEvent::ClockBreached { due_at, at, .. }
            if due_at == local(9, 28, 10, 30) && at == local(9, 28, 11, 30)
    ));
    assert_eq!(
        state.resolution.elapsed(&cal, local(9, 28, 11, 30)),
        Duration::hours(3)
    );
}

#[test]
fn unsatisfied_verification_reopens_with_new_clocks_and_satisfied_closes() {
    let cal = calendar();
    let (state, _) = filed("noise", local(9, 28, 9, 0));
    let state = act(
        state,
        Action::Resolve {
            resolution: "fixed".into(),
        },
        local(9, 28, 10, 0),
    );
    assert!(state.needs_callback_request());
    let callback = Uuid::from_u128(77);
    let requested = ComplaintEvent::CallbackRequested {
        purpose: CallbackPurpose::Verification,
        callback_ids: vec![callback],
        at: local(9, 28, 10, 0),
    };
    let state = ComplaintState::evolve(Some(state), &requested, &cal).unwrap();
    assert!(!state.needs_callback_request());
    // Another callback's answer changes nothing.
    assert!(state
        .verification_answered(Uuid::from_u128(5), false, local(9, 29, 9, 0))
        .is_empty());
    let events = state.verification_answered(callback, false, local(9, 29, 9, 0));
    assert_eq!(
        types(&events),
        [
            ComplaintEvent::VERIFICATION_ANSWERED,
            ComplaintEvent::REOPENED
        ]
    );
    let state = apply(state, &events, &cal);
    assert_eq!(state.status, Status::InProgress);
    assert_eq!(state.reopenings, 1);
    assert_eq!(
        state.resolution.next_breach_at(&cal),
        Some(local(10, 9, 9, 0)),
        "a new 40 working hour clock from the reopening (holidays 1-5 October skipped)"
    );
    let state = act(
        state,
        Action::Resolve {
            resolution: "fixed again".into(),
        },
        local(9, 29, 11, 0),
    );
    let state = ComplaintState::evolve(Some(state), &requested, &cal).unwrap();
    let events = state.verification_answered(callback, true, local(9, 30, 9, 0));
    let state = apply(state, &events, &cal);
    assert_eq!(state.status, Status::Closed);
    assert_eq!(state.outcome.as_deref(), Some("satisfied"));
}

#[test]
fn lost_verification_closes_with_the_fact() {
    let cal = calendar();
    let (state, _) = filed("noise", local(9, 28, 9, 0));
    let state = act(
        state,
        Action::Resolve {
            resolution: "fixed".into(),
        },
        local(9, 28, 10, 0),
    );
    let callback = Uuid::from_u128(9);
    let state = ComplaintState::evolve(
        Some(state),
        &ComplaintEvent::CallbackRequested {
            purpose: CallbackPurpose::Verification,
            callback_ids: vec![callback],
            at: local(9, 28, 10, 0),
        },
        &cal,
    )
    .unwrap();
    let events = state.verification_ended(callback, "lost", "deadline passed", local(9, 30, 9, 0));
    let state = ComplaintState::evolve(Some(state), &events[0], &cal).unwrap();
    assert_eq!(state.status, Status::Closed);
    assert_eq!(state.outcome.as_deref(), Some("verification_lost"));
}

#[test]
fn actions_on_closed_or_resolved_complaints_are_refused() {
    let (state, _) = filed("noise", local(9, 28, 9, 0));
    let rules = property_rules();
    let rejected = act(
        state.clone(),
        Action::Reject {
            explanation: "not our estate".into(),
        },
        local(9, 28, 9, 30),
    );
    assert!(matches!(
        rejected.decide(&Action::Acknowledge, "a", &rules, local(9, 28, 10, 0)),
        Err(ActionError::NotNow(_))
    ));
    assert!(matches!(
        state.decide(
            &Action::Transfer { to: "moon".into(), reason: String::new() },
            "a",
            &rules,
            local(9, 28, 10, 0)
        ),
        Err(ActionError::Invalid { field, .. }) if field == "to_department"
    ));
    assert!(matches!(
        state.decide(&Action::Resolve { resolution: " ".into() }, "a", &rules, local(9, 28, 10, 0)),
        Err(ActionError::Invalid { field, .. }) if field == "text"
    ));
    assert!(matches!(
        state.decide(&Action::Acknowledge, "", &rules, local(9, 28, 10, 0)),
        Err(ActionError::Invalid { field, .. }) if field == "actor"
    ));
}

#[test]
fn reply_time_is_its_own_deadline() {
    let rules = property_rules();
    let mut complaint = intake("noise", "c1");
    complaint.reply_by = Some(local(9, 28, 12, 0));
    let events = file(
        Uuid::from_u128(1),
        &complaint,
        &rules,
        1,
        &Context::default(),
        local(9, 28, 9, 0),
    );
    let state = fold(&events);
    let (state, fired) = state.fire_timers(&rules, &calendar(), local(9, 28, 12, 5));
    assert_eq!(
        types(&fired),
        [
            ComplaintEvent::REPLY_DEADLINE_MISSED,
            ComplaintEvent::ESCALATED
        ]
    );
    assert!(state.is_breached());
}

#[test]
fn repeat_complainant_goes_to_the_manager_and_groups_file_as_b() {
    let rules = property_rules();
    let context = Context {
        previous_complaint: Some(Uuid::from_u128(3)),
        group_customers: 5,
    };
    let events = file(
        Uuid::from_u128(1),
        &intake("noise", "c1"),
        &rules,
        1,
        &context,
        local(9, 28, 9, 0),
    );
    assert_eq!(
        types(&events),
        [
            ComplaintEvent::FILED,
            ComplaintEvent::ESCALATED,
            ComplaintEvent::ESCALATED
        ]
    );
    let state = fold(&events);
    assert_eq!(state.class, Class::B);
    assert_eq!(state.department, "customer_relations");
    assert_eq!(state.level, Level::Manager);
    assert!(state.filed.flags.contains(&"group".to_owned()));
}
