//! Complaints end to end on simulated time, with scheduling, call-logging and complaint routing
//! as separate gRPC servers on one PostgreSQL: a complaint raised during a callback reaches
//! complaint routing through call-logging's feed; its resolution asks scheduling for a
//! verification callback due within 24 working hours; an unsatisfied answer reopens it, a
//! satisfied one closes it; a lost verification callback closes another with that fact; a
//! rejection without an explanation policy is recorded as such.

#![allow(clippy::unwrap_used)]

use callback_contracts::complaint_routing::ComplaintParked;
use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::complaint_routing_client::ComplaintRoutingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimedCallback, ComplaintActionRequest, ComplaintCustomer, ComplaintReport, ComplaintView,
    Disposition, FileComplaintRequest, GetCallbackRequest, GetComplaintRequest,
    IngestBusinessEventRequest, ListComplaintsRequest, LogCallAttemptRequest, PublishPolicyRequest,
    PublishQuestionnaireRequest, PublishRoutingRulesRequest, PublishTenantRequest, Subject,
};
use callback_rules::ManualClock;
use callback_tests::{eventually, System};
use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;
use serde_json::json;
use tonic::transport::Channel;

const TENANT: &str = "ward";

fn shanghai(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono::FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn ts(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(callback_kit::wire::timestamp(t))
}

struct Clients {
    scheduling: SchedulingClient<Channel>,
    calls: CallLoggingClient<Channel>,
    complaints: ComplaintRoutingClient<Channel>,
}

/// Scheduling, call-logging and complaint routing as separate gRPC servers on `clock`.
async fn start(clock: &ManualClock) -> (System, Clients) {
    let system = System::start_on_clock(
        &[
            ServiceKind::Scheduling,
            ServiceKind::CallLogging,
            ServiceKind::ComplaintRouting,
        ],
        clock.clone(),
    )
    .await;
    let c = Clients {
        scheduling: SchedulingClient::new(system.channel(ServiceKind::Scheduling)),
        calls: CallLoggingClient::new(system.channel(ServiceKind::CallLogging)),
        complaints: ComplaintRoutingClient::new(system.channel(ServiceKind::ComplaintRouting)),
    };
    (system, c)
}

/// A patient discharged on Monday 28 September at 08:30.
async fn discharged(c: &mut Clients, event_id: &str, subject_id: &str, name: &str, phone: &str) {
    c.scheduling
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: TENANT.into(),
            source: "his".into(),
            source_event_id: event_id.into(),
            event_type: "patient.discharged".into(),
            occurred_at: ts(shanghai(9, 28, 8, 30)),
            subject: Some(Subject {
                subject_id: subject_id.into(),
                name: name.into(),
                phones: vec![phone.into()],
                ..Default::default()
            }),
            attributes_json: String::new(),
        })
        .await
        .unwrap();
}

async fn publish_everything(c: &mut Clients) {
    publish_callbacks(c).await;
    publish_rules(c).await;
}

async fn publish_callbacks(c: &mut Clients) {
    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]},
        "pools": ["nurses"], "agents": [{"agent_id": "nurse", "pools": ["nurses"]}]
    });
    c.scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: TENANT.into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    for policy in [
        json!({
            "policy_id": "discharge", "name": "出院回访", "trigger": {"event_type": "patient.discharged"},
            "steps": [{"name": "first", "questionnaire_id": "discharge-v1", "owner": {"kind": "pool", "pool": "nurses"},
                       "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
        }),
        json!({
            "policy_id": "complaint-verification", "name": "监督回访", "trigger": {"event_type": "complaint.resolved"},
            "steps": [{"name": "verify", "questionnaire_id": "verify-v1", "priority": 1, "owner": {"kind": "pool", "pool": "nurses"},
                       "retry": {"max_attempts": 2, "default_spacing_minutes": 60},
                       "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"working_hours": 24}}}]
        }),
    ] {
        c.scheduling
            .publish_policy(PublishPolicyRequest {
                tenant_id: TENANT.into(),
                policy_json: policy.to_string(),
            })
            .await
            .unwrap();
    }
    for questionnaire in [
        json!({"questionnaire_id": "discharge-v1", "title": "出院回访",
               "items": [{"id": "nursing", "text": "护理满意度", "kind": {"type": "rating"}, "required": true}]}),
        json!({"questionnaire_id": "verify-v1", "title": "监督回访",
               "items": [{"id": "satisfied", "text": "对处理结果满意吗", "kind": {"type": "yes_no"}, "required": true}]}),
    ] {
        c.calls
            .publish_questionnaire(PublishQuestionnaireRequest {
                tenant_id: TENANT.into(),
                questionnaire_json: questionnaire.to_string(),
            })
            .await
            .unwrap();
    }
}

async fn publish_rules(c: &mut Clients) {
    let rules = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]},
        "default_route": {"class": "C", "origin": "our_service", "department": "patient_services"},
        "categories": [{"category": "nursing", "class": "C", "origin": "our_service", "department": "nursing"}],
        "targets": {
            "A": {"first_response_hours": 1, "update_hours": 8, "resolution_hours": 16},
            "B": {"first_response_hours": 2, "update_hours": 8, "resolution_hours": 24},
            "C": {"first_response_hours": 8, "update_hours": 16, "resolution_hours": 40},
            "D": {"first_response_hours": 8, "update_hours": 24, "resolution_hours": 40},
            "E": {"first_response_hours": 16, "update_hours": 40, "resolution_hours": 80}
        },
        "departments": {
            "nursing": {"handler": "ward-5", "head": "head-nurse", "manager": "nursing-director"},
            "patient_services": {"handler": "ps-desk", "head": "ps-head", "manager": "medical-director"}
        },
        "general_manager": "president"
    });
    c.complaints
        .publish_routing_rules(PublishRoutingRulesRequest {
            tenant_id: TENANT.into(),
            rules_json: rules.to_string(),
        })
        .await
        .unwrap();
}

