//! Outcomes from the call-logging service's feed: each `CallAttemptLogged` event completes,
//! retries, reschedules, loses or cancels its callback.
//!
//! The contract (call-logging writes it, scheduling reads these fields and ignores the rest):
//! category `call_attempt`, event type `CallAttemptLogged`, payload
//! `{"callback_id", "attempt_id", "agent_id", "lease_id", "disposition", "ended_at"}` where
//! `disposition` is a [`Disposition`] (`{"kind": "not_convenient", "named_time": ...}`).
//!
//! Delivery is at least once (the feed resumes from the stored checkpoint); applying an outcome
//! is idempotent on the attempt id, so every outcome takes effect exactly once.

use std::collections::HashMap;

use callback_eventstore::{Projection, RecordedEvent};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::Scheduling;
use crate::domain::Disposition;
use crate::error::Error;

pub const EVENT_TYPE: &str = "CallAttemptLogged";
pub const CATEGORY: &str = "call_attempt";

#[derive(Debug, Deserialize)]
struct AttemptLogged {
    callback_id: Uuid,
    attempt_id: String,
    agent_id: String,
    lease_id: Uuid,
    disposition: Disposition,
    ended_at: DateTime<Utc>,
}

pub struct OutcomeConsumer {
    app: Scheduling,
}

impl OutcomeConsumer {
    pub fn new(app: Scheduling) -> Self {
        Self { app }
    }
}

/// How many transactions apply a batch's outcomes side by side.
const LANES: usize = 4;

impl Projection for OutcomeConsumer {
    type Error = Error;

    fn name(&self) -> &str {
        "scheduling.outcomes"
    }

    /// Outcomes of different callbacks are applied side by side in [`LANES`] transactions of
    /// their own (each callback's outcomes in one lane, in order); the consumer's transaction
    /// then commits the checkpoint. A failure or crash in between replays the batch, and
    /// applying an outcome again changes nothing (idempotent on the attempt id), so each still
    /// takes effect exactly once. A batch with a do-not-call, which may cancel callbacks in
    /// other lanes, is applied in the consumer's own transaction, one outcome after another.
    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        let attempts: Vec<AttemptLogged> = events
            .iter()
            .filter(|e| e.event_type == EVENT_TYPE)
            .filter_map(|event| match event.decode() {
                Ok(attempt) => Some(attempt),
                Err(error) => {
                    // A malformed fact cannot become valid by retrying; skip it, loudly.
                    tracing::error!(event_id = %event.event_id, %error, "undecodable call attempt skipped");
                    None
                }
            })
            .collect();
        let crosses_callbacks = attempts
            .iter()
            .any(|a| a.disposition == Disposition::DoNotCall);
        // Each lane takes a connection besides the consumer's own: a small pool gets fewer.
        let pool_size = self.app.store().pool().options().get_max_connections() as usize;
        let lane_count = LANES.min(pool_size.saturating_sub(1));
        if attempts.len() < 2 || crosses_callbacks || lane_count < 2 {
            return apply_in_order(&self.app, conn, &attempts).await;
        }
        let mut lanes: Vec<Vec<AttemptLogged>> = (0..lane_count).map(|_| Vec::new()).collect();
        let mut lane_of: HashMap<Uuid, usize> = HashMap::new();
        for attempt in attempts {
            let next = lane_of.len() % lane_count;
            let lane = *lane_of.entry(attempt.callback_id).or_insert(next);
            lanes[lane].push(attempt);
        }
        let tasks: Vec<_> = lanes
            .into_iter()
            .filter(|lane| !lane.is_empty())
            .map(|lane| {
                let app = self.app.clone();
                tokio::spawn(async move {
                    let mut tx = app.store().pool().begin().await?;
                    apply_in_order(&app, &mut tx, &lane).await?;
                    tx.commit().await?;
                    Ok::<_, Error>(())
                })
            })
            .collect();
        let mut failure = None;
        for task in tasks {
            let outcome = task
                .await
                .map_err(|e| Error::Store(callback_eventstore::Error::Background(e.to_string())))
                .and_then(|applied| applied);
            if let Err(error) = outcome {
                failure.get_or_insert(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// Applies outcomes one after another on `conn`.
async fn apply_in_order(
    app: &Scheduling,
    conn: &mut PgConnection,
    attempts: &[AttemptLogged],
) -> Result<(), Error> {
    for attempt in attempts {
        let applied = app
            .record_outcome_in(
                conn,
                attempt.callback_id,
                &attempt.attempt_id,
                &attempt.agent_id,
                attempt.lease_id,
                &attempt.disposition,
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
