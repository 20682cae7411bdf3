//! Notifications: complaint escalations and SLA breaches, lost callbacks and honesty flags,
//! sent to each tenant's subscriptions (a signed generic webhook, a WeCom or DingTalk group
//! robot).
//!
//! An outbox: feed consumers queue one delivery per (subscription, event) in the transaction
//! that stores their checkpoint (so a restart neither loses nor repeats a queueing); the
//! delivery worker claims due deliveries (several replicas never take the same one), sends
//! them with no transaction open, and records the outcome with an event. A delivery's id is
//! derived from the subscription and the event, sent as `Idempotency-Key`: a receiver that
//! sees a delivery twice (the gateway killed between sending and recording) can tell.

use std::time::Duration;

use callback_contracts::call_logging::HonestyFlagRaised;
use callback_contracts::complaint_routing::ComplaintEvent;
use callback_contracts::integration_gateway::{
    NotificationDeadLettered, NotificationDelivered, NotificationRequeued,
};
use callback_contracts::scheduling::CallbackEvent;
use callback_contracts::EventContract;
use callback_eventstore::{EventStore, ExpectedVersion, Projection, RecordedEvent, StreamName};
use callback_kit::telemetry::event_metadata;
use callback_kit::Shutdown;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};

mod sender;
mod smtp;
use crate::settings::IntegrationSettings;
pub use sender::Sender;

/// Namespace of delivery ids (UUID v5 of subscription and event).
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_52d4_8f0e_4f51_9d3b_2c6e_7a10_b5e3);

/// Claimed deliveries are not offered to another worker for this long.
const CLAIM_SECONDS: i64 = 60;
/// One send's limit.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The delivery of `event_id` to `subscription` of `tenant_id`.
pub fn delivery_id(tenant_id: &str, subscription: &str, event_id: Uuid) -> Uuid {
    Uuid::new_v5(
        &DELIVERY_NAMESPACE,
        format!("{tenant_id}/{subscription}/{event_id}").as_bytes(),
    )
}

/// The topic of an event and its message (ids, times and codes; no personal data), if it
/// notifies of anything.
pub fn message_of(event: &RecordedEvent) -> Option<(&'static str, Value)> {
    let at = event.recorded_at.to_rfc3339();
    match event.event_type.as_str() {
        ComplaintEvent::ESCALATED | ComplaintEvent::CLOCK_BREACHED => {
            let complaint_id = event
                .stream_id
                .split_once('-')
                .map(|(_, id)| id)
                .unwrap_or("");
            match event.decode::<ComplaintEvent>().ok()? {
                ComplaintEvent::ComplaintEscalated { level, to, at, .. } => Some((
                    "complaint.escalated",
                    json!({"complaint_id": complaint_id, "level": level, "to": to, "at": at}),
                )),
                ComplaintEvent::ClockBreached {
                    clock,
                    breach,
                    due_at,
                    elapsed_minutes,
                    target_minutes,
                    at,
                } => Some((
                    "complaint.sla_breached",
                    json!({"complaint_id": complaint_id, "clock": clock, "breach": breach, "due_at": due_at,
                           "elapsed_minutes": elapsed_minutes, "target_minutes": target_minutes, "at": at}),
                )),
                _ => None,
            }
        }
        CallbackEvent::LOST => {
            let callback_id = event
                .stream_id
                .split_once('-')
                .map(|(_, id)| id)
                .unwrap_or("");
            match event.decode::<CallbackEvent>().ok()? {
                CallbackEvent::CallbackLost {
                    reason,
                    attempts,
                    at,
                } => Some((
                    "callback.lost",
                    json!({"callback_id": callback_id, "reason": reason, "attempts": attempts, "at": at}),
                )),
                _ => None,
            }
        }
        HonestyFlagRaised::EVENT_TYPE => {
            let flag: HonestyFlagRaised = event.decode().ok()?;
            let kind = serde_json::to_value(&flag.flag)
                .ok()?
                .get("kind")
                .cloned()
                .unwrap_or(Value::Null);
            Some((
                "attempt.honesty_flag",
                json!({"attempt_id": flag.attempt_id, "agent_id": flag.agent_id, "kind": kind, "at": at}),
            ))
        }
        _ => None,
    }
}

/// Queues deliveries for the events of one source feed.
pub struct NotificationQueue {
    name: String,
}

impl NotificationQueue {
    pub fn new(source: &str) -> Self {
        Self {
            name: format!("integration_gateway.notifications.{source}"),
        }
    }
}

impl Projection for NotificationQueue {
    type Error = Error;

    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&mut self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<()> {
        for event in events {
            let Some((topic, message)) = message_of(event) else {
                continue;
            };
            let Some(tenant_id) = event.metadata().ok().and_then(|m| m.tenant_id) else {
                continue;
            };
            queue(conn, &tenant_id, topic, event, message).await?;
        }
        Ok(())
    }
}

