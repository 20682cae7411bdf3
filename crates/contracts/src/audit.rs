//! Events every service writes about access itself: refusals of authenticated callers. Not
//! served on any feed; read by auditors (SQL, the BI schema). Carries no personal data: the
//! principal's subject, the RPC, the tenant asked for, why.
//!
//! Category: `access_audit` ([`AccessRefused`]), one stream per service and day
//! (`access_audit-<service>:<yyyy-mm-dd>`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::single_event;

pub const ACCESS_AUDIT: &str = "access_audit";

/// An authenticated caller was refused (PERMISSION_DENIED): another tenant, a missing role, an
/// agent acting as another, a feed for a non-service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRefused {
    /// The service that refused.
    pub service: String,
    /// The RPC's path, e.g. `/callback.v1.Scheduling/ClaimNext`.
    pub method: String,
    /// The authenticated principal (a token's `sub`, a certificate's mapped subject).
    pub subject: String,
    /// `bearer_token` or `client_certificate`.
    pub credential: String,
    /// The tenant the request named, when the refusal was about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub reason: String,
    pub at: DateTime<Utc>,
}
single_event!(AccessRefused, ACCESS_AUDIT);
