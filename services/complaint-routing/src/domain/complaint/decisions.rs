//! What a complaint's state decides: the next timer and the events it fires, the
//! department's actions, joining a group, and verification answers.

use super::*;

impl ComplaintState {
    /// The next timer and when it falls, on the complaint's calendar.
    pub fn next_timer(&self, calendar: &Calendar) -> Option<(DateTime<Utc>, Timer)> {
        if !self.status.is_handling() {
            return None;
        }
        let mut candidates = Vec::new();
        for name in ClockName::ALL {
            let clock = self.clock(name);
            if clock.breaches < MAX_BREACHES_PER_CLOCK {
                if let Some(at) = clock.next_breach_at(calendar) {
                    candidates.push((at, Timer::Breach(name)));
                }
            }
        }
        if let (Some(reply_by), false, false) =
            (self.filed.reply_by, self.responded, self.reply_missed)
        {
            candidates.push((reply_by, Timer::ReplyDeadline));
        }
        if let (Some(since), Some(every)) = (self.major_since, self.targets.follow_up_every_minutes)
        {
            let n = i32::try_from(self.reminders + 1).unwrap_or(i32::MAX);
            candidates.push((since + Duration::minutes(every) * n, Timer::FollowUp));
        }
        // Earliest first; ties in the fixed order above, so a replay fires them alike.
        candidates.into_iter().min_by_key(|(at, _)| *at)
    }

    /// Fires every timer due by `now`, in time order, each at the instant it fell. Returns
    /// the events (already applied to the returned state).
    pub fn fire_timers(
        mut self,
        rules: &RoutingRules,
        calendar: &Calendar,
        now: DateTime<Utc>,
    ) -> (ComplaintState, Vec<ComplaintEvent>) {
        let mut fired = Vec::new();
        while fired.len() < MAX_TIMER_EVENTS {
            let Some((due_at, timer)) = self.next_timer(calendar).filter(|(at, _)| *at <= now)
            else {
                break;
            };
            // Never before what is already recorded: events stay in time order.
            let at = due_at.max(self.last_at);
            let mut events = Vec::new();
            match timer {
                Timer::Breach(name) => {
                    let clock = self.clock(name);
                    events.push(ComplaintEvent::ClockBreached {
                        clock: name,
                        breach: clock.breaches + 1,
                        due_at,
                        elapsed_minutes: clock.elapsed(calendar, at).num_minutes(),
                        target_minutes: clock.target_minutes,
                        at,
                    });
                    events.extend(self.escalation(
                        rules,
                        format!("{} target breached", name.as_str()),
                        at,
                    ));
                }
                Timer::ReplyDeadline => {
                    events.push(ComplaintEvent::ReplyDeadlineMissed {
                        reply_by: due_at,
                        at,
                    });
                    events.extend(self.escalation(
                        rules,
                        "the customer's requested reply time passed".into(),
                        at,
                    ));
                }
                Timer::FollowUp => events.push(ComplaintEvent::FollowUpReminded {
                    number: self.reminders + 1,
                    to: holder(Level::Manager, rules, &self.department),
                    at,
                }),
            }
            for event in events {
                self = ComplaintState::evolve(Some(self), &event, calendar)
                    .expect("a filed complaint stays filed");
                fired.push(event);
            }
        }
        (self, fired)
    }

    /// One level up the chain, unless already at the top.
    pub(super) fn escalation(
        &self,
        rules: &RoutingRules,
        reason: String,
        at: DateTime<Utc>,
    ) -> Option<ComplaintEvent> {
        (self.level < Level::GeneralManager).then(|| {
            let level = self.level.next();
            ComplaintEvent::ComplaintEscalated {
                level,
                to: holder(level, rules, &self.department),
                reason,
                at,
            }
        })
    }

