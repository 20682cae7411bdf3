//! The scheduling service: turns business facts from source systems into callbacks that are
//! due at the right time, hands each to one agent, and follows it to an end.
//!
//! So far: the service's shell (health, reflection, its event feed) and the pure policy
//! engine in [`domain`]; ingest, claiming and the callback lifecycle are not wired yet.

pub mod domain;

use callback_feed::{HostError, ServiceHost};
use callback_kit::{Config, ServiceKind, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub const KIND: ServiceKind = ServiceKind::Scheduling;

/// Stream categories this service owns (and serves on its feed).
pub const CATEGORIES: &[&str] = &["tenant", "policy", "callback", "business_event"];

/// Serves the scheduling service on `listener` until `shutdown`.
pub async fn serve(
    pool: PgPool,
    listener: TcpListener,
    _config: Config,
    shutdown: Shutdown,
) -> Result<(), HostError> {
    let host = ServiceHost::start(KIND, pool, CATEGORIES).await?;
    Ok(host.serve(listener, shutdown).await?)
}
