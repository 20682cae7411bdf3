//! Golden payloads: one JSON file per event type and schema version under `tests/golden/`.
//!
//! A published payload shape may change only with a new schema version and an upcaster: a
//! test here fails when a sample encodes to another shape than its golden file, when a golden
//! file no longer decodes, or when an event type has no golden file. After a deliberate new
//! version, write its file with `UPDATE_GOLDEN=1 cargo test -p callback-contracts` and keep
//! the old version's file (the upcaster test reads it).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use callback_contracts::analytics::*;
use callback_contracts::audit::*;
use callback_contracts::call_logging::*;
use callback_contracts::complaint_routing::*;
use callback_contracts::integration_gateway::*;
use callback_contracts::scheduling::*;
use callback_contracts::{decode, decode_view, encode, EventContract, EventView};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 7, hour, 30, 0).unwrap()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

/// A sample event: its type, schema version, payload as JSON, and a check that a payload
/// text decodes back to the sample (returning it encoded again).
type Check = dyn Fn(&str, i32, &str) -> Value;

struct Sample {
    event_type: &'static str,
    category: &'static str,
    version: i32,
    value: Value,
    check: Box<Check>,
}

/// One sample of every event type.
fn samples() -> Vec<Sample> {
    let mut out = Vec::new();
    fn push<T: EventContract + PartialEq + std::fmt::Debug + 'static>(
        out: &mut Vec<Sample>,
        event: T,
    ) {
        let encoded = encode(&event).expect("encodes");
        let value: Value = serde_json::from_str(&encoded.payload).unwrap();
        let expected = event;
        let check = move |event_type: &str, version: i32, payload: &str| -> Value {
            let decoded: T = decode(event_type, version, payload)
                .unwrap_or_else(|e| panic!("golden {event_type} v{version} does not decode: {e}"));
            assert_eq!(
                decoded, expected,
                "golden {event_type} decodes to another value"
            );
            serde_json::to_value(&decoded).unwrap()
        };
        out.push(Sample {
            event_type: encoded.event_type,
            category: T::CATEGORY,
            version: encoded.schema_version,
            value,
            check: Box::new(check),
        });
    }

    // ---- scheduling ----
    let settings = TenantSettings {
        calendar: serde_json::from_value(json!({
            "time_zone": "Asia/Shanghai",
            "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}],
            "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri"],
            "holidays": ["2026-10-01"],
            "extra_working_days": ["2026-09-27"]
        }))
        .unwrap(),
        departments: vec!["cardiology".into()],
        pools: vec!["ward-pool".into()],
        agents: vec![Agent {
            agent_id: "nurse-1".into(),
            departments: vec!["cardiology".into()],
            pools: vec!["ward-pool".into()],
        }],
        frequency_caps: FrequencyCaps {
            per_day: Some(1),
            per_week: Some(3),
        },
        max_leases_per_agent: None,
        phone_region: None,
    };
    push(
        &mut out,
        TenantPublished {
            tenant_id: "hospital-a".into(),
            settings,
        },
    );
    push(
        &mut out,
        PolicyPublished {
            tenant_id: "hospital-a".into(),
            policy: document("policy.json"),
        },
    );
    let mut attributes = serde_json::Map::new();
    attributes.insert("ward".into(), json!("cardiology"));
    push(
        &mut out,
        BusinessEventIngested {
            fact: BusinessFact {
                tenant_id: "hospital-a".into(),
                source: "his".into(),
                source_event_id: "adt-1001".into(),
                event_type: "patient.discharged".into(),
                occurred_at: at(9),
                subject_id: "patient-7".into(),
                attributes,
            },
            subject: SubjectContact {
                subject_id: "patient-7".into(),
                name: "张三".into(),
                phones: vec!["13922223333".into()],
                owner_agent_id: Some("nurse-1".into()),
                department: Some("cardiology".into()),
                ..Default::default()
            },
            scheduled: vec![ScheduledSummary {
                callback_id: id(1),
                policy_id: "discharge".into(),
                policy_version: 1,
                step: "first call".into(),
                occurrence: 1,
                due_at: at(10),
                deadline: at(16),
                status: CallbackStatus::Scheduled,
            }],
            cancelled: vec![id(2)],
        },
    );
    push(
        &mut out,
        AccessRefused {
            service: "scheduling".into(),
            method: "/callback.v1.Scheduling/ClaimNext".into(),
            subject: "agent-7".into(),
            credential: "bearer_token".into(),
            tenant_id: Some("hospital-b".into()),
            reason: "permission denied: agent-7 needs one of agent, middleware for this tenant"
                .into(),
            at: at(11),
        },
    );
    push(
        &mut out,
        SubjectErased {
            tenant_id: "hospital-a".into(),
            subject_id: "patient-7".into(),
            mode: ErasureMode::Erase,
            reason: "request 2026-118".into(),
            by: "dpo-1".into(),
            at: at(11),
        },
    );
    push(
        &mut out,
        CallbackEvent::CallbackScheduled(Box::new(Scheduled {
            callback_id: id(1),
            tenant_id: "hospital-a".into(),
            policy_id: "discharge".into(),
            policy_version: 1,
            step_index: 0,
            step: "first call".into(),
            occurrence: 1,
            anchor_at: at(9),
            due_at: at(10),
            deadline: at(16),
            give_up_at: at(18),
            priority: 5,
            channel: Channel::Phone,
            questionnaire_id: Some("discharge-v1".into()),
            owner_agent_id: Some("nurse-1".into()),
            pool: "ward-pool".into(),
            pool_after: at(12),
            subject_id: "patient-7".into(),
            department: Some("cardiology".into()),
            retry: RetryRule::default(),
            fact_stream: "business_event-hospital-a:his:adt-1001".into(),
        })),
    );
    for event in [
        CallbackEvent::CallbackSkipped {
            reason: "window closed".into(),
            at: at(17),
        },
        CallbackEvent::CallbackClaimed {
            agent_id: "nurse-1".into(),
            lease_id: id(3),
            lease_until: at(11),
            at: at(10),
        },
        CallbackEvent::CallbackAttempted {
            attempt_id: "att-1".into(),
            agent_id: "nurse-1".into(),
            disposition: Disposition::NotConvenient { named_time: at(15) },
            at: at(10),
        },
        CallbackEvent::CallbackRescheduled {
            due_at: at(15),
            deadline: at(16),
            reason: "not convenient".into(),
            at: at(10),
        },
        CallbackEvent::CallbackCompleted { at: at(15) },
        CallbackEvent::CallbackLost {
            reason: "attempts exhausted".into(),
            attempts: 3,
            at: at(16),
        },
        CallbackEvent::CallbackCancelled {
            reason: "discharge cancelled".into(),
            at: at(11),
        },
    ] {
        push(&mut out, event);
    }

    // ---- call-logging ----
    push(
        &mut out,
        QuestionnairePublished {
            tenant_id: "hospital-a".into(),
            questionnaire: Questionnaire {
                questionnaire_id: "discharge-v1".into(),
                title: "出院回访".into(),
                items: vec![
                    Item {
                        id: "satisfied".into(),
                        text: "您对本次住院满意吗?".into(),
                        kind: ItemKind::Rating,
                        required: true,
                        ask_if: None,
                    },
                    Item {
                        id: "why".into(),
                        text: "哪里不满意?".into(),
                        kind: ItemKind::FreeText { max_chars: 200 },
                        required: false,
                        ask_if: Some(Condition {
                            item: "satisfied".into(),
                            equals: json!(1),
                        }),
                    },
                ],
            },
        },
    );
    push(
        &mut out,
        DispositionsPublished {
            tenant_id: "hospital-a".into(),
            mapping: BTreeMap::from([("line_dead".into(), "wrong_number".into())]),
        },
    );
    push(
        &mut out,
        CallAttemptLogged {
            tenant_id: "hospital-a".into(),
            callback_id: id(1),
            attempt_id: "att-1".into(),
            agent_id: "nurse-1".into(),
            lease_id: id(3),
            channel: "phone".into(),
            disposition: AttemptDisposition {
                standard: Disposition::Reached,
                tenant_kind: Some("spoke_to_family".into()),
            },
            started_at: at(10),
            ended_at: at(11),
            telephony_call_id: "pbx-77".into(),
            recording_ref: "rec/77.wav".into(),
            notes: "家属代接".into(),
            survey_declined: None,
            sealed_for: None,
        },
    );
    push(
        &mut out,
        SurveyAnswered {
            tenant_id: "hospital-a".into(),
            callback_id: id(1),
            attempt_id: "att-1".into(),
            questionnaire_id: "discharge-v1".into(),
            questionnaire_version: 1,
            answers: BTreeMap::from([("satisfied".into(), json!(5))]),
        },
    );
    push(
        &mut out,
        ComplaintRaised {
            tenant_id: "hospital-a".into(),
            callback_id: id(1),
            attempt_id: "att-1".into(),
            agent_id: "nurse-1".into(),
            subject_id: "patient-7".into(),
            department: "cardiology".into(),
            raised_at: at(11),
            complaint: RaisedComplaint {
                text: "夜间病房太吵".into(),
                category: "environment".into(),
                topic: "ward 5 noise".into(),
                severity_hint: "".into(),
                reply_by: Some(at(18)),
            },
        },
    );
    push(
        &mut out,
        DoNotCallRequested {
            tenant_id: "hospital-a".into(),
            callback_id: id(1),
            attempt_id: "att-1".into(),
        },
    );
    push(
        &mut out,
        HonestyFlagRaised {
            tenant_id: "hospital-a".into(),
            attempt_id: "att-1".into(),
            agent_id: "nurse-1".into(),
            attempt_started_at: Some(at(10)),
            flag: HonestyFlag::ShortReached {
                talk_seconds: 3,
                threshold_seconds: 10,
                billable_seconds: Some(3),
            },
        },
    );
    push(
        &mut out,
        CallRecordViewed {
            tenant_id: "hospital-a".into(),
            attempt_id: "att-1".into(),
            reader: "supervisor-1".into(),
            reason: "quality review".into(),
            at: at(12),
        },
    );
    push(
        &mut out,
        TelephonyRecordIngested {
            tenant_id: "hospital-a".into(),
            call_id: "pbx-77".into(),
            number_dialed: "13922223333".into(),
            number_key: None,
            started_at: at(10),
            answered_at: Some(at(10)),
            ended_at: at(11),
            billable_seconds: 3540,
            network_result: "ANSWER".into(),
        },
    );
    push(
        &mut out,
        SharedContactFlagged {
            tenant_id: "insurer-a".into(),
            subject_id: "holder-1".into(),
            other_subject_id: "holder-2".into(),
            phone_masked: "139****3333".into(),
        },
    );

    // ---- complaint-routing ----
    let customer = Customer {
        customer_id: "patient-7".into(),
        name: "张三".into(),
        phones: vec!["13922223333".into()],
        ..Default::default()
    };
    push(
        &mut out,
        RoutingRulesPublished {
            tenant_id: "hospital-a".into(),
            rules: document("routing_rules.json"),
        },
    );
    let targets = Targets {
        first_response_minutes: 1440,
        update_minutes: 1440,
        resolution_minutes: 7200,
        follow_up_every_minutes: None,
    };
    let intake = Intake {
        tenant_id: "hospital-a".into(),
        source: "hotline".into(),
        source_id: "ticket-9".into(),
        channel: "hotline".into(),
        customer: customer.clone(),
        text: "夜间病房太吵".into(),
        category: "environment".into(),
        topic: "ward 5 noise".into(),
        severity_hints: vec!["legal".into()],
        reply_by: Some(at(18)),
        callback_id: None,
    };
    push(
        &mut out,
        ComplaintParked {
            intake,
            reason: "the tenant has no routing rules yet".into(),
            at: at(9),
        },
    );
    push(
        &mut out,
        ComplaintEvent::ComplaintFiled(Box::new(Filed {
            complaint_id: id(4),
            tenant_id: "hospital-a".into(),
            source: "hotline".into(),
            source_id: "ticket-9".into(),
            channel: "hotline".into(),
            customer,
            text: "夜间病房太吵".into(),
            category: "environment".into(),
            topic: "ward 5 noise".into(),
            severity_hints: vec![],
            reply_by: Some(at(18)),
            callback_id: Some(id(1)),
            rules_version: 2,
            class: Class::C,
            origin: Origin::Environment,
            department: "logistics".into(),
            handler: "h-1".into(),
            matched_by: "category".into(),
            flags: vec!["repeat".into()],
            targets,
            at: at(9),
        })),
    );
    for event in [
        ComplaintEvent::ComplaintEscalated {
            level: Level::Manager,
            to: "m-1".into(),
            reason: "first response breached".into(),
            at: at(10),
        },
        ComplaintEvent::ComplaintReclassified {
            from: Class::C,
            to: Class::B,
            department: "logistics".into(),
            handler: "h-1".into(),
            targets: Targets {
                follow_up_every_minutes: Some(1440),
                ..targets
            },
            reason: "group of 5".into(),
            at: at(10),
        },
        ComplaintEvent::ComplaintAcknowledged {
            actor: "h-1".into(),
            at: at(10),
        },
        ComplaintEvent::ProgressAdded {
            actor: "h-1".into(),
            note: "checked the ward".into(),
            at: at(11),
        },
        ComplaintEvent::InformationRequested {
            actor: "h-1".into(),
            question: "which night?".into(),
            at: at(11),
        },
        ComplaintEvent::InformationReceived {
            actor: "h-1".into(),
            note: "Sunday".into(),
            at: at(12),
        },
        ComplaintEvent::ComplaintResolved {
            actor: "h-1".into(),
            resolution: "quiet hours enforced".into(),
            at: at(13),
        },
        ComplaintEvent::ComplaintRejected {
            actor: "h-1".into(),
            explanation: "not our ward".into(),
            at: at(13),
        },
        ComplaintEvent::ComplaintTransferred {
            actor: "h-1".into(),
            from: "logistics".into(),
            to: "nursing".into(),
            handler: "h-2".into(),
            reason: "nursing's ward".into(),
            at: at(12),
        },
        ComplaintEvent::ClockBreached {
            clock: ClockName::FirstResponse,
            breach: 1,
            due_at: at(10),
            elapsed_minutes: 1500,
            target_minutes: 1440,
            at: at(11),
        },
        ComplaintEvent::ReplyDeadlineMissed {
            reply_by: at(18),
            at: at(18),
        },
        ComplaintEvent::FollowUpReminded {
            number: 2,
            to: "h-1".into(),
            at: at(14),
        },
        ComplaintEvent::CallbackRequested {
            purpose: CallbackPurpose::Verification,
            callback_ids: vec![id(5)],
            at: at(13),
        },
        ComplaintEvent::CallbackUnavailable {
            purpose: CallbackPurpose::Explanation,
            reason: "no policy for complaint.rejected".into(),
            at: at(13),
        },
        ComplaintEvent::VerificationAnswered {
            callback_id: id(5),
            satisfied: false,
            at: at(15),
        },
        ComplaintEvent::ComplaintReopened {
            reason: "customer unsatisfied".into(),
            at: at(15),
        },
        ComplaintEvent::ComplaintClosed {
            outcome: "verified".into(),
            detail: "customer satisfied".into(),
            at: at(16),
        },
    ] {
        push(&mut out, event);
    }

    // ---- analytics ----
    push(
        &mut out,
        AnalyticsSettingsPublished {
            tenant_id: "hospital-a".into(),
            settings: AnalyticsSettings {
                min_sample: 30,
                spot_check_rate: 0.2,
                reviewers: vec!["sup-1".into()],
                population: Some(12000),
            },
        },
    );

    // ---- integration gateway ----
    push(
        &mut out,
        IntegrationSettingsPublished {
            tenant_id: "hospital-a".into(),
            settings: json!({"hl7": {"senders": [{"application": "HIS", "facility": "SZRMYY"}]},
                             "subscriptions": [{"name": "quality-office", "kind": "wecom",
                                                "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
                                                "topics": ["complaint.escalated"]}]}),
            actor: "admin-1".into(),
            at: at(11),
        },
    );
    push(
        &mut out,
        NotificationDelivered {
            tenant_id: "hospital-a".into(),
            delivery_id: id(90),
            subscription: "quality-office".into(),
            topic: "complaint.escalated".into(),
            event_id: id(91),
            attempts: 2,
            status: 200,
            at: at(12),
        },
    );
    push(
        &mut out,
        NotificationDeadLettered {
            tenant_id: "hospital-a".into(),
            delivery_id: id(92),
            subscription: "quality-office".into(),
            topic: "callback.lost".into(),
            event_id: id(93),
            attempts: 8,
            last_error: "HTTP 500".into(),
            at: at(13),
        },
    );
    push(
        &mut out,
        NotificationRequeued {
            tenant_id: "hospital-a".into(),
            delivery_id: id(92),
            actor: "admin-1".into(),
            at: at(14),
        },
    );
    out
}