/// One delivery per subscription of the tenant that takes `topic` and existed when the event
/// was recorded.
async fn queue(
    conn: &mut PgConnection,
    tenant_id: &str,
    topic: &str,
    event: &RecordedEvent,
    message: Value,
) -> Result<()> {
    let row: Option<(Value,)> =
        sqlx::query_as("SELECT settings FROM ig_settings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((settings,)) = row else {
        return Ok(());
    };
    let settings: IntegrationSettings =
        serde_json::from_value(settings).map_err(|e| Error::Corrupt(e.to_string()))?;
    for subscription in settings
        .subscriptions
        .iter()
        .filter(|s| s.topics.iter().any(|t| t == topic))
    {
        let delivery_id = delivery_id(tenant_id, &subscription.name, event.event_id);
        let mut body = message.clone();
        body["topic"] = json!(topic);
        body["tenant_id"] = json!(tenant_id);
        body["delivery_id"] = json!(delivery_id);
        body["event_id"] = json!(event.event_id);
        sqlx::query(
            "INSERT INTO ig_deliveries (delivery_id, tenant_id, subscription, topic, event_id, message, next_attempt_at, queued_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $7 FROM ig_subscriptions \
             WHERE tenant_id = $2 AND name = $3 AND active_since <= $7 \
             ON CONFLICT (delivery_id) DO UPDATE SET message = EXCLUDED.message, topic = EXCLUDED.topic, \
               event_id = EXCLUDED.event_id, queued_at = EXCLUDED.queued_at \
             WHERE ig_deliveries.message = 'null'::jsonb",
        )
        .bind(delivery_id)
        .bind(tenant_id)
        .bind(&subscription.name)
        .bind(topic)
        .bind(event.event_id)
        .bind(&body)
        .bind(event.recorded_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A claimed delivery.
#[derive(sqlx::FromRow)]
struct Due {
    delivery_id: Uuid,
    tenant_id: String,
    subscription: String,
    topic: String,
    event_id: Uuid,
    message: Value,
    attempts: i32,
}

/// Sends due deliveries until `shutdown`; finishes the sends in flight first.
pub fn spawn_worker(
    store: EventStore,
    sender: Sender,
    gateway: crate::app::Gateway,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !shutdown.is_triggered() {
            let sent = match deliver_due(&store, &sender, &gateway).await {
                Ok(sent) => sent,
                Err(error) => {
                    tracing::warn!(%error, "notification delivery round failed");
                    0
                }
            };
            if sent == 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    () = shutdown.wait() => return,
                }
            }
        }
    })
}

/// One round: claims up to 16 due deliveries, sends them concurrently, records each outcome.
async fn deliver_due(
    store: &EventStore,
    sender: &Sender,
    gateway: &crate::app::Gateway,
) -> Result<usize> {
    let claimed: Vec<Due> = sqlx::query_as(
        "UPDATE ig_deliveries SET next_attempt_at = now() + make_interval(secs => $1), \
           first_attempt_at = COALESCE(first_attempt_at, now()) \
         WHERE delivery_id IN (SELECT delivery_id FROM ig_deliveries WHERE status = 'pending' AND next_attempt_at <= now() \
                               ORDER BY next_attempt_at LIMIT 16 FOR UPDATE SKIP LOCKED) \
         RETURNING delivery_id, tenant_id, subscription, topic, event_id, message, attempts",
    )
    .bind(CLAIM_SECONDS as f64)
    .fetch_all(store.pool())
    .await?;
    let count = claimed.len();
    let mut sends = tokio::task::JoinSet::new();
    for due in claimed {
        let sender = sender.clone();
        let gateway = gateway.clone();
        let store = store.clone();
        sends.spawn(async move {
            let published = gateway.settings(&due.tenant_id).await.ok();
            let subscription = published
                .as_ref()
                .and_then(|p| p.settings.subscriptions.iter().find(|s| s.name == due.subscription).cloned());
            let (outcome, max_attempts) = match subscription {
                None => (Err("the subscription no longer exists".to_owned()), 1),
                Some(subscription) => {
                    let secret = gateway.secrets().get(&due.tenant_id, &subscription.secret).map(<[u8]>::to_vec);
                    (sender.send(&subscription, secret.as_deref(), &due).await, subscription.max_attempts as i32)
                }
            };
            if let Err(error) = record(&store, &due, outcome, max_attempts).await {
                tracing::warn!(%error, delivery_id = %due.delivery_id, "notification outcome not recorded; it will be sent again");
            }
        });
    }
    while sends.join_next().await.is_some() {}
    Ok(count)
}

