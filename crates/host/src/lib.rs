//! One way to run a service. A service declares itself ([`Service`]: the categories it owns,
//! its migrations, how it opens its application, the feed consumers and background workers it
//! runs, the gRPC APIs it serves); [`serve`] does the rest for all four, the same in
//! `callbackd dev`, the separate binaries ([`run_binary`]) and the end-to-end tests:
//! migrate the log, register the categories, migrate the service, open it, spawn its tasks,
//! serve health, reflection, its feed and its APIs until shutdown, drain, then wait for the
//! tasks.

mod host;

use std::sync::Arc;

use callback_eventstore::EventStore;
use callback_kit::grpc::Router;
use callback_kit::grpc::ServiceChannel;
use callback_kit::{Config, ServiceKind, Shutdown};
use callback_rules::Clock;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use host::{HostError, ServiceHost};

/// What a service gets when it starts.
#[derive(Clone)]
pub struct Context {
    pub store: EventStore,
    /// The keys personal data is sealed with.
    pub vault: callback_vault::Vault,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub shutdown: Shutdown,
}

impl Context {
    /// A channel to another service, at the address the configuration gives it, with this
    /// service's credentials there (its certificate over TLS; its token when configured).
    pub fn channel(&self, kind: ServiceKind) -> Result<ServiceChannel, HostError> {
        Ok(ServiceChannel {
            channel: callback_kit::grpc::channel_with(
                self.config.url(kind),
                self.config.security.tls.as_ref(),
            )?,
            token: self.config.security.service_token.clone(),
        })
    }
}

/// A service, declared.
pub trait Service: 'static {
    const KIND: ServiceKind;
    /// The stream categories it owns and serves on its feed.
    const CATEGORIES: &'static [&'static str];
    /// The full names of its own gRPC APIs (health reports each).
    const APIS: &'static [&'static str];

    /// Its application: the commands and queries the APIs and tasks call.
    type App: Clone + Send + Sync + 'static;

    /// Its own migrations (the event log's run first).
    fn migrator() -> sqlx::migrate::Migrator;

    /// Its read-model tables, as SQL `LIKE` patterns: what its database role may write when
    /// the migrations run as an owner (`CALLBACK_MIGRATION_DATABASE_URL`).
    const TABLES: &'static [&'static str];

    /// Its application on the migrated store.
    fn open(ctx: &Context) -> Result<Self::App, HostError>;

    /// Its feed consumers and background workers, spawned; each ends at `ctx.shutdown`.
    fn spawn_tasks(app: &Self::App, ctx: &Context) -> Result<Vec<JoinHandle<()>>, HostError>;

    /// Adds its APIs to the router.
    fn routes(app: Self::App, router: Router) -> Router;
}

/// Serves `S` on `listener` until `shutdown`, on `clock` (tests and demos pass simulated time).
pub async fn serve<S: Service>(
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> Result<(), HostError> {
    // With an owner's URL, the owner migrates and grants; the service's own role may then
    // only read and append to the log and write its own read models.
    let migrated = match &config.migration_database_url {
        Some(owner_url) => {
            migrate_as_owner::<S>(owner_url, &pool).await?;
            true
        }
        None => false,
    };
    if !migrated {
        callback_vault::migrator().run(&pool).await?;
    }
    let vault = callback_vault::Vault::open(pool.clone(), config.master_keys.clone()).await?;
    let host = ServiceHost::start(S::KIND, pool, S::CATEGORIES, &config.security, migrated).await?;
    if !migrated {
        S::migrator().run(host.store.pool()).await?;
    }
    let ctx = Context {
        store: host.store.clone(),
        vault,
        config,
        clock,
        shutdown: shutdown.clone(),
    };
    let app = S::open(&ctx)?;
    let tasks = S::spawn_tasks(&app, &ctx)?;
    let host = host.route(S::APIS, |router| S::routes(app, router));
    let served = host.serve(listener, shutdown).await;
    for task in tasks {
        let _ = task.await;
    }
    Ok(served?)
}

/// The `main` of a service binary: configuration and telemetry from the environment, bind
/// early, connect, then serve until SIGTERM/SIGINT, on the system clock.
pub async fn run_binary<S: Service>() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let _telemetry = callback_kit::telemetry::init(S::KIND.name())?;
    let shutdown = Shutdown::on_signals();
    let listener = callback_kit::grpc::bind(config.listen_addr(S::KIND)).await?;
    let pool = config.connect().await?;
    if let Some(addr) = config.metrics_addr {
        let (addr, _) = callback_kit::metrics::spawn(addr, shutdown.clone()).await?;
        tracing::info!(%addr, "metrics, liveness and readiness over HTTP");
        callback_kit::metrics::spawn_horizon_watch(
            pool.clone(),
            std::time::Duration::from_secs(5),
            shutdown.clone(),
        );
    }
    serve::<S>(
        pool,
        listener,
        config,
        shutdown,
        Arc::new(callback_rules::SystemClock),
    )
    .await?;
    Ok(())
}

