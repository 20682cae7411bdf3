//! The database goes away under running services: callers get UNAVAILABLE (which clients know
//! to retry), never INTERNAL, and the services serve again once it is back.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::analytics_client::AnalyticsClient;
use callback_proto::v1::complaint_routing_client::ComplaintRoutingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    GetComplaintRequest, ListCallbacksRequest, MonthlySummaryRequest, PublishTenantRequest,
};
use callback_tests::{eventually, System};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_unavailable_not_internal_and_service_resumes() {
    let system = System::start(&[
        ServiceKind::Scheduling,
        ServiceKind::ComplaintRouting,
        ServiceKind::Analytics,
    ])
    .await;
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let mut complaints = ComplaintRoutingClient::new(system.channel(ServiceKind::ComplaintRouting));
    let mut analytics = AnalyticsClient::new(system.channel(ServiceKind::Analytics));
    let list = || ListCallbacksRequest {
        tenant_id: "h".into(),
        view: "due".into(),
        limit: 10,
        ..Default::default()
    };
    scheduling.list_callbacks(list()).await.unwrap();

    callback_tests::set_connections(&system.db.name, false).await;
    // Every kind of request, on every service: reads, writes.
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(
            scheduling
                .list_callbacks(list())
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
        );
        codes.push(
            scheduling
                .publish_tenant(PublishTenantRequest {
                    tenant_id: "h".into(),
                    settings_json: r#"{"calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "17:00"}]}}"#.into(),
                })
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
        );
        codes.push(
            complaints
                .get_complaint(GetComplaintRequest {
                    tenant_id: "h".into(),
                    complaint_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
        );
        codes.push(
            analytics
                .monthly_summary(MonthlySummaryRequest {
                    tenant_id: "h".into(),
                    month: "2026-09".into(),
                })
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
        );
    }
    assert!(
        codes.iter().all(|c| *c == Code::Unavailable),
        "while the database is gone: {codes:?}"
    );

    callback_tests::set_connections(&system.db.name, true).await;
    eventually(Duration::from_secs(60), "scheduling to serve again", || {
        let mut scheduling = scheduling.clone();
        async move { scheduling.list_callbacks(list()).await.ok().map(|_| ()) }
    })
    .await;
    system.stop().await;
}
