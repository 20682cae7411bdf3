//! Runs any of the four services by kind: used by `callbackd dev` and the end-to-end tests,
//! so both wire the services exactly alike.

use callback_kit::{Config, ServiceKind, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;

/// Serves the service `kind` on `listener` until `shutdown`.
pub async fn serve_service(
    kind: ServiceKind,
    pool: PgPool,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    match kind {
        ServiceKind::Scheduling => {
            callback_scheduling::serve(pool, listener, config, shutdown).await?
        }
        ServiceKind::CallLogging => {
            callback_call_logging::serve(pool, listener, config, shutdown).await?
        }
        ServiceKind::ComplaintRouting => {
            callback_complaint_routing::serve(pool, listener, config, shutdown).await?
        }
        ServiceKind::Analytics => {
            callback_analytics::serve(pool, listener, config, shutdown).await?
        }
    }
    Ok(())
}
