//! The analytics service: read models for supervisors and BI dashboards, fed over gRPC by
//! the other services' event feeds.
//!
//! So far it keeps one read model, the events seen per source feed and event type
//! ([`FeedActivity`]); callback and complaint metrics arrive with their own issue.

use std::collections::BTreeMap;

use callback_eventstore::{EventStore, Projection, RecordedEvent};
use callback_feed::{ConsumerProgress, HostError, RemoteConsumer, ServiceHost};
use callback_kit::grpc::{self, GrpcError};
use callback_kit::{Config, ServiceKind, Shutdown};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::net::TcpListener;

pub const KIND: ServiceKind = ServiceKind::Analytics;

/// Stream categories this service owns: the supervisors' spot-check samples (抽查).
pub const CATEGORIES: &[&str] = &["spot_check"];

/// The services whose feeds analytics consumes.
pub const SOURCES: [ServiceKind; 3] = [
    ServiceKind::Scheduling,
    ServiceKind::CallLogging,
    ServiceKind::ComplaintRouting,
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error("event log: {0}")]
    Store(#[from] callback_eventstore::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub fn migrator() -> sqlx::migrate::Migrator {
    callback_eventstore::shared_database(sqlx::migrate!("./migrations"))
}

/// Serves the analytics service and runs its feed consumers until `shutdown`.
pub async fn serve(
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let (host, consumers) = start(pool, &config, shutdown.clone()).await?;
    host.serve(listener, shutdown).await?;
    for (handle, _) in consumers {
        let _ = handle.await;
    }
    Ok(())
}

/// Prepares the service and starts its consumers; exposed for tests that watch progress.
pub async fn start(
    pool: PgPool,
    config: &Config,
    shutdown: Shutdown,
) -> Result<
    (
        ServiceHost,
        Vec<(tokio::task::JoinHandle<()>, ConsumerProgress)>,
    ),
    Error,
> {
    let host = ServiceHost::start(KIND, pool.clone(), CATEGORIES).await?;
    migrator().run(&pool).await?;
    let mut consumers = Vec::new();
    for source in SOURCES {
        let channel = grpc::channel(config.url(source))?;
        let consumer = RemoteConsumer::new(channel, &[]);
        consumers.push(consumer.spawn(
            host.store.clone(),
            FeedActivity::new(source),
            shutdown.clone(),
        ));
    }
    Ok((host, consumers))
}

/// Counts events per source feed, category and type.
pub struct FeedActivity {
    source: ServiceKind,
    name: String,
}

impl FeedActivity {
    pub fn new(source: ServiceKind) -> Self {
        Self {
            source,
            name: format!("analytics.feed_activity.{}", source.name()),
        }
    }
}

impl Projection for FeedActivity {
    type Error = Error;

    fn name(&self) -> &str {
        &self.name
    }

    /// Folds the batch in memory and writes each changed row once.
    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        let mut counts: BTreeMap<(&str, &str), (i64, DateTime<Utc>)> = BTreeMap::new();
        for event in events {
            let entry = counts
                .entry((event.category.as_str(), event.event_type.as_str()))
                .or_insert((0, event.recorded_at));
            entry.0 += 1;
            entry.1 = entry.1.max(event.recorded_at);
        }
        for ((category, event_type), (n, last)) in counts {
            sqlx::query(
                "INSERT INTO analytics_feed_activity (source, category, event_type, events, last_recorded_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (source, category, event_type) DO UPDATE SET \
                   events = analytics_feed_activity.events + EXCLUDED.events, \
                   last_recorded_at = greatest(analytics_feed_activity.last_recorded_at, EXCLUDED.last_recorded_at)",
            )
            .bind(self.source.name())
            .bind(category)
            .bind(event_type)
            .bind(n)
            .bind(last)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// One row of the feed activity read model.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ActivityRow {
    pub source: String,
    pub category: String,
    pub event_type: String,
    pub events: i64,
    pub last_recorded_at: DateTime<Utc>,
}

/// The whole feed activity read model, in key order.
pub async fn feed_activity(pool: &PgPool) -> Result<Vec<ActivityRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT source, category, event_type, events, last_recorded_at FROM analytics_feed_activity \
         ORDER BY source, category, event_type",
    )
    .fetch_all(pool)
    .await?)
}

/// Clears the read model and its checkpoints in one transaction; the consumers then replay
/// the feeds from the start. Run with the service stopped.
pub async fn reset_read_models(store: &EventStore) -> Result<(), Error> {
    let mut tx = store.pool().begin().await?;
    sqlx::query("DELETE FROM analytics_feed_activity")
        .execute(&mut *tx)
        .await?;
    for source in SOURCES {
        store
            .reset_checkpoint(&mut tx, FeedActivity::new(source).name())
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
