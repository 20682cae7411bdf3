//! The call-logging service: the record (回访记录) of every call attempt, questionnaires,
//! telephony records and honesty checks.
//!
//! So far: questionnaires ([`domain`]) and `LogCallAttempt`, which checks the lease with the
//! scheduling service and records the attempt as events that scheduling consumes. Telephony
//! records with honesty flags; private (masked, audited) reads are still to come.

use callback_feed::{HostError, ServiceHost};
use callback_kit::{Config, ServiceKind, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub mod app;
pub mod domain;
mod error;
pub mod facts;
pub mod grpc;
pub mod scheduling_client;

pub use error::{Error, Result};

pub const KIND: ServiceKind = ServiceKind::CallLogging;

/// Stream categories this service owns (and serves on its feed).
pub const CATEGORIES: &[&str] = callback_contracts::call_logging::CATEGORIES;

/// Serves the call-logging service on `listener` until `shutdown`.
pub async fn serve(
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), HostError> {
    let host = ServiceHost::start(KIND, pool.clone(), CATEGORIES).await?;
    migrator()
        .run(&pool)
        .await
        .map_err(|e| HostError::Store(callback_eventstore::Error::Migrate(e)))?;
    let scheduling = callback_kit::grpc::channel(config.url(ServiceKind::Scheduling))?;
    let (facts, _) = callback_feed::RemoteConsumer::new(scheduling.clone(), &facts::CATEGORIES)
        .with_event_types(&facts::EVENT_TYPES)
        .spawn(
            host.store.clone(),
            facts::SchedulingFacts::new(host.store.clone()),
            shutdown.clone(),
        );
    let app = app::CallLogging::new(
        host.store.clone(),
        std::sync::Arc::new(scheduling_client::GrpcScheduling::new(scheduling)),
    );
    let host = host.route(&["callback.v1.CallLogging"], |router| {
        router.add_service(grpc::service(app))
    });
    let served = host.serve(listener, shutdown).await;
    let _ = facts.await;
    Ok(served?)
}

pub fn migrator() -> sqlx::migrate::Migrator {
    callback_eventstore::shared_database(sqlx::migrate!("./migrations"))
}
