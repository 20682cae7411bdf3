//! The scheduling service's commands and queries. Each command writes its events and the
//! projection rows they imply in one transaction; projections are rebuilt from the log by
//! the same row-writing functions ([`Scheduling::rebuild_projections`]).

use std::collections::HashMap;
use std::sync::Arc;

use callback_calendar::Calendar;
use callback_eventstore::{
    EventStore, ExpectedVersion, Filter, NewEvent, RecordedEvent, StreamAppend, StreamName,
};
use callback_kit::telemetry::event_metadata;
use callback_rules::Clock;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

pub use callback_contracts::scheduling::{
    BusinessEventIngested, ClearContact, PolicyPublished, ScheduledSummary, SubjectContact,
    TenantPublished,
};
use callback_contracts::EventContract;

use crate::domain::{validate_settings, CallbackError, LeaseRefusal};
use crate::domain::{
    CallbackEvent, CallbackState, Disposition, Finished, OwnerRule, PlannedCallback, Policy,
    Scheduled, Status, TenantSettings,
};
use crate::error::{invalid, Error, Result};

mod claims;
mod contacts;
mod erasure;
pub use erasure::{Erasure, MAX_ERASURE_REASON};
mod ingests;
mod outcome_batch;
mod outcomes;
mod queries;
mod queue_starts;
mod read_model;
mod tenants;

use ingests::*;
use read_model::*;
pub use read_model::{CallbackRow, CALLBACK_COLUMNS};
use tenants::*;

pub use outcome_batch::{OutcomeApplied, ReportedOutcome};
use queue_starts::{QueueKey, QueueStarts};

/// Namespace of deterministic callback ids (UUIDv5): the same fact, policy, step and
/// occurrence always give the same id, so a replay can never create a second callback.
const CALLBACK_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_0b8a_4c0e_4f7e_9a55_1c2b_7e3d_9f01);

const MAX_LEASE_SECONDS: u32 = 3600;

/// How many callbacks one `get_callbacks` reads.
const MAX_CALLBACKS_PER_READ: usize = 1000;

/// How many capped candidates one claim defers before giving up for this call.
const MAX_DEFERRALS_PER_CLAIM: usize = 20;

/// A lease an agent says it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseToCheck {
    pub callback_id: Uuid,
    pub agent_id: String,
    pub lease_id: Uuid,
}

/// The answer to an ingest.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestResult {
    pub duplicate: bool,
    pub scheduled: Vec<ScheduledSummary>,
    pub cancelled: Vec<Uuid>,
}

/// A callback handed to an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub state: CallbackState,
    pub lease_id: Uuid,
    pub lease_until: DateTime<Utc>,
    pub subject: SubjectContact,
}

/// A callback and its history, possibly as of a past time.
#[derive(Clone, Debug)]
pub struct CallbackRecord {
    pub state: CallbackState,
    pub history: Vec<RecordedEvent>,
}

#[derive(Clone)]
pub struct Scheduling {
    store: EventStore,
    /// The keys subjects' contact details are sealed with.
    vault: callback_vault::Vault,
    clock: Arc<dyn Clock>,
    tenants: Arc<std::sync::Mutex<HashMap<String, CachedTenant>>>,
    claims: claims::ClaimQueue,
    ingests: ingests::IngestQueue,
    /// Where claims start their walk of each tenant's queue (see `queue_starts`).
    queue_starts: queue_starts::QueueStarts,
}

/// Parsed tenant settings, kept: every ingest and claim needs them, and parsing the settings
/// and building the calendar costs more than the rest of a claim's own work. This instance's
/// publish drops its entry at once; another instance's, when its event arrives on this
/// instance's subscription to the `tenant` category ([`Scheduling::forget_tenant`]);
/// [`TENANT_CACHE_TTL`] is the fallback should that subscription lag.
#[derive(Clone)]
struct CachedTenant {
    loaded: std::time::Instant,
    settings: Arc<TenantSettings>,
    calendar: Arc<Calendar>,
}

const TENANT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

fn queue_closed(closed: callback_kit::batch::QueueClosed) -> Error {
    Error::Store(callback_eventstore::Error::Background(closed.to_string()))
}

fn stream(category: &str, id: String) -> Result<StreamName> {
    Ok(StreamName::new(category, id)?)
}

fn tenant_stream(tenant_id: &str) -> Result<StreamName> {
    stream(TenantPublished::CATEGORY, tenant_id.to_owned())
}

fn policy_stream(tenant_id: &str, policy_id: &str) -> Result<StreamName> {
    stream(
        PolicyPublished::CATEGORY,
        format!("{tenant_id}:{policy_id}"),
    )
}

fn fact_stream(tenant_id: &str, source: &str, source_event_id: &str) -> Result<StreamName> {
    stream(
        BusinessEventIngested::CATEGORY,
        format!("{tenant_id}:{source}:{source_event_id}"),
    )
}

fn callback_stream(callback_id: Uuid) -> Result<StreamName> {
    stream(CallbackEvent::CATEGORY, callback_id.to_string())
}

fn new_event(event: &impl EventContract, tenant_id: &str) -> Result<NewEvent> {
    Ok(callback_kit::events::new_event(event)?
        .with_metadata(event_metadata(Some(tenant_id), Some("system:scheduling"))))
}

