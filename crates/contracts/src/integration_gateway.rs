//! Events of the integration gateway.
//!
//! Categories: `integration_settings` ([`IntegrationSettingsPublished`], one stream per
//! tenant) and `notification` ([`NotificationDelivered`], [`NotificationDeadLettered`],
//! [`NotificationRequeued`], one stream per delivery). The facts the gateway receives are not
//! its events: it hands them to scheduling and call logging, which record them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::single_event;

pub const INTEGRATION_SETTINGS: &str = "integration_settings";
pub const NOTIFICATION: &str = "notification";
/// Every category the gateway owns and serves on its feed.
pub const CATEGORIES: &[&str] = &[INTEGRATION_SETTINGS, NOTIFICATION];

/// A new version of a tenant's integration settings: the validated document as published
/// (defaults are not written out, so a later default applies to it). Secrets are named, never
/// included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntegrationSettingsPublished {
    pub tenant_id: String,
    pub settings: serde_json::Value,
    /// The admin who published.
    pub actor: String,
    pub at: DateTime<Utc>,
}
single_event!(IntegrationSettingsPublished, INTEGRATION_SETTINGS);

/// A notification reached its receiver (a 2xx answer). Its id is the delivery's idempotency
/// key, derived from the subscription and the event notified of, so it is the same on every
/// retry and every rebuild.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationDelivered {
    pub tenant_id: String,
    pub delivery_id: Uuid,
    pub subscription: String,
    /// e.g. `complaint.escalated`.
    pub topic: String,
    /// The event notified of.
    pub event_id: Uuid,
    pub attempts: u32,
    /// The receiver's HTTP status.
    pub status: u16,
    pub at: DateTime<Utc>,
}
single_event!(NotificationDelivered, NOTIFICATION);

/// Every retry failed: the notification waits in the dead-letter list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationDeadLettered {
    pub tenant_id: String,
    pub delivery_id: Uuid,
    pub subscription: String,
    pub topic: String,
    pub event_id: Uuid,
    pub attempts: u32,
    /// The last failure (an HTTP status or a connection error), without personal data.
    pub last_error: String,
    pub at: DateTime<Utc>,
}
single_event!(NotificationDeadLettered, NOTIFICATION);

/// An admin put a dead letter back in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequeued {
    pub tenant_id: String,
    pub delivery_id: Uuid,
    pub actor: String,
    pub at: DateTime<Utc>,
}
single_event!(NotificationRequeued, NOTIFICATION);
