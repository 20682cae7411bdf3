//! What call-logging needs from other services, as traits of the application layer. The
//! adapters that speak gRPC live at the edge (`crate::scheduling_client`); tests may provide
//! their own.

use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

use crate::error::Error;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lease an agent says it holds, as its attempt reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseClaim {
    pub callback_id: Uuid,
    pub agent_id: String,
    pub lease_id: Uuid,
}

/// Scheduling's answer for one lease (the lease rule is scheduling's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// The agent holds the lease; the callback is about `subject_id`, of `department` (empty
    /// when none).
    Held {
        subject_id: String,
        department: String,
        /// The questionnaire the callback's step asks (empty when none).
        questionnaire_id: String,
    },
    /// The tenant has no such callback.
    NotFound,
    /// The callback is not claimed; its status.
    NotClaimed { status: String },
    /// Claimed by another agent or under another lease.
    NotHeld,
}

/// The scheduling service, as call-logging uses it.
pub trait SchedulingPort: Send + Sync + 'static {
    /// Scheduling's verdict on each lease of one tenant, in the order given, fresh (not a
    /// lagging copy). An error means scheduling could not answer (`Error::Unavailable`) or the
    /// request was malformed (`Error::InvalidArgument`).
    fn check_leases<'a>(
        &'a self,
        tenant_id: &'a str,
        leases: &'a [LeaseClaim],
    ) -> BoxFuture<'a, Result<Vec<LeaseVerdict>, Error>>;
}
