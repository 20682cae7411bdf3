//! What every service does at start: migrate the log, register the categories it owns, and
//! serve health, reflection and its event feed beside its own API until shutdown.

use callback_eventstore::EventStore;
use callback_kit::grpc::Router;
use callback_kit::grpc::{self, GrpcError};
use callback_kit::{Security, ServiceKind, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;

use callback_feed::FeedServer;

/// A service being assembled.
pub struct ServiceHost {
    pub kind: ServiceKind,
    pub store: EventStore,
    router: Router,
    health: HealthReporter,
    served: Vec<&'static str>,
    feed_shutdown: Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("event log: {0}")]
    Store(#[from] callback_eventstore::Error),
    #[error("grpc: {0}")]
    Grpc(#[from] GrpcError),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("vault: {0}")]
    Vault(#[from] callback_vault::VaultError),
    /// A service's own setup failed (a listener it binds, a file it reads).
    #[error("{0}")]
    Setup(String),
}

impl ServiceHost {
    /// Migrates the event log, registers `categories` as owned by this service and prepares
    /// a router serving health, reflection and the feed of those categories.
    pub async fn start(
        kind: ServiceKind,
        pool: PgPool,
        categories: &[&'static str],
        security: &Security,
        migrated: bool,
    ) -> Result<Self, HostError> {
        let store = if migrated {
            EventStore::open_migrated(pool).await?
        } else {
            EventStore::open(pool).await?
        };
        store.register_categories(kind.name(), categories).await?;
        // Refusals are recorded beside, not served on the feed.
        store
            .register_categories(kind.name(), &[callback_kit::security::RefusalLog::CATEGORY])
            .await?;
        let refusals = callback_kit::security::RefusalLog::new(store.clone(), kind.name());
        let (router, health) = grpc::router(kind.name(), security, Some(refusals))?;
        callback_kit::metrics::register_pool(kind.name(), store.pool().clone());
        let feed_shutdown = Shutdown::new();
        let feed = FeedServer::new(store.clone(), categories, feed_shutdown.clone());
        let router = router.add_service(feed.into_service());
        Ok(Self {
            kind,
            store,
            router,
            health,
            served: vec!["callback.v1.EventFeed"],
            feed_shutdown,
        })
    }

    /// Starts and serves a service that has nothing but its feed (yet).
    pub async fn run(
        kind: ServiceKind,
        pool: PgPool,
        categories: &[&'static str],
        security: &Security,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> Result<(), HostError> {
        let host = Self::start(kind, pool, categories, security, false).await?;
        Ok(host.serve(listener, shutdown).await?)
    }

    /// Adds the service's own gRPC services; `names` are their full names for health checks.
    pub fn route(mut self, names: &[&'static str], add: impl FnOnce(Router) -> Router) -> Self {
        self.router = add(self.router);
        self.served.extend_from_slice(names);
        self
    }

    /// Serves until shutdown, then drains.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> Result<(), GrpcError> {
        let addr = listener.local_addr().ok();
        tracing::info!(service = self.kind.name(), ?addr, "serving");
        let feed_shutdown = self.feed_shutdown.clone();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            signal.wait().await;
            feed_shutdown.trigger();
        });
        callback_kit::metrics::set_service_started(self.kind.name(), true);
        let result = grpc::serve(self.router, listener, self.health, &self.served, shutdown).await;
        callback_kit::metrics::set_service_started(self.kind.name(), false);
        tracing::info!(service = self.kind.name(), "stopped");
        result
    }
}
