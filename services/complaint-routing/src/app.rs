//! Complaint routing's commands and queries. Each command writes its events and the
//! complaint's read-model row (a snapshot of its folded state) in one transaction; a rebuild
//! writes the same rows from the log with the same function ([`project_complaint`]).
//!
//! Every command first fires the complaint's timers that have fallen due, so an action taken
//! before the sweep came round still sees (and records) the breaches that preceded it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use callback_calendar::Calendar;
use callback_eventstore::{
    EventStore, ExpectedVersion, Filter, NewEvent, RecordedEvent, StreamName,
};
use callback_kit::telemetry::event_metadata;
use callback_rules::Clock;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use callback_contracts::complaint_routing::{ComplaintParked, RoutingRulesPublished};
use callback_contracts::EventContract;

use crate::domain::ClassRules;
use crate::domain::{
    self, Action, CallbackPurpose, ComplaintEvent, ComplaintState, Context, Intake, RoutingRules,
    Status,
};
use crate::error::{invalid, Error, Result};
use crate::ports::{CallbackAnswer, CallbackRequest, SchedulingPort};

/// Namespace of complaint ids (UUIDv5 of tenant, source and source id): a retried filing can
/// only ever name the same complaint.
mod actions;
mod callbacks;
mod filing;
mod queries;
mod read_model;
mod rules;
mod sealing;
pub use sealing::{ERASED, RESTRICTED};

pub use callbacks::is_satisfied;
pub use read_model::fold;
use read_model::*;

const COMPLAINT_NAMESPACE: Uuid = Uuid::from_u128(0x9b4e_2f61_7a3c_4d58_b0e2_5c17_d8a9_3e46);

pub const FILING_CHANNELS: [&str; 7] = [
    "hotline",
    "front_desk",
    "letter",
    "suggestion_box",
    "online",
    "email",
    "wechat",
];

/// Complaints raised during a callback carry this channel and source.
pub const CALLBACK_CHANNEL: &str = "callback";

const MAX_TEXT_CHARS: usize = 4000;
const SWEEP_BATCH: i64 = 100;

/// One version of a tenant's rules, parsed, with its calendar.
#[derive(Debug)]
pub struct Rules {
    pub version: u64,
    pub rules: RoutingRules,
    pub calendar: Calendar,
}

/// A complaint's state with what is needed to show its clocks.
#[derive(Debug)]
pub struct Complaint {
    pub state: ComplaintState,
    /// The calendar of the rules version it was filed under.
    pub calendar: Arc<Rules>,
}

#[derive(Debug)]
pub struct Filing {
    pub duplicate: bool,
    pub complaint: Complaint,
}

#[derive(Debug)]
pub struct Acted {
    pub complaint: Complaint,
    pub event_types: Vec<String>,
}

#[derive(Debug)]
pub struct ComplaintRecord {
    pub complaint: Complaint,
    pub history: Vec<RecordedEvent>,
}

/// Which complaints a list asks for.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub tenant_id: String,
    pub department: String,
    pub class: String,
    pub breach: String,
    pub include_closed: bool,
    pub limit: u32,
}

#[derive(Clone)]
pub struct ComplaintRouting {
    store: EventStore,
    /// The keys complainants' contact details and complaint texts are sealed with.
    vault: callback_vault::Vault,
    clock: Arc<dyn Clock>,
    scheduling: Arc<dyn SchedulingPort>,
    /// Parsed rules by (tenant, version). Versions never change, so entries never go stale.
    rules: Arc<Mutex<RulesCache>>,
}

type RulesCache = HashMap<(String, u64), Arc<Rules>>;

pub fn complaint_id(tenant_id: &str, source: &str, source_id: &str) -> Uuid {
    Uuid::new_v5(
        &COMPLAINT_NAMESPACE,
        format!("{tenant_id}\n{source}\n{source_id}").as_bytes(),
    )
}

fn complaint_stream(complaint_id: Uuid) -> Result<StreamName> {
    Ok(StreamName::new(
        ComplaintEvent::CATEGORY,
        complaint_id.to_string(),
    )?)
}

fn rules_stream(tenant_id: &str) -> Result<StreamName> {
    Ok(StreamName::new(RoutingRulesPublished::CATEGORY, tenant_id)?)
}

fn intake_stream(tenant_id: &str) -> Result<StreamName> {
    Ok(StreamName::new(ComplaintParked::CATEGORY, tenant_id)?)
}

/// A new event of complaint routing's, with the tenant and the actor in its metadata.
fn new_event(event: &impl EventContract, tenant_id: &str, actor: &str) -> Result<NewEvent> {
    Ok(callback_kit::events::new_event(event)?
        .with_metadata(event_metadata(Some(tenant_id), Some(actor))))
}

/// The routing rules a `RoutingRulesPublished` carries, in the domain's terms.
fn published_rules(published: RoutingRulesPublished) -> Result<RoutingRules> {
    serde_json::from_value(published.rules).map_err(|e| corrupt(format!("routing rules: {e}")))
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Corrupt(e.to_string())
}

pub(crate) fn validate_id(field: &str, value: &str) -> Result<()> {
    match callback_rules::ids::id_problem(value) {
        None => Ok(()),
        Some(reason) => Err(invalid(field, reason)),
    }
}

impl ComplaintRouting {
    pub fn new(
        store: EventStore,
        vault: callback_vault::Vault,
        clock: Arc<dyn Clock>,
        scheduling: Arc<dyn SchedulingPort>,
    ) -> Self {
        Self {
            store,
            vault,
            clock,
            scheduling,
            rules: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ---- rules ----

    // ---- filing ----

    // ---- department actions ----

    // ---- timers ----

    // ---- callbacks through scheduling ----

    // ---- storage ----

    // ---- queries ----

    // ---- rebuild ----
}

// ---- projection rows (shared by commands and rebuild) ----
