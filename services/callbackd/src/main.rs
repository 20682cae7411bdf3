//! `callbackd dev`: the whole system in one process.
//!
//! Each of the five services listens on its own port and reaches the others over real gRPC,
//! exactly as when they run as separate processes. Without `DATABASE_URL`, a private
//! PostgreSQL cluster is started from the installed server binaries in
//! `CALLBACK_DEV_DATA_DIR` (default `.callbackd/pgdata`) and stopped on exit.

use std::path::PathBuf;

mod credentials;

use anyhow::{bail, Context};
use callback_kit::{grpc, telemetry, Config, ServiceKind, Shutdown};
use callback_pgrunner::PrivateCluster;
use sqlx::Connection;

const USAGE: &str =
    "usage: callbackd [dev | demo | serve SERVICE | migrate | rebuild SERVICE | rewrap-keys | credentials DIR [HOST...] | health URL] [--help]

  dev                  run all five services in this process (the default), over TLS with
                       tokens: unless security settings are given, a local CA, certificates
                       and a token per role for tenant `demo` are made afresh (the master key
                       of personal data is kept) in
                       CALLBACK_DEV_CREDENTIALS_DIR (default .callbackd/credentials)
  demo                 run a month of hospital and dealer traffic on simulated time in a fresh
                       database `callback_demo`, print what happened, rebuild and compare
  serve SERVICE        run one service as its own process, as its binary does (callback-SERVICE;
                       e.g. several instances of one service, or a chaos test killing them)
  migrate              run every service's migrations against DATABASE_URL (as the owner of
                       CALLBACK_MIGRATION_DATABASE_URL when set, granting DATABASE_URL's role
                       what each service needs) and exit: a deployment's migration job
  rebuild SERVICE      rebuild a service's read models from the event log (stop the service
                       first); SERVICE is scheduling, call-logging, complaint-routing,
                       analytics or integration-gateway (whose feed-fed read models are
                       cleared and refilled from the feeds when it starts). A rebuild first
                       waits for transactions begun before it, anywhere on the server, to end
                       (naming them after a few seconds), and gives up after
                       CALLBACK_REBUILD_WAIT_SECONDS (default 60)
  rewrap-keys          rewrap every subject key (and the hash key) with the current master key,
                       the first of CALLBACK_MASTER_KEY_FILE / CALLBACK_MASTER_KEY; run after
                       putting a new master key first, before removing the old one
  credentials DIR [HOST...]
                       write a local CA, the services' certificate (for localhost, the
                       loopback addresses and each HOST), a token signer with its JWKS and a
                       token per role for tenant `demo` (DIR/tokens/) into DIR; print the
                       settings that use them (for trials: use your own CA and identity
                       provider in production; see docs/SECURITY.md)
  health URL           ask the gRPC health service at URL (e.g. https://127.0.0.1:50051, the
                       server checked against CALLBACK_TLS_CA); exit 0 when it reports
                       SERVING, 1 otherwise (for container health checks)

Every command reads its configuration from the environment variables below (the README and
docs/OPERATIONS.md say more); `callbackd COMMAND --help` shows this text.";

