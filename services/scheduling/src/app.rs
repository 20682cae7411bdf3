//! The scheduling service's commands and queries. Each command writes its events and the
//! projection rows they imply in one transaction; projections are rebuilt from the log by
//! the same row-writing functions ([`Scheduling::rebuild_projections`]).

use std::collections::HashMap;
use std::sync::Arc;

use callback_calendar::Calendar;
use callback_eventstore::{
    Checkpoint, EventStore, ExpectedVersion, Filter, NewEvent, RecordedEvent, StreamAppend,
    StreamName,
};
use callback_kit::telemetry::event_metadata;
use callback_rules::Clock;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

pub use callback_contracts::scheduling::{
    BusinessEventIngested, PolicyPublished, ScheduledSummary, SubjectContact, TenantPublished,
};
use callback_contracts::EventContract;

use crate::domain::{validate_settings, CallbackError, LeaseRefusal};
use crate::domain::{
    BusinessFact, CallbackEvent, CallbackState, Disposition, Finished, OwnerRule, PlannedCallback,
    Policy, Scheduled, Status, TenantSettings,
};
use crate::error::{invalid, Error, Result};

mod claims;
mod ingests;
mod outcome_batch;
mod queue_starts;

pub use outcome_batch::ReportedOutcome;
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
    clock: Arc<dyn Clock>,
    tenants: Arc<std::sync::Mutex<HashMap<String, CachedTenant>>>,
    claims: claims::ClaimQueue,
    ingests: ingests::IngestQueue,
    /// Where claims start their walk of each tenant's queue (see `queue_starts`).
    queue_starts: queue_starts::QueueStarts,
}

/// Parsed tenant settings, kept briefly: every ingest and claim needs them, and parsing the
/// settings and building the calendar costs more than the rest of a claim's own work.
/// Another instance's publish is seen within [`TENANT_CACHE_TTL`]; this instance's at once.
#[derive(Clone)]
struct CachedTenant {
    loaded: std::time::Instant,
    settings: Arc<TenantSettings>,
    calendar: Arc<Calendar>,
}

