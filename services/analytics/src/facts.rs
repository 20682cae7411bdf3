//! The fact tables, folded from the other services' feeds. Each consumer folds a batch in
//! memory (one delta per callback or complaint) and writes each table once per batch with a
//! multi-row upsert, in the transaction that also stores its checkpoint; so every event counts
//! once, and late or out-of-order facts (a correction, a late telephony record) simply update
//! the rows they concern.

use std::collections::HashMap;

use callback_contracts::call_logging::{
    HonestyFlagRaised, QuestionnairePublished, SharedContactFlagged, SurveyAnswered,
};
use callback_contracts::complaint_routing::{ClockName, ComplaintEvent};
use callback_contracts::scheduling::{
    AttemptedView, CallbackEvent, EndedView, RescheduledView, ScheduledView, TenantPublished,
};
use callback_contracts::{EventContract, EventView};
use callback_eventstore::{BatchProjection, RecordedEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::copy::BinaryRows;
use crate::Error;

mod answers;
mod callbacks;
mod complaints;

pub use answers::{numeric_answer, CallLoggingBatch, CallLoggingFacts};
pub use callbacks::{SchedulingBatch, SchedulingFacts};
pub use complaints::{ComplaintDelta, ComplaintFacts};

/// Events per consumer transaction: each batch is folded in memory and written once, so larger
/// batches mean fewer statements and commits while catching up.
pub const BATCH: usize = 10_000;

pub const SCHEDULING_CATEGORIES: [&str; 2] = [TenantPublished::CATEGORY, CallbackEvent::CATEGORY];
/// The scheduling events the callback facts use; claims (a fifth of a callback's events) are
/// filtered out by the feed instead of shipped and ignored.
pub const SCHEDULING_EVENT_TYPES: [&str; 8] = [
    TenantPublished::EVENT_TYPE,
    CallbackEvent::SCHEDULED,
    CallbackEvent::ATTEMPTED,
    CallbackEvent::RESCHEDULED,
    CallbackEvent::COMPLETED,
    CallbackEvent::LOST,
    CallbackEvent::SKIPPED,
    CallbackEvent::CANCELLED,
];
pub const CALL_LOGGING_CATEGORIES: [&str; 4] = [
    QuestionnairePublished::CATEGORY,
    SurveyAnswered::CATEGORY,
    callback_contracts::call_logging::TELEPHONY,
    SharedContactFlagged::CATEGORY,
];
pub const CALL_LOGGING_EVENT_TYPES: [&str; 4] = [
    QuestionnairePublished::EVENT_TYPE,
    SurveyAnswered::EVENT_TYPE,
    HonestyFlagRaised::EVENT_TYPE,
    SharedContactFlagged::EVENT_TYPE,
];
pub const COMPLAINT_CATEGORIES: [&str; 1] = [ComplaintEvent::CATEGORY];

/// A payload that does not decode is a defect upstream; it is skipped by event id (it stays in
/// the log) rather than stopping every report.
fn decode<T: EventContract>(event: &RecordedEvent) -> Option<T> {
    skip_undecodable(event, callback_kit::events::decode(event))
}

/// Like [`decode`], for the part of an event a view reads.
fn decode_view<V: EventView>(event: &RecordedEvent) -> Option<V> {
    let view =
        callback_contracts::decode_view(&event.event_type, event.schema_version, &event.payload)
            .map_err(|e| e.to_string());
    skip_undecodable(event, view)
}

fn skip_undecodable<T, E: std::fmt::Display>(
    event: &RecordedEvent,
    decoded: Result<T, E>,
) -> Option<T> {
    match decoded {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(event_id = %event.event_id, event_type = %event.event_type, %error, "undecodable fact skipped");
            None
        }
    }
}

/// The id of an event's stream of `category` (`<category>-<uuid>`).
fn stream_uuid(event: &RecordedEvent, category: &str) -> Option<Uuid> {
    event
        .stream_id
        .strip_prefix(category)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

// ---- scheduling: tenants and callbacks ----

// ---- call-logging: questionnaires, answers, honesty flags ----

// ---- complaint routing: complaints ----
