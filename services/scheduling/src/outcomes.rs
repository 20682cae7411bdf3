//! Outcomes from the call-logging service's feed: each `CallAttemptLogged` event completes,
//! retries, reschedules, loses or cancels its callback.
//!
//! The contract is call-logging's [`CallAttemptLogged`] (`callback-contracts`); this consumer
//! reads its callback, attempt, agent, lease, disposition and end time.
//!
//! Delivery is at least once (the feed resumes from the stored checkpoint); applying an outcome
//! is idempotent on the attempt id, so every outcome takes effect exactly once.

use callback_contracts::call_logging::CallAttemptLogged;
use callback_eventstore::{Projection, RecordedEvent};
use sqlx::PgConnection;

use crate::app::{OutcomeApplied, ReportedOutcome, Scheduling};
use crate::error::Error;

pub struct OutcomeConsumer {
    app: Scheduling,
}

impl OutcomeConsumer {
    pub fn new(app: Scheduling) -> Self {
        Self { app }
    }
}

impl Projection for OutcomeConsumer {
    type Error = Error;

    fn name(&self) -> &str {
        "scheduling.outcomes"
    }

    /// A batch's outcomes are applied together in the consumer's transaction, with its
    /// checkpoint ([`Scheduling::record_outcomes_in`]: one lock, one read, one append per
    /// segment; a do-not-call ends a segment). Applying an outcome again changes nothing
    /// (idempotent on the attempt id), so a replayed batch takes effect once. An outcome that
    /// does not fit its callback stays on record in call-logging; nothing changes here.
    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        let outcomes: Vec<ReportedOutcome> = events
            .iter()
            .filter(|e| e.event_type == CallAttemptLogged::EVENT_TYPE)
            .filter_map(|event| match callback_kit::events::decode::<CallAttemptLogged>(event) {
                Ok(a) => Some(ReportedOutcome {
                    callback_id: a.callback_id,
                    attempt_id: a.attempt_id,
                    agent_id: a.agent_id,
                    lease_id: a.lease_id,
                    disposition: a.disposition.standard,
                    at: a.ended_at,
                }),
                Err(error) => {
                    // A malformed fact cannot become valid by retrying; skip it, loudly.
                    tracing::error!(event_id = %event.event_id, %error, "undecodable call attempt skipped");
                    None
                }
            })
            .collect();
        let applied = self.app.record_outcomes_in(conn, &outcomes).await?;
        for (outcome, applied) in outcomes.iter().zip(applied) {
            match applied {
                OutcomeApplied::Refused(error) => {
                    tracing::warn!(callback_id = %outcome.callback_id, %error, "call attempt not applied");
                }
                OutcomeApplied::Unknown => {
                    tracing::warn!(callback_id = %outcome.callback_id, "call attempt not applied: unknown callback");
                }
                OutcomeApplied::Applied(_) | OutcomeApplied::Before(_) => {}
            }
        }
        Ok(())
    }
}