const TENANT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

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
    pub fn new(store: EventStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
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

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ---- tenants and policies ----

    #[tracing::instrument(name = "scheduling.publish_tenant", skip_all, fields(tenant_id))]
    pub async fn publish_tenant(&self, tenant_id: &str, settings_json: &str) -> Result<u64> {
        validate_id("tenant_id", tenant_id)?;
        let settings: TenantSettings = serde_json::from_str(settings_json)
            .map_err(|e| invalid("settings_json", e.to_string()))?;
        validate_settings(&settings).map_err(|e| match e {
            crate::domain::SettingsError::Calendar(c) => invalid("settings_json", c.to_string()),
            crate::domain::SettingsError::Invalid { field, reason } => {
                invalid(format!("settings_json.{field}"), reason)
            }
        })?;
        let published = TenantPublished {
            tenant_id: tenant_id.to_owned(),
            settings,
        };
        let mut tx = self.store.begin().await?;
        let result = self
            .store
            .append_in(
                &mut tx,
                &tenant_stream(tenant_id)?,
                ExpectedVersion::Any,
                &[new_event(&published, tenant_id)?],
            )
            .await?;
        project_tenant(&mut tx, &published, result.stream_version).await?;
        self.store.commit(tx).await?;
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant_id);
        tracing::info!(version = result.stream_version, "tenant settings published");
        Ok(result.stream_version)
    }

    async fn tenant(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
    ) -> Result<(Arc<TenantSettings>, Arc<Calendar>)> {
        if let Some(cached) = self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant_id)
            .filter(|c| c.loaded.elapsed() < TENANT_CACHE_TTL)
        {
            return Ok((cached.settings.clone(), cached.calendar.clone()));
        }
        let row = sqlx::query("SELECT settings FROM sched_tenants WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(conn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant `{tenant_id}`")))?;
        let settings: TenantSettings = serde_json::from_value(row.try_get("settings")?)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let calendar = validate_settings(&settings).map_err(|e| Error::Corrupt(e.to_string()))?;
        let cached = CachedTenant {
            loaded: std::time::Instant::now(),
            settings: Arc::new(settings),
            calendar: Arc::new(calendar),
        };
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant_id.to_owned(), cached.clone());
        Ok((cached.settings, cached.calendar))
    }

    #[tracing::instrument(name = "scheduling.publish_policy", skip_all, fields(tenant_id))]
    pub async fn publish_policy(
        &self,
        tenant_id: &str,
        policy_json: &str,
    ) -> Result<(String, u64)> {
        validate_id("tenant_id", tenant_id)?;
        let policy: Policy =
            serde_json::from_str(policy_json).map_err(|e| invalid("policy_json", e.to_string()))?;
        policy
            .validate()
            .map_err(|e| invalid(format!("policy_json.{}", e.field), e.reason))?;
        let mut tx = self.store.begin().await?;
        self.tenant(&mut tx, tenant_id).await?;
        let published = PolicyPublished {
            tenant_id: tenant_id.to_owned(),
            policy: serde_json::to_value(&policy).map_err(|e| Error::Corrupt(e.to_string()))?,
        };
        let result = self
            .store
            .append_in(
                &mut tx,
                &policy_stream(tenant_id, &policy.policy_id)?,
                ExpectedVersion::Any,
                &[new_event(&published, tenant_id)?],
            )
            .await?;
        project_policy(&mut tx, tenant_id, &policy, result.stream_version).await?;
        self.store.commit(tx).await?;
        tracing::info!(policy_id = %policy.policy_id, version = result.stream_version, "policy published");
        Ok((policy.policy_id, result.stream_version))
    }

    // ---- ingest ----

    /// Turns a business fact into callbacks (and cancels those a correcting fact affects).
    #[tracing::instrument(name = "scheduling.ingest", skip_all, fields(tenant_id = %fact.tenant_id, event_type = %fact.event_type))]
    pub async fn ingest(
        &self,
        fact: BusinessFact,
        subject: SubjectContact,
    ) -> Result<IngestResult> {
        validate_id("tenant_id", &fact.tenant_id)?;
        validate_id("source", &fact.source)?;
        if fact.source_event_id.is_empty() || fact.source_event_id.len() > 128 {
            return Err(invalid("source_event_id", "must be 1-128 characters"));
        }
        if fact.event_type.is_empty() || fact.event_type.len() > 100 {
            return Err(invalid("event_type", "must be 1-100 characters"));
        }
        if subject.subject_id.trim().is_empty() || subject.subject_id.len() > 128 {
            return Err(invalid("subject.subject_id", "must be 1-128 characters"));
        }
        for (i, phone) in subject.phones.iter().enumerate() {
            validate_phone(&format!("subject.phones[{i}]"), phone)?;
        }
        let fact_name = fact_stream(&fact.tenant_id, &fact.source, &fact.source_event_id)?;
        // Served together with other ingests arriving at the same time.
        self.ingests
            .ask(
                |reply| ingests::IngestRequest {
                    fact,
                    subject,
                    fact_name,
                    reply,
                },
                self.store.pool(),
                || self.without_queues(),
                ingests::SERVE_INGESTS,
            )
            .await
            .map_err(queue_closed)?
    }

    /// One ingest in a transaction of its own: the path for facts a batch does not take.
    async fn ingest_alone(
        &self,
        fact: BusinessFact,
        subject: SubjectContact,
        fact_name: StreamName,
    ) -> Result<IngestResult> {
        // A retry of a fact already ingested is found when its streams turn out to exist
        // (below), not by a read before every ingest: retries are rare.
        let now = self.now();
        let mut tx = self.store.begin().await?;
        match self
            .ingest_in(&mut tx, &fact, subject, &fact_name, now)
            .await
        {
            Ok(result) => {
                self.store.commit(tx).await?;
                tracing::info!(
                    scheduled = result.scheduled.len(),
                    cancelled = result.cancelled.len(),
                    "business event ingested"
                );
                Ok(result)
            }
            // A stream this fact writes exists already (the fact's own, or a callback planned
            // from it: their ids derive from the fact): ingested before, or a concurrent retry
            // won. Nothing of this attempt is kept; the answer is the recorded one.
            // Any other conflict (a callback changed meanwhile) is the caller's to retry.
            Err(error @ Error::Store(callback_eventstore::Error::VersionConflict { .. })) => {
                drop(tx);
                self.recorded_ingest(&fact_name).await?.ok_or(error)
            }
            Err(error) => Err(error),
        }
    }

    /// The writes of one ingest, in the caller's transaction.
    async fn ingest_in(
        &self,
        tx: &mut PgConnection,
        fact: &BusinessFact,
        subject: SubjectContact,
        fact_name: &StreamName,
        now: DateTime<Utc>,
    ) -> Result<IngestResult> {
        let (_, calendar) = self.tenant(tx, &fact.tenant_id).await?;
        let policies = policies_for(tx, &fact.tenant_id, &fact.event_type).await?;
        let subject = with_known_contact(tx, &fact.tenant_id, subject).await?;

        let mut cancelled = Vec::new();
        for (policy, _) in policies.iter().filter(|(p, _)| {
            p.cancel_on.contains(&fact.event_type) || p.reschedule_on.contains(&fact.event_type)
        }) {
            let verb = if policy.reschedule_on.contains(&fact.event_type) {
                "moved"
            } else {
                "cancelled"
            };
            cancelled.extend(
                self.cancel_open(
                    tx,
                    &fact.tenant_id,
                    &fact.subject_id,
                    &policy.policy_id,
                    &format!("{verb} by {}", fact.event_type),
                    now,
                )
                .await?,
            );
        }
        let mut scheduled = Vec::new();
        for (policy, version) in policies.iter().filter(|(p, _)| p.matches(fact)) {
            if let Some(plan) = policy.first_callback(fact, &calendar, now) {
                if let Some(summary) = self
                    .create_callback(tx, policy, *version, fact, &subject, fact_name, plan, now)
                    .await?
                {
                    scheduled.push(summary);
                }
            }
        }
        let ingested = BusinessEventIngested {
            fact: fact.clone(),
            subject: subject.clone(),
            scheduled: scheduled.clone(),
            cancelled: cancelled.clone(),
        };
        self.store
            .append_in(
                tx,
                fact_name,
                ExpectedVersion::NoStream,
                &[new_event(&ingested, &fact.tenant_id)?],
            )
            .await?;
        project_subject(tx, &fact.tenant_id, &subject).await?;
        Ok(IngestResult {
            duplicate: false,
            scheduled,
            cancelled,
        })
    }

    async fn recorded_ingest(&self, fact_name: &StreamName) -> Result<Option<IngestResult>> {
        let events = self.store.read_stream(fact_name, 1).await?;
        match events.first() {
            None => Ok(None),
            Some(event) => {
                let recorded: BusinessEventIngested = decode(event)?;
                Ok(Some(IngestResult {
                    duplicate: true,
                    scheduled: recorded.scheduled,
                    cancelled: recorded.cancelled,
                }))
            }
        }
    }

    /// Writes a planned callback (or nothing when sampling left it out).
    #[allow(clippy::too_many_arguments)]
    async fn create_callback(
        &self,
        tx: &mut PgConnection,
        policy: &Policy,
        policy_version: u64,
        fact: &BusinessFact,
        subject: &SubjectContact,
        fact_name: &StreamName,
        plan: PlannedCallback,
        now: DateTime<Utc>,
    ) -> Result<Option<ScheduledSummary>> {
        let Some(events) =
            new_callback_events(policy, policy_version, fact, subject, fact_name, &plan, now)
        else {
            return Ok(None);
        };
        let state = self
            .append_callback(tx, None, 0, &events, &fact.tenant_id)
            .await?;
        Ok(Some(scheduled_summary(&state)))
    }

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

    /// Cancels the open callbacks of a subject under a policy (or all policies when `None`).
    async fn cancel_open(
        &self,
        tx: &mut PgConnection,
        tenant_id: &str,
        subject_id: &str,
        policy_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT callback_id FROM sched_callbacks WHERE tenant_id = $1 AND subject_id = $2 AND policy_id = $3 \
             AND status IN ('scheduled', 'claimed') ORDER BY callback_id FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(subject_id)
        .bind(policy_id)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            let (state, version) = self.load_on(tx, *id).await?;
            let cancel = state.decide_cancel(reason, now).map_err(callback_refused)?;
            self.append_callback(tx, Some(state), version, &[cancel], tenant_id)
                .await?;
        }
        Ok(ids)
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

    /// Hands the most urgent due callback the agent may take to the agent under a lease.
    #[tracing::instrument(name = "scheduling.claim_next", skip_all, fields(tenant_id, agent_id))]
    pub async fn claim_next(
        &self,
        tenant_id: &str,
        agent_id: &str,
        departments: &[String],
        lease_seconds: u32,
    ) -> Result<Option<Claim>> {
        validate_id("tenant_id", tenant_id)?;
        if agent_id.is_empty() {
            return Err(invalid("agent_id", "must not be empty"));
        }
        if lease_seconds > MAX_LEASE_SECONDS {
            return Err(invalid(
                "lease_seconds",
                format!("at most {MAX_LEASE_SECONDS}"),
            ));
        }
        let lease = if lease_seconds == 0 {
            crate::domain::callback::DEFAULT_LEASE
        } else {
            Duration::seconds(i64::from(lease_seconds))
        };
        // Served together with the claims of other agents arriving at the same time.
        self.claims
            .ask(
                |reply| claims::ClaimRequest {
                    tenant_id: tenant_id.to_owned(),
                    agent_id: agent_id.to_owned(),
                    departments: departments.to_vec(),
                    lease,
                    reply,
                },
                self.store.pool(),
                || self.without_queues(),
                claims::SERVE_CLAIMS,
            )
            .await
            .map_err(queue_closed)?
    }

    // ---- outcomes and deadlines ----

    /// Applies an attempt's outcome reported by the claiming agent. Idempotent on
    /// `attempt_id`: a repeated report changes nothing.
    #[tracing::instrument(name = "scheduling.record_outcome", skip_all, fields(callback_id = %callback_id, disposition = disposition.name()))]
    pub async fn record_outcome(
        &self,
        callback_id: Uuid,
        attempt_id: &str,
        agent_id: &str,
        lease_id: Uuid,
        disposition: &Disposition,
        at: DateTime<Utc>,
    ) -> Result<CallbackState> {
        let mut tx = self.store.begin().await?;
        let state = self
            .record_outcome_in(
                &mut tx,
                callback_id,
                attempt_id,
                agent_id,
                lease_id,
                disposition,
                at,
            )
            .await?;
        self.store.commit(tx).await?;
        Ok(state)
    }

    /// [`Scheduling::record_outcome`] inside the caller's transaction (the outcome consumer
    /// applies a whole batch, with its checkpoint, in one). A refused outcome (not the lease
    /// holder, closed) is refused before anything is written, so the transaction stays usable.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_outcome_in(
        &self,
        tx: &mut PgConnection,
        callback_id: Uuid,
        attempt_id: &str,
        agent_id: &str,
        lease_id: Uuid,
        disposition: &Disposition,
        at: DateTime<Utc>,
    ) -> Result<CallbackState> {
        // The row lock first, as every other writer of a callback takes it: without it a
        // claimer could lock the row and wait on this transaction's append while this one
        // waits on the row to project it (a deadlock).
        sqlx::query("SELECT 1 FROM sched_callbacks WHERE callback_id = $1 FOR UPDATE")
            .bind(callback_id)
            .fetch_optional(&mut *tx)
            .await?;
        let events = self
            .store
            .read_stream_on(tx, &callback_stream(callback_id)?, 1)
            .await?;
        let mut state = None;
        let mut already = false;
        for event in &events {
            let event = decode::<CallbackEvent>(event)?;
            already |= matches!(&event, CallbackEvent::CallbackAttempted { attempt_id: a, .. } if a == attempt_id);
            state = CallbackState::evolve(state, &event);
        }
        let state = state.ok_or_else(|| Error::NotFound(format!("callback `{callback_id}`")))?;
        let version = events.len() as u64;
        if already {
            return Ok(state);
        }
        let (_, calendar) = self.tenant(tx, &state.scheduled.tenant_id).await?;
        let decided = state
            .decide_outcome(attempt_id, agent_id, lease_id, disposition, at, &calendar)
            .map_err(callback_refused)?;
        let tenant_id = state.scheduled.tenant_id.clone();
        let next = self
            .append_callback(tx, Some(state), version, &decided, &tenant_id)
            .await?;
        for event in &decided {
            if let CallbackEvent::CallbackAttempted { attempt_id, at, .. } = event {
                project_attempt(tx, &next, attempt_id, *at).await?;
            }
        }
        if !next.status.is_open() {
            self.schedule_next(tx, &next, &calendar, at).await?;
        }
        if *disposition == Disposition::DoNotCall {
            // Do-not-call covers every policy of the tenant for this subject.
            let policies: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT policy_id FROM sched_callbacks WHERE tenant_id = $1 AND subject_id = $2 \
                 AND status IN ('scheduled', 'claimed')",
            )
            .bind(&tenant_id)
            .bind(&next.scheduled.subject_id)
            .fetch_all(&mut *tx)
            .await?;
            for policy_id in policies {
                self.cancel_open(
                    tx,
                    &tenant_id,
                    &next.scheduled.subject_id,
                    &policy_id,
                    "do not call",
                    at,
                )
                .await?;
            }
        }
        Ok(next)
    }

    /// After a callback ended: the next occurrence or step of its policy, with the policy
    /// version the callback was created under.
    async fn schedule_next(
        &self,
        tx: &mut PgConnection,
        ended: &CallbackState,
        calendar: &Calendar,
        ended_at: DateTime<Utc>,
    ) -> Result<()> {
        if ended.status == Status::Cancelled {
            return Ok(());
        }
        let s = &ended.scheduled;
        let policy_events = self
            .store
            .read_stream_on(
                tx,
                &policy_stream(&s.tenant_id, &s.policy_id)?,
                s.policy_version,
            )
            .await?;
        let policy = published_policy(decode(policy_events.first().ok_or_else(|| {
            Error::Corrupt(format!(
                "policy {} version {} missing",
                s.policy_id, s.policy_version
            ))
        })?)?)?;
        let fact_name = StreamName::new(
            BusinessEventIngested::CATEGORY,
            s.fact_stream
                .trim_start_matches(BusinessEventIngested::CATEGORY)
                .trim_start_matches('-'),
        )?;
        let fact_events = self.store.read_stream_on(tx, &fact_name, 1).await?;
        let ingested: BusinessEventIngested = decode(
            fact_events
                .first()
                .ok_or_else(|| Error::Corrupt(format!("fact {} missing", s.fact_stream)))?,
        )?;
        let finished = Finished {
            step: s.step_index,
            occurrence: s.occurrence,
            anchor_at: s.anchor_at,
            ended_at,
        };
        if let Some(plan) = policy.next_callback(&ingested.fact, calendar, finished) {
            self.create_callback(
                tx,
                &policy,
                s.policy_version,
                &ingested.fact,
                &ingested.subject,
                &fact_name,
                plan,
                ended_at,
            )
            .await?;
        }
        Ok(())
    }

    /// Loses every open callback whose deadline has passed (reason "deadline passed") and
    /// schedules what follows. Driven by the projection, which is derived from events, so a
    /// restart misses none; the version check means none is lost twice. Returns how many.
    #[tracing::instrument(name = "scheduling.sweep_deadlines", skip_all)]
    pub async fn sweep_deadlines(&self) -> Result<usize> {
        let now = self.now();
        let mut total = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let due: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT callback_id, tenant_id FROM sched_callbacks WHERE status IN ('scheduled', 'claimed') \
                 AND deadline <= $1 ORDER BY deadline LIMIT 200 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                return Ok(total);
            }
            let mut calendars: HashMap<String, Arc<Calendar>> = HashMap::new();
            for (callback_id, tenant_id) in &due {
                if !calendars.contains_key(tenant_id) {
                    let (_, calendar) = self.tenant(&mut tx, tenant_id).await?;
                    calendars.insert(tenant_id.clone(), calendar);
                }
                let (state, version) = self.load_on(&mut tx, *callback_id).await?;
                let lost = state.decide_expiry(now).map_err(callback_refused)?;
                let ended = self
                    .append_callback(&mut tx, Some(state), version, &[lost], tenant_id)
                    .await?;
                self.schedule_next(&mut tx, &ended, &calendars[tenant_id], now)
                    .await?;
            }
            total += due.len();
            self.store.commit(tx).await?;
        }
    }

    // ---- queries ----

    /// A callback with its full history; with `as_of`, its state from the events recorded
    /// until then (for audits).
    pub async fn get_callback(
        &self,
        tenant_id: &str,
        callback_id: Uuid,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<CallbackRecord> {
        let events = self
            .store
            .read_stream(&callback_stream(callback_id)?, 1)
            .await?;
        let history: Vec<RecordedEvent> = events
            .into_iter()
            .filter(|e| as_of.is_none_or(|t| e.recorded_at <= t))
            .collect();
        match callback_state(&history)? {
            Some(state) if state.scheduled.tenant_id == tenant_id => {
                Ok(CallbackRecord { state, history })
            }
            _ => Err(Error::NotFound(format!("callback `{callback_id}`"))),
        }
    }

    /// The current state of several callbacks of a tenant, from their streams in one read; in
    /// the order asked, an id the tenant has no callback for left out.
    pub async fn get_callbacks(
        &self,
        tenant_id: &str,
        callback_ids: &[Uuid],
    ) -> Result<Vec<CallbackState>> {
        if callback_ids.len() > MAX_CALLBACKS_PER_READ {
            return Err(invalid(
                "callback_ids",
                format!("at most {MAX_CALLBACKS_PER_READ} per request"),
            ));
        }
        let streams = callback_ids
            .iter()
            .map(|id| callback_stream(*id))
            .collect::<Result<Vec<_>>>()?;
        let mut conn = self.store.pool().acquire().await?;
        let histories = self.store.read_streams_on(&mut conn, &streams).await?;
        let mut states = Vec::with_capacity(histories.len());
        for history in &histories {
            states.extend(callback_state(history)?.filter(|s| s.scheduled.tenant_id == tenant_id));
        }
        Ok(states)
    }

    /// The lease rule ([`CallbackState::check_lease`]) for several leases of a tenant, in one
    /// read; in the order asked: `None` when the tenant has no such callback, else its state
    /// and the verdict.
    #[allow(clippy::type_complexity)]
    pub async fn check_leases(
        &self,
        tenant_id: &str,
        leases: &[LeaseToCheck],
    ) -> Result<Vec<Option<(CallbackState, std::result::Result<(), LeaseRefusal>)>>> {
        let ids: Vec<Uuid> = leases.iter().map(|l| l.callback_id).collect();
        let states = self.get_callbacks(tenant_id, &ids).await?;
        let by_id: HashMap<Uuid, &CallbackState> = states
            .iter()
            .map(|s| (s.scheduled.callback_id, s))
            .collect();
        Ok(leases
            .iter()
            .map(|lease| {
                by_id.get(&lease.callback_id).map(|state| {
                    let verdict = state.check_lease(&lease.agent_id, lease.lease_id);
                    ((*state).clone(), verdict)
                })
            })
            .collect())
    }

    /// Due (or overdue) open callbacks of a tenant, most urgent first.
    pub async fn list_callbacks(
        &self,
        tenant_id: &str,
        department: &str,
        agent_id: &str,
        overdue: bool,
        limit: u32,
    ) -> Result<Vec<CallbackRow>> {
        validate_id("tenant_id", tenant_id)?;
        let limit = if limit == 0 { 100 } else { limit.min(1000) };
        let now = self.now();
        let rows = sqlx::query_as::<_, CallbackRow>(&format!(
            "SELECT {CALLBACK_COLUMNS} FROM sched_callbacks WHERE tenant_id = $1 AND status IN ('scheduled', 'claimed') \
             AND ($2 = '' OR department = $2) AND ($3 = '' OR owner_agent_id = $3 OR claimed_by = $3) \
             AND (CASE WHEN $4 THEN deadline <= $5 ELSE due_at <= $5 END) \
             ORDER BY priority, deadline, callback_id LIMIT $6"
        ))
        .bind(tenant_id)
        .bind(department)
        .bind(agent_id)
        .bind(overdue)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows)
    }

    // ---- rebuild ----

    /// Clears every scheduling projection and rebuilds it from the log, in one transaction,
    /// with the same row-writing functions the commands use. Run with the service stopped.
    pub async fn rebuild_projections(&self) -> Result<u64> {
        let mut tx = self.store.begin().await?;
        sqlx::query("TRUNCATE sched_tenants, sched_policies, sched_subjects, sched_callbacks, sched_contact_attempts")
            .execute(&mut *tx)
            .await?;
        let filter = Filter::categories(crate::CATEGORIES.iter().copied());
        let mut after = Checkpoint::START;
        let mut callbacks: HashMap<Uuid, (Option<CallbackState>, u64)> = HashMap::new();
        let mut applied = 0u64;
        loop {
            let page = self.store.read_all(after, &filter, 5000).await?;
            for event in &page.events {
                applied += 1;
                let version = event.stream_version as u64;
                match event.category.as_str() {
                    TenantPublished::CATEGORY => {
                        project_tenant(&mut tx, &decode(event)?, version).await?
                    }
                    PolicyPublished::CATEGORY => {
                        let published: PolicyPublished = decode(event)?;
                        let tenant_id = published.tenant_id.clone();
                        let policy = published_policy(published)?;
                        project_policy(&mut tx, &tenant_id, &policy, version).await?
                    }
                    BusinessEventIngested::CATEGORY => {
                        let ingested: BusinessEventIngested = decode(event)?;
                        project_subject(&mut tx, &ingested.fact.tenant_id, &ingested.subject)
                            .await?;
                    }
                    _ => {
                        let id: Uuid = event
                            .stream_id
                            .trim_start_matches(CallbackEvent::CATEGORY)
                            .trim_start_matches('-')
                            .parse()
                            .map_err(|_| {
                                Error::Corrupt(format!("callback stream id {}", event.stream_id))
                            })?;
                        let callback_event: CallbackEvent = decode(event)?;
                        let entry = callbacks.entry(id).or_insert((None, 0));
                        entry.0 = CallbackState::evolve(entry.0.take(), &callback_event);
                        entry.1 = version;
                        if let (
                            CallbackEvent::CallbackAttempted { attempt_id, at, .. },
                            Some(state),
                        ) = (&callback_event, &entry.0)
                        {
                            project_attempt(&mut tx, state, attempt_id, *at).await?;
                        }
                    }
                }
            }
            after = page.checkpoint;
            if page.reached_horizon {
                break;
            }
        }
        for (state, version) in callbacks.values() {
            if let Some(state) = state {
                project_callback(&mut tx, &self.queue_starts, state, *version).await?;
            }
        }
        tx.commit().await?;
        self.queue_starts.clear();
        Ok(applied)
    }
}

