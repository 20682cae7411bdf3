//! One call attempt's stream as a [`Decider`]: logging it (with what the call found), flags
//! raised on it later, full views of it. Pure: the lease was confirmed, the answers and the
//! honesty context checked, before a command gets here.

use callback_contracts::call_logging::{
    CallAttemptLogged, CallRecordViewed, ComplaintRaised, DoNotCallRequested, HonestyFlag,
    HonestyFlagRaised, SurveyAnswered,
};
use callback_contracts::scheduling::Disposition;
use callback_rules::Decider;
use chrono::{DateTime, Utc};

/// What an attempt's stream records (each a contract type of its own).
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptEvent {
    Logged(CallAttemptLogged),
    Answered(SurveyAnswered),
    ComplaintRaised(ComplaintRaised),
    DoNotCall(DoNotCallRequested),
    Flagged(HonestyFlagRaised),
    Viewed(CallRecordViewed),
}

/// An attempt as its events leave it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptState {
    pub logged: CallAttemptLogged,
    pub answered: bool,
    /// The kinds of the flags raised on it.
    pub flags: Vec<&'static str>,
    pub views: u32,
}

#[derive(Clone, Debug)]
pub enum AttemptCommand {
    /// Record the attempt and what the call found.
    Log {
        attempt: Box<CallAttemptLogged>,
        answers: Option<SurveyAnswered>,
        complaint: Option<Box<ComplaintRaised>>,
        flags: Vec<HonestyFlag>,
    },
    /// A later check (telephony records) flags it.
    RaiseFlag { flag: HonestyFlag },
    /// Someone reads it in full.
    View {
        reader: String,
        reason: String,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    #[error("the attempt was logged before")]
    LoggedBefore,
    #[error("no such attempt")]
    NotFound,
}

pub struct AttemptDecider;

/// A flag on an attempt. `attempt_started_at` dates it in business time (reports count flags
/// by when the call was made, also when the evidence arrived later).
pub fn flag_raised(
    tenant_id: &str,
    attempt_id: &str,
    agent_id: &str,
    attempt_started_at: DateTime<Utc>,
    flag: &HonestyFlag,
) -> HonestyFlagRaised {
    HonestyFlagRaised {
        tenant_id: tenant_id.to_owned(),
        attempt_id: attempt_id.to_owned(),
        agent_id: agent_id.to_owned(),
        attempt_started_at: Some(attempt_started_at),
        flag: flag.clone(),
    }
}

fn flag_event(logged: &CallAttemptLogged, flag: &HonestyFlag) -> AttemptEvent {
    AttemptEvent::Flagged(flag_raised(
        &logged.tenant_id,
        &logged.attempt_id,
        &logged.agent_id,
        logged.started_at,
        flag,
    ))
}

impl Decider for AttemptDecider {
    type Context = ();
    type State = AttemptState;
    type Event = AttemptEvent;
    type Command = AttemptCommand;
    type Error = AttemptError;

    fn evolve(_: &(), state: Option<AttemptState>, event: &AttemptEvent) -> Option<AttemptState> {
        match (state, event) {
            (None, AttemptEvent::Logged(logged)) => Some(AttemptState {
                logged: logged.clone(),
                answered: false,
                flags: Vec::new(),
                views: 0,
            }),
            (None, _) => None,
            (Some(mut s), event) => {
                match event {
                    AttemptEvent::Logged(_)
                    | AttemptEvent::ComplaintRaised(_)
                    | AttemptEvent::DoNotCall(_) => {}
                    AttemptEvent::Answered(_) => s.answered = true,
                    AttemptEvent::Flagged(raised) => s.flags.push(raised.flag.kind()),
                    AttemptEvent::Viewed(_) => s.views += 1,
                }
                Some(s)
            }
        }
    }

