//! The four services start as separate gRPC servers on one PostgreSQL, serve health,
//! reflection and their feeds, exchange events over gRPC, and drain on shutdown.

#![allow(clippy::unwrap_used)]

use callback_contracts::call_logging::CallAttemptLogged;
use callback_contracts::complaint_routing::ComplaintEvent;
use callback_contracts::scheduling::CallbackEvent;
use std::time::Duration;

use callback_eventstore::{EventStore, ExpectedVersion, NewEvent, StreamName};
use callback_kit::ServiceKind;
use callback_proto::v1::event_feed_client::EventFeedClient;
use callback_proto::v1::{subscribe_response::Item, SubscribeRequest};
use callback_tests::System;

/// The services a reflection client of protocol `$version` lists (`v1`, and `v1alpha`, which
/// Python's grpcio-reflection and other tools still speak).
macro_rules! list_services {
    ($name:ident, $version:ident) => {
        async fn $name(system: &System, kind: ServiceKind) -> Vec<String> {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            let mut client = ServerReflectionClient::new(system.channel(kind));
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = client
                .server_reflection_info(tokio_stream::iter(vec![request]))
                .await
                .unwrap()
                .into_inner();
            match responses.message().await.unwrap().unwrap().message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    list.service.into_iter().map(|s| s.name).collect()
                }
                other => panic!("unexpected reflection response {other:?}"),
            }
        }
    };
}

