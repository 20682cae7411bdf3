//! One callback's life as events: scheduled -> (due) -> claimed under a lease -> outcome ->
//! completed, retried, rescheduled to the customer's time, lost with a reason, or cancelled.
//!
//! State is a fold of events ([`CallbackState::evolve`]), so the state at any past time is
//! the fold of the events recorded until then.

use callback_calendar::Calendar;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::policy::{next_attempt, RetryRule};

pub use callback_contracts::scheduling::{
    CallbackEvent, CallbackStatus as Status, Disposition, Scheduled,
};

#[derive(Clone, Debug, PartialEq)]
pub struct CallbackState {
    pub scheduled: Scheduled,
    pub status: Status,
    pub due_at: DateTime<Utc>,
    /// Reached by then, it is on time; after it and before `give_up_at` it is overdue.
    pub deadline: DateTime<Utc>,
    /// Not reached by then, it is lost. Moves with the deadline.
    pub give_up_at: DateTime<Utc>,
    pub attempts: u32,
    pub claimed_by: Option<String>,
    pub lease_id: Option<Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Why an agent may not report an outcome under a lease (the lease rule, [`CallbackState::check_lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// The callback has ended (completed, lost, cancelled, skipped).
    Ended(Status),
    /// Open but not claimed: nobody holds a lease on it.
    NotClaimed,
    /// Claimed by another agent, or under another lease.
    NotHolder,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback is {0} and takes no more outcomes")]
    Closed(&'static str),
    #[error("agent_id: the callback is not claimed by this agent under this lease")]
    NotClaimant,
    #[error("disposition.named_time: must be later than the attempt")]
    NamedTimeInPast,
    #[error("no such callback")]
    NotFound,
    #[error("the callback cannot be claimed by this agent now")]
    NotClaimable,
}

impl CallbackState {
    /// Folds one event into the state (`None` before the first event).
    pub fn evolve(state: Option<CallbackState>, event: &CallbackEvent) -> Option<CallbackState> {
        if let CallbackEvent::CallbackScheduled(s) = event {
            return Some(CallbackState {
                status: Status::Scheduled,
                due_at: s.due_at,
                deadline: s.deadline,
                give_up_at: s.give_up_at.max(s.deadline),
                attempts: 0,
                claimed_by: None,
                lease_id: None,
                lease_until: None,
                end_reason: None,
                ended_at: None,
                scheduled: (**s).clone(),
            });
        }
        let mut state = state?;
        match event {
            CallbackEvent::CallbackScheduled(_) => {}
            CallbackEvent::CallbackSkipped { reason, at } => {
                state.end(Status::Skipped, reason, *at)
            }
            CallbackEvent::CallbackClaimed {
                agent_id,
                lease_id,
                lease_until,
                ..
            } => {
                state.status = Status::Claimed;
                state.claimed_by = Some(agent_id.clone());
                state.lease_id = Some(*lease_id);
                state.lease_until = Some(*lease_until);
            }
            CallbackEvent::CallbackAttempted { .. } => state.attempts += 1,
            CallbackEvent::CallbackRescheduled {
                due_at, deadline, ..
            } => {
                state.status = Status::Scheduled;
                state.due_at = *due_at;
                // The give-up time keeps its distance from the deadline.
                let grace = state.give_up_at - state.deadline;
                state.deadline = *deadline;
                state.give_up_at = deadline.checked_add_signed(grace).unwrap_or(*deadline);
                state.release();
            }
            CallbackEvent::CallbackCompleted { at } => state.end(Status::Completed, "reached", *at),
            CallbackEvent::CallbackLost { reason, at, .. } => state.end(Status::Lost, reason, *at),
            CallbackEvent::CallbackCancelled { reason, at } => {
                state.end(Status::Cancelled, reason, *at)
            }
        }
        Some(state)
    }

    fn end(&mut self, status: Status, reason: &str, at: DateTime<Utc>) {
        self.status = status;
        self.end_reason = Some(reason.to_owned());
        self.ended_at = Some(at);
        self.release();
    }

    fn release(&mut self) {
        self.claimed_by = None;
        self.lease_id = None;
        self.lease_until = None;
    }

    /// The lease rule, the one place it is written: an outcome is reported by the agent that
    /// holds the callback's current lease. A lease that lapsed still holds while nobody else
    /// has claimed the callback (the claim is what takes it away).
    pub fn check_lease(&self, agent_id: &str, lease_id: Uuid) -> Result<(), LeaseRefusal> {
        if !self.status.is_open() {
            return Err(LeaseRefusal::Ended(self.status));
        }
        if self.status != Status::Claimed {
            return Err(LeaseRefusal::NotClaimed);
        }
        if self.claimed_by.as_deref() != Some(agent_id) || self.lease_id != Some(lease_id) {
            return Err(LeaseRefusal::NotHolder);
        }
        Ok(())
    }

    /// The events an outcome reported by the claiming agent leads to.
    pub fn decide_outcome(
        &self,
        attempt_id: &str,
        agent_id: &str,
        lease_id: Uuid,
        disposition: &Disposition,
        at: DateTime<Utc>,
        calendar: &Calendar,
    ) -> Result<Vec<CallbackEvent>, CallbackError> {
        match self.check_lease(agent_id, lease_id) {
            Ok(()) => {}
            Err(LeaseRefusal::Ended(status)) => return Err(CallbackError::Closed(status.as_str())),
            Err(LeaseRefusal::NotClaimed | LeaseRefusal::NotHolder) => {
                return Err(CallbackError::NotClaimant)
            }
        }
        let attempted = CallbackEvent::CallbackAttempted {
            attempt_id: attempt_id.to_owned(),
            agent_id: agent_id.to_owned(),
            disposition: disposition.clone(),
            at,
        };
        let attempts = self.attempts + 1;
        let lost = |reason: &str| CallbackEvent::CallbackLost {
            reason: reason.to_owned(),
            attempts,
            at,
        };
        let then = match disposition {
            Disposition::Reached => CallbackEvent::CallbackCompleted { at },
            Disposition::NoAnswer | Disposition::Busy | Disposition::Voicemail => {
                let retry: &RetryRule = &self.scheduled.retry;
                match next_attempt(retry, disposition.name(), attempts, at) {
                    None => lost("attempts exhausted"),
                    Some(earliest) => match calendar.next_allowed(earliest) {
                        // Tried again while open: before the deadline, or overdue until the
                        // give-up time.
                        Some(due_at) if due_at < self.give_up_at => {
                            CallbackEvent::CallbackRescheduled {
                                due_at,
                                deadline: self.deadline,
                                reason: format!("retry after {}", disposition.name()),
                                at,
                            }
                        }
                        _ => lost(GIVEN_UP),
                    },
                }
            }
            Disposition::NotConvenient { named_time } => {
                if *named_time <= at {
                    return Err(CallbackError::NamedTimeInPast);
                }
                // Honour the customer's time even past the policy's window: the deadline
                // moves to the end of that day.
                let named_day_end = calendar.end_of_day(calendar.local_date(*named_time));
                CallbackEvent::CallbackRescheduled {
                    due_at: *named_time,
                    deadline: self.deadline.max(named_day_end),
                    reason: "customer named a time".to_owned(),
                    at,
                }
            }
            Disposition::WrongNumber => lost("wrong number"),
            Disposition::Refused => lost("refused"),
            Disposition::DoNotCall => CallbackEvent::CallbackCancelled {
                reason: "do not call".to_owned(),
                at,
            },
            Disposition::InvalidSubject => CallbackEvent::CallbackCancelled {
                reason: "invalid subject".to_owned(),
                at,
            },
        };
        Ok(vec![attempted, then])
    }

    /// A claim under a new lease (claimability, [`CallbackState::claimable_by`], is checked by
    /// the queue walk that found it).
    pub fn decide_claim(
        &self,
        agent_id: &str,
        lease_id: Uuid,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<CallbackEvent, CallbackError> {
        if !self.status.is_open() {
            return Err(CallbackError::Closed(self.status.as_str()));
        }
        Ok(CallbackEvent::CallbackClaimed {
            agent_id: agent_id.to_owned(),
            lease_id,
            lease_until,
            at: now,
        })
    }

    /// The subject's frequency cap frees at `free_at`: the callback waits until the first
    /// allowed time from then, never dropped; the deadline moves with it when it must.
    pub fn decide_defer(
        &self,
        free_at: DateTime<Utc>,
        calendar: &Calendar,
        now: DateTime<Utc>,
    ) -> CallbackEvent {
        let due_at = calendar.next_allowed(free_at).unwrap_or(free_at);
        let deadline = self
            .deadline
            .max(calendar.end_of_day(calendar.local_date(due_at)));
        CallbackEvent::CallbackRescheduled {
            due_at,
            deadline,
            reason: "frequency cap".into(),
            at: now,
        }
    }

    /// A correcting fact (or a do-not-call) cancels an open callback.
    pub fn decide_cancel(
        &self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<CallbackEvent, CallbackError> {
        if !self.status.is_open() {
            return Err(CallbackError::Closed(self.status.as_str()));
        }
        Ok(CallbackEvent::CallbackCancelled {
            reason: reason.to_owned(),
            at: now,
        })
    }

    /// The give-up time passed with the callback open: lost (失访), with the attempts made.
    pub fn decide_expiry(&self, now: DateTime<Utc>) -> Result<CallbackEvent, CallbackError> {
        if !self.status.is_open() {
            return Err(CallbackError::Closed(self.status.as_str()));
        }
        Ok(CallbackEvent::CallbackLost {
            reason: GIVEN_UP.into(),
            attempts: self.attempts,
            at: now,
        })
    }

    /// True when `agent` may claim it at `now`: due, open, not under a live lease, and either
    /// the agent's own or (after `pool_after`, or when there is no owner) in one of `pools`.
    pub fn claimable_by(&self, agent: &str, pools: &[String], now: DateTime<Utc>) -> bool {
        let under_lease =
            self.status == Status::Claimed && self.lease_until.is_some_and(|l| l > now);
        let open = self.status.is_open() && !under_lease;
        let owner = self.scheduled.owner_agent_id.as_deref();
        let mine = owner == Some(agent);
        let pooled = pools.contains(&self.scheduled.pool)
            && (owner.is_none() || now >= self.scheduled.pool_after);
        open && self.due_at <= now && now < self.give_up_at && (mine || pooled)
    }

    /// Past its deadline but not yet given up: still claimable, listed as overdue; reached
    /// now, it counts as reached but not on time.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status.is_open() && self.deadline <= now && now < self.give_up_at
    }
}

/// Why a callback not reached by its give-up time is lost.
pub const GIVEN_UP: &str = "not reached by the give-up time";

/// Default claim lease.
pub const DEFAULT_LEASE: Duration = Duration::minutes(15);