/// Runs the log's, the vault's and `S`'s migrations, as the owner when
/// `CALLBACK_MIGRATION_DATABASE_URL` is set (granting `DATABASE_URL`'s role what `S` needs), and
/// returns: a deployment's migration job, run before a rollout (`callbackd migrate`).
pub async fn migrate<S: Service>(
    database_url: &str,
    migration_database_url: Option<&str>,
) -> Result<(), HostError> {
    let pool = callback_kit::pool_options(2)
        .connect(database_url)
        .await
        .map_err(callback_eventstore::Error::from)?;
    match migration_database_url {
        Some(owner_url) => migrate_as_owner::<S>(owner_url, &pool).await?,
        None => {
            callback_eventstore::migrator().run(&pool).await?;
            callback_vault::migrator().run(&pool).await?;
            S::migrator().run(&pool).await?;
        }
    }
    pool.close().await;
    Ok(())
}

/// Runs the log's and `S`'s migrations as the owner at `owner_url`, then grants the role
/// `pool` connects as what `S` needs: SELECT and INSERT on the log (never UPDATE, DELETE,
/// TRUNCATE, and no ownership, so no trigger can be switched off), its checkpoints and
/// category registrations, and its own read models.
async fn migrate_as_owner<S: Service>(owner_url: &str, pool: &PgPool) -> Result<(), HostError> {
    let owner = callback_kit::pool_options(1)
        .connect(owner_url)
        .await
        .map_err(callback_eventstore::Error::from)?;
    callback_eventstore::migrator().run(&owner).await?;
    callback_vault::migrator().run(&owner).await?;
    S::migrator().run(&owner).await?;
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(pool)
        .await
        .map_err(callback_eventstore::Error::from)?;
    let owner_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&owner)
        .await
        .map_err(callback_eventstore::Error::from)?;
    if role != owner_role {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
             AND tablename LIKE ANY($1) ORDER BY tablename",
        )
        .bind(S::TABLES)
        .fetch_all(&owner)
        .await
        .map_err(callback_eventstore::Error::from)?;
        let role = quote_ident(&role);
        let mut statements = vec![
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!("GRANT SELECT, INSERT ON events TO {role}"),
            format!("GRANT SELECT, INSERT, UPDATE ON stream_categories TO {role}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON consumer_checkpoints TO {role}"),
            // Keys: read and created by every service; restricted and deleted (erasure) by
            // the service that records it.
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON vault_subject_keys TO {role}"),
            format!("GRANT SELECT, INSERT ON vault_hash_key TO {role}"),
        ];
        for table in tables {
            statements.push(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {role}",
                quote_ident(&table)
            ));
        }
        for statement in statements {
            sqlx::query(&statement)
                .execute(&owner)
                .await
                .map_err(callback_eventstore::Error::from)?;
        }
    }
    owner.close().await;
    Ok(())
}

/// A PostgreSQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
