//! The callback as a [`Decider`]: every decision the service makes about one callback, as a
//! command on its folded state, in the tenant's calendar. The application calls the same `decide_*` methods of
//! [`CallbackState`]; this is the aggregate's whole surface, tested given/when/then without a
//! database.

use callback_calendar::Calendar;
use callback_rules::Decider;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::callback::{CallbackError, CallbackEvent, CallbackState, Disposition};

/// The decider of one callback's stream.
pub struct CallbackDecider;

/// What can be asked of a callback.
#[derive(Clone, Debug)]
pub enum CallbackCommand {
    /// An agent takes it under a lease; `pools` are the agent's.
    Claim {
        agent_id: String,
        pools: Vec<String>,
        lease_id: Uuid,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The agent holding the lease reports an attempt's outcome (call-logging's feed).
    ReportOutcome {
        attempt_id: String,
        agent_id: String,
        lease_id: Uuid,
        disposition: Disposition,
        at: DateTime<Utc>,
    },
    /// The subject's frequency cap frees at `free_at`.
    DeferForCap {
        free_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// A correcting fact cancels it.
    Cancel { reason: String, now: DateTime<Utc> },
    /// The deadline watch found its deadline passed.
    Expire { now: DateTime<Utc> },
}

impl Decider for CallbackDecider {
    /// The tenant's calendar.
    type Context = Calendar;
    type State = CallbackState;
    type Event = CallbackEvent;
    type Command = CallbackCommand;
    type Error = CallbackError;

    fn evolve(
        _calendar: &Calendar,
        state: Option<CallbackState>,
        event: &CallbackEvent,
    ) -> Option<CallbackState> {
        CallbackState::evolve(state, event)
    }