async fn claim(c: &mut Clients) -> ClaimedCallback {
    callback_tests::claim(&mut c.scheduling, TENANT, "nurse")
        .await
        .expect("a callback is due")
}

fn attempt(
    id: &str,
    claimed: &ClaimedCallback,
    at: DateTime<Utc>,
    questionnaire: &str,
    answers: serde_json::Value,
) -> LogCallAttemptRequest {
    LogCallAttemptRequest {
        attempt_id: id.into(),
        tenant_id: TENANT.into(),
        callback_id: claimed.callback_id.clone(),
        lease_id: claimed.lease_id.clone(),
        agent_id: "nurse".into(),
        channel: "phone".into(),
        started_at: ts(at),
        ended_at: ts(at + chrono::Duration::minutes(3)),
        disposition: Some(Disposition {
            kind: "reached".into(),
            named_time: None,
        }),
        questionnaire_id: questionnaire.into(),
        questionnaire_version: 1,
        answers_json: answers.to_string(),
        ..Default::default()
    }
}

fn action(complaint_id: &str, actor: &str, text: &str) -> ComplaintActionRequest {
    ComplaintActionRequest {
        tenant_id: TENANT.into(),
        complaint_id: complaint_id.into(),
        actor: actor.into(),
        text: text.into(),
        to_department: String::new(),
    }
}

