//! The webhooks under `/webhooks/{tenant}`: DMS / CRM events and telephony CDRs.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use callback_rules::access::Role;
use serde_json::json;

use super::*;
use crate::app::{Gateway, Handed};
use crate::mapping::JsonSource;
use crate::webhooks;

/// A DMS / CRM event (`callback.dms.v1`).
pub(super) async fn dms(
    State(gateway): State<Gateway>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        check_tenant(&tenant)?;
        let sender = signed(&gateway, &headers, &tenant, &body, &[Role::Integration], "webhook/dms").await?;
        let document = parse_json(&body)?;
        let envelope = webhooks::envelope(&document).map_err(Refused::unprocessable)?;
        let published = tenant_settings(&gateway, &tenant).await?;
        let mapping = published.settings.webhook_mapping(&envelope.event).ok_or_else(|| {
            Refused::new(StatusCode::UNPROCESSABLE_ENTITY, "event", "has no mapping (vehicle.sold, repair_order.closed, insurance.renewal_due, or one in the tenant's settings)")
        })?;
        let fact = mapping
            .apply(&JsonSource(&document), published.settings.time_zone())
            .map_err(Refused::unprocessable)?;
        let handed = gateway.ingest(&tenant, &crate::mapping::source_name("dms", &[&sender]), &envelope.event_id, fact).await;
        let status = handed_status(&handed)?;
        let (duplicate, scheduled) = match handed {
            Handed::Accepted { duplicate, scheduled } => (duplicate, scheduled),
            _ => (false, 0),
        };
        Ok(webhook_json(status, json!({"status": "accepted", "duplicate": duplicate, "callbacks_scheduled": scheduled})))
    }
    .await;
    result.unwrap_or_else(Refused::webhook)
}

/// A call detail record (Asterisk or FreeSWITCH JSON).
pub(super) async fn telephony(
    State(gateway): State<Gateway>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        check_tenant(&tenant)?;
        signed(
            &gateway,
            &headers,
            &tenant,
            &body,
            &[Role::Integration, Role::Middleware],
            "webhook/telephony",
        )
        .await?;
        let document = parse_json(&body)?;
        let published = tenant_settings(&gateway, &tenant).await?;
        let record = webhooks::call_record(&document, published.settings.time_zone())
            .map_err(Refused::unprocessable)?;
        let handed = gateway.telephony(&tenant, record).await;
        let status = handed_status(&handed)?;
        let duplicate = matches!(
            handed,
            Handed::Accepted {
                duplicate: true,
                ..
            }
        );
        Ok(webhook_json(
            status,
            json!({"status": "accepted", "duplicate": duplicate}),
        ))
    }
    .await;
    result.unwrap_or_else(Refused::webhook)
}
