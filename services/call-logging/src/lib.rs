//! The call-logging service: the record (回访记录) of every call attempt, questionnaires,
//! telephony records and honesty checks.
//!
//! This crate currently provides the service's shell (health, reflection, its event feed);
//! attempts, questionnaires and honesty checks arrive with their own issue.

use callback_feed::{HostError, ServiceHost};
use callback_kit::{Config, ServiceKind, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub mod domain;

pub const KIND: ServiceKind = ServiceKind::CallLogging;

/// Stream categories this service owns (and serves on its feed).
pub const CATEGORIES: &[&str] = &["call_attempt", "questionnaire", "telephony"];

/// Serves the call-logging service on `listener` until `shutdown`.
pub async fn serve(
    pool: PgPool,
    listener: TcpListener,
    _config: Config,
    shutdown: Shutdown,
) -> Result<(), HostError> {
    ServiceHost::run(KIND, pool, CATEGORIES, listener, shutdown).await
}
