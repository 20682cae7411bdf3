//! The integration gateway: HL7 v2 over MLLP, FHIR R4 REST, dealer DMS / CRM and telephony
//! webhooks in; notifications out. It turns what hospitals' and dealers' systems send into the
//! facts and records the core services already understand (through their gRPC APIs, so each
//! stays the one writer of its streams), and tells the sender the truth: an HL7 AA, a 201, only
//! once the fact is committed.
//!
//! - Pure: [`mapping`] (mapping as data), [`hl7`] (parse, default mappings, ACKs), [`mllp`]
//!   (framing), [`fhir`], [`webhooks`] (signatures, DMS schema, CDRs), [`settings`];
//! - [`app`]: settings (published, projected, cached), secrets, handing facts on;
//! - [`mllp_server`], [`http`]: the listeners; [`notify`]: the notification outbox and its
//!   delivery worker; [`grpc`]: the `callback.v1.IntegrationGateway` API (settings, dead
//!   letters).

pub mod app;
mod error;
pub mod fhir;
pub mod grpc;
pub mod hl7;
pub mod http;
pub mod mapping;
pub mod mllp;
pub mod mllp_server;
pub mod notify;
pub mod settings;
mod tls;
pub mod webhooks;

use callback_contracts::call_logging::{HonestyFlagRaised, CALL_ATTEMPT};
use callback_contracts::complaint_routing::{ComplaintEvent, COMPLAINT};
use callback_contracts::integration_gateway::{
    IntegrationSettingsPublished, NotificationDeadLettered, NotificationDelivered,
    NotificationRequeued,
};
use callback_contracts::scheduling::{CallbackEvent, CALLBACK};
use callback_eventstore::{EventStore, Filter};
use callback_feed::RemoteConsumer;
use callback_host::{Context, HostError, Service};
use callback_kit::grpc::Router;
use callback_kit::ServiceKind;
use tokio::task::JoinHandle;

pub use error::{Error, Result};

pub const KIND: ServiceKind = ServiceKind::IntegrationGateway;

pub fn migrator() -> sqlx::migrate::Migrator {
    callback_eventstore::shared_database(sqlx::migrate!("./migrations"))
}

/// The integration gateway, declared for the host (`callback_host::serve`).
pub struct IntegrationGatewayService;

fn setup(what: &str, error: impl std::fmt::Display) -> HostError {
    HostError::Setup(format!("integration gateway: {what}: {error}"))
}

/// Binds `addr` now, so a taken port stops the start.
fn bind(addr: std::net::SocketAddr, what: &str) -> Result<tokio::net::TcpListener, HostError> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| setup(&format!("cannot listen on {addr} ({what})"), e))?;
    listener.set_nonblocking(true).map_err(|e| setup(what, e))?;
    tokio::net::TcpListener::from_std(listener).map_err(|e| setup(what, e))
}

impl Service for IntegrationGatewayService {
    const KIND: ServiceKind = KIND;
    const CATEGORIES: &'static [&'static str] = callback_contracts::integration_gateway::CATEGORIES;
    const APIS: &'static [&'static str] = &["callback.v1.IntegrationGateway"];
    const TABLES: &'static [&'static str] = &["ig\\_%"];
    type App = app::Gateway;

    fn migrator() -> sqlx::migrate::Migrator {
        migrator()
    }

    fn open(ctx: &Context) -> Result<app::Gateway, HostError> {
        let secrets = app::Secrets::load(ctx.config.integration.secrets_file.as_deref())
            .map_err(HostError::Setup)?;
        Ok(app::Gateway::new(
            ctx.store.clone(),
            ctx.clock.clone(),
            ctx.channel(ServiceKind::Scheduling)?,
            ctx.channel(ServiceKind::CallLogging)?,
            secrets,
            ctx.config.security.clone(),
            ctx.config.integration.clone(),
        ))
    }

    /// The MLLP and HTTP listeners, the notification queues (one per source feed) and the
    /// delivery worker.
    fn spawn_tasks(
        gateway: &app::Gateway,
        ctx: &Context,
    ) -> Result<Vec<JoinHandle<()>>, HostError> {
        let config = &ctx.config.integration;
        let security = &ctx.config.security;
        let mllp_tls = match (&security.tls, config.mllp_tls) {
            (Some(tls), true) => {
                Some(tls::server_config(tls, true).map_err(|e| setup("MLLP TLS", e))?)
            }
            _ => None,
        };
        let http_tls = match &security.tls {
            Some(tls) => Some(tls::server_config(tls, false).map_err(|e| setup("HTTPS", e))?),
            None => None,
        };
        let mllp = bind(config.mllp_addr, "CALLBACK_MLLP_ADDR")?;
        let http = bind(config.http_addr, "CALLBACK_INTEGRATION_HTTP_ADDR")?;
        tracing::info!(mllp = %config.mllp_addr, mllp_tls = mllp_tls.is_some(), http = %config.http_addr, "integration gateway listening");
        let mut tasks = vec![
            mllp_server::spawn(gateway.clone(), mllp, mllp_tls, ctx.shutdown.clone()),
            http::spawn(gateway.clone(), http, http_tls, ctx.shutdown.clone()),
        ];
        let sources: [(ServiceKind, &[&str], &[&str]); 3] = [
            (
                ServiceKind::ComplaintRouting,
                &[COMPLAINT],
                &[ComplaintEvent::ESCALATED, ComplaintEvent::CLOCK_BREACHED],
            ),
            (ServiceKind::Scheduling, &[CALLBACK], &[CallbackEvent::LOST]),
            (
                ServiceKind::CallLogging,
                &[CALL_ATTEMPT],
                &[HonestyFlagRaised::EVENT_TYPE],
            ),
        ];
        for (source, categories, event_types) in sources {
            let (task, _) = RemoteConsumer::new(ctx.channel(source)?, categories)
                .with_event_types(event_types)
                .spawn(
                    ctx.store.clone(),
                    notify::NotificationQueue::new(source.name()),
                    ctx.shutdown.clone(),
                );
            tasks.push(task);
        }
        // Settings published through any instance reach this one's cache.
        let for_cache = gateway.clone();
        tasks.push(callback_kit::invalidate::spawn(
            ctx.store.clone(),
            &[callback_contracts::integration_gateway::INTEGRATION_SETTINGS],
            ctx.shutdown.clone(),
            move |event| {
                if let Some(tenant) = callback_kit::invalidate::tenant_of(event) {
                    for_cache.forget(&tenant);
                }
            },
        ));
        let client_tls =
            tls::client_config(security.tls.as_ref()).map_err(|e| setup("notification TLS", e))?;
        tasks.push(notify::spawn_worker(
            ctx.store.clone(),
            notify::Sender::new(client_tls, ctx.config.integration.smtp.clone()),
            gateway.clone(),
            ctx.shutdown.clone(),
        ));
        Ok(tasks)
    }

    fn routes(gateway: app::Gateway, router: Router) -> Router {
        router.add_service(grpc::service(gateway))
    }
}