/// Records a delivery's outcome: delivered or dead (with an event), else scheduled again with
/// backoff (1 s, 2 s, 4 s ... at most an hour).
async fn record(
    store: &EventStore,
    due: &Due,
    outcome: std::result::Result<u16, String>,
    max_attempts: i32,
) -> Result<()> {
    let attempts = due.attempts + 1;
    let now = Utc::now();
    match outcome {
        Ok(status) => {
            let event = NotificationDelivered {
                tenant_id: due.tenant_id.clone(),
                delivery_id: due.delivery_id,
                subscription: due.subscription.clone(),
                topic: due.topic.clone(),
                event_id: due.event_id,
                attempts: attempts as u32,
                status,
                at: now,
            };
            finish(store, due, &event, "delivered", attempts, now, "").await?;
            tracing::info!(delivery_id = %due.delivery_id, topic = %due.topic, attempts, "notification delivered");
        }
        Err(error) if attempts >= max_attempts => {
            let event = NotificationDeadLettered {
                tenant_id: due.tenant_id.clone(),
                delivery_id: due.delivery_id,
                subscription: due.subscription.clone(),
                topic: due.topic.clone(),
                event_id: due.event_id,
                attempts: attempts as u32,
                last_error: error.clone(),
                at: now,
            };
            finish(store, due, &event, "dead", attempts, now, &error).await?;
            tracing::warn!(delivery_id = %due.delivery_id, topic = %due.topic, attempts, %error, "notification dead-lettered");
        }
        Err(error) => {
            let backoff = 1i64 << (attempts - 1).clamp(0, 12);
            sqlx::query(
                "UPDATE ig_deliveries SET attempts = $2, last_error = $3, \
                   next_attempt_at = now() + make_interval(secs => $4) WHERE delivery_id = $1",
            )
            .bind(due.delivery_id)
            .bind(attempts)
            .bind(&error)
            .bind(backoff.min(3600) as f64)
            .execute(store.pool())
            .await?;
            tracing::info!(delivery_id = %due.delivery_id, attempts, %error, "notification failed; retrying");
        }
    }
    Ok(())
}

/// A delivery's final outcome: its event and its row, in one transaction.
async fn finish<E: EventContract>(
    store: &EventStore,
    due: &Due,
    event: &E,
    status: &str,
    attempts: i32,
    at: DateTime<Utc>,
    last_error: &str,
) -> Result<()> {
    let stream = StreamName::new(E::CATEGORY, due.delivery_id.to_string())?;
    let new = callback_kit::events::new_event(event)
        .map_err(|e| Error::Corrupt(e.to_string()))?
        .with_metadata(event_metadata(
            Some(&due.tenant_id),
            Some("system:integration-gateway"),
        ));
    let mut tx = store.begin().await?;
    store
        .append_in(&mut tx, &stream, ExpectedVersion::Any, &[new])
        .await?;
    sqlx::query(
        "UPDATE ig_deliveries SET status = $2, attempts = $3, finished_at = $4, last_error = $5 \
         WHERE delivery_id = $1",
    )
    .bind(due.delivery_id)
    .bind(status)
    .bind(attempts)
    .bind(at)
    .bind(last_error)
    .execute(&mut *tx)
    .await?;
    store.commit(tx).await?;
    Ok(())
}

/// Puts a dead letter back in the queue.
pub async fn requeue(
    store: &EventStore,
    tenant_id: &str,
    delivery_id: Uuid,
    actor: &str,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let found: Option<String> = sqlx::query_scalar(
        "SELECT status FROM ig_deliveries WHERE delivery_id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(delivery_id)
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    match found.as_deref() {
        None => return Err(Error::NotFound("dead letter".into())),
        Some("dead") => {}
        Some(_) => {
            return Err(Error::FailedPrecondition(
                "the delivery is not a dead letter".into(),
            ))
        }
    }
    let event = NotificationRequeued {
        tenant_id: tenant_id.to_owned(),
        delivery_id,
        actor: actor.to_owned(),
        at: Utc::now(),
    };
    let new = callback_kit::events::new_event(&event)
        .map_err(|e| Error::Corrupt(e.to_string()))?
        .with_metadata(event_metadata(Some(tenant_id), Some(actor)));
    let stream = StreamName::new(NotificationRequeued::CATEGORY, delivery_id.to_string())?;
    store
        .append_in(&mut tx, &stream, ExpectedVersion::Any, &[new])
        .await?;
    sqlx::query(
        "UPDATE ig_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL WHERE delivery_id = $1",
    )
    .bind(delivery_id)
    .execute(&mut *tx)
    .await?;
    store.commit(tx).await?;
    Ok(())
}

/// A dead letter as listed.
#[derive(sqlx::FromRow)]
pub struct DeadLetter {
    pub delivery_id: Uuid,
    pub subscription: String,
    pub topic: String,
    pub event_id: Uuid,
    pub attempts: i32,
    pub last_error: String,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn dead_letters(
    store: &EventStore,
    tenant_id: &str,
    limit: i64,
) -> Result<Vec<DeadLetter>> {
    Ok(sqlx::query_as(
        "SELECT delivery_id, subscription, topic, event_id, attempts, last_error, first_attempt_at, finished_at \
         FROM ig_deliveries WHERE tenant_id = $1 AND status = 'dead' ORDER BY finished_at DESC, delivery_id LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(store.pool())
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_per_subscription_and_event() {
        let event = Uuid::from_u128(7);
        assert_eq!(delivery_id("t", "a", event), delivery_id("t", "a", event));
        assert_ne!(delivery_id("t", "a", event), delivery_id("t", "b", event));
        assert_ne!(delivery_id("t", "a", event), delivery_id("u", "a", event));
    }
}