/// The events of a new callback planned from a fact (`None` when sampling left it out). Its
/// id derives from the fact, policy, step and occurrence, so a replay cannot create a second.
fn new_callback_events(
    policy: &Policy,
    policy_version: u64,
    fact: &BusinessFact,
    subject: &SubjectContact,
    fact_name: &StreamName,
    plan: &PlannedCallback,
    now: DateTime<Utc>,
) -> Option<Vec<CallbackEvent>> {
    if !plan.sampled {
        return None;
    }
    let step = &policy.steps[plan.step];
    let callback_id = Uuid::new_v5(
        &CALLBACK_NAMESPACE,
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            fact.tenant_id,
            fact.source,
            fact.source_event_id,
            policy.policy_id,
            step.name,
            plan.occurrence
        )
        .as_bytes(),
    );
    let (owner_agent_id, pool, pool_after) = match &step.owner {
        OwnerRule::SubjectOwner {
            fallback_pool,
            pool_after_hours,
        } => match &subject.owner_agent_id {
            Some(owner) => (
                Some(owner.clone()),
                fallback_pool.clone(),
                plan.due_at + Duration::hours(i64::from(*pool_after_hours)),
            ),
            None => (None, fallback_pool.clone(), plan.due_at),
        },
        OwnerRule::Pool { pool } => (None, pool.clone(), plan.due_at),
    };
    let scheduled = Scheduled {
        callback_id,
        tenant_id: fact.tenant_id.clone(),
        policy_id: policy.policy_id.clone(),
        policy_version,
        step_index: plan.step,
        step: step.name.clone(),
        occurrence: plan.occurrence,
        anchor_at: plan.anchor_at,
        due_at: plan.due_at,
        deadline: plan.deadline,
        // Lost at the deadline, as before give-up times existed.
        give_up_at: plan.deadline,
        priority: step.priority,
        channel: step.channel,
        questionnaire_id: step.questionnaire_id.clone(),
        owner_agent_id,
        pool,
        pool_after,
        subject_id: fact.subject_id.clone(),
        department: subject.department.clone(),
        retry: step.retry.clone(),
        fact_stream: fact_name.stream_id(),
    };
    let mut events = vec![CallbackEvent::CallbackScheduled(Box::new(scheduled))];
    if plan.window_missed {
        events.push(CallbackEvent::CallbackSkipped {
            reason: "the due window closed before a call was possible".into(),
            at: now,
        });
    }
    Some(events)
}

