//! The complaint-routing service: classifies complaints (A-E), routes them to departments,
//! runs their SLA clocks in working time with escalations, and closes the loop with a
//! verification callback asked of the scheduling service.
//!
//! - [`domain`]: the pure rules (routing rules, SLA clocks, a complaint's events);
//! - [`app`]: commands and queries, each writing events and the read-model row in one
//!   transaction; the timer sweep; callback requests to scheduling;
//! - [`feeds`]: what it consumes from call-logging's and scheduling's feeds;
//! - [`grpc`]: the `callback.v1.ComplaintRouting` API.

pub mod app;
pub mod domain;
mod error;
pub mod feeds;
pub mod grpc;
pub mod ports;
pub mod scheduling_client;

pub use error::{Error, Result};

use std::sync::Arc;

use callback_feed::RemoteConsumer;
use callback_host::{Context, HostError, Service};
use callback_kit::grpc::Router;
use callback_kit::{ServiceKind, Shutdown};
use callback_rules::Clock;
use tokio::task::JoinHandle;

pub const KIND: ServiceKind = ServiceKind::ComplaintRouting;

/// Stream categories this service owns (and serves on its feed): complaints, routing rules, and
/// complaints parked until their tenant publishes routing rules.
pub const CATEGORIES: &[&str] = callback_contracts::complaint_routing::CATEGORIES;

/// How often timers and pending callback requests are swept.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The complaint-routing service, declared for the host (`callback_host::serve`).
pub struct ComplaintRoutingService;

impl Service for ComplaintRoutingService {
    const KIND: ServiceKind = KIND;
    const CATEGORIES: &'static [&'static str] = CATEGORIES;
    const APIS: &'static [&'static str] = &["callback.v1.ComplaintRouting"];
    const TABLES: &'static [&'static str] = &["cr\\_%"];
    type App = app::ComplaintRouting;

    fn migrator() -> sqlx::migrate::Migrator {
        migrator()
    }

    /// Asks scheduling for verification callbacks over gRPC.
    fn open(ctx: &Context) -> Result<app::ComplaintRouting, HostError> {
        let scheduling = ctx.channel(ServiceKind::Scheduling)?;
        Ok(app::ComplaintRouting::new(
            ctx.store.clone(),
            ctx.vault.clone(),
            ctx.clock.clone(),
            Arc::new(scheduling_client::GrpcScheduling::new(scheduling)),
        ))
    }

    /// The timer sweep, and the facts from call-logging's and scheduling's feeds.
    fn spawn_tasks(
        app: &app::ComplaintRouting,
        ctx: &Context,
    ) -> Result<Vec<JoinHandle<()>>, HostError> {
        // One instance sweeps the timers at a time.
        let app_for_sweep = app.clone();
        let sweeper = callback_kit::exclusive::spawn(
            ctx.store.pool().clone(),
            "complaint_routing.timer_sweep".into(),
            ctx.shutdown.clone(),
            move |stop| sweep(app_for_sweep.clone(), stop),
        );
        let (from_call_logging, _) = RemoteConsumer::new(
            ctx.channel(ServiceKind::CallLogging)?,
            &feeds::CALL_LOGGING_CATEGORIES,
        )
        .with_event_types(&feeds::CALL_LOGGING_EVENT_TYPES)
        .spawn(
            ctx.store.clone(),
            feeds::CallLoggingFacts::new(app.clone()),
            ctx.shutdown.clone(),
        );
        let (from_scheduling, _) = RemoteConsumer::new(
            ctx.channel(ServiceKind::Scheduling)?,
            &feeds::SCHEDULING_CATEGORIES,
        )
        .with_event_types(&feeds::SCHEDULING_EVENT_TYPES)
        .spawn(
            ctx.store.clone(),
            feeds::SchedulingFacts::new(app.clone()),
            ctx.shutdown.clone(),
        );
        Ok(vec![sweeper, from_call_logging, from_scheduling])
    }

    fn routes(app: app::ComplaintRouting, router: Router) -> Router {
        router.add_service(grpc::service(app))
    }
}

/// Opens the service's state on `store` (whose categories are registered): runs the
/// migrations and returns the application, asking scheduling over `scheduling` (gRPC).
pub async fn open(
    store: callback_eventstore::EventStore,
    vault: callback_vault::Vault,
    clock: Arc<dyn Clock>,
    scheduling: tonic::transport::Channel,
) -> Result<app::ComplaintRouting, callback_eventstore::Error> {
    migrator().run(store.pool()).await?;
    let scheduling = Arc::new(scheduling_client::GrpcScheduling::new(scheduling));
    Ok(app::ComplaintRouting::new(store, vault, clock, scheduling))
}

pub fn migrator() -> sqlx::migrate::Migrator {
    callback_eventstore::shared_database(sqlx::migrate!("./migrations"))
}

/// The durable timers and the callback-request outbox. Both are driven by the read model,
/// which is derived from events, so a restart misses nothing.
async fn sweep(app: app::ComplaintRouting, shutdown: Shutdown) {
    shutdown
        .every(SWEEP_EVERY, || async {
            match app.sweep_timers().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(complaints = n, "timer sweep: timers fired"),
                Err(error) => tracing::warn!(%error, "timer sweep failed; retrying"),
            }
            if let Err(error) = app.request_pending_callbacks().await {
                tracing::warn!(%error, "callback requests failed; retrying");
            }
        })
        .await;
}
