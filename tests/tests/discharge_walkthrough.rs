//! A discharge walked through on simulated time, with scheduling and call-logging as separate
//! gRPC servers on one PostgreSQL: scheduled, claimed, no answer, retried in the next window,
//! not convenient with a named time, called at that time, reached with answers, completed, and
//! the policy's next step scheduled.

#![allow(clippy::unwrap_used)]

use callback_contracts::call_logging::{CallAttemptLogged, SurveyAnswered};
use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimedCallback, Disposition, GetCallbackRequest, IngestBusinessEventRequest,
    LogCallAttemptRequest, PublishPolicyRequest, PublishQuestionnaireRequest, PublishTenantRequest,
    Subject,
};
use callback_rules::ManualClock;
use callback_tests::{eventually, System};
use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;
use serde_json::json;
use tonic::transport::Channel;

fn shanghai(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    chrono_tz_offset()
        .with_ymd_and_hms(2026, 9, d, h, m, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Shanghai has no daylight saving: a fixed +08:00 offset is exact.
fn chrono_tz_offset() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).unwrap()
}

fn ts(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

async fn claim(client: &mut SchedulingClient<Channel>) -> Option<ClaimedCallback> {
    callback_tests::claim(client, "ward", "nurse").await
}

fn report(
    id: &str,
    c: &ClaimedCallback,
    kind: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> LogCallAttemptRequest {
    LogCallAttemptRequest {
        attempt_id: id.into(),
        tenant_id: "ward".into(),
        callback_id: c.callback_id.clone(),
        lease_id: c.lease_id.clone(),
        agent_id: "nurse".into(),
        channel: "phone".into(),
        started_at: ts(from),
        ended_at: ts(to),
        disposition: Some(Disposition {
            kind: kind.into(),
            named_time: None,
        }),
        ..Default::default()
    }
}

/// Waits until scheduling shows the callback with `status`, `attempts` and due time `due`.
async fn expect(
    client: &SchedulingClient<Channel>,
    id: &str,
    status: &str,
    attempts: u32,
    due: DateTime<Utc>,
) {
    let want = (status.to_owned(), attempts, due.timestamp());
    eventually(Duration::from_secs(30), &format!("{want:?}"), || {
        let (mut c, id, want) = (client.clone(), id.to_owned(), want.clone());
        async move {
            let v = c
                .get_callback(GetCallbackRequest {
                    tenant_id: "ward".into(),
                    callback_id: id,
                    as_of: None,
                    without_history: false,
                })
                .await
                .unwrap()
                .into_inner()
                .callback
                .unwrap();
            ((v.status, v.attempts, v.due_at.unwrap().seconds) == want).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharge_walks_through_retries_a_named_time_completion_and_the_next_step() {
    let clock = ManualClock::new(shanghai(7, 10, 5)); // Monday 2026-09-07, just after the discharge
    let system = System::start_on_clock(
        &[ServiceKind::Scheduling, ServiceKind::CallLogging],
        clock.clone(),
    )
    .await;
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let mut calls = CallLoggingClient::new(system.channel(ServiceKind::CallLogging));

    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]},
        "pools": ["nurses"], "agents": [{"agent_id": "nurse", "pools": ["nurses"]}]
    });
    scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: "ward".into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = json!({
        "policy_id": "discharge", "name": "出院回访", "trigger": {"event_type": "patient.discharged"},
        "steps": [
            {"name": "first", "questionnaire_id": "discharge-v3", "owner": {"kind": "pool", "pool": "nurses"},
             "retry": {"max_attempts": 3, "default_spacing_minutes": 120},
             "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 7}}},
            {"name": "second", "owner": {"kind": "pool", "pool": "nurses"},
             "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 8}, "latest": {"months": 2}}}
        ]
    });
    scheduling
        .publish_policy(PublishPolicyRequest {
            tenant_id: "ward".into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
    let questionnaire = json!({
        "questionnaire_id": "discharge-v3", "title": "出院回访",
        "items": [{"id": "recovered", "text": "恢复好吗", "kind": {"type": "yes_no"}, "required": true},
                  {"id": "nursing", "text": "护理满意度", "kind": {"type": "rating"}, "required": true}]
    });
    calls
        .publish_questionnaire(PublishQuestionnaireRequest {
            tenant_id: "ward".into(),
            questionnaire_json: questionnaire.to_string(),
        })
        .await
        .unwrap();

    // Discharged Monday 10:00: the first call is due from Tuesday 08:00.
    let ingested = scheduling
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: "ward".into(),
            source: "his".into(),
            source_event_id: "adt-a03-1".into(),
            event_type: "patient.discharged".into(),
            occurred_at: ts(shanghai(7, 10, 0)),
            subject: Some(Subject {
                subject_id: "p1".into(),
                name: "王芳".into(),
                phones: vec!["13600136000".into()],
                ..Default::default()
            }),
            attributes_json: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = ingested.scheduled[0].callback_id.clone();
    assert_eq!(
        ingested.scheduled[0].due_at.as_ref().unwrap().seconds,
        shanghai(8, 8, 0).timestamp()
    );

    // 11:50, no answer: the retry two hours later falls in the afternoon window, 13:51.
    clock.set(shanghai(8, 11, 50));
    let c = claim(&mut scheduling).await.unwrap();
    assert_eq!(c.callback_id, id);
    calls
        .log_call_attempt(report(
            "a1",
            &c,
            "no_answer",
            shanghai(8, 11, 50),
            shanghai(8, 11, 51),
        ))
        .await
        .unwrap();
    expect(&scheduling, &id, "scheduled", 1, shanghai(8, 13, 51)).await;
    assert!(
        claim(&mut scheduling).await.is_none(),
        "not before the retry time"
    );

    // 13:51, "not convenient, call me Thursday at 15:00".
    clock.set(shanghai(8, 13, 51));
    let c = claim(&mut scheduling).await.unwrap();
    let mut later = report(
        "a2",
        &c,
        "not_convenient",
        shanghai(8, 13, 51),
        shanghai(8, 13, 52),
    );
    later.disposition = Some(Disposition {
        kind: "not_convenient".into(),
        named_time: ts(shanghai(10, 15, 0)),
    });
    calls.log_call_attempt(later).await.unwrap();
    expect(&scheduling, &id, "scheduled", 2, shanghai(10, 15, 0)).await;
    clock.set(shanghai(10, 14, 59));
    assert!(
        claim(&mut scheduling).await.is_none(),
        "not before the named time"
    );

    // Thursday 15:00, reached with answers: completed.
    clock.set(shanghai(10, 15, 0));
    let c = claim(&mut scheduling).await.unwrap();
    let mut reached = report(
        "a3",
        &c,
        "reached",
        shanghai(10, 15, 0),
        shanghai(10, 15, 6),
    );
    reached.questionnaire_id = "discharge-v3".into();
    reached.questionnaire_version = 1;
    reached.answers_json = json!({"recovered": true, "nursing": 5}).to_string();
    let logged = calls.log_call_attempt(reached).await.unwrap().into_inner();
    assert_eq!(
        logged.event_types,
        [CallAttemptLogged::EVENT_TYPE, SurveyAnswered::EVENT_TYPE]
    );
    assert!(
        logged.flags_raised.is_empty(),
        "an honest call raises no flag: {:?}",
        logged.flags_raised
    );
    expect(&scheduling, &id, "completed", 3, shanghai(10, 15, 0)).await;

    // The second step is scheduled: from day 8 after discharge, Tuesday 2026-09-15 08:00.
    let second: (String, DateTime<Utc>) =
        sqlx::query_as("SELECT status, due_at FROM sched_callbacks WHERE step = 'second'")
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(second, ("scheduled".to_owned(), shanghai(15, 8, 0)));
    system.stop().await;
}
