//! What complaint routing needs from other services, as traits of the application layer. The
//! adapter that speaks gRPC lives at the edge (`crate::scheduling_client`).

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::Customer;
use crate::error::Error;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A verification or explanation callback to ask scheduling for, as a business fact.
/// `customer` is personal data.
#[derive(Clone, Debug, PartialEq)]
pub struct CallbackRequest {
    pub tenant_id: String,
    /// Idempotency key at scheduling: the complaint, the purpose and the round.
    pub source_event_id: String,
    /// The fact type the tenant's policy for this purpose is triggered by.
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub customer: Customer,
    pub department: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Scheduling's answer to a callback request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackAnswer {
    /// The callbacks it scheduled (none when no policy matched).
    Scheduled(Vec<Uuid>),
    /// It refused the request for good (e.g. the tenant is unknown there).
    Refused(String),
}

/// The scheduling service, as complaint routing uses it.
pub trait SchedulingPort: Send + Sync + 'static {
    /// Asks for a callback; idempotent on `source_event_id`. An error means scheduling could
    /// not be reached (`Error::Scheduling`): the request is retried later.
    fn request_callback(
        &self,
        request: CallbackRequest,
    ) -> BoxFuture<'_, Result<CallbackAnswer, Error>>;
}