/// The environment variables, each with what it means.
fn environment_help() -> String {
    let mut out = String::from("\nEnvironment:\n");
    for (name, help) in callback_kit::config::VARIABLES
        .iter()
        .zip(callback_kit::config::VARIABLE_HELP)
    {
        out.push_str(&format!("  {name:<35} {help}\n"));
    }
    for kind in ServiceKind::ALL {
        out.push_str(&format!(
            "  {:<35} {} listens for gRPC (127.0.0.1:{})\n",
            kind.addr_var(),
            kind.name(),
            kind.default_port()
        ));
        out.push_str(&format!(
            "  {:<35} where the others reach {} (http(s):// + its address)\n",
            kind.url_var(),
            kind.name()
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| matches!(a.as_str(), "-h" | "--help" | "help"))
    {
        println!("{USAGE}\n{}", environment_help());
        return Ok(());
    }
    match args.first().map(String::as_str) {
        None | Some("dev") => dev().await,
        Some("demo") => demo().await,
        Some("rebuild") => match args.get(1).map(String::as_str) {
            Some("scheduling") => rebuild_scheduling().await,
            Some("call-logging") => rebuild_call_logging().await,
            Some("complaint-routing") => rebuild_complaint_routing().await,
            Some("analytics") => rebuild_analytics().await,
            Some("integration-gateway") => rebuild_integration_gateway().await,
            _ => bail!("rebuild needs a service: `callbackd rebuild scheduling`\n\n{USAGE}"),
        },
        Some("rewrap-keys") => rewrap_keys().await,
        Some("migrate") => migrate().await,
        Some("serve") => match args
            .get(1)
            .and_then(|name| ServiceKind::ALL.into_iter().find(|k| k.name() == name))
        {
            Some(kind) => serve(kind).await,
            None => bail!("serve needs a service: `callbackd serve scheduling`\n\n{USAGE}"),
        },
        Some("credentials") => match args.get(1) {
            Some(dir) => {
                let hosts: Vec<&str> = args[2..].iter().map(String::as_str).collect();
                let pki = credentials::write(std::path::Path::new(dir), &hosts)?;
                for (key, value) in pki.settings() {
                    println!("{key}={value}");
                }
                Ok(())
            }
            None => bail!("credentials needs a folder\n\n{USAGE}"),
        },
        Some("health") => match args.get(1) {
            Some(url) => health(url).await,
            None => bail!("health needs the service URL\n\n{USAGE}"),
        },
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

async fn dev() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (database_url, cluster) = database("callback", false).await?;
    let credentials = credentials::dev_credentials()?;
    let (security, message) = credentials.unwrap_or_default();
    let config = Config::from_lookup(|key| {
        if key == "DATABASE_URL" {
            Some(database_url.clone())
        } else {
            security
                .get(key)
                .cloned()
                .or_else(|| std::env::var(key).ok())
        }
    })?;
    if !message.is_empty() {
        println!("{message}");
    }
    let shutdown = Shutdown::on_signals();
    // Metrics, liveness and readiness of the whole process on one listener. The default port
    // may be taken (a node exporter uses 9100): then dev runs without, and says so.
    let (metrics_addr, explicit) = match std::env::var("CALLBACK_METRICS_ADDR") {
        Ok(_) => (config.metrics_addr, true),
        Err(_) => (
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9100))),
            false,
        ),
    };
    if let Some(addr) = metrics_addr {
        match callback_kit::metrics::spawn(addr, shutdown.clone()).await {
            Ok((addr, _)) => {
                println!("metrics on http://{addr}/metrics, readiness on http://{addr}/readyz\n");
                let pool = config.connect().await.context("connecting to PostgreSQL")?;
                callback_kit::metrics::spawn_horizon_watch(
                    pool,
                    std::time::Duration::from_secs(5),
                    shutdown.clone(),
                );
            }
            Err(error) if !explicit => println!(
                "no metrics: {addr} is taken ({error}); set CALLBACK_METRICS_ADDR to another address\n"
            ),
            Err(error) => return Err(error).with_context(|| format!("CALLBACK_METRICS_ADDR {addr}")),
        }
    }

    // Bind every port before starting anything, so a conflict stops us early.
    let mut listeners = Vec::new();
    for kind in ServiceKind::ALL {
        listeners.push((kind, grpc::bind(config.listen_addr(kind)).await?));
    }
    let mut services = tokio::task::JoinSet::new();
    let mut pools = Vec::new();
    for (kind, listener) in listeners {
        let pool = config.connect().await.context("connecting to PostgreSQL")?;
        pools.push(pool.clone());
        let config = config.clone();
        let shutdown = shutdown.clone();
        tracing::info!(service = kind.name(), addr = %config.listen_addr(kind), "starting");
        services.spawn(async move {
            let result =
                callbackd::serve_service(kind, pool, listener, config, shutdown.clone()).await;
            // One service failing stops the others: a half-running system helps nobody.
            shutdown.trigger();
            (kind, result)
        });
    }
    let mut failure = None;
    while let Some(joined) = services.join_next().await {
        let (kind, result) = joined?;
        if let Err(error) = result {
            tracing::error!(service = kind.name(), %error, "service failed");
            failure.get_or_insert(error.context(format!("{} failed", kind.name())));
        }
    }
    // Background tasks (subscriptions, listeners) still hold pool handles: closing the pools
    // first lets them end quietly instead of reconnecting to a server that is going away.
    for pool in pools {
        if tokio::time::timeout(std::time::Duration::from_secs(5), pool.close())
            .await
            .is_err()
        {
            tracing::info!("a database pool did not close within 5 s; going on");
        }
    }
    if let Some(cluster) = cluster {
        tracing::info!("stopping the private PostgreSQL cluster");
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn serve(kind: ServiceKind) -> anyhow::Result<()> {
    callbackd::run_service_binary(kind)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn migrate() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    // Only the database settings matter here: the job needs no keys or certificates.
    let url = |variable: &str| -> anyhow::Result<Option<String>> {
        match std::env::var(variable) {
            Err(_) => Ok(None),
            Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Some(url))
            }
            Ok(_) => bail!("{variable} must start with postgres:// or postgresql://"),
        }
    };
    let Some(database_url) = url("DATABASE_URL")? else {
        bail!("DATABASE_URL is not set: the services' database (and role)");
    };
    let owner_url = url("CALLBACK_MIGRATION_DATABASE_URL")?;
    for kind in ServiceKind::ALL {
        callbackd::migrate_service(kind, &database_url, owner_url.as_deref())
            .await
            .with_context(|| format!("migrating {}", kind.name()))?;
        println!("migrated {}", kind.name());
    }
    Ok(())
}

