//! Personal data end to end over gRPC, with all four services: names, numbers, notes, free-text
//! answers and complaint texts are never in clear text in the event log or the read models
//! (checked with SQL for known values); the reader who needs them gets them; erasing a subject
//! makes every read, call record, complaint, feed replay and rebuild show it as erased while
//! the figures stay as they were; restricting stops processing but keeps storage.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::analytics_client::AnalyticsClient;
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::complaint_routing_client::ComplaintRoutingClient;
use callback_proto::v1::event_feed_client::EventFeedClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    subscribe_response, ComplaintCustomer, ComplaintReport, Disposition, EraseSubjectRequest,
    ErasureMode, FileComplaintRequest, GetCallRecordRequest, GetComplaintRequest,
    IngestBusinessEventRequest, IngestTelephonyRecordRequest, LogCallAttemptRequest,
    PublishPolicyRequest, PublishQuestionnaireRequest, PublishRoutingRulesRequest,
    PublishTenantRequest, ReportRequest, Subject, SubscribeRequest,
};
use callback_tests::{eventually, token, Bearer, System};
use chrono::Utc;
use serde_json::json;
use tonic::Code;

const TENANT: &str = "ward";
/// Values that must never appear in clear text at rest.
const NAME: &str = "王小明";
const PHONE: &str = "13912345678";
const NOTES: &str = "伤口还有点疼，家属代接";
const FREE_TEXT: &str = "希望夜班护士多巡房";
const COMPLAINT: &str = "出院结算排队两个小时";
const RAISED: &str = "病房空调坏了三天";
const SECRETS: &[&str] = &[NAME, PHONE, "12345678", NOTES, FREE_TEXT, COMPLAINT, RAISED];

fn ts(at: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(callback_kit::wire::timestamp(at))
}

