//! The complaint as a [`Decider`]: filing, the department's actions, timers, groups and
//! verification, as commands on its folded state, under the routing rules it was filed with
//! and their calendar.

use callback_rules::Decider;

use super::*;

/// The decider of one complaint's stream.
pub struct ComplaintDecider;

/// The rules version a complaint lives under, and its office calendar.
pub struct ComplaintContext {
    pub rules: RoutingRules,
    pub calendar: Calendar,
}

/// What can be asked of a complaint.
#[derive(Clone, Debug)]
pub enum ComplaintCommand {
    /// A complaint arrives: classified, routed, reported at once when it must be.
    File {
        complaint_id: Uuid,
        intake: Box<Intake>,
        rules_version: u64,
        context: Context,
        now: DateTime<Utc>,
    },
    /// The department acts.
    Act {
        action: Action,
        actor: String,
        now: DateTime<Utc>,
    },
    /// The timer sweep: every clock due by `now` fires.
    FireTimers { now: DateTime<Utc> },
    /// Enough customers complained on the topic: it joins the group.
    JoinGroup { customers: u32, now: DateTime<Utc> },
    /// The verification callback's answer.
    VerificationAnswered {
        callback_id: Uuid,
        satisfied: bool,
        at: DateTime<Utc>,
    },
    /// The verification callback ended unanswered.
    VerificationEnded {
        callback_id: Uuid,
        outcome: String,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl Decider for ComplaintDecider {
    type Context = ComplaintContext;
    type State = ComplaintState;
    type Event = ComplaintEvent;
    type Command = ComplaintCommand;
    type Error = ActionError;

    fn evolve(
        context: &ComplaintContext,
        state: Option<ComplaintState>,
        event: &ComplaintEvent,
    ) -> Option<ComplaintState> {
        ComplaintState::evolve(state, event, &context.calendar)
    }

    fn decide(
        context: &ComplaintContext,
        state: Option<&ComplaintState>,
        command: &ComplaintCommand,
    ) -> Result<Vec<ComplaintEvent>, ActionError> {
        let rules = &context.rules;
        match (state, command) {
            (
                None,
                ComplaintCommand::File {
                    complaint_id,
                    intake,
                    rules_version,
                    context: log_context,
                    now,
                },
            ) => Ok(file(
                *complaint_id,
                intake,
                rules,
                *rules_version,
                log_context,
                *now,
            )),
            (Some(_), ComplaintCommand::File { .. }) => {
                Err(ActionError::NotNow("the complaint was filed before".into()))
            }
            (None, _) => Err(ActionError::NotNow("no such complaint".into())),
            (Some(s), ComplaintCommand::Act { action, actor, now }) => {
                s.decide(action, actor, rules, *now)
            }
            (Some(s), ComplaintCommand::FireTimers { now }) => {
                Ok(s.clone().fire_timers(rules, &context.calendar, *now).1)
            }
            (Some(s), ComplaintCommand::JoinGroup { customers, now }) => {
                Ok(s.join_group(rules, *customers, *now))
            }
            (
                Some(s),
                ComplaintCommand::VerificationAnswered {
                    callback_id,
                    satisfied,
                    at,
                },
            ) => Ok(s.verification_answered(*callback_id, *satisfied, *at)),
            (
                Some(s),
                ComplaintCommand::VerificationEnded {
                    callback_id,
                    outcome,
                    reason,
                    at,
                },
            ) => Ok(s.verification_ended(*callback_id, outcome, reason, *at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use callback_rules::TestHarness;
    use chrono::TimeZone;

    use super::*;
    use crate::domain::rules::tests::property_rules;

    fn on() -> TestHarness<ComplaintDecider> {
        let rules = property_rules();
        let calendar = rules.validate().unwrap();
        TestHarness::on(ComplaintContext { rules, calendar })
    }

    /// Monday 7 September 2026, Shanghai.
    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 9, 7, hour, minute, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn filing(category: &str) -> ComplaintCommand {
        ComplaintCommand::File {
            complaint_id: Uuid::from_u128(1),
            intake: Box::new(Intake {
                tenant_id: "estate".into(),
                source: "hotline".into(),
                source_id: "t-1".into(),
                channel: "hotline".into(),
                customer: Customer {
                    customer_id: "c1".into(),
                    ..Customer::default()
                },
                text: "water through the ceiling".into(),
                category: category.into(),
                ..Intake::default()
            }),
            rules_version: 1,
            context: Context::default(),
            now: at(9, 0),
        }
    }

    fn filed(category: &str) -> Vec<ComplaintEvent> {
        ComplaintDecider::decide(&on_context(), None, &filing(category)).unwrap()
    }

    fn on_context() -> ComplaintContext {
        let rules = property_rules();
        let calendar = rules.validate().unwrap();
        ComplaintContext { rules, calendar }
    }

    #[test]
    fn a_leak_is_class_a_routed_to_engineering_and_reported_to_the_manager_at_once() {
        let events = filed("leak");
        assert_eq!(events.len(), 2);
        let ComplaintEvent::ComplaintFiled(filing) = &events[0] else {
            panic!("the filing comes first: {events:?}");
        };
        assert_eq!(
            (
                filing.class,
                filing.department.as_str(),
                filing.handler.as_str()
            ),
            (Class::A, "engineering", "eng-pool")
        );
        assert_eq!(
            events[1],
            ComplaintEvent::ComplaintEscalated {
                level: Level::Manager,
                to: "ops-manager".into(),
                reason: "class A reported at once".into(),
                at: at(9, 0),
            }
        );
        let state = ComplaintDecider::fold(&on_context(), &events).unwrap();
        assert_eq!(state.status, Status::Open);
    }

    #[test]
    fn a_complaint_is_filed_once() {
        on().given(filed("noise"))
            .when(filing("noise"))
            .then_err(ActionError::NotNow("the complaint was filed before".into()));
    }

    #[test]
    fn acknowledging_answers_the_first_response_clock() {
        let state = on()
            .given(filed("noise"))
            .when(ComplaintCommand::Act {
                action: Action::Acknowledge,
                actor: "desk-pool".into(),
                now: at(10, 0),
            })
            .then([ComplaintEvent::ComplaintAcknowledged {
                actor: "desk-pool".into(),
                at: at(10, 0),
            }])
            .unwrap();
        assert_eq!(state.status, Status::InProgress);
    }

    #[test]
    fn a_class_c_complaint_unanswered_for_a_working_day_breaches_and_climbs_one_level() {
        // Class C answers within 8 working hours; two days later that has long passed.
        let fired = ComplaintDecider::decide(
            &on_context(),
            Some(&ComplaintDecider::fold(&on_context(), &filed("noise")).unwrap()),
            &ComplaintCommand::FireTimers {
                now: at(9, 0) + chrono::Duration::days(2),
            },
        )
        .unwrap();
        assert!(matches!(
            fired.first(),
            Some(ComplaintEvent::ClockBreached {
                clock: ClockName::FirstResponse,
                breach: 1,
                ..
            })
        ));
        assert!(fired.iter().any(|e| matches!(
            e,
            ComplaintEvent::ComplaintEscalated { level: Level::DepartmentHead, to, .. } if to == "desk-head"
        )));
    }

    #[test]
    fn an_action_by_nobody_is_refused() {
        on().given(filed("noise"))
            .when(ComplaintCommand::Act {
                action: Action::Acknowledge,
                actor: " ".into(),
                now: at(10, 0),
            })
            .then_err(ActionError::Invalid {
                field: "actor".into(),
                reason: "must not be empty".into(),
            });
    }

    #[test]
    fn nothing_is_decided_about_a_complaint_never_filed() {
        on().when(ComplaintCommand::FireTimers { now: at(10, 0) })
            .then_err(ActionError::NotNow("no such complaint".into()));
    }
}
