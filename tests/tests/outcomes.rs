//! Outcomes travel from call-logging to scheduling over the gRPC feed and are applied exactly
//! once, also across a restart of the scheduling service in the middle of the stream.

#![allow(clippy::unwrap_used)]

use callback_contracts::scheduling::CallbackEvent;
use std::time::Duration;

use callback_contracts::call_logging::{AttemptDisposition, CallAttemptLogged};
use callback_contracts::scheduling::Disposition;
use callback_contracts::EventContract;
use callback_eventstore::{EventStore, ExpectedVersion, StreamName};
use callback_kit::ServiceKind;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimNextRequest, GetCallbackRequest, IngestBusinessEventRequest, PublishPolicyRequest,
    PublishTenantRequest, Subject,
};
use callback_tests::{eventually, System};
use serde_json::json;
use tonic::transport::Channel;

async fn setup(client: &mut SchedulingClient<Channel>, agents: usize) {
    let agents: Vec<_> = (0..agents)
        .map(|i| json!({"agent_id": format!("a{i}"), "pools": ["desk"]}))
        .collect();
    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["desk"], "agents": agents
    });
    client
        .publish_tenant(PublishTenantRequest {
            tenant_id: "t".into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = json!({
        "policy_id": "sale", "name": "销售回访", "trigger": {"event_type": "vehicle.sold"},
        "steps": [{"name": "call", "owner": {"kind": "pool", "pool": "desk"},
                   "retry": {"max_attempts": 5, "default_spacing_minutes": 0},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    });
    client
        .publish_policy(PublishPolicyRequest {
            tenant_id: "t".into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
}

fn sold(id: &str) -> IngestBusinessEventRequest {
    IngestBusinessEventRequest {
        tenant_id: "t".into(),
        source: "dms".into(),
        source_event_id: id.into(),
        event_type: "vehicle.sold".into(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        subject: Some(Subject {
            subject_id: format!("c-{id}"),
            name: "赵六".into(),
            phones: vec!["13700137000".into()],
            ..Default::default()
        }),
        attributes_json: String::new(),
    }
}

/// What call-logging writes when an agent reports an attempt.
async fn log_attempt(
    store: &EventStore,
    callback_id: &str,
    attempt_id: &str,
    agent: &str,
    lease_id: &str,
    disposition: Disposition,
) {
    let now = chrono::Utc::now();
    let attempt = CallAttemptLogged {
        tenant_id: "t".into(),
        callback_id: callback_id.parse().unwrap(),
        attempt_id: attempt_id.into(),
        agent_id: agent.into(),
        lease_id: lease_id.parse().unwrap(),
        channel: "phone".into(),
        disposition: AttemptDisposition {
            standard: disposition,
            tenant_kind: None,
        },
        started_at: now - chrono::Duration::minutes(2),
        ended_at: now,
        telephony_call_id: String::new(),
        recording_ref: String::new(),
        notes: String::new(),
        survey_declined: None,
        sealed_for: None,
    };
    let stream = StreamName::new(CallAttemptLogged::CATEGORY, attempt_id).unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            &[callback_kit::events::new_event(&attempt).unwrap()],
        )
        .await
        .unwrap();
}

async fn status(client: &mut SchedulingClient<Channel>, id: &str) -> (String, u32) {
    callback_tests::callback_state(client, "t", id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_from_the_call_logging_feed_apply_exactly_once_across_a_restart() {
    let mut system = System::start(&[ServiceKind::Scheduling, ServiceKind::CallLogging]).await;
    let store = EventStore::open(system.db.pool.clone()).await.unwrap();
    let mut client = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    setup(&mut client, 10).await;

    let mut claims = Vec::new();
    for i in 0..10 {
        client
            .ingest_business_event(sold(&format!("s{i}")))
            .await
            .unwrap();
        let claimed = client
            .claim_next(ClaimNextRequest {
                tenant_id: "t".into(),
                agent_id: format!("a{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .claimed
            .unwrap();
        claims.push((format!("a{i}"), claimed.callback_id, claimed.lease_id));
    }
    // First half: no answer (a retry is scheduled).
    for (agent, id, lease) in &claims[..5] {
        log_attempt(
            &store,
            id,
            &format!("{id}-1"),
            agent,
            lease,
            Disposition::NoAnswer,
        )
        .await;
    }
    for (_, id, _) in &claims[..5] {
        eventually(Duration::from_secs(30), "no-answer outcomes applied", || {
            let (id, mut c) = (id.clone(), client.clone());
            async move { (status(&mut c, &id).await == ("scheduled".to_string(), 1)).then_some(()) }
        })
        .await;
    }

    // Stop scheduling mid-stream; call-logging goes on recording; restart.
    system.stop_service(ServiceKind::Scheduling).await;
    for (agent, id, lease) in &claims[5..] {
        log_attempt(
            &store,
            id,
            &format!("{id}-1"),
            agent,
            lease,
            Disposition::Reached,
        )
        .await;
    }
    system.start_service(ServiceKind::Scheduling).await;
    system.wait_serving(ServiceKind::Scheduling).await;
    let mut client = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    for (_, id, _) in &claims[5..] {
        eventually(
            Duration::from_secs(30),
            "reached outcomes applied after restart",
            || {
                let (id, mut c) = (id.clone(), client.clone());
                async move { (status(&mut c, &id).await.0 == "completed").then_some(()) }
            },
        )
        .await;
    }
    // Exactly once: every callback has exactly one attempt, however often the feed replayed.
    for (_, id, _) in &claims {
        assert_eq!(status(&mut client, id).await.1, 1, "callback {id}");
        let history = client
            .get_callback(GetCallbackRequest {
                tenant_id: "t".into(),
                callback_id: id.clone(),
                as_of: None,
                without_history: false,
            })
            .await
            .unwrap()
            .into_inner()
            .history;
        assert_eq!(
            history
                .iter()
                .filter(|h| h.event_type == CallbackEvent::ATTEMPTED)
                .count(),
            1
        );
    }
    system.stop().await;
}