/// What an ingest's answer says about one callback it planned.
fn scheduled_summary(state: &CallbackState) -> ScheduledSummary {
    let s = &state.scheduled;
    ScheduledSummary {
        callback_id: s.callback_id,
        policy_id: s.policy_id.clone(),
        policy_version: s.policy_version,
        step: s.step.clone(),
        occurrence: s.occurrence,
        due_at: state.due_at,
        deadline: state.deadline,
        status: state.status,
    }
}

async fn policies_for(
    conn: &mut PgConnection,
    tenant_id: &str,
    event_type: &str,
) -> Result<Vec<(Policy, u64)>> {
    let rows = sqlx::query(
        "SELECT policy, version FROM sched_policies WHERE tenant_id = $1 \
         AND (trigger_event_type = $2 OR $2 = ANY(cancel_on) OR $2 = ANY(reschedule_on)) ORDER BY policy_id",
    )
    .bind(tenant_id)
    .bind(event_type)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let policy: Policy = serde_json::from_value(row.try_get("policy")?)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            let version: i64 = row.try_get("version")?;
            Ok((policy, version as u64))
        })
        .collect()
}

/// A fact from another service may name only the subject (a complaint's verification call
/// knows the customer id, not the number): it then reuses the contact details known from the
/// subject's earlier facts. A fact that brings its own name or phones replaces them.
async fn with_known_contact(
    conn: &mut PgConnection,
    tenant_id: &str,
    subject: SubjectContact,
) -> Result<SubjectContact> {
    if !subject.name.is_empty() || !subject.phones.is_empty() {
        return Ok(subject);
    }
    Ok(
        match known_contact(conn, tenant_id, &subject.subject_id).await? {
            Some(known) => SubjectContact {
                owner_agent_id: subject.owner_agent_id.or(known.owner_agent_id),
                department: subject.department.or(known.department),
                ..known
            },
            None => subject,
        },
    )
}