async fn health(url: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    // Over TLS the server is checked against CALLBACK_TLS_CA; health needs no credentials.
    let tls = match std::env::var("CALLBACK_TLS_CA") {
        Ok(path) if url.starts_with("https://") => {
            let ca = std::fs::read(&path).with_context(|| format!("CALLBACK_TLS_CA: {path}"))?;
            Some(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )
        }
        _ => None,
    };
    let channel = grpc::channel_with_config(url, tls)?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), client.check(request))
        .await
        .context("health check timed out")??
        .into_inner()
        .status;
    if status == ServingStatus::Serving as i32 {
        println!("SERVING");
        Ok(())
    } else {
        bail!("not serving (status {status})")
    }
}

/// `DATABASE_URL`, or a private cluster with database `name` (created when missing; dropped
/// and created afresh when `fresh`). The cluster, if any, stops when dropped.
async fn database(name: &str, fresh: bool) -> anyhow::Result<(String, Option<PrivateCluster>)> {
    let (server_url, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) if !fresh => return Ok((url, None)),
        Ok(url) => (url, None),
        Err(_) => {
            let dir = std::env::var_os("CALLBACK_DEV_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".callbackd/pgdata"));
            tracing::info!(data_dir = %dir.display(), "no DATABASE_URL: starting a private PostgreSQL cluster");
            let cluster =
                tokio::task::spawn_blocking(move || PrivateCluster::start(&dir, &[])).await??;
            tracing::info!(port = cluster.port(), "private PostgreSQL is up");
            (cluster.url(), Some(cluster))
        }
    };
    let mut admin = sqlx::PgConnection::connect(&server_url).await?;
    if fresh {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
    }
    admin.close().await?;
    let url = match server_url.rfind('/') {
        Some(i) => format!("{}/{name}", &server_url[..i]),
        None => format!("{server_url}/{name}"),
    };
    Ok((url, cluster))
}

/// Closes an offline command's pool and stops the private cluster it started, if any.
async fn close(pool: &sqlx::PgPool, cluster: Option<PrivateCluster>) -> anyhow::Result<()> {
    pool.close().await;
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    Ok(())
}

