//! Outcomes from call-logging's feed, a whole batch at once in the consumer's transaction:
//! the callbacks locked in one statement (in id order, as every multi-row writer locks), their
//! streams read in one query, each outcome decided in feed order on the evolving state, every
//! changed stream appended in one statement, the rows written in one statement each. What
//! follows a callback that ended (its policy's next step) is planned one callback at a time.
//!
//! Idempotent on the attempt id: an attempt already in the callback's stream (a replayed
//! batch, a repeated report) changes nothing. A single report is a batch of one: there is one
//! write path. A do-not-call ends its segment of the batch: the subject's other open
//! callbacks are cancelled before the outcomes after it are decided, as if one by one.

use std::collections::{BTreeMap, HashSet};

use callback_eventstore::StreamName;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{callback_stream, decode, Scheduling};
use crate::domain::{CallbackEvent, CallbackState, Disposition};
use crate::error::{Error, Result};

/// One attempt's outcome as call-logging reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedOutcome {
    pub callback_id: Uuid,
    pub attempt_id: String,
    pub agent_id: String,
    pub lease_id: Uuid,
    pub disposition: Disposition,
    pub at: DateTime<Utc>,
}

/// What became of one outcome of a batch.
#[derive(Debug)]
pub enum OutcomeApplied {
    /// Decided and written; the callback's state after it.
    Applied(CallbackState),
    /// Its attempt was in the callback's stream already; nothing written.
    Before(CallbackState),
    /// It does not fit the callback (closed, another agent's lease, a named time in the past).
    Refused(Error),
    /// No such callback.
    Unknown,
}

/// A callback of the batch: its state as the batch goes, and what the batch adds.
struct Touched {
    state: CallbackState,
    version: u64,
    attempt_ids: HashSet<String>,
    new_events: Vec<CallbackEvent>,
    /// When the batch ended it (what follows is planned from then).
    ended_at: Option<DateTime<Utc>>,
}

/// `subject_id` is subject `$2` of tenant `$1`, or a subject sharing one of its numbers.
pub(super) const SAME_PERSON: &str = "(subject_id = $2 OR subject_id IN ( \
    SELECT o.subject_id FROM sched_subjects s \
    JOIN sched_subjects o ON o.tenant_id = s.tenant_id AND o.phone_keys && s.phone_keys \
    WHERE s.tenant_id = $1 AND s.subject_id = $2 AND cardinality(s.phone_keys) > 0))";

impl Scheduling {
    /// Applies a batch of outcomes in the caller's transaction, in order; what became of each.
    /// An outcome that does not fit its callback is refused alone (it stays on record in
    /// call-logging); any other error fails the whole batch.
    pub async fn record_outcomes_in(
        &self,
        tx: &mut PgConnection,
        outcomes: &[ReportedOutcome],
    ) -> Result<Vec<OutcomeApplied>> {
        let mut results = Vec::with_capacity(outcomes.len());
        let mut start = 0;
        for (i, outcome) in outcomes.iter().enumerate() {
            if outcome.disposition != Disposition::DoNotCall {
                continue;
            }
            results.extend(self.apply_outcomes(tx, &outcomes[start..=i]).await?);
            if let Some(OutcomeApplied::Applied(state)) = results.last() {
                self.cancel_for_do_not_call(tx, state, outcome.at).await?;
            }
            start = i + 1;
        }
        results.extend(self.apply_outcomes(tx, &outcomes[start..]).await?);
        Ok(results)
    }

