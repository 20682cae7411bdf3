//! Prometheus metrics, liveness and readiness, on a plain HTTP listener of their own
//! (`CALLBACK_METRICS_ADDR`; one per process: `callbackd dev` serves all five services on one).
//!
//! Every name follows Prometheus conventions (`_total` counters, `_seconds` durations); labels
//! are services, RPC methods, status codes, stream categories and event types, consumer names
//! and tenant ids, never personal data. `docs/OPERATIONS.md` lists them; the dashboards and alert
//! rules in `deploy/` use only these (a test checks).
//!
//! Gauges that ask the database (the horizon, consumers' backlog, queue depths) are refreshed
//! when scraped, each query bounded by a statement timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use sqlx::PgPool;

use crate::shutdown::Shutdown;

mod grpc_layer;
pub use grpc_layer::{GrpcMetrics, GrpcMetricsLayer};

/// The families every service shares.
pub struct Families {
    pub registry: Registry,
    pub grpc_requests: IntCounterVec,
    pub grpc_duration: HistogramVec,
    pub events_appended: IntCounterVec,
    pub consumer_lag_seconds: GaugeVec,
    pub consumer_lag_events: IntGaugeVec,
    pub consumer_caught_up: IntGaugeVec,
    pub pool_connections: IntGaugeVec,
    pub pool_max_connections: IntGaugeVec,
    pub oldest_transaction_seconds: Gauge,
    pub ready: IntGaugeVec,
    pub queue_callbacks: IntGaugeVec,
}

#[allow(clippy::expect_used)]
static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let registry = Registry::new();
    let families = Families {
        grpc_requests: IntCounterVec::new(
            Opts::new("callback_grpc_requests_total", "gRPC requests served, by service, method and status code"),
            &["service", "method", "code"],
        )
        .expect("a valid family"),
        grpc_duration: HistogramVec::new(
            HistogramOpts::new(
                "callback_grpc_request_duration_seconds",
                "Time to the response headers of a gRPC request",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["service", "method"],
        )
        .expect("a valid family"),
        events_appended: IntCounterVec::new(
            Opts::new(
                "callback_events_appended_total",
                "Events this process appended to the log, by category and type (CallbackClaimed: claims, CallAttemptLogged: attempts, CallbackCompleted / CallbackLost: completions and losses, ClockBreached / ComplaintEscalated: SLA breaches and escalations)",
            ),
            &["category", "event_type"],
        )
        .expect("a valid family"),
        consumer_lag_seconds: GaugeVec::new(
            Opts::new(
                "callback_feed_consumer_lag_seconds",
                "Age of the newest event a feed consumer applied when it applied it (0 when it is caught up and idle)",
            ),
            &["consumer"],
        )
        .expect("a valid family"),
        consumer_lag_events: IntGaugeVec::new(
            Opts::new(
                "callback_feed_consumer_lag_events",
                "Events of the consumer's categories after its stored checkpoint (counted up to 100,000)",
            ),
            &["consumer"],
        )
        .expect("a valid family"),
        consumer_caught_up: IntGaugeVec::new(
            Opts::new("callback_feed_consumer_caught_up", "1 once the consumer has caught up with its feed"),
            &["consumer"],
        )
        .expect("a valid family"),
        pool_connections: IntGaugeVec::new(
            Opts::new("callback_db_pool_connections", "Database connections of a service's pool, by state"),
            &["service", "state"],
        )
        .expect("a valid family"),
        pool_max_connections: IntGaugeVec::new(
            Opts::new("callback_db_pool_max_connections", "The size limit of a service's pool"),
            &["service"],
        )
        .expect("a valid family"),
        oldest_transaction_seconds: Gauge::new(
            "callback_db_oldest_transaction_seconds",
            "Age of the oldest open transaction holding a transaction id anywhere on the PostgreSQL server: how long the horizon, and with it every feed, has been held back",
        )
        .expect("a valid family"),
        ready: IntGaugeVec::new(
            Opts::new("callback_ready", "1 when the service has migrated, serves, and its consumers caught up once"),
            &["service"],
        )
        .expect("a valid family"),
        queue_callbacks: IntGaugeVec::new(
            Opts::new("callback_queue_callbacks", "Open callbacks by tenant and state (due: waiting and due now; claimed: under a lease; overdue: open past the deadline)"),
            &["tenant", "state"],
        )
        .expect("a valid family"),
        registry,
    };
    let registry = &families.registry;
    registry
        .register(Box::new(families.grpc_requests.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.grpc_duration.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.events_appended.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.consumer_lag_seconds.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.consumer_lag_events.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.consumer_caught_up.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.pool_connections.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.pool_max_connections.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.oldest_transaction_seconds.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.ready.clone()))
        .expect("registered once");
    registry
        .register(Box::new(families.queue_callbacks.clone()))
        .expect("registered once");
    families
});

pub fn families() -> &'static Families {
    &FAMILIES
}