async fn complaint(c: &Clients, id: &str) -> ComplaintView {
    c.complaints
        .clone()
        .get_complaint(GetComplaintRequest {
            tenant_id: TENANT.into(),
            complaint_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .complaint
        .unwrap()
}

/// Waits until scheduling has applied the reached attempt on `callback_id` (the outcome travels
/// through call-logging's feed), so the next claim cannot pick it up again.
async fn completed(c: &Clients, callback_id: &str) {
    eventually(Duration::from_secs(30), "the callback to complete", || {
        let (mut client, id) = (c.scheduling.clone(), callback_id.to_owned());
        async move {
            let (status, _) = callback_tests::callback_state(&mut client, TENANT, &id).await;
            (status == "completed").then_some(())
        }
    })
    .await;
}

/// Waits until the complaint satisfies `check`.
async fn until(
    c: &Clients,
    id: &str,
    what: &str,
    check: impl Fn(&ComplaintView) -> bool,
) -> ComplaintView {
    eventually(Duration::from_secs(60), what, || {
        let id = id.to_owned();
        let check = &check;
        async move {
            let view = complaint(c, &id).await;
            check(&view).then_some(view)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_raised_in_a_callback_is_routed_resolved_verified_reopened_and_closed() {
    // Monday 28 September 2026, 09:00 in Shanghai.
    let clock = ManualClock::new(shanghai(9, 28, 9, 0));
    let (system, mut c) = start(&clock).await;
    publish_everything(&mut c).await;

    discharged(&mut c, "adt-1", "p1", "王芳", "13600136000").await;

    // The discharge callback: reached, and the patient complains about the night shift.
    let discharge = claim(&mut c).await;
    let mut report = attempt(
        "a1",
        &discharge,
        shanghai(9, 28, 9, 0),
        "discharge-v1",
        json!({"nursing": 2}),
    );
    report.complaint = Some(ComplaintReport {
        text: "夜班护士态度很差".into(),
        category: "nursing".into(),
        severity_hint: String::new(),
        reply_by: ts(shanghai(9, 30, 17, 0)),
        topic: "ward 5 night shift".into(),
    });
    c.calls.log_call_attempt(report).await.unwrap();
    completed(&c, &discharge.callback_id).await;

    let listed = eventually(Duration::from_secs(30), "the complaint is routed", || {
        let mut client = c.complaints.clone();
        async move {
            let list = client
                .list_complaints(ListComplaintsRequest {
                    tenant_id: TENANT.into(),
                    department: "nursing".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .complaints;
            list.into_iter().next()
        }
    })
    .await;
    assert_eq!(listed.channel, "callback");
    assert_eq!(listed.customer_id, "p1");
    assert_eq!(listed.callback_id, discharge.callback_id);
    assert_eq!(listed.class, "C");
    assert_eq!(listed.handler, "ward-5");
    assert_eq!(listed.status, "open");
    let id = listed.complaint_id.clone();

    // The ward acknowledges and resolves it; a verification callback is asked of scheduling.
    clock.set(shanghai(9, 28, 10, 0));
    c.complaints
        .acknowledge(action(&id, "ward-5-lead", ""))
        .await
        .unwrap();
    clock.set(shanghai(9, 28, 16, 0));
    let resolved = c
        .complaints
        .resolve(action(
            &id,
            "ward-5-lead",
            "talked to the night shift; apology made",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.complaint.unwrap().status, "resolved");
    let view = until(&c, &id, "a verification callback", |v| {
        !v.verification_callback_ids.is_empty()
    })
    .await;
    let verification = view.verification_callback_ids[0].clone();
    let scheduled = c
        .scheduling
        .get_callback(GetCallbackRequest {
            tenant_id: TENANT.into(),
            callback_id: verification.clone(),
            as_of: None,
            without_history: false,
        })
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap();
    assert_eq!(scheduled.policy_id, "complaint-verification");
    assert_eq!(scheduled.subject_id, "p1");
    // 24 working hours from Monday 16:00 (8 per day): 1.5 on Monday, 8 each on Tuesday and
    // Wednesday, 6.5 on Thursday: Thursday 16:00.
    assert_eq!(
        scheduled.deadline.unwrap().seconds,
        shanghai(10, 1, 16, 0).timestamp()
    );
    // A complaint cannot close before its verification: department actions are refused.
    let refused = c
        .complaints
        .add_progress(action(&id, "ward-5-lead", "more"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // The verification call: the customer is not satisfied. The contact details come from
    // the discharge fact scheduling already knew.
    clock.set(shanghai(9, 29, 9, 0));
    let claimed = claim(&mut c).await;
    assert_eq!(claimed.callback_id, verification);
    // In its normal form (E.164), as scheduling records every number.
    assert_eq!(claimed.subject.as_ref().unwrap().phones, ["+8613600136000"]);
    c.calls
        .log_call_attempt(attempt(
            "v1",
            &claimed,
            shanghai(9, 29, 9, 0),
            "verify-v1",
            json!({"satisfied": false}),
        ))
        .await
        .unwrap();
    let reopened = until(&c, &id, "the complaint reopens", |v| v.reopenings == 1).await;
    completed(&c, &verification).await;
    assert_eq!(reopened.status, "in_progress");
    let resolution = reopened
        .clocks
        .iter()
        .find(|clock| clock.name == "resolution")
        .unwrap();
    assert!(resolution.running && resolution.elapsed_minutes < 60);

    // Resolved again; this time satisfied: closed.
    clock.set(shanghai(9, 29, 14, 0));
    c.complaints
        .resolve(action(&id, "ward-5-lead", "night shift changed"))
        .await
        .unwrap();
    let view = until(&c, &id, "a second verification callback", |v| {
        v.verification_callback_ids.len() == 1 && v.verification_callback_ids[0] != verification
    })
    .await;
    clock.set(shanghai(9, 29, 15, 0));
    let claimed = claim(&mut c).await;
    assert_eq!(claimed.callback_id, view.verification_callback_ids[0]);
    c.calls
        .log_call_attempt(attempt(
            "v2",
            &claimed,
            shanghai(9, 29, 15, 0),
            "verify-v1",
            json!({"satisfied": true}),
        ))
        .await
        .unwrap();
    let closed = until(&c, &id, "the complaint closes", |v| v.status == "closed").await;
    assert_eq!(closed.outcome, "satisfied");
    // Closed is closed.
    let refused = c
        .complaints
        .acknowledge(action(&id, "ward-5-lead", ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // A hotline complaint whose verification callback is never answered: when scheduling
    // loses it at its deadline, the complaint closes with that fact recorded.
    let filed = c
        .complaints
        .file_complaint(FileComplaintRequest {
            tenant_id: TENANT.into(),
            source: "hotline".into(),
            source_id: "call-778".into(),
            channel: "hotline".into(),
            customer: Some(ComplaintCustomer {
                customer_id: "p2".into(),
                name: "李雷".into(),
                phones: vec!["13800138000".into()],
            }),
            text: "挂号排队太久".into(),
            category: "queues".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .complaint
        .unwrap();
    assert_eq!(filed.department, "patient_services");
    assert_eq!(filed.flags, ["unknown_category"]);
    assert_eq!(filed.phones_masked, ["+86 138****8000"]);
    c.complaints
        .resolve(action(
            &filed.complaint_id,
            "ps-desk",
            "extra window opened",
        ))
        .await
        .unwrap();
    until(&c, &filed.complaint_id, "its verification callback", |v| {
        !v.verification_callback_ids.is_empty()
    })
    .await;
    clock.set(shanghai(10, 9, 9, 0));
    let lost = until(&c, &filed.complaint_id, "closed as lost", |v| {
        v.status == "closed"
    })
    .await;
    assert_eq!(lost.outcome, "verification_lost");

    // Rejected as invalid: no explanation policy here, which is recorded, not hidden.
    let invalid = c
        .complaints
        .file_complaint(FileComplaintRequest {
            tenant_id: TENANT.into(),
            source: "front-desk".into(),
            source_id: "slip-9".into(),
            channel: "front_desk".into(),
            customer: Some(ComplaintCustomer {
                customer_id: "p3".into(),
                ..Default::default()
            }),
            text: "parking fees".into(),
            category: "nursing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .complaint
        .unwrap();
    c.complaints
        .reject(action(
            &invalid.complaint_id,
            "ward-5",
            "the car park is not the hospital's",
        ))
        .await
        .unwrap();
    let rejected = until(
        &c,
        &invalid.complaint_id,
        "the explanation request answered",
        |v| !v.callback_unavailable.is_empty(),
    )
    .await;
    assert_eq!(rejected.status, "rejected");
    assert!(rejected.callback_unavailable.contains("complaint.rejected"));

    // The history masks the customer's contact details.
    let history = c
        .complaints
        .get_complaint(GetComplaintRequest {
            tenant_id: TENANT.into(),
            complaint_id: filed.complaint_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .history;
    assert!(history[0].payload_json.contains("138****8000"));
    assert!(!history[0].payload_json.contains("13800138000"));
    assert!(!history[0].payload_json.contains("李雷"));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_raised_before_the_tenant_has_routing_rules_is_parked_then_filed() {
    let clock = ManualClock::new(shanghai(9, 28, 9, 0));
    let (system, mut c) = start(&clock).await;
    publish_callbacks(&mut c).await;
    discharged(&mut c, "adt-9", "p9", "赵六", "13700137000").await;
    let claimed = claim(&mut c).await;
    let mut report = attempt(
        "a9",
        &claimed,
        shanghai(9, 28, 9, 0),
        "discharge-v1",
        json!({"nursing": 1}),
    );
    report.complaint = Some(ComplaintReport {
        text: "没人来换药".into(),
        category: "nursing".into(),
        ..Default::default()
    });
    c.calls.log_call_attempt(report).await.unwrap();

    // No rules yet: the complaint is kept in complaint routing's log, not dropped.
    let pool = system.db.pool.clone();
    eventually(
        Duration::from_secs(30),
        "the complaint to be parked",
        || {
            let pool = pool.clone();
            async move {
                let parked: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
                        .bind(ComplaintParked::EVENT_TYPE)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                (parked == 1).then_some(())
            }
        },
    )
    .await;
    let filing = c
        .complaints
        .file_complaint(FileComplaintRequest {
            tenant_id: TENANT.into(),
            source: "hotline".into(),
            source_id: "call-1".into(),
            channel: "hotline".into(),
            customer: Some(ComplaintCustomer {
                customer_id: "p9".into(),
                ..Default::default()
            }),
            text: "还是没人来".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        filing.code(),
        tonic::Code::FailedPrecondition,
        "the API caller is told at once"
    );

    // Rules published: the parked complaint is filed, with its callback.
    publish_rules(&mut c).await;
    let list = c
        .complaints
        .list_complaints(ListComplaintsRequest {
            tenant_id: TENANT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .complaints;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].channel, "callback");
    assert_eq!(list[0].callback_id, claimed.callback_id);
    assert_eq!(list[0].department, "nursing");
    system.stop().await;
}
