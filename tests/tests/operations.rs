//! What an operator sees: the metrics endpoint after real traffic (with another database on the
//! same server holding a transaction open), readiness, and that every metric the shipped
//! dashboard and alert rules use is one the services export.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{IngestBusinessEventRequest, Subject};
use callback_tests::wire::http;
use callback_tests::{eventually, System};
use sqlx::{ConnectOptions, Connection};

const TENANT: &str = "ops-hospital";

/// Every `callback_...` name in a file of `deploy/`.
fn metric_names(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/../deploy/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("callback_") {
        let start = i + found;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if before_ok {
            names.insert(text[start..end].to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_cover_the_dashboard_and_the_alerts() {
    let system = System::start(&ServiceKind::ALL).await;
    let (addr, _server) =
        callback_kit::metrics::spawn("127.0.0.1:0".parse().unwrap(), system.shutdown.clone())
            .await
            .unwrap();
    let base = format!("http://{addr}");

    // Traffic: a tenant, a policy, facts, a claim.
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    callback_tests::publish_round_the_clock_discharges(&mut scheduling, TENANT).await;
    for n in 0..3 {
        scheduling
            .ingest_business_event(IngestBusinessEventRequest {
                tenant_id: TENANT.into(),
                source: "his".into(),
                source_event_id: format!("ops-{n}"),
                event_type: "patient.discharged".into(),
                occurred_at: Some(callback_kit::wire::timestamp(
                    chrono::Utc::now() - chrono::Duration::hours(1),
                )),
                subject: Some(Subject {
                    subject_id: format!("P-{n}"),
                    name: "张伟".into(),
                    phones: vec!["13912345678".into()],
                    ..Default::default()
                }),
                attributes_json: "{}".into(),
            })
            .await
            .unwrap();
    }
    callback_tests::claim(&mut scheduling, TENANT, "nurse-1")
        .await
        .expect("a due callback");
    // A refused call is counted with its code.
    let refused = scheduling
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: TENANT.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Ready once every service serves and every consumer caught up once.
    eventually(Duration::from_secs(30), "readiness", || {
        let url = format!("{base}/readyz");
        async move { (http("GET", &url, &[], Vec::new()).await.status == 200).then_some(()) }
    })
    .await;
    assert_eq!(
        http("GET", &format!("{base}/healthz"), &[], Vec::new())
            .await
            .status,
        200
    );

    // Another database on the same server holds a transaction (with an id) open.
    let other = callback_testkit::TestDb::new().await;
    let mut holder = other.options.clone().connect().await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut holder)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = String::from_utf8(
        http("GET", &format!("{base}/metrics"), &[], Vec::new())
            .await
            .body,
    )
    .unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
    };
    assert!(value("callback_grpc_requests_total{code=\"OK\",method=\"callback.v1.Scheduling/IngestBusinessEvent\",service=\"scheduling\"}") >= 3.0);
    assert!(value("callback_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"callback.v1.Scheduling/IngestBusinessEvent\",service=\"scheduling\"}") >= 1.0);
    assert!(
        value(
            "callback_events_appended_total{category=\"callback\",event_type=\"CallbackClaimed\"}"
        ) >= 1.0
    );
    assert!(value("callback_events_appended_total{category=\"callback\",event_type=\"CallbackScheduled\"}") >= 3.0);
    assert_eq!(
        value(&format!(
            "callback_queue_callbacks{{state=\"due\",tenant=\"{TENANT}\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            "callback_queue_callbacks{{state=\"claimed\",tenant=\"{TENANT}\"}}"
        )),
        1.0
    );
    assert!(
        value("callback_db_oldest_transaction_seconds") >= 1.0,
        "the open transaction elsewhere is seen"
    );
    assert!(value("callback_db_pool_max_connections{service=\"scheduling\"}") >= 1.0);
    assert!(
        text.contains("callback_feed_consumer_lag_seconds{consumer=\"scheduling.outcomes\"}"),
        "{text}"
    );
    assert!(
        text.contains("callback_feed_consumer_lag_events{consumer="),
        "{text}"
    );
    assert!(value("callback_ready{service=\"scheduling\"}") == 1.0);
    // No personal data in any label or value.
    assert!(
        !text.contains("张伟") && !text.contains("13912345678") && !text.contains("P-1"),
        "{text}"
    );

    // Every metric the dashboard and the alerts use is exported.
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let used: BTreeSet<String> = metric_names("grafana/callback-dashboard.json")
        .into_iter()
        .chain(metric_names("prometheus/alerts.yml"))
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "used in deploy/ but not exported: {missing:?}"
    );

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    system.stop().await;
}