    /// The events a department action produces, or why it cannot be taken now.
    pub fn decide(
        &self,
        action: &Action,
        actor: &str,
        rules: &RoutingRules,
        now: DateTime<Utc>,
    ) -> Result<Vec<ComplaintEvent>, ActionError> {
        if actor.trim().is_empty() {
            return Err(invalid("actor", "must not be empty"));
        }
        match self.status {
            Status::Closed | Status::Rejected => {
                return Err(ActionError::NotNow(format!(
                    "the complaint is {}; no further {} is possible",
                    self.status.as_str(),
                    action.name()
                )))
            }
            Status::Resolved => {
                return Err(ActionError::NotNow(
                    "the complaint is resolved and awaits its verification callback".into(),
                ))
            }
            _ => {}
        }
        let actor = actor.to_owned();
        let at = now;
        let event = match action {
            Action::Acknowledge => {
                if self.responded {
                    return Err(ActionError::NotNow(
                        "the complaint has already been acknowledged".into(),
                    ));
                }
                ComplaintEvent::ComplaintAcknowledged { actor, at }
            }
            Action::AddProgress { note } => {
                required_text("text", note)?;
                self.not_waiting(action)?;
                ComplaintEvent::ProgressAdded {
                    actor,
                    note: note.clone(),
                    at,
                }
            }
            Action::RequestInformation { question } => {
                required_text("text", question)?;
                self.not_waiting(action)?;
                ComplaintEvent::InformationRequested {
                    actor,
                    question: question.clone(),
                    at,
                }
            }
            Action::ReceiveInformation { note } => {
                if self.status != Status::WaitingOnCustomer {
                    return Err(ActionError::NotNow(
                        "no information has been requested from the customer".into(),
                    ));
                }
                ComplaintEvent::InformationReceived {
                    actor,
                    note: note.clone(),
                    at,
                }
            }
            Action::Resolve { resolution } => {
                required_text("text", resolution)?;
                ComplaintEvent::ComplaintResolved {
                    actor,
                    resolution: resolution.clone(),
                    at,
                }
            }
            Action::Reject { explanation } => {
                required_text("text", explanation)?;
                ComplaintEvent::ComplaintRejected {
                    actor,
                    explanation: explanation.clone(),
                    at,
                }
            }
            Action::Transfer { to, reason } => {
                let Some(department) = rules.department(to) else {
                    return Err(invalid(
                        "to_department",
                        format!("unknown department `{to}`"),
                    ));
                };
                if *to == self.department {
                    return Err(invalid(
                        "to_department",
                        "is the complaint's current department",
                    ));
                }
                ComplaintEvent::ComplaintTransferred {
                    actor,
                    from: self.department.clone(),
                    to: to.clone(),
                    handler: department.handler.clone(),
                    reason: reason.clone(),
                    at,
                }
            }
        };
        Ok(vec![event])
    }

    pub(super) fn not_waiting(&self, action: &Action) -> Result<(), ActionError> {
        if self.status == Status::WaitingOnCustomer {
            return Err(ActionError::NotNow(format!(
                "the complaint waits on the customer; record the information received before {}",
                action.name()
            )));
        }
        Ok(())
    }

    /// Reclassification into a group (the fifth distinct customer on its topic).
    pub fn join_group(
        &self,
        rules: &RoutingRules,
        customers: u32,
        now: DateTime<Utc>,
    ) -> Vec<ComplaintEvent> {
        let to = self.class.as_group();
        if to == self.class || !self.status.is_handling() {
            return Vec::new();
        }
        let department = rules
            .group
            .department
            .clone()
            .unwrap_or_else(|| self.department.clone());
        let handler = holder(Level::Handler, rules, &department);
        let mut events = vec![ComplaintEvent::ComplaintReclassified {
            from: self.class,
            to,
            department: department.clone(),
            handler,
            targets: targets_for(rules, to),
            reason: format!(
                "{customers} distinct customers on topic `{}` within {} hours",
                self.filed.topic, rules.group.window_hours
            ),
            at: now,
        }];
        if to.is_major() {
            events.push(ComplaintEvent::ComplaintEscalated {
                level: Level::Manager.max(self.level),
                to: holder(Level::Manager, rules, &department),
                reason: format!("class {} reported at once", to.as_str()),
                at: now,
            });
        }
        events
    }

    /// The verification callback's answer: satisfied closes, unsatisfied reopens with new
    /// clocks. Answers for other callbacks or states change nothing (a replay is harmless).
    pub fn verification_answered(
        &self,
        callback_id: Uuid,
        satisfied: bool,
        at: DateTime<Utc>,
    ) -> Vec<ComplaintEvent> {
        if self.status != Status::Resolved || !self.verification_callbacks.contains(&callback_id) {
            return Vec::new();
        }
        let answered = ComplaintEvent::VerificationAnswered {
            callback_id,
            satisfied,
            at,
        };
        let next = if satisfied {
            ComplaintEvent::ComplaintClosed {
                outcome: "satisfied".into(),
                detail: format!("verification callback {callback_id}"),
                at,
            }
        } else {
            ComplaintEvent::ComplaintReopened {
                reason: format!("customer unsatisfied on verification callback {callback_id}"),
                at,
            }
        };
        vec![answered, next]
    }

    /// The verification callback ended without an answer (lost or cancelled): the complaint
    /// closes with that fact recorded.
    pub fn verification_ended(
        &self,
        callback_id: Uuid,
        outcome: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Vec<ComplaintEvent> {
        if self.status != Status::Resolved || !self.verification_callbacks.contains(&callback_id) {
            return Vec::new();
        }
        vec![ComplaintEvent::ComplaintClosed {
            outcome: format!("verification_{outcome}"),
            detail: format!("verification callback {callback_id}: {reason}"),
            at,
        }]
    }
}