async fn known_contact(
    conn: &mut PgConnection,
    tenant_id: &str,
    subject_id: &str,
) -> Result<Option<SubjectContact>> {
    let row = sqlx::query("SELECT name, phones, owner_agent_id, department FROM sched_subjects WHERE tenant_id = $1 AND subject_id = $2")
        .bind(tenant_id)
        .bind(subject_id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(SubjectContact {
            subject_id: subject_id.to_owned(),
            name: row.try_get("name")?,
            phones: row.try_get("phones")?,
            owner_agent_id: row.try_get("owner_agent_id")?,
            department: row.try_get("department")?,
        })
    })
    .transpose()
}

// ---- projection rows (shared by commands and rebuild) ----

async fn project_tenant(
    conn: &mut PgConnection,
    published: &TenantPublished,
    version: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sched_tenants (tenant_id, version, settings) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = EXCLUDED.version, settings = EXCLUDED.settings",
    )
    .bind(&published.tenant_id)
    .bind(version as i64)
    .bind(serde_json::to_value(&published.settings).map_err(|e| Error::Corrupt(e.to_string()))?)
    .execute(conn)
    .await?;
    Ok(())
}

async fn project_policy(
    conn: &mut PgConnection,
    tenant_id: &str,
    policy: &Policy,
    version: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sched_policies (tenant_id, policy_id, version, trigger_event_type, cancel_on, reschedule_on, policy) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, policy_id) DO UPDATE SET \
         version = EXCLUDED.version, trigger_event_type = EXCLUDED.trigger_event_type, \
         cancel_on = EXCLUDED.cancel_on, reschedule_on = EXCLUDED.reschedule_on, policy = EXCLUDED.policy",
    )
    .bind(tenant_id)
    .bind(&policy.policy_id)
    .bind(version as i64)
    .bind(&policy.trigger.event_type)
    .bind(&policy.cancel_on)
    .bind(&policy.reschedule_on)
    .bind(serde_json::to_value(policy).map_err(|e| Error::Corrupt(e.to_string()))?)
    .execute(conn)
    .await?;
    Ok(())
}