/// A published document (policy, routing rules) as stored: the owning service's tests decode
/// the same files into their domain types.
fn document(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/documents")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn golden_path(event_type: &str, version: i32) -> PathBuf {
    golden_dir().join(format!("{event_type}.v{version}.json"))
}

#[test]
fn every_payload_matches_its_golden_file_and_decodes_back() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for Sample {
        event_type,
        version,
        value,
        check,
        ..
    } in samples()
    {
        let path = golden_path(event_type, version);
        if update {
            let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "no golden file {} for {event_type} v{version}: a new event type or version \
                 needs one (UPDATE_GOLDEN=1)",
                path.display()
            )
        });
        let golden_value: Value = serde_json::from_str(&golden).unwrap();
        assert_eq!(
            value, golden_value,
            "{event_type} v{version} changed shape without a new schema version"
        );
        // The golden text decodes to the sample and encodes to the same shape again.
        assert_eq!(check(event_type, version, &golden), golden_value);
    }
}

#[test]
fn every_event_type_has_a_sample() {
    let sampled: BTreeSet<&str> = samples().iter().map(|s| s.event_type).collect();
    let declared: BTreeSet<&str> = [
        TenantPublished::EVENT_TYPES,
        PolicyPublished::EVENT_TYPES,
        BusinessEventIngested::EVENT_TYPES,
        SubjectErased::EVENT_TYPES,
        AccessRefused::EVENT_TYPES,
        CallbackEvent::EVENT_TYPES,
        QuestionnairePublished::EVENT_TYPES,
        DispositionsPublished::EVENT_TYPES,
        CallAttemptLogged::EVENT_TYPES,
        SurveyAnswered::EVENT_TYPES,
        ComplaintRaised::EVENT_TYPES,
        DoNotCallRequested::EVENT_TYPES,
        HonestyFlagRaised::EVENT_TYPES,
        CallRecordViewed::EVENT_TYPES,
        TelephonyRecordIngested::EVENT_TYPES,
        SharedContactFlagged::EVENT_TYPES,
        RoutingRulesPublished::EVENT_TYPES,
        ComplaintParked::EVENT_TYPES,
        ComplaintEvent::EVENT_TYPES,
        AnalyticsSettingsPublished::EVENT_TYPES,
        IntegrationSettingsPublished::EVENT_TYPES,
        NotificationDelivered::EVENT_TYPES,
        NotificationDeadLettered::EVENT_TYPES,
        NotificationRequeued::EVENT_TYPES,
    ]
    .concat()
    .into_iter()
    .collect();
    assert_eq!(sampled, declared);
    // No golden file is left over from a type that no longer exists (older versions stay).
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let event_type = name.split('.').next().unwrap();
        assert!(
            declared.contains(event_type),
            "golden file {name} names no event type"
        );
    }
}

