//! Call-logging and scheduling as separate gRPC servers on one PostgreSQL: attempts reported
//! by the middleware reach scheduling through the feed; bad reports are refused, nothing written.

#![allow(clippy::unwrap_used)]

use callback_contracts::call_logging::{
    CallAttemptLogged, CallRecordViewed, ComplaintRaised, HonestyFlagRaised, SurveyAnswered,
};
use std::time::Duration;

use callback_eventstore::{EventStore, StreamName};
use callback_kit::ServiceKind;
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimedCallback, Disposition, GetCallbacksRequest, IngestBusinessEventRequest,
    LogCallAttemptRequest, PublishPolicyRequest, PublishQuestionnaireRequest, PublishTenantRequest,
    Subject,
};
use callback_proto::v1::{
    GetCallRecordRequest, IngestTelephonyRecordRequest, PublishDispositionsRequest,
};
use callback_tests::{eventually, System};
use prost_types::Timestamp;
use serde_json::json;
use tonic::transport::Channel;
use tonic::Code;

fn now() -> Timestamp {
    Timestamp::from(std::time::SystemTime::now())
}

fn ago(seconds: u64) -> Timestamp {
    Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(seconds))
}

/// The stream of a tenant's attempt (attempt ids are scoped by tenant).
fn attempt_stream(tenant: &str, attempt_id: &str) -> StreamName {
    StreamName::new("call_attempt", format!("{tenant}:{attempt_id}")).unwrap()
}

async fn claim(client: &mut SchedulingClient<Channel>, agent: &str) -> ClaimedCallback {
    callback_tests::claim(client, "h", agent).await.unwrap()
}

fn attempt(id: &str, c: &ClaimedCallback, agent: &str, kind: &str) -> LogCallAttemptRequest {
    LogCallAttemptRequest {
        attempt_id: id.into(),
        tenant_id: "h".into(),
        callback_id: c.callback_id.clone(),
        lease_id: c.lease_id.clone(),
        agent_id: agent.into(),
        channel: "phone".into(),
        started_at: Some(ago(90)),
        ended_at: Some(now()),
        disposition: Some(Disposition {
            kind: kind.into(),
            named_time: None,
        }),
        ..Default::default()
    }
}

/// Patient `p{i}` discharged now (fact `adt-{i}`).
async fn discharged(client: &mut SchedulingClient<Channel>, i: u32, phone: &str) {
    discharged_in(client, "h", i, phone).await
}

async fn discharged_in(client: &mut SchedulingClient<Channel>, tenant: &str, i: u32, phone: &str) {
    client
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: tenant.into(),
            source: "his".into(),
            source_event_id: format!("adt-{i}"),
            event_type: "patient.discharged".into(),
            occurred_at: Some(now()),
            subject: Some(Subject {
                subject_id: format!("p{i}"),
                name: "李四".into(),
                phones: vec![phone.into()],
                ..Default::default()
            }),
            attributes_json: String::new(),
        })
        .await
        .unwrap();
}

async fn view(client: &mut SchedulingClient<Channel>, id: &str) -> (String, u32) {
    callback_tests::callback_state(client, "h", id).await
}

/// Tenant `h` (calling all day, every day) with `agents` in pool `nurses`, and its discharge
/// policy (one step, five attempts, at once again after a failed one).
async fn publish_hospital(scheduling: &mut SchedulingClient<Channel>, agents: &[&str]) {
    publish_hospital_as(scheduling, "h", agents).await
}