/// The names of the consumers whose checkpoints a rebuild resets.
fn consumer_names() -> Vec<String> {
    ["complaint-routing", "scheduling", "call-logging"]
        .iter()
        .map(|source| {
            callback_eventstore::Projection::name(&notify::NotificationQueue::new(source))
                .to_owned()
        })
        .collect()
}

/// Clears every read model and checkpoint in one transaction and re-projects the gateway's
/// own events (settings, delivery outcomes); the consumers then queue again from the start of
/// the feeds, where already delivered or dead notifications keep their outcome. Run with the
/// service stopped.
pub async fn reset_read_models(store: &EventStore) -> Result<()> {
    let mut replay = store
        .replay(Filter::categories(
            callback_contracts::integration_gateway::CATEGORIES
                .iter()
                .copied(),
        ))
        .await?;
    let mut tx = store.pool().begin().await?;
    sqlx::query("TRUNCATE ig_settings, ig_hl7_senders, ig_subscriptions, ig_deliveries")
        .execute(&mut *tx)
        .await?;
    for name in consumer_names() {
        store.reset_checkpoint(&mut tx, &name).await?;
    }
    while let Some(events) = replay.next_page().await? {
        for event in &events {
            match event.event_type.as_str() {
                IntegrationSettingsPublished::EVENT_TYPE => {
                    let published: IntegrationSettingsPublished = decode(event)?;
                    app::project_settings(&mut tx, &published, event.stream_version as u64).await?;
                }
                NotificationDelivered::EVENT_TYPE => {
                    let e: NotificationDelivered = decode(event)?;
                    outcome(
                        &mut tx,
                        e.delivery_id,
                        &e.tenant_id,
                        &e.subscription,
                        &e.topic,
                        e.event_id,
                        "delivered",
                        e.attempts,
                        "",
                        e.at,
                    )
                    .await?;
                }
                NotificationDeadLettered::EVENT_TYPE => {
                    let e: NotificationDeadLettered = decode(event)?;
                    outcome(
                        &mut tx,
                        e.delivery_id,
                        &e.tenant_id,
                        &e.subscription,
                        &e.topic,
                        e.event_id,
                        "dead",
                        e.attempts,
                        &e.last_error,
                        e.at,
                    )
                    .await?;
                }
                NotificationRequeued::EVENT_TYPE => {
                    let e: NotificationRequeued = decode(event)?;
                    sqlx::query("UPDATE ig_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, finished_at = NULL WHERE delivery_id = $1")
                        .bind(e.delivery_id)
                        .bind(e.at)
                        .execute(&mut *tx)
                        .await?;
                }
                _ => {}
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

fn decode<T: callback_contracts::EventContract>(
    event: &callback_eventstore::RecordedEvent,
) -> Result<T> {
    callback_kit::events::decode(event).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A delivery's recorded outcome; its message is filled in when the consumer queues it again.
#[allow(clippy::too_many_arguments)]
async fn outcome(
    tx: &mut sqlx::PgConnection,
    delivery_id: uuid::Uuid,
    tenant_id: &str,
    subscription: &str,
    topic: &str,
    event_id: uuid::Uuid,
    status: &str,
    attempts: u32,
    last_error: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ig_deliveries (delivery_id, tenant_id, subscription, topic, event_id, message, status, attempts, \
           next_attempt_at, last_error, finished_at, queued_at) \
         VALUES ($1, $2, $3, $4, $5, 'null'::jsonb, $6, $7, $8, $9, $8, $8) \
         ON CONFLICT (delivery_id) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, \
           last_error = EXCLUDED.last_error, finished_at = EXCLUDED.finished_at",
    )
    .bind(delivery_id)
    .bind(tenant_id)
    .bind(subscription)
    .bind(topic)
    .bind(event_id)
    .bind(status)
    .bind(attempts as i32)
    .bind(at)
    .bind(last_error)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