    fn decide(
        _: &(),
        state: Option<&AttemptState>,
        command: &AttemptCommand,
    ) -> Result<Vec<AttemptEvent>, AttemptError> {
        match (state, command) {
            (Some(_), AttemptCommand::Log { .. }) => Err(AttemptError::LoggedBefore),
            (
                None,
                AttemptCommand::Log {
                    attempt,
                    answers,
                    complaint,
                    flags,
                },
            ) => {
                let mut events = vec![AttemptEvent::Logged((**attempt).clone())];
                events.extend(answers.clone().map(AttemptEvent::Answered));
                events.extend(
                    complaint
                        .as_ref()
                        .map(|c| AttemptEvent::ComplaintRaised((**c).clone())),
                );
                if attempt.disposition.standard == Disposition::DoNotCall {
                    events.push(AttemptEvent::DoNotCall(DoNotCallRequested {
                        tenant_id: attempt.tenant_id.clone(),
                        callback_id: attempt.callback_id,
                        attempt_id: attempt.attempt_id.clone(),
                    }));
                }
                events.extend(flags.iter().map(|flag| flag_event(attempt, flag)));
                Ok(events)
            }
            (None, _) => Err(AttemptError::NotFound),
            (Some(s), AttemptCommand::RaiseFlag { flag }) => {
                // A flag is raised once: the same check finding it again changes nothing.
                if s.flags.contains(&flag.kind()) {
                    return Ok(Vec::new());
                }
                Ok(vec![flag_event(&s.logged, flag)])
            }
            (Some(s), AttemptCommand::View { reader, reason, at }) => {
                Ok(vec![AttemptEvent::Viewed(CallRecordViewed {
                    tenant_id: s.logged.tenant_id.clone(),
                    attempt_id: s.logged.attempt_id.clone(),
                    reader: reader.clone(),
                    reason: reason.clone(),
                    at: *at,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use callback_contracts::call_logging::{AttemptDisposition, RaisedComplaint};
    use callback_rules::TestHarness;
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 9, 8, 2, minute, 0).unwrap()
    }

    fn logged(disposition: Disposition) -> CallAttemptLogged {
        CallAttemptLogged {
            tenant_id: "hospital".into(),
            callback_id: Uuid::from_u128(1),
            attempt_id: "a-1".into(),
            agent_id: "nurse-1".into(),
            lease_id: Uuid::from_u128(2),
            channel: "phone".into(),
            disposition: AttemptDisposition {
                standard: disposition,
                tenant_kind: None,
            },
            started_at: at(0),
            ended_at: at(4),
            telephony_call_id: "cdr-1".into(),
            recording_ref: String::new(),
            notes: String::new(),
            survey_declined: None,
            sealed_for: None,
        }
    }

    fn short() -> HonestyFlag {
        HonestyFlag::ShortReached {
            talk_seconds: 3,
            threshold_seconds: 10,
            billable_seconds: None,
        }
    }

    fn log(
        disposition: Disposition,
        answers: Option<SurveyAnswered>,
        complaint: Option<ComplaintRaised>,
        flags: Vec<HonestyFlag>,
    ) -> AttemptCommand {
        AttemptCommand::Log {
            attempt: Box::new(logged(disposition)),
            answers,
            complaint: complaint.map(Box::new),
            flags,
        }
    }

    #[test]
    fn a_reached_call_records_its_answers_complaint_and_flags_in_order() {
        let answers = SurveyAnswered {
            tenant_id: "hospital".into(),
            callback_id: Uuid::from_u128(1),
            attempt_id: "a-1".into(),
            questionnaire_id: "discharge".into(),
            questionnaire_version: 1,
            answers: BTreeMap::from([("satisfied".into(), serde_json::json!(2))]),
        };
        let complaint = ComplaintRaised {
            tenant_id: "hospital".into(),
            callback_id: Uuid::from_u128(1),
            attempt_id: "a-1".into(),
            agent_id: "nurse-1".into(),
            subject_id: "patient-1".into(),
            department: "ward-a".into(),
            raised_at: at(4),
            complaint: RaisedComplaint {
                text: "the night was loud".into(),
                ..RaisedComplaint::default()
            },
        };
        let state = TestHarness::<AttemptDecider>::on(())
            .when(log(
                Disposition::Reached,
                Some(answers.clone()),
                Some(complaint.clone()),
                vec![short()],
            ))
            .then([
                AttemptEvent::Logged(logged(Disposition::Reached)),
                AttemptEvent::Answered(answers),
                AttemptEvent::ComplaintRaised(complaint),
                flag_event(&logged(Disposition::Reached), &short()),
            ])
            .unwrap();
        assert!(state.answered);
        assert_eq!(state.flags, ["short_reached"]);
    }

    #[test]
    fn do_not_call_is_its_own_event_and_an_attempt_is_logged_once() {
        TestHarness::<AttemptDecider>::on(())
            .when(log(Disposition::DoNotCall, None, None, vec![]))
            .then([
                AttemptEvent::Logged(logged(Disposition::DoNotCall)),
                AttemptEvent::DoNotCall(DoNotCallRequested {
                    tenant_id: "hospital".into(),
                    callback_id: Uuid::from_u128(1),
                    attempt_id: "a-1".into(),
                }),
            ]);
        TestHarness::<AttemptDecider>::on(())
            .given([AttemptEvent::Logged(logged(Disposition::NoAnswer))])
            .when(log(Disposition::NoAnswer, None, None, vec![]))
            .then_err(AttemptError::LoggedBefore);
    }

    #[test]
    fn a_flag_is_raised_once_and_only_on_a_logged_attempt() {
        let given = [AttemptEvent::Logged(logged(Disposition::Reached))];
        let state = TestHarness::<AttemptDecider>::on(())
            .given(given.clone())
            .when(AttemptCommand::RaiseFlag { flag: short() })
            .then([flag_event(&logged(Disposition::Reached), &short())])
            .unwrap();
        assert_eq!(state.flags, ["short_reached"]);
        TestHarness::<AttemptDecider>::on(())
            .given([
                given[0].clone(),
                flag_event(&logged(Disposition::Reached), &short()),
            ])
            .when(AttemptCommand::RaiseFlag { flag: short() })
            .then([]);
        TestHarness::<AttemptDecider>::on(())
            .when(AttemptCommand::RaiseFlag { flag: short() })
            .then_err(AttemptError::NotFound);
    }

    #[test]
    fn every_full_view_is_recorded() {
        let state = TestHarness::<AttemptDecider>::on(())
            .given([AttemptEvent::Logged(logged(Disposition::Reached))])
            .when(AttemptCommand::View {
                reader: "supervisor-1".into(),
                reason: "quality review".into(),
                at: at(30),
            })
            .then([AttemptEvent::Viewed(CallRecordViewed {
                tenant_id: "hospital".into(),
                attempt_id: "a-1".into(),
                reader: "supervisor-1".into(),
                reason: "quality review".into(),
                at: at(30),
            })])
            .unwrap();
        assert_eq!(state.views, 1);
    }
}