    /// Do-not-call covers every policy of the tenant for the subject and for every subject
    /// sharing one of its numbers (one person, one number): their open callbacks are cancelled.
    async fn cancel_for_do_not_call(
        &self,
        tx: &mut PgConnection,
        state: &CallbackState,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let tenant_id = &state.scheduled.tenant_id;
        let subject_id = &state.scheduled.subject_id;
        let open: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT DISTINCT subject_id, policy_id FROM sched_callbacks WHERE tenant_id = $1 \
             AND status IN ('scheduled', 'claimed') AND {SAME_PERSON} ORDER BY 1, 2"
        ))
        .bind(tenant_id)
        .bind(subject_id)
        .fetch_all(&mut *tx)
        .await?;
        for (subject_id, policy_id) in open {
            self.cancel_open(tx, tenant_id, &subject_id, &policy_id, "do not call", at)
                .await?;
        }
        Ok(())
    }

    /// One segment of a batch: one lock, one read, one append.
    async fn apply_outcomes(
        &self,
        tx: &mut PgConnection,
        outcomes: &[ReportedOutcome],
    ) -> Result<Vec<OutcomeApplied>> {
        let ids: Vec<Uuid> = outcomes
            .iter()
            .map(|o| o.callback_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "SELECT 1 FROM sched_callbacks WHERE callback_id = ANY($1) ORDER BY callback_id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let streams = ids
            .iter()
            .map(|id| callback_stream(*id))
            .collect::<Result<Vec<StreamName>>>()?;
        let histories = self.store.read_streams_on(tx, &streams).await?;
        let mut touched: BTreeMap<Uuid, Touched> = BTreeMap::new();
        for (id, events) in ids.iter().zip(histories) {
            let mut state = None;
            let mut attempt_ids = HashSet::new();
            for event in &events {
                let event = decode::<CallbackEvent>(event)?;
                if let CallbackEvent::CallbackAttempted { attempt_id, .. } = &event {
                    attempt_ids.insert(attempt_id.clone());
                }
                state = CallbackState::evolve(state, &event);
            }
            if let Some(state) = state {
                touched.insert(
                    *id,
                    Touched {
                        state,
                        version: events.len() as u64,
                        attempt_ids,
                        new_events: Vec::new(),
                        ended_at: None,
                    },
                );
            }
        }

        let mut results = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let Some(callback) = touched.get_mut(&outcome.callback_id) else {
                results.push(OutcomeApplied::Unknown);
                continue;
            };
            if !callback.attempt_ids.insert(outcome.attempt_id.clone()) {
                results.push(OutcomeApplied::Before(callback.state.clone()));
                continue;
            }
            let (_, calendar) = self.tenant(tx, &callback.state.scheduled.tenant_id).await?;
            let decided = callback.state.decide_outcome(
                &outcome.attempt_id,
                &outcome.agent_id,
                outcome.lease_id,
                &outcome.disposition,
                outcome.at,
                &calendar,
            );
            let events = match decided {
                Ok(events) => events,
                Err(refused) => {
                    // Another report of this attempt may fit (the agent retried with the right
                    // lease): it is not taken as seen.
                    callback.attempt_ids.remove(&outcome.attempt_id);
                    results.push(OutcomeApplied::Refused(super::callback_refused(refused)));
                    continue;
                }
            };
            for event in events {
                callback.state = CallbackState::evolve(Some(callback.state.clone()), &event)
                    .ok_or_else(|| Error::Corrupt("an outcome lost its callback".into()))?;
                callback.new_events.push(event);
            }
            if !callback.state.status.is_open() && callback.ended_at.is_none() {
                callback.ended_at = Some(outcome.at);
            }
            results.push(OutcomeApplied::Applied(callback.state.clone()));
        }

        let changed: Vec<(&Uuid, &Touched)> = touched
            .iter()
            .filter(|(_, t)| !t.new_events.is_empty())
            .collect();
        if changed.is_empty() {
            return Ok(results);
        }
        let appends: Vec<(&CallbackState, u64, &[CallbackEvent])> = changed
            .iter()
            .map(|(_, c)| (&c.state, c.version, c.new_events.as_slice()))
            .collect();
        self.append_callbacks(tx, &appends).await?;
        let attempts: Vec<(&CallbackState, &str, DateTime<Utc>)> = changed
            .iter()
            .flat_map(|(_, callback)| {
                callback.new_events.iter().filter_map(|event| match event {
                    CallbackEvent::CallbackAttempted { attempt_id, at, .. } => {
                        Some((&callback.state, attempt_id.as_str(), *at))
                    }
                    _ => None,
                })
            })
            .collect();
        project_attempts(tx, &attempts).await?;
        for (_, callback) in &changed {
            if let Some(ended_at) = callback.ended_at {
                let (_, calendar) = self.tenant(tx, &callback.state.scheduled.tenant_id).await?;
                self.schedule_next(tx, &callback.state, &calendar, ended_at)
                    .await?;
            }
        }
        Ok(results)
    }
}

/// Writes contact-attempt rows (the frequency caps count them) in one statement.
pub(super) async fn project_attempts(
    conn: &mut PgConnection,
    attempts: &[(&CallbackState, &str, DateTime<Utc>)],
) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let callback_ids: Vec<Uuid> = attempts
        .iter()
        .map(|(s, _, _)| s.scheduled.callback_id)
        .collect();
    let attempt_ids: Vec<&str> = attempts.iter().map(|(_, a, _)| *a).collect();
    let tenant_ids: Vec<&str> = attempts
        .iter()
        .map(|(s, _, _)| s.scheduled.tenant_id.as_str())
        .collect();
    let subject_ids: Vec<&str> = attempts
        .iter()
        .map(|(s, _, _)| s.scheduled.subject_id.as_str())
        .collect();
    let times: Vec<DateTime<Utc>> = attempts.iter().map(|(_, _, at)| *at).collect();
    sqlx::query(
        "INSERT INTO sched_contact_attempts (callback_id, attempt_id, tenant_id, subject_id, attempted_at) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&callback_ids)
    .bind(&attempt_ids)
    .bind(&tenant_ids)
    .bind(&subject_ids)
    .bind(&times)
    .execute(conn)
    .await?;
    Ok(())
}