async fn publish_hospital_as(
    scheduling: &mut SchedulingClient<Channel>,
    tenant: &str,
    agents: &[&str],
) {
    let agents: Vec<_> = agents
        .iter()
        .map(|a| json!({"agent_id": a, "pools": ["nurses"]}))
        .collect();
    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
                     "holidays": ["2026-01-01"]},
        "pools": ["nurses"], "agents": agents
    });
    scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: tenant.into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = json!({
        "policy_id": "discharge", "name": "出院回访", "trigger": {"event_type": "patient.discharged"},
        "steps": [{"name": "first", "questionnaire_id": "discharge-v3", "owner": {"kind": "pool", "pool": "nurses"},
                   "retry": {"max_attempts": 5, "default_spacing_minutes": 0},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    });
    scheduling
        .publish_policy(PublishPolicyRequest {
            tenant_id: tenant.into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_sent_together_are_each_answered_on_their_own() {
    let system = System::start(&[ServiceKind::Scheduling, ServiceKind::CallLogging]).await;
    let store = EventStore::open(system.db.pool.clone()).await.unwrap();
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let calls = CallLoggingClient::new(system.channel(ServiceKind::CallLogging));
    let agents: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let agent_refs: Vec<&str> = agents.iter().map(String::as_str).collect();
    publish_hospital(&mut scheduling, &agent_refs).await;
    let mut claimed = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        discharged(&mut scheduling, 100 + i as u32, &format!("1390000{:04}", i)).await;
        claimed.push(claim(&mut scheduling, agent).await);
    }

    // Every agent reports at once (a complaint from the first), with three reports that must
    // be refused among them: another agent's lease, an unknown callback, another tenant.
    let mut requests: Vec<(String, LogCallAttemptRequest)> = Vec::new();
    for (i, (agent, c)) in agents.iter().zip(&claimed).enumerate() {
        let mut request = attempt(&format!("together-{i}"), c, agent, "no_answer");
        if i == 0 {
            request.complaint = Some(callback_proto::v1::ComplaintReport {
                text: "护士态度差".into(),
                category: "service".into(),
                ..Default::default()
            });
        }
        requests.push(("ok".into(), request));
    }
    requests.push((
        "not holder".into(),
        attempt("together-wrong", &claimed[1], "n0", "no_answer"),
    ));
    let mut unknown = attempt("together-unknown", &claimed[2], "n2", "no_answer");
    unknown.callback_id = uuid::Uuid::now_v7().to_string();
    requests.push(("unknown".into(), unknown));
    let mut other_tenant = attempt("together-tenant", &claimed[3], "n3", "no_answer");
    other_tenant.tenant_id = "dealer".into();
    requests.push(("other tenant".into(), other_tenant));
    let sent: Vec<_> = requests
        .into_iter()
        .map(|(expect, request)| {
            let mut calls = calls.clone();
            tokio::spawn(async move {
                let attempt_id = request.attempt_id.clone();
                (expect, attempt_id, calls.log_call_attempt(request).await)
            })
        })
        .collect();
    for task in sent {
        let (expect, attempt_id, answer) = task.await.unwrap();
        match (expect.as_str(), answer) {
            ("ok", Ok(logged)) => assert!(!logged.into_inner().duplicate, "{attempt_id}"),
            ("not holder", Err(e)) => assert_eq!(e.code(), Code::PermissionDenied, "{e:?}"),
            ("unknown" | "other tenant", Err(e)) => {
                assert_eq!(e.code(), Code::NotFound, "{attempt_id}: {e:?}")
            }
            (expect, answer) => panic!("{attempt_id}: expected {expect}, got {answer:?}"),
        }
    }
    for (tenant, refused) in [
        ("h", "together-wrong"),
        ("h", "together-unknown"),
        ("dealer", "together-tenant"),
    ] {
        let stream = attempt_stream(tenant, refused);
        assert!(store.read_stream(&stream, 1).await.unwrap().is_empty());
    }
    // The complaint carries the subject of its own callback.
    let logged = store
        .read_stream(&attempt_stream("h", "together-0"), 1)
        .await
        .unwrap();
    let complaint = logged
        .iter()
        .find(|e| e.event_type == ComplaintRaised::EVENT_TYPE)
        .expect("a complaint event");
    let payload: serde_json::Value = serde_json::from_str(&complaint.payload).unwrap();
    assert_eq!(payload["subject_id"], "p100");

    // GetCallbacks itself: the tenant's own callbacks in the order asked, others left out,
    // and a malformed id named.
    let asked = vec![
        claimed[2].callback_id.clone(),
        uuid::Uuid::now_v7().to_string(),
        claimed[0].callback_id.clone(),
    ];
    let found = scheduling
        .get_callbacks(GetCallbacksRequest {
            tenant_id: "h".into(),
            callback_ids: asked.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .callbacks;
    let ids: Vec<&str> = found.iter().map(|v| v.callback_id.as_str()).collect();
    assert_eq!(ids, [asked[0].as_str(), asked[2].as_str()]);
    let elsewhere = scheduling
        .get_callbacks(GetCallbacksRequest {
            tenant_id: "dealer".into(),
            callback_ids: asked.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .callbacks;
    assert!(elsewhere.is_empty());
    let e = scheduling
        .get_callbacks(GetCallbacksRequest {
            tenant_id: "h".into(),
            callback_ids: vec![asked[0].clone(), "nope".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("callback_ids[1]:"), "{e:?}");
    let e = scheduling
        .get_callbacks(GetCallbacksRequest {
            tenant_id: "h".into(),
            callback_ids: vec![asked[0].clone(); 1001],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("callback_ids:"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_flow_from_call_logging_to_scheduling_and_bad_reports_write_nothing() {
    let system = System::start(&[ServiceKind::Scheduling, ServiceKind::CallLogging]).await;
    let store = EventStore::open(system.db.pool.clone()).await.unwrap();
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let mut calls = CallLoggingClient::new(system.channel(ServiceKind::CallLogging));

    publish_hospital(&mut scheduling, &["n1", "n2"]).await;
    let questionnaire = json!({
        "questionnaire_id": "discharge-v3", "title": "出院回访",
        "items": [{"id": "recovered", "text": "恢复好吗", "kind": {"type": "yes_no"}, "required": true},
                  {"id": "nursing", "text": "护理满意度", "kind": {"type": "rating"}, "required": true}]
    });
    let published = calls
        .publish_questionnaire(PublishQuestionnaireRequest {
            tenant_id: "h".into(),
            questionnaire_json: questionnaire.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.version, 1);
    scheduling
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: "h".into(),
            source: "his".into(),
            source_event_id: "adt-1".into(),
            event_type: "patient.discharged".into(),
            occurred_at: Some(now()),
            subject: Some(Subject {
                subject_id: "p1".into(),
                name: "张三".into(),
                phones: vec!["13800138000".into()],
                ..Default::default()
            }),
            attributes_json: String::new(),
        })
        .await
        .unwrap();

    // No answer: recorded once (a retry is a duplicate), and scheduling reacts via the feed.
    let c = claim(&mut scheduling, "n1").await;
    let first = calls
        .log_call_attempt(attempt("att-1", &c, "n1", "no_answer"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.event_types, [CallAttemptLogged::EVENT_TYPE]);
    // At once (the lease may still hold: the append finds the attempt logged)...
    let retry = calls
        .log_call_attempt(attempt("att-1", &c, "n1", "no_answer"))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(retry.event_types, [CallAttemptLogged::EVENT_TYPE]);
    let id = c.callback_id.clone();
    eventually(Duration::from_secs(30), "the retry to be scheduled", || {
        let (mut s, id) = (scheduling.clone(), id.clone());
        async move { (view(&mut s, &id).await == ("scheduled".to_string(), 1)).then_some(()) }
    })
    .await;
    // ...and once scheduling has applied it, when the lease is gone.
    let late_retry = calls
        .log_call_attempt(attempt("att-1", &c, "n1", "no_answer"))
        .await
        .unwrap()
        .into_inner();
    assert!(late_retry.duplicate);
    assert_eq!(late_retry.event_types, [CallAttemptLogged::EVENT_TYPE]);

    // Reports that must be refused, with nothing written for them.
    let c = claim(&mut scheduling, "n2").await;
    let refusing = calls.clone();
    let refused = |request: LogCallAttemptRequest| {
        let mut calls = refusing.clone();
        async move { calls.log_call_attempt(request).await.unwrap_err() }
    };
    let e = refused(attempt("bad-1", &c, "n1", "reached")).await;
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "n1 does not hold n2's lease: {e:?}"
    );
    let mut answers_wrong = attempt("bad-2", &c, "n2", "reached");
    answers_wrong.questionnaire_id = "discharge-v3".into();
    answers_wrong.questionnaire_version = 1;
    answers_wrong.answers_json = json!({"recovered": true, "nursing": 7}).to_string();
    let e = refused(answers_wrong.clone()).await;
    assert_eq!(
        (e.code(), e.message().starts_with("answers.nursing:")),
        (Code::InvalidArgument, true),
        "{e:?}"
    );
    let mut unknown_version = answers_wrong.clone();
    unknown_version.attempt_id = "bad-3".into();
    unknown_version.questionnaire_version = 9;
    assert!(refused(unknown_version)
        .await
        .message()
        .starts_with("questionnaire_version:"));
    let mut inverted = attempt("bad-4", &c, "n2", "reached");
    inverted.ended_at = Some(ago(600));
    assert!(refused(inverted).await.message().starts_with("ended_at:"));
    let mut too_long = attempt("bad-5", &c, "n2", "reached");
    too_long.ended_at = None;
    too_long.duration_seconds = 2 * 24 * 3600;
    assert!(refused(too_long)
        .await
        .message()
        .starts_with("duration_seconds:"));
    let mut long_notes = attempt("bad-6", &c, "n2", "reached");
    long_notes.notes = "很".repeat(4001);
    assert!(refused(long_notes).await.message().starts_with("notes:"));
    let mut no_time = attempt("bad-7", &c, "n2", "not_convenient");
    no_time.disposition = Some(Disposition {
        kind: "not_convenient".into(),
        named_time: None,
    });
    assert!(refused(no_time)
        .await
        .message()
        .starts_with("disposition.named_time:"));
    for bad in [
        "bad-1", "bad-2", "bad-3", "bad-4", "bad-5", "bad-6", "bad-7",
    ] {
        let stream = attempt_stream("h", bad);
        assert!(
            store.read_stream(&stream, 1).await.unwrap().is_empty(),
            "{bad} wrote something"
        );
    }

    // Reached, with valid answers: completed in scheduling.
    let mut reached = attempt("att-2", &c, "n2", "reached");
    reached.questionnaire_id = "discharge-v3".into();
    reached.questionnaire_version = 1;
    reached.answers_json = json!({"recovered": true, "nursing": 5}).to_string();
    let done = calls.log_call_attempt(reached).await.unwrap().into_inner();
    assert_eq!(
        done.event_types,
        [CallAttemptLogged::EVENT_TYPE, SurveyAnswered::EVENT_TYPE]
    );
    eventually(Duration::from_secs(30), "the callback to complete", || {
        let (mut s, id) = (scheduling.clone(), id.clone());
        async move { (view(&mut s, &id).await == ("completed".to_string(), 2)).then_some(()) }
    })
    .await;
    // An attempt reported after the callback ended is kept on record, flagged for the
    // honesty checks, and not applied: the callback stays completed.
    let late = calls
        .log_call_attempt(attempt("att-3", &c, "n2", "reached"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        late.flags_raised.contains(&"callback_ended".to_owned()),
        "{late:?}"
    );
    let record = calls
        .get_call_record(GetCallRecordRequest {
            tenant_id: "h".into(),
            attempt_id: "att-3".into(),
            reader: "qa".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        record.flags.contains(&"callback_ended".to_owned()),
        "{record:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        view(&mut scheduling, &c.callback_id).await,
        ("completed".to_string(), 2)
    );

    // Honesty checks (弄虚作假). A "reached" call of 3 seconds whose telephony record says
    // NOANSWER, logged while the same agent's other call was still running.
    // One number written three ways (a shared contact: see below).
    for (i, phone) in [
        (2, "+86 139 0013 9000"),
        (3, "139-0013-9000"),
        (4, "008613900139000"),
    ] {
        discharged(&mut scheduling, i, phone).await;
    }
    let c2 = claim(&mut scheduling, "n1").await;
    let mut long_call = attempt("att-10", &c2, "n1", "no_answer");
    // An hour ago, clear of n1's earlier attempt.
    long_call.started_at = Some(ago(3600));
    long_call.ended_at = Some(ago(3000));
    assert!(calls
        .log_call_attempt(long_call)
        .await
        .unwrap()
        .into_inner()
        .flags_raised
        .is_empty());
    let c3 = claim(&mut scheduling, "n1").await;
    let mut suspect = attempt("att-11", &c3, "n1", "reached");
    suspect.started_at = Some(ago(3300));
    suspect.ended_at = Some(ago(3297));
    suspect.telephony_call_id = "cdr-11".into();
    // Reached, on a callback whose step asks a questionnaire: answered, or why not.
    let e = refused(suspect.clone()).await;
    assert!(e.message().starts_with("survey_declined:"), "{e:?}");
    suspect.survey_declined = "the customer hung up".into();
    let logged = calls.log_call_attempt(suspect).await.unwrap().into_inner();
    assert_eq!(logged.flags_raised, ["short_reached", "overlapping_calls"]);
    assert_eq!(
        logged
            .event_types
            .iter()
            .filter(|t| *t == HonestyFlagRaised::EVENT_TYPE)
            .count(),
        2
    );
    // The telephony record arrives later and contradicts the disposition.
    let cdr = IngestTelephonyRecordRequest {
        tenant_id: "h".into(),
        call_id: "cdr-11".into(),
        number_dialed: "13900139000".into(),
        started_at: Some(ago(3300)),
        answered_at: None,
        ended_at: Some(ago(3270)),
        billable_seconds: 0,
        network_result: "NOANSWER".into(),
    };
    let ingested = calls
        .ingest_telephony_record(cdr.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ingested.flags_raised, ["network_contradiction"]);
    let again = calls
        .ingest_telephony_record(cdr.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.duplicate && again.flags_raised.is_empty(),
        "idempotent on call id"
    );
    // The same call id with another record is a conflict naming the key, not a retry.
    let mut other = cdr.clone();
    other.network_result = "ANSWER".into();
    let e = calls.ingest_telephony_record(other).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().starts_with("call_id:"), "{e:?}");
    let mut bad_cdr = cdr;
    bad_cdr.call_id = "cdr-12".into();
    bad_cdr.network_result = "MAYBE".into();
    let e = calls.ingest_telephony_record(bad_cdr).await.unwrap_err();
    assert!(e.message().starts_with("network_result:"), "{e:?}");

    // A phone call started outside the tenant's calling windows (a holiday), once call-logging
    // has learned the tenant's calendar from scheduling's feed.
    let pool = system.db.pool.clone();
    eventually(
        Duration::from_secs(30),
        "call-logging to learn the calendar",
        || {
            let pool = pool.clone();
            async move {
                let known: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM cl_tenant_calendars WHERE tenant_id = 'h')",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                known.then_some(())
            }
        },
    )
    .await;
    let c4 = claim(&mut scheduling, "n2").await;
    let mut on_holiday = attempt("att-12", &c4, "n2", "no_answer");
    let new_year = 1_767_232_800; // 2026-01-01T10:00:00+08:00
    on_holiday.started_at = Some(Timestamp {
        seconds: new_year,
        nanos: 0,
    });
    on_holiday.ended_at = Some(Timestamp {
        seconds: new_year + 40,
        nanos: 0,
    });
    let logged = calls
        .log_call_attempt(on_holiday)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logged.flags_raised, ["outside_calling_window"]);

    // Tenant-defined dispositions, mapped onto standard ones.
    let mapping = PublishDispositionsRequest {
        tenant_id: "h".into(),
        mapping_json: json!({"patient_deceased": "invalid_subject"}).to_string(),
    };
    assert_eq!(
        calls
            .publish_dispositions(mapping)
            .await
            .unwrap()
            .into_inner()
            .version,
        1
    );
    let shadowing = PublishDispositionsRequest {
        tenant_id: "h".into(),
        mapping_json: json!({"reached": "reached"}).to_string(),
    };
    assert!(calls
        .publish_dispositions(shadowing)
        .await
        .unwrap_err()
        .message()
        .starts_with("mapping_json.reached:"));
    // p4's no-answer made it due again; claim it once scheduling has applied that.
    let c5 = eventually(
        Duration::from_secs(30),
        "p4's callback to be due again",
        || {
            let mut s = scheduling.clone();
            async move { callback_tests::claim(&mut s, "h", "n2").await }
        },
    )
    .await;
    let dated = |mut request: LogCallAttemptRequest| {
        let december = 1_764_554_400; // 2025-12-01T10:00:00+08:00, clear of every other call
        request.started_at = Some(Timestamp {
            seconds: december,
            nanos: 0,
        });
        request.ended_at = Some(Timestamp {
            seconds: december + 30,
            nanos: 0,
        });
        request
    };
    let e = refused(dated(attempt("bad-8", &c5, "n2", "abc"))).await;
    assert!(e.message().starts_with("disposition.kind:"), "{e:?}");
    let deceased = calls
        .log_call_attempt(dated(attempt("att-13", &c5, "n2", "patient_deceased")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deceased.event_types, [CallAttemptLogged::EVENT_TYPE]);
    let id5 = c5.callback_id.clone();
    eventually(
        Duration::from_secs(30),
        "the callback to be cancelled as an invalid subject",
        || {
            let (mut s, id) = (scheduling.clone(), id5.clone());
            async move { (view(&mut s, &id).await.0 == "cancelled").then_some(()) }
        },
    )
    .await;

    // Shared contact (insurer rule): p2, p3 and p4 were given the same number, each written
    // differently; in its normal form it is one number.
    eventually(
        Duration::from_secs(30),
        "shared contacts to be flagged",
        || {
            let pool = pool.clone();
            async move {
                let pairs: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM cl_shared_contacts WHERE tenant_id = 'h'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (pairs == 6).then_some(())
            }
        },
    )
    .await;
    // Another test's open transaction may hold the log's visibility horizon back.
    store.wait_for_horizon().await.unwrap();
    let shared = store
        .read_all(
            callback_eventstore::Checkpoint::START,
            &callback_eventstore::Filter::categories(["shared_contact"]),
            100,
        )
        .await
        .unwrap()
        .events;
    assert_eq!(shared.len(), 3, "one flag per pair of subjects");
    // Matched by the numbers' keyed hashes: no flag carries any part of the number.
    assert!(shared
        .iter()
        .all(|e| !e.payload.contains("13900139000") && !e.payload.contains("9000")));

    // Privacy: numbers are masked unless a full view is asked for with a reason, and every full
    // view is recorded (who, why).
    let read = |full_view: bool, reason: &str| GetCallRecordRequest {
        tenant_id: "h".into(),
        attempt_id: "att-11".into(),
        reader: "supervisor-7".into(),
        full_view,
        reason: reason.into(),
    };
    let masked = calls
        .get_call_record(read(false, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(masked.number_dialed, "139****9000");
    assert_eq!(masked.network_result, "NOANSWER");
    let mut flags = masked.flags.clone();
    flags.sort();
    assert_eq!(
        flags,
        [
            "network_contradiction",
            "overlapping_calls",
            "short_reached"
        ]
    );
    let e = calls.get_call_record(read(true, "")).await.unwrap_err();
    assert!(e.message().starts_with("reason:"), "{e:?}");
    let attempt_stream = attempt_stream("h", "att-11");
    let viewed = |events: &[callback_eventstore::RecordedEvent]| {
        events
            .iter()
            .filter(|e| e.event_type == CallRecordViewed::EVENT_TYPE)
            .count()
    };
    assert_eq!(
        viewed(&store.read_stream(&attempt_stream, 1).await.unwrap()),
        0,
        "masked reads and refusals are not full views"
    );
    // The reader on record is the authenticated supervisor, not the `reader` a caller
    // writes into its request.
    let supervisor = callback_tests::token("supervisor-7", &["h:supervisor"]);
    let mut as_supervisor = CallLoggingClient::with_interceptor(
        system.anonymous_channel(ServiceKind::CallLogging),
        callback_tests::Bearer::new(&supervisor),
    );
    let mut claiming_to_be_another = read(true, "complaint investigation #12");
    claiming_to_be_another.reader = "someone-else".into();
    let full = as_supervisor
        .get_call_record(claiming_to_be_another)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.number_dialed, "13900139000");
    let events = store.read_stream(&attempt_stream, 1).await.unwrap();
    assert_eq!(viewed(&events), 1);
    let audit = events
        .iter()
        .find(|e| e.event_type == CallRecordViewed::EVENT_TYPE)
        .unwrap();
    assert!(
        audit.payload.contains("supervisor-7")
            && !audit.payload.contains("someone-else")
            && audit.payload.contains("complaint investigation #12")
    );
    let e = calls
        .get_call_record(GetCallRecordRequest {
            tenant_id: "other".into(),
            ..read(false, "")
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "another tenant's record is not visible"
    );

    // No telephony record: a reached phone call whose record never comes is flagged once the
    // records of later calls have arrived, beyond the 30-minute tolerance.
    for i in 20..22 {
        discharged(&mut scheduling, i, &format!("139001390{i}")).await;
    }
    let c5 = claim(&mut scheduling, "n1").await;
    let mut unrecorded = attempt("att-20", &c5, "n1", "reached");
    unrecorded.started_at = Some(ago(4060));
    unrecorded.ended_at = Some(ago(4000));
    unrecorded.telephony_call_id = "cdr-20".into();
    unrecorded.survey_declined = "no time today".into();
    let logged = calls
        .log_call_attempt(unrecorded)
        .await
        .unwrap()
        .into_inner();
    assert!(
        !logged
            .flags_raised
            .contains(&"no_telephony_record".to_owned()),
        "later calls' records have not arrived yet: {:?}",
        logged.flags_raised
    );
    let later = IngestTelephonyRecordRequest {
        tenant_id: "h".into(),
        call_id: "cdr-21".into(),
        number_dialed: "13900139021".into(),
        started_at: Some(ago(60)),
        answered_at: Some(ago(55)),
        ended_at: Some(ago(10)),
        billable_seconds: 45,
        network_result: "ANSWER".into(),
    };
    let ingested = calls
        .ingest_telephony_record(later)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ingested.flags_raised, ["no_telephony_record"]);

    // The read models rebuild from the log to the same rows.
    let snapshot = |pool: sqlx::PgPool| async move {
        let flags: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT attempt_id, kind, evidence FROM cl_flags ORDER BY attempt_id, kind",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let attempts: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT attempt_id, agent_id, disposition FROM cl_attempts ORDER BY attempt_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        (flags, attempts)
    };
    let before = snapshot(system.db.pool.clone()).await;
    // Five from the honesty checks above, two on the attempt reported after its callback ended
    // (callback_ended, and it overlaps the agent's earlier call).
    assert_eq!(before.0.len(), 7, "{:?}", before.0);
    let vault =
        callback_vault::Vault::open(system.db.pool.clone(), system.config.master_keys.clone())
            .await
            .unwrap();
    let app = callback_call_logging::app::CallLogging::new(
        store.clone(),
        vault,
        std::sync::Arc::new(
            callback_call_logging::scheduling_client::GrpcScheduling::new(
                system.channel(ServiceKind::Scheduling),
            ),
        ),
    );
    let rebuilt = callback_testkit::while_a_foreign_transaction_is_open(
        std::time::Duration::from_millis(700),
        app.rebuild_projections(),
    )
    .await;
    assert!(rebuilt.unwrap() > 0);
    assert_eq!(snapshot(system.db.pool.clone()).await, before);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_ids_belong_to_a_tenant_and_a_reused_id_with_another_call_is_a_conflict() {
    let system = System::start(&[ServiceKind::Scheduling, ServiceKind::CallLogging]).await;
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let mut logging = CallLoggingClient::new(system.channel(ServiceKind::CallLogging));
    let mut claimed = Vec::new();
    for tenant in ["h", "x"] {
        publish_hospital_as(&mut scheduling, tenant, &["nurse-1"]).await;
        discharged_in(&mut scheduling, tenant, 1, "13900139000").await;
        claimed.push(
            callback_tests::claim(&mut scheduling, tenant, "nurse-1")
                .await
                .unwrap(),
        );
    }
    let report = |tenant: &str, c: &ClaimedCallback, kind: &str| LogCallAttemptRequest {
        tenant_id: tenant.into(),
        ..attempt("middleware-42", c, "nurse-1", kind)
    };
    // Tenant x's middleware happens to use the attempt id tenant h used: both are recorded.
    let first_x = report("x", &claimed[1], "no_answer");
    for request in [report("h", &claimed[0], "no_answer"), first_x.clone()] {
        let tenant = request.tenant_id.clone();
        let answer = logging
            .log_call_attempt(request)
            .await
            .unwrap()
            .into_inner();
        assert!(!answer.duplicate, "{tenant}: {answer:?}");
    }
    // A retry is answered as one.
    let again = logging
        .log_call_attempt(first_x.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    // The same id for another call is a conflict naming the key, not a retry.
    let reused = logging
        .log_call_attempt(LogCallAttemptRequest {
            disposition: Some(Disposition {
                kind: "busy".into(),
                named_time: None,
            }),
            ..first_x
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().starts_with("attempt_id:"), "{reused:?}");
    // Each tenant reads its own record.
    for (tenant, c) in [("h", &claimed[0]), ("x", &claimed[1])] {
        let record = logging
            .get_call_record(GetCallRecordRequest {
                tenant_id: tenant.into(),
                attempt_id: "middleware-42".into(),
                reader: "qa".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(record.callback_id, c.callback_id);
    }
    system.stop().await;
}
