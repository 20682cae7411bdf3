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

fn validate_intake(intake: &Intake) -> Result<()> {
    validate_id("tenant_id", &intake.tenant_id)?;
    validate_id("source", &intake.source)?;
    if intake.source_id.is_empty() || intake.source_id.len() > 128 {
        return Err(invalid("source_id", "must be 1-128 characters"));
    }
    if intake.channel != CALLBACK_CHANNEL && !FILING_CHANNELS.contains(&intake.channel.as_str()) {
        return Err(invalid(
            "channel",
            format!("must be one of {}", FILING_CHANNELS.join(", ")),
        ));
    }
    let customer = &intake.customer.customer_id;
    if customer.trim().is_empty() || customer.len() > 128 {
        return Err(invalid("customer.customer_id", "must be 1-128 characters"));
    }
    if intake.customer.name.chars().count() > 200 {
        return Err(invalid("customer.name", "is longer than 200 characters"));
    }
    // Scheduling's rule: these numbers go on to it with the verification callback.
    for (i, phone) in intake.customer.phones.iter().enumerate() {
        if let Some(reason) = callback_rules::ids::phone_problem(phone) {
            return Err(invalid(format!("customer.phones[{i}]"), reason));
        }
    }
    if intake.text.trim().is_empty() {
        return Err(invalid("text", "must not be empty"));
    }
    if intake.text.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(
            "text",
            format!("is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    for (field, value) in [("category", &intake.category), ("topic", &intake.topic)] {
        if value.chars().count() > 200 {
            return Err(invalid(field, "is longer than 200 characters"));
        }
    }
    for (i, hint) in intake.severity_hints.iter().enumerate() {
        if !domain::rules::SEVERITY_HINTS.contains(&hint.as_str()) {
            return Err(invalid(
                format!("severity_hints[{i}]"),
                format!(
                    "unknown hint `{hint}` (use {})",
                    domain::rules::SEVERITY_HINTS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl ComplaintRouting {
    pub fn new(
        store: EventStore,
        clock: Arc<dyn Clock>,
        scheduling: Arc<dyn SchedulingPort>,
    ) -> Self {
        Self {
            store,
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

    #[tracing::instrument(name = "complaints.publish_rules", skip_all, fields(tenant_id))]
    pub async fn publish_rules(&self, tenant_id: &str, rules_json: &str) -> Result<u64> {
        validate_id("tenant_id", tenant_id)?;
        let (rules, _) = RoutingRules::parse(rules_json).map_err(|e| {
            let field = if e.field == "rules_json" {
                e.field
            } else {
                format!("rules_json.{}", e.field)
            };
            invalid(field, e.reason)
        })?;
        let published = RoutingRulesPublished {
            tenant_id: tenant_id.to_owned(),
            rules: serde_json::to_value(&rules).map_err(corrupt)?,
        };
        let mut tx = self.store.begin().await?;
        let event = new_event(&published, tenant_id, "api:publish_rules")?;
        let result = self
            .store
            .append_in(
                &mut tx,
                &rules_stream(tenant_id)?,
                ExpectedVersion::Any,
                &[event],
            )
            .await?;
        project_rules(&mut tx, tenant_id, &rules, result.stream_version).await?;
        self.store.commit(tx).await?;
        tracing::info!(version = result.stream_version, "routing rules published");
        self.file_parked(tenant_id).await;
        Ok(result.stream_version)
    }

    /// Keeps a complaint that arrived from a feed before its tenant had routing rules, in the
    /// log (`complaint_intake-<tenant>`), to be filed when rules are published. Idempotent: the
    /// event id is derived from the complaint's id.
    pub async fn park_in(
        &self,
        conn: &mut PgConnection,
        intake: &Intake,
        reason: &str,
    ) -> Result<()> {
        let id = complaint_id(&intake.tenant_id, &intake.source, &intake.source_id);
        let parked = ComplaintParked {
            intake: intake.clone(),
            reason: reason.to_owned(),
            at: self.now(),
        };
        let event = new_event(&parked, &intake.tenant_id, "system:complaint-routing")?.with_id(
            Uuid::new_v5(&COMPLAINT_NAMESPACE, format!("parked\n{id}").as_bytes()),
        );
        self.store
            .append_in(
                conn,
                &intake_stream(&intake.tenant_id)?,
                ExpectedVersion::Any,
                &[event],
            )
            .await?;
        tracing::warn!(tenant_id = %intake.tenant_id, "complaint parked until the tenant has routing rules");
        Ok(())
    }

    /// Files every parked complaint of the tenant (filing is idempotent, so one filed before
    /// is not filed twice). Failures are logged; the next publish tries again.
    async fn file_parked(&self, tenant_id: &str) {
        let parked = match intake_stream(tenant_id) {
            Ok(stream) => self
                .store
                .read_stream(&stream, 1)
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        let parked = match parked {
            Ok(parked) => parked,
            Err(error) => {
                tracing::warn!(%error, "parked complaints not read");
                return;
            }
        };
        for event in parked {
            let intake = callback_kit::events::decode::<ComplaintParked>(&event)
                .ok()
                .map(|parked| parked.intake);
            let Some(intake) = intake else {
                tracing::error!(event_id = %event.event_id, "undecodable parked complaint skipped");
                continue;
            };
            if let Err(error) = self.file(intake).await {
                tracing::warn!(%error, "parked complaint not filed");
            }
        }
    }

    async fn rules_version(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
        version: u64,
    ) -> Result<Arc<Rules>> {
        let key = (tenant_id.to_owned(), version);
        if let Some(rules) = self
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(rules.clone());
        }
        let value: Value =
            sqlx::query_scalar("SELECT rules FROM cr_rules WHERE tenant_id = $1 AND version = $2")
                .bind(tenant_id)
                .bind(version as i64)
                .fetch_optional(conn)
                .await?
                .ok_or_else(|| corrupt(format!("rules version {version} of a tenant missing")))?;
        let rules: RoutingRules = serde_json::from_value(value).map_err(corrupt)?;
        let calendar = rules.validate().map_err(corrupt)?;
        let loaded = Arc::new(Rules {
            version,
            rules,
            calendar,
        });
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, loaded.clone());
        Ok(loaded)
    }

    async fn latest_rules(&self, conn: &mut PgConnection, tenant_id: &str) -> Result<Arc<Rules>> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM cr_rules WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&mut *conn)
                .await?;
        match version {
            Some(v) => self.rules_version(conn, tenant_id, v as u64).await,
            None => Err(Error::FailedPrecondition(format!(
                "tenant `{tenant_id}` has no routing rules; publish them first"
            ))),
        }
    }

    // ---- filing ----

    /// Files a complaint; idempotent on (tenant, source, source id).
    #[tracing::instrument(name = "complaints.file", skip_all, fields(tenant_id = %intake.tenant_id, channel = %intake.channel))]
    pub async fn file(&self, intake: Intake) -> Result<Filing> {
        validate_intake(&intake)?;
        let id = complaint_id(&intake.tenant_id, &intake.source, &intake.source_id);
        if let Some(existing) = self.existing(id).await? {
            return Ok(existing);
        }
        let mut tx = self.store.begin().await?;
        match self.file_in(&mut tx, &intake).await {
            Ok(filing) => {
                self.store.commit(tx).await?;
                Ok(filing)
            }
            Err(Error::Store(callback_eventstore::Error::VersionConflict { .. })) => {
                // A concurrent retry of the same filing won; answer as it did.
                drop(tx);
                self.existing(id)
                    .await?
                    .ok_or_else(|| corrupt("filing conflict without a recorded complaint"))
            }
            Err(e) => Err(e),
        }
    }

    async fn existing(&self, id: Uuid) -> Result<Option<Filing>> {
        let mut conn = self.store.pool().acquire().await?;
        Ok(self
            .load(&mut conn, id, false)
            .await?
            .map(|(complaint, _)| Filing {
                duplicate: true,
                complaint,
            }))
    }

    /// Files within the caller's transaction (the feed consumer's, with its checkpoint).
    /// Returns a duplicate filing when the complaint exists.
    pub async fn file_in(&self, conn: &mut PgConnection, intake: &Intake) -> Result<Filing> {
        validate_intake(intake)?;
        let id = complaint_id(&intake.tenant_id, &intake.source, &intake.source_id);
        if let Some((complaint, _)) = self.load(conn, id, false).await? {
            return Ok(Filing {
                duplicate: true,
                complaint,
            });
        }
        let now = self.now();
        let rules = self.latest_rules(conn, &intake.tenant_id).await?;
        let rule = &rules.rules;
        let topic = domain::group_topic(intake);
        let opinion = rule
            .place(&domain::rules::ComplaintFacts {
                category: &intake.category,
                text: &intake.text,
                severity_hints: &intake.severity_hints,
            })
            .route
            .class
            .is_opinion();
        // One filing at a time per topic, so the fifth customer is counted exactly once.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "complaint-group\n{}\n{topic}\n{opinion}",
                intake.tenant_id
            ))
            .execute(&mut *conn)
            .await?;
        let window_start = now - Duration::hours(i64::from(rule.group.window_hours));
        let others: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT customer_id) FROM cr_complaints WHERE tenant_id = $1 AND topic = $2 \
             AND opinion = $3 AND filed_at > $4 AND customer_id <> $5",
        )
        .bind(&intake.tenant_id)
        .bind(&topic)
        .bind(opinion)
        .bind(window_start)
        .bind(&intake.customer.customer_id)
        .fetch_one(&mut *conn)
        .await?;
        let previous_complaint: Option<Uuid> = sqlx::query_scalar(
            "SELECT complaint_id FROM cr_complaints WHERE tenant_id = $1 AND customer_id = $2 \
             AND filed_at > $3 ORDER BY filed_at DESC LIMIT 1",
        )
        .bind(&intake.tenant_id)
        .bind(&intake.customer.customer_id)
        .bind(now - Duration::days(i64::from(rule.repeat_window_days)))
        .fetch_optional(&mut *conn)
        .await?;
        let context = Context {
            previous_complaint,
            group_customers: u32::try_from(others + 1).unwrap_or(u32::MAX),
        };
        let events = domain::file(id, intake, rule, rules.version, &context, now);
        let state = fold(None, &events, &rules.calendar)?;
        self.save(
            conn,
            None,
            &state,
            &events,
            &rules,
            "system:complaint-routing",
        )
        .await?;
        if context.group_customers >= rule.group.min_customers {
            self.upgrade_group(conn, &state, &rules, context.group_customers, window_start)
                .await?;
        }
        tracing::info!(class = state.class.as_str(), "complaint filed");
        Ok(Filing {
            duplicate: false,
            complaint: Complaint {
                state,
                calendar: rules,
            },
        })
    }

    /// The group rule: every open complaint on the topic that is not yet in the group class
    /// is re-classified and re-routed, each with an event saying why.
    async fn upgrade_group(
        &self,
        conn: &mut PgConnection,
        newest: &ComplaintState,
        latest: &Arc<Rules>,
        customers: u32,
        window_start: DateTime<Utc>,
    ) -> Result<()> {
        let single_class = if newest.class.is_opinion() { "E" } else { "C" };
        let members: Vec<Uuid> = sqlx::query_scalar(
            "SELECT complaint_id FROM cr_complaints WHERE tenant_id = $1 AND topic = $2 AND opinion = $3 \
             AND filed_at > $4 AND class = $5 AND status IN ('open', 'in_progress', 'waiting_on_customer') \
             ORDER BY filed_at, complaint_id",
        )
        .bind(&newest.filed.tenant_id)
        .bind(&newest.filed.topic)
        .bind(newest.class.is_opinion())
        .bind(window_start)
        .bind(single_class)
        .fetch_all(&mut *conn)
        .await?;
        let now = self.now();
        for member in members {
            let Some((complaint, version)) = self.load(conn, member, true).await? else {
                continue;
            };
            let calendar = complaint.calendar.clone();
            let (state, mut events) =
                complaint
                    .state
                    .fire_timers(&latest.rules, &calendar.calendar, now);
            let upgrade = state.join_group(&latest.rules, customers, now);
            let state = fold(Some(state), &upgrade, &calendar.calendar)?;
            events.extend(upgrade);
            self.save(
                conn,
                Some(version),
                &state,
                &events,
                &calendar,
                "system:complaint-routing",
            )
            .await?;
        }
        Ok(())
    }

    // ---- department actions ----

    #[tracing::instrument(name = "complaints.act", skip_all, fields(tenant_id, action = action.name()))]
    pub async fn act(
        &self,
        tenant_id: &str,
        complaint_id: Uuid,
        actor: &str,
        action: Action,
    ) -> Result<Acted> {
        validate_id("tenant_id", tenant_id)?;
        if actor.trim().is_empty() || actor.len() > 128 {
            return Err(invalid("actor", "must be 1-128 characters"));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let (complaint, version) = self
            .load(&mut tx, complaint_id, true)
            .await?
            .filter(|(c, _)| c.state.filed.tenant_id == tenant_id)
            .ok_or_else(|| Error::NotFound(format!("complaint `{complaint_id}`")))?;
        let latest = self.latest_rules(&mut tx, tenant_id).await?;
        let calendar = complaint.calendar.clone();
        let (state, mut events) =
            complaint
                .state
                .fire_timers(&latest.rules, &calendar.calendar, now);
        let decided = state.decide(&action, actor, &latest.rules, now);
        let decided = match decided {
            Ok(decided) => decided,
            Err(refused) => {
                // The timers that fell due are still worth recording.
                if !events.is_empty() {
                    self.save(
                        &mut tx,
                        Some(version),
                        &state,
                        &events,
                        &calendar,
                        "system:complaint-routing",
                    )
                    .await?;
                    self.store.commit(tx).await?;
                }
                return Err(refused.into());
            }
        };
        let state = fold(Some(state), &decided, &calendar.calendar)?;
        events.extend(decided);
        self.save(
            &mut tx,
            Some(version),
            &state,
            &events,
            &calendar,
            &format!("staff:{actor}"),
        )
        .await?;
        self.store.commit(tx).await?;
        let event_types = events.iter().map(|e| e.event_type().to_owned()).collect();
        if state.needs_callback_request() {
            // At once, for a prompt callback; the sweep retries if scheduling is unreachable.
            if let Err(error) = self.request_callback(complaint_id).await {
                tracing::warn!(%error, "callback request deferred to the sweep");
            }
        }
        Ok(Acted {
            complaint: Complaint { state, calendar },
            event_types,
        })
    }

    // ---- timers ----

    /// Fires every timer that has fallen due (breaches, missed reply times, follow-ups).
    /// Driven by the read model's `next_timer_at`, which is derived from the events: a restart
    /// misses none, and the row lock plus the version check fire none twice. Returns how many
    /// complaints had timers fire.
    #[tracing::instrument(name = "complaints.sweep_timers", skip_all)]
    pub async fn sweep_timers(&self) -> Result<usize> {
        let now = self.now();
        let mut total = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let due: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT complaint_id, tenant_id FROM cr_complaints WHERE next_timer_at <= $1 \
                 ORDER BY next_timer_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .bind(SWEEP_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                return Ok(total);
            }
            let mut latest: HashMap<String, Arc<Rules>> = HashMap::new();
            for (complaint_id, tenant_id) in &due {
                if !latest.contains_key(tenant_id) {
                    let rules = self.latest_rules(&mut tx, tenant_id).await?;
                    latest.insert(tenant_id.clone(), rules);
                }
                let Some((complaint, version)) = self.load(&mut tx, *complaint_id, false).await?
                else {
                    continue;
                };
                let calendar = complaint.calendar.clone();
                let (state, events) =
                    complaint
                        .state
                        .fire_timers(&latest[tenant_id].rules, &calendar.calendar, now);
                self.save(
                    &mut tx,
                    Some(version),
                    &state,
                    &events,
                    &calendar,
                    "system:complaint-routing",
                )
                .await?;
            }
            total += due.len();
            self.store.commit(tx).await?;
            if (due.len() as i64) < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    // ---- callbacks through scheduling ----

    /// Asks scheduling for every verification or explanation callback not yet asked for
    /// (an outbox: the first try happens right after the action; this catches what failed).
    pub async fn request_pending_callbacks(&self) -> Result<usize> {
        let pending: Vec<Uuid> = sqlx::query_scalar(
            "SELECT complaint_id FROM cr_complaints WHERE needs_callback_request ORDER BY filed_at LIMIT 100",
        )
        .fetch_all(self.store.pool())
        .await?;
        let mut done = 0;
        for complaint_id in pending {
            match self.request_callback(complaint_id).await {
                Ok(()) => done += 1,
                Err(Error::Scheduling(reason)) => {
                    tracing::warn!(%reason, "scheduling unreachable; callback requests wait");
                    break;
                }
                Err(error) => tracing::warn!(%error, "callback request failed"),
            }
        }
        Ok(done)
    }

    /// Asks scheduling (through `IngestBusinessEvent`, idempotent on the complaint, purpose and
    /// round) for the callback the complaint's resolution or rejection needs, and records the
    /// answer.
    async fn request_callback(&self, complaint_id: Uuid) -> Result<()> {
        // One connection for both reads, returned before the call to scheduling.
        let mut conn = self.store.pool().acquire().await?;
        let Some((complaint, _)) = self.load(&mut conn, complaint_id, false).await? else {
            return Ok(());
        };
        let state = &complaint.state;
        if !state.needs_callback_request() {
            return Ok(());
        }
        let latest = self.latest_rules(&mut conn, &state.filed.tenant_id).await?;
        drop(conn);
        let purpose = if state.status == Status::Resolved {
            CallbackPurpose::Verification
        } else {
            CallbackPurpose::Explanation
        };
        let (event_type, purpose_name) = match purpose {
            CallbackPurpose::Verification => {
                (&latest.rules.verification.event_type, "verification")
            }
            CallbackPurpose::Explanation => (
                &latest.rules.verification.explanation_event_type,
                "explanation",
            ),
        };
        let filed = &state.filed;
        let attributes = match json!({
            "complaint_id": complaint_id, "class": state.class.as_str(),
            "department": state.department, "purpose": purpose_name,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let request = CallbackRequest {
            tenant_id: filed.tenant_id.clone(),
            source_event_id: format!("{complaint_id}:{purpose_name}:{}", state.reopenings),
            event_type: event_type.clone(),
            occurred_at: state.last_at,
            customer: filed.customer.clone(),
            department: state.department.clone(),
            attributes,
        };
        let callback_ids = match self.scheduling.request_callback(request).await? {
            CallbackAnswer::Scheduled(ids) => ids,
            CallbackAnswer::Refused(reason) => {
                let at = self.now();
                return self
                    .record_callback_answer(
                        complaint_id,
                        ComplaintEvent::CallbackUnavailable {
                            purpose,
                            reason: format!("scheduling refused the request: {reason}"),
                            at,
                        },
                    )
                    .await;
            }
        };
        let at = self.now();
        let event = if callback_ids.is_empty() {
            ComplaintEvent::CallbackUnavailable {
                purpose,
                reason: format!(
                    "scheduling planned no callback for `{event_type}` (no matching policy)"
                ),
                at,
            }
        } else {
            ComplaintEvent::CallbackRequested {
                purpose,
                callback_ids,
                at,
            }
        };
        self.record_callback_answer(complaint_id, event).await
    }

    async fn record_callback_answer(
        &self,
        complaint_id: Uuid,
        event: ComplaintEvent,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let Some((complaint, version)) = self.load(&mut tx, complaint_id, true).await? else {
            return Ok(());
        };
        if !complaint.state.needs_callback_request() {
            // Recorded meanwhile by another instance.
            return Ok(());
        }
        let events = [event];
        let state = fold(Some(complaint.state), &events, &complaint.calendar.calendar)?;
        self.save(
            &mut tx,
            Some(version),
            &state,
            &events,
            &complaint.calendar,
            "system:complaint-routing",
        )
        .await?;
        self.store.commit(tx).await?;
        Ok(())
    }

    /// The complaint a verification callback belongs to.
    async fn complaint_of_callback(
        &self,
        conn: &mut PgConnection,
        callback_id: Uuid,
    ) -> Result<Option<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT complaint_id FROM cr_verification_callbacks WHERE callback_id = $1",
        )
        .bind(callback_id)
        .fetch_optional(conn)
        .await?)
    }

    /// A survey answered on a callback: when it is a verification callback and the rules'
    /// item was answered, the complaint closes (satisfied) or reopens. Returns whether a
    /// complaint changed.
    pub async fn survey_answered_in(
        &self,
        conn: &mut PgConnection,
        callback_id: Uuid,
        answers: &std::collections::BTreeMap<String, Value>,
    ) -> Result<bool> {
        let Some(complaint_id) = self.complaint_of_callback(conn, callback_id).await? else {
            return Ok(false);
        };
        let Some((complaint, version)) = self.load(conn, complaint_id, true).await? else {
            return Ok(false);
        };
        let latest = self
            .latest_rules(conn, &complaint.state.filed.tenant_id)
            .await?;
        let rule = &latest.rules.verification;
        let Some(satisfied) = answers
            .get(&rule.item_id)
            .and_then(|answer| is_satisfied(answer, rule.min_rating))
        else {
            return Ok(false);
        };
        let events = complaint
            .state
            .verification_answered(callback_id, satisfied, self.now());
        self.apply_in(conn, complaint, version, &events).await
    }

    /// A verification callback lost or cancelled: the complaint closes with that fact.
    pub async fn callback_ended_in(
        &self,
        conn: &mut PgConnection,
        callback_id: Uuid,
        outcome: &str,
        reason: &str,
    ) -> Result<bool> {
        let Some(complaint_id) = self.complaint_of_callback(conn, callback_id).await? else {
            return Ok(false);
        };
        let Some((complaint, version)) = self.load(conn, complaint_id, true).await? else {
            return Ok(false);
        };
        let events = complaint
            .state
            .verification_ended(callback_id, outcome, reason, self.now());
        self.apply_in(conn, complaint, version, &events).await
    }

    async fn apply_in(
        &self,
        conn: &mut PgConnection,
        complaint: Complaint,
        version: u64,
        events: &[ComplaintEvent],
    ) -> Result<bool> {
        if events.is_empty() {
            return Ok(false);
        }
        let state = fold(Some(complaint.state), events, &complaint.calendar.calendar)?;
        self.save(
            conn,
            Some(version),
            &state,
            events,
            &complaint.calendar,
            "system:complaint-routing",
        )
        .await?;
        Ok(true)
    }

    // ---- storage ----

    /// The complaint's snapshot and stream version from the read model; `lock` takes the
    /// row for the rest of the transaction.
    async fn load(
        &self,
        conn: &mut PgConnection,
        complaint_id: Uuid,
        lock: bool,
    ) -> Result<Option<(Complaint, u64)>> {
        let sql = if lock {
            "SELECT state, version FROM cr_complaints WHERE complaint_id = $1 FOR UPDATE"
        } else {
            "SELECT state, version FROM cr_complaints WHERE complaint_id = $1"
        };
        let Some(row) = sqlx::query(sql)
            .bind(complaint_id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let state: ComplaintState =
            serde_json::from_value(row.try_get("state")?).map_err(corrupt)?;
        let version: i64 = row.try_get("version")?;
        let calendar = self
            .rules_version(conn, &state.filed.tenant_id, state.filed.rules_version)
            .await?;
        Ok(Some((Complaint { state, calendar }, version as u64)))
    }

    /// Appends `events` (expecting `version`, or a new stream) and writes the read-model row
    /// for the resulting `state`.
    async fn save(
        &self,
        conn: &mut PgConnection,
        version: Option<u64>,
        state: &ComplaintState,
        events: &[ComplaintEvent],
        rules: &Rules,
        actor: &str,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let tenant_id = &state.filed.tenant_id;
        let metadata = event_metadata(Some(tenant_id), Some(actor));
        let new_events = events
            .iter()
            .map(|e| Ok(callback_kit::events::new_event(e)?.with_metadata(metadata.clone())))
            .collect::<Result<Vec<_>>>()?;
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let result = self
            .store
            .append_in(
                conn,
                &complaint_stream(state.complaint_id())?,
                expected,
                &new_events,
            )
            .await?;
        project_complaint(conn, state, result.stream_version, &rules.calendar).await?;
        project_callbacks(conn, state.complaint_id(), events).await?;
        Ok(())
    }

    // ---- queries ----

    /// One complaint with its history (from its stream).
    pub async fn get(&self, tenant_id: &str, complaint_id: Uuid) -> Result<ComplaintRecord> {
        validate_id("tenant_id", tenant_id)?;
        let history = self
            .store
            .read_stream(&complaint_stream(complaint_id)?, 1)
            .await?;
        let mut conn = self.store.pool().acquire().await?;
        let (complaint, _) = self
            .load(&mut conn, complaint_id, false)
            .await?
            .filter(|(c, _)| c.state.filed.tenant_id == tenant_id)
            .ok_or_else(|| Error::NotFound(format!("complaint `{complaint_id}`")))?;
        Ok(ComplaintRecord { complaint, history })
    }

    /// Complaints by department, class and breach state; open ones unless asked otherwise,
    /// the most urgent (earliest timer) first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Complaint>> {
        validate_id("tenant_id", &filter.tenant_id)?;
        if !filter.class.is_empty() && domain::Class::parse(&filter.class).is_none() {
            return Err(invalid("class", "must be one of A, B, C, D, E"));
        }
        if !["", "breached", "on_track"].contains(&filter.breach.as_str()) {
            return Err(invalid("breach", "must be `breached`, `on_track` or empty"));
        }
        let limit = if filter.limit == 0 {
            100
        } else {
            filter.limit.min(1000)
        };
        let rows: Vec<Value> = sqlx::query_scalar(
            "SELECT state FROM cr_complaints WHERE tenant_id = $1 AND ($2 = '' OR department = $2) \
             AND ($3 = '' OR class = $3) AND ($4 = '' OR breached = ($4 = 'breached')) \
             AND ($5 OR status NOT IN ('closed', 'rejected')) \
             ORDER BY next_timer_at NULLS LAST, filed_at, complaint_id LIMIT $6",
        )
        .bind(&filter.tenant_id)
        .bind(&filter.department)
        .bind(&filter.class)
        .bind(&filter.breach)
        .bind(filter.include_closed)
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        let mut conn = self.store.pool().acquire().await?;
        let mut complaints = Vec::with_capacity(rows.len());
        for value in rows {
            let state: ComplaintState = serde_json::from_value(value).map_err(corrupt)?;
            let calendar = self
                .rules_version(&mut conn, &state.filed.tenant_id, state.filed.rules_version)
                .await?;
            complaints.push(Complaint { state, calendar });
        }
        Ok(complaints)
    }

    // ---- rebuild ----

    /// Clears the read models and rebuilds them from the log in one transaction, with the
    /// same row-writing functions the commands use. Run with the service stopped.
    pub async fn rebuild_projections(&self) -> Result<u64> {
        let mut tx = self.store.begin().await?;
        sqlx::query("TRUNCATE cr_rules, cr_complaints, cr_verification_callbacks")
            .execute(&mut *tx)
            .await?;
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut replay = self.store.replay(Filter::categories([
            RoutingRulesPublished::CATEGORY,
            ComplaintEvent::CATEGORY,
        ]));
        let mut complaints: HashMap<Uuid, (Vec<ComplaintEvent>, u64)> = HashMap::new();
        let mut applied = 0u64;
        while let Some(events) = replay.next_page().await? {
            for event in &events {
                applied += 1;
                if event.category == RoutingRulesPublished::CATEGORY {
                    let published: RoutingRulesPublished =
                        callback_kit::events::decode(event).map_err(corrupt)?;
                    let tenant_id = published.tenant_id.clone();
                    let rules = published_rules(published)?;
                    project_rules(&mut tx, &tenant_id, &rules, event.stream_version as u64).await?;
                } else {
                    let id: Uuid = event
                        .stream_id
                        .trim_start_matches(ComplaintEvent::CATEGORY)
                        .trim_start_matches('-')
                        .parse()
                        .map_err(|_| corrupt(format!("complaint stream id {}", event.stream_id)))?;
                    let entry = complaints.entry(id).or_default();
                    entry
                        .0
                        .push(callback_kit::events::decode(event).map_err(corrupt)?);
                    entry.1 = event.stream_version as u64;
                }
            }
        }
        for (id, (events, version)) in &complaints {
            let Some(ComplaintEvent::ComplaintFiled(filed)) = events.first() else {
                return Err(corrupt(format!(
                    "complaint {id} does not start with its filing"
                )));
            };
            let rules = self
                .rules_version(&mut tx, &filed.tenant_id, filed.rules_version)
                .await?;
            let state = fold(None, events, &rules.calendar)?;
            project_complaint(&mut tx, &state, *version, &rules.calendar).await?;
            project_callbacks(&mut tx, *id, events).await?;
        }
        self.store.commit(tx).await?;
        Ok(applied)
    }
}

/// A verification answer read against the rules: yes/true, "satisfied", or a rating at least
/// `min_rating` is satisfied; no/false or a lower rating is not; anything else is no answer.
pub fn is_satisfied(answer: &Value, min_rating: u32) -> Option<bool> {
    match answer {
        Value::Bool(yes) => Some(*yes),
        Value::Number(n) => n.as_f64().map(|n| n >= f64::from(min_rating)),
        Value::String(s) => match s.as_str() {
            "yes" | "satisfied" | "fairly_satisfied" => Some(true),
            "no" | "unsatisfied" | "dissatisfied" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Folds events onto a state (or a new complaint).
pub fn fold(
    state: Option<ComplaintState>,
    events: &[ComplaintEvent],
    calendar: &Calendar,
) -> Result<ComplaintState> {
    events
        .iter()
        .fold(state, |s, e| ComplaintState::evolve(s, e, calendar))
        .ok_or_else(|| corrupt("complaint events without a filing"))
}

// ---- projection rows (shared by commands and rebuild) ----

async fn project_rules(
    conn: &mut PgConnection,
    tenant_id: &str,
    rules: &RoutingRules,
    version: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cr_rules (tenant_id, version, rules) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, version) DO UPDATE SET rules = EXCLUDED.rules",
    )
    .bind(tenant_id)
    .bind(version as i64)
    .bind(serde_json::to_value(rules).map_err(corrupt)?)
    .execute(conn)
    .await?;
    Ok(())
}

async fn project_complaint(
    conn: &mut PgConnection,
    state: &ComplaintState,
    version: u64,
    calendar: &Calendar,
) -> Result<()> {
    let filed = &state.filed;
    sqlx::query(
        "INSERT INTO cr_complaints (complaint_id, tenant_id, customer_id, topic, opinion, class, department, \
         status, escalation_level, breached, filed_at, next_timer_at, needs_callback_request, version, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (complaint_id) DO UPDATE SET class = EXCLUDED.class, opinion = EXCLUDED.opinion, \
         department = EXCLUDED.department, status = EXCLUDED.status, escalation_level = EXCLUDED.escalation_level, \
         breached = EXCLUDED.breached, next_timer_at = EXCLUDED.next_timer_at, \
         needs_callback_request = EXCLUDED.needs_callback_request, version = EXCLUDED.version, state = EXCLUDED.state",
    )
    .bind(filed.complaint_id)
    .bind(&filed.tenant_id)
    .bind(&filed.customer.customer_id)
    .bind(&filed.topic)
    .bind(state.class.is_opinion())
    .bind(state.class.as_str())
    .bind(&state.department)
    .bind(state.status.as_str())
    .bind(state.level.as_str())
    .bind(state.is_breached())
    .bind(filed.at)
    .bind(state.next_timer(calendar).map(|(at, _)| at))
    .bind(state.needs_callback_request())
    .bind(version as i64)
    .bind(serde_json::to_value(state).map_err(corrupt)?)
    .execute(conn)
    .await?;
    Ok(())
}

async fn project_callbacks(
    conn: &mut PgConnection,
    complaint_id: Uuid,
    events: &[ComplaintEvent],
) -> Result<()> {
    for event in events {
        if let ComplaintEvent::CallbackRequested {
            purpose: CallbackPurpose::Verification,
            callback_ids,
            ..
        } = event
        {
            for callback_id in callback_ids {
                sqlx::query(
                    "INSERT INTO cr_verification_callbacks (callback_id, complaint_id) VALUES ($1, $2) \
                     ON CONFLICT (callback_id) DO NOTHING",
                )
                .bind(callback_id)
                .bind(complaint_id)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}
