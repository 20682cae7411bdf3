//! Ingest: business facts that arrive together are served by one transaction (see
//! `callback_kit::batch`): the tenant's policies read once, every fact's and new callback's events in
//! one append, the callback rows and the subject rows in one statement each, one commit.
//!
//! Each fact still gets what it would alone: its own `BusinessEventIngested` event, its
//! callbacks' events in their own streams, its answer. A fact the batch cannot take is served
//! alone after the batch: one whose type corrects earlier facts (it cancels or moves open
//! callbacks, which needs their locks and states), or one that names the subject without
//! contact details (it reuses those on record). A batch that fails as a whole, for instance
//! because one fact is a retry of an ingest already done (its stream exists), is served again
//! fact by fact, and the retry gets its recorded answer.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use callback_eventstore::{ExpectedVersion, NewEvent, StreamAppend, StreamName};
use tokio::sync::oneshot;

use super::*;
use crate::domain::{BusinessFact, CallbackEvent, CallbackState, Policy};
use crate::error::{Error, Result};
use callback_kit::batch::{BatchQueue, Serve};

/// An `IngestBusinessEvent` waiting for a worker, already validated.
pub(super) struct IngestRequest {
    pub fact: BusinessFact,
    pub subject: SubjectContact,
    pub fact_name: StreamName,
    pub reply: oneshot::Sender<Result<IngestResult>>,
}

pub(super) type IngestQueue = BatchQueue<IngestRequest>;

pub(super) const SERVE_INGESTS: Serve<Scheduling, IngestRequest> =
    |app, batch| Box::pin(async move { app.serve_ingests(batch).await });

/// What a batch writes for one fact.
struct PlannedIngest {
    request: usize,
    ingested: BusinessEventIngested,
    /// Each new callback: its stream, events and the state they fold to.
    callbacks: Vec<(StreamName, Vec<CallbackEvent>, CallbackState)>,
}

impl Scheduling {
    async fn serve_ingests(&self, batch: Vec<IngestRequest>) {
        let mut alone: Vec<IngestRequest> = Vec::new();
        if batch.len() == 1 {
            alone = batch;
        } else {
            match self.ingest_batch(&batch).await {
                Ok(results) => {
                    for (request, result) in batch.into_iter().zip(results) {
                        match result {
                            Some(result) => {
                                let _ = request.reply.send(Ok(result));
                            }
                            None => alone.push(request),
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, requests = batch.len(), "ingest batch not taken; serving each alone");
                    alone = batch;
                }
            }
        }
        for request in alone {
            let result = self
                .ingest_alone(request.fact, request.subject, request.fact_name)
                .await;
            let _ = request.reply.send(result);
        }
    }

    /// One transaction for the facts a batch can take; `None` for those to serve alone. An
    /// `Err` means nothing was written.
    async fn ingest_batch(&self, requests: &[IngestRequest]) -> Result<Vec<Option<IngestResult>>> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let mut policies: HashMap<(&str, &str), Vec<(Policy, u64)>> = HashMap::new();
        let mut planned = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            let fact = &request.fact;
            if request.subject.name.is_empty() && request.subject.phones.is_empty() {
                continue;
            }
            // An unknown tenant is answered by the path alone, with its error.
            let Ok((_, calendar)) = self.tenant(&mut tx, &fact.tenant_id).await else {
                continue;
            };
            let key = (fact.tenant_id.as_str(), fact.event_type.as_str());
            if let Entry::Vacant(slot) = policies.entry(key) {
                slot.insert(policies_for(&mut tx, &fact.tenant_id, &fact.event_type).await?);
            }
            let policies = &policies[&key];
            let corrects = policies.iter().any(|(p, _)| {
                p.cancel_on.contains(&fact.event_type) || p.reschedule_on.contains(&fact.event_type)
            });
            if corrects {
                continue;
            }
            let mut callbacks = Vec::new();
            let mut scheduled = Vec::new();
            for (policy, version) in policies.iter().filter(|(p, _)| p.matches(fact)) {
                let Some(plan) = policy.first_callback(fact, &calendar, now) else {
                    continue;
                };
                let Some(events) = new_callback_events(
                    policy,
                    *version,
                    fact,
                    &request.subject,
                    &request.fact_name,
                    &plan,
                    now,
                ) else {
                    continue;
                };
                let state = events
                    .iter()
                    .fold(None, CallbackState::evolve)
                    .ok_or_else(|| Error::Corrupt("a new callback without its events".into()))?;
                scheduled.push(super::scheduled_summary(&state));
                callbacks.push((callback_stream(state.scheduled.callback_id)?, events, state));
            }
            planned.push(PlannedIngest {
                request: index,
                ingested: BusinessEventIngested {
                    fact: fact.clone(),
                    subject: request.subject.clone(),
                    scheduled,
                    cancelled: Vec::new(),
                },
                callbacks,
            });
        }