/// A gRPC request's outcome.
pub fn record_grpc(service: &str, method: &str, code: &str, elapsed: Duration) {
    let f = families();
    f.grpc_requests
        .with_label_values(&[service, method, code])
        .inc();
    f.grpc_duration
        .with_label_values(&[service, method])
        .observe(elapsed.as_secs_f64());
}

/// What a scrape refreshes from the database (queue depths of a service, say).
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A feed consumer as the metrics and readiness see it.
struct Consumer {
    categories: Vec<String>,
    event_types: Vec<String>,
    checkpoint: (i64, i64),
    caught_up_once: bool,
}

/// A consumer's categories, event types and checkpoint, to count its backlog.
type ConsumerQuery = (Vec<String>, Vec<String>, (i64, i64));

#[derive(Default)]
struct State {
    pools: BTreeMap<String, PgPool>,
    consumers: BTreeMap<String, Consumer>,
    /// Services started (migrated, serving) and not stopped.
    services: BTreeMap<String, bool>,
    refreshers: Vec<Refresh>,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Mutex::default);

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A service's pool, for the pool gauges and the database queries of a scrape.
pub fn register_pool(service: &str, pool: PgPool) {
    families()
        .pool_max_connections
        .with_label_values(&[service])
        .set(i64::from(pool.options().get_max_connections()));
    state().pools.insert(service.to_owned(), pool);
}

/// A service starts serving (`true`) or stops (`false`).
pub fn set_service_started(service: &str, started: bool) {
    state().services.insert(service.to_owned(), started);
    refresh_ready();
}

/// A gauge refreshed at every scrape.
pub fn register_refresh(refresh: Refresh) {
    state().refreshers.push(refresh);
}

/// A feed consumer starts: it counts for readiness until it has caught up once.
pub fn register_consumer(name: &str, categories: &[String], event_types: &[String]) {
    state()
        .consumers
        .entry(name.to_owned())
        .or_insert(Consumer {
            categories: categories.to_vec(),
            event_types: event_types.to_vec(),
            checkpoint: (0, 0),
            caught_up_once: false,
        });
    families()
        .consumer_caught_up
        .with_label_values(&[name])
        .set(0);
}

/// A consumer applied events up to `checkpoint`; `newest` is when the newest of them was
/// recorded (`None`: nothing new, caught up and idle).
pub fn consumer_applied(
    name: &str,
    checkpoint: (i64, i64),
    newest: Option<chrono::DateTime<chrono::Utc>>,
    caught_up: bool,
) {
    let lag = newest.map_or(0.0, |at| {
        (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    families()
        .consumer_lag_seconds
        .with_label_values(&[name])
        .set(lag);
    let mut changed = false;
    if let Some(consumer) = state().consumers.get_mut(name) {
        consumer.checkpoint = consumer.checkpoint.max(checkpoint);
        if caught_up && !consumer.caught_up_once {
            consumer.caught_up_once = true;
            changed = true;
        }
    }
    if changed {
        families()
            .consumer_caught_up
            .with_label_values(&[name])
            .set(1);
        refresh_ready();
    }
}

/// Set once the process has been ready: a consumer whose lease this instance takes over
/// later (another replica died) does not take the instance out of service while it catches up.
static READY_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What keeps the process from being ready, empty when it is.
pub fn not_ready() -> Vec<String> {
    let pending = pending();
    if pending.is_empty() {
        READY_ONCE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    pending
}

fn pending() -> Vec<String> {
    let ready_once = READY_ONCE.load(std::sync::atomic::Ordering::Relaxed);
    let state = state();
    let mut pending: Vec<String> = state
        .services
        .iter()
        .filter(|(_, started)| !**started)
        .map(|(service, _)| format!("service {service} not serving"))
        .collect();
    if state.services.is_empty() {
        pending.push("no service started yet".into());
    }
    if !ready_once {
        pending.extend(
            state
                .consumers
                .iter()
                .filter(|(_, c)| !c.caught_up_once)
                .map(|(name, _)| format!("consumer {name} not caught up")),
        );
    }
    pending
}

fn refresh_ready() {
    let ready = not_ready().is_empty();
    let services: Vec<String> = state().services.keys().cloned().collect();
    for service in services {
        families()
            .ready
            .with_label_values(&[&service])
            .set(i64::from(ready));
    }
}

/// Runs one query with a short statement timeout (a scrape never waits on a slow database);
/// `None` when it failed or took too long. For the refreshers of services' own gauges too.
pub async fn bounded<T, F>(pool: &PgPool, query: F) -> Option<T>
where
    F: for<'c> FnOnce(
        &'c mut sqlx::PgConnection,
    ) -> Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>,
{
    let mut tx = pool.begin().await.ok()?;
    sqlx::query("SET LOCAL statement_timeout = 1000")
        .execute(&mut *tx)
        .await
        .ok()?;
    let value = query(&mut tx).await.ok();
    let _ = tx.rollback().await;
    value
}

/// Refreshes every database gauge.
pub async fn refresh() {
    let (pools, consumers, refreshers) = {
        let state = state();
        let consumers: Vec<(String, ConsumerQuery)> = state
            .consumers
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    (c.categories.clone(), c.event_types.clone(), c.checkpoint),
                )
            })
            .collect();
        (state.pools.clone(), consumers, state.refreshers.clone())
    };
    let f = families();
    for (service, pool) in &pools {
        let idle = pool.num_idle() as i64;
        f.pool_connections
            .with_label_values(&[service, "idle"])
            .set(idle);
        f.pool_connections
            .with_label_values(&[service, "used"])
            .set(i64::from(pool.size()) - idle);
    }
    let Some(pool) = pools.values().next() else {
        return;
    };
    let oldest = bounded(pool, |conn| {
        Box::pin(
            sqlx::query_scalar::<_, f64>(
                "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8 \
                 FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
            )
            .fetch_one(conn),
        )
    })
    .await;
    if let Some(oldest) = oldest {
        f.oldest_transaction_seconds.set(oldest);
    }
    for (name, (categories, event_types, (transaction_id, position))) in consumers {
        let backlog = bounded(pool, move |conn| {
            Box::pin(
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM (SELECT 1 FROM events \
                     WHERE (transaction_id, position) > ($1, $2) \
                       AND (cardinality($3::text[]) = 0 OR stream_category = ANY($3)) \
                       AND (cardinality($4::text[]) = 0 OR event_type = ANY($4)) LIMIT 100000) backlog",
                )
                .bind(transaction_id)
                .bind(position)
                .bind(categories)
                .bind(event_types)
                .fetch_one(conn),
            )
        })
        .await;
        if let Some(backlog) = backlog {
            f.consumer_lag_events
                .with_label_values(&[&name])
                .set(backlog);
        }
    }
    for refresh in refreshers {
        let _ = tokio::time::timeout(Duration::from_secs(2), refresh()).await;
    }
    let appended = callback_eventstore::stats::appended();
    for (category, event_type, n) in appended {
        let counter = f
            .events_appended
            .with_label_values(&[&category, &event_type]);
        let seen = counter.get();
        if n > seen {
            counter.inc_by(n - seen);
        }
    }
}

