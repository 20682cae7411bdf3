//! The scheduling API over real gRPC: publish, ingest, claim, inspect; errors carry precise
//! codes and name the field.

#![allow(clippy::unwrap_used)]

use callback_contracts::scheduling::CallbackEvent;
use callback_kit::ServiceKind;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimNextRequest, GetCallbackRequest, IngestBusinessEventRequest, ListCallbacksRequest,
    PublishPolicyRequest, PublishTenantRequest, Subject,
};
use callback_tests::System;
use serde_json::json;
use tonic::Code;

fn settings() -> String {
    // Every day, all day: the test runs on the wall clock whenever CI runs.
    json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["call-center"],
        "agents": [{"agent_id": "cc-1", "pools": ["call-center"]}, {"agent_id": "cc-2", "pools": ["call-center"]}]
    })
    .to_string()
}

fn policy() -> String {
    json!({
        "policy_id": "repair-closed", "name": "维修回访",
        "trigger": {"event_type": "repair_order.closed"},
        "steps": [{"name": "within-week", "owner": {"kind": "pool", "pool": "call-center"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    })
    .to_string()
}

fn ingest(id: &str) -> IngestBusinessEventRequest {
    // One time for every fact of the test: a retry repeats its fact exactly.
    static NOW: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();
    let now = *NOW.get_or_init(std::time::SystemTime::now);
    IngestBusinessEventRequest {
        tenant_id: "dealer".into(),
        source: "dms".into(),
        source_event_id: id.into(),
        event_type: "repair_order.closed".into(),
        occurred_at: Some(prost_types::Timestamp::from(now)),
        subject: Some(Subject {
            subject_id: format!("customer-{id}"),
            name: "李四".into(),
            phones: vec!["13900139000".into()],
            owner_agent_id: String::new(),
            department: String::new(),
        }),
        attributes_json: r#"{"vehicle": "sedan"}"#.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_claim_and_inspect_over_grpc() {
    let system = System::start(&[ServiceKind::Scheduling]).await;
    let mut client = SchedulingClient::new(system.channel(ServiceKind::Scheduling));

    client
        .publish_tenant(PublishTenantRequest {
            tenant_id: "dealer".into(),
            settings_json: settings(),
        })
        .await
        .unwrap();
    let published = client
        .publish_policy(PublishPolicyRequest {
            tenant_id: "dealer".into(),
            policy_json: policy(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (published.policy_id.as_str(), published.version),
        ("repair-closed", 1)
    );

    let first = client
        .ingest_business_event(ingest("ro-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.scheduled.len(), 1);
    let retry = client
        .ingest_business_event(ingest("ro-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(
        retry.scheduled[0].callback_id,
        first.scheduled[0].callback_id
    );

    let claimed = client
        .claim_next(ClaimNextRequest {
            tenant_id: "dealer".into(),
            agent_id: "cc-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .claimed
        .unwrap();
    assert_eq!(claimed.callback_id, first.scheduled[0].callback_id);
    assert_eq!(
        claimed.subject.unwrap().phones,
        vec!["+8613900139000".to_string()]
    );
    let nothing = client
        .claim_next(ClaimNextRequest {
            tenant_id: "dealer".into(),
            agent_id: "cc-2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.claimed.is_none());

    let record = client
        .get_callback(GetCallbackRequest {
            tenant_id: "dealer".into(),
            callback_id: claimed.callback_id.clone(),
            as_of: None,
            without_history: false,
        })
        .await
        .unwrap()
        .into_inner();
    let view = record.callback.unwrap();
    assert_eq!(
        (view.status.as_str(), view.claimed_by.as_str()),
        ("claimed", "cc-1")
    );
    let types: Vec<&str> = record
        .history
        .iter()
        .map(|h| h.event_type.as_str())
        .collect();
    assert_eq!(types, [CallbackEvent::SCHEDULED, CallbackEvent::CLAIMED]);
    // The state alone (how call-logging checks a lease).
    let state_only = client
        .get_callback(GetCallbackRequest {
            tenant_id: "dealer".into(),
            callback_id: claimed.callback_id.clone(),
            as_of: None,
            without_history: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state_only.callback, Some(view.clone()));
    assert!(state_only.history.is_empty());
    let listed = client
        .list_callbacks(ListCallbacksRequest {
            tenant_id: "dealer".into(),
            view: "due".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.callbacks.len(), 1);

    // Bad input: precise codes, the field named.
    let mut no_subject = ingest("ro-2");
    no_subject.subject = None;
    let e = client.ingest_business_event(no_subject).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("subject:"), "{}", e.message());
    let mut bad_phone = ingest("ro-3");
    bad_phone.subject.as_mut().unwrap().phones = vec!["call me".into()];
    let e = client.ingest_business_event(bad_phone).await.unwrap_err();
    assert!(
        e.message().starts_with("subject.phones[0]:"),
        "{}",
        e.message()
    );
    let mut unknown_tenant = ingest("ro-4");
    unknown_tenant.tenant_id = "nobody".into();
    assert_eq!(
        client
            .ingest_business_event(unknown_tenant)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let e = client
        .claim_next(ClaimNextRequest {
            tenant_id: "dealer".into(),
            agent_id: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = client
        .publish_policy(PublishPolicyRequest {
            tenant_id: "dealer".into(),
            policy_json: "{\"policy_id\": 1}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // The JSON path of the type error is named.
    assert!(e.message().starts_with("policy_json.policy_id:"), "{e:?}");
    let e = client
        .get_callback(GetCallbackRequest {
            tenant_id: "dealer".into(),
            callback_id: "nope".into(),
            as_of: None,
            without_history: false,
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("callback_id:"));
    system.stop().await;
}

fn dealer_settings(settings_json: String) -> PublishTenantRequest {
    PublishTenantRequest {
        tenant_id: "dealer".into(),
        settings_json,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_holds_at_most_the_tenants_lease_cap() {
    let system = System::start(&[ServiceKind::Scheduling]).await;
    let mut client = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    client
        .publish_tenant(dealer_settings(settings()))
        .await
        .unwrap();
    client
        .publish_policy(PublishPolicyRequest {
            tenant_id: "dealer".into(),
            policy_json: policy(),
        })
        .await
        .unwrap();
    for id in ["cap-1", "cap-2", "cap-3", "cap-4"] {
        client.ingest_business_event(ingest(id)).await.unwrap();
    }
    let claim = |agent: &str| ClaimNextRequest {
        tenant_id: "dealer".into(),
        agent_id: agent.into(),
        ..Default::default()
    };
    // By default one phone, one call: a second claim while the first lease lives is refused.
    let first = client.claim_next(claim("cc-1")).await.unwrap().into_inner();
    assert!(first.claimed.is_some());
    let refused = client.claim_next(claim("cc-1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().starts_with("agent_id:")
            && refused.message().contains("max_leases_per_agent"),
        "{refused:?}"
    );
    // Another agent is not affected.
    assert!(client
        .claim_next(claim("cc-2"))
        .await
        .unwrap()
        .into_inner()
        .claimed
        .is_some());
    // A tenant that lets agents hold two (e.g. a written survey batch) gets two.
    let mut two: serde_json::Value = serde_json::from_str(&settings()).unwrap();
    two["max_leases_per_agent"] = json!(2);
    client
        .publish_tenant(dealer_settings(two.to_string()))
        .await
        .unwrap();
    assert!(client
        .claim_next(claim("cc-1"))
        .await
        .unwrap()
        .into_inner()
        .claimed
        .is_some());
    let refused = client.claim_next(claim("cc-1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // 0: no limit (batch work such as written surveys).
    two["max_leases_per_agent"] = json!(0);
    client
        .publish_tenant(dealer_settings(two.to_string()))
        .await
        .unwrap();
    assert!(client
        .claim_next(claim("cc-1"))
        .await
        .unwrap()
        .into_inner()
        .claimed
        .is_some());
    // Out of range is refused when published, naming the field.
    two["max_leases_per_agent"] = json!(10_001);
    let bad = client
        .publish_tenant(dealer_settings(two.to_string()))
        .await
        .unwrap_err();
    assert!(bad.message().contains("max_leases_per_agent"), "{bad:?}");
    system.stop().await;
}
