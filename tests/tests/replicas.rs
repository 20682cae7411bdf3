//! Two instances of a service against one database: each feed consumer runs on exactly one of
//! them at a time (a PostgreSQL advisory lock per consumer), effects stay exactly once, and when
//! the holder stops, or its connection is killed, the other takes over within seconds.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{IngestBusinessEventRequest, Subject};
use callback_tests::{eventually, System};
use serde_json::json;

const TENANT: &str = "replica-hospital";

/// The sessions holding the lock of consumer `name` (callback_kit::exclusive).
async fn holders(pool: &sqlx::PgPool, name: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid::bigint = 1667329132 AND objid::bigint = (hashtext($1)::bigint & 4294967295) \
         ORDER BY pid",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn ingest(
    scheduling: &mut SchedulingClient<tonic::transport::Channel>,
    from: usize,
    to: usize,
) {
    for n in from..to {
        scheduling
            .ingest_business_event(IngestBusinessEventRequest {
                tenant_id: TENANT.into(),
                source: "his".into(),
                source_event_id: format!("r-{n}"),
                event_type: "patient.discharged".into(),
                occurred_at: Some(callback_kit::wire::timestamp(
                    chrono::Utc::now() - chrono::Duration::hours(1),
                )),
                subject: Some(Subject {
                    subject_id: format!("P-{n}"),
                    phones: vec!["13912345678".into()],
                    ..Default::default()
                }),
                attributes_json: "{}".into(),
            })
            .await
            .unwrap();
    }
}

/// Waits until analytics has applied exactly `n` scheduled callbacks, once each.
async fn analytics_saw(system: &System, n: i64) {
    let pool = system.db.pool.clone();
    eventually(Duration::from_secs(60), "analytics to apply every callback once", || {
        let pool = pool.clone();
        async move {
            let (facts, activity): (i64, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM an_callbacks), \
                        (SELECT sum(events)::bigint FROM analytics_feed_activity WHERE event_type = 'CallbackScheduled')",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(facts <= n && activity.unwrap_or(0) <= n, "applied twice: {facts} facts, {activity:?} counted");
            (facts == n && activity == Some(n)).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_analytics_instances_consume_once_and_take_over() {
    let mut system = System::start(&[
        ServiceKind::Scheduling,
        ServiceKind::CallLogging,
        ServiceKind::Analytics,
    ])
    .await;
    // A second analytics against the same database, on a port of its own.
    let second_shutdown = system.shutdown.child();
    let (_, second) = system
        .start_another(ServiceKind::Analytics, second_shutdown.clone())
        .await;

    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    callback_tests::publish_round_the_clock_discharges(&mut scheduling, TENANT).await;
    ingest(&mut scheduling, 0, 20).await;
    analytics_saw(&system, 20).await;
    let consumer = "analytics.scheduling_facts";
    let pool = system.db.pool.clone();
    let first_holder = eventually(Duration::from_secs(10), "one holder", || {
        let pool = pool.clone();
        async move {
            let holders = holders(&pool, consumer).await;
            (holders.len() == 1).then(|| holders[0])
        }
    })
    .await;
    let name_of = |pid: i32| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT count(*)::int FROM pg_stat_activity WHERE pid = $1",
            )
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(name_of(first_holder).await, 1);

    // The holder's connection is killed: the other instance takes over, nothing is lost or
    // applied twice.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first_holder)
        .execute(&pool)
        .await
        .unwrap();
    ingest(&mut scheduling, 20, 30).await;
    analytics_saw(&system, 30).await;
    let second_holder = eventually(Duration::from_secs(20), "a new holder", || {
        let pool = pool.clone();
        async move {
            let holders = holders(&pool, consumer).await;
            (holders.len() == 1 && holders[0] != first_holder).then(|| holders[0])
        }
    })
    .await;
    assert_ne!(second_holder, first_holder);

    // One instance stops: the other carries on.
    system.stop_service(ServiceKind::Analytics).await;
    ingest(&mut scheduling, 30, 40).await;
    analytics_saw(&system, 40).await;
    assert_eq!(holders(&pool, consumer).await.len(), 1);

    second_shutdown.trigger();
    second.await.unwrap();
    assert!(
        holders(&pool, consumer).await.is_empty(),
        "a stopped instance releases its leases"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_settings_published_through_one_instance_reach_the_other_at_once() {
    let system = System::start(&[ServiceKind::Scheduling, ServiceKind::CallLogging]).await;
    let other_shutdown = system.shutdown.child();
    let (other_url, other) = system
        .start_another(ServiceKind::Scheduling, other_shutdown.clone())
        .await;
    let mut first = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let mut other_client = SchedulingClient::new(callback_tests::harness_channel(&other_url));
    callback_tests::publish_round_the_clock_discharges(&mut first, TENANT).await;
    ingest(&mut first, 0, 2).await;
    // The first instance caches the tenant (one agent) on a claim.
    callback_tests::claim(&mut first, TENANT, "nurse-1")
        .await
        .expect("a due callback");
    let unknown = first
        .claim_next(callback_proto::v1::ClaimNextRequest {
            tenant_id: TENANT.into(),
            agent_id: "nurse-2".into(),
            ..Default::default()
        })
        .await;
    assert!(
        unknown.is_err() || unknown.unwrap().into_inner().claimed.is_none(),
        "nurse-2 is not an agent yet"
    );

    // The other instance publishes a second agent; the first sees it well before its cache's
    // time limit (30 s), through its subscription to the tenant category.
    eventually(Duration::from_secs(15), "the other instance serving", || {
        let mut client = other_client.clone();
        async move {
            client
                .publish_tenant(callback_proto::v1::PublishTenantRequest {
                    tenant_id: TENANT.into(),
                    settings_json: json!({
                        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
                        "pools": ["desk"],
                        "agents": [{"agent_id": "nurse-1", "pools": ["desk"]}, {"agent_id": "nurse-2", "pools": ["desk"]}]
                    })
                    .to_string(),
                })
                .await
                .ok()
        }
    })
    .await;
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "the first instance to know nurse-2",
        || {
            let mut client = first.clone();
            async move {
                client
                    .claim_next(callback_proto::v1::ClaimNextRequest {
                        tenant_id: TENANT.into(),
                        agent_id: "nurse-2".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().claimed)
            }
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    other_client
        .list_callbacks(callback_proto::v1::ListCallbacksRequest {
            tenant_id: TENANT.into(),
            view: "due".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    other_shutdown.trigger();
    other.await.unwrap();
    system.stop().await;
}