#[test]
fn a_stored_v1_callback_scheduled_is_upcast_with_its_deadline_as_give_up_time() {
    let v1 = std::fs::read_to_string(golden_path(CallbackEvent::SCHEDULED, 1)).unwrap();
    assert!(!v1.contains("give_up_at"), "the v1 file is the old shape");
    let event: CallbackEvent = decode(CallbackEvent::SCHEDULED, 1, &v1).unwrap();
    let CallbackEvent::CallbackScheduled(scheduled) = event else {
        panic!("decoded to another event");
    };
    assert_eq!(scheduled.give_up_at, scheduled.deadline);
    assert_eq!(scheduled.deadline, at(16));
    // The direct decoder and the generic upcast through a JSON tree agree.
    let value: Value = serde_json::from_str(&v1).unwrap();
    let upcast = CallbackEvent::upcast(CallbackEvent::SCHEDULED, 1, value).unwrap();
    let through_tree: CallbackEvent = serde_json::from_value(upcast).unwrap();
    assert_eq!(through_tree, CallbackEvent::CallbackScheduled(scheduled));
    // Without the upcaster the v1 payload is not a v2 payload.
    assert!(decode::<CallbackEvent>(CallbackEvent::SCHEDULED, 2, &v1).is_err());
}

#[test]
fn unknown_types_newer_versions_and_malformed_payloads_are_errors() {
    let golden = std::fs::read_to_string(golden_path(CallbackEvent::COMPLETED, 1)).unwrap();
    assert!(decode::<CallbackEvent>("CallbackFrobbed", 1, &golden).is_err());
    assert!(decode::<CallbackEvent>(CallbackEvent::COMPLETED, 2, &golden).is_err());
    assert!(decode::<CallbackEvent>(CallbackEvent::COMPLETED, 1, "{\"type\":1}").is_err());
    assert!(decode::<TenantPublished>(CallbackEvent::COMPLETED, 1, &golden).is_err());
    // Version 0 does not exist; it is treated as the oldest, not as a panic.
    assert!(decode::<CallbackEvent>(CallbackEvent::COMPLETED, 0, &golden).is_ok());
}

