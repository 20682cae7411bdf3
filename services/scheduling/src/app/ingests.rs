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

use super::{
    callback_stream, new_callback_events, new_event, policies_for, project_callbacks,
    project_subjects, BusinessEventIngested, IngestResult, Scheduling, SubjectContact,
};
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
