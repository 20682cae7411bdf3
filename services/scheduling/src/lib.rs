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
use callback_host::{Context, HostError, Service};
use callback_kit::grpc::Router;
use callback_kit::{ServiceKind, Shutdown};
use tokio::task::JoinHandle;

pub const KIND: ServiceKind = ServiceKind::Scheduling;

/// Stream categories this service owns (and serves on its feed).
pub const CATEGORIES: &[&str] = callback_contracts::scheduling::CATEGORIES;

/// How often the deadline watch runs.
const DEADLINE_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// The scheduling service, declared for the host (`callback_host::serve`).
pub struct SchedulingService;

impl Service for SchedulingService {
    const KIND: ServiceKind = KIND;
    const CATEGORIES: &'static [&'static str] = CATEGORIES;
    const APIS: &'static [&'static str] = &["callback.v1.Scheduling"];
    const TABLES: &'static [&'static str] = &["sched\\_%"];
    type App = app::Scheduling;

    fn migrator() -> sqlx::migrate::Migrator {
        migrator()
    }

    fn open(ctx: &Context) -> Result<app::Scheduling, HostError> {
        Ok(app::Scheduling::new(
            ctx.store.clone(),
            ctx.vault.clone(),
            ctx.clock.clone(),
        ))
    }

    /// The deadline watch, and the outcomes from call-logging's feed.
    fn spawn_tasks(app: &app::Scheduling, ctx: &Context) -> Result<Vec<JoinHandle<()>>, HostError> {
        // One instance sweeps at a time (its writes check versions, so an overlap changes
        // nothing).
        let app_for_watch = app.clone();
        let watch = callback_kit::exclusive::spawn(
            ctx.store.pool().clone(),
            "scheduling.deadline_watch".into(),
            ctx.shutdown.clone(),
            move |stop| deadline_watch(app_for_watch.clone(), stop),
        );
        let (outcomes, _) = callback_feed::RemoteConsumer::new(
            ctx.channel(ServiceKind::CallLogging)?,
            &[CallAttemptLogged::CATEGORY],
        )
        .with_event_types(&[CallAttemptLogged::EVENT_TYPE])
        .spawn(
            ctx.store.clone(),
            outcomes::OutcomeConsumer::new(app.clone()),
            ctx.shutdown.clone(),
        );
        register_queue_metrics(ctx.store.pool().clone());
        // Tenant settings published through any instance reach this one's cache.
        let app_for_cache = app.clone();
        let invalidation = callback_kit::invalidate::spawn(
            ctx.store.clone(),
            &[callback_contracts::scheduling::TENANT],
            ctx.shutdown.clone(),
            move |event| {
                if let Some(tenant) = callback_kit::invalidate::tenant_of(event) {
                    app_for_cache.forget_tenant(&tenant);
                }
            },
        );
        Ok(vec![watch, outcomes, invalidation])
    }

    fn routes(app: app::Scheduling, router: Router) -> Router {
        router.add_service(grpc::service(app))
    }
}

/// `callback_queue_callbacks{tenant, state}`: callbacks waiting and due now (`due`), under a
/// lease (`claimed`), and open past their deadline (`overdue`),
/// counted at every scrape (bounded by the scrape's statement timeout).
fn register_queue_metrics(pool: sqlx::PgPool) {
    callback_kit::metrics::register_refresh(std::sync::Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let rows: Option<Vec<(String, i64, i64, i64)>> = callback_kit::metrics::bounded(&pool, |conn| {
                Box::pin(
                    sqlx::query_as(
                        "SELECT tenant_id, count(*) FILTER (WHERE status = 'scheduled' AND due_at <= now()), \
                                count(*) FILTER (WHERE status = 'claimed'), count(*) FILTER (WHERE deadline < now()) \
                         FROM sched_callbacks WHERE status IN ('scheduled', 'claimed') GROUP BY tenant_id",
                    )
                    .fetch_all(conn),
                )
            })
            .await;
            let Some(rows) = rows else { return };
            let gauge = &callback_kit::metrics::families().queue_callbacks;
            gauge.reset();
            for (tenant, due, claimed, overdue) in rows {
                gauge.with_label_values(&[&tenant, "due"]).set(due);
                gauge.with_label_values(&[&tenant, "claimed"]).set(claimed);
                gauge.with_label_values(&[&tenant, "overdue"]).set(overdue);
            }
        })
    }));
}

/// Opens the service's state on `store` (whose categories are registered): runs the
/// scheduling migrations and returns the application on `clock`.
pub async fn open(
    store: callback_eventstore::EventStore,
    vault: callback_vault::Vault,
    clock: std::sync::Arc<dyn callback_rules::Clock>,
) -> Result<app::Scheduling, callback_eventstore::Error> {
    migrator().run(store.pool()).await?;
    Ok(app::Scheduling::new(store, vault, clock))
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
