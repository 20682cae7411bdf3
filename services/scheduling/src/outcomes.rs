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

use crate::app::{ReportedOutcome, Scheduling};
use crate::domain::Disposition;
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
    /// checkpoint ([`Scheduling::record_outcomes_in`]: one lock, one read, one append for
    /// the whole batch). A batch with a do-not-call, which may cancel other callbacks of the
    /// subject, is applied one outcome after another. Applying an outcome again changes
    /// nothing (idempotent on the attempt id), so a replayed batch takes effect once.
    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        let attempts: Vec<CallAttemptLogged> = events
            .iter()
            .filter(|e| e.event_type == CallAttemptLogged::EVENT_TYPE)
            .filter_map(|event| match callback_kit::events::decode(event) {
                Ok(attempt) => Some(attempt),
                Err(error) => {
                    // A malformed fact cannot become valid by retrying; skip it, loudly.
                    tracing::error!(event_id = %event.event_id, %error, "undecodable call attempt skipped");
                    None
                }
            })
            .collect();
        if attempts
            .iter()
            .any(|a| a.disposition.standard == Disposition::DoNotCall)
        {
            return apply_in_order(&self.app, conn, &attempts).await;
        }
        let outcomes: Vec<ReportedOutcome> = attempts
            .into_iter()
            .map(|a| ReportedOutcome {
                callback_id: a.callback_id,
                attempt_id: a.attempt_id,
                agent_id: a.agent_id,
                lease_id: a.lease_id,
                disposition: a.disposition.standard,
                at: a.ended_at,
            })
            .collect();
        self.app.record_outcomes_in(conn, &outcomes).await
    }
}

/// Applies outcomes one after another on `conn`.
async fn apply_in_order(
    app: &Scheduling,
    conn: &mut PgConnection,
    attempts: &[CallAttemptLogged],
) -> Result<(), Error> {
    for attempt in attempts {
        let applied = app
            .record_outcome_in(
                conn,
                attempt.callback_id,
                &attempt.attempt_id,
                &attempt.agent_id,
                attempt.lease_id,
                &attempt.disposition.standard,
                attempt.ended_at,
            )
            .await;
        match applied {
            Ok(_) => {}
            // The outcome does not fit the callback's state (closed, another lease): the
            // attempt stays on record in call-logging; nothing to change here.
            Err(
                error @ (Error::InvalidArgument { .. }
                | Error::FailedPrecondition(_)
                | Error::NotFound(_)),
            ) => {
                tracing::warn!(callback_id = %attempt.callback_id, %error, "call attempt not applied");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
