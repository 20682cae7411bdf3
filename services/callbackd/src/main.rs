//! `callbackd dev`: the whole system in one process.
//!
//! Each of the four services listens on its own port and reaches the others over real gRPC,
//! exactly as when they run as separate processes. Without `DATABASE_URL`, a private
//! PostgreSQL cluster is started from the installed server binaries in
//! `CALLBACK_DEV_DATA_DIR` (default `.callbackd/pgdata`) and stopped on exit.

use std::path::PathBuf;

use anyhow::{bail, Context};
use callback_kit::{grpc, telemetry, Config, ServiceKind, Shutdown};
use callback_pgrunner::PrivateCluster;
use sqlx::Connection;

const USAGE: &str = "usage: callbackd [dev | health URL]

  dev          run all four services in this process (the default)
  health URL   ask the gRPC health service at URL (e.g. http://127.0.0.1:50051);
               exit 0 when it reports SERVING, 1 otherwise (for container health checks)

Configuration comes from environment variables; see the README.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("dev") => dev().await,
        Some("health") => match args.get(1) {
            Some(url) => health(url).await,
            None => bail!("health needs the service URL\n\n{USAGE}"),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

async fn dev() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("callbackd")?;
    let (database_url, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let (url, cluster) = private_cluster().await?;
            (url, Some(cluster))
        }
    };
    let config = Config::from_lookup(|key| {
        if key == "DATABASE_URL" {
            Some(database_url.clone())
        } else {
            std::env::var(key).ok()
        }
    })?;
    let shutdown = Shutdown::on_signals();

    // Bind every port before starting anything, so a conflict stops us early.
    let mut listeners = Vec::new();
    for kind in ServiceKind::ALL {
        listeners.push((kind, grpc::bind(config.listen_addr(kind)).await?));
    }
    let mut services = tokio::task::JoinSet::new();
    for (kind, listener) in listeners {
        let pool = config.connect().await.context("connecting to PostgreSQL")?;
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
    if let Some(cluster) = cluster {
        tracing::info!("stopping the private PostgreSQL cluster");
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn health(url: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = grpc::channel(url)?;
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

/// Starts (or restarts) the private cluster and makes sure database `callback` exists.
async fn private_cluster() -> anyhow::Result<(String, PrivateCluster)> {
    let dir = std::env::var_os("CALLBACK_DEV_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".callbackd/pgdata"));
    tracing::info!(data_dir = %dir.display(), "no DATABASE_URL: starting a private PostgreSQL cluster");
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::start(&dir, &[])).await??;
    let mut admin = sqlx::PgConnection::connect(&cluster.url()).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'callback')")
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query("CREATE DATABASE callback")
            .execute(&mut admin)
            .await?;
    }
    admin.close().await?;
    let url = format!("postgres://postgres@127.0.0.1:{}/callback", cluster.port());
    tracing::info!(port = cluster.port(), "private PostgreSQL is up");
    Ok((url, cluster))
}
