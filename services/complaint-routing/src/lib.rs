//! The complaint-routing service: classifies complaints (A-E), routes them to departments,
//! runs their SLA clocks and escalations, and closes the loop with a verification callback.
//!
//! This crate currently provides the service's shell (health, reflection, its event feed);
//! classification, routing and clocks arrive with their own issue.

pub mod domain;

use callback_feed::{HostError, ServiceHost};
use callback_kit::{Config, ServiceKind, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub const KIND: ServiceKind = ServiceKind::ComplaintRouting;

/// Stream categories this service owns (and serves on its feed).
pub const CATEGORIES: &[&str] = &["complaint", "routing_rules"];

/// Serves the complaint-routing service on `listener` until `shutdown`.
pub async fn serve(
    pool: PgPool,
    listener: TcpListener,
    _config: Config,
    shutdown: Shutdown,
) -> Result<(), HostError> {
    ServiceHost::run(KIND, pool, CATEGORIES, listener, shutdown).await
}