/// The event log for an offline command, with the configured wait for older transactions.
async fn open_store(
    url: &str,
    connections: u32,
    owner: ServiceKind,
    categories: &[&str],
) -> anyhow::Result<callback_eventstore::EventStore> {
    let wait = callback_kit::config::rebuild_wait(|key| std::env::var(key).ok())?;
    let pool = callback_kit::pool_options(connections).connect(url).await?;
    let store = callback_eventstore::EventStore::open(pool)
        .await?
        .with_horizon_wait(wait);
    store.register_categories(owner.name(), categories).await?;
    Ok(store)
}

/// The scheduling application on its own (no servers), for offline commands: with the
/// configured master keys, or (`fresh_keys`, the demo's new database) keys of its own.
async fn scheduling_app(
    url: &str,
    clock: std::sync::Arc<dyn callback_rules::Clock>,
    fresh_keys: bool,
) -> anyhow::Result<callback_scheduling::app::Scheduling> {
    let store = open_store(
        url,
        4,
        ServiceKind::Scheduling,
        callback_scheduling::CATEGORIES,
    )
    .await?;
    let vault = offline_vault(store.pool(), fresh_keys).await?;
    Ok(callback_scheduling::open(store, vault, clock).await?)
}

/// The vault for an offline command: the master keys from the environment
/// (`CALLBACK_MASTER_KEY_FILE` or `CALLBACK_MASTER_KEY`, as the services read them).
async fn offline_vault(
    pool: &sqlx::PgPool,
    fresh_keys: bool,
) -> anyhow::Result<callback_vault::Vault> {
    if fresh_keys {
        return Ok(callback_vault::Vault::with_fresh_master_key(pool.clone()).await?);
    }
    // Without configuration, the private cluster of `callbackd dev` goes with its master key.
    let dev_key = std::path::Path::new(".callbackd/credentials/master.key");
    let keys = callback_kit::config::master_keys(&|key: &str| {
        std::env::var(key).ok().or_else(|| {
            let unconfigured = std::env::var_os("DATABASE_URL").is_none()
                && std::env::var_os("CALLBACK_MASTER_KEY").is_none();
            (key == "CALLBACK_MASTER_KEY_FILE" && unconfigured && dev_key.exists())
                .then(|| dev_key.display().to_string())
        })
    })?;
    callback_vault::migrator().run(pool).await?;
    Ok(callback_vault::Vault::open(pool.clone(), keys).await?)
}

async fn rebuild_call_logging() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (url, cluster) = database("callback", false).await?;
    let store = open_store(
        &url,
        4,
        ServiceKind::CallLogging,
        callback_call_logging::CATEGORIES,
    )
    .await?;
    callback_call_logging::migrator().run(store.pool()).await?;
    let vault = offline_vault(store.pool(), false).await?;
    let app = callback_call_logging::app::CallLogging::new(
        store.clone(),
        vault,
        std::sync::Arc::new(
            callback_call_logging::scheduling_client::GrpcScheduling::new(offline_channel()?),
        ),
    );
    let events = app.rebuild_projections().await?;
    println!("rebuilt the call-logging read models from {events} events");
    close(store.pool(), cluster).await?;
    Ok(())
}

/// The channel an offline rebuild hands an application that could call scheduling: a
/// rebuild only replays the log, so it is never used (and needs no credentials).
fn offline_channel() -> anyhow::Result<tonic::transport::Channel> {
    Ok(grpc::channel("http://127.0.0.1:9")?)
}

/// A fingerprint of the scheduling read model, to show a rebuild reproduces it.
async fn fingerprint(app: &callback_scheduling::app::Scheduling) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(md5(string_agg(c::text, '|' ORDER BY c.callback_id)), '') FROM sched_callbacks c",
    )
    .fetch_one(app.store().pool())
    .await?)
}