        // Every stream is new: the fact's and each callback's (ids derive from the fact). A
        // fact sent twice in one batch is served alone after it (and answered as a retry).
        let mut seen = std::collections::HashSet::new();
        let mut planned: Vec<PlannedIngest> = planned
            .into_iter()
            .filter(|p| seen.insert(requests[p.request].fact_name.stream_id()))
            .collect();
        let mut new_events: Vec<Vec<(&StreamName, Vec<NewEvent>)>> = Vec::new();
        for plan in &planned {
            let tenant_id = &plan.ingested.fact.tenant_id;
            let mut writes = Vec::new();
            for (stream, events, _) in &plan.callbacks {
                let events = events
                    .iter()
                    .map(|e| new_event(e, tenant_id))
                    .collect::<Result<Vec<_>>>()?;
                writes.push((stream, events));
            }
            let fact_event = new_event(&plan.ingested, tenant_id)?;
            writes.push((&requests[plan.request].fact_name, vec![fact_event]));
            new_events.push(writes);
        }
        // A fact ingested before (a retry) finds its streams taken: it is left out of the
        // append and left to the path alone.
        let commands: Vec<Vec<StreamAppend>> = new_events
            .iter()
            .map(|writes| {
                writes
                    .iter()
                    .map(|(stream, events)| StreamAppend {
                        stream,
                        expected: ExpectedVersion::NoStream,
                        events,
                    })
                    .collect()
            })
            .collect();
        let written = self.store.append_commands_in(&mut tx, &commands).await?;
        drop(commands);
        drop(new_events);
        let mut written = written.into_iter();
        planned.retain(|_| written.next().unwrap_or(false));

        let rows: Vec<(&CallbackState, u64)> = planned
            .iter()
            .flat_map(|p| p.callbacks.iter())
            .map(|(_, events, state)| (state, events.len() as u64))
            .collect();
        if !rows.is_empty() {
            project_callbacks(&mut tx, &self.queue_starts, &rows).await?;
        }
        // One row per subject: the last fact of the batch about it wins, as one after another.
        let mut subjects: Vec<(&str, &SubjectContact)> = Vec::new();
        for plan in planned.iter().rev() {
            let tenant_id = plan.ingested.fact.tenant_id.as_str();
            let subject = &plan.ingested.subject;
            if !subjects
                .iter()
                .any(|(t, s)| *t == tenant_id && s.subject_id == subject.subject_id)
            {
                subjects.push((tenant_id, subject));
            }
        }
        if !subjects.is_empty() {
            project_subjects(&mut tx, &subjects).await?;
        }
        self.store.commit(tx).await?;

        let mut results: Vec<Option<IngestResult>> = requests.iter().map(|_| None).collect();
        for plan in planned {
            tracing::info!(
                scheduled = plan.ingested.scheduled.len(),
                cancelled = 0,
                "business event ingested"
            );
            results[plan.request] = Some(IngestResult {
                duplicate: false,
                scheduled: plan.ingested.scheduled,
                cancelled: Vec::new(),
            });
        }
        Ok(results)
    }
}

/// The events of a new callback planned from a fact (`None` when sampling left it out). Its
/// id derives from the fact, policy, step and occurrence, so a replay cannot create a second.
pub(super) fn new_callback_events(
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
pub(super) fn scheduled_summary(state: &CallbackState) -> ScheduledSummary {
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

/// A fact from another service may name only the subject (a complaint's verification call
/// knows the customer id, not the number): it then reuses the contact details known from the
/// subject's earlier facts. A fact that brings its own name or phones replaces them.
pub(super) async fn with_known_contact(
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

pub(super) async fn known_contact(
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

impl Scheduling {
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
    pub(super) async fn ingest_alone(
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
    pub(super) async fn ingest_in(
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

    pub(super) async fn recorded_ingest(
        &self,
        fact_name: &StreamName,
    ) -> Result<Option<IngestResult>> {
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
    pub(super) async fn create_callback(
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

    /// Cancels the open callbacks of a subject under a policy (or all policies when `None`).
    pub(super) async fn cancel_open(
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
}