/// Every golden version of `V`'s event types decodes into `V`.
fn view_reads_every_version<V: EventView>() -> usize {
    let mut read = 0;
    for event_type in V::EVENT_TYPES {
        assert!(V::Of::EVENT_TYPES.contains(event_type));
        for version in 1..=V::Of::schema_version(event_type) {
            let Ok(text) = std::fs::read_to_string(golden_path(event_type, version)) else {
                continue;
            };
            decode_view::<V>(event_type, version, &text).unwrap_or_else(|e| {
                panic!(
                    "{} does not read {event_type} v{version}: {e}",
                    std::any::type_name::<V>()
                )
            });
            read += 1;
        }
    }
    read
}

#[test]
fn every_view_reads_every_stored_version_of_its_events() {
    assert_eq!(view_reads_every_version::<ScheduledView>(), 2);
    assert_eq!(view_reads_every_version::<AttemptedView>(), 1);
    assert_eq!(view_reads_every_version::<RescheduledView>(), 1);
    assert_eq!(view_reads_every_version::<EndedView>(), 4);
    let completed = std::fs::read_to_string(golden_path(CallbackEvent::COMPLETED, 1)).unwrap();
    assert!(decode_view::<ScheduledView>(CallbackEvent::COMPLETED, 1, &completed).is_err());
    assert!(decode_view::<EndedView>(CallbackEvent::COMPLETED, 9, &completed).is_err());
}

#[test]
fn the_table_below_lists_every_event() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/CONTRACTS.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let table = doc
        .split("## The events")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/CONTRACTS.md has a section `## The events`");
    let rows: BTreeMap<String, (String, String)> = table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(|c| c.trim()).collect();
            (
                cells[1].trim_matches('`').to_owned(),
                (cells[2].trim_matches('`').to_owned(), cells[3].to_owned()),
            )
        })
        .collect();
    let samples = samples();
    for sample in &samples {
        assert_eq!(
            rows.get(sample.event_type),
            Some(&(sample.category.to_owned(), sample.version.to_string())),
            "docs/CONTRACTS.md: the row of {} must say `{}` and version {}",
            sample.event_type,
            sample.category,
            sample.version
        );
    }
    assert_eq!(
        rows.len(),
        samples.len(),
        "docs/CONTRACTS.md lists an unknown event"
    );
}