/// The exposition text of every family, refreshed.
pub async fn render() -> String {
    refresh().await;
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&families().registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Serves `/metrics` (Prometheus text), `/healthz` (liveness: 200 while the process runs) and
/// `/readyz` (200 once every service serves and every consumer caught up once, else 503 with
/// what is pending) until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render().await,
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async {
                let pending = not_ready();
                if pending.is_empty() {
                    (StatusCode::OK, "ready\n".to_owned())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{}\n", pending.join("\n")),
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait_owned())
        .await
}

/// Binds and serves in the background; the listener's address.
pub async fn spawn(
    addr: SocketAddr,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(error) = serve(listener, shutdown).await {
            tracing::error!(%error, "metrics listener failed");
        }
    });
    Ok((local, handle))
}

/// Logs the sessions holding the horizon back once it has been held for `after`, at most every
/// minute, until `shutdown` (the horizon freezes every feed: an operator needs the pid).
pub fn spawn_horizon_watch(
    pool: PgPool,
    after: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_report: Option<Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.wait() => return,
            }
            let rows: Vec<(i32, String, String, f64)> = match sqlx::query_as(
                "SELECT pid, coalesce(application_name, ''), coalesce(datname, ''), \
                        extract(epoch FROM now() - xact_start)::float8 \
                 FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
                   AND now() - xact_start > make_interval(secs => $1) ORDER BY xact_start LIMIT 5",
            )
            .bind(after.as_secs_f64())
            .fetch_all(&pool)
            .await
            {
                Ok(rows) => rows,
                Err(_) => continue,
            };
            if rows.is_empty()
                || last_report.is_some_and(|at| at.elapsed() < Duration::from_secs(60))
            {
                continue;
            }
            last_report = Some(Instant::now());
            for (pid, application, database, age) in rows {
                tracing::warn!(
                    pid,
                    application = %application,
                    database = %database,
                    age_seconds = age as u64,
                    "an open transaction holds the horizon back: every feed waits for it (see docs/OPERATIONS.md)"
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_exposition_names_every_family_once_used() {
        record_grpc(
            "scheduling",
            "callback.v1.Scheduling/ClaimNext",
            "OK",
            Duration::from_millis(3),
        );
        register_consumer("test.consumer", &[], &[]);
        let text = render().await;
        assert!(text.contains("callback_grpc_requests_total{code=\"OK\",method=\"callback.v1.Scheduling/ClaimNext\",service=\"scheduling\"} 1"), "{text}");
        assert!(
            text.contains("callback_grpc_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("callback_feed_consumer_caught_up{consumer=\"test.consumer\"} 0"),
            "{text}"
        );
        assert!(not_ready().iter().any(|p| p.contains("test.consumer")));
        consumer_applied("test.consumer", (1, 1), None, true);
        assert!(!not_ready().iter().any(|p| p.contains("test.consumer")));
    }
}