async fn demo() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (url, cluster) = database("callback_demo", true).await?;
    let clock = callback_rules::ManualClock::new(chrono::Utc::now()); // the demo sets its own dates
    let app = scheduling_app(&url, std::sync::Arc::new(clock.clone()), true).await?;
    let started = std::time::Instant::now();
    let summary = callback_scheduling::demo::run(&app, &clock, 30, 2026).await?;
    let elapsed = started.elapsed();
    println!(
        "\na month of traffic on simulated time: {} business facts ({} entered days late), \
         {} claims, {} callbacks reached overdue (after the deadline, before giving up), {:.1} s\n",
        summary.facts,
        summary.late_facts,
        summary.claims,
        summary.reached_overdue,
        elapsed.as_secs_f64()
    );
    println!(
        "{:<16} {:<20} {:<32} {:>6}",
        "tenant", "policy", "outcome", "count"
    );
    for ((tenant, policy, outcome), count) in &summary.by_outcome {
        println!("{tenant:<16} {policy:<20} {outcome:<32} {count:>6}");
    }
    let before = fingerprint(&app).await?;
    let events = app.rebuild_projections().await?;
    let after = fingerprint(&app).await?;
    println!(
        "\nrebuilt the read model from {events} events: {}",
        if before == after {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    close(app.store().pool(), cluster).await?;
    anyhow::ensure!(before == after, "the rebuilt read model differs");
    Ok(())
}

async fn rebuild_complaint_routing() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (url, cluster) = database("callback", false).await?;
    let store = open_store(
        &url,
        4,
        ServiceKind::ComplaintRouting,
        callback_complaint_routing::CATEGORIES,
    )
    .await?;
    let vault = offline_vault(store.pool(), false).await?;
    let app = callback_complaint_routing::open(
        store,
        vault,
        std::sync::Arc::new(callback_rules::SystemClock),
        offline_channel()?,
    )
    .await?;
    let events = app.rebuild_projections().await?;
    println!("rebuilt the complaint-routing read models from {events} events");
    close(app.store().pool(), cluster).await?;
    Ok(())
}

async fn rebuild_analytics() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (url, cluster) = database("callback", false).await?;
    let store = open_store(
        &url,
        2,
        ServiceKind::Analytics,
        callback_analytics::CATEGORIES,
    )
    .await?;
    let pool = store.pool().clone();
    callback_analytics::migrator().run(&pool).await?;
    callback_analytics::reset_read_models(&store).await?;
    println!(
        "cleared the analytics read models and checkpoints; the analytics service refills them \
         from the feeds when it starts"
    );
    close(&pool, cluster).await?;
    Ok(())
}

async fn rebuild_integration_gateway() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (url, cluster) = database("callback", false).await?;
    let store = open_store(
        &url,
        2,
        ServiceKind::IntegrationGateway,
        gateway_categories(),
    )
    .await?;
    let pool = store.pool().clone();
    callback_integration_gateway::migrator().run(&pool).await?;
    callback_integration_gateway::reset_read_models(&store).await?;
    println!(
        "rebuilt the integration gateway's settings and delivery outcomes from the log; it \
         queues notifications again from the feeds when it starts (delivered ones are not sent \
         again)"
    );
    close(&pool, cluster).await?;
    Ok(())
}

fn gateway_categories() -> &'static [&'static str] {
    <callback_integration_gateway::IntegrationGatewayService as callback_host::Service>::CATEGORIES
}

async fn rebuild_scheduling() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (url, cluster) = database("callback", false).await?;
    let app = scheduling_app(
        &url,
        std::sync::Arc::new(callback_rules::SystemClock),
        false,
    )
    .await?;
    let before = fingerprint(&app).await?;
    let events = app.rebuild_projections().await?;
    let after = fingerprint(&app).await?;
    println!(
        "rebuilt the scheduling read models from {events} events ({})",
        if before == after {
            "unchanged"
        } else {
            "they had drifted and are now rebuilt"
        }
    );
    close(app.store().pool(), cluster).await?;
    Ok(())
}

/// Master key rotation: every key wrapped by an older master key is wrapped by the current one.
async fn rewrap_keys() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (url, cluster) = database("callback", false).await?;
    let pool = callback_kit::pool_options(2).connect(&url).await?;
    let vault = offline_vault(&pool, false).await?;
    let count = vault.rewrap_all().await?;
    println!("rewrapped {count} keys with the current master key");
    close(&pool, cluster).await?;
    Ok(())
}