async fn project_subject(
    conn: &mut PgConnection,
    tenant_id: &str,
    subject: &SubjectContact,
) -> Result<()> {
    project_subjects(conn, &[(tenant_id, subject)]).await
}

/// Writes subject rows (each subject at most once) in one statement.
async fn project_subjects(
    conn: &mut PgConnection,
    subjects: &[(&str, &SubjectContact)],
) -> Result<()> {
    let tenant_ids: Vec<&str> = subjects.iter().map(|(t, _)| *t).collect();
    let ids: Vec<&str> = subjects
        .iter()
        .map(|(_, s)| s.subject_id.as_str())
        .collect();
    let names: Vec<&str> = subjects.iter().map(|(_, s)| s.name.as_str()).collect();
    // Phones as one JSON array per subject: PostgreSQL has no arrays of arrays of text
    // with different lengths.
    let phones: Vec<serde_json::Value> = subjects
        .iter()
        .map(|(_, s)| serde_json::json!(s.phones))
        .collect();
    let owners: Vec<Option<&str>> = subjects
        .iter()
        .map(|(_, s)| s.owner_agent_id.as_deref())
        .collect();
    let departments: Vec<Option<&str>> = subjects
        .iter()
        .map(|(_, s)| s.department.as_deref())
        .collect();
    sqlx::query(
        "INSERT INTO sched_subjects (tenant_id, subject_id, name, phones, owner_agent_id, department) \
         SELECT t, id, n, ARRAY(SELECT jsonb_array_elements_text(p)), o, d \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[]) AS u(t, id, n, p, o, d) \
         ON CONFLICT (tenant_id, subject_id) DO UPDATE SET \
         name = EXCLUDED.name, phones = EXCLUDED.phones, owner_agent_id = EXCLUDED.owner_agent_id, \
         department = EXCLUDED.department",
    )
    .bind(&tenant_ids)
    .bind(&ids)
    .bind(&names)
    .bind(&phones)
    .bind(&owners)
    .bind(&departments)
    .execute(conn)
    .await?;
    Ok(())
}

