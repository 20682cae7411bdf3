//! The analytics service: exact, reproducible metrics for supervisors and BI dashboards, from
//! read models fed over gRPC by the other services' event feeds.
//!
//! - [`facts`]: the fact tables (callbacks, answers, complaints, honesty flags), each consumer
//!   folding a batch in memory and writing it once with its checkpoint;
//! - [`report`]: report definitions (dimensions, metrics, checks, SQL), see `docs/METRICS.md`;
//! - [`settings`]: analytics settings and the deterministic spot-check sample;
//! - [`app`] and [`grpc`]: the `callback.v1.Analytics` API;
//! - [`FeedActivity`]: events seen per source feed and type (an operational read model).

pub mod app;
mod copy;
mod error;
pub mod facts;
pub mod grpc;
pub mod report;
pub mod settings;

use std::collections::BTreeMap;

use callback_eventstore::{BatchProjection, EventStore, Filter, Projection, RecordedEvent};
use callback_feed::RemoteConsumer;
use callback_host::{Context, HostError, Service};
use callback_kit::grpc::Router;
use callback_kit::ServiceKind;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;

pub use error::{Error, Result};

pub const KIND: ServiceKind = ServiceKind::Analytics;

/// Stream categories this service owns: its settings, and the supervisors' spot-check samples
/// (抽查; reserved: samples are computed deterministically, not stored).
pub const CATEGORIES: &[&str] = callback_contracts::analytics::CATEGORIES;

/// The services whose feeds analytics consumes.
pub const SOURCES: [ServiceKind; 3] = [
    ServiceKind::Scheduling,
    ServiceKind::CallLogging,
    ServiceKind::ComplaintRouting,
];

pub fn migrator() -> sqlx::migrate::Migrator {
    callback_eventstore::shared_database(sqlx::migrate!("./migrations"))
}

/// The analytics service, declared for the host (`callback_host::serve`).
pub struct AnalyticsService;

impl Service for AnalyticsService {
    const KIND: ServiceKind = KIND;
    const CATEGORIES: &'static [&'static str] = CATEGORIES;
    const APIS: &'static [&'static str] = &["callback.v1.Analytics"];
    const TABLES: &'static [&'static str] = &["an\\_%", "analytics\\_feed\\_activity"];
    type App = app::Analytics;

    fn migrator() -> sqlx::migrate::Migrator {
        migrator()
    }

    /// "Now" bounds which callbacks are due; tests use simulated time.
    fn open(ctx: &Context) -> Result<app::Analytics, HostError> {
        Ok(app::Analytics::new(ctx.store.clone(), ctx.clock.clone()))
    }

    /// The fact tables and the feed activity, each from its source's feed.
    fn spawn_tasks(_app: &app::Analytics, ctx: &Context) -> Result<Vec<JoinHandle<()>>, HostError> {
        let mut tasks = Vec::new();
        for source in SOURCES {
            let (task, _) = RemoteConsumer::new(ctx.channel(source)?, &[]).spawn(
                ctx.store.clone(),
                FeedActivity::new(source),
                ctx.shutdown.clone(),
            );
            tasks.push(task);
        }
        let store = &ctx.store;
        let shutdown = &ctx.shutdown;
        let scheduling = RemoteConsumer::new(
            ctx.channel(ServiceKind::Scheduling)?,
            &facts::SCHEDULING_CATEGORIES,
        )
        .with_event_types(&facts::SCHEDULING_EVENT_TYPES)
        .with_max_batch(facts::BATCH)
        .spawn_batched(store.clone(), facts::SchedulingFacts, shutdown.clone());
        let call_logging = RemoteConsumer::new(
            ctx.channel(ServiceKind::CallLogging)?,
            &facts::CALL_LOGGING_CATEGORIES,
        )
        .with_event_types(&facts::CALL_LOGGING_EVENT_TYPES)
        .with_max_batch(facts::BATCH)
        .spawn_batched(store.clone(), facts::CallLoggingFacts, shutdown.clone());
        let complaints = RemoteConsumer::new(
            ctx.channel(ServiceKind::ComplaintRouting)?,
            &facts::COMPLAINT_CATEGORIES,
        )
        .with_max_batch(facts::BATCH)
        .spawn_batched(store.clone(), facts::ComplaintFacts, shutdown.clone());
        tasks.extend([scheduling.0, call_logging.0, complaints.0]);
        Ok(tasks)
    }

    fn routes(app: app::Analytics, router: Router) -> Router {
        router.add_service(grpc::service(app))
    }
}

/// The names of every consumer whose checkpoint a rebuild resets.
fn consumer_names() -> Vec<String> {
    let mut names: Vec<String> = SOURCES
        .iter()
        .map(|source| FeedActivity::new(*source).name().to_owned())
        .collect();
    names.extend([
        facts::SchedulingFacts.name().to_owned(),
        facts::CallLoggingFacts.name().to_owned(),
        facts::ComplaintFacts.name().to_owned(),
    ]);
    names
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

/// Clears every read model and checkpoint in one transaction and re-projects the service's
/// own settings from the log; the consumers then replay the feeds from the start. Run with the
/// service stopped.
pub async fn reset_read_models(store: &EventStore) -> Result<(), Error> {
    // The replay first waits for older transactions; it is opened before the reset's own
    // transaction, which would otherwise be one of them.
    let mut replay = store
        .replay(Filter::categories([
            callback_contracts::analytics::ANALYTICS_SETTINGS,
        ]))
        .await?;
    let mut tx = store.pool().begin().await?;
    sqlx::query(
        "TRUNCATE analytics_feed_activity, an_tenants, an_settings, an_callbacks, an_questionnaire_items, \
         an_answers, an_complaints, an_honesty_flags",
    )
    .execute(&mut *tx)
    .await?;
    for name in consumer_names() {
        store.reset_checkpoint(&mut tx, &name).await?;
    }
    while let Some(events) = replay.next_page().await? {
        for event in &events {
            let published: app::SettingsPublished =
                callback_kit::events::decode(event).map_err(|e| Error::Corrupt(e.to_string()))?;
            app::project_settings(&mut tx, &published, event.stream_version as u64).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