fn decode<T: EventContract>(event: &RecordedEvent) -> Result<T> {
    callback_kit::events::decode(event).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A decision the callback's domain refused, as the service's error.
fn callback_refused(e: CallbackError) -> Error {
    match e {
        CallbackError::NotClaimant => invalid("agent_id", e.to_string()),
        CallbackError::NamedTimeInPast => invalid("disposition.named_time", e.to_string()),
        CallbackError::NotFound => Error::NotFound("callback".into()),
        CallbackError::Closed(_) | CallbackError::NotClaimable => {
            Error::FailedPrecondition(e.to_string())
        }
    }
}

/// The policy a `PolicyPublished` carries, in the domain's terms.
fn published_policy(published: PolicyPublished) -> Result<Policy> {
    serde_json::from_value(published.policy).map_err(|e| Error::Corrupt(format!("policy: {e}")))
}

/// A callback's state from its recorded events (`None` for an empty or unknown stream).
fn callback_state(history: &[RecordedEvent]) -> Result<Option<CallbackState>> {
    let mut state = None;
    for event in history {
        state = CallbackState::evolve(state, &decode::<CallbackEvent>(event)?);
    }
    Ok(state)
}

pub(crate) fn validate_id(field: &str, value: &str) -> Result<()> {
    match callback_rules::ids::id_problem(value) {
        None => Ok(()),
        Some(reason) => Err(invalid(field, reason)),
    }
}

/// A phone number: digits with an optional leading `+`, spaces and dashes allowed, 5 to 20
/// digits.
pub(crate) fn validate_phone(field: &str, phone: &str) -> Result<()> {
    match callback_rules::ids::phone_problem(phone) {
        None => Ok(()),
        Some(reason) => Err(invalid(field, reason)),
    }
}

impl Scheduling {
    pub fn new(store: EventStore, vault: callback_vault::Vault, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            vault,
            clock,
            tenants: Arc::default(),
            claims: claims::ClaimQueue::default(),
            ingests: ingests::IngestQueue::default(),
            queue_starts: queue_starts::QueueStarts::default(),
        }
    }

    /// This handle without its command queues, for the queues' own workers.
    fn without_queues(&self) -> Self {
        Self {
            claims: Default::default(),
            ingests: Default::default(),
            ..self.clone()
        }
    }

    pub fn vault(&self) -> &callback_vault::Vault {
        &self.vault
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ---- tenants and policies ----

    // ---- ingest ----

    /// Appends callback events with the version check and writes the resulting row.
    async fn append_callback(
        &self,
        tx: &mut PgConnection,
        state: Option<CallbackState>,
        version: u64,
        events: &[CallbackEvent],
        tenant_id: &str,
    ) -> Result<CallbackState> {
        let mut next = state;
        for event in events {
            next = CallbackState::evolve(next, event);
        }
        let next =
            next.ok_or_else(|| Error::Corrupt("callback events without CallbackScheduled".into()))?;
        let new_events = events
            .iter()
            .map(|e| new_event(e, tenant_id))
            .collect::<Result<Vec<_>>>()?;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let result = self
            .store
            .append_in(
                tx,
                &callback_stream(next.scheduled.callback_id)?,
                expected,
                &new_events,
            )
            .await?;
        project_callback(tx, &self.queue_starts, &next, result.stream_version).await?;
        Ok(next)
    }

    /// Appends the new events of several callbacks in one statement, each stream expected at
    /// the version before them, and writes the rows of the states they lead to. Each change
    /// is (the state after its events, the stream version before them, the events).
    async fn append_callbacks(
        &self,
        tx: &mut PgConnection,
        changes: &[(&CallbackState, u64, &[CallbackEvent])],
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut streams = Vec::with_capacity(changes.len());
        let mut events: Vec<Vec<NewEvent>> = Vec::with_capacity(changes.len());
        for (state, _, new) in changes {
            let s = &state.scheduled;
            streams.push(callback_stream(s.callback_id)?);
            events.push(
                new.iter()
                    .map(|e| new_event(e, &s.tenant_id))
                    .collect::<Result<_>>()?,
            );
        }
        let appends: Vec<StreamAppend> = changes
            .iter()
            .zip(&streams)
            .zip(&events)
            .map(|(((_, version, _), stream), events)| StreamAppend {
                stream,
                expected: ExpectedVersion::Exact(*version),
                events,
            })
            .collect();
        let written = self.store.append_streams_in(tx, &appends).await?;
        let rows: Vec<(&CallbackState, u64)> = changes
            .iter()
            .zip(&written)
            .map(|((state, _, _), result)| (*state, result.stream_version))
            .collect();
        project_callbacks(tx, &self.queue_starts, &rows).await
    }

    /// A callback's current state and stream version, folded from its stream.
    pub async fn load(&self, callback_id: Uuid) -> Result<(CallbackState, u64)> {
        let mut conn = self.store.pool().acquire().await?;
        self.load_on(&mut conn, callback_id).await
    }

    /// [`Scheduling::load`] inside a transaction (no second connection per command).
    async fn load_on(
        &self,
        conn: &mut PgConnection,
        callback_id: Uuid,
    ) -> Result<(CallbackState, u64)> {
        let events = self
            .store
            .read_stream_on(conn, &callback_stream(callback_id)?, 1)
            .await?;
        let state = callback_state(&events)?
            .ok_or_else(|| Error::NotFound(format!("callback `{callback_id}`")))?;
        Ok((state, events.len() as u64))
    }

    // ---- claiming ----

    // ---- outcomes and deadlines ----

    // ---- queries ----

    // ---- rebuild ----
}

// ---- projection rows (shared by commands and rebuild) ----