async fn project_callback(
    conn: &mut PgConnection,
    queue_starts: &QueueStarts,
    state: &CallbackState,
    version: u64,
) -> Result<()> {
    project_callbacks(conn, queue_starts, &[(state, version)]).await
}

/// Writes callback rows (each callback at most once) in one statement, and tells the claims'
/// queue starts of every row it puts into the waiting queue.
async fn project_callbacks(
    conn: &mut PgConnection,
    queue_starts: &QueueStarts,
    rows: &[(&CallbackState, u64)],
) -> Result<()> {
    let mut c = CallbackColumns::default();
    for (state, version) in rows {
        let s = &state.scheduled;
        c.callback_id.push(s.callback_id);
        c.tenant_id.push(s.tenant_id.as_str());
        c.policy_id.push(s.policy_id.as_str());
        c.policy_version.push(s.policy_version as i64);
        c.step.push(s.step.as_str());
        c.occurrence.push(s.occurrence as i32);
        c.subject_id.push(s.subject_id.as_str());
        c.department.push(s.department.as_deref());
        c.status.push(state.status.as_str());
        c.due_at.push(state.due_at);
        c.deadline.push(state.deadline);
        c.priority.push(i16::from(s.priority));
        c.owner_agent_id.push(s.owner_agent_id.as_deref());
        c.pool.push(s.pool.as_str());
        c.pool_after.push(s.pool_after);
        c.claimed_by.push(state.claimed_by.as_deref());
        c.lease_until.push(state.lease_until);
        c.attempts.push(state.attempts as i32);
        c.end_reason.push(state.end_reason.as_deref());
        c.stream_version.push(*version as i64);
    }
    sqlx::query(
        "INSERT INTO sched_callbacks (callback_id, tenant_id, policy_id, policy_version, step, occurrence, \
           subject_id, department, status, due_at, deadline, priority, owner_agent_id, pool, pool_after, \
           claimed_by, lease_until, attempts, end_reason, stream_version) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int4[], \
           $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::int2[], \
           $13::text[], $14::text[], $15::timestamptz[], $16::text[], $17::timestamptz[], $18::int4[], \
           $19::text[], $20::int8[]) \
         ON CONFLICT (callback_id) DO UPDATE SET status = EXCLUDED.status, due_at = EXCLUDED.due_at, \
           deadline = EXCLUDED.deadline, claimed_by = EXCLUDED.claimed_by, lease_until = EXCLUDED.lease_until, \
           attempts = EXCLUDED.attempts, end_reason = EXCLUDED.end_reason, stream_version = EXCLUDED.stream_version",
    )
    .bind(&c.callback_id)
    .bind(&c.tenant_id)
    .bind(&c.policy_id)
    .bind(&c.policy_version)
    .bind(&c.step)
    .bind(&c.occurrence)
    .bind(&c.subject_id)
    .bind(&c.department)
    .bind(&c.status)
    .bind(&c.due_at)
    .bind(&c.deadline)
    .bind(&c.priority)
    .bind(&c.owner_agent_id)
    .bind(&c.pool)
    .bind(&c.pool_after)
    .bind(&c.claimed_by)
    .bind(&c.lease_until)
    .bind(&c.attempts)
    .bind(&c.end_reason)
    .bind(&c.stream_version)
    .execute(conn)
    .await?;
    let now = std::time::Instant::now();
    for (state, _) in rows {
        if state.status == Status::Scheduled {
            queue_starts.queued(&state.scheduled.tenant_id, QueueKey::of(state), now);
        }
    }
    Ok(())
}