    fn decide(
        calendar: &Calendar,
        state: Option<&CallbackState>,
        command: &CallbackCommand,
    ) -> Result<Vec<CallbackEvent>, CallbackError> {
        let state = state.ok_or(CallbackError::NotFound)?;
        match command {
            CallbackCommand::Claim {
                agent_id,
                pools,
                lease_id,
                lease_until,
                now,
            } => {
                if !state.claimable_by(agent_id, pools, *now) {
                    return Err(CallbackError::NotClaimable);
                }
                Ok(vec![state.decide_claim(
                    agent_id,
                    *lease_id,
                    *lease_until,
                    *now,
                )?])
            }
            CallbackCommand::ReportOutcome {
                attempt_id,
                agent_id,
                lease_id,
                disposition,
                at,
            } => state.decide_outcome(attempt_id, agent_id, *lease_id, disposition, *at, calendar),
            CallbackCommand::DeferForCap { free_at, now } => {
                if !state.status.is_open() {
                    return Err(CallbackError::Closed(state.status.as_str()));
                }
                Ok(vec![state.decide_defer(*free_at, calendar, *now)])
            }
            CallbackCommand::Cancel { reason, now } => Ok(vec![state.decide_cancel(reason, *now)?]),
            CallbackCommand::Expire { now } => Ok(vec![state.decide_expiry(*now)?]),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use callback_calendar::CalendarSpec;
    use callback_rules::TestHarness;
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::domain::callback::{LeaseRefusal, Scheduled, Status};
    use crate::domain::policy::{Channel, RetryRule};

    /// The harness on the hospital calendar.
    fn on() -> TestHarness<CallbackDecider> {
        TestHarness::on(calendar())
    }

    fn t(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        // Shanghai local time, 2026-09.
        Utc.with_ymd_and_hms(2026, 9, day, hour, minute, 0).unwrap() - Duration::hours(8)
    }

    fn calendar() -> Calendar {
        let spec: CalendarSpec = serde_json::from_value(serde_json::json!({
            "time_zone": "Asia/Shanghai",
            "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}],
        }))
        .unwrap();
        Calendar::new(&spec).unwrap()
    }

    fn lease() -> Uuid {
        Uuid::from_u128(7)
    }

    /// Due Monday 7 September 09:00, deadline Friday 11 September 17:30, owner nurse-1, two
    /// attempts at most, two hours apart.
    fn scheduled() -> CallbackEvent {
        CallbackEvent::CallbackScheduled(Box::new(Scheduled {
            callback_id: Uuid::from_u128(1),
            tenant_id: "hospital".into(),
            policy_id: "discharge".into(),
            policy_version: 1,
            step_index: 0,
            step: "first call".into(),
            occurrence: 1,
            anchor_at: t(6, 10, 0),
            due_at: t(7, 9, 0),
            deadline: t(11, 17, 30),
            give_up_at: t(11, 17, 30),
            priority: 5,
            channel: Channel::Phone,
            questionnaire_id: None,
            owner_agent_id: Some("nurse-1".into()),
            pool: "ward".into(),
            pool_after: t(8, 9, 0),
            subject_id: "patient-1".into(),
            department: Some("ward-a".into()),
            retry: RetryRule {
                max_attempts: 2,
                spacing_minutes: Default::default(),
                default_spacing_minutes: 120,
            },
            fact_stream: "business_event-hospital:his:1".into(),
        }))
    }

    fn claimed(agent: &str, at: DateTime<Utc>) -> CallbackEvent {
        CallbackEvent::CallbackClaimed {
            agent_id: agent.into(),
            lease_id: lease(),
            lease_until: at + Duration::minutes(15),
            at,
        }
    }

    fn claim(agent: &str, pools: &[&str], now: DateTime<Utc>) -> CallbackCommand {
        CallbackCommand::Claim {
            agent_id: agent.into(),
            pools: pools.iter().map(|p| (*p).to_owned()).collect(),
            lease_id: lease(),
            lease_until: now + Duration::minutes(15),
            now,
        }
    }

    fn report(agent: &str, disposition: Disposition, at: DateTime<Utc>) -> CallbackCommand {
        CallbackCommand::ReportOutcome {
            attempt_id: "att-1".into(),
            agent_id: agent.into(),
            lease_id: lease(),
            disposition,
            at,
        }
    }

    #[test]
    fn nothing_is_decided_about_a_callback_that_does_not_exist() {
        on().when(CallbackCommand::Expire { now: t(7, 9, 0) })
            .then_err(CallbackError::NotFound);
    }

    #[test]
    fn the_owner_claims_when_due_and_the_pool_only_after_the_hand_over() {
        let state = on()
            .given([scheduled()])
            .when(claim("nurse-1", &[], t(7, 9, 0)))
            .then([claimed("nurse-1", t(7, 9, 0))])
            .unwrap();
        assert_eq!(state.status, Status::Claimed);
        on().given([scheduled()])
            .when(claim("nurse-1", &[], t(7, 8, 59)))
            .then_err(CallbackError::NotClaimable);
        on().given([scheduled()])
            .when(claim("nurse-2", &["ward"], t(7, 10, 0)))
            .then_err(CallbackError::NotClaimable);
        on().given([scheduled()])
            .when(claim("nurse-2", &["ward"], t(8, 9, 0)))
            .then([claimed("nurse-2", t(8, 9, 0))]);
        // Under a live lease nobody else takes it; once the lease lapsed the pool may.
        on().given([scheduled(), claimed("nurse-1", t(8, 9, 0))])
            .when(claim("nurse-2", &["ward"], t(8, 9, 10)))
            .then_err(CallbackError::NotClaimable);
        on().given([scheduled(), claimed("nurse-1", t(8, 9, 0))])
            .when(claim("nurse-2", &["ward"], t(8, 9, 20)))
            .then([claimed("nurse-2", t(8, 9, 20))]);
    }

    #[test]
    fn a_reached_call_completes_it() {
        let at = t(7, 9, 5);
        let state = on()
            .given([scheduled(), claimed("nurse-1", t(7, 9, 0))])
            .when(report("nurse-1", Disposition::Reached, at))
            .then([
                CallbackEvent::CallbackAttempted {
                    attempt_id: "att-1".into(),
                    agent_id: "nurse-1".into(),
                    disposition: Disposition::Reached,
                    at,
                },
                CallbackEvent::CallbackCompleted { at },
            ])
            .unwrap();
        assert_eq!(state.status, Status::Completed);
    }

    #[test]
    fn no_answer_retries_after_the_spacing_and_is_lost_when_attempts_run_out() {
        let at = t(7, 9, 5);
        let attempted = |at| CallbackEvent::CallbackAttempted {
            attempt_id: "att-1".into(),
            agent_id: "nurse-1".into(),
            disposition: Disposition::NoAnswer,
            at,
        };
        let retried = CallbackEvent::CallbackRescheduled {
            due_at: at + Duration::minutes(120),
            deadline: t(11, 17, 30),
            reason: "retry after no_answer".into(),
            at,
        };
        let state = on()
            .given([scheduled(), claimed("nurse-1", t(7, 9, 0))])
            .when(report("nurse-1", Disposition::NoAnswer, at))
            .then([attempted(at), retried.clone()])
            .unwrap();
        assert_eq!((state.status, state.claimed_by), (Status::Scheduled, None));
        let second = t(7, 14, 0);
        on().given([
            scheduled(),
            claimed("nurse-1", t(7, 9, 0)),
            attempted(at),
            retried,
            claimed("nurse-1", t(7, 13, 55)),
        ])
        .when(report("nurse-1", Disposition::NoAnswer, second))
        .then([
            attempted(second),
            CallbackEvent::CallbackLost {
                reason: "attempts exhausted".into(),
                attempts: 2,
                at: second,
            },
        ]);
    }

    #[test]
    fn a_named_time_moves_the_call_and_one_in_the_past_is_refused() {
        let at = t(7, 9, 5);
        let named_time = t(12, 10, 0);
        on().given([scheduled(), claimed("nurse-1", t(7, 9, 0))])
            .when(report(
                "nurse-1",
                Disposition::NotConvenient { named_time },
                at,
            ))
            .then([
                CallbackEvent::CallbackAttempted {
                    attempt_id: "att-1".into(),
                    agent_id: "nurse-1".into(),
                    disposition: Disposition::NotConvenient { named_time },
                    at,
                },
                CallbackEvent::CallbackRescheduled {
                    due_at: named_time,
                    // Past the policy's window: the deadline moves to the end of that day.
                    deadline: Utc.with_ymd_and_hms(2026, 9, 12, 16, 0, 0).unwrap(),
                    reason: "customer named a time".into(),
                    at,
                },
            ]);
        on().given([scheduled(), claimed("nurse-1", t(7, 9, 0))])
            .when(report(
                "nurse-1",
                Disposition::NotConvenient {
                    named_time: t(7, 9, 0),
                },
                at,
            ))
            .then_err(CallbackError::NamedTimeInPast);
    }

    #[test]
    fn only_the_lease_holder_reports_and_nothing_after_the_end() {
        let at = t(7, 9, 5);
        on().given([scheduled()])
            .when(report("nurse-1", Disposition::Reached, at))
            .then_err(CallbackError::NotClaimant);
        on().given([scheduled(), claimed("nurse-1", t(7, 9, 0))])
            .when(report("nurse-2", Disposition::Reached, at))
            .then_err(CallbackError::NotClaimant);
        on().given([
            scheduled(),
            claimed("nurse-1", t(7, 9, 0)),
            CallbackEvent::CallbackCompleted { at },
        ])
        .when(report("nurse-1", Disposition::Reached, at))
        .then_err(CallbackError::Closed("completed"));
    }

    #[test]
    fn the_lease_rule() {
        let state = CallbackDecider::fold(&calendar(), &[scheduled()]).unwrap();
        assert_eq!(
            state.check_lease("nurse-1", lease()),
            Err(LeaseRefusal::NotClaimed)
        );
        let state =
            CallbackDecider::fold(&calendar(), &[scheduled(), claimed("nurse-1", t(7, 9, 0))])
                .unwrap();
        // The rule reads no clock: a lapsed lease still holds while nobody else has claimed
        // the callback (a claim by another agent is what takes it away).
        assert_eq!(state.check_lease("nurse-1", lease()), Ok(()));
        assert_eq!(
            state.check_lease("nurse-2", lease()),
            Err(LeaseRefusal::NotHolder)
        );
        assert_eq!(
            state.check_lease("nurse-1", Uuid::from_u128(8)),
            Err(LeaseRefusal::NotHolder)
        );
        let ended = CallbackDecider::fold(
            &calendar(),
            &[
                scheduled(),
                claimed("nurse-1", t(7, 9, 0)),
                CallbackEvent::CallbackCompleted { at: t(7, 9, 5) },
            ],
        )
        .unwrap();
        assert_eq!(
            ended.check_lease("nurse-1", lease()),
            Err(LeaseRefusal::Ended(Status::Completed))
        );
    }

    #[test]
    fn a_capped_callback_waits_for_the_next_allowed_time_and_its_deadline_follows() {
        let now = t(7, 9, 0);
        // The cap frees on Friday at 18:00, after the windows: the next allowed time is Monday.
        on().given([scheduled()])
            .when(CallbackCommand::DeferForCap {
                free_at: t(11, 18, 0),
                now,
            })
            .then([CallbackEvent::CallbackRescheduled {
                due_at: t(14, 8, 0),
                deadline: Utc.with_ymd_and_hms(2026, 9, 14, 16, 0, 0).unwrap(),
                reason: "frequency cap".into(),
                at: now,
            }]);
    }

    #[test]
    fn cancelling_and_expiring_end_an_open_callback_only() {
        let now = t(9, 12, 0);
        on().given([scheduled()])
            .when(CallbackCommand::Cancel {
                reason: "discharge cancelled".into(),
                now,
            })
            .then([CallbackEvent::CallbackCancelled {
                reason: "discharge cancelled".into(),
                at: now,
            }]);
        on().given([scheduled(), claimed("nurse-1", t(7, 9, 0))])
            .when(CallbackCommand::Expire { now })
            .then([CallbackEvent::CallbackLost {
                reason: crate::domain::GIVEN_UP.into(),
                attempts: 0,
                at: now,
            }]);
        on().given([
            scheduled(),
            CallbackEvent::CallbackCancelled {
                reason: "x".into(),
                at: now,
            },
        ])
        .when(CallbackCommand::Expire { now })
        .then_err(CallbackError::Closed("cancelled"));
    }

    /// The fixture with a give-up time three days after its deadline.
    fn scheduled_with_grace() -> CallbackEvent {
        match scheduled() {
            CallbackEvent::CallbackScheduled(mut s) => {
                s.give_up_at = s.deadline + Duration::days(3);
                CallbackEvent::CallbackScheduled(s)
            }
            other => other,
        }
    }

    #[test]
    fn an_overdue_callback_is_still_claimed_retried_and_completed_until_its_give_up_time() {
        // Saturday 12 September, past the deadline (Friday 17:30), before giving up (Monday).
        let late = t(12, 9, 0);
        let state = on()
            .given([scheduled_with_grace()])
            .when(claim("nurse-1", &[], late))
            .then([claimed("nurse-1", late)])
            .unwrap();
        assert!(state.is_overdue(late));
        // Busy: tried again at the next working time, Monday morning, still before giving up.
        on().given([scheduled_with_grace(), claimed("nurse-1", late)])
            .when(report("nurse-1", Disposition::Busy, late))
            .then([
                CallbackEvent::CallbackAttempted {
                    attempt_id: "att-1".into(),
                    agent_id: "nurse-1".into(),
                    disposition: Disposition::Busy,
                    at: late,
                },
                CallbackEvent::CallbackRescheduled {
                    due_at: t(14, 8, 0),
                    deadline: t(11, 17, 30),
                    reason: "retry after busy".into(),
                    at: late,
                },
            ]);
        // Reached: completed (reached, but not on time: the deadline had passed).
        on().given([scheduled_with_grace(), claimed("nurse-1", late)])
            .when(report("nurse-1", Disposition::Reached, late))
            .then([
                CallbackEvent::CallbackAttempted {
                    attempt_id: "att-1".into(),
                    agent_id: "nurse-1".into(),
                    disposition: Disposition::Reached,
                    at: late,
                },
                CallbackEvent::CallbackCompleted { at: late },
            ]);
        // At the give-up time nobody claims it any more.
        on().given([scheduled_with_grace()])
            .when(claim("nurse-1", &[], t(14, 17, 30)))
            .then_err(CallbackError::NotClaimable);
    }
}
