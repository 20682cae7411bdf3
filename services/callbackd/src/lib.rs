//! Runs any of the five services by kind on the one host (`callback_host::serve`): used by
//! `callbackd dev` and the end-to-end tests, so both wire the services exactly alike.

use std::sync::Arc;

use callback_analytics::AnalyticsService;
use callback_call_logging::CallLoggingService;
use callback_complaint_routing::ComplaintRoutingService;
use callback_host::serve;
use callback_integration_gateway::IntegrationGatewayService;
use callback_kit::{Config, ServiceKind, Shutdown};
use callback_rules::Clock;
use callback_scheduling::SchedulingService;
use sqlx::PgPool;
use tokio::net::TcpListener;

/// Serves the service `kind` on `listener` until `shutdown`, on the system clock.
pub async fn serve_service(
    kind: ServiceKind,
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let clock = Arc::new(callback_rules::SystemClock);
    serve_service_on_clock(kind, pool, listener, config, shutdown, clock).await
}

/// Serves the service `kind` on `clock` (tests and demos run on simulated time).
pub async fn serve_service_on_clock(
    kind: ServiceKind,
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    match kind {
        ServiceKind::Scheduling => {
            serve::<SchedulingService>(pool, listener, config, shutdown, clock).await?
        }
        ServiceKind::CallLogging => {
            serve::<CallLoggingService>(pool, listener, config, shutdown, clock).await?
        }
        ServiceKind::ComplaintRouting => {
            serve::<ComplaintRoutingService>(pool, listener, config, shutdown, clock).await?
        }
        ServiceKind::Analytics => {
            serve::<AnalyticsService>(pool, listener, config, shutdown, clock).await?
        }
        ServiceKind::IntegrationGateway => {
            serve::<IntegrationGatewayService>(pool, listener, config, shutdown, clock).await?
        }
    }
    Ok(())
}

/// Runs the migrations of the service `kind` (and the log's) and returns (`callbackd migrate`).
pub async fn migrate_service(
    kind: ServiceKind,
    database_url: &str,
    owner_url: Option<&str>,
) -> anyhow::Result<()> {
    use callback_host::migrate;
    let (url, owner) = (database_url, owner_url);
    match kind {
        ServiceKind::Scheduling => migrate::<SchedulingService>(url, owner).await?,
        ServiceKind::CallLogging => migrate::<CallLoggingService>(url, owner).await?,
        ServiceKind::ComplaintRouting => migrate::<ComplaintRoutingService>(url, owner).await?,
        ServiceKind::Analytics => migrate::<AnalyticsService>(url, owner).await?,
        ServiceKind::IntegrationGateway => migrate::<IntegrationGatewayService>(url, owner).await?,
    }
    Ok(())
}

/// Runs the service `kind` as its own binary would (`callbackd serve SERVICE`).
pub async fn run_service_binary(kind: ServiceKind) -> Result<(), Box<dyn std::error::Error>> {
    use callback_host::run_binary;
    match kind {
        ServiceKind::Scheduling => run_binary::<SchedulingService>().await,
        ServiceKind::CallLogging => run_binary::<CallLoggingService>().await,
        ServiceKind::ComplaintRouting => run_binary::<ComplaintRoutingService>().await,
        ServiceKind::Analytics => run_binary::<AnalyticsService>().await,
        ServiceKind::IntegrationGateway => run_binary::<IntegrationGatewayService>().await,
    }
}