/// The columns of [`project_callbacks`], one entry per row.
#[derive(Default)]
struct CallbackColumns<'a> {
    callback_id: Vec<Uuid>,
    tenant_id: Vec<&'a str>,
    policy_id: Vec<&'a str>,
    policy_version: Vec<i64>,
    step: Vec<&'a str>,
    occurrence: Vec<i32>,
    subject_id: Vec<&'a str>,
    department: Vec<Option<&'a str>>,
    status: Vec<&'static str>,
    due_at: Vec<DateTime<Utc>>,
    deadline: Vec<DateTime<Utc>>,
    priority: Vec<i16>,
    owner_agent_id: Vec<Option<&'a str>>,
    pool: Vec<&'a str>,
    pool_after: Vec<DateTime<Utc>>,
    claimed_by: Vec<Option<&'a str>>,
    lease_until: Vec<Option<DateTime<Utc>>>,
    attempts: Vec<i32>,
    end_reason: Vec<Option<&'a str>>,
    stream_version: Vec<i64>,
}

async fn project_attempt(
    conn: &mut PgConnection,
    state: &CallbackState,
    attempt_id: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    outcome_batch::project_attempts(conn, &[(state, attempt_id, at)]).await
}

/// The columns of [`CallbackRow`].
pub const CALLBACK_COLUMNS: &str = "callback_id, tenant_id, policy_id, policy_version, step, occurrence, subject_id, \
     department, status, due_at, deadline, priority, owner_agent_id, pool, pool_after, claimed_by, lease_until, \
     attempts, end_reason, stream_version";

/// One row of the callbacks read model.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct CallbackRow {
    pub callback_id: Uuid,
    pub tenant_id: String,
    pub policy_id: String,
    pub policy_version: i64,
    pub step: String,
    pub occurrence: i32,
    pub subject_id: String,
    pub department: Option<String>,
    pub status: String,
    pub due_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub priority: i16,
    pub owner_agent_id: Option<String>,
    pub pool: String,
    pub pool_after: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub end_reason: Option<String>,
    pub stream_version: i64,
}