list_services!(list_services, v1);
list_services!(list_services_v1alpha, v1alpha);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_health_reflection_and_its_feed() {
    let system = System::start(&ServiceKind::ALL).await;
    for kind in ServiceKind::ALL {
        let services = list_services(&system, kind).await;
        let without_reflection = |names: Vec<String>| -> Vec<String> {
            names
                .into_iter()
                .filter(|n| !n.starts_with("grpc.reflection."))
                .collect()
        };
        assert_eq!(
            without_reflection(list_services_v1alpha(&system, kind).await),
            without_reflection(services.clone()),
            "{}: both reflection protocols list the same services",
            kind.name()
        );
        for expected in ["callback.v1.EventFeed", "grpc.health.v1.Health"] {
            assert!(
                services.iter().any(|s| s == expected),
                "{}: {services:?}",
                kind.name()
            );
        }
        let mut health = tonic_health::pb::health_client::HealthClient::new(system.channel(kind));
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "callback.v1.EventFeed".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_delivers_caught_up_heartbeats_and_live_events_and_rejects_foreign_categories() {
    let system = System::start(&[ServiceKind::CallLogging]).await;
    let store = EventStore::open(system.db.pool.clone()).await.unwrap();
    let attempt = StreamName::new("call_attempt", "a1").unwrap();
    store
        .append(
            &attempt,
            ExpectedVersion::NoStream,
            &[NewEvent::new(CallAttemptLogged::EVENT_TYPE, &serde_json::json!({"n": 1})).unwrap()],
        )
        .await
        .unwrap();

    let mut client = EventFeedClient::new(system.channel(ServiceKind::CallLogging));
    // A category the service does not own is refused with the field named.
    let refused = client
        .subscribe(SubscribeRequest {
            categories: vec!["callback".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("categories:"),
        "{}",
        refused.message()
    );

    let mut stream = client
        .subscribe(SubscribeRequest {
            heartbeat_seconds: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut saw_event = false;
    let mut saw_caught_up = false;
    let mut saw_heartbeat = false;
    let mut saw_live = false;
    let live = NewEvent::new(CallAttemptLogged::EVENT_TYPE, &serde_json::json!({"n": 2})).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(saw_event && saw_caught_up && saw_heartbeat && saw_live) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "feed incomplete: {saw_event} {saw_caught_up} {saw_heartbeat} {saw_live}"
        );
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message.item.unwrap() {
            Item::Event(e) if e.event_id == live.event_id.to_string() => saw_live = true,
            Item::Event(e) => {
                assert_eq!(e.category, "call_attempt");
                assert_eq!(e.stream_id, "call_attempt-a1");
                saw_event = true;
            }
            Item::CaughtUp(_) => {
                saw_caught_up = true;
                store
                    .append(
                        &attempt,
                        ExpectedVersion::Exact(1),
                        std::slice::from_ref(&live),
                    )
                    .await
                    .unwrap();
            }
            Item::Heartbeat(cp) => {
                assert!(cp.transaction_id > 0);
                saw_heartbeat = true;
            }
        }
    }
    drop(stream);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_consumes_other_feeds_over_grpc_exactly_once_across_restarts_and_rebuilds() {
    let mut system = System::start(&ServiceKind::ALL).await;
    let store = EventStore::open(system.db.pool.clone()).await.unwrap();
    let append = |category: &'static str, id: String, event_type: &'static str, n: usize| {
        let store = store.clone();
        async move {
            let stream = StreamName::new(category, id).unwrap();
            let events: Vec<_> = (0..n)
                .map(|i| NewEvent::new(event_type, &serde_json::json!({ "i": i })).unwrap())
                .collect();
            store
                .append(&stream, ExpectedVersion::Any, &events)
                .await
                .unwrap();
        }
    };
    for i in 0..20 {
        append("callback", format!("c{i}"), CallbackEvent::SCHEDULED, 2).await;
        append(
            "call_attempt",
            format!("a{i}"),
            CallAttemptLogged::EVENT_TYPE,
            1,
        )
        .await;
    }
    append("complaint", "k1".into(), ComplaintEvent::FILED, 3).await;

    let expected_first = [
        (
            "call-logging",
            "call_attempt",
            CallAttemptLogged::EVENT_TYPE,
            20,
        ),
        ("complaint-routing", "complaint", ComplaintEvent::FILED, 3),
        ("scheduling", "callback", CallbackEvent::SCHEDULED, 40),
    ];
    wait_for_counts(&system, &expected_first).await;

    // Stop analytics, write more while it is down, restart: it resumes from its checkpoints
    // and applies every event exactly once.
    system.stop_service(ServiceKind::Analytics).await;
    for i in 20..50 {
        append(
            "call_attempt",
            format!("a{i}"),
            CallAttemptLogged::EVENT_TYPE,
            1,
        )
        .await;
    }
    system.start_service(ServiceKind::Analytics).await;
    // And kill a source mid-stream: the consumer reconnects with backoff.
    system.stop_service(ServiceKind::CallLogging).await;
    append(
        "call_attempt",
        "late".into(),
        CallAttemptLogged::EVENT_TYPE,
        5,
    )
    .await;
    system.start_service(ServiceKind::CallLogging).await;
    let expected_after = [
        (
            "call-logging",
            "call_attempt",
            CallAttemptLogged::EVENT_TYPE,
            55,
        ),
        ("complaint-routing", "complaint", ComplaintEvent::FILED, 3),
        ("scheduling", "callback", CallbackEvent::SCHEDULED, 40),
    ];
    wait_for_counts(&system, &expected_after).await;
    let before_rebuild = callback_analytics::feed_activity(&system.db.pool)
        .await
        .unwrap();

    // Rebuild from the log: clear the read model and checkpoints, replay, same rows.
    system.stop_service(ServiceKind::Analytics).await;
    callback_analytics::reset_read_models(&store).await.unwrap();
    assert!(callback_analytics::feed_activity(&system.db.pool)
        .await
        .unwrap()
        .is_empty());
    system.start_service(ServiceKind::Analytics).await;
    wait_for_counts(&system, &expected_after).await;
    let after_rebuild = callback_analytics::feed_activity(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(before_rebuild, after_rebuild);
    system.stop().await;
}

async fn wait_for_counts(system: &System, expected: &[(&str, &str, &str, i64)]) {
    let pool = system.db.pool.clone();
    let expected: Vec<(String, String, String, i64)> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d))
        .collect();
    let mut last = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let rows = callback_analytics::feed_activity(&pool).await.unwrap();
            let got: Vec<(String, String, String, i64)> = rows
                .into_iter()
                .map(|r| (r.source, r.category, r.event_type, r.events))
                .collect();
            if got == expected {
                return;
            }
            // Counts only ever grow towards the expectation; overshooting means a double apply.
            for g in &got {
                let limit = expected
                    .iter()
                    .find(|e| (&e.0, &e.1, &e.2) == (&g.0, &g.1, &g.2))
                    .map_or(0, |e| e.3);
                assert!(
                    g.3 <= limit,
                    "applied twice or unexpected: {got:?} vs {expected:?}"
                );
            }
            last = got;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "counts never matched: last {last:?}, expected {expected:?}"
    );
}
