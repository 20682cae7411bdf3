//! Ingest: business facts that arrive together are served by one transaction (see
//! `callback_kit::batch`): the tenant's policies read once, every fact's and new callback's events in
//! one append, the callback rows and the subject rows in one statement each, one commit.
//!
//! Each fact still gets what it would alone: its own `BusinessEventIngested` event, its
//! callbacks' events in their own streams, its answer. A single ingest is a batch of one: there
//! is one write path. A fact whose type corrects earlier facts cancels or moves the subject's
//! open callbacks (under their row locks) in the batch's transaction, once it is known not to
//! be a retry; a fact that names the subject without contact details reuses those on record. A
//! fact ingested before (its stream exists) is left out of the append and answered with its
//! recorded answer. A batch that fails as a whole is served again fact by fact.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use callback_eventstore::{ExpectedVersion, NewEvent, StreamAppend, StreamName};
use tokio::sync::oneshot;

use super::contacts::{normalized_phones, with_known_contact};
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

/// What a batch did with one fact.
enum IngestAnswer {
    /// Written by this batch.
    Done(IngestResult),
    /// Ingested before (its stream exists, or it came twice): the recorded answer is its own.
    Before,
    /// Refused (e.g. an unknown tenant); nothing written for it.
    Refused(Error),
}

impl Scheduling {
    async fn serve_ingests(&self, batch: Vec<IngestRequest>) {
        match self.ingest_batch(&batch).await {
            Ok(answers) => {
                for (request, answer) in batch.into_iter().zip(answers) {
                    let result = self.answer_ingest(&request, answer).await;
                    let _ = request.reply.send(result);
                }
            }
            Err(error) if batch.len() == 1 => {
                if let Some(request) = batch.into_iter().next() {
                    let _ = request.reply.send(Err(error));
                }
            }
            // One fact's problem is not every source's answer: each alone.
            Err(error) => {
                tracing::debug!(%error, requests = batch.len(), "ingest batch failed; serving each alone");
                for request in batch {
                    let result = match self.ingest_batch(std::slice::from_ref(&request)).await {
                        Ok(mut answers) => match answers.pop() {
                            Some(answer) => self.answer_ingest(&request, answer).await,
                            None => Err(Error::Corrupt("an ingest without an answer".into())),
                        },
                        Err(error) => Err(error),
                    };
                    let _ = request.reply.send(result);
                }
            }
        }
    }

    async fn answer_ingest(
        &self,
        request: &IngestRequest,
        answer: IngestAnswer,
    ) -> Result<IngestResult> {
        match answer {
            IngestAnswer::Done(result) => Ok(result),
            IngestAnswer::Refused(error) => Err(error),
            IngestAnswer::Before => self
                .recorded_ingest(&request.fact_name, &request.fact)
                .await?
                .ok_or_else(|| {
                    Error::Corrupt(format!("fact {} without its event", request.fact_name))
                }),
        }
    }