async fn publish(system: &System) {
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let all_day = json!({"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                         "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]});
    let settings = json!({"calendar": all_day, "pools": ["nurses"],
                          "agents": [{"agent_id": "nurse", "pools": ["nurses"]}]});
    scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: TENANT.into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = json!({"policy_id": "discharge", "name": "出院回访",
        "trigger": {"event_type": "patient.discharged"},
        "steps": [{"name": "first", "questionnaire_id": "discharge-v1", "owner": {"kind": "pool", "pool": "nurses"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]});
    scheduling
        .publish_policy(PublishPolicyRequest {
            tenant_id: TENANT.into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
    let questionnaire = json!({"questionnaire_id": "discharge-v1", "title": "出院回访", "items": [
        {"id": "nursing", "text": "护理满意度", "kind": {"type": "rating"}, "required": true},
        {"id": "wishes", "text": "还有什么建议", "kind": {"type": "free_text", "max_chars": 200}}]});
    CallLoggingClient::new(system.channel(ServiceKind::CallLogging))
        .publish_questionnaire(PublishQuestionnaireRequest {
            tenant_id: TENANT.into(),
            questionnaire_json: questionnaire.to_string(),
        })
        .await
        .unwrap();
    let rules = json!({
        "calendar": all_day,
        "default_route": {"class": "C", "origin": "our_service", "department": "patient_services"},
        "targets": {
            "A": {"first_response_hours": 1, "update_hours": 8, "resolution_hours": 16},
            "B": {"first_response_hours": 2, "update_hours": 8, "resolution_hours": 24},
            "C": {"first_response_hours": 8, "update_hours": 16, "resolution_hours": 40},
            "D": {"first_response_hours": 8, "update_hours": 24, "resolution_hours": 40},
            "E": {"first_response_hours": 16, "update_hours": 40, "resolution_hours": 80}
        },
        "departments": {"patient_services": {"handler": "ps-desk", "head": "ps-head", "manager": "director"}},
        "general_manager": "president"
    });
    ComplaintRoutingClient::new(system.channel(ServiceKind::ComplaintRouting))
        .publish_routing_rules(PublishRoutingRulesRequest {
            tenant_id: TENANT.into(),
            rules_json: rules.to_string(),
        })
        .await
        .unwrap();
}

fn discharge(
    event_id: &str,
    subject_id: &str,
    name: &str,
    phone: &str,
) -> IngestBusinessEventRequest {
    IngestBusinessEventRequest {
        tenant_id: TENANT.into(),
        source: "his".into(),
        source_event_id: event_id.into(),
        event_type: "patient.discharged".into(),
        occurred_at: ts(Utc::now()),
        subject: Some(Subject {
            subject_id: subject_id.into(),
            name: name.into(),
            phones: vec![phone.into()],
            ..Default::default()
        }),
        attributes_json: String::new(),
    }
}

/// Every row of the event log and of the tables named, as text, holding any secret.
async fn clear_text_at_rest(pool: &sqlx::PgPool) -> Vec<String> {
    let mut found = Vec::new();
    for table in [
        "events",
        "sched_subjects",
        "cl_contacts",
        "cl_attempts",
        "cr_complaints",
        "an_answers",
        "an_complaints",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT t::text FROM {table} t WHERE t::text LIKE ANY($1)"
        ))
        .bind(SECRETS.iter().map(|s| format!("%{s}%")).collect::<Vec<_>>())
        .fetch_all(pool)
        .await
        .unwrap();
        found.extend(rows.into_iter().map(|row| format!("{table}: {row}")));
    }
    found
}

/// Every event scheduling's and call-logging's feeds serve, replayed from the start.
async fn replay_feeds(system: &System) -> Vec<String> {
    let mut payloads = Vec::new();
    for kind in [
        ServiceKind::Scheduling,
        ServiceKind::CallLogging,
        ServiceKind::ComplaintRouting,
    ] {
        let mut feed = EventFeedClient::new(system.channel(kind));
        let mut stream = feed
            .subscribe(SubscribeRequest::default())
            .await
            .unwrap()
            .into_inner();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            match message.item {
                Some(subscribe_response::Item::Event(event)) => payloads.push(event.payload_json),
                Some(subscribe_response::Item::CaughtUp(_)) => break,
                _ => {}
            }
        }
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_at_rest_and_erasure_and_restriction_hold_everywhere() {
    let system = System::start(&ServiceKind::ALL).await;
    publish(&system).await;
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let mut calls = CallLoggingClient::new(system.channel(ServiceKind::CallLogging));
    let mut complaints = ComplaintRoutingClient::new(system.channel(ServiceKind::ComplaintRouting));

    // A discharge, claimed (the agent gets the name and number), reached with notes, a
    // free-text answer and a complaint raised in the call; the call's record from the PBX; a
    // complaint filed at the front desk; another patient, to restrict later.
    scheduling
        .ingest_business_event(discharge("adt-1", "patient-1", NAME, PHONE))
        .await
        .unwrap();
    scheduling
        .ingest_business_event(discharge("adt-2", "patient-2", "赵六", "13787654321"))
        .await
        .unwrap();
    let claimed = loop {
        let claimed = callback_tests::claim(&mut scheduling, TENANT, "nurse")
            .await
            .unwrap();
        let subject = claimed.subject.clone().unwrap();
        if subject.subject_id == "patient-1" {
            assert_eq!(subject.name, NAME);
            assert_eq!(subject.phones, ["+86".to_owned() + PHONE]);
            break claimed;
        }
    };
    let started = Utc::now() - chrono::Duration::minutes(5);
    calls
        .log_call_attempt(LogCallAttemptRequest {
            attempt_id: "att-1".into(),
            tenant_id: TENANT.into(),
            callback_id: claimed.callback_id.clone(),
            lease_id: claimed.lease_id.clone(),
            agent_id: "nurse".into(),
            channel: "phone".into(),
            started_at: ts(started),
            ended_at: ts(started + chrono::Duration::minutes(3)),
            disposition: Some(Disposition {
                kind: "reached".into(),
                named_time: None,
            }),
            telephony_call_id: "pbx-1".into(),
            notes: NOTES.into(),
            questionnaire_id: "discharge-v1".into(),
            questionnaire_version: 1,
            answers_json: json!({"nursing": 5, "wishes": FREE_TEXT}).to_string(),
            complaint: Some(ComplaintReport {
                text: RAISED.into(),
                category: "environment".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    calls
        .ingest_telephony_record(IngestTelephonyRecordRequest {
            tenant_id: TENANT.into(),
            call_id: "pbx-1".into(),
            number_dialed: PHONE.into(),
            started_at: ts(started),
            answered_at: ts(started + chrono::Duration::seconds(10)),
            ended_at: ts(started + chrono::Duration::minutes(3)),
            billable_seconds: 170,
            network_result: "ANSWER".into(),
        })
        .await
        .unwrap();
    let filed = complaints
        .file_complaint(FileComplaintRequest {
            tenant_id: TENANT.into(),
            source: "front-desk".into(),
            source_id: "desk-1".into(),
            channel: "front_desk".into(),
            customer: Some(ComplaintCustomer {
                customer_id: "patient-1".into(),
                name: NAME.into(),
                phones: vec![PHONE.into()],
            }),
            text: COMPLAINT.into(),
            category: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .complaint
        .unwrap();
    assert_eq!(filed.phones_masked, ["+86 139****5678"]);
    // Every service has processed what it is sent (the raised complaint reached complaint
    // routing through call-logging's feed, the reached call analytics).
    let pool = system.db.pool.clone();
    eventually(
        Duration::from_secs(30),
        "the raised complaint and the figures",
        || {
            let pool = pool.clone();
            async move {
                let complaints: i64 = sqlx::query_scalar("SELECT count(*) FROM cr_complaints")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let answers: i64 = sqlx::query_scalar("SELECT count(*) FROM an_answers")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                (complaints == 2 && answers > 0).then_some(())
            }
        },
    )
    .await;

    // Nothing in clear text at rest, in the log or the read models.
    let leaks = clear_text_at_rest(&pool).await;
    assert!(leaks.is_empty(), "{leaks:#?}");

    // The reader with a need gets it: the call record's notes, answer and number (full view).
    let record = |full_view: bool| GetCallRecordRequest {
        tenant_id: TENANT.into(),
        attempt_id: "att-1".into(),
        full_view,
        reason: if full_view {
            "complaint review 12".into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let before = calls
        .get_call_record(record(true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.notes, NOTES);
    assert!(before.answers_json.contains(FREE_TEXT));
    assert_eq!(before.number_dialed, PHONE);
    let complaint_view = complaints
        .get_complaint(GetComplaintRequest {
            tenant_id: TENANT.into(),
            complaint_id: filed.complaint_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(complaint_view.history[0].payload_json.contains(COMPLAINT));

    // The figures before erasure.
    let now = Utc::now();
    let report = || ReportRequest {
        tenant_id: TENANT.into(),
        report: "satisfaction".into(),
        from: ts(now - chrono::Duration::days(40)),
        to: ts(now + chrono::Duration::days(1)),
        ..Default::default()
    };
    let mut analytics = AnalyticsClient::new(system.channel(ServiceKind::Analytics));
    let figures_before = analytics.report(report()).await.unwrap().into_inner();

    // Erasure, by an administrator: recorded with who asked, the key gone.
    let admin = token("dpo-1", &["ward:admin"]);
    let mut as_admin = SchedulingClient::with_interceptor(
        system.anonymous_channel(ServiceKind::Scheduling),
        Bearer::new(&admin),
    );
    let erased = as_admin
        .erase_subject(EraseSubjectRequest {
            tenant_id: TENANT.into(),
            subject_id: "patient-1".into(),
            mode: ErasureMode::Erase as i32,
            reason: "request 2026-118".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(erased.had_personal_data);
    let by: String =
        sqlx::query_scalar("SELECT payload->>'by' FROM events WHERE event_type = 'SubjectErased'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(by, "dpo-1");

    // Reads show the subject as erased: the call record (also its PBX number, once
    // call-logging has the erasure from scheduling's feed) and the complaint.
    let after = eventually(Duration::from_secs(30), "the call record erased", || {
        let mut calls = calls.clone();
        let request = record(true);
        async move {
            let view = calls.get_call_record(request).await.unwrap().into_inner();
            (view.number_dialed == "[erased]").then_some(view)
        }
    })
    .await;
    assert_eq!(after.notes, "[erased]");
    assert!(after.answers_json.contains("[erased]") && !after.answers_json.contains(FREE_TEXT));
    assert!(
        after.answers_json.contains("\"nursing\":5"),
        "figures' answers stay"
    );
    let complaint_after = complaints
        .get_complaint(GetComplaintRequest {
            tenant_id: TENANT.into(),
            complaint_id: filed.complaint_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(complaint_after.complaint.unwrap().phones_masked.is_empty());
    let history = &complaint_after.history[0].payload_json;
    assert!(
        history.contains("[erased]") && !history.contains(COMPLAINT),
        "{history}"
    );

    // A replay of every feed from the start carries nothing in clear text, and nothing it
    // carries of the subject opens any more.
    let payloads = replay_feeds(&system).await;
    assert!(payloads.len() > 10);
    for payload in &payloads {
        for secret in SECRETS {
            assert!(
                !payload.contains(secret),
                "a feed carries {secret}: {payload}"
            );
        }
    }
    let vault = callback_vault::Vault::open(pool.clone(), system.config.master_keys.clone())
        .await
        .unwrap();
    let sealed_contact: String = sqlx::query_scalar(
        "SELECT payload->'subject'->>'sealed' FROM events WHERE event_type = 'BusinessEventIngested' \
         AND payload->'fact'->>'subject_id' = 'patient-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        vault
            .open_sealed(TENANT, "patient-1", &sealed_contact)
            .await
            .unwrap(),
        callback_vault::Opened::Erased
    );
    // The read models hold nothing of the subject's contact, also after a rebuild from the log.
    let contact_rows = || async {
        let rows: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sched_subjects WHERE subject_id = 'patient-1' \
                     AND (sealed IS NOT NULL OR cardinality(phone_keys) > 0)), \
                    (SELECT count(*) FROM cr_complaints WHERE customer_id = 'patient-1' \
                     AND cardinality(phones) > 0)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        rows
    };
    eventually(
        Duration::from_secs(30),
        "the read models purged",
        || async { (contact_rows().await == (0, 0)).then_some(()) },
    )
    .await;

    // The figures are unchanged: they hold no personal data.
    let figures_after = analytics.report(report()).await.unwrap().into_inner();
    assert_eq!(figures_after, figures_before);

    // Restriction: storage kept, nothing processed or opened.
    as_admin
        .erase_subject(EraseSubjectRequest {
            tenant_id: TENANT.into(),
            subject_id: "patient-2".into(),
            mode: ErasureMode::Restrict as i32,
            reason: "disputed record, retained".into(),
        })
        .await
        .unwrap();
    let refused = scheduling
        .ingest_business_event(discharge("adt-3", "patient-2", "赵六", "13787654321"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("subject.subject_id"),
        "{refused:?}"
    );
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sched_subjects WHERE subject_id = 'patient-2' AND sealed IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, 1, "a restricted subject's storage is kept");
    let open_callbacks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sched_callbacks WHERE subject_id = 'patient-2' \
         AND status IN ('scheduled', 'claimed')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open_callbacks, 0, "a restricted subject is not called");
    // An erased subject's new data is new collection: sealed with a new key, readable.
    scheduling
        .ingest_business_event(discharge("adt-4", "patient-1", NAME, PHONE))
        .await
        .unwrap();
    assert!(clear_text_at_rest(&pool).await.is_empty());

    // The roles: a supervisor may not erase.
    let supervisor = token("sup-1", &["ward:supervisor"]);
    let refused = SchedulingClient::with_interceptor(
        system.anonymous_channel(ServiceKind::Scheduling),
        Bearer::new(&supervisor),
    )
    .erase_subject(EraseSubjectRequest {
        tenant_id: TENANT.into(),
        subject_id: "patient-2".into(),
        mode: ErasureMode::Erase as i32,
        reason: "x".into(),
    })
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    system.stop().await;

    // A rebuild of scheduling from the log gives the same read model: the erasure is replayed.
    let store = callback_eventstore::EventStore::open(pool.clone())
        .await
        .unwrap();
    store
        .register_categories("scheduling", callback_scheduling::CATEGORIES)
        .await
        .unwrap();
    let app = callback_scheduling::open(
        store,
        vault,
        std::sync::Arc::new(callback_rules::SystemClock),
    )
    .await
    .unwrap();
    let subjects = || async {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws('|', subject_id, sealed IS NOT NULL, cardinality(phone_keys)) \
             FROM sched_subjects ORDER BY subject_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let before_rebuild = subjects().await;
    app.rebuild_projections().await.unwrap();
    assert_eq!(subjects().await, before_rebuild);
}
