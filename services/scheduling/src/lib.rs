//! The scheduling service: turns business facts from source systems into callbacks that are
//! due at the right time, hands each to one agent, and follows it to an end.
//!
//! - [`domain`]: the pure rules (policies, calendars via `callback-calendar`, the callback
//!   lifecycle);
//! - [`app`]: commands and queries, each writing events and projection rows in one transaction;
//! - [`grpc`]: the `callback.v1.Scheduling` API.

pub mod app;
pub mod demo;
pub mod domain;
mod error;
pub mod grpc;
pub mod outcomes;

pub use error::{Error, Result};

use callback_contracts::call_logging::CallAttemptLogged;
use callback_contracts::EventContract;
use callback_feed::{HostError, ServiceHost};
use callback_kit::{Config, ServiceKind, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub const KIND: ServiceKind = ServiceKind::Scheduling;

/// Stream categories this service owns (and serves on its feed).
pub const CATEGORIES: &[&str] = callback_contracts::scheduling::CATEGORIES;

/// How often the deadline watch runs.
const DEADLINE_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves the scheduling service on `listener` until `shutdown`, on the system clock.
pub async fn serve(
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), HostError> {
    serve_with_clock(
        pool,
        listener,
        config,
        shutdown,
        std::sync::Arc::new(callback_rules::SystemClock),
    )
    .await
}

/// Serves with the given clock (tests and demos run on simulated time).
pub async fn serve_with_clock(
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    clock: std::sync::Arc<dyn callback_rules::Clock>,
) -> Result<(), HostError> {
    let host = ServiceHost::start(KIND, pool, CATEGORIES).await?;
    let app = open(host.store.clone(), clock).await?;
    let watch = tokio::spawn(deadline_watch(app.clone(), shutdown.clone()));
    let call_logging = callback_kit::grpc::channel(config.url(ServiceKind::CallLogging))?;
    let (outcomes, _) =
        callback_feed::RemoteConsumer::new(call_logging, &[CallAttemptLogged::CATEGORY])
            .with_event_types(&[CallAttemptLogged::EVENT_TYPE])
            .spawn(
                host.store.clone(),
                outcomes::OutcomeConsumer::new(app.clone()),
                shutdown.clone(),
            );
    let host = host.route(&["callback.v1.Scheduling"], |router| {
        router.add_service(grpc::service(app))
    });
    let served = host.serve(listener, shutdown).await;
    let _ = watch.await;
    let _ = outcomes.await;
    Ok(served?)
}

/// Opens the service's state on `store` (whose categories are registered): runs the
/// scheduling migrations and returns the application on `clock`.
pub async fn open(
    store: callback_eventstore::EventStore,
    clock: std::sync::Arc<dyn callback_rules::Clock>,
) -> Result<app::Scheduling, callback_eventstore::Error> {
    migrator().run(store.pool()).await?;
    Ok(app::Scheduling::new(store, clock))
}

pub fn migrator() -> sqlx::migrate::Migrator {
    callback_eventstore::shared_database(sqlx::migrate!("./migrations"))
}

/// The durable deadline timer: callbacks whose window closed become lost. Timers are the
/// open callbacks' deadlines in the projection (derived from events), so a restart misses none.
async fn deadline_watch(app: app::Scheduling, shutdown: Shutdown) {
    shutdown
        .every(DEADLINE_SWEEP_EVERY, || async {
            match app.sweep_deadlines().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(lost = n, "deadline watch: callbacks lost"),
                Err(error) => tracing::warn!(%error, "deadline watch failed; retrying"),
            }
        })
        .await;
}