    /// One transaction for every fact of the batch. An `Err` means nothing was written.
    async fn ingest_batch(&self, requests: &[IngestRequest]) -> Result<Vec<IngestAnswer>> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let mut policies: HashMap<(&str, &str), Vec<(Policy, u64)>> = HashMap::new();
        let mut answers: Vec<Option<IngestAnswer>> = requests.iter().map(|_| None).collect();
        let mut planned = Vec::with_capacity(requests.len());
        // Every subject's key in one statement (created where missing).
        let subjects: Vec<(&str, &str)> = requests
            .iter()
            .map(|r| (r.fact.tenant_id.as_str(), r.subject.subject_id.as_str()))
            .collect();
        let keys = self.vault.keys_for_sealing_on(&mut tx, &subjects).await?;
        // A fact sent twice in one batch: the second is answered as a retry of the first.
        let mut seen = std::collections::HashSet::new();
        for (index, request) in requests.iter().enumerate() {
            let fact = &request.fact;
            if !seen.insert(request.fact_name.stream_id()) {
                answers[index] = Some(IngestAnswer::Before);
                continue;
            }
            let (settings, calendar) = match self.tenant(&mut tx, &fact.tenant_id).await {
                Ok(loaded) => loaded,
                Err(error @ Error::NotFound(_)) => {
                    answers[index] = Some(IngestAnswer::Refused(error));
                    continue;
                }
                Err(error) => return Err(error),
            };
            // Numbers are recorded in their normal form, so every later match (shared
            // contacts, do-not-call, caps) compares like with like.
            let subject = match normalized_phones(request.subject.clone(), settings.phone_region())
            {
                Ok(subject) => subject,
                Err(refused) => {
                    answers[index] = Some(IngestAnswer::Refused(refused));
                    continue;
                }
            };
            // Sealed before anything is written: the log and the read model never see the
            // clear name or numbers. A subject whose processing is restricted gets nothing.
            let key = keys.get(&(fact.tenant_id.clone(), subject.subject_id.clone()));
            let subject = match self.seal_contact(key, &fact.tenant_id, subject) {
                Ok(subject) => subject,
                Err(refused @ Error::FailedPrecondition(_)) => {
                    answers[index] = Some(IngestAnswer::Refused(refused));
                    continue;
                }
                Err(error) => return Err(error),
            };
            let subject = with_known_contact(&mut tx, &fact.tenant_id, subject).await?;
            let key = (fact.tenant_id.as_str(), fact.event_type.as_str());
            if let Entry::Vacant(slot) = policies.entry(key) {
                slot.insert(policies_for(&mut tx, &fact.tenant_id, &fact.event_type).await?);
            }
            let policies = &policies[&key];
            let correcting: Vec<&Policy> = policies
                .iter()
                .map(|(p, _)| p)
                .filter(|p| {
                    p.cancel_on.contains(&fact.event_type)
                        || p.reschedule_on.contains(&fact.event_type)
                })
                .collect();
            let mut cancelled = Vec::new();
            if !correcting.is_empty() {
                // A retry must not cancel again (callbacks planned since would be hit): a
                // correcting fact, rare, is looked up before it writes.
                if !self
                    .store
                    .read_stream_on(&mut tx, &request.fact_name, 1)
                    .await?
                    .is_empty()
                {
                    answers[index] = Some(IngestAnswer::Before);
                    continue;
                }
                for policy in correcting {
                    let verb = if policy.reschedule_on.contains(&fact.event_type) {
                        "moved"
                    } else {
                        "cancelled"
                    };
                    cancelled.extend(
                        self.cancel_open(
                            &mut tx,
                            &fact.tenant_id,
                            &fact.subject_id,
                            &policy.policy_id,
                            &format!("{verb} by {}", fact.event_type),
                            now,
                        )
                        .await?,
                    );
                }
            }
            let mut callbacks = Vec::new();
            let mut scheduled = Vec::new();
            for (policy, version) in policies.iter().filter(|(p, _)| p.matches(fact)) {
                for plan in policy.first_callbacks(fact, &calendar, now) {
                    let Some(events) = new_callback_events(
                        policy,
                        *version,
                        fact,
                        &subject,
                        &request.fact_name,
                        &plan,
                        now,
                    ) else {
                        continue;
                    };
                    let state =
                        events
                            .iter()
                            .fold(None, CallbackState::evolve)
                            .ok_or_else(|| {
                                Error::Corrupt("a new callback without its events".into())
                            })?;
                    scheduled.push(super::scheduled_summary(&state));
                    callbacks.push((callback_stream(state.scheduled.callback_id)?, events, state));
                }
            }
            planned.push(PlannedIngest {
                request: index,
                ingested: BusinessEventIngested {
                    fact: fact.clone(),
                    subject,
                    scheduled,
                    cancelled,
                },
                callbacks,
            });
        }

        // Every stream is new: the fact's and each callback's (ids derive from the fact).
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
        // append and answered with its recorded answer.
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
        planned.retain(|plan| {
            let kept = written.next().unwrap_or(false);
            if !kept {
                answers[plan.request] = Some(IngestAnswer::Before);
            }
            kept
        });

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

        for plan in planned {
            tracing::info!(
                scheduled = plan.ingested.scheduled.len(),
                cancelled = plan.ingested.cancelled.len(),
                "business event ingested"
            );
            answers[plan.request] = Some(IngestAnswer::Done(IngestResult {
                duplicate: false,
                scheduled: plan.ingested.scheduled,
                cancelled: plan.ingested.cancelled,
            }));
        }
        answers
            .into_iter()
            .map(|answer| {
                answer.ok_or_else(|| Error::Corrupt("an ingest without an answer".into()))
            })
            .collect()
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
        give_up_at: plan.give_up_at,
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

    /// The answer recorded for a fact ingested before, when `fact` is a retry of it. The same
    /// source event id with other content (another subject, type, time or attributes) is a
    /// conflict, refused naming the key: answering it as a retry would drop a real fact.
    pub(super) async fn recorded_ingest(
        &self,
        fact_name: &StreamName,
        fact: &BusinessFact,
    ) -> Result<Option<IngestResult>> {
        let events = self.store.read_stream(fact_name, 1).await?;
        match events.first() {
            None => Ok(None),
            Some(event) => {
                let recorded: BusinessEventIngested = decode(event)?;
                let before = &recorded.fact;
                let differs = [
                    ("subject_id", before.subject_id != fact.subject_id),
                    ("event_type", before.event_type != fact.event_type),
                    ("occurred_at", before.occurred_at != fact.occurred_at),
                    ("attributes", before.attributes != fact.attributes),
                ]
                .into_iter()
                .filter(|(_, differs)| *differs)
                .map(|(name, _)| name)
                .collect::<Vec<_>>();
                if !differs.is_empty() {
                    return Err(Error::Conflict {
                        field: "source_event_id".into(),
                        reason: format!(
                            "was already ingested from this source with another {}; a retry \
                             must repeat the fact as first sent",
                            differs.join(", ")
                        ),
                    });
                }
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

    /// Cancels the open callbacks of a subject under a policy (every policy when `policy_id`
    /// is empty).
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
            "SELECT callback_id FROM sched_callbacks WHERE tenant_id = $1 AND subject_id = $2 \
             AND ($3 = '' OR policy_id = $3) \
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
