//! The call-logging service: the record (回访记录) of every call attempt, questionnaires,
//! telephony records and honesty checks.
//!
//! So far: questionnaires ([`domain`]) and `LogCallAttempt`, which checks the lease with the
//! scheduling service and records the attempt as events that scheduling consumes. Telephony
//! records with honesty flags; private (masked, audited) reads are still to come.

use callback_host::{Context, HostError, Service};
use callback_kit::grpc::Router;
use callback_kit::ServiceKind;
use tokio::task::JoinHandle;

pub mod app;
pub mod domain;
mod error;
pub mod facts;
pub mod grpc;
pub mod scheduling_client;

pub use error::{Error, Result};

pub const KIND: ServiceKind = ServiceKind::CallLogging;

/// Stream categories this service owns (and serves on its feed).
pub const CATEGORIES: &[&str] = callback_contracts::call_logging::CATEGORIES;

/// The call-logging service, declared for the host (`callback_host::serve`).
pub struct CallLoggingService;

impl Service for CallLoggingService {
    const KIND: ServiceKind = KIND;
    const CATEGORIES: &'static [&'static str] = CATEGORIES;
    const APIS: &'static [&'static str] = &["callback.v1.CallLogging"];
    const TABLES: &'static [&'static str] = &["cl\\_%"];
    type App = app::CallLogging;

    fn migrator() -> sqlx::migrate::Migrator {
        migrator()
    }

    /// Asks scheduling about leases over gRPC.
    fn open(ctx: &Context) -> Result<app::CallLogging, HostError> {
        let scheduling = ctx.channel(ServiceKind::Scheduling)?;
        Ok(app::CallLogging::new(
            ctx.store.clone(),
            ctx.vault.clone(),
            std::sync::Arc::new(scheduling_client::GrpcScheduling::new(scheduling)),
        ))
    }

    /// Tenants' calendars and subjects' phones from scheduling's feed.
    fn spawn_tasks(
        _app: &app::CallLogging,
        ctx: &Context,
    ) -> Result<Vec<JoinHandle<()>>, HostError> {
        let (facts, _) = callback_feed::RemoteConsumer::new(
            ctx.channel(ServiceKind::Scheduling)?,
            &facts::CATEGORIES,
        )
        .with_event_types(&facts::EVENT_TYPES)
        .spawn(
            ctx.store.clone(),
            facts::SchedulingFacts::new(ctx.store.clone()),
            ctx.shutdown.clone(),
        );
        Ok(vec![facts])
    }

    fn routes(app: app::CallLogging, router: Router) -> Router {
        router.add_service(grpc::service(app))
    }
}

pub fn migrator() -> sqlx::migrate::Migrator {
    callback_eventstore::shared_database(sqlx::migrate!("./migrations"))
}
